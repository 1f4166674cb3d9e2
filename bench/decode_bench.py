#!/usr/bin/env python3
"""Decode benchmark: excamera's VP8 decoder against libvpx's ``vpxdec``, whole-process wall time.

This is ``make bench``. It is a benchmark, not a test: it prints figures and fails (exit 1) only
when the output is wrong, i.e. when excamera's md5 of the decoded frames differs from vpxdec's
or from the per-frame reference ``INPUT.md5``.

Inputs (``--input``, repeatable): by default ``bench/data/bikes_640x272_250f.ivf`` and a 720p
stream of 300 frames made here once with ExCamera's vpxenc settings (``--good --cpu-used=0
--end-usage=cq --min-q=0 --max-q=63 --cq-level=20 --auto-alt-ref=1 --tune=ssim``) from
``tests/data/clips/compressed/bigbuckbunny_1280x720_30f.mp4`` looped ten times; it is kept in
``$XDG_CACHE_HOME/excamera-bench`` (``~/.cache``) and needs ffmpeg and vpxenc to make.

What is measured (every command pinned to one core with ``taskset`` when available, each timed
from process start to exit, so interpreter start-up, imports and numba cache loading count):

* per input, ``vpxdec --i420 --md5 INPUT`` and ``PYTHON -m excamera decode INPUT`` (summary mode:
  one line with the md5 of all output), run ``--repeat`` times each, interleaved, median and min
  reported; the md5 of every excamera run must equal vpxdec's;
* on the last input: start-up latency of a warm process, ``excamera decode`` of a one-frame IVF
  holding its first frame (what every worker pays before decoding anything), with the kernels
  compiled ahead of time (``codec.aot``, when ``python -m excamera.aot_build`` has built them for
  these sources) and with numba's cache instead (``EXCAMERA_AOT=0``), and ``excamera --help``;
  then the same start-up split into its parts (interpreter, numpy, loading the compiled kernels
  or importing numba, the codec modules, the first frame), timed inside a child process against
  the parent's clock;
* cold start: the start-up parts and one whole ``excamera decode`` of the last input with neither
  (``EXCAMERA_AOT=0`` and ``NUMBA_CACHE_DIR`` a fresh temporary directory each), with the compile
  time of each entry point numba compiled for the first frame (numba's ``numba:compile`` events).

Before timing, excamera runs once with ``--frame-md5`` (which also warms the numba cache and the
page cache) and its per-frame md5s are checked against ``INPUT.md5`` when that file exists.

``PYTHON`` is the interpreter running this script. Without ``vpxdec`` the comparison is skipped
(install it with ``apt-get install vpx-tools``) and excamera's own figures are still reported.

Usage::

    python bench/decode_bench.py [--input FILE.ivf ...] [--repeat N] [--no-cold]

Standard library only (the start-up child imports the codec).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from codec.ivf import IvfReader, IvfWriter  # noqa: E402  (needs REPO on sys.path)

DEFAULT_INPUT = os.path.join(REPO, "bench", "data", "bikes_640x272_250f.ivf")
HD_SOURCE = os.path.join(REPO, "tests", "data", "clips", "compressed", "bigbuckbunny_1280x720_30f.mp4")
HD_LOOPS = 10  # 30 frames x 10: a 720p stream of 300 frames
# ExCamera's vpxenc settings (excamera/firstpass.py), one thread.
VPXENC_SETTINGS = ["--codec=vp8", "--good", "--cpu-used=0", "--end-usage=cq", "--min-q=0", "--max-q=63",
                   "--cq-level=20", "--auto-alt-ref=1", "--tune=ssim", "--threads=1"]
TARGET, AIM = 2.5, 1.5  # the goal for excamera/vpxdec decode time
STARTUP_TARGET = 0.2    # seconds from process start to the first decoded frame, warm cache
MD5_RE = re.compile(r"\bmd5 ([0-9a-f]{32})\b")


class Mismatch(Exception):
    """excamera's output differs from the reference: the one failure that exits 1."""


@dataclass
class Timing:
    """Wall times (seconds) of repeated runs of one command."""

    label: str
    frames: int | None = None  # frames decoded per run, for frames/s; None for --help
    note: str = ""
    times: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # user + system seconds of the process

    def add(self, wall: float, cpu: float) -> None:
        self.times.append(wall)
        self.cpu.append(cpu)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def best(self) -> float:
        return min(self.times)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Whole-process decode time of excamera vs vpxdec, pinned to one core.")
    parser.add_argument("--input", action="append", metavar="FILE",
                        help="IVF file to decode, repeatable (default: %s and the 720p stream made "
                             "from %s); its per-frame reference md5s are read from FILE.md5 when "
                             "that exists" % (os.path.relpath(DEFAULT_INPUT, REPO),
                                              os.path.relpath(HD_SOURCE, REPO)))
    parser.add_argument("--repeat", type=int, default=5, metavar="N",
                        help="timed runs of each command, interleaved (default: %(default)s)")
    parser.add_argument("--no-cold", action="store_true",
                        help="skip the cold-cache runs (each compiles every kernel: minutes)")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    for path in args.input or []:
        if not os.path.isfile(path):
            parser.error(f"no such input file: {path}")
    return args


def hd_stream() -> str | None:
    """The 300-frame 720p stream, made once (ffmpeg | vpxenc) and kept in the cache directory;
    None (with a line saying why) when it cannot be made."""
    cache = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
                         "excamera-bench")
    path = os.path.join(cache, f"bigbuckbunny_1280x720_{30 * HD_LOOPS}f_cq20.ivf")
    if os.path.isfile(path):
        return path
    ffmpeg, vpxenc = shutil.which("ffmpeg"), shutil.which("vpxenc")
    if ffmpeg is None or vpxenc is None or not os.path.isfile(HD_SOURCE):
        print("720p:    NOT MADE - needs ffmpeg, vpxenc and " + os.path.relpath(HD_SOURCE, REPO))
        return None
    os.makedirs(cache, exist_ok=True)
    print(f"720p:    making {path} with vpxenc {' '.join(VPXENC_SETTINGS)} (once; about a minute)",
          flush=True)
    tmp = path + ".part"
    decode = subprocess.Popen([ffmpeg, "-loglevel", "error", "-stream_loop", str(HD_LOOPS - 1), "-i",
                               HD_SOURCE, "-f", "yuv4mpegpipe", "-pix_fmt", "yuv420p", "-"],
                              stdout=subprocess.PIPE)
    encode = subprocess.run([vpxenc, *VPXENC_SETTINGS, "--ivf", "-q", "-o", tmp, "-"], stdin=decode.stdout,
                            capture_output=True)
    decode.stdout.close()
    if decode.wait() != 0 or encode.returncode != 0:
        sys.exit(f"decode_bench: making the 720p stream failed: {encode.stderr.decode().strip()}")
    os.replace(tmp, path)
    return path


def pin_prefix() -> tuple[list[str], str]:
    """The command prefix that pins a process to one core, and a line describing it."""
    taskset = shutil.which("taskset")
    if taskset is None:
        return [], "NOT pinned: taskset not found (install util-linux); figures may use several cores"
    cpu = min(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0
    prefix = [taskset, "-c", str(cpu)]
    if subprocess.run(prefix + ["true"], capture_output=True).returncode != 0:
        return [], f"NOT pinned: 'taskset -c {cpu}' failed here; figures may use several cores"
    return prefix, f"pinned to core {cpu} (taskset -c {cpu})"


def run(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """Run ``cmd`` to completion; return (wall seconds, CPU seconds, stdout). A failure is fatal.

    CPU seconds (user + system, from the process's own rusage) are reported beside wall time:
    on a shared machine other work stretches wall time, much less the CPU time a process uses.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        sys.exit(f"decode_bench: command failed (exit {proc.returncode}): {' '.join(cmd)}\n"
                 f"{stderr.strip()}")
    return elapsed, usage.ru_utime + usage.ru_stime, stdout


def excamera_md5(stdout: str) -> str:
    """The md5 of all output from excamera's one-line decode summary."""
    match = MD5_RE.search(stdout)
    if match is None:
        sys.exit(f"decode_bench: no md5 in excamera's summary line: {stdout.strip()!r}")
    return match.group(1)


def reference_frame_md5s(path: str) -> list[str] | None:
    """Per-frame md5s from ``<input>.md5`` (vpxdec --md5 format), or None if there is none."""
    try:
        with open(path + ".md5") as f:
            return [line.split()[0] for line in f if line.strip()]
    except FileNotFoundError:
        return None


def check_frame_md5s(python: list[str], path: str) -> str:
    """Untimed warm-up: ``excamera decode --frame-md5`` against ``<input>.md5``."""
    _, _, out = run(python + ["-m", "excamera", "decode", "--frame-md5", path])
    got = [line.split()[0] for line in out.splitlines() if line.strip()]
    want = reference_frame_md5s(path)
    if want is None:
        return f"no {os.path.basename(path)}.md5: per-frame check skipped"
    if got != want:
        bad = next((i for i, (g, w) in enumerate(zip(got, want)) if g != w), min(len(got), len(want)))
        raise Mismatch(f"per-frame md5 differs from {path}.md5 at shown frame {bad + 1} "
                       f"({len(got)} frames decoded, {len(want)} expected)")
    return f"per-frame md5s match {os.path.basename(path)}.md5 ({len(got)} frames)"


def write_first_frame(path: str, out_path: str) -> None:
    """Copy the header and the first frame of ``path`` into a one-frame IVF at ``out_path``."""
    with IvfReader(path) as reader:
        frame = reader.read_frame()
        if frame is None:
            sys.exit(f"decode_bench: {path} has no frames")
        with IvfWriter(out_path, reader.header) as writer:
            writer.write(frame.data, frame.pts)


# Run in a child process: the parts of the start-up of ``excamera decode``, as time.monotonic()
# (one clock for every process) minus the parent's reading just before it started the child.
STARTUP_CHILD = r"""
import json, sys, time
t0 = float(sys.argv[1])
marks = [("interpreter and site", time.monotonic())]
compiles = []
import numpy
marks.append(("import numpy", time.monotonic()))
from codec import aot
compiled = aot.load()
marks.append(("find and load the compiled kernels" if compiled else "look for compiled kernels (none)",
              time.monotonic()))
if not compiled:
    import numba
    marks.append(("import numba", time.monotonic()))
if sys.argv[3] == "cold":
    from numba.core import event

    class Compiles(event.Listener):
        depth = 0
        def on_start(self, ev):
            if self.depth == 0:
                self.started = time.monotonic()
            self.depth += 1
        def on_end(self, ev):
            self.depth -= 1
            if self.depth == 0:
                name = ev.data["dispatcher"].py_func
                compiles.append((f"{name.__module__}.{name.__qualname__}", time.monotonic() - self.started))
    event.register("numba:compile", Compiles())
from codec.decoder import Decoder
from codec.ivf import IvfReader
marks.append(("import the codec", time.monotonic()))
with IvfReader(sys.argv[2]) as reader:
    Decoder().decode(reader.read_frame().data)
marks.append(("first frame" if compiled else "first frame (numba's first use, kernels)", time.monotonic()))
out, last = [], t0
for name, t in marks:
    out.append((name, t - last))
    last = t
print(json.dumps({"parts": out, "total": last - t0, "compiles": compiles, "compiled": compiled}))
"""


def startup_parts(python: list[str], path: str, env: dict[str, str] | None = None,
                  cold: bool = False) -> dict:
    """The start-up of a decoding process split into its parts (``STARTUP_CHILD``)."""
    start = time.monotonic()
    proc = subprocess.run(python + ["-c", STARTUP_CHILD, repr(start), path, "cold" if cold else "warm"],
                          cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"decode_bench: start-up probe failed: {proc.stderr.strip()}")
    return json.loads(proc.stdout)


def print_startup(title: str, runs: list[dict]) -> None:
    """Median of each part over ``runs``."""
    print(title)
    names = [name for name, _ in runs[0]["parts"]]
    for i, name in enumerate(names):
        print(f"  {name:<42} {statistics.median(r['parts'][i][1] for r in runs):7.3f} s")
    print(f"  {'to the first decoded frame':<42} {statistics.median(r['total'] for r in runs):7.3f} s")


def fmt_rate(timing: Timing, seconds: float) -> str:
    return f"{timing.frames / seconds:8.1f}" if timing.frames else f"{'-':>8}"


def print_table(rows: list[Timing]) -> None:
    header = ("command", "runs", "median s", "min s", "cpu s", "fps@med", "fps@min", "note")
    lines = [header] + [
        (t.label, str(len(t.times)), f"{t.median:.3f}", f"{t.best:.3f}", f"{t.cpu_median:.3f}",
         fmt_rate(t, t.median).strip(), fmt_rate(t, t.best).strip(), t.note)
        for t in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for n, line in enumerate(lines):
        cells = [line[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(line[1:-1], widths[1:-1])]
        print("  ".join(cells + [line[-1]]).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


def decode_timings(python: list[str], pin: list[str], vpxdec: str | None, path: str,
                   repeat: int) -> tuple[Timing, Timing, str | None]:
    """Timed, interleaved runs of vpxdec and excamera decode on ``path``; fails on an md5 mismatch."""
    with IvfReader(path) as reader:
        header, frames = reader.header, sum(1 for _ in reader)
    name = os.path.basename(path)
    print(f"input:   {os.path.relpath(path)}  ({header.width}x{header.height}, {frames} frames)")
    print(f"check:   {check_frame_md5s(python, path)}", flush=True)
    ref_md5 = None
    if vpxdec is not None:
        _, _, out = run(pin + [vpxdec, "--i420", "--md5", path])  # warm-up, untimed
        ref_md5 = out.split()[0]
    vpx = Timing(f"vpxdec --i420 --md5 {name}", frames)
    exc = Timing(f"excamera decode {name} (warm)", frames)
    for _ in range(repeat):  # interleaved so drift hits both alike
        if vpxdec is not None:
            elapsed, cpu, out = run(pin + [vpxdec, "--i420", "--md5", path])
            vpx.add(elapsed, cpu)
        elapsed, cpu, out = run(python + ["-m", "excamera", "decode", path])
        exc.add(elapsed, cpu)
        md5 = excamera_md5(out)
        if ref_md5 is not None and md5 != ref_md5:
            raise Mismatch(f"excamera md5 {md5} != vpxdec md5 {ref_md5} for {path}")
    if ref_md5 is not None:
        exc.note = "md5 == vpxdec's"
    return vpx, exc, ref_md5


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    pin, pin_note = pin_prefix()
    python = pin + [sys.executable]
    vpxdec = shutil.which("vpxdec")
    print(f"python:  {sys.executable}")
    print(f"cpu:     {pin_note}")
    if vpxdec is None:
        print("vpxdec:  NOT FOUND - the comparison needs it: apt-get install vpx-tools")
    else:
        print(f"vpxdec:  {vpxdec}")
    paths = [os.path.abspath(p) for p in args.input] if args.input else [DEFAULT_INPUT]
    if not args.input:
        hd = hd_stream()
        if hd is not None:
            paths.append(hd)

    rows: list[Timing] = []
    ratios: list[tuple[str, Timing, Timing]] = []
    try:
        for path in paths:
            vpx, exc, ref_md5 = decode_timings(python, pin, vpxdec, path, args.repeat)
            rows += ([vpx] if vpx.times else []) + [exc]
            ratios.append((os.path.basename(path), vpx, exc))

        path = paths[-1]
        with tempfile.TemporaryDirectory(prefix="decode_bench.") as tmp:
            one = os.path.join(tmp, "first_frame.ivf")
            write_first_frame(path, one)
            jit_env = {**os.environ, "EXCAMERA_AOT": "0"}
            startup = Timing("excamera decode, 1 frame (warm)", 1, "start-up latency")
            startup_jit = Timing("excamera decode, 1 frame (warm, JIT)", 1, "EXCAMERA_AOT=0")
            helps = Timing("excamera --help", None)
            warm_parts, jit_parts = [], []
            for _ in range(args.repeat):
                startup.add(*run(python + ["-m", "excamera", "decode", one])[:2])
                startup_jit.add(*run(python + ["-m", "excamera", "decode", one], env=jit_env)[:2])
                helps.add(*run(python + ["-m", "excamera", "--help"])[:2])
                warm_parts.append(startup_parts(python, one))
                jit_parts.append(startup_parts(python, one, jit_env))
            startup.note += (", compiled kernels (codec.aot)" if warm_parts[0]["compiled"] else
                             ", numba JIT: no current compiled kernels (python -m excamera.aot_build)")

            cold_parts, cold = None, None
            if not args.no_cold:
                cache = os.path.join(tmp, "numba_cache")
                os.mkdir(cache)
                cold_env = {**os.environ, "NUMBA_CACHE_DIR": cache, "EXCAMERA_AOT": "0"}
                cold_parts = startup_parts(python, one, cold_env, cold=True)
                shutil.rmtree(cache)
                os.mkdir(cache)
                cold = Timing(f"excamera decode {os.path.basename(path)} (cold)", ratios[-1][2].frames,
                              "empty NUMBA_CACHE_DIR")
                elapsed, cpu, out = run(python + ["-m", "excamera", "decode", path], env=cold_env)
                cold.add(elapsed, cpu)
                if vpxdec is not None:
                    want = run(pin + [vpxdec, "--i420", "--md5", path])[2].split()[0]
                    if excamera_md5(out) != want:
                        raise Mismatch(f"cold-cache excamera md5 {excamera_md5(out)} != vpxdec md5 {want}")
    except Mismatch as e:
        print(f"\nMD5 MISMATCH: {e}", file=sys.stderr)
        return 1

    print()
    print_table(rows + ([cold] if cold else []) + [startup, startup_jit, helps])
    print()
    kernels = "compiled kernels" if warm_parts[0]["compiled"] else "no compiled kernels, numba's cache"
    print_startup(f"start-up, warm ({kernels}; median of {args.repeat}, {os.path.basename(path)}'s first frame):",
                  warm_parts)
    print_startup(f"start-up, warm (EXCAMERA_AOT=0: numba's cache; median of {args.repeat}):", jit_parts)
    if cold_parts is not None:
        print_startup("start-up, cold (EXCAMERA_AOT=0, empty numba cache; one run):", [cold_parts])
        compiles = sorted(cold_parts["compiles"], key=lambda c: -c[1])
        print(f"  of which numba compiling {len(compiles)} entry points: "
              f"{sum(t for _, t in compiles):.1f} s; the longest:")
        for name, t in compiles[:8]:
            print(f"    {t:6.2f} s  {name}")
    print()
    for name, vpx, exc in ratios:
        if vpx.times:
            print(f"decode ratio {name} (excamera/vpxdec, 1 core, warm cache): {exc.median / vpx.median:.2f}x "
                  f"of median wall, {exc.best / vpx.best:.2f}x of min, {exc.cpu_median / vpx.cpu_median:.2f}x "
                  f"of median CPU  [target <= {TARGET:g}x, aim {AIM:g}x]")
        else:
            print(f"decode ratio {name}: n/a, vpxdec missing (apt-get install vpx-tools)  "
                  f"[target <= {TARGET:g}x, aim {AIM:g}x]")
    print(f"start-up to the first frame, warm ({kernels}): "
          f"{statistics.median(r['total'] for r in warm_parts):.3f} s in process, {startup.median:.3f} s for "
          f"the whole 1-frame run  [target <= {STARTUP_TARGET:g} s]; with numba's cache instead: "
          f"{statistics.median(r['total'] for r in jit_parts):.3f} s, {startup_jit.median:.3f} s")
    record_figures(ratios, startup, startup_jit, warm_parts, jit_parts, kernels, args.repeat)
    return 0


def record_figures(ratios, startup: Timing, startup_jit: Timing, warm_parts: list[dict],
                   jit_parts: list[dict], kernels: str, repeat: int) -> None:
    """What was printed, as data (bench/results.json; bench/render.py makes the tables)."""
    from bench.results import ratio, record

    rows = [[f"{name} ({exc.frames} frames)", exc.median, vpx.median if vpx.times else None,
             ratio(exc.median, vpx.median if vpx.times else None),
             ratio(exc.cpu_median, vpx.cpu_median if vpx.times else None)] for name, vpx, exc in ratios]
    in_process = statistics.median(r["total"] for r in warm_parts)
    in_process_jit = statistics.median(r["total"] for r in jit_parts)
    name, vpx, exc = ratios[-1]
    headline = [{"figure": "Start-up to the first decoded frame", "value": f"{in_process:.3f} s",
                 "against": f"{in_process_jit:.3f} s on numba's cache", "target": f"<= {STARTUP_TARGET:g} s"}]
    if vpx.times:
        headline.insert(0, {"figure": f"Decode, {name}, one core", "value": f"{exc.median / vpx.median:.2f}x",
                            "against": "vpxdec's time", "target": f"<= {TARGET:g}x"})
    record("decode", {
        "command": "python bench/decode_bench.py",
        "headline": headline,
        "tables": [
            {"title": f"Whole process, pinned to one core, median of {repeat} ({kernels})",
             "columns": ["input", "excamera decode (s)", "vpxdec --i420 --md5 (s)", "excamera / vpxdec, wall",
                         "excamera / vpxdec, CPU"],
             "rows": rows, "note": "Every excamera run's md5 equals vpxdec's."},
            {"title": "Start-up, warm process, to the first decoded frame",
             "columns": ["measure", f"{kernels} (s)", "numba's cache (s)", "target (s)"],
             "rows": [["in process", in_process, in_process_jit, STARTUP_TARGET],
                      ["whole one-frame excamera decode", startup.median, startup_jit.median, None]]}]},
        title="Decode: excamera decode against vpxdec")


if __name__ == "__main__":
    sys.exit(main())
