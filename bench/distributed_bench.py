#!/usr/bin/env python3
"""Distributed encode benchmark: ``excamera encode --workers N`` against ``vpxenc --threads=N``.

Part of ``make bench``. A benchmark, not a test: it prints figures and fails (exit 1) only when it
cannot measure (no clip, no vpxenc, an encoder failing, outputs that differ where they must not).

On one real clip (default: carphone QCIF, 120 frames, from ``bench/data`` or
``../shared/testdata/clips``), side by side in one run, each command timed from process start to
exit (interpreter start-up, worker processes' start-up and numba cache loading included), the
median of ``--repeat`` runs:

* ``excamera encode CLIP -o X.ivf --workers N`` (ExCamera[6,16], cq-level 20, libvpx first pass);
* ``excamera encode CLIP -o X.ivf --workers 0`` (the same algorithm in one process; whether the
  outputs are byte-identical is printed, and with ``--first-pass native`` (deterministic, unlike
  libvpx's) it must be, or the benchmark fails);
* ``vpxenc --threads=N`` with the first pass's settings (``excamera.firstpass``: good deadline,
  cpu-used 0, CQ at the same level with min-q 0 / max-q 63, tune SSIM, auto-alt-ref) and a key
  frame every N * x frames, as ExCamera[N, x] places them.

* ``vpxenc --threads=1``, the same otherwise: libvpx's VP8 threads wait for each other by
  spinning, so on a busy machine with few cores ``--threads=2`` can be the slower of the two.

It prints each wall time, the size and SSIM (``codec.ssim``, all planes, dB) of each output, and
the ratio excamera --workers N / vpxenc --threads=N (and / vpxenc --threads=1).

Usage::

    python bench/distributed_bench.py [--clip PATH] [--workers 2] [--repeat 3]
                                      [--chunk-frames 6] [--batch-chunks 16] [--cq-level 20]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

CLIP = "carphone_qcif_176x144_120f_decoded.y4m"
CLIP_DIRS = [os.path.join(REPO, "bench", "data"),
             os.path.join(os.path.dirname(REPO), "shared", "testdata", "clips")]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clip", metavar="PATH", help=f"a y4m clip (default: {CLIP})")
    p.add_argument("--workers", type=int, default=2, metavar="N")
    p.add_argument("--repeat", type=int, default=3, metavar="R")
    p.add_argument("--chunk-frames", type=int, default=6)
    p.add_argument("--batch-chunks", type=int, default=16)
    p.add_argument("--cq-level", type=int, default=20)
    return p.parse_args(argv)


def find_clip(args) -> str:
    if args.clip:
        return args.clip
    for d in CLIP_DIRS:
        path = os.path.join(d, CLIP)
        if os.path.exists(path):
            return path
    raise SystemExit(f"distributed_bench: {CLIP} not found in {' or '.join(CLIP_DIRS)}; give --clip")


def timed(cmd: list[str]) -> float:
    t0 = time.monotonic()
    res = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    wall = time.monotonic() - t0
    if res.returncode != 0:
        raise SystemExit(f"distributed_bench: {' '.join(cmd)} failed: {res.stderr.strip()[-500:]}")
    return wall


def quality(stream: str, source: str) -> float:
    from codec.ssim import mean_ssim
    from excamera.video import open_video
    with open_video(source) as a, open_video(stream) as b:
        return mean_ssim(a, b).db().all


def differing_frames(a: str, b: str) -> str:
    """"byte-identical", or which frames differ."""
    from codec.ivf import read_ivf
    with open(a, "rb") as fa, open(b, "rb") as fb:
        if fa.read() == fb.read():
            return "byte-identical"
    fa, fb = ([r.data for r in read_ivf(p)[1]] for p in (a, b))
    diff = [i for i, (x, y) in enumerate(zip(fa, fb)) if x != y]
    return (f"DIFFERENT in {len(diff)} of {len(fa)} frames from frame {diff[0] if diff else len(fa)} "
            f"(expected byte-identical)")


def main(argv=None) -> int:
    args = parse_args(argv)
    clip = find_clip(args)
    if shutil.which("vpxenc") is None:
        print("distributed_bench: vpxenc not found (apt-get install vpx-tools); nothing to compare with")
        return 1
    from codec.y4m import Y4mReader
    from excamera.firstpass import TARGET_KBPS
    with Y4mReader(clip) as r:
        frames = sum(1 for _ in r)
        size = f"{r.header.width}x{r.header.height}"
    n, x, cq, w = args.chunk_frames, args.batch_chunks, args.cq_level, args.workers
    exc = [sys.executable, "-m", "excamera", "encode", clip, "--chunk-frames", str(n),
           "--batch-chunks", str(x), "--cq-level", str(cq)]
    with tempfile.TemporaryDirectory(prefix="excamera-distbench-") as tmp:
        out = {k: os.path.join(tmp, f"{k}.ivf") for k in ("dist", "local", "vpx", "vpx1")}

        def vpxenc(threads: int, path: str) -> list[str]:
            return ["vpxenc", "--codec=vp8", "--good", "--cpu-used=0", "--end-usage=cq", f"--cq-level={cq}",
                    "--min-q=0", "--max-q=63", f"--target-bitrate={TARGET_KBPS}", "--tune=ssim",
                    "--auto-alt-ref=1", f"--kf-min-dist={n * x}", f"--kf-max-dist={n * x}",
                    f"--threads={threads}", "--ivf", "-q", "-o", path, clip]

        cmds = {
            "dist": exc + ["-o", out["dist"], "--workers", str(w)],
            "local": exc + ["-o", out["local"], "--workers", "0"],
            "vpx": vpxenc(w, out["vpx"]),
            # libvpx's VP8 threads wait for each other by spinning: on a busy machine with few
            # cores --threads=2 can be slower than --threads=1, so that is measured too.
            "vpx1": vpxenc(1, out["vpx1"]),
        }
        labels = {"dist": f"excamera encode --workers {w}", "local": "excamera encode --workers 0",
                  "vpx": f"vpxenc --threads={w}", "vpx1": "vpxenc --threads=1"}
        timed(cmds["local"])  # warm the numba cache and the page cache, untimed
        times = {k: [] for k in cmds}
        for _ in range(args.repeat):  # interleaved, so load changes hit each alike
            for k, cmd in cmds.items():
                times[k].append(timed(cmd))
        same = differing_frames(out["dist"], out["local"])
        # The native first pass is deterministic, so there the two must agree byte for byte.
        nat = {k: os.path.join(tmp, f"native-{k}.ivf") for k in ("dist", "local")}
        timed(exc + ["-o", nat["dist"], "--workers", str(w), "--first-pass", "native"])
        timed(exc + ["-o", nat["local"], "--workers", "0", "--first-pass", "native"])
        if differing_frames(nat["dist"], nat["local"]) != "byte-identical":
            print(f"distributed_bench: with --first-pass native, --workers {w} and --workers 0 differ")
            return 1
        print(f"distributed encode: {os.path.basename(clip)}, {frames} frames {size}, ExCamera[{n},{x}] "
              f"cq-level {cq}, median wall of {args.repeat} runs (whole process)")
        for k in cmds:
            med = statistics.median(times[k])
            print(f"  {labels[k]:<30} {med:7.2f} s   {os.path.getsize(out[k]):8d} bytes   "
                  f"SSIM {quality(out[k], clip):6.3f} dB   runs: {' '.join(f'{t:.2f}' for t in times[k])}")
        ratio = statistics.median(times["dist"]) / statistics.median(times["vpx"])
        local = statistics.median(times["local"]) / statistics.median(times["vpx"])
        one = statistics.median(times["dist"]) / statistics.median(times["vpx1"])
        print(f"  ratio excamera --workers {w} / vpxenc --threads={w}: {ratio:.2f}x wall "
              f"(--workers 0: {local:.2f}x; --workers {w} / vpxenc --threads=1: {one:.2f}x)")
        print(f"  --workers {w} against --workers 0: {same} (--first-pass native: byte-identical)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
