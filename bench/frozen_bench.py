#!/usr/bin/env python3
"""A frozen worker against an undisturbed run (issue 22): the grayscale pipeline with
``--workers 3`` on a 720p clip, once as it is and once with one busy worker SIGSTOPped at
``--freeze-at`` seconds; the same for ``excamera encode``. Target: at most 1.5x the undisturbed
time + 5 s, with byte-identical output. Figures go to bench/results.json (section ``frozen``).

    python bench/frozen_bench.py [--clip PATH] [--freeze-at 2.3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT]
CLIP = os.path.join(ROOT, "..", "shared", "testdata", "clips", "compressed", "bigbuckbunny.mp4")


def _children(parent: int) -> list[int]:
    """The ``excamera worker`` processes below ``parent``."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError, ValueError, IndexError):
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
            if ppid == parent and b"worker" in cmd:
                out.append(int(pid))
    return out


def _ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def _freeze_busiest(parent: int, after: float, frozen: list[int], stop: threading.Event) -> None:
    if stop.wait(after):
        return
    while not stop.is_set():
        with contextlib.suppress(OSError, ValueError, IndexError):
            before = {p: _ticks(p) for p in _children(parent)}
            time.sleep(0.1)
            busy = sorted((_ticks(p) - t, p) for p, t in before.items())
            if busy and busy[-1][0] >= 3:
                os.kill(busy[-1][1], signal.SIGSTOP)
                frozen.append(busy[-1][1])
                return


def run(cmd: list[str], freeze_at: float | None) -> float:
    started = time.monotonic()
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    frozen, stop = [], threading.Event()
    t = threading.Thread(target=_freeze_busiest, args=(p.pid, freeze_at, frozen, stop)) if freeze_at else None
    if t:
        t.start()
    try:
        _, err = p.communicate(timeout=600)
    finally:
        stop.set()
        if t:
            t.join()
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    if p.returncode:
        raise SystemExit(f"frozen bench: {' '.join(cmd)} exited {p.returncode}: {err.strip()[-500:]}")
    if freeze_at and not frozen:
        raise SystemExit("frozen bench: no busy worker was found to freeze")
    return time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clip", default=CLIP)
    ap.add_argument("--freeze-at", type=float, default=2.3)
    args = ap.parse_args(argv)
    exe = [sys.executable, "-m", "excamera"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="excamera-frozen-bench-") as d:
        jobs = {"grayscale pipeline": exe + ["pipeline", "run", "pipelines/grayscale.json", "-i", args.clip,
                                             "-o", "{out}.webm", "--workers", "3", "--no-audio"],
                "excamera encode": exe + ["encode", args.clip, "-o", "{out}.ivf", "--workers", "3"]}
        for what, template in jobs.items():
            outs, times = [], []
            for name, freeze in (("calm", None), ("frozen", args.freeze_at)):
                out = os.path.join(d, f"{what.split()[-1]}-{name}")
                cmd = [a.replace("{out}", out) for a in template]
                times.append(run(cmd, freeze))
                outs.append(open(cmd[cmd.index("-o") + 1], "rb").read())
            bound = 1.5 * times[0] + 5
            same = outs[0] == outs[1]
            print(f"{what}, 3 workers, {os.path.basename(args.clip)}: {times[0]:.1f} s undisturbed, "
                  f"{times[1]:.1f} s with a worker frozen at {args.freeze_at:g} s ({times[1] / times[0]:.2f}x; "
                  f"bound {bound:.1f} s); output {'identical' if same else 'DIFFERENT'}")
            rows.append([what, round(times[0], 2), round(times[1], 2), round(bound, 1), same])
    from bench.results import record

    record("frozen", {
        "command": "python bench/frozen_bench.py",
        "headline": [{"figure": f"{r[0]}, one of 3 workers frozen", "value": f"{r[2] / r[1]:.2f}x",
                      "against": "the undisturbed run", "target": "<= 1.5x + 5 s, same bytes"} for r in rows],
        "tables": [{"title": f"One worker SIGSTOPped {args.freeze_at:g} s in ({os.path.basename(args.clip)})",
                    "columns": ["job", "undisturbed (s)", "frozen (s)", "bound (s)", "same bytes"],
                    "rows": rows}]},
        title="A frozen worker")
    return 0 if all(r[4] and r[2] <= r[3] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
