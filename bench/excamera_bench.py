#!/usr/bin/env python3
"""ExCamera benchmark: what ExCamera[N, x] costs in bits, and how long each of its stages takes.

The third part of ``make bench``. It is a benchmark, not a test: it prints figures and fails
(exit 1) only when it cannot measure (no clip found, vpxenc missing or failing, a stream that
does not decode to the source's frame count, key frames where ExCamera[N, x] puts none, or the
timed stages not reproducing ``encode_frames``' bytes).

**Compression.** On real clips (carphone QCIF 120 frames, bikes 640x272 the first 120 frames of
``compressed/bikes.mp4`` decoded through PyAV, foreman CIF 60 frames, and the HD clip bigbuckbunny
1280x720, all 132 frames of ``compressed/bigbuckbunny.mp4``), at cq-levels 16, 24, 32
and 40, four encoders code the same pictures:

* ExCamera[6,1] and ExCamera[6,16]: ``media.excamera_encode.encode_frames`` with the libvpx first pass
  (independent chunks, and batches of 16 chunks rebased in series: one key frame every 96 frames);
* serial vpxenc with ExCamera's first-pass settings (``excamera/firstpass.py``; ``vpxenc_command``
  lists them) but cpu-used 0 (the first pass runs 1) over the whole clip, one pass and two passes
  (``--passes=1`` / ``--passes=2``), the look-ahead libvpx's largest (25 frames), key frames only
  at the start.

Rate is the bytes of the compressed frames (no container framing) in kbit/s at the clip's rate;
quality is the mean SSIM of all planes (``codec.ssim``, as ffmpeg's filter) in dB,
``-10 log10(1 - SSIM)``, every stream decoded by ``codec.decoder`` (bit-exact with libvpx). The
Bjontegaard delta rate (``bench/bdrate.py``) over the four points summarizes a pair of curves:
ExCamera[6,16] against two-pass vpxenc (target <= +10%), and ExCamera[6,16] against ExCamera[6,1]
(target <= -30%: the bits that rebasing saves at equal SSIM). Four cq-levels, not three: the
Bjontegaard fit is a cubic and needs four points. (ExCamera's serial vpxenc also passed
``--buf-initial-sz=10000 --buf-optimal-sz=20000 --buf-sz=40000 --token-parts=0`` and a target of
2^32 - 1 kbit/s: with the bit rate unlimited that makes the same bytes, checked on carphone.)

Last measured (README, "ExCamera benchmark"): [6,16] against two-pass vpxenc +57.2% / +27.1% /
+26.0% (carphone / bikes / foreman), mean +36.8%, target not met; against [6,1] -36.0%, met. The
README says why and lists the variants tried.

**Stage times.** Each stage's time per chunk of 6 frames at cq-level 24, at 640x272 (bikes, the
first 4 chunks) and 1280x720 (``compressed/Zhling_1280x720.264`` through PyAV, its 3 whole chunks;
``compressed/bigbuckbunny.mp4``, its 22 chunks): first pass (libvpx, then terminate-chunk, which
decodes the chunk once for every later stage), state dump (serialize the exit state, load it back
as the next worker does), encode-given-state (the chunk's first frame as an interframe against the
previous chunk's first-pass exit state) and rebase (the serial step: the chunk's frames coded
again onto the state the previous chunk really left). ``staged_encode`` runs the stages as
``encode_frames`` does, timing each; the bench checks that its bytes equal ``encode_frames``'.
Wall and CPU seconds of this process; on a shared machine the CPU figure is the steadier one. One
untimed run first loads the numba kernels.

Inputs are read from ``--testdata DIR`` (default ``../shared/testdata`` next to the repository,
its ``clips/`` and ``clips/compressed/``); a missing one is named with where it was looked for.
``--quick``: the first 24 frames of each clip (one batch of 4 chunks) and 2 chunks per stage clip.

Usage::

    python bench/excamera_bench.py [--quick] [--testdata DIR] [--clip NAME ...]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from bench.bdrate import bd_rate  # noqa: E402  (needs REPO on sys.path)

DEFAULT_TESTDATA = os.path.join(os.path.dirname(REPO), "shared", "testdata")


@dataclass(frozen=True)
class Clip:
    """An input: short name, label, path under the test-data directory, frames to take."""

    name: str
    label: str
    path: str
    frames: int


CLIPS = [
    Clip("carphone", "carphone QCIF", "clips/carphone_qcif_176x144_120f_decoded.y4m", 120),
    Clip("bikes", "bikes 640x272", "clips/compressed/bikes.mp4", 120),
    Clip("foreman", "foreman CIF", "clips/foreman_cif_352x288_60f_decoded.y4m", 60),
    Clip("bbb", "bigbuckbunny 720p", "clips/compressed/bigbuckbunny.mp4", 132),
]
STAGE_CLIPS = [
    Clip("bikes", "640x272 (bikes)", "clips/compressed/bikes.mp4", 24),
    Clip("zhling", "1280x720 (Zhling)", "clips/compressed/Zhling_1280x720.264", 18),
    Clip("bbb", "1280x720 (bigbuckbunny)", "clips/compressed/bigbuckbunny.mp4", 132),
]
CQ_LEVELS = (16, 24, 32, 40)
STAGE_CQ = 24
CHUNK_FRAMES = 6
BATCHES = (1, 16)           # ExCamera[6, 1] and ExCamera[6, 16]
QUICK_FRAMES = 24
QUICK_STAGE_CHUNKS = 2

VS_VPX_TARGET = 10.0        # BD-rate of [6,16] against 2-pass vpxenc, percent, at most
VS_X1_TARGET = -30.0        # BD-rate of [6,16] against [6,1], percent, at most

STAGES = ("first pass", "state dump", "encode-given-state", "rebase")


class BenchError(Exception):
    """The bench cannot measure: exit 1 with this message."""


# -- inputs ---------------------------------------------------------------------------------------

def find_inputs(testdata: str, clips: list[Clip]) -> tuple[list[tuple[Clip, str]], list[str]]:
    """(clip, path) for each clip found under ``testdata``, and a message for each one missing."""
    found, missing = [], []
    for clip in clips:
        path = os.path.join(testdata, clip.path)
        if os.path.isfile(path):
            found.append((clip, path))
        else:
            missing.append(f"{clip.label}: {path} not found (it is in the project's shared test "
                           f"data, shared/testdata/{clip.path}; pass --testdata DIR)")
    return found, missing


def read_frames(path: str, limit: int) -> tuple[list, tuple[int, int]]:
    """The first ``limit`` pictures of ``path`` (any format ``media.video`` opens) and its
    frame rate as (numerator, denominator)."""
    from media.video import open_video

    with open_video(path) as video:
        frames = list(itertools.islice(video, limit))
        return frames, video.rate


def write_y4m(path: str, frames: list, rate: tuple[int, int]) -> None:
    from codec.y4m import Y4mWriter

    with Y4mWriter(path, rate=rate) as writer:
        for image in frames:
            writer.write(image)


# -- serial vpxenc ----------------------------------------------------------------------------------

def vpxenc_command(source: str, output: str, cq_level: int, passes: int, frames: int,
                   cpu_used: int = 0, min_q: int | None = None) -> list[str]:
    """vpxenc over a whole clip with ExCamera's first-pass settings (``excamera/firstpass.py``)
    but ``cpu_used`` (default 0, ExCamera's own vpxenc setting and libvpx's best: the reference
    is not made faster because the first pass was): good deadline, constant quality at
    ``cq_level`` (min-q the first pass's ``MIN_Q`` unless ``min_q``: the floor helps vpxenc too,
    4.6% on 720p, and the reference keeps every setting ours has; max-q 63, an unlimited
    target bit rate), tune SSIM, auto-alt-ref with libvpx's largest look-ahead, one thread, and
    key-frame bounds so far apart that only the first frame is a key frame."""
    from media.firstpass import KEY_FRAME_DISTANCE, MAX_LAG, MIN_Q, TARGET_KBPS

    min_q = MIN_Q if min_q is None else min_q
    if passes not in (1, 2):
        raise ValueError(f"vpxenc runs 1 or 2 passes, not {passes}")
    if not 0 <= cq_level <= 63:
        raise ValueError(f"cq-level {cq_level} is outside 0..63")
    return ["vpxenc", "--codec=vp8", "--ivf", "--good", f"--cpu-used={cpu_used}", "--end-usage=cq",
            f"--min-q={min_q}", "--max-q=63", f"--cq-level={cq_level}", f"--target-bitrate={TARGET_KBPS}",
            "--undershoot-pct=100", f"--passes={passes}", "--auto-alt-ref=1",
            f"--lag-in-frames={MAX_LAG}", f"--kf-min-dist={KEY_FRAME_DISTANCE}",
            f"--kf-max-dist={KEY_FRAME_DISTANCE}", "--threads=1", "--tune=ssim", "-q",
            f"--limit={frames}", "-o", output, source]


def run_vpxenc(cmd: list[str]) -> float:
    """Run vpxenc to completion; its CPU seconds (user + system)."""
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            err.seek(0)
            tail = err.read().decode("utf-8", "replace").strip().splitlines()[-3:]
            raise BenchError(f"vpxenc failed (exit {code}): {' '.join(cmd)}\n" + "\n".join(tail))
    return usage.ru_utime + usage.ru_stime


def ivf_frames(path: str) -> list[bytes]:
    from codec.ivf import read_ivf

    _, records = read_ivf(path)
    return [r.data for r in records]


# -- measuring --------------------------------------------------------------------------------------

def kbps(size: int, frames: int, rate: tuple[int, int]) -> float:
    """``size`` bytes spread over ``frames`` pictures at ``rate`` frames per second, in kbit/s."""
    if frames <= 0:
        raise ValueError("no frames")
    return 8 * size * rate[0] / rate[1] / frames / 1000


def measure(data: list[bytes], source: list) -> tuple[int, float]:
    """Bytes of the compressed frames ``data`` and the mean SSIM (All planes) of what they decode
    to against ``source``; ``BenchError`` unless they show exactly one picture per source frame."""
    from codec.decoder import Decoder
    from codec.ssim import SsimMean, ssim_planes

    decoder = Decoder()
    mean = SsimMean()
    for frame in data:
        picture = decoder.decode(frame)
        if picture is None:
            continue
        if mean.count >= len(source):
            raise BenchError(f"the stream shows more than the {len(source)} source pictures")
        mean.add(ssim_planes(picture, source[mean.count]))
    if mean.count != len(source):
        raise BenchError(f"the stream shows {mean.count} pictures, the source has {len(source)}")
    return sum(map(len, data)), mean.mean().all


def key_frame_indices(data: list[bytes]) -> list[int]:
    """Positions of the key frames in a list of compressed frames (section 9.1's frame tag)."""
    from codec.chunks import frame_tag

    return [i for i, d in enumerate(data) if frame_tag(d).key_frame]


def expected_key_frames(n_frames: int, chunk_frames: int, batch_chunks: int) -> list[int]:
    """Where ExCamera[N, x] puts key frames in a stream of ``n_frames`` shown frames with no
    hidden ones: the first frame of each batch, every N * x frames."""
    return list(range(0, n_frames, chunk_frames * batch_chunks))


@dataclass
class Point:
    cq: int
    size: int
    ssim: float
    cpu: float  # seconds

    @property
    def db(self) -> float:
        return -10 * math.log10(1 - self.ssim) if self.ssim < 1 else math.inf


@dataclass
class Curve:
    label: str
    points: list[Point] = field(default_factory=list)

    def rates(self, frames: int, rate: tuple[int, int]) -> list[float]:
        return [kbps(p.size, frames, rate) for p in self.points]

    @property
    def quality(self) -> list[float]:
        return [p.db for p in self.points]


def bd_between(ref: Curve, test: Curve, frames: int, rate: tuple[int, int]) -> float | None:
    """BD-rate of ``test`` against ``ref`` in percent, None when the curves cannot be compared
    (too few points, no shared quality range)."""
    try:
        return bd_rate(ref.rates(frames, rate), ref.quality, test.rates(frames, rate), test.quality)
    except ValueError:
        return None


# -- the stages, timed -----------------------------------------------------------------------------

@dataclass
class ChunkTimes:
    """Seconds one chunk spent in each stage (wall, CPU); None where the chunk has no such stage
    (a chunk that begins a batch keeps its key frame: no encode-given-state, no rebase)."""

    first_pass: tuple[float, float]
    state_dump: tuple[float, float]
    encode_given_state: tuple[float, float] | None = None
    rebase: tuple[float, float] | None = None

    def stage(self, name: str) -> tuple[float, float] | None:
        return getattr(self, name.replace("-", "_").replace(" ", "_"))


class _Timer:
    """Wall and CPU seconds of a ``with`` block (``clock`` and ``cpu_clock`` are injectable)."""

    def __init__(self, clock: Callable[[], float], cpu_clock: Callable[[], float]):
        self.clock, self.cpu_clock = clock, cpu_clock
        self.total = (0.0, 0.0)

    def __enter__(self):
        self._start = (self.clock(), self.cpu_clock())
        return self

    def __exit__(self, *exc):
        self.total = (self.total[0] + self.clock() - self._start[0],
                      self.total[1] + self.cpu_clock() - self._start[1])


def staged_encode(frames: list, settings, fps: tuple[int, int] = (30, 1),
                  clock: Callable[[], float] = time.perf_counter,
                  cpu_clock: Callable[[], float] = time.process_time) -> tuple[list[bytes], list[ChunkTimes]]:
    """ExCamera[N, x] over ``frames`` stage by stage, as ``media.excamera_encode.encode_frames`` runs it
    (same bytes), with each chunk's time in each stage: first pass (libvpx or native, then
    terminate-chunk, which decodes the chunk once: the later stages use its states), state dump
    (serialize the exit state and load it back, as the next worker does), encode-given-state
    (against the previous chunk's first-pass exit state, as loaded), rebase (the serial step: the
    replacement first frame if the real state differs, then the chunk's later frames)."""
    from codec.state import DecoderState
    from media import excamera_encode as encode  # first_pass_chunk looked up at call time (fixed_first_passes)

    if len(frames) < settings.chunk_frames:
        raise ValueError(f"{len(frames)} frames, fewer than one chunk of {settings.chunk_frames}")
    ranges = encode.chunk_ranges(len(frames), settings)
    passes, handed, times = [], [], []
    for a, b in ranges:  # the parallel steps: first pass and state dump
        fp, dump = _Timer(clock, cpu_clock), _Timer(clock, cpu_clock)
        with fp:
            chunk = encode.first_pass_chunk(frames[a:b], settings, fps)
        with dump:
            loaded = DecoderState.from_bytes(chunk.exit.to_bytes())
        passes.append(chunk)
        handed.append(loaded)
        times.append(ChunkTimes(fp.total, dump.total))
    given = [b""] * len(ranges)
    for i, (a, b) in enumerate(ranges):  # parallel: encode-given-state
        if i % settings.batch_chunks == 0:
            continue
        egs = _Timer(clock, cpu_clock)
        with egs:
            given[i] = encode.given_state_frame(handed[i - 1], frames[a], passes[i].frames, settings,
                                                passes[i].states)
        times[i].encode_given_state = egs.total
    out: list[bytes] = []
    state = DecoderState()
    for i, (a, b) in enumerate(ranges):  # serial: rebase along each batch
        if i % settings.batch_chunks == 0:
            out.extend(passes[i].frames)
            state = passes[i].exit
            continue
        rebase = _Timer(clock, cpu_clock)
        with rebase:
            chunk, state = encode.rebase_chunk(state, handed[i - 1], given[i], frames[a:b], passes[i].frames,
                                               passes[i].states)
        times[i].rebase = rebase.total
        out.extend(chunk)
    return out, times


@contextlib.contextmanager
def fixed_first_passes():
    """While active, ``media.excamera_encode.first_pass_chunk`` (which ``encode_frames`` and
    ``staged_encode`` call) gives the same picture objects with the same settings the first pass it
    gave them the first time, so that comparing ``staged_encode`` with ``encode_frames`` runs each
    first pass once (libvpx's first pass is deterministic, ``excamera/vpxheap.py``; this saves its
    time). The key is the pictures' identity (no hashing, so a timed first pass costs what it
    costs); the memo keeps them alive, so no id is reused."""
    import media.excamera_encode as encode

    original = encode.first_pass_chunk
    memo: dict = {}

    def first_pass_chunk(frames, settings, fps):
        key = (tuple(map(id, frames)), settings, tuple(fps))
        if key not in memo:
            memo[key] = (list(frames), original(frames, settings, fps))
        return memo[key][1]

    encode.first_pass_chunk = first_pass_chunk
    try:
        yield
    finally:
        encode.first_pass_chunk = original


def stage_summary(times: list[ChunkTimes]) -> dict[str, tuple[int, float, float, float]]:
    """Per stage: (chunks that ran it, mean wall seconds, max wall seconds, mean CPU seconds)."""
    summary = {}
    for name in STAGES:
        values = [t.stage(name) for t in times if t.stage(name) is not None]
        if values:
            walls = [w for w, _ in values]
            summary[name] = (len(values), sum(walls) / len(walls), max(walls),
                             sum(c for _, c in values) / len(values))
        else:
            summary[name] = (0, math.nan, math.nan, math.nan)
    return summary


# -- the runs --------------------------------------------------------------------------------------

def compress_clip(clip: Clip, path: str, limit: int, cq_levels, tmp: str) -> dict[str, float | None]:
    from media.excamera_encode import EncodeSettings, encode_frames

    frames, rate = read_frames(path, limit)
    if len(frames) < CHUNK_FRAMES:
        raise BenchError(f"{path}: {len(frames)} frames, fewer than one chunk")
    h, w = frames[0].y.shape
    note = "" if len(frames) == limit else f" (wanted {limit}: the clip is shorter)"
    print(f"\n{clip.label}: {os.path.relpath(path)}, {w}x{h}, first {len(frames)} frames{note}, "
          f"{rate[0]}/{rate[1]} fps")
    y4m = os.path.join(tmp, f"{clip.name}.y4m")
    write_y4m(y4m, frames, rate)
    curves = {f"ExCamera[{CHUNK_FRAMES},{x}]": Curve(f"ExCamera[{CHUNK_FRAMES},{x}]") for x in BATCHES}
    curves.update({f"vpxenc {p}-pass": Curve(f"vpxenc {p}-pass") for p in (1, 2)})
    for cq in cq_levels:
        for x in BATCHES:
            settings = EncodeSettings(CHUNK_FRAMES, x, cq)
            start = time.process_time()
            data = encode_frames(frames, settings, rate)
            cpu = time.process_time() - start
            keys = key_frame_indices(data)
            if keys != expected_key_frames(len(frames), CHUNK_FRAMES, x):
                raise BenchError(f"{clip.label} ExCamera[{CHUNK_FRAMES},{x}] cq {cq}: key frames at "
                                 f"{keys}, expected {expected_key_frames(len(frames), CHUNK_FRAMES, x)}")
            curves[f"ExCamera[{CHUNK_FRAMES},{x}]"].points.append(Point(cq, *measure(data, frames), cpu))
        for passes in (1, 2):
            out = os.path.join(tmp, f"{clip.name}-{cq}-{passes}.ivf")
            cpu = run_vpxenc(vpxenc_command(y4m, out, cq, passes, len(frames)))
            curves[f"vpxenc {passes}-pass"].points.append(Point(cq, *measure(ivf_frames(out), frames), cpu))
    print(f"    {'encoder':<15} {'cq':>3} {'kbit/s':>9} {'SSIM':>9} {'dB':>7} {'CPU s':>7}")
    for curve in curves.values():
        for p, r in zip(curve.points, curve.rates(len(frames), rate)):
            print(f"    {curve.label:<15} {p.cq:>3} {r:>9.1f} {p.ssim:>9.6f} {p.db:>7.3f} {p.cpu:>7.2f}")
    x16, x1 = curves["ExCamera[6,16]"], curves["ExCamera[6,1]"]
    results = {
        "[6,16] vs vpxenc 2-pass": bd_between(curves["vpxenc 2-pass"], x16, len(frames), rate),
        "[6,16] vs vpxenc 1-pass": bd_between(curves["vpxenc 1-pass"], x16, len(frames), rate),
        "[6,1] vs vpxenc 2-pass": bd_between(curves["vpxenc 2-pass"], x1, len(frames), rate),
        "[6,16] vs [6,1]": bd_between(x1, x16, len(frames), rate),
    }
    for name, value in results.items():
        print(f"  BD-rate {name:<24} {_pct(value)}")
    return results


def _pct(value: float | None) -> str:
    return "n/a (curves do not overlap)" if value is None else f"{value:+.1f}%"


def time_stages(clip: Clip, path: str, chunks: int | None) -> dict:
    from media.excamera_encode import EncodeSettings, encode_frames

    limit = clip.frames if chunks is None else chunks * CHUNK_FRAMES
    frames, rate = read_frames(path, limit)
    limit = len(frames) - len(frames) % CHUNK_FRAMES  # whole chunks only
    if limit < 2 * CHUNK_FRAMES:
        raise BenchError(f"{path}: {len(frames)} frames, fewer than two chunks")
    frames = frames[:limit]
    settings = EncodeSettings(CHUNK_FRAMES, 16, STAGE_CQ)
    with fixed_first_passes():
        data, times = staged_encode(frames, settings, rate)
        same = data == encode_frames(frames, settings, rate)
    if not same:
        raise BenchError(f"{clip.label}: the timed stages do not reproduce encode_frames' bytes; "
                         "bench/excamera_bench.py's staged_encode no longer mirrors excamera/encode.py")
    h, w = frames[0].y.shape
    summary = stage_summary(times)
    print(f"\n{clip.label}: {os.path.relpath(path)}, {w}x{h}, {len(times)} chunks of {CHUNK_FRAMES} "
          f"frames, cq-level {STAGE_CQ} (same bytes as encode_frames)")
    print(f"    {'stage':<20} {'chunks':>6} {'wall s/chunk':>13} {'max':>7} {'CPU s/chunk':>12}")
    for name, (n, mean, top, cpu) in summary.items():
        print(f"    {name:<20} {n:>6} {mean:>13.3f} {top:>7.3f} {cpu:>12.3f}")
    return summary


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="ExCamera[6,1] and [6,16] against serial vpxenc (BD-rate over SSIM) and the "
                    "time of each ExCamera stage per chunk.")
    parser.add_argument("--quick", action="store_true",
                        help=f"first {QUICK_FRAMES} frames of each clip, {QUICK_STAGE_CHUNKS} chunks per stage clip")
    parser.add_argument("--testdata", metavar="DIR", default=DEFAULT_TESTDATA,
                        help="the shared test data (default: ../shared/testdata next to the repository)")
    parser.add_argument("--clip", action="append", metavar="NAME",
                        help="only these clips (carphone, bikes, foreman, bbb, zhling; repeatable)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("vpxenc") is None:
        print("excamera_bench: vpxenc NOT FOUND - the comparison needs it: apt-get install vpx-tools",
              file=sys.stderr)
        return 1
    pick = (lambda cs: [c for c in cs if c.name in args.clip]) if args.clip else (lambda cs: cs)
    clips, missing = find_inputs(args.testdata, pick(CLIPS))
    stage_clips, stage_missing = find_inputs(args.testdata, pick(STAGE_CLIPS))
    for message in dict.fromkeys(missing + stage_missing):
        print(f"excamera_bench: {message}", file=sys.stderr)
    if not clips and not stage_clips:
        print("excamera_bench: no input to measure", file=sys.stderr)
        return 1
    print(f"ExCamera[{CHUNK_FRAMES},1] and [{CHUNK_FRAMES},16] (media.excamera_encode.encode_frames, libvpx "
          f"first pass) against serial vpxenc with ExCamera's settings, 1 and 2 passes; cq-levels "
          f"{list(CQ_LEVELS)}; quality: mean SSIM (All) in dB; rate: compressed frame bytes"
          f"{'; quick: first ' + str(QUICK_FRAMES) + ' frames' if args.quick else ''}")
    from media.excamera_encode import EncodeSettings
    all_results: dict[str, list[float]] = {}
    per_clip: dict[str, dict] = {}  # clip label -> comparison -> BD-rate, for bench/results.json
    stage_results = {}
    try:
        with tempfile.TemporaryDirectory(prefix="excamera_bench.") as tmp:
            for clip, path in clips:
                limit = min(clip.frames, QUICK_FRAMES) if args.quick else clip.frames
                per_clip[clip.label] = compress_clip(clip, path, limit, CQ_LEVELS, tmp)
                for name, value in per_clip[clip.label].items():
                    if value is not None:
                        all_results.setdefault(name, []).append(value)
            if stage_clips:
                start = time.perf_counter()
                warm, rate = read_frames(stage_clips[0][1], 2 * CHUNK_FRAMES)
                staged_encode(warm, EncodeSettings(CHUNK_FRAMES, 16, STAGE_CQ), rate)
                print(f"\nstage times (warm-up, numba kernels: {time.perf_counter() - start:.1f} s)")
            for clip, path in stage_clips:
                stage_results[clip.label] = time_stages(clip, path, QUICK_STAGE_CHUNKS if args.quick else None)
    except BenchError as e:
        print(f"excamera_bench: {e}", file=sys.stderr)
        return 1

    print("\nsummary (BD-rate over SSIM dB, mean over clips):")
    for name, values in all_results.items():
        target = {"[6,16] vs vpxenc 2-pass": f"  [target <= +{VS_VPX_TARGET:g}%]",
                  "[6,16] vs [6,1]": f"  [target <= {VS_X1_TARGET:g}%]"}.get(name, "")
        print(f"  {name:<24} {sum(values) / len(values):+6.1f}%  ({', '.join(f'{v:+.1f}%' for v in values)})"
              f"{target}")
    if stage_results:
        print("stage wall seconds per chunk (first pass / state dump / encode-given-state / rebase):")
        for label, summary in stage_results.items():
            print(f"  {label:<18} " + " / ".join(f"{summary[s][1]:.3f}" for s in STAGES))
    if missing or stage_missing:
        print(f"(inputs missing: {len(set(missing + stage_missing))}; see above)")
    record_figures(args, per_clip, all_results, stage_results)
    return 0


def record_figures(args, per_clip: dict[str, dict], all_results: dict[str, list[float]],
                   stage_results: dict) -> None:
    """What was printed, as data (bench/results.json; bench/render.py makes the tables)."""
    from bench.results import record

    names = list(next(iter(per_clip.values()), {}))
    r1 = lambda v: None if v is None else round(v, 1)  # noqa: E731
    rows = [[label, *(r1(values.get(n)) for n in names)] for label, values in per_clip.items()]
    if len(per_clip) > 1:
        rows.append(["mean", *(r1(sum(all_results[n]) / len(all_results[n])) if all_results.get(n) else None
                               for n in names)])
    tables = []
    if rows:
        tables.append({"title": f"BD-rate over SSIM dB (%), cq-levels {list(CQ_LEVELS)}; negative: fewer bits",
                       "columns": ["clip", *names], "rows": rows})
    if stage_results:
        tables.append({"title": f"Stage time per {CHUNK_FRAMES}-frame chunk, wall seconds of one process "
                                f"(cq-level {STAGE_CQ})",
                       "columns": ["stage", *stage_results],
                       "rows": [[s, *(round(summary[s][1], 3) for summary in stage_results.values())]
                                for s in STAGES]})
    headline = []
    hd = next((v for label, v in per_clip.items() if "720p" in label), None)
    if hd is not None and hd.get("[6,16] vs vpxenc 2-pass") is not None:
        headline.append({"figure": "ExCamera[6,16] bits for the same SSIM, 720p (BD-rate)",
                         "value": f"{hd['[6,16] vs vpxenc 2-pass']:+.1f}%", "against": "two-pass vpxenc",
                         "target": f"<= +{VS_VPX_TARGET:g}%"})
    record("excamera", {
        "command": "python bench/excamera_bench.py" + (" --quick" if args.quick else ""),
        "headline": headline, "tables": tables,
        "notes": [f"--quick: the first {QUICK_FRAMES} frames of each clip"] if args.quick else []},
        title="ExCamera[6,1] and [6,16] against serial vpxenc")


if __name__ == "__main__":
    sys.exit(main())
