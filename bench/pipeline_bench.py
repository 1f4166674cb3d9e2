"""Pipeline benchmarks (issue 11). ``--dispatch``: how fast the coordinator turns items into
running tasks.

A pipeline of two no-op stages (``a`` then ``b``, default delivery) over N/2 tiny records items
gives N tasks, run through the real embedded coordinator, rendezvous and local worker processes.
Reported: tasks per second over the job (target >= 300), and the delay from an item's arrival on
a node's input port (the planner's timestamp when its task was planned) to the start of the
task's first attempt (the engine's), median and 90th percentile, for the source-fed node ``a``
(every item there arrives at the start, so its delay is mostly queueing) and for ``b`` (items
arrive as ``a``'s tasks finish; under fifo they queue behind ``a``'s remaining tasks).

    python bench/pipeline_bench.py --dispatch [--tasks 10000] [--workers 4]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for p in (ROOT, HERE):
    if p not in sys.path:
        sys.path.insert(0, p)

from pipeline.stage import stage  # noqa: E402
from pipeline.values import Records  # noqa: E402


@stage("bench_noop", inputs={"records": "records"}, outputs={"records": "records"})
def bench_noop(ctx, inputs, config):
    """Passes its records on (a stand-in for work: the bench measures dispatch)."""
    return {"records": list(inputs["records"])}


SPEC = {"nodes": [{"name": "a", "stage": "bench_noop"}, {"name": "b", "stage": "bench_noop"}],
        "streams": [{"src": "input_0:records", "dst": "a:records"}, {"src": "a:records", "dst": "b:records"},
                    {"src": "b:records", "dst": "output_0:records"}]}


def _items(n: int):
    from pipeline.delivery import Item

    objects, items = {}, []
    for i in range(n):
        data = Records([{"frame": i}], i, 1, (30, 1)).to_bytes()
        key = f"in/input_0/records/{i:06d}"
        objects[key] = data
        items.append(Item(key, hashlib.sha256(data).hexdigest(), len(data), "records", i, i, 1, (30, 1), {},
                          "input_0:records"))
    return objects, items


async def _dispatch(tasks: int, workers: int, storage_dir: str) -> dict:
    from coordinator.api import embedded_coordinator
    from coordinator.fsm import Job
    from pipeline.planner import PipelinePlanner
    from pipeline.spec import validate

    planner = PipelinePlanner(validate(SPEC))
    objects, items = _items(tasks // 2)
    planner.add_input("input_0", "records", items)
    first = planner.start()
    os.environ["PYTHONPATH"] = os.pathsep.join([HERE, os.environ.get("PYTHONPATH", "")])
    async with embedded_coordinator(storage_dir, ops_modules=("pipeline.worker_op", "pipeline_bench")) as c:
        job_id, _ = await c.submit(Job("dispatch", planner.fsms(), tuple(first)), workers=workers,
                                   inputs=objects, planner=planner)
        outcome = await c.wait(job_id)
        job = c.engine.jobs[job_id]
    if outcome.status != "succeeded":
        raise SystemExit(f"dispatch bench: job {outcome.status}: {outcome.error}")
    starts = {tid: t.attempts[0].history[0][0] for tid, t in job.tasks.items()}
    first_start = min(starts.values())
    delays = {n: sorted(starts[t] - planner.created[t] for t in starts if t.startswith(n + "."))
              for n in ("a", "b")}
    span = job.ended - first_start
    return {"tasks": len(job.tasks), "workers": workers, "seconds": span, "tasks_per_s": len(job.tasks) / span,
            "whole_job_s": job.ended - job.created, "delays": delays}


def _pct(values, q):
    return values[min(len(values) - 1, int(q * len(values)))]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dispatch", action="store_true", help="the dispatch-rate benchmark")
    ap.add_argument("--tasks", type=int, default=10000)
    ap.add_argument("--workers", type=int, default=4)
    args = ap.parse_args(argv)
    if not args.dispatch:
        ap.error("choose a benchmark: --dispatch")
    with tempfile.TemporaryDirectory(prefix="excamera-pipeline-bench-") as d:
        r = asyncio.run(_dispatch(args.tasks, args.workers, d))
    print(f"dispatch: {r['tasks']} tasks of no-op stages on {r['workers']} local workers in {r['seconds']:.2f} s "
          f"(first task start to job end; {r['whole_job_s']:.2f} s with worker start-up): "
          f"{r['tasks_per_s']:.0f} tasks/s (target >= 300)")
    for n, ds in r["delays"].items():
        print(f"  item arrival -> task start, node {n}: median {statistics.median(ds) * 1000:.1f} ms, "
              f"p90 {_pct(ds, 0.9) * 1000:.1f} ms, min {ds[0] * 1000:.1f} ms ({len(ds)} tasks)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
