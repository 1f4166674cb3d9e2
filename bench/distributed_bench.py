#!/usr/bin/env python3
"""Distributed encode benchmark: ``excamera encode --workers N`` against ``vpxenc --threads=N``.

Part of ``make bench``. A benchmark, not a test: it prints figures and fails (exit 1) only when it
cannot measure (no clip, no vpxenc, an encoder failing, outputs that differ where they must not).

On one real clip (default: carphone QCIF, 120 frames, from ``bench/data`` or
``../shared/testdata/clips``; ``make bench`` also runs bigbuckbunny 1280x720, 132 frames; an input
that is not Y4M is decoded to one first, which both encoders then read), side by side in one run,
each command timed from process start to exit (interpreter start-up, worker processes' start-up and numba cache loading included), the
median of ``--repeat`` runs:

* ``excamera encode CLIP -o X.ivf --workers N`` (ExCamera[6,16], cq-level 20, libvpx first pass);
* ``excamera encode CLIP -o X.ivf --workers 0`` (the same algorithm in one process; whether the
  outputs are byte-identical is printed, and with ``--first-pass native`` (deterministic, unlike
  libvpx's) it must be, or the benchmark fails);
* ``vpxenc --threads=N --passes=2`` with ExCamera's vpxenc settings (those of ``media.firstpass``
  but cpu-used 0, where the first pass runs 1: good deadline, CQ at the same level with min-q 4 /
  max-q 63, tune SSIM, auto-alt-ref) and
  a key frame every N * x frames, as ExCamera[N, x] places them (vpxenc's default for VP8 is one
  pass, which at an unlimited bit rate makes about twice the bits);

* ``vpxenc --threads=1``, the same otherwise: libvpx's VP8 threads wait for each other by
  spinning, so on a busy machine with few cores ``--threads=2`` can be the slower of the two.

It prints each wall and CPU time (user + system of the process and its workers), the size and SSIM (``codec.ssim``, all planes, dB) of each output, and
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


def timed(cmd: list[str]) -> tuple[float, float]:
    """Run ``cmd`` to completion: its wall seconds and CPU seconds (user + system, its worker
    processes included: they are its children, waited for)."""
    t0 = time.monotonic()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - t0
        if os.waitstatus_to_exitcode(status) != 0:
            err.seek(0)
            tail = err.read().decode("utf-8", "replace").strip()[-500:]
            raise SystemExit(f"distributed_bench: {' '.join(cmd)} failed: {tail}")
    return wall, usage.ru_utime + usage.ru_stime


def as_y4m(clip: str, tmp: str) -> str:
    """``clip`` itself if it is a Y4M file, else its pictures written to one in ``tmp`` (vpxenc
    reads Y4M; both encoders then read the same file)."""
    if clip.endswith(".y4m"):
        return clip
    from codec.y4m import Y4mWriter
    from media.video import open_video
    path = os.path.join(tmp, os.path.splitext(os.path.basename(clip))[0] + ".y4m")
    with open_video(clip) as video, Y4mWriter(path, rate=video.rate) as writer:
        for picture in video:
            writer.write(picture)
    return path


def quality(stream: str, source: str) -> float:
    from codec.ssim import mean_ssim
    from media.video import open_video
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
    from media.firstpass import MIN_Q, TARGET_KBPS
    n, x, cq, w = args.chunk_frames, args.batch_chunks, args.cq_level, args.workers
    with tempfile.TemporaryDirectory(prefix="excamera-distbench-") as tmp:
        name, clip = os.path.basename(clip), as_y4m(clip, tmp)
        with Y4mReader(clip) as r:
            frames = sum(1 for _ in r)
            size = f"{r.header.width}x{r.header.height}"
        exc = [sys.executable, "-m", "excamera", "encode", clip, "--chunk-frames", str(n),
               "--batch-chunks", str(x), "--cq-level", str(cq)]
        out = {k: os.path.join(tmp, f"{k}.ivf") for k in ("dist", "local", "vpx", "vpx1")}

        def vpxenc(threads: int, path: str) -> list[str]:
            return ["vpxenc", "--codec=vp8", "--good", "--cpu-used=0", "--end-usage=cq", f"--cq-level={cq}",
                    f"--min-q={MIN_Q}", "--max-q=63", f"--target-bitrate={TARGET_KBPS}", "--tune=ssim",
                    "--auto-alt-ref=1", f"--kf-min-dist={n * x}", f"--kf-max-dist={n * x}", "--passes=2",
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
        print(f"distributed encode: {name}, {frames} frames {size}, ExCamera[{n},{x}] cq-level {cq}, "
              f"median wall and CPU (user + system, worker processes included) of {args.repeat} runs "
              "(whole process)")
        wall = {k: statistics.median(t for t, _ in times[k]) for k in cmds}
        cpu = {k: statistics.median(c for _, c in times[k]) for k in cmds}
        ssim = {k: quality(out[k], clip) for k in cmds}
        for k in cmds:
            print(f"  {labels[k]:<30} {wall[k]:7.2f} s wall {cpu[k]:7.2f} s CPU   {os.path.getsize(out[k]):8d} bytes"
                  f"   SSIM {ssim[k]:6.3f} dB   runs: {' '.join(f'{t:.2f}' for t, _ in times[k])}")
        print(f"  ratio excamera --workers {w} / vpxenc --threads={w}: {wall['dist'] / wall['vpx']:.2f}x wall, "
              f"{cpu['dist'] / cpu['vpx']:.2f}x CPU (--workers 0: {wall['local'] / wall['vpx']:.2f}x wall; "
              f"--workers {w} / vpxenc --threads=1: {wall['dist'] / wall['vpx1']:.2f}x wall)")
        print(f"  --workers {w} against --workers 0: {same} (--first-pass native: byte-identical)")
        record_figures(args, name, frames, size, labels, wall, cpu,
                       {k: (os.path.getsize(out[k]), ssim[k]) for k in cmds}, same)
    return 0


def record_figures(args, name: str, frames: int, size: str, labels: dict, wall: dict, cpu: dict,
                   outputs: dict, same: str) -> None:
    """What was printed, as data (bench/results.json; bench/render.py makes the tables)."""
    from bench.results import ratio, record

    w = args.workers
    clip = name.split("_")[0].split(".")[0]
    rows = [[labels[k], round(wall[k], 2), round(cpu[k], 2), outputs[k][0], round(outputs[k][1], 2)]
            for k in labels]
    record(f"distributed-{clip}", {
        "command": f"python bench/distributed_bench.py --workers {w} --clip {name}",
        "headline": [{"figure": f"excamera encode --workers {w}, {size}, wall time",
                      "value": f"{wall['dist'] / wall['vpx']:.2f}x", "against": f"vpxenc --threads={w} --passes=2",
                      "target": "<= 1.5x"}] if size == "1280x720" else [],
        "tables": [
            {"title": f"{name}, {size}, {frames} frames, ExCamera[{args.chunk_frames},{args.batch_chunks}], "
                      f"cq-level {args.cq_level}; median of {args.repeat}, whole process",
             "columns": ["command", "wall (s)", "CPU (s)", "bytes", "SSIM, all (dB)"], "rows": rows,
             "note": f"--workers {w} against --workers 0: {same}."},
            {"title": "Ratios", "columns": ["ratio", "wall (x)", "CPU (x)"],
             "rows": [[f"excamera --workers {w} / vpxenc --threads={w}", ratio(wall["dist"], wall["vpx"]),
                       ratio(cpu["dist"], cpu["vpx"])],
                      [f"excamera --workers {w} / vpxenc --threads=1", ratio(wall["dist"], wall["vpx1"]),
                       ratio(cpu["dist"], cpu["vpx1"])]]}]},
        title=f"Distributed encode, {size}: excamera encode --workers {w} against vpxenc --threads={w}")


if __name__ == "__main__":
    sys.exit(main())
