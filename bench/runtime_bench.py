#!/usr/bin/env python3
"""Runtime load: ``excamera bench runtime`` (``coordinator.bench``), with its figures recorded in
``bench/results.json`` for ``bench/render.py``. ``make bench`` runs this.

    python bench/runtime_bench.py [--workers 1000] [--relay-mb 1024] [--state-mb 4] [--processes 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

TARGET_S = 30.0  # 1,000 workers through the whole job, the bound


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=1000)
    ap.add_argument("--relay-mb", type=float, default=1024)
    ap.add_argument("--state-mb", type=float, default=4.0)
    ap.add_argument("--processes", type=int, default=2)
    args = ap.parse_args(argv)
    from coordinator.bench import bench
    from bench.results import record

    f = asyncio.run(bench(args.workers, args.relay_mb, args.state_mb, args.processes))
    record("runtime", {
        "command": f"python bench/runtime_bench.py --workers {args.workers}",
        "headline": [{"figure": f"{args.workers:,} workers, 5-state FSM, {f['relayed_mb']:.0f} MiB of states relayed",
                      "value": f"{f['total_s']:.2f} s", "against": "", "target": f"< {TARGET_S:g} s"}],
        "tables": [{"title": f"{args.workers:,} lightweight workers in {args.processes} processes, mutual TLS "
                             f"on loopback",
                    "columns": ["connect (s)", "job (s)", "transitions", "transitions/s", "relay (MiB/s)",
                                "total (s)"],
                    "rows": [[round(f["connect_s"], 2), round(f["job_s"], 2), f["transitions"],
                              round(f["transitions_per_s"]), round(f["relay_mb_per_s"]), round(f["total_s"], 2)]]}]},
        title=f"Runtime load: {args.workers:,} workers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
