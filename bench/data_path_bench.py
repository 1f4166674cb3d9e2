#!/usr/bin/env python3
"""Data-path benchmark: the bytes the client (with its embedded coordinator) passes through its
own reads and writes during ``excamera encode --workers N``, against the compressed input's size.

Issue 21's target: at most 3x the compressed input + 16 MB. Workers decode their own ranges of
the input (``worker.decode_ops``), so the client reads only the container's index, and (with
local workers) a local input is read where it lies, never copied. The client runs in a child
process whose ``/proc/self/io`` (``rchar``/``wchar``: every read and write call, files and sockets,
including the interpreter's own imports) is read at exit, less its worker processes' own.
The raw video the old path would have spooled and uploaded (every picture as I420) is printed
beside it.

    .venv/bin/python bench/data_path_bench.py [CLIP ...] [--workers N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLIPS = [os.path.join(ROOT, "tests/data/clips/compressed/bikes_640x272_100f.mp4"),
         os.path.join(ROOT, "tests/data/clips/compressed/bigbuckbunny_1280x720_30f.mp4")]

#: Every Python of the run (the client and its worker processes, which inherit PYTHONPATH) writes
#: its /proc/self/io at exit. A process's counters include its reaped children's, so the
#: client's own figure is its total less its workers'.
_SITECUSTOMIZE = r"""
import atexit, json, os
def _report():
    io = dict(line.split(": ") for line in open("/proc/self/io").read().splitlines())
    t = os.times()                       # this process's own CPU time, not its children's
    with open(os.path.join(os.environ["EXCAMERA_IO_REPORT"], f"{os.getpid()}.json"), "w") as f:
        json.dump({"ppid": os.getppid(), "cpu": t.user + t.system,
                   **{k: int(io[k]) for k in ("rchar", "wchar")}}, f)
if os.environ.get("EXCAMERA_IO_REPORT"):
    atexit.register(_report)
"""


def measure(clip: str, workers: int, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out.ivf")
        reports = os.path.join(tmp, "io")
        os.mkdir(reports)
        with open(os.path.join(tmp, "sitecustomize.py"), "w") as f:
            f.write(_SITECUSTOMIZE)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([tmp, ROOT]), EXCAMERA_IO_REPORT=reports)
        proc = subprocess.Popen([sys.executable, "-m", "excamera", "encode", clip, "-o", out, "--workers",
                                 str(workers), *extra], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"{clip}: encode failed: {err.decode().strip()}")
        found = {}
        for name in os.listdir(reports):
            with open(os.path.join(reports, name)) as f:
                found[int(name.split(".")[0])] = json.load(f)
        client = found.get(proc.pid)
        children = [v for v in found.values() if v["ppid"] == proc.pid]
        if client is None or len(children) < workers:
            raise SystemExit(f"{clip}: {len(children)} of the {workers} workers reported their I/O; cannot subtract")
        io = {k: client[k] - sum(c[k] for c in children) for k in ("rchar", "wchar")}
        cpu_share = client["cpu"] / (client["cpu"] + sum(c["cpu"] for c in children))
    from media.index import read_index
    from media.source import open_source
    with open_source(clip) as f:
        index = read_index(f)
    raw = index.frames * index.width * index.height * 3 // 2
    size = os.path.getsize(clip)
    moved = io["rchar"] + io["wchar"]
    return {"clip": os.path.basename(clip), "compressed": size, "raw": raw, "read": io["rchar"],
            "written": io["wchar"], "moved": moved, "target": 3 * size + (16 << 20),
            "within": moved <= 3 * size + (16 << 20), "cpu_share": cpu_share}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("clips", nargs="*", default=CLIPS)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    extra = ["--first-pass", "native", "--cq-level", "30"]
    print(f"{'clip':36} {'compressed':>11} {'raw video':>11} {'client read':>12} {'written':>10} "
          f"{'target':>10}  ok  {'client CPU':>10}")
    bad = 0
    rows = []
    for clip in args.clips:
        m = measure(clip, args.workers, extra)
        bad += not m["within"]
        print(f"{m['clip']:36} {m['compressed']:>11,} {m['raw']:>11,} {m['read']:>12,} {m['written']:>10,} "
              f"{m['target']:>10,}  {'yes' if m['within'] else 'NO '} {m['cpu_share']:>10.1%}")
        rows.append([m["clip"], m["compressed"], m["raw"], m["read"], m["written"],
                     round(m["moved"] / m["compressed"], 2), m["target"], "yes" if m["within"] else "NO",
                     f"{m['cpu_share']:.1%}"])
    _record(rows, args.workers, bad)
    return 1 if bad else 0


def _record(rows: list, workers: int, bad: int) -> None:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from results import record

    worst = max(rows, key=lambda r: (r[3] + r[4]) / r[6])   # closest to its target
    record("data-path", {
        "command": f"python bench/data_path_bench.py --workers {workers}",
        "headline": [{"figure": f"Bytes the client passes, excamera encode --workers {workers} (local workers)",
                      "value": f"{(worst[3] + worst[4]) / 1e6:.1f} MB ({worst[0]})", "against": "",
                      "target": f"<= 3x compressed + 16 MB = {worst[6] / 1e6:.1f} MB"},
                     {"figure": f"The client's (and embedded coordinator's) share of the job's CPU, --workers {workers}",
                      "value": max(rows, key=lambda r: float(r[8].rstrip("%")))[8], "against": "",
                      "target": "<= 10%"}],
        "tables": [{"title": f"excamera encode --workers {workers}: the client's (and its embedded "
                             "coordinator's) reads and writes, less its workers'",
                    "columns": ["clip", "compressed B", "raw video B", "client read B", "client written B",
                                "moved / compressed", "target B", "within", "client CPU share"],
                    "rows": rows,
                    "note": "rchar + wchar of /proc/self/io: every read and write call, files and sockets, "
                            "the interpreter's imports included. Workers decode their own ranges; a local "
                            "input is read where it lies."}],
        "notes": [] if not bad else [f"{bad} clip(s) over the target"]}, title="Data path")


if __name__ == "__main__":
    sys.exit(main())
