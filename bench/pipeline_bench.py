"""Pipeline benchmarks (issue 11). ``--dispatch``: how fast the coordinator turns items into
running tasks.

Two runs through the real embedded coordinator, rendezvous and local worker processes:

* throughput: two no-op stages (``a`` then ``b``, default delivery) over N/2 tiny records items,
  N tasks. Reported: tasks per second (target >= 300) and the delay from an item's arrival on a
  node's input port (when the planner planned its task; for source items, when the job started)
  to the start of the task's first attempt (the engine's), median and 90th percentile, per node.
  Here the workers are saturated, so that delay is queueing: the source items all arrive at
  once, and under fifo ``b``'s items wait behind ``a``'s remaining tasks;
* latency: one item through a chain of ``--chain`` no-op nodes (one task at a time, workers
  idle), so the arrival -> start delay is the dispatch path alone (result in, verify, plan,
  command out).

    python bench/pipeline_bench.py --dispatch [--tasks 10000] [--workers 4] [--chain 200]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import statistics
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for p in (ROOT, HERE):
    if p not in sys.path:
        sys.path.insert(0, p)

from pipeline.stage import stage
from pipeline.values import Records


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


def chain_spec(n: int) -> dict:
    nodes = [{"name": f"n{i}", "stage": "bench_noop"} for i in range(n)]
    streams = [{"src": "input_0:records", "dst": "n0:records"}]
    streams += [{"src": f"n{i}:records", "dst": f"n{i + 1}:records"} for i in range(n - 1)]
    streams.append({"src": f"n{n - 1}:records", "dst": "output_0:records"})
    return {"nodes": nodes, "streams": streams}


async def _dispatch(spec: dict, n_items: int, workers: int, storage_dir: str, journal_dir: str | None = None) -> dict:
    from coordinator.api import embedded_coordinator
    from coordinator.journal import Journal
    from coordinator.fsm import Job
    from pipeline.planner import PipelinePlanner
    from pipeline.spec import validate

    planner = PipelinePlanner(validate(spec))
    objects, items = _items(n_items)
    planner.add_input("input_0", "records", items)
    first = planner.start()
    os.environ["PYTHONPATH"] = os.pathsep.join([HERE, os.environ.get("PYTHONPATH", "")])
    journal = Journal(journal_dir) if journal_dir else None  # --journal: every result journalled
    async with embedded_coordinator(storage_dir, ops_modules=("pipeline.worker_op", "pipeline_bench"),
                                    journal=journal) as c:
        job_id, _ = await c.submit(Job("dispatch", planner.fsms(), tuple(first)), workers=workers,
                                   inputs=objects, planner=planner)
        outcome = await c.wait(job_id)
        job = c.engine.jobs[job_id]
    if outcome.status != "succeeded":
        raise SystemExit(f"dispatch bench: job {outcome.status}: {outcome.error}")
    starts = {tid: t.attempts[0].history[0][0] for tid, t in job.tasks.items()}
    first_start = min(starts.values())
    arrival = {t: max(c, job.created) for t, c in planner.created.items()}
    delays = {n: sorted(starts[t] - arrival[t] for t in starts if t.startswith(n + "."))
              for n in planner.spec.nodes}
    span = job.ended - first_start
    by_node = [sorted(starts[t] for t in starts if t.startswith(n + ".")) for n in planner.spec.nodes]
    hops = sorted(b[0] - a[0] for a, b in zip(by_node, by_node[1:]) if a and b)
    return {"tasks": len(job.tasks), "workers": workers, "seconds": span, "tasks_per_s": len(job.tasks) / span,
            "whole_job_s": job.ended - job.created, "delays": delays, "hops": hops}


def _pct(values, q):
    return values[min(len(values) - 1, int(q * len(values)))]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dispatch", action="store_true", help="the dispatch-rate benchmark")
    ap.add_argument("--tasks", type=int, default=10000)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--chain", type=int, default=200, help="nodes in the latency run (0: skip it)")
    ap.add_argument("--journal", action="store_true",
                    help="journal the job as coordinator serve --state-dir does (its cost on dispatch)")
    args = ap.parse_args(argv)
    if not args.dispatch:
        ap.error("choose a benchmark: --dispatch")
    with tempfile.TemporaryDirectory(prefix="excamera-pipeline-bench-") as d:
        r = asyncio.run(_dispatch(SPEC, args.tasks // 2, args.workers, os.path.join(d, "t"),
                                  os.path.join(d, "state") if args.journal else None))
        lat = asyncio.run(_dispatch(chain_spec(args.chain), 1, 1, os.path.join(d, "l"))) if args.chain else None
    print(f"dispatch: {r['tasks']} tasks of no-op stages on {r['workers']} local workers in {r['seconds']:.2f} s "
          f"(first task start to job end; {r['whole_job_s']:.2f} s with worker start-up): "
          f"{r['tasks_per_s']:.0f} tasks/s (target >= 300)")
    for n, ds in r["delays"].items():
        print(f"  item arrival -> task start, node {n}: median {statistics.median(ds) * 1000:.1f} ms, "
              f"p90 {_pct(ds, 0.9) * 1000:.1f} ms, min {ds[0] * 1000:.1f} ms ({len(ds)} tasks)")
    if lat:
        ds = sorted(max(0.0, d) for v in lat["delays"].values() for d in v)
        hops = lat["hops"]
        print(f"latency: one item through {lat['tasks']} chained no-op nodes, one worker: item arrival -> "
              f"task start median {statistics.median(ds) * 1000:.1f} ms (the engine starts a task in the "
              f"step that plans it); one task's start -> the next one's start (worker run, result, verify, "
              f"plan, command) median {statistics.median(hops) * 1000:.1f} ms, p90 {_pct(hops, 0.9) * 1000:.1f} ms")
    if not args.journal:  # the recorded figure is the default configuration's
        record_figures(r, lat)
    return 0


def record_figures(r: dict, lat: dict | None) -> None:
    """What was printed, as data (bench/results.json; bench/render.py makes the tables)."""
    from bench.results import record

    rows = [["tasks per second (first task start to job end)", round(r["tasks_per_s"])],
            ["whole job with worker start-up (s)", round(r["whole_job_s"], 2)]]
    rows += [[f"item arrival -> task start, node {n}, median (ms)", round(statistics.median(ds) * 1000, 1)]
             for n, ds in r["delays"].items()]
    if lat:
        rows.append([f"one task's start -> the next one's, {lat['tasks']} chained nodes, median (ms)",
                     round(statistics.median(lat["hops"]) * 1000, 2)])
    record("pipeline-dispatch", {
        "command": "python bench/pipeline_bench.py --dispatch",
        "headline": [{"figure": f"Pipeline dispatch, no-op tasks on {r['workers']} workers",
                      "value": f"{r['tasks_per_s']:.0f} tasks/s", "against": "", "target": ">= 300"}],
        "tables": [{"title": f"{r['tasks']:,} tasks of two chained no-op stages on {r['workers']} local workers",
                    "columns": ["measure", "value"], "rows": rows}]}, title="Pipeline dispatch")


if __name__ == "__main__":
    sys.exit(main())
