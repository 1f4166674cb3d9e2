#!/usr/bin/env python3
"""The coordinator journal's cost (issue 22), side by side with the journal off, interleaved so
that a busy machine weighs on both alike:

- ``excamera bench runtime``'s job (1,000 lightweight workers, a 5-state FSM, states relayed) with
  and without a journal (``coordinator.bench.bench(state_dir=...)``);
- pipeline dispatch (no-op tasks on 4 workers, ``bench/pipeline_bench.py``) with and without one.

Targets: the journal costs at most 10% of the runtime job, and dispatch stays at >= 500 tasks/s.
Figures go to bench/results.json (section ``journal``).

    python bench/journal_bench.py [--rounds 2] [--workers 1000] [--tasks 4000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, HERE]

COST_TARGET = 0.10       # at most 10% slower with the journal
DISPATCH_TARGET = 500    # tasks/s with the journal


def _runtime(workers: int, relay_mb: float, state_dir: str | None) -> float:
    from coordinator.bench import bench

    return asyncio.run(bench(workers, relay_mb, 4.0, 2, quiet=True, state_dir=state_dir))["job_s"]


def _dispatch(tasks: int, journal_dir: str | None, d: str) -> float:
    import pipeline_bench

    r = asyncio.run(pipeline_bench._dispatch(pipeline_bench.SPEC, tasks // 2, 4, os.path.join(d, "t"), journal_dir))
    return r["tasks_per_s"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workers", type=int, default=1000)
    ap.add_argument("--relay-mb", type=float, default=256)
    ap.add_argument("--tasks", type=int, default=4000)
    args = ap.parse_args(argv)
    job = {"off": [], "on": []}
    rate = {"off": [], "on": []}
    for i in range(args.rounds):
        for mode in (("off", "on") if i % 2 == 0 else ("on", "off")):
            with tempfile.TemporaryDirectory(prefix="excamera-journal-bench-") as d:
                state = os.path.join(d, "state") if mode == "on" else None
                job[mode].append(_runtime(args.workers, args.relay_mb, state))
            with tempfile.TemporaryDirectory(prefix="excamera-journal-bench-") as d:
                state = os.path.join(d, "state") if mode == "on" else None
                rate[mode].append(_dispatch(args.tasks, state, d))
            print(f"round {i + 1}, journal {mode}: runtime job {job[mode][-1]:.2f} s, "
                  f"dispatch {rate[mode][-1]:.0f} tasks/s", flush=True)
    j_off, j_on = statistics.median(job["off"]), statistics.median(job["on"])
    r_off, r_on = statistics.median(rate["off"]), statistics.median(rate["on"])
    cost = j_on / j_off - 1
    print(f"runtime job ({args.workers:,} workers): {j_off:.2f} s without the journal, {j_on:.2f} s with it: "
          f"{cost:+.1%} (target <= +{COST_TARGET:.0%})")
    print(f"dispatch: {r_off:.0f} tasks/s without, {r_on:.0f} with (target >= {DISPATCH_TARGET})")
    from bench.results import record

    record("journal", {
        "command": f"python bench/journal_bench.py --rounds {args.rounds} --workers {args.workers}",
        "headline": [
            {"figure": f"The journal's cost on the runtime job ({args.workers:,} workers)",
             "value": f"{cost:+.1%}", "against": "the same job without a journal",
             "target": f"<= +{COST_TARGET:.0%}"},
            {"figure": "Pipeline dispatch with the journal", "value": f"{r_on:.0f} tasks/s",
             "against": f"{r_off:.0f} tasks/s without", "target": f">= {DISPATCH_TARGET}"}],
        "tables": [{"title": f"Medians of {args.rounds} interleaved rounds",
                    "columns": ["", "runtime job (s)", "dispatch (tasks/s)"],
                    "rows": [["journal off", round(j_off, 2), round(r_off)],
                             ["journal on", round(j_on, 2), round(r_on)]]}]},
        title="The coordinator's journal, on and off")
    return 0


if __name__ == "__main__":
    sys.exit(main())
