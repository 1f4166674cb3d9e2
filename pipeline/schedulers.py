"""Schedulers: which ready pipeline task the next free worker takes.

The planner (``pipeline.planner``) hands its scheduler the ready tasks each engine step
(``order``: the tasks to start, in order — a task left out waits; ``open_tasks``: how many it has
planned and not seen done, the ready ones included) and tells it of every task done
(``task_done``: its node and seconds from planned, or from released where the scheduler knows,
to done) and every output item
(``output``). Every scheduler works under the engine's concurrency limit (the workers there are).

* ``fifo``: in the order tasks became ready.
* ``priority``: earliest video first across all stages — the task whose first frame is earliest,
  and among equals the one nearest the output — so the video's first seconds finish first.
* ``streaming`` (``deadline`` S seconds): the output must play at real-time speed from S seconds
  after the job starts, so the output frame at time t is due at start + S + t. It runs the ready
  tasks earliest deadline first on as few workers at a time as meet every due time: at each step
  it releases only as many tasks as bring the tasks running to ``k``, the least concurrency for
  which, for every ready task (in deadline order), the work due up to it (each task's *lead*: the
  medians of its node's and downstream nodes' task times, from release to done) fits before its
  due time on ``k`` workers, times a safety ``margin``. Work beyond that is held back; the engine
  launches workers only for the tasks running and released, and a worker idle for ``idle_exit_s``
  (1 s) exits (the engine's ``idle_exit_s`` policy). So a fleet larger than the deadline needs is
  not held idle, and the workers that are held stay busy (pacing the work to the deadline instead
  would leave them idle between releases, paid for). Each output item that arrives after its due
  time is a miss, reported with its lateness. Before a node has finished ``min_sample`` tasks its
  time is unknown: two tasks at a time run to learn it; a task already due gets every worker.

A pipespec names its scheduler with ``"scheduler": "priority"`` or ``{"name": "streaming",
"deadline": 5}``; ``excamera pipeline run --scheduler`` overrides it. The names are those in
``SCHEDULERS`` (a ``foundation.registry.Registry`` of ``Scheduler`` classes); a class registers
with ``@SCHEDULERS.register(name)`` and is made from the pipespec's object by its
``from_options``.
"""

from __future__ import annotations

import json
import math
from typing import Any

from foundation.registry import Registry
from pipeline.spec import SpecError

#: Options a pipespec's scheduler object may carry besides its name.
OPTIONS = ("deadline", "margin")


class Scheduler:
    """fifo: the base every scheduler extends, and so what a scheduler is (see the module
    docstring)."""

    name = "fifo"
    #: Seconds a worker may sit idle before it exits (None: workers stay for the whole job).
    idle_exit_s: float | None = None

    def __init__(self):
        self.t0 = 0.0
        self.depth: dict[str, int] = {}
        self.downstream: dict[str, list[str]] = {}
        self.times: dict[str, list[float]] = {}
        self.first_output: float | None = None

    def bind(self, spec, clock) -> None:
        """Learn the DAG: each node's distance to the nearest output, and what it feeds."""
        self.clock = clock
        feeds: dict[str, set[str]] = {n: set() for n in spec.nodes}
        for other, ups in spec.upstream.items():
            for u in ups:
                if u in feeds:
                    feeds[u].add(other)
        self.downstream = {n: sorted(v) for n, v in feeds.items()}
        depth: dict[str, int] = {}
        for n in reversed(list(spec.nodes)):          # nodes are in topological order
            depth[n] = 1 + min((depth[d] for d in self.downstream[n] if d in depth), default=0)
        self.depth = depth

    def start(self, now: float) -> None:
        self.t0 = now

    def task_done(self, node: str, seconds: float, task_id: str | None = None) -> None:
        self.times.setdefault(node, []).append(seconds)

    def output(self, sink: str, item) -> None:
        if self.first_output is None:
            self.first_output = self.clock() - self.t0

    def order(self, ready: list, now: float) -> list:
        return ready

    def report(self) -> dict:
        """The scheduler's name and the seconds from the start to the first output piece."""
        return {"scheduler": self.name, "first_output_s": self.first_output}

    @classmethod
    def from_options(cls, spec: dict) -> "Scheduler":
        """This scheduler as a pipespec's object asks for it (its options already known to be
        among ``OPTIONS``); SpecError in one line when they do not suit it."""
        return cls()


#: Scheduler classes by name: what ``"scheduler"`` and ``--scheduler`` may name.
SCHEDULERS: Registry[type[Scheduler]] = Registry("scheduler", error=SpecError, duplicate=SpecError)
SCHEDULERS.add(Scheduler.name, Scheduler)
FifoScheduler = Scheduler


def first_time(task) -> float:
    return float(task.spec.params.get("first_time", 0.0))


@SCHEDULERS.register("priority")
class PriorityScheduler(Scheduler):
    name = "priority"

    def order(self, ready: list, now: float) -> list:
        return sorted(ready, key=lambda t: (first_time(t), self.depth.get(t.spec.params.get("node"), 0)))


@SCHEDULERS.register("streaming")
class StreamingScheduler(PriorityScheduler):
    name = "streaming"

    def __init__(self, deadline: float, margin: float = 1.5, min_sample: int = 2, idle_exit_s: float = 1.0):
        super().__init__()
        self.idle_exit_s = idle_exit_s
        if not isinstance(deadline, (int, float)) or isinstance(deadline, bool) or not 0 < deadline <= 86400:
            raise SpecError(f"scheduler streaming: deadline {deadline!r} must be a number of seconds "
                            f"in (0, 86400]")
        self.deadline, self.margin, self.min_sample = float(deadline), margin, min_sample
        self.misses: list[dict] = []
        self.outputs = 0
        self.held = 0
        self.workers = 1      # how many may run at once (run_pipeline sets it)
        self.open_tasks = 0   # planned and not yet done, ready ones included (the planner sets it)
        self.released_at: dict[str, float] = {}

    def due(self, t: float) -> float:
        return self.t0 + self.deadline + t

    def _median(self, node: str) -> float | None:
        times = self.times.get(node, [])
        if len(times) < self.min_sample:
            return None
        ordered = sorted(times)
        return ordered[len(ordered) // 2]

    def lead(self, node: str) -> float | None:
        """Seconds from a task of ``node`` being started to its output reaching a sink: the
        longest path of median task times from it (None while any on the way is unknown)."""
        memo: dict[str, float | None] = {}

        def walk(n: str) -> float | None:
            if n not in memo:
                m = self._median(n)
                rest = [walk(d) for d in self.downstream.get(n, [])]
                memo[n] = None if m is None or None in rest else m + max(rest, default=0.0)
            return memo[n]

        return walk(node)

    def task_done(self, node: str, seconds: float, task_id: str | None = None) -> None:
        released = self.released_at.pop(task_id, None)
        super().task_done(node, self.clock() - released if released is not None else seconds)

    def concurrency(self, ready: list, now: float) -> int:
        """``k``: the fewest workers on which the ready tasks, earliest deadline first, each end
        by their due time (their leads times ``margin``); at most ``workers``."""
        need, work = 0.0, 0.0
        leads: dict[str, float | None] = {}   # one walk a node, not a task (the same each time)
        for t in super().order(ready, now):
            node = t.spec.params.get("node", "")
            lead = leads[node] if node in leads else leads.setdefault(node, self.lead(node))
            if lead is None:
                need = max(need, 2.0)            # unknown: run two at a time to learn it
                continue
            work += self.margin * lead
            left = self.due(first_time(t)) - now
            if left <= 0:
                return self.workers              # already due: every worker
            need = max(need, work / left)
        return max(1, min(self.workers, math.ceil(need - 1e-9)))

    def order(self, ready: list, now: float) -> list:
        """Earliest deadline first, as many as bring the tasks running up to ``concurrency``."""
        ordered = super().order(ready, now)
        running = max(0, self.open_tasks - len(ready))
        released = ordered[:max(0, self.concurrency(ready, now) - running)] if ordered else []
        for t in released:
            self.released_at.setdefault(t.spec.task_id, now)
        self.held = len(ready) - len(released)
        return released

    def output(self, sink: str, item) -> None:
        super().output(sink, item)
        self.outputs += 1
        t = item.start * item.fps[1] / item.fps[0]
        late = self.clock() - self.due(t)
        if late > 0:
            self.misses.append({"sink": sink, "frame": item.start, "due_s": round(self.deadline + t, 3),
                                "late_s": round(late, 3)})

    def report(self) -> dict:
        return {**super().report(), "deadline_s": self.deadline, "outputs": self.outputs,
                "misses": self.misses}

    @classmethod
    def from_options(cls, spec: dict) -> "StreamingScheduler":
        if "deadline" not in spec:
            raise SpecError("pipespec: scheduler streaming needs a deadline (seconds until the output "
                            "must start playing)")
        margin = spec.get("margin", 1.5)
        if not isinstance(margin, (int, float)) or isinstance(margin, bool) or not 1 <= margin <= 100:
            raise SpecError(f"pipespec: scheduler streaming: margin {margin!r} must be in [1, 100]")
        return cls(spec["deadline"], float(margin))


#: The scheduler names, sorted (kept for callers of the tuple this module had before ``SCHEDULERS``).
NAMES = tuple(SCHEDULERS.names())


def make_scheduler(value: Any) -> Scheduler:
    """The scheduler ``value`` names (one of ``SCHEDULERS``): None or ``"fifo"``, ``"priority"``,
    ``"streaming"`` (needs a deadline), or an object ``{"name": ..., "deadline": S}``. SpecError
    in one line otherwise."""
    if value is None:
        return Scheduler()
    spec = {"name": value} if isinstance(value, str) else value
    if not isinstance(spec, dict) or not isinstance(spec.get("name", "fifo"), str):
        raise SpecError(f"pipespec: scheduler {json.dumps(value)} is not a name or an object with one")
    name = spec.get("name", "fifo")
    extra = sorted(set(spec) - {"name", *OPTIONS})
    if extra:
        raise SpecError(f"pipespec: scheduler {name}: unknown option(s) {', '.join(extra)}")
    if name not in SCHEDULERS:
        raise SpecError(f"pipespec: scheduler {name!r} is not available "
                        f"(known: {', '.join(SCHEDULERS.names())})")
    return SCHEDULERS.get(name).from_options(spec)
