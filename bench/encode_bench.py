#!/usr/bin/env python3
"""Encode benchmark: ``excamera vp8enc`` against libvpx's ``vpxenc``, compression and time.

This is the second half of ``make bench``. It is a benchmark, not a test: it prints figures and
fails (exit 1) only when it cannot measure (no clip found, an encoder failing, a stream that does
not decode).

For each clip, each encoder runs at a spread of constant quantizers:

* ``vpxenc --codec=vp8 --good --cpu-used=0 --end-usage=q --cq-level=X --min-q=X --max-q=X``
  (X on vpxenc's 0..63 scale; pinning min = max makes vpxenc ask "Continue? (y to continue)" on
  standard input, which is answered ``y``);
* ``excamera vp8enc --quantizer Q --speed S`` (Q the 0..127 quantizer index of RFC 6386 section
  9.6; the two spreads are chosen so that both cover about the same SSIM range).

Each stream is decoded (by ``codec.decoder``, bit-exact with libvpx) and compared with the source:
quality is the mean SSIM of all planes (``codec.ssim``, as ffmpeg's ssim filter) in dB,
``-10 log10(1 - SSIM)``; rate is the bytes of the compressed frames (IVF framing not counted) as
kbit/s at the clip's frame rate. The Bjontegaard delta rate (``bench/bdrate.py``) of excamera
against vpxenc summarises a clip: the average extra bits excamera spends for the same SSIM.

Time: every encode runs pinned to one core with ``taskset``, timed from process start to exit
(so excamera's interpreter start-up and numba cache loading count); wall and CPU (user + system)
seconds are summed over a clip's points and reported as excamera / vpxenc. On a shared machine
other work stretches wall time far more than CPU time: the CPU ratio is the steadier figure.
Beside them, "encode alone" divides the CPU time excamera reports for its encode loop (its
summary line's "encoded in W s (C s CPU, ...)": no interpreter start-up or imports, which cost
about 0.3 s of CPU a run) by vpxenc's whole-process CPU time: on short clips start-up weighs on the
whole-process ratio. One untimed excamera run first warms the numba cache.

Clips (real content, 4:2:0 y4m): foreman CIF 60 frames, bus CIF 17, carphone QCIF 120, bikes
640x272 30. They are too big to keep in the repository (24 MB); they are read from ``--clips``,
by default ``bench/data`` when they are there, else ``../shared/testdata/clips`` next to the
repository. ``--quick``: the first 10 frames of each clip and 4 points per encoder.

Usage::

    python bench/encode_bench.py [--quick] [--speed S] [--clips DIR] [--clip NAME ...]
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from bench.bdrate import bd_quality, bd_rate  # noqa: E402  (needs REPO on sys.path)
from bench.decode_bench import pin_prefix  # noqa: E402

#: The clips: file name, short name.
CLIPS = [
    ("foreman_cif_352x288_60f_decoded.y4m", "foreman CIF"),
    ("bus_cif_352x288_17f.y4m", "bus CIF"),
    ("carphone_qcif_176x144_120f_decoded.y4m", "carphone QCIF"),
    ("bikes_640x272_30f_decoded.y4m", "bikes 640x272"),
]
CLIP_DIRS = [os.path.join(REPO, "bench", "data"),
             os.path.join(os.path.dirname(REPO), "shared", "testdata", "clips")]

#: Quantizer spreads covering about the same SSIM range (foreman CIF: about 21 to 10.5 dB).
VPX_POINTS = (8, 20, 32, 44, 56)          # vpxenc --min-q = --max-q, 0..63
EXC_POINTS = (8, 24, 44, 68, 96)          # excamera --quantizer, 0..127
VPX_QUICK = (10, 24, 40, 56)
EXC_QUICK = (10, 30, 56, 90)
QUICK_FRAMES = 10

BD_TARGET, BD_AIM = 15.0, 5.0        # BD-rate, percent
TIME_TARGET, TIME_AIM = 3.0, 1.0     # excamera / vpxenc encode time


ENCODED_RE = re.compile(r"encoded in [0-9.]+ s \(([0-9.]+) s CPU")


class BenchError(Exception):
    """The bench cannot measure (a missing tool's output, a failed encode): exit 1."""


@dataclass
class Point:
    """One encode: the quantizer, compressed bytes, mean SSIM (All), wall and CPU seconds."""

    q: int
    size: int
    ssim: float
    wall: float
    cpu: float
    inner: float  # CPU seconds of the encode itself (excamera: its loop, no start-up); = cpu for vpxenc

    @property
    def db(self) -> float:
        return -10 * math.log10(1 - self.ssim) if self.ssim < 1 else math.inf


@dataclass
class Curve:
    label: str
    points: list[Point] = field(default_factory=list)

    def kbps(self, fps: float, frames: int) -> list[float]:
        return [8 * p.size * fps / frames / 1000 for p in self.points]

    @property
    def quality(self) -> list[float]:
        return [p.db for p in self.points]

    @property
    def wall(self) -> float:
        return sum(p.wall for p in self.points)

    @property
    def cpu(self) -> float:
        return sum(p.cpu for p in self.points)

    @property
    def inner(self) -> float:
        return sum(p.inner for p in self.points)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="excamera vp8enc against vpxenc: BD-rate over SSIM and encode time, one core.")
    parser.add_argument("--quick", action="store_true",
                        help=f"first {QUICK_FRAMES} frames of each clip, {len(EXC_QUICK)} points per encoder")
    parser.add_argument("--speed", type=int, default=1, choices=range(5), metavar="S",
                        help="excamera vp8enc --speed (default %(default)s)")
    parser.add_argument("--clips", metavar="DIR",
                        help="directory holding the clip y4m files (default: bench/data if they "
                             "are there, else ../shared/testdata/clips)")
    parser.add_argument("--clip", action="append", metavar="NAME",
                        help="only the clips whose file name contains NAME (repeatable)")
    return parser.parse_args(argv)


def run(cmd: list[str], stdin: bytes = b"") -> tuple[float, float, str]:
    """Run ``cmd`` to completion with ``stdin`` as its input; (wall seconds, CPU seconds, stdout)."""
    with tempfile.TemporaryFile() as inp, tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        inp.write(stdin)
        inp.seek(0)
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, stdin=inp, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - start
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            err.seek(0)
            tail = err.read().decode("utf-8", "replace").replace("\r", "\n").strip().splitlines()[-3:]
            raise BenchError(f"command failed (exit {code}): {' '.join(cmd)}\n" + "\n".join(tail))
        out.seek(0)
        stdout = out.read().decode("utf-8", "replace")
    return elapsed, usage.ru_utime + usage.ru_stime, stdout


def encode_seconds(stdout: str) -> float:
    """The CPU time of the encode loop from ``excamera vp8enc``'s summary line
    ("encoded in W s (C s CPU, ...)")."""
    match = ENCODED_RE.search(stdout)
    if match is None:
        raise BenchError(f"no 'encoded in' CPU time in excamera's summary: {stdout.strip()!r}")
    return float(match.group(1))


def find_clips(args: argparse.Namespace) -> tuple[list[tuple[str, str]], list[str]]:
    """(path, short name) of every clip found, and the file names not found."""
    dirs = [args.clips] if args.clips else CLIP_DIRS
    found, missing = [], []
    for name, label in CLIPS:
        if args.clip and not any(part in name for part in args.clip):
            continue
        path = next((os.path.join(d, name) for d in dirs if os.path.isfile(os.path.join(d, name))), None)
        if path is None:
            missing.append(name)
        else:
            found.append((path, label))
    return found, missing


def measure(stream: str, source: str, frames: int) -> tuple[int, float]:
    """Bytes of the compressed frames of ``stream`` and its mean SSIM (All) against the first
    ``frames`` pictures of ``source``."""
    from codec.ivf import read_ivf
    from codec.ssim import SsimMean, ssim_planes
    from media.video import open_video

    _, records = read_ivf(stream)
    size = sum(len(r.data) for r in records)
    mean = SsimMean()
    with open_video(stream) as decoded, open_video(source) as original:
        for picture in decoded:
            mean.add(ssim_planes(picture, next(original)))
    if mean.count != frames:
        raise BenchError(f"{stream} shows {mean.count} pictures, expected {frames}")
    return size, mean.mean().all


def source_info(path: str) -> tuple[int, int, float, int]:
    """Width, height, frames per second and frame count of a y4m clip."""
    from codec.y4m import Y4mReader

    with Y4mReader(path) as reader:
        header = reader.header
        count = 0
        while reader.read_frame() is not None:
            count += 1
    num, den = header.rate
    return header.width, header.height, (num / den if num and den else 30.0), count


def encode_clip(path: str, frames: int, vpx_points, exc_points, pin: list[str], speed: int,
                tmp: str) -> tuple[Curve, Curve]:
    vpxenc = shutil.which("vpxenc")
    vpx, exc = Curve("vpxenc"), Curve("excamera")
    for x, q in zip(vpx_points, exc_points):  # interleaved, so drift hits both alike
        out = os.path.join(tmp, f"vpx{x}.ivf")
        wall, cpu, _ = run(pin + [vpxenc, "--codec=vp8", "--good", "--cpu-used=0", "--end-usage=q",
                                  f"--cq-level={x}", f"--min-q={x}", f"--max-q={x}", "--ivf",
                                  f"--limit={frames}", "-o", out, path], stdin=b"y\n")
        vpx.points.append(Point(x, *measure(out, path, frames), wall, cpu, cpu))
        out = os.path.join(tmp, f"exc{q}.ivf")
        wall, cpu, stdout = run(pin + [sys.executable, "-m", "excamera", "vp8enc", path, "-o", out,
                                       "--quantizer", str(q), "--speed", str(speed), "--frames", str(frames)])
        exc.points.append(Point(q, *measure(out, path, frames), wall, cpu, encode_seconds(stdout)))
    return vpx, exc


def print_curves(vpx: Curve, exc: Curve, fps: float, frames: int) -> None:
    print(f"    {'encoder':<9} {'q':>4} {'kbit/s':>9} {'SSIM':>9} {'dB':>7} {'wall s':>7} {'cpu s':>7} "
          f"{'enc cpu':>8}")
    for curve in (vpx, exc):
        for p, kbps in zip(curve.points, curve.kbps(fps, frames)):
            print(f"    {curve.label:<9} {p.q:>4} {kbps:>9.1f} {p.ssim:>9.6f} {p.db:>7.3f} "
                  f"{p.wall:>7.2f} {p.cpu:>7.2f} {p.inner:>8.2f}")


def bd_text(vpx: Curve, exc: Curve, fps: float, frames: int) -> tuple[float | None, str]:
    try:
        rate = bd_rate(vpx.kbps(fps, frames), vpx.quality, exc.kbps(fps, frames), exc.quality)
        dq = bd_quality(vpx.kbps(fps, frames), vpx.quality, exc.kbps(fps, frames), exc.quality)
    except ValueError as e:
        return None, f"n/a ({e})"
    return rate, f"{rate:+.1f}% (BD-SSIM {dq:+.3f} dB)"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("vpxenc") is None:
        print("encode_bench: vpxenc NOT FOUND - the comparison needs it: apt-get install vpx-tools",
              file=sys.stderr)
        return 1
    clips, missing = find_clips(args)
    where = args.clips or " or ".join(os.path.relpath(d) for d in CLIP_DIRS)
    for name in missing:
        print(f"encode_bench: clip {name} not found in {where}; it is in the project's shared test "
              f"data (shared/testdata/clips): copy it to bench/data or pass --clips DIR",
              file=sys.stderr)
    if not clips:
        print("encode_bench: no clip to encode", file=sys.stderr)
        return 1

    vpx_points, exc_points = (VPX_QUICK, EXC_QUICK) if args.quick else (VPX_POINTS, EXC_POINTS)
    pin, pin_note = pin_prefix()
    print(f"encoders: vpxenc --good --cpu-used=0 --end-usage=q, --min-q=--max-q in {list(vpx_points)}; "
          f"excamera vp8enc --speed {args.speed}, --quantizer in {list(exc_points)}")
    print(f"quality:  mean SSIM (All planes) in dB; rate: compressed frame bytes; "
          f"{'quick: first ' + str(QUICK_FRAMES) + ' frames' if args.quick else 'all frames'}")
    print(f"cpu:      {pin_note}; whole-process times (start-up and numba cache loading included)")

    totals = dict.fromkeys(("vpx_wall", "vpx_cpu", "exc_wall", "exc_cpu", "exc_inner"), 0.0)
    rates: list[float] = []
    summary: list[str] = []
    clip_rows: list[list] = []  # for bench/results.json
    try:
        with tempfile.TemporaryDirectory(prefix="encode_bench.") as tmp:
            first = clips[0][0]
            warm = os.path.join(tmp, "warm.ivf")
            start = time.perf_counter()
            run(pin + [sys.executable, "-m", "excamera", "vp8enc", first, "-o", warm, "--frames", "2",
                       "--speed", str(args.speed)])
            print(f"warm-up:  excamera vp8enc, 2 frames, {time.perf_counter() - start:.1f} s (numba cache)")
            for path, label in clips:
                width, height, fps, count = source_info(path)
                frames = min(count, QUICK_FRAMES) if args.quick else count
                print(f"\n{label}: {os.path.relpath(path)} ({width}x{height}, {frames} frames, {fps:g} fps)")
                vpx, exc = encode_clip(path, frames, vpx_points, exc_points, pin, args.speed, tmp)
                print_curves(vpx, exc, fps, frames)
                rate, text = bd_text(vpx, exc, fps, frames)
                if rate is not None:
                    rates.append(rate)
                ratio, cpu_ratio, inner_ratio = exc.wall / vpx.wall, exc.cpu / vpx.cpu, exc.inner / vpx.cpu
                print(f"  BD-rate (excamera vs vpxenc, SSIM dB): {text}")
                print(f"  time excamera/vpxenc: {ratio:.2f}x wall, {cpu_ratio:.2f}x CPU "
                      f"({exc.wall:.1f} s vs {vpx.wall:.1f} s); CPU of the encode alone {inner_ratio:.2f}x")
                summary.append(f"  {label:<15} BD-rate {text.split(' (')[0]:>8}   time {ratio:5.2f}x wall "
                               f"{cpu_ratio:5.2f}x CPU {inner_ratio:5.2f}x CPU encode alone")
                clip_rows.append([label, None if rate is None else round(rate, 1), round(ratio, 2),
                                  round(cpu_ratio, 2), round(inner_ratio, 2)])
                for key, value in (("vpx_wall", vpx.wall), ("vpx_cpu", vpx.cpu), ("exc_wall", exc.wall),
                                   ("exc_cpu", exc.cpu), ("exc_inner", exc.inner)):
                    totals[key] += value
    except BenchError as e:
        print(f"encode_bench: {e}", file=sys.stderr)
        return 1

    print("\nsummary (excamera vp8enc vs vpxenc --cpu-used=0):")
    print("\n".join(summary))
    mean_rate = f"{sum(rates) / len(rates):+.1f}%" if rates else "n/a"
    print(f"overall BD-rate (mean over {len(rates)} clips): {mean_rate}  "
          f"[target <= +{BD_TARGET:g}%, aim +{BD_AIM:g}%]")
    print(f"overall time excamera/vpxenc: {totals['exc_wall'] / totals['vpx_wall']:.2f}x wall, "
          f"{totals['exc_cpu'] / totals['vpx_cpu']:.2f}x CPU  [target <= {TIME_TARGET:g}x, aim {TIME_AIM:g}x]; "
          f"CPU of the encode alone (no start-up) {totals['exc_inner'] / totals['vpx_cpu']:.2f}x")
    if missing:
        print(f"(clips missing: {', '.join(missing)})")
    record_figures(args, clip_rows, rates, totals, missing)
    return 0


def record_figures(args, clip_rows: list[list], rates: list[float], totals: dict, missing: list[str]) -> None:
    """What was printed, as data (bench/results.json; bench/render.py makes the tables)."""
    from bench.results import record

    mean = round(sum(rates) / len(rates), 1) if rates else None
    wall, cpu = totals["exc_wall"] / totals["vpx_wall"], totals["exc_cpu"] / totals["vpx_cpu"]
    inner = totals["exc_inner"] / totals["vpx_cpu"]
    rows = clip_rows + [["overall (BD-rate: mean)", mean, round(wall, 2), round(cpu, 2), round(inner, 2)]]
    notes = [f"clips missing: {', '.join(missing)}"] if missing else []
    if args.quick:
        notes.append(f"--quick: the first {QUICK_FRAMES} frames of each clip, {len(EXC_QUICK)} points")
    record("vp8enc", {
        "command": "python bench/encode_bench.py" + (" --quick" if args.quick else ""),
        "headline": [{"figure": "vp8enc: bits for the same SSIM (BD-rate) and CPU time",
                      "value": f"{mean:+.1f}%, {cpu:.2f}x" if mean is not None else f"{cpu:.2f}x",
                      "against": "vpxenc --good --cpu-used=0",
                      "target": f"<= +{BD_TARGET:g}%, <= {TIME_TARGET:g}x"}],
        "tables": [{"title": f"excamera vp8enc --speed {args.speed} against vpxenc --good --cpu-used=0 "
                             f"--end-usage=q, every encode pinned to one core",
                    "columns": ["clip", "BD-rate, SSIM (%)", "time, wall (x)", "time, CPU (x)",
                                "CPU, encode loop only (x)"],
                    "rows": rows,
                    "note": "BD-rate: how many more bits excamera needs for the same SSIM (negative: "
                            "fewer). Times are excamera's over vpxenc's."}],
        "notes": notes}, title="Encode: excamera vp8enc against vpxenc")


if __name__ == "__main__":
    sys.exit(main())
