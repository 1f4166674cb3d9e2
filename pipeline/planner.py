"""The pipeline planner: the logical DAG of a pipespec becomes tasks as data arrives.

docs/design/pipelines.md. ``PipelinePlanner`` is the coordinator engine's ``Planner`` for a
pipeline job (``coordinator.engine``): items (an object in storage and its place in the video,
``pipeline.delivery.Item``) wait on each node's input ports; the node's delivery function turns
them into ``Batch``\\ es; each batch is one task running the ``pipeline-stage`` worker operation
(``pipeline.worker_op``) under the node's one-state FSM. When a task is done its outputs become
items on the downstream ports at once, so there are no stage barriers.

A node is *finished* when every node feeding it is finished, its delivery function has been
called with ``end=True`` (and left nothing waiting), and its tasks are done; a pipeline is
complete when every node is. Durable side inputs are held back until their upstream finished,
then given to every task of the node. A sink joined into an S3 object (``joins``:
``pipeline.ivf_join``) gains its layout, assemble and join tasks once every node feeding it is
finished; the pipeline is then complete when they are done too, and the tasks that fed only such
sinks are not result tasks (their objects are never fetched back).

Determinism: a task's id and its output keys are a function of the data only (the node, the
batch's lineage and a digest of its input objects and frame ranges), never of completion order,
so re-issued work and any worker count write identical objects. The ready tasks are ordered by a
pluggable scheduler (``pipeline.schedulers``: fifo, priority, streaming), which also hears of
every finished task and every output item.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from coordinator.engine import PlanError
from coordinator.fsm import DONE, FSM, State, Task
from storage import ObjectRef
from pipeline.delivery import Batch, DeliveryError, Item, NodeState, Part
from pipeline.schedulers import make_scheduler
from pipeline.spec import Node, Spec, SpecError

OPERATION = "pipeline-stage"
STATE = "run"
ARGS = ("node", "stage", "config", "inputs", "lineage", "prefix", "steal")


def describe_input(x: Item | Part) -> dict:
    """What a worker needs to load one input: the object, its type, and the frames to keep."""
    item, a, b = (x.item, x.a, x.b) if isinstance(x, Part) else (x, 0, x.count)
    return {"key": item.key, "sha256": item.sha256, "size": item.size, "type": item.port_type,
            "a": a, "b": b, "count": item.count}


@dataclass
class _NodeRun:
    node: Node
    view: NodeState
    waiting: dict[str, list[Item]]
    durable: dict[str, list[Item]]
    open_tasks: set[str] = field(default_factory=set)
    planned: int = 0
    done: int = 0
    flushed: bool = False
    finished: bool = False


class PipelinePlanner:
    """Items on ports, delivery functions, tasks; see the module docstring."""

    def __init__(self, spec: Spec, *, scheduler=None, clock: Callable[[], float] = time.monotonic,
                 on_progress: Callable[[str, int, int, bool], None] | None = None,
                 joins: dict[str, Any] | None = None):
        self.spec = spec
        # sink -> JoinPlan (coordinator.excamera_job): joined in S3 by the job's own tasks
        self.joins = dict(joins or {})
        self.join_open: dict[str, str] = {}                 # open join task id -> its sink
        self.join_planned: set[str] = set()
        self._sink_feeders: dict[str, set[str]] = {name: set() for name in spec.outputs}
        self.scheduler = scheduler or make_scheduler(spec.scheduler)
        self.scheduler.bind(spec, clock)
        self.clock = clock
        self.on_progress = on_progress
        self.nodes = {name: _NodeRun(n, NodeState(name, dict(n.options), n.streaming_ports),
                                     {p: [] for p in n.streaming_ports}, {p: [] for p in n.durable})
                      for name, n in spec.nodes.items()}
        self.tasks: dict[str, tuple[str, Batch]] = {}       # task id -> (node, batch)
        self.sinks: dict[str, list[Item]] = {name: [] for name in spec.outputs}
        self.sink_tasks: set[str] = set()
        self.created: dict[str, float] = {}                  # task id -> when it was planned
        self.inputs_closed = False
        # on_output(sink, items): told of each sink's items as they arrive (a streaming writer)
        self.on_output: Callable[[str, list[Item]], None] | None = None
        # on_frames(source or sink, frames so far): a progress bar in frames (excamera's CLI)
        self.on_frames: Callable[[str, int], None] | None = None
        self._dirty: set[str] = set()

    # -- the job --------------------------------------------------------------------------------

    def fsms(self) -> tuple[FSM, ...]:
        """One FSM per node: state ``run`` issues ``pipeline-stage`` with the task's params (and
        the joined sinks' FSMs, ``pipeline.ivf_join``, where there are any)."""
        nodes = tuple(FSM(f"node-{name}", STATE, (State(
            STATE, OPERATION, {a: "${" + a + "}" for a in ARGS}, {"ok": DONE}, timeout_s=n.timeout_s),))
            for name, n in self.spec.nodes.items())
        if not self.joins:
            return nodes
        from pipeline import ivf_join
        return nodes + ivf_join.fsms()

    def add_input(self, name: str, port: str, items: list[Item]) -> None:
        """The items of source ``name:port`` (all of them; sources are read before the job)."""
        if self.inputs_closed:
            raise PlanError("inputs were already closed")
        if port not in self.spec.inputs.get(name, {}):
            raise PlanError(f"{name}:{port} is not a source of this pipeline")
        self._deliver(name, port, items)
        if self.on_frames is not None:
            self.on_frames(name, sum(i.count for i in items))

    def start(self) -> list[Task]:
        """Close the sources and return the first tasks."""
        self.inputs_closed = True
        self.scheduler.start(self.clock())
        self._dirty.update(self.nodes)
        return self._pump()

    # -- the engine's Planner -------------------------------------------------------------------

    def on_done(self, task_id: str, outputs: dict[str, dict[str, Any]]) -> list[Task]:
        if task_id in self.join_open or task_id.partition(":")[0] in self.joins:
            self.join_open.pop(task_id, None)   # (a duplicate report: already gone)
            return []
        node_name, batch = self.tasks[task_id]
        run = self.nodes[node_name]
        if task_id not in run.open_tasks:
            return []       # a duplicate report: already counted
        run.open_tasks.discard(task_id)
        run.done += 1
        self.scheduler.task_done(node_name, self.clock() - self.created[task_id], task_id)
        out = outputs.get(STATE, {})
        try:
            described = json.loads(out.get("items", "[]"))
        except (TypeError, ValueError):
            raise PlanError(f"task {task_id}: unreadable items output") from None
        by_port: dict[str, list[Item]] = {}
        for d in described:
            ref = out.get(d.get("ref", ""))
            port = d.get("port")
            if not isinstance(ref, ObjectRef) or port not in run.node.stage.outputs:
                raise PlanError(f"task {task_id}: item {d!r} names no verified object or no output port")
            by_port.setdefault(port, []).append(Item(
                ref.key, ref.sha256, ref.size, run.node.stage.outputs[port], batch.lineage,
                int(d["start"]), int(d["count"]), tuple(d["fps"]), dict(d.get("meta") or {}),
                f"{node_name}:{port}"))
        for port, items in by_port.items():
            if port in run.node.outputs:
                self._deliver(node_name, port, items, task_id)
        self._progress(node_name)
        self._dirty.add(node_name)
        return self._pump()

    def complete(self) -> bool:
        return (self.inputs_closed and all(r.finished for r in self.nodes.values())
                and self.join_planned == set(self.joins) and not self.join_open)

    def joined(self, sink: str) -> bool:
        """Whether the join task of S3 sink ``sink`` completed its upload (as far as this planner
        knows: a client whose job ran on a running coordinator is told by ``mark_joined``)."""
        return sink in self.join_planned and f"{sink}:join" not in self.join_open

    def mark_joined(self) -> None:
        """The job succeeded elsewhere: every S3 sink's upload is complete."""
        self.join_planned.update(self.joins)
        self.join_open.clear()

    def result_tasks(self) -> tuple[str, ...]:
        """The tasks whose objects are the outputs: none that fed only joined sinks."""
        fetched = set().union(*(t for name, t in self._sink_feeders.items() if name not in self.joins))
        return tuple(sorted(self.sink_tasks & fetched))

    def order(self, ready: list, now: float) -> list:
        self.scheduler.open_tasks = sum(len(r.open_tasks) for r in self.nodes.values())
        return self.scheduler.order(ready, now)

    @property
    def idle_exit_s(self) -> float | None:
        """Seconds an idle worker waits before it exits (the streaming scheduler's; else None)."""
        return self.scheduler.idle_exit_s

    # -- results --------------------------------------------------------------------------------

    def sink_items(self, name: str) -> list[Item]:
        """The items of sink ``name`` in frame order."""
        return sorted(self.sinks[name], key=lambda i: (i.start, i.lineage, i.key))

    def physical(self) -> dict:
        """The tasks the DAG became: task -> node, lineage and what fed it (the tasks, or
        sources, whose items it took), and sink -> what fed it; for drawing (``pipeline.draw``)."""
        producer = {}
        for tid, (node, _) in self.tasks.items():
            producer[f"n/{node}/{tid.split('.', 1)[1]}"] = tid

        def origin(key: str) -> str:
            if key.startswith("in/"):
                return key.split("/")[1]             # in/<source>/<port>/<n>
            return producer.get(key.rsplit(".", 2)[0], "?")   # n/<node>/<group>.<port>.<i>

        tasks = {}
        for tid, (node, batch) in sorted(self.tasks.items()):
            keys = [x.item.key if isinstance(x, Part) else x.key for xs in batch.inputs.values() for x in xs]
            keys += [i.key for items in self.nodes[node].durable.values() for i in items]
            tasks[tid] = {"node": node, "lineage": batch.lineage, "from": sorted({origin(k) for k in keys})}
        sinks = {name: sorted({origin(i.key) for i in items}) for name, items in self.sinks.items()}
        return {"nodes": list(self.spec.inputs) + list(self.spec.nodes) + list(self.spec.outputs),
                "tasks": tasks, "sinks": sinks}

    def progress(self) -> dict[str, tuple[int, int, bool]]:
        """node -> (tasks done, tasks planned, finished)."""
        return {n: (r.done, r.planned, r.finished) for n, r in self.nodes.items()}

    # -- inside ---------------------------------------------------------------------------------

    def _deliver(self, src: str, port: str, items: list[Item], task_id: str = "") -> None:
        """Put items from ``src:port`` on the port its stream feeds."""
        stream = self.spec.nodes[src].outputs[port] if src in self.spec.nodes else next(
            s for s in self.spec.streams if s.src == src and s.src_port == port)
        if stream.dst in self.sinks:
            self.sinks[stream.dst].extend(items)
            if self.on_output is not None:
                self.on_output(stream.dst, items)
            if self.on_frames is not None:
                self.on_frames(stream.dst, sum(i.count for i in self.sinks[stream.dst]))
            for i in items:
                self.scheduler.output(stream.dst, i)
            if task_id:
                self.sink_tasks.add(task_id)
                self._sink_feeders[stream.dst].add(task_id)
            return
        run = self.nodes[stream.dst]
        (run.durable if stream.durable else run.waiting)[stream.dst_port].extend(items)
        self._dirty.add(stream.dst)

    def _upstream_finished(self, name: str, ports=None) -> bool:
        n = self.spec.nodes[name]
        srcs = {s.src for p, ss in n.inputs.items() if ports is None or p in ports for s in ss}
        return self.inputs_closed and all(s not in self.nodes or self.nodes[s].finished for s in srcs)

    def _pump(self) -> list[Task]:
        """Run the delivery functions of the nodes with news (new items, or a node feeding them
        finished), until nothing changes; a node waiting on nothing new costs nothing."""
        new: list[Task] = []
        changed = True
        while changed:
            changed = False
            for name, run in self.nodes.items():   # topological order
                if run.finished:
                    continue
                if name in self._dirty:
                    self._dirty.discard(name)
                    new.extend(self._plan_node(name, run))
                if run.flushed and not run.open_tasks and not run.finished:
                    run.finished = True
                    changed = True
                    self._progress(name)
                    for other in self.nodes:
                        if name in self.spec.upstream[other]:
                            self._dirty.add(other)
        return new + self._plan_joins()

    def _plan_joins(self) -> list[Task]:
        """The tasks joining each S3 sink whose feeders are all finished (once each)."""
        from pipeline import ivf_join

        new: list[Task] = []
        for sink, join in self.joins.items():
            feeders = {s.src for s in self.spec.streams if s.dst == sink}
            if sink in self.join_planned or not self.inputs_closed or \
                    any(f in self.nodes and not self.nodes[f].finished for f in feeders):
                continue
            items = self.sink_items(sink)
            if not items:
                raise PlanError(f"{sink}: the pipeline produced nothing for this output")
            try:
                tasks = ivf_join.tasks(sink, items, join)
            except ValueError as e:
                raise PlanError(str(e)) from None
            self.join_planned.add(sink)
            self.join_open.update((t.task_id, sink) for t in tasks)
            new += tasks
        return new

    def _plan_node(self, name: str, run: _NodeRun) -> list[Task]:
        if run.flushed or not self._upstream_finished(name, run.node.durable):
            return []
        end = self._upstream_finished(name)
        if not end and not any(run.waiting.values()):
            return []
        try:
            batches = run.node.delivery.fn(run.view, run.waiting, end)
        except (DeliveryError, SpecError) as e:
            raise PlanError(str(e)) from None
        except Exception as e:  # noqa: BLE001 - a user's delivery function: one line, naming it
            raise PlanError(f"node {name}: delivery function {run.node.delivery.name} failed: "
                            f"{type(e).__name__}: {e}") from None
        tasks = [self._task(name, run, b) for b in batches]
        if end:
            left = [i for items in run.waiting.values() for i in items]
            if left:
                raise PlanError(f"node {name}: delivery function {run.node.delivery.name} left "
                                f"{len(left)} item(s) undelivered at the end: {left[0].describe()}")
            run.flushed = True
        if tasks:
            self._progress(name)
        return tasks

    def _task(self, name: str, run: _NodeRun, batch: Batch) -> Task:
        inputs = {p: [describe_input(x) for x in xs] for p, xs in sorted(batch.inputs.items())}
        for p, items in sorted(run.durable.items()):
            inputs[p] = [describe_input(i) for i in sorted(items, key=lambda i: (i.start, i.key))]
        fps = next((x.fps for xs in batch.inputs.values() for x in xs), None)
        try:
            config = run.node.stage_config(fps)
        except SpecError as e:
            raise PlanError(str(e)) from None
        ident = json.dumps([[p, [[d["key"], d["a"], d["b"]] for d in ds]] for p, ds in inputs.items()])
        digest = hashlib.sha256(ident.encode()).hexdigest()[:10]
        group = f"{batch.lineage:06d}-{digest}"
        task_id = f"{name}.{group}"
        if task_id in self.tasks:
            raise PlanError(f"node {name}: two tasks with the same inputs (lineage {batch.lineage})")
        self.tasks[task_id] = (name, batch)
        run.open_tasks.add(task_id)
        run.planned += 1
        self.created[task_id] = self.clock()
        first = min((x.start for xs in batch.inputs.values() for x in xs), default=0)
        rate = fps or (1, 1)
        params = {"node": name, "stage": run.node.stage.name, "first_frame": first,
                  "first_time": first * rate[1] / rate[0],
                  "config": json.dumps(config, sort_keys=True, separators=(",", ":")),
                  "inputs": json.dumps(inputs, sort_keys=True, separators=(",", ":")),
                  "lineage": batch.lineage, "prefix": f"n/{name}/{group}", "steal": int(run.node.steal)}
        return Task(task_id, f"node-{name}", params, pair=run.node.steal)

    def _progress(self, name: str) -> None:
        if self.on_progress is not None:
            r = self.nodes[name]
            self.on_progress(name, r.done, r.planned, r.finished)
