#!/usr/bin/env python3
"""Worker-seconds of the priority and streaming schedulers on fleets of 2 to 16 workers, projected
from one measured run: the run's task times replayed, through the real scheduler classes
(``pipeline.schedulers``) and the engine's launch and retire rules, on workers that each have a
core of their own (as cloud workers do).

Why a projection: on the 2-core development machine a CPU-bound pipeline keeps every worker busy
under priority, so no scheduler can hold fewer worker-seconds there; what streaming saves is the
workers a larger fleet holds idle (waiting for work that is not ready, or at the tail). Measuring
that needs cores for every worker; replaying measured task times needs none.

The model, stated so it can be checked against the measured run (the 2-worker row):

* the job is the run's pieces, each a chain of tasks through the pipeline's nodes (this covers
  chain pipelines such as ``pipelines/grayscale.json``); every source task is ready at the start;
  a task takes the seconds it took in the measured run (its winning attempt);
* priority (no idle exit): the engine launches the whole fleet at the start and keeps it to the
  end; streaming: workers idle for ``idle_exit_s`` while work is held back are retired, and
  workers are launched only for the running and released tasks (``coordinator.engine``);
* a launched worker joins after ``--launch`` seconds (default: the measured run's first join) and
  is paid for from its launch to its stop, as a cloud fleet bills;
* piece ``l`` (of the run's equal pieces of the input) is due at start + deadline + its first
  frame's time (``StreamingScheduler.due``).

    python bench/scheduler_projection.py TIMELINE.json [--pipeline pipelines/grayscale.json]
                                         [--deadline 25] [--fleet 2,4,8,16] [--launch S]
                                         [--video-s 24]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

TICK_S = 0.02
TASK_ID = re.compile(r"^(?P<node>[^.]+)\.(?P<lineage>\d+)-")


class _Task:
    """What the schedulers read of a ready task (``spec.params`` node and first_time)."""

    def __init__(self, node: str, piece: int, first_time: float, seconds: float):
        self.node, self.piece, self.seconds = node, piece, seconds
        self.spec = type("Spec", (), {"params": {"node": node, "first_time": first_time},
                                      "task_id": f"{node}.{piece}"})()


def measured_tasks(timeline: dict) -> dict[tuple[str, int], float]:
    """(node, piece) -> seconds of the winning attempt, from a pipeline run's timeline (a task id
    is ``NODE.PIECE-HASH``, the piece being its lineage: the input's pieces in order)."""
    out = {}
    for task_id, attempts in timeline["tasks"].items():
        m = TASK_ID.match(task_id)
        won = [a for a in attempts if a["status"] == "succeeded"]
        if not m or not won:
            continue
        hist = won[0]["history"]
        out[(m["node"], int(m["lineage"]))] = hist[-1][0] - hist[0][0]
    return out


def first_join(timeline: dict) -> float:
    return min(w["history"][0][0] for w in timeline["workers"])


def simulate(spec, times: dict[tuple[str, int], float], piece_s: float, scheduler, fleet: int,
             launch_s: float) -> dict:
    """Replay the job on ``fleet`` workers under ``scheduler``; held and busy worker-seconds,
    makespan, the most workers held at once and the late pieces."""
    chain = list(spec.nodes)
    for n in chain[1:]:
        if len(spec.upstream.get(n, ())) != 1:
            raise SystemExit(f"scheduler_projection: node {n} is not in a chain; only chain pipelines are modelled")
    pieces = sorted({start for (_, start) in times})
    now = 0.0
    scheduler.bind(spec, lambda: now)
    scheduler.start(0.0)
    if hasattr(scheduler, "workers"):
        scheduler.workers = fleet
    exit_s = scheduler.idle_exit_s
    ready = [_Task(chain[0], p, p * piece_s, times[(chain[0], p)]) for p in pieces]
    workers: list[dict] = []     # {"launched", "joined", "stopped", "task", "until", "idle_since"}
    done_at: dict[int, float] = {}
    busy = 0.0
    peak = 0

    def launch(n: int) -> None:
        for _ in range(n):
            workers.append({"launched": now, "joined": now + launch_s, "stopped": None, "task": None,
                            "until": 0.0, "idle_since": now + launch_s})

    if exit_s is None:
        launch(fleet)
    while len(done_at) < len(pieces):
        live = [w for w in workers if w["stopped"] is None]
        for w in live:  # tasks that end now
            if w["task"] is not None and w["until"] <= now + 1e-9:
                t = w["task"]
                scheduler.task_done(t.node, t.seconds)
                i = chain.index(t.node)
                if i + 1 < len(chain):
                    nxt = chain[i + 1]
                    ready.append(_Task(nxt, t.piece, t.piece * piece_s, times[(nxt, t.piece)]))
                else:
                    done_at[t.piece] = now
                w["task"], w["idle_since"] = None, now
        idle = [w for w in live if w["task"] is None and w["joined"] <= now]
        scheduler.open_tasks = len(ready) + sum(1 for w in live if w["task"] is not None)
        order = scheduler.order(list(ready), now) if ready else []
        released = max(0, len(order) - len(idle))
        for t in order:
            if not idle:
                break
            w = idle.pop(0)
            ready.remove(t)
            w["task"], w["until"] = t, now + t.seconds
            busy += t.seconds
        if exit_s is not None:
            for w in idle:
                if now - w["idle_since"] >= exit_s:
                    w["stopped"] = now
            live = [w for w in workers if w["stopped"] is None]
            running = sum(1 for w in live if w["task"] is not None)
            wanted = min(fleet, running + released)
            if wanted > len(live):
                launch(wanted - len(live))
        peak = max(peak, sum(1 for w in workers if w["stopped"] is None))
        now += TICK_S
    for w in workers:
        if w["stopped"] is None:
            w["stopped"] = now
    held = sum(w["stopped"] - w["launched"] for w in workers)
    deadline = getattr(scheduler, "deadline", None)
    late = [p for p in pieces if deadline is not None and done_at[p] > deadline + p * piece_s + TICK_S]
    return {"held": held, "busy": busy, "makespan": now, "peak": peak, "launches": len(workers),
            "late": len(late), "pieces": len(pieces)}


def project(timeline: dict, pipeline: str, deadline: float, fleets: list[int], video_s: float,
            launch_s: float | None = None) -> list[dict]:
    """Priority against streaming on each fleet size, for a run over ``video_s`` seconds of video
    cut into equal pieces."""
    from pipeline.schedulers import PriorityScheduler, StreamingScheduler
    from pipeline.spec import load as load_spec

    spec = load_spec(pipeline)
    times = measured_tasks(timeline)
    piece_s = video_s / len({piece for _, piece in times})
    launch_s = first_join(timeline) if launch_s is None else launch_s
    rows = []
    for fleet in fleets:
        p = simulate(spec, times, piece_s, PriorityScheduler(), fleet, launch_s)
        s = simulate(spec, times, piece_s, StreamingScheduler(deadline), fleet, launch_s)
        rows.append({"fleet": fleet, "priority": p, "streaming": s, "ratio": s["held"] / p["held"]})
    return rows


def print_rows(rows: list[dict], deadline: float, launch_s: float) -> None:
    print(f"projected on fleets of workers with a core each (measured task times replayed; "
          f"launch {launch_s:.2f} s; streaming deadline {deadline:g} s):")
    for r in rows:
        p, s = r["priority"], r["streaming"]
        print(f"  {r['fleet']:3d} workers: priority {p['held']:6.1f} worker-s held ({p['busy']:.1f} busy, "
              f"done at {p['makespan']:5.1f} s); streaming {s['held']:6.1f} held, at most {s['peak']} at once, "
              f"{s['launches']} launches, {s['late']} of {s['pieces']} pieces late: "
              f"{r['ratio']:.2f}x priority's (target <= 0.7x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("timeline")
    ap.add_argument("--pipeline", default=os.path.join(ROOT, "pipelines", "grayscale.json"))
    ap.add_argument("--deadline", type=float, default=25.0)
    ap.add_argument("--fleet", default="2,4,8,16")
    ap.add_argument("--launch", type=float, default=None, metavar="S")
    ap.add_argument("--video-s", type=float, default=24.0, help="seconds of video the run covered (24: the "
                    "grayscale bench's 600 frames at 25 fps)")
    args = ap.parse_args()
    with open(args.timeline) as f:
        timeline = json.load(f)
    launch_s = first_join(timeline) if args.launch is None else args.launch
    rows = project(timeline, args.pipeline, args.deadline, [int(x) for x in args.fleet.split(",")], args.video_s,
                   launch_s)
    print_rows(rows, args.deadline, launch_s)


if __name__ == "__main__":
    main()
