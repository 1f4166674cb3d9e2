#!/usr/bin/env python3
"""Decode benchmark: excamera's VP8 decoder against libvpx's ``vpxdec``, whole-process wall time.

This is ``make bench``. It is a benchmark, not a test: it prints figures and fails (exit 1) only
when the output is wrong, i.e. when excamera's md5 of the decoded frames differs from vpxdec's
or from the per-frame reference ``INPUT.md5``.

What is measured (every command pinned to one core with ``taskset`` when available, each timed
from process start to exit, so interpreter start-up, imports and numba cache loading count):

* ``vpxdec --i420 --md5 INPUT`` and ``PYTHON -m excamera decode INPUT`` (summary mode: one line
  with the md5 of all output), run ``--repeat`` times each, interleaved, median and min reported;
  the md5 of every excamera run must equal vpxdec's.
* cold start: one ``excamera decode INPUT`` with an empty numba cache (``NUMBA_CACHE_DIR`` set to
  a fresh temporary directory), i.e. the price of compiling every jitted function;
* start-up latency with a warm cache: ``excamera decode`` of a one-frame IVF holding the first
  frame of INPUT (what every worker pays before decoding anything), and ``excamera --help``.

Before timing, excamera runs once with ``--frame-md5`` (which also warms the numba cache and the
page cache) and its per-frame md5s are checked against ``INPUT.md5`` when that file exists.

``PYTHON`` is the interpreter running this script. Without ``vpxdec`` the comparison is skipped
(install it with ``apt-get install vpx-tools``) and excamera's own figures are still reported.

Usage::

    python bench/decode_bench.py [--input FILE.ivf] [--repeat N]

Standard library only.
"""

from __future__ import annotations

import argparse
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
TARGET, AIM = 5.0, 1.5  # the goal for excamera/vpxdec decode time
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
    parser.add_argument("--input", default=DEFAULT_INPUT, metavar="FILE",
                        help="IVF file to decode (default: %(default)s); its per-frame reference "
                             "md5s are read from FILE.md5 when that exists")
    parser.add_argument("--repeat", type=int, default=5, metavar="N",
                        help="timed runs of each command, interleaved (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if not os.path.isfile(args.input):
        parser.error(f"no such input file: {args.input}")
    return args


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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    path = os.path.abspath(args.input)
    with IvfReader(path) as reader:
        header, frames = reader.header, sum(1 for _ in reader)

    pin, pin_note = pin_prefix()
    python = pin + [sys.executable]
    vpxdec = shutil.which("vpxdec")

    print(f"input:   {os.path.relpath(path)}  ({header.width}x{header.height}, {frames} frames)")
    print(f"python:  {sys.executable}")
    print(f"cpu:     {pin_note}")
    if vpxdec is None:
        print("vpxdec:  NOT FOUND - the comparison needs it: apt-get install vpx-tools")
    else:
        print(f"vpxdec:  {vpxdec}")

    try:
        print(f"check:   {check_frame_md5s(python, path)}")

        ref_md5 = None
        if vpxdec is not None:
            _, _, out = run(pin + [vpxdec, "--i420", "--md5", path])  # warm-up, untimed
            ref_md5 = out.split()[0]

        vpx = Timing("vpxdec --i420 --md5", frames)
        exc = Timing("excamera decode (warm cache)", frames)
        for _ in range(args.repeat):  # interleaved so drift hits both alike
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

        with tempfile.TemporaryDirectory(prefix="decode_bench.") as tmp:
            one = os.path.join(tmp, "first_frame.ivf")
            write_first_frame(path, one)
            startup = Timing("excamera decode, 1 frame (warm)", 1, "start-up latency")
            helps = Timing("excamera --help", None)
            for _ in range(args.repeat):
                startup.add(*run(python + ["-m", "excamera", "decode", one])[:2])
                helps.add(*run(python + ["-m", "excamera", "--help"])[:2])

            cache = os.path.join(tmp, "numba_cache")
            os.mkdir(cache)
            cold = Timing("excamera decode (cold cache)", frames, "empty NUMBA_CACHE_DIR")
            elapsed, cpu, out = run(python + ["-m", "excamera", "decode", path],
                                    env={**os.environ, "NUMBA_CACHE_DIR": cache})
            cold.add(elapsed, cpu)
            if ref_md5 is not None and excamera_md5(out) != ref_md5:
                raise Mismatch(f"cold-cache excamera md5 {excamera_md5(out)} != vpxdec md5 {ref_md5}")
    except Mismatch as e:
        print(f"\nMD5 MISMATCH: {e}", file=sys.stderr)
        return 1

    print()
    print_table(([vpx] if vpx.times else []) + [exc, cold, startup, helps])
    print()
    if vpx.times:
        ratio = exc.median / vpx.median
        print(f"  (ratio of min times: {exc.best / vpx.best:.1f}x; of median CPU times: "
              f"{exc.cpu_median / vpx.cpu_median:.1f}x)")
        print(f"decode ratio (excamera/vpxdec, 1 core, warm cache): {ratio:.1f}x  "
              f"[target <= {TARGET:g}x, aim {AIM:g}x]")
    else:
        print(f"decode ratio (excamera/vpxdec): n/a, vpxdec missing (apt-get install vpx-tools)  "
              f"[target <= {TARGET:g}x, aim {AIM:g}x]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
