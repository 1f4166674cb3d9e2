"""The coordinator's engine: jobs as sets of per-worker FSMs, driven by observations.

Pure Python with no I/O but storage reads (to verify reported objects); the gRPC servicer feeds
it and carries out what it decides, and tests drive it directly with a fake clock. Each cycle
(``step``) first *observes* (connections, results, lost workers, cancellations, timeouts), then
*acts* (start ready tasks on idle workers, re-issue lost or straggling ones, ask for workers,
finish jobs), and returns the actions for the servicer.

Four lifecycles are literal tables in ``coordinator.lifecycle`` (after Ray's autoscaler): jobs,
tasks, task attempts and worker connections, each status a ``StrEnum``; every change is checked
against its table, timestamped, and counted in ``seen`` (tests assert every edge is exercised).
Inside an attempt, the job's FSM table decides the next state from each result.

Policies:

* late binding: workers connect generic; an idle worker takes the next ready task;
* timeouts and lost workers follow the state's ``timeout`` and ``lost`` edges where its FSM names
  them (``coordinator.fsm``): the transition is validated against the table, recorded in the
  attempt's history and the job's events, and the task goes on from the target (a new attempt
  starting there, the ``redirected`` attempt edge). Where a state names none, the default: past
  its timeout the attempt is marked straggling and a duplicate attempt of the task starts (from
  the FSM's initial state) on another worker; past four timeouts the attempt is abandoned (lost).
  A lost worker's attempt is re-issued from the initial state. The first attempt to reach
  ``done`` with every reported object verified wins; the others are stopped;
* speculation by relative slowness (``Speculation``): an attempt that has spent more than k times
  the median time its FSM state took in the job's finished attempts (after a minimum sample, and
  at least a floor of seconds) is marked straggling and gets a duplicate attempt the same way, long
  before the fixed timeout; states that wait on other tasks (``Speculation.waits``) are exempt;
* a pair task (``Task.pair``: work stealing, ``pipeline.steal``) starts two attempts at once
  that split its work; the first to finish wins and the other, a moment from done, is left to
  finish and go idle (stopped if it is not done ``PAIR_DRAIN_S`` later);
* a task fails after ``max_attempts`` failed attempts (or ``max_lost`` lost ones); the job then
  fails. A job succeeds only when every task is done and every result object re-verifies;
* a job without a planner whose workers a launcher started stops the idle ones no task left can
  use (more than its waiting and ready tasks, wanted duplicates and spares): an idle worker is
  paid for, and the launcher replaces one should a task come back.

Dynamic jobs (pipelines): a job added with a ``planner`` (``Planner`` below) gains tasks while it
runs. Each time one of its tasks is done (its winning attempt verified), the engine hands the
planner that task's outputs and adds the tasks it returns (each checked like a job's own, and
starting ``waiting``); the planner may also order the ready tasks (its scheduler). The job ends
when no task is unfinished *and* the planner says it is complete; its result tasks are the
planner's. A ``PlanError`` from the planner fails the job with its message.
"""

from __future__ import annotations

import bisect
import json
import logging
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from coordinator.fsm import DONE, ERROR, FAILED, LOST, OK, TIMEOUT, FsmError, Job, Task, fill
from coordinator.lifecycle import (TABLES, TASK_ENDED, WORKER_LIVE, AttemptStatus, JobStatus, TaskStatus,
                                  WorkerStatus)
from foundation.errors import ExcameraError
from storage import ObjectRef, Storage

log = logging.getLogger("excamera.coordinator")

STRAGGLER_FACTOR_ABANDON = 4.0
LAUNCH_TIMEOUT_S = 60.0
#: The operations that read a task's mailbox at the rendezvous.
RECEIVING_OPERATIONS = ("receive-state",)
#: Seconds a plain job's worker may stay idle while only waiting tasks could use it
#: (``Engine._retire_unneeded``): a few cold starts' worth.
PLAIN_IDLE_EXIT_S = 5.0

#: Seconds the losing attempt of a pair task may take to finish after its peer won.
PAIR_DRAIN_S = 5.0
#: The table a status belongs to, by its type (``Engine.seen`` counts edges by table name).
_TABLE_NAMES = {TaskStatus: "task", AttemptStatus: "attempt", WorkerStatus: "worker", JobStatus: "job"}


@dataclass(frozen=True)
class Speculation:
    """When a running attempt is *slow*: past ``factor`` times what it should cost, and never
    sooner than ``floor_s`` (scheduling noise on millisecond states). What it should cost:

    * for a task that says how many frames it covers (``task_frames``: a pipeline task's
      inputs, a ``frames`` parameter), its frames times the state's seconds per frame: the
      median over the job's finished attempts of the state (any task size, one is enough), else
      ``per_frame_s`` (a cost model: operation, or ``stage:NAME`` for a pipeline stage, ->
      seconds per frame); an attempt on a worker that has finished nothing yet is allowed
      ``cold_s`` more (loading its kernels);
    * otherwise the median time of the same state in the job's finished attempts, once
      ``min_sample`` of them finished.

    This is slowness only: a frozen worker (SIGSTOP, a dead machine) is *lost*, found by the
    transport's keepalive, not by these clocks (docs/design/engine.md). States issuing one of
    ``waits`` wait for other tasks (a state from the previous chunk), so their time says nothing
    about the worker: they are exempt. ``factor`` 0 turns speculation off."""

    factor: float = 2.0
    min_sample: int = 3
    floor_s: float = 1.0
    waits: frozenset = frozenset({"receive-state"})
    per_frame_s: Mapping[str, float] = field(default_factory=dict)
    cold_s: float = 3.0


def _ids(job: "JobRec", a: "AttemptRec") -> dict:
    """The ids a log line about attempt ``a`` carries (``--log-format json``)."""
    return {"job": job.job_id, "task": a.task.spec.task_id, "attempt": a.number, "worker": a.worker_id}


def task_frames(task: Task) -> int | None:
    """How many frames ``task`` covers, where it says: a pipeline task's inputs (the port with
    the most frames: ``pipeline.planner`` describes each input's frame range ``a``..``b``), or
    a whole-number ``frames`` parameter; None otherwise."""
    params = task.params
    frames = params.get("frames")
    if isinstance(frames, int) and not isinstance(frames, bool) and frames > 0:
        return frames
    inputs = params.get("inputs")
    if isinstance(inputs, str) and inputs.startswith("{"):
        try:
            ports = json.loads(inputs)
            counts = [sum(int(d["b"]) - int(d["a"]) for d in ds) for ds in ports.values()]
        except (ValueError, TypeError, KeyError, AttributeError):
            return None
        best = max(counts, default=0)
        return best if best > 0 else None
    return None


class LifecycleError(RuntimeError):
    """A status change its table does not allow: a bug in the engine."""


class PlanError(ExcameraError):
    """A dynamic job's planner cannot go on (e.g. items that can never be joined); the job fails
    with this message."""


class Planner(Protocol):
    """What the engine asks of a dynamic job's planner (``pipeline.planner`` is one). Every call
    comes from the engine's step, so a planner needs no locking."""

    def on_done(self, task_id: str, outputs: dict[str, dict[str, Any]]) -> list[Task]:
        """Task ``task_id`` is done with ``outputs`` (state -> output name -> value, every
        ObjectRef verified): the new tasks this makes possible."""

    def complete(self) -> bool:
        """No task will be added any more (every node has flushed its last items)."""

    def result_tasks(self) -> tuple[str, ...]:
        """The tasks whose object outputs are the job's result (asked once, when it ends)."""

    def order(self, ready: list[TaskRec], now: float) -> list[TaskRec]:
        """The ready tasks in the order idle workers should take them (the scheduler); a task
        left out is held back for now."""

    # Optional: ``idle_exit_s`` (seconds, or None): when set, a worker idle that long while
    # every ready task is held back exits, and workers are launched only for the work released
    # (the streaming scheduler: as few workers at a time as meet its deadline).


# -- actions (what the servicer must do) ---------------------------------------------------------

@dataclass(frozen=True)
class SendCommand:
    worker_id: str
    seq: int
    task_id: str
    attempt: int
    state: str
    operation: str
    args: dict[str, Any]
    timeout_s: float


@dataclass(frozen=True)
class StopWorker:
    worker_id: str
    reason: str


@dataclass(frozen=True)
class Launch:
    job_id: str
    count: int


@dataclass(frozen=True)
class ReleaseMailbox:
    job_id: str
    task_id: str


@dataclass(frozen=True)
class JobEnded:
    job_id: str
    status: str
    objects: dict[str, dict[str, ObjectRef]]
    error: str


@dataclass(frozen=True)
class Event:
    job_id: str
    time: float
    kind: str
    task_id: str = ""
    worker_id: str = ""
    from_state: str = ""
    to_state: str = ""
    detail: str = ""


@dataclass(frozen=True)
class Result:
    """A worker's answer as the engine sees it."""

    seq: int
    task_id: str
    ok: bool
    error: str = ""
    outputs: dict[str, Any] = field(default_factory=dict)


# -- records -------------------------------------------------------------------------------------

@dataclass(eq=False)
class AttemptRec:
    task: "TaskRec"
    number: int
    worker_id: str
    state: str
    entered: float
    status: AttemptStatus = AttemptStatus.RUNNING
    seq: int = 0
    straggling: bool = False
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    history: list[tuple[float, str]] = field(default_factory=list)


@dataclass(eq=False)
class TaskRec:
    spec: Task
    status: TaskStatus
    attempts: list[AttemptRec] = field(default_factory=list)
    errors: int = 0
    lost: int = 0
    wants_duplicate: bool = False
    winner: AttemptRec | None = None
    last_error: str = ""
    resume: tuple[str, dict] | None = None  # (state, outputs) where the next attempt starts
    seq: int = 0                            # the order it was added to its job

    def running(self) -> list[AttemptRec]:
        return [a for a in self.attempts if a.status == AttemptStatus.RUNNING]


@dataclass(eq=False)
class WorkerRec:
    worker_id: str
    job_id: str
    name: str
    status: WorkerStatus
    connected: float
    next_seq: int = 1
    attempt: AttemptRec | None = None
    history: list[tuple[float, str]] = field(default_factory=list)  # (time, "idle" | "task:state" | ...)


@dataclass(eq=False)
class JobRec:
    job_id: str
    job: Job
    storage: Storage
    workers: int
    spare: int
    max_attempts: int
    max_lost: int
    created: float
    status: JobStatus = JobStatus.RUNNING
    tasks: dict[str, TaskRec] = field(default_factory=dict)
    worker_ids: list[str] = field(default_factory=list)
    pending_launches: list[float] = field(default_factory=list)  # deadlines
    launches: int = 0
    launch_budget: int = 0
    launcher: bool = True
    # A plain job that has retired a worker only waiting tasks could use: from then on it
    # launches only for its started and ready tasks (``Engine._retire_unneeded``).
    lean: bool = False
    objects: dict[str, dict[str, ObjectRef]] = field(default_factory=dict)
    error: str = ""
    ended: float = 0.0
    planner: Planner | None = None
    # (fsm, state) -> seconds its finished attempts spent in it, and the median when last asked
    durations: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    medians: dict[tuple[str, str], float] = field(default_factory=dict)
    # (fsm, state) -> seconds per frame of its finished attempts (tasks that say their frames:
    # ``task_frames``), and the median when last asked; task id -> its frames (None: unknown)
    rates: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    rate_medians: dict[tuple[str, str], float] = field(default_factory=dict)
    frames: dict[str, int | None] = field(default_factory=dict)
    # The tasks not yet done, failed or cancelled, in the order they were added; and the same
    # tasks by status (waiting, ready, running), so that each step looks only at the tasks that
    # can change (a pipeline may have tens of thousands waiting for a worker).
    live: dict[str, TaskRec] = field(default_factory=dict)
    by_status: dict[TaskStatus, dict[str, TaskRec]] = field(
        default_factory=lambda: {TaskStatus.WAITING: {}, TaskStatus.READY: {}, TaskStatus.RUNNING: {}})
    added: int = 0
    ready_seq: int = 0            # the highest seq that became ready; ready is in seq order below it
    ready_sorted: bool = True
    draining: dict[str, float] = field(default_factory=dict)  # worker -> deadline (PAIR_DRAIN_S)
    receives: dict[str, bool] = field(default_factory=dict)   # fsm -> has a receive-state

    def track(self, task: TaskRec) -> None:
        """A new task (waiting)."""
        self.added += 1
        task.seq = self.added
        self.tasks[task.spec.task_id] = self.live[task.spec.task_id] = task
        self.by_status[task.status][task.spec.task_id] = task

    def unfinished(self) -> int:
        return len(self.live)


class Engine:
    """Jobs, tasks, attempts and workers; ``observe_*`` record, ``step`` decides."""

    def __init__(self, clock=time.monotonic, speculation: Speculation | None = None):
        self.clock = clock
        self.speculation = speculation or Speculation()
        self.jobs: dict[str, JobRec] = {}
        self.workers: dict[str, WorkerRec] = {}
        self.seen: Counter = Counter()          # (table, from, to) -> times
        self.rejected: list[str] = []           # results refused (for tests and logs)
        self._inbox: list[tuple] = []
        self._actions: list = []
        self._next_worker = 1
        # (job id, task id, outputs) of each task done (its winner verified) since last drained,
        # when someone journals them (coordinator.journal); None: nobody does
        self.done_log: list | None = None

    # -- lifecycle bookkeeping ------------------------------------------------------------------

    def _move(self, obj, new: StrEnum) -> None:
        """Change ``obj``'s status to ``new`` through its table (the one of ``new``'s type)."""
        table = _TABLE_NAMES[type(new)]
        old = obj.status
        if new not in TABLES[table].get(old, {}):
            raise LifecycleError(f"{table} {getattr(obj, 'worker_id', '') or getattr(obj, 'job_id', '')}"
                                 f": {old} -> {new} is not in the table")
        obj.status = new
        self.seen[(table, old, new)] += 1

    def _event(self, job_id: str, kind: str, **kw) -> None:
        self._actions.append(Event(job_id, self.clock(), kind, **kw))

    def _task_move(self, job: JobRec, task: TaskRec, new: TaskStatus, detail: str = "") -> None:
        old = task.status
        self._move(task, new)
        tid = task.spec.task_id
        job.by_status[old].pop(tid, None)
        if new in job.by_status:
            job.by_status[new][tid] = task
        if new == TaskStatus.READY:  # keep note of whether the ready tasks are still in the order added
            if task.seq < job.ready_seq:
                job.ready_sorted = False
            job.ready_seq = max(job.ready_seq, task.seq)
        if new in TASK_ENDED:
            job.live.pop(tid, None)
        self._event(job.job_id, "task", task_id=task.spec.task_id, from_state=old, to_state=new,
                    detail=detail)

    def _plan(self, job: JobRec, task: TaskRec, now: float) -> None:
        """A dynamic job's task is done: add the tasks its planner derives from the outputs."""
        try:
            new = job.planner.on_done(task.spec.task_id, {k: dict(v) for k, v in task.winner.outputs.items()})
            for t in new:
                if t.task_id in job.tasks:
                    raise FsmError(f"task id {t.task_id!r} is taken")
                job.job.check_task(t, job.tasks)
                job.track(TaskRec(t, TaskStatus.WAITING))
                job.launch_budget += 2
        except (PlanError, FsmError) as e:
            self._end_job(job, JobStatus.FAILED, f"planning after task {task.spec.task_id}: {e}", now)
            return
        if new:
            self._event(job.job_id, "plan", task_id=task.spec.task_id, detail=f"{len(new)} new task(s)")

    def _worker_move(self, w: WorkerRec, new: WorkerStatus, label: str | None = None) -> None:
        self._move(w, new)
        w.history.append((self.clock(), label or new))

    # -- jobs -----------------------------------------------------------------------------------

    def add_job(self, job_id: str, job: Job, storage: Storage, *, workers: int, spare: int = 0,
                max_attempts: int = 3, max_lost: int = 10, launcher: bool = True,
                planner: Planner | None = None) -> JobRec:
        """Register ``job``; with a ``planner`` it is dynamic (tasks are added as others finish)."""
        if job_id in self.jobs:
            raise FsmError(f"job {job_id}: already exists")
        if workers < 1 or spare < 0 or max_attempts < 1:
            raise FsmError(f"job {job_id}: need workers >= 1, spare >= 0, max_attempts >= 1")
        rec = JobRec(job_id, job, storage, workers, spare, max_attempts, max_lost, self.clock(),
                     launcher=launcher, planner=planner)
        rec.launch_budget = 3 * (workers + spare) + 2 * len(job.tasks)
        for t in job.tasks:
            rec.track(TaskRec(t, TaskStatus.WAITING))
        self.jobs[job_id] = rec
        self._event(job_id, "job", to_state=JobStatus.RUNNING, detail=f"{len(job.tasks)} tasks")
        return rec

    # -- observations (recorded now, handled at the next step) ---------------------------------

    def observe_connect(self, job_id: str, name: str, worker_id: str | None = None) -> str:
        """A worker of ``job_id`` (already authenticated, as ``worker_id`` when given: ids must
        be unique) connected; returns its worker id."""
        if worker_id is None:
            worker_id = f"w{self._next_worker}"
            self._next_worker += 1
        elif worker_id in self.workers:
            raise LifecycleError(f"worker {worker_id} connected twice")
        self._inbox.append(("connect", worker_id, job_id, name))
        return worker_id

    def observe_disconnect(self, worker_id: str) -> None:
        self._inbox.append(("disconnect", worker_id))

    def observe_result(self, worker_id: str, result: Result) -> None:
        self._inbox.append(("result", worker_id, result))

    def observe_cancel(self, job_id: str) -> None:
        self._inbox.append(("cancel", job_id))

    def observe_launch_failed(self, job_id: str, count: int = 1) -> None:
        self._inbox.append(("launch-failed", job_id, count))

    def observe_fail(self, job_id: str, why: str) -> None:
        """The job cannot go on (its launcher cannot start workers): it fails with ``why``."""
        self._inbox.append(("fail", job_id, why))

    # -- the cycle ------------------------------------------------------------------------------

    def step(self) -> list:
        """Observe, then act; returns the actions to carry out, in order."""
        now = self.clock()
        inbox, self._inbox = self._inbox, []
        for item in inbox:
            getattr(self, "_on_" + item[0].replace("-", "_"))(now, *item[1:])
        self._check_timeouts(now)
        for job in list(self.jobs.values()):
            if job.status == JobStatus.RUNNING:
                self._act(job, now)
        actions, self._actions = self._actions, []
        return actions

    # observe ------------------------------------------------------------------------------------

    def _on_connect(self, now: float, worker_id: str, job_id: str, name: str) -> None:
        job = self.jobs.get(job_id)
        w = WorkerRec(worker_id, job_id, name, WorkerStatus.IDLE, now, history=[(now, WorkerStatus.IDLE)])
        self.workers[worker_id] = w
        if job is None:
            self._worker_move(w, WorkerStatus.STOPPING)
            self._actions.append(StopWorker(worker_id, f"job {job_id} is unknown"))
            return
        job.worker_ids.append(worker_id)
        if job.pending_launches:
            job.pending_launches.pop(0)
        if job.status != JobStatus.RUNNING:
            self._worker_move(w, WorkerStatus.STOPPING)
            self._actions.append(StopWorker(worker_id, f"job {job_id} is {job.status}"))

    def _on_disconnect(self, now: float, worker_id: str) -> None:
        w = self.workers.get(worker_id)
        if w is None or w.status == WorkerStatus.GONE:
            return
        a = w.attempt
        self._worker_move(w, WorkerStatus.GONE)
        w.attempt = None
        if w.job_id in self.jobs:
            self.jobs[w.job_id].draining.pop(worker_id, None)
        if a is not None and a.status == AttemptStatus.RUNNING:
            log.warning("coordinator: job %s: worker %s (%s) lost during task %s, state %s",
                        w.job_id, worker_id, w.name, a.task.spec.task_id, a.state,
                        extra={"job": w.job_id, "task": a.task.spec.task_id, "attempt": a.number,
                               "worker": worker_id})
            # (its stream broke: killed, crashed, or frozen and so deaf to the transport's
            # keepalive pings; the task goes on elsewhere at once, not at its state's timeout)
            self._event(w.job_id, "lost", task_id=a.task.spec.task_id, worker_id=worker_id,
                        from_state=a.state, detail=f"attempt {a.number}")
            self._lost(self.jobs[w.job_id], a, f"worker {worker_id} lost", now)

    def _on_cancel(self, now: float, job_id: str) -> None:
        job = self.jobs.get(job_id)
        if job is not None and job.status == JobStatus.RUNNING:
            self._end_job(job, JobStatus.CANCELLED, "cancelled by a client", now)

    def _on_fail(self, now: float, job_id: str, why: str) -> None:
        job = self.jobs.get(job_id)
        if job is not None and job.status == JobStatus.RUNNING:
            self._end_job(job, JobStatus.FAILED, why, now)

    def _on_launch_failed(self, now: float, job_id: str, count: int) -> None:
        job = self.jobs.get(job_id)
        if job is not None:
            del job.pending_launches[:count]

    def _reject(self, worker_id: str, why: str) -> None:
        msg = f"coordinator: result from worker {worker_id} rejected: {why}"
        log.error(msg)
        self.rejected.append(msg)

    def _on_result(self, now: float, worker_id: str, r: Result) -> None:
        """A worker's answer: check that it answers the command outstanding, verify what it
        reports, and follow its FSM's edge on the outcome."""
        a = self._answered_attempt(worker_id, r)
        if a is None:
            return
        job, task = self.jobs[self.workers[worker_id].job_id], a.task
        where = f"job {job.job_id}: task {task.spec.task_id} attempt {a.number} state {a.state}"
        outcome, error = self._outcome(job, r)
        if outcome == ERROR:
            log.warning("coordinator: %s (worker %s): %s", where, worker_id, error)
        else:
            a.outputs[a.state] = dict(r.outputs)
        try:
            target = job.job.fsm(task.spec.fsm).next_state(a.state, outcome)
        except FsmError as e:
            if outcome != ERROR:
                log.error("coordinator: %s: %s", where, e)
                error = str(e)
            self._attempt_end(job, a, AttemptStatus.ERRORED, error, now)
            return
        self._event(job.job_id, "transition", task_id=task.spec.task_id, worker_id=worker_id,
                    from_state=a.state, to_state=target, detail=error or outcome)
        if outcome != ERROR:
            self._record_time(job, a, now)
        self._follow(job, a, target, error, now)

    def _answered_attempt(self, worker_id: str, r: Result) -> AttemptRec | None:
        """The running attempt that result ``r`` answers; None when there is none: the result is
        rejected (an unknown worker, a command not given), ignored (a stopping worker), or ends
        a pair's losing attempt."""
        w = self.workers.get(worker_id)
        if w is None or w.status == WorkerStatus.GONE:
            self._reject(worker_id, "unknown or disconnected worker")
            return None
        if w.status == WorkerStatus.STOPPING:
            log.debug("coordinator: late result from stopping worker %s ignored", worker_id)
            return None
        a = w.attempt
        if a is not None and self._drained(w, a):
            return None
        if a is None or a.status != AttemptStatus.RUNNING:
            self._reject(worker_id, f"result for a task not given (seq {r.seq}, task "
                                    f"{r.task_id!r}); the worker has no command outstanding")
            return None
        if r.seq != a.seq or r.task_id != a.task.spec.task_id:
            self._reject(worker_id, f"result for a task not given (seq {r.seq}, task "
                                    f"{r.task_id!r}); outstanding is seq {a.seq}, task "
                                    f"{a.task.spec.task_id!r}")
            return None
        return a

    def _drained(self, w: WorkerRec, a: AttemptRec) -> bool:
        """Whether ``a`` is the superseded attempt of a pair task, now finished within its
        ``PAIR_DRAIN_S``: its worker goes idle (and the result is not used)."""
        job = self.jobs.get(w.job_id)
        if a.status != AttemptStatus.SUPERSEDED or job is None or job.draining.pop(w.worker_id, None) is None:
            return False
        log.debug("coordinator: %s: the losing attempt of pair task %s finished", w.worker_id,
                  a.task.spec.task_id)
        w.attempt = None
        self._worker_move(w, WorkerStatus.IDLE)
        return True

    @staticmethod
    def _outcome(job: JobRec, r: Result) -> tuple[str, str]:
        """The result's outcome and error: ``error`` when the operation failed or an object it
        reports does not verify; else its ``outcome`` output, or ``ok``."""
        if not r.ok:
            return ERROR, r.error or "operation failed"
        for name, value in r.outputs.items():
            if isinstance(value, ObjectRef):
                why = job.storage.verify(value)
                if why is not None:
                    return ERROR, f"unverified result {name}: {why}"
        return r.outputs.get("outcome", OK), ""

    def _record_time(self, job: JobRec, a: AttemptRec, now: float) -> None:
        """Note the seconds (and seconds per frame) attempt ``a`` took in its state: what
        speculation measures slowness against (``_slow_limit``)."""
        key = (a.task.spec.fsm, a.state)
        # Kept in order (insort), so that a median is an index, not a sort of every time so far.
        bisect.insort(job.durations.setdefault(key, []), now - a.entered)
        job.medians.pop(key, None)
        frames = self._frames(job, a.task)
        if frames:
            bisect.insort(job.rates.setdefault(key, []), (now - a.entered) / frames)
            job.rate_medians.pop(key, None)

    def _follow(self, job: JobRec, a: AttemptRec, target: str, error: str, now: float) -> None:
        """Attempt ``a`` moves to ``target`` on a result: ``done`` and ``failed`` end it; any
        other state is issued to its worker."""
        task = a.task
        a.state, a.entered = target, now
        a.history.append((now, target))
        if target == DONE:
            self._attempt_end(job, a, AttemptStatus.SUCCEEDED, "", now)
        elif target == FAILED:
            task.errors = job.max_attempts  # the FSM said so: no more attempts
            self._attempt_end(job, a, AttemptStatus.ERRORED, error or f"fsm reached {FAILED}", now)
        else:
            self.workers[a.worker_id].history.append((now, f"{task.spec.task_id}:{target}"))
            self._issue(job, a, now)

    def _check_timeouts(self, now: float) -> None:
        """Deadlines passed: launches that never connected, pair attempts that did not drain,
        and each running attempt's clock in its state (``_check_attempt``)."""
        for job in self.jobs.values():
            if job.status != JobStatus.RUNNING:
                continue
            job.pending_launches = [d for d in job.pending_launches if d >= now]
            for wid, until in list(job.draining.items()):
                if now > until:
                    del job.draining[wid]
                    self._stop_worker(wid, f"the losing attempt of a pair ran {PAIR_DRAIN_S:g} s past its peer's win")
            for task in list(job.by_status[TaskStatus.RUNNING].values()):
                for a in task.running():
                    self._check_attempt(job, task, a, now)

    def _check_attempt(self, job: JobRec, task: TaskRec, a: AttemptRec, now: float) -> None:
        """Attempt ``a``'s time in its state against its limits, first that passed wins: the
        state's timeout edge, four timeouts (abandoned), one timeout (straggling), slowness
        (speculation)."""
        fsm = job.job.fsm(task.spec.fsm)
        timeout = fsm.state(a.state).timeout_s
        spent = now - a.entered
        target = fsm.edge(a.state, TIMEOUT)
        if target is not None and spent > timeout:
            log.warning("coordinator: job %s: task %s attempt %d timed out in state %s "
                        "(%.1f s > %.1f s); its timeout edge leads to %s", job.job_id,
                        task.spec.task_id, a.number, a.state, spent, timeout, target,
                        extra=_ids(job, a))
            self._stop_worker(a.worker_id, f"state {a.state} timed out")
            self._engine_edge(job, a, TIMEOUT, target, f"timed out in state {a.state} after {spent:.1f} s", now)
        elif spent > STRAGGLER_FACTOR_ABANDON * timeout:
            log.warning("coordinator: job %s: task %s attempt %d abandoned in state %s "
                        "after %.1f s", job.job_id, task.spec.task_id, a.number, a.state, spent,
                        extra=_ids(job, a))
            self._stop_worker(a.worker_id, "attempt abandoned (ran past four timeouts)")
            self._lost(job, a, "abandoned", now)
        elif spent > timeout and not a.straggling:
            self._straggling(job, task, a, spent, timeout)
        elif not a.straggling and len(task.running()) < 2:
            self._speculate(job, task, a, spent, fsm.state(a.state).operation)

    def _straggling(self, job: JobRec, task: TaskRec, a: AttemptRec, spent: float, timeout: float) -> None:
        """``a`` ran past its state's timeout (which names no edge): a duplicate attempt starts."""
        a.straggling = True
        log.warning("coordinator: job %s: task %s attempt %d straggling in state %s "
                    "(%.1f s > %.1f s); re-issuing", job.job_id, task.spec.task_id,
                    a.number, a.state, spent, timeout, extra=_ids(job, a))
        self._event(job.job_id, "straggler", task_id=task.spec.task_id,
                    worker_id=a.worker_id, from_state=a.state)
        if len(task.running()) < 2:
            task.wants_duplicate = True

    def _speculate(self, job: JobRec, task: TaskRec, a: AttemptRec, spent: float, operation: str) -> None:
        """A duplicate of ``a`` when it is slow for its state (``Speculation``)."""
        slow = self._slow_limit(job, a, operation)
        if slow is None or spent <= slow[0]:
            return
        limit, basis = slow
        a.straggling = True
        log.warning("coordinator: job %s: task %s attempt %d slow in state %s "
                    "(%.1f s, over %.1f s: %gx %s); speculating",
                    job.job_id, task.spec.task_id, a.number, a.state, spent, limit,
                    self.speculation.factor, basis, extra=_ids(job, a))
        self._event(job.job_id, "speculate", task_id=task.spec.task_id,
                    worker_id=a.worker_id, from_state=a.state,
                    detail=f"{spent:.2f} s > {limit:.2f} s ({basis})")
        task.wants_duplicate = True

    def _frames(self, job: JobRec, task: TaskRec) -> int | None:
        """``task_frames`` of the task, worked out once."""
        tid = task.spec.task_id
        if tid not in job.frames:
            job.frames[tid] = task_frames(task.spec)
        return job.frames[tid]

    def _slow_limit(self, job: JobRec, a: AttemptRec, operation: str) -> tuple[float, str] | None:
        """Seconds past which attempt ``a`` counts as slow in its state, and what they are
        based on; None when nothing tells (speculation off, a waiting state, no finished peer
        and no cost model, too few peers for a task of unknown size). See ``Speculation``."""
        spec = self.speculation
        if spec.factor <= 0 or operation in spec.waits:
            return None
        key = (a.task.spec.fsm, a.state)
        frames = self._frames(job, a.task)
        if frames:
            per_frame = job.rate_medians.get(key)
            basis = "the state's median seconds per frame"
            if per_frame is None and job.rates.get(key):
                ordered = job.rates[key]
                per_frame = job.rate_medians[key] = ordered[len(ordered) // 2]
            if per_frame is None:
                stage = a.task.spec.params.get("stage")
                per_frame = spec.per_frame_s.get(f"stage:{stage}" if isinstance(stage, str) else operation)
                basis = "the cost model's seconds per frame"
            if per_frame is not None:
                limit = max(spec.factor * frames * per_frame, spec.floor_s)
                w = self.workers.get(a.worker_id)
                if w is not None and len(w.history) <= 2:  # its first state: kernels to load
                    limit += spec.cold_s
                return limit, f"{frames} frame(s) x {basis}"
        times = job.durations.get(key)
        if not times or len(times) < spec.min_sample:
            return None
        median = job.medians.get(key)
        if median is None:
            ordered = times
            median = job.medians[key] = ordered[len(ordered) // 2]
        return max(spec.factor * median, spec.floor_s), "its peers' median"

    def _lost(self, job: JobRec, a: AttemptRec, why: str, now: float) -> None:
        """The attempt's worker is gone (or abandoned): its state's ``lost`` edge, else the default."""
        target = job.job.fsm(a.task.spec.fsm).edge(a.state, LOST)
        if target is None:
            self._attempt_end(job, a, AttemptStatus.LOST, why, now)
        else:
            self._engine_edge(job, a, LOST, target, why, now)

    def _engine_edge(self, job: JobRec, a: AttemptRec, outcome: str, target: str, why: str,
                     now: float) -> None:
        """Follow the table's ``timeout`` or ``lost`` edge (the worker is already stopped or gone)."""
        task = a.task
        fsm = job.job.fsm(task.spec.fsm)
        if fsm.edge(a.state, outcome) != target:  # validated like any transition
            raise FsmError(f"fsm {fsm.name!r}: no {outcome!r} edge from {a.state!r} to {target!r}")
        self._event(job.job_id, "transition", task_id=task.spec.task_id, worker_id=a.worker_id,
                    from_state=a.state, to_state=target, detail=f"{outcome}: {why}")
        old = a.state
        a.state, a.entered = target, now
        a.history.append((now, target))
        if target == DONE:
            self._attempt_end(job, a, AttemptStatus.SUCCEEDED, "", now)
        elif target == FAILED:
            task.errors = job.max_attempts  # the FSM said so: no more attempts
            self._attempt_end(job, a, AttemptStatus.ERRORED, f"{why}; the {outcome} edge of {old!r} leads to {FAILED}",
                              now)
        else:
            if not [o for o in task.running() if o is not a]:
                task.resume = (target, {k: dict(v) for k, v in a.outputs.items()})
            self._attempt_end(job, a, AttemptStatus.REDIRECTED, f"{why}; resuming at {target!r}", now)

    # act ----------------------------------------------------------------------------------------

    def _act(self, job: JobRec, now: float) -> None:
        """Release the tasks whose dependencies are done, give ready tasks and wanted duplicates
        to idle workers, then finish the job or see to its workers."""
        done = TaskStatus.DONE  # looked up once: an enum member's lookup costs, and this loop is long
        for task in list(job.by_status[TaskStatus.WAITING].values()):
            if all(job.tasks[d].status == done for d in task.spec.after):
                self._task_move(job, task, TaskStatus.READY)
        idle = [self.workers[w] for w in job.worker_ids if self.workers[w].status == WorkerStatus.IDLE]
        exit_s = getattr(job.planner, "idle_exit_s", None)
        released = self._start_ready(job, idle, exit_s, now)
        for task in list(job.by_status[TaskStatus.RUNNING].values()) if idle else ():
            if not idle:
                break
            if task.wants_duplicate and len(task.running()) < 2:
                task.wants_duplicate = False
                self._start_attempt(job, task, idle.pop(0), now)
        if job.status != JobStatus.RUNNING:
            return
        if job.unfinished() == 0:
            if job.planner is None or job.planner.complete():
                self._finish(job, now)
            else:  # a planner bug: nothing runs and nothing more will be planned
                self._end_job(job, JobStatus.FAILED, "the planner added no task, yet is not complete", now)
            return
        if exit_s is not None:
            self._retire_idle(job, exit_s, now)
        elif job.planner is None and job.launcher:
            self._retire_unneeded(job, now)
        if job.launcher:
            self._launch(job, exit_s, released, now)

    def _start_ready(self, job: JobRec, idle: list[WorkerRec], exit_s: float | None, now: float) -> int:
        """Start ready tasks on the ``idle`` workers (taking them from the list), in the order the
        tasks were added or the scheduler's; returns how many tasks the scheduler let go that no
        idle worker took (counted with ``idle_exit_s``)."""
        if not ((idle or exit_s is not None) and job.by_status[TaskStatus.READY]):
            return 0
        if not job.ready_sorted:  # re-sorted only when a task came back out of order
            job.by_status[TaskStatus.READY] = dict(sorted(job.by_status[TaskStatus.READY].items(),
                                                          key=lambda kv: kv[1].seq))
            job.ready_sorted = True
        ready = list(job.by_status[TaskStatus.READY].values())
        if job.planner is not None and (len(ready) > 1 or exit_s is not None):
            ready = job.planner.order(ready, now)
        released = max(0, len(ready) - len(idle))
        for task in ready:
            if not idle:
                break
            self._task_move(job, task, TaskStatus.RUNNING)
            self._start_attempt(job, task, idle.pop(0), now)
            if task.spec.pair:   # its peer now if a worker is free, else as soon as one is
                task.wants_duplicate = True
                if idle:
                    task.wants_duplicate = False
                    self._start_attempt(job, task, idle.pop(0), now)
        return released

    def _launch(self, job: JobRec, exit_s: float | None, released: int, now: float) -> None:
        """Ask for the workers the job lacks (within its launch budget); the job fails when it
        has none left and may launch no more."""
        live = sum(1 for w in job.worker_ids if self.workers[w].status in WORKER_LIVE)
        if exit_s is not None:   # only for the work there is: the running and the released
            pending = sum(len(t.running()) for t in job.by_status[TaskStatus.RUNNING].values()) + released
        elif job.lean:   # past its peak (``_retire_unneeded``): the started and ready tasks
            pending = (sum(len(t.running()) for t in job.by_status[TaskStatus.RUNNING].values())
                       + len(job.by_status[TaskStatus.READY]))
        else:  # a dynamic job's task count grows as it runs: keep its workers
            pending = job.workers if job.planner is not None else job.unfinished()
        # A duplicate no idle worker took (every worker may be waiting on the very task that
        # is slow) gets a worker of its own rather than waiting for one to free up.
        duplicates = sum(1 for t in job.by_status[TaskStatus.RUNNING].values()
                         if t.wants_duplicate and len(t.running()) < 2)
        wanted = min(job.workers + job.spare, pending + job.spare) + duplicates
        missing = min(wanted - live - len(job.pending_launches), job.launch_budget - job.launches)
        if missing > 0:
            job.launches += missing
            job.pending_launches.extend([now + LAUNCH_TIMEOUT_S] * missing)
            self._actions.append(Launch(job.job_id, missing))
        elif live == 0 and not job.pending_launches and job.launches >= job.launch_budget:
            self._end_job(job, JobStatus.FAILED, f"no workers left and the launch budget "
                                                 f"({job.launch_budget}) is spent", now)

    def _retire_idle(self, job: JobRec, exit_s: float, now: float) -> None:
        """Stop the workers idle for ``exit_s`` beyond the ``spare`` ones: the scheduler holds
        the work back, and an idle worker is paid for. Its launch goes back to the budget."""
        idle = [self.workers[w] for w in job.worker_ids if self.workers[w].status == WorkerStatus.IDLE]
        idle.sort(key=lambda w: w.history[-1][0])
        for w in idle[:max(0, len(idle) - job.spare)]:
            if now - w.history[-1][0] >= exit_s:
                job.launches = max(0, job.launches - 1)
                self._event(job.job_id, "retire", worker_id=w.worker_id,
                            detail=f"idle {now - w.history[-1][0]:.1f} s while the scheduler holds the work back")
                self._stop_worker(w.worker_id, "idle: the scheduler holds the work back")

    def _retire_unneeded(self, job: JobRec, now: float) -> None:
        """A job without a planner knows all its tasks: stop the idle workers no task can use (an
        encode's tail: its last rebases run while the chunk workers sit idle, and on Lambda an
        idle worker is paid for). At once those beyond its unstarted tasks (waiting or ready),
        wanted duplicates and ``spare``; after ``PLAIN_IDLE_EXIT_S`` idle, those beyond the ready
        tasks, duplicates and spares too (a waiting task mostly starts on the worker the task it
        waits on frees; one that finds none gets a launch, as the job then launches only for its
        started and ready tasks: ``JobRec.lean``). Only where a launcher can replace them; each
        launch goes back to the budget."""
        idle = [self.workers[w] for w in job.worker_ids if self.workers[w].status == WorkerStatus.IDLE]
        if not idle:
            return
        now_usable = len(job.by_status[TaskStatus.READY]) + job.spare + sum(
            1 for t in job.by_status[TaskStatus.RUNNING].values() if t.wants_duplicate and len(t.running()) < 2)
        usable = now_usable + len(job.by_status[TaskStatus.WAITING])
        if len(idle) <= now_usable:
            return
        idle.sort(key=lambda w: w.history[-1][0])
        surplus = len(idle) - now_usable
        for i, w in enumerate(idle[:surplus]):
            if i >= len(idle) - usable:
                if now - w.history[-1][0] < PLAIN_IDLE_EXIT_S:
                    break   # (oldest first: the rest are idle for less)
                job.lean = True
            job.launches = max(0, job.launches - 1)
            self._event(job.job_id, "retire", worker_id=w.worker_id, detail="idle: no task left can use it")
            self._stop_worker(w.worker_id, "idle: no task left can use it")

    def _start_attempt(self, job: JobRec, task: TaskRec, w: WorkerRec, now: float) -> None:
        fsm = job.job.fsm(task.spec.fsm)
        start, outputs = task.resume or (fsm.initial, {})
        task.resume = None
        a = AttemptRec(task, len(task.attempts) + 1, w.worker_id, start, now,
                       outputs={k: dict(v) for k, v in outputs.items()}, history=[(now, start)])
        task.attempts.append(a)
        w.attempt = a
        self._worker_move(w, WorkerStatus.BUSY, f"{task.spec.task_id}:{start}")
        self._event(job.job_id, "attempt", task_id=task.spec.task_id, worker_id=w.worker_id,
                    to_state=start, detail=f"attempt {a.number}")
        self._issue(job, a, now)

    def _issue(self, job: JobRec, a: AttemptRec, now: float) -> None:
        task = a.task
        state = job.job.fsm(task.spec.fsm).state(a.state)
        context = dict(task.spec.params)
        context.update(task_id=task.spec.task_id, job_id=job.job_id, attempt=a.number)
        # ${after}: "KEY SHA256 SIZE" of every object the tasks this one runs after reported (and
        # the engine verified), so a consumer checks what it reads against what was accepted.
        context["after"] = [f"{v.key} {v.sha256} {v.size}" for dep in task.spec.after
                            if dep in job.tasks and job.tasks[dep].winner is not None
                            for outs in job.tasks[dep].winner.outputs.values() for v in outs.values()
                            if isinstance(v, ObjectRef)]
        for sname, outs in a.outputs.items():
            for k, v in outs.items():
                context[f"{sname}.{k}"] = v
        try:
            args = fill(state.args, context)
        except FsmError as e:
            log.error("coordinator: job %s: task %s state %s: %s", job.job_id, task.spec.task_id,
                      state.name, e)
            self._attempt_end(job, a, AttemptStatus.ERRORED, str(e), now)
            return
        w = self.workers[a.worker_id]
        a.seq = w.next_seq
        w.next_seq += 1
        self._actions.append(SendCommand(w.worker_id, a.seq, task.spec.task_id, a.number, state.name,
                                         state.operation, args, state.timeout_s))

    def _stop_worker(self, worker_id: str, reason: str) -> None:
        w = self.workers[worker_id]
        if w.status in WORKER_LIVE:
            w.attempt = None
            self._worker_move(w, WorkerStatus.STOPPING)
            self._actions.append(StopWorker(worker_id, reason))

    def _attempt_end(self, job: JobRec, a: AttemptRec, status: AttemptStatus, error: str, now: float) -> None:
        """Close an attempt, free (or stop) its worker, and move its task on."""
        task = a.task
        self._move(a, status)
        w = self.workers.get(a.worker_id)
        if w is not None and w.attempt is a:
            w.attempt = None
            if w.status == WorkerStatus.BUSY:
                self._worker_move(w, WorkerStatus.IDLE)
        if status == AttemptStatus.SUCCEEDED:
            if task.status == TaskStatus.RUNNING:
                self._task_won(job, task, a, now)
            return
        if status == AttemptStatus.ERRORED:
            task.errors += 1
            task.last_error = error
        elif status in (AttemptStatus.LOST, AttemptStatus.REDIRECTED):
            task.lost += 1
            task.last_error = error
        if task.status != TaskStatus.RUNNING or task.running():
            task.resume = None
            return
        if task.errors >= job.max_attempts or task.lost >= job.max_lost:
            task.resume = None
            self._task_move(job, task, TaskStatus.FAILED, task.last_error)
            self._end_job(job, JobStatus.FAILED, f"task {task.spec.task_id} failed after "
                                                 f"{len(task.attempts)} attempt(s): {task.last_error}", now)
        else:
            self._task_move(job, task, TaskStatus.READY, f"re-issue after: {error}")

    def _task_won(self, job: JobRec, task: TaskRec, a: AttemptRec, now: float) -> None:
        """Attempt ``a`` is the first to succeed: the task is done, its other attempts are
        superseded, its mailbox released, and a dynamic job plans from it."""
        task.winner = a
        self._task_move(job, task, TaskStatus.DONE, f"attempt {a.number} on {a.worker_id}")
        if self.done_log is not None:
            self.done_log.append((job.job_id, task.spec.task_id, a.outputs))
        task.wants_duplicate = False
        for other in task.running():
            self._move(other, AttemptStatus.SUPERSEDED)
            if task.spec.pair:
                # a pair's peer is a unit away from done: let it finish and go idle
                # rather than stop a worker that is fine (stopped if it does not)
                job.draining[other.worker_id] = now + PAIR_DRAIN_S
            else:
                self._stop_worker(other.worker_id, f"task {task.spec.task_id} done by another attempt")
        if self._receives(job, task.spec.fsm):
            self._actions.append(ReleaseMailbox(job.job_id, task.spec.task_id))
        if job.planner is not None:
            self._plan(job, task, now)

    @staticmethod
    def _receives(job: JobRec, fsm_name: str) -> bool:
        """Whether tasks of this FSM have a mailbox at the rendezvous to release once done (only
        ``receive-state`` reads one; a pipeline's tasks never do, and a release is an RPC)."""
        known = job.receives.get(fsm_name)
        if known is None:
            known = job.receives[fsm_name] = any(
                st.operation in RECEIVING_OPERATIONS for st in job.job.fsm(fsm_name).states)
        return known

    def _finish(self, job: JobRec, now: float) -> None:
        """Every task is done: verify the result objects once more before calling it success."""
        if job.planner is not None:
            result_ids = tuple(job.planner.result_tasks())
        else:
            result_ids = job.job.result_tasks or tuple(
                t for t in job.tasks if not any(t in o.spec.after for o in job.tasks.values()))
        objects: dict[str, dict[str, ObjectRef]] = {}
        for tid in result_ids:
            task = job.tasks[tid]
            refs = {f"{s}.{k}": v for s, outs in task.winner.outputs.items() for k, v in outs.items()
                    if isinstance(v, ObjectRef)}
            for name, ref in refs.items():
                why = job.storage.verify(ref)
                if why is not None:
                    self._end_job(job, JobStatus.FAILED, f"task {tid}: result {name} did not verify: {why}", now)
                    return
            objects[tid] = refs
        job.objects = objects
        self._end_job(job, JobStatus.SUCCEEDED, "", now)

    def _end_job(self, job: JobRec, status: JobStatus, error: str, now: float) -> None:
        self._move(job, status)
        job.error, job.ended = error, now
        for task in list(job.live.values()):
            for a in task.running():
                self._move(a, AttemptStatus.SUPERSEDED)
            if task.status not in TASK_ENDED:
                self._task_move(job, task, TaskStatus.CANCELLED, f"job {status}")
        for wid in job.worker_ids:
            self._stop_worker(wid, f"job {status}")
        if error:
            (log.info if status == JobStatus.CANCELLED else log.error)("coordinator: job %s %s: %s",
                                                              job.job_id, status, error,
                                                              extra={"job": job.job_id})
        else:
            log.info("coordinator: job %s %s", job.job_id, status, extra={"job": job.job_id})
        self._event(job.job_id, "job", from_state=JobStatus.RUNNING, to_state=status, detail=error)
        self._actions.append(JobEnded(job.job_id, status, job.objects, error))

    # -- recovery (coordinator.recovery) -------------------------------------------------------

    def restore_done(self, job_id: str, task_id: str, outputs: dict[str, dict[str, Any]]) -> bool:
        """Task ``task_id`` was done before a restart with ``outputs`` (verified again against
        storage by the caller): it is done again as if an attempt had just won, through the
        task table's own edges, and a dynamic job's planner plans from it. False when the job
        has no such task waiting (a task the replay has not planned)."""
        job = self.jobs[job_id]
        task = job.tasks.get(task_id)
        if task is None or task.status != TaskStatus.WAITING:
            return False
        now = self.clock()
        self._task_move(job, task, TaskStatus.READY, "recovered")
        self._task_move(job, task, TaskStatus.RUNNING, "recovered")
        a = AttemptRec(task, len(task.attempts) + 1, "", DONE, now,
                       outputs={k: dict(v) for k, v in outputs.items()}, history=[(now, DONE)])
        task.attempts.append(a)
        self._move(a, AttemptStatus.SUCCEEDED)
        task.winner = a
        self._task_move(job, task, TaskStatus.DONE, "verified before the coordinator restarted")
        if job.planner is not None:
            self._plan(job, task, now)
        return True

    def add_ended(self, job_id: str, job: Job, storage: Storage, status: str, error: str,
                  objects: dict[str, dict[str, ObjectRef]]) -> JobRec:
        """A job that ended before a restart, kept so that it can be listed and its results
        fetched; it has no tasks and never runs."""
        rec = JobRec(job_id, job, storage, 1, 0, 1, 1, self.clock(), status=JobStatus(status), objects=objects,
                     error=error, launcher=False)
        rec.ended = rec.created
        self.jobs[job_id] = rec
        return rec

    # -- reports --------------------------------------------------------------------------------

    def timeline(self, job_id: str) -> dict:
        """Every worker's timestamped history for the job (seconds from the job's start)."""
        job = self.jobs[job_id]
        t0 = job.created
        workers = []
        for wid in job.worker_ids:
            w = self.workers[wid]
            workers.append({"worker": wid, "name": w.name,
                            "history": [[round(t - t0, 6), label] for t, label in w.history]})
        tasks = {}
        for tid, task in job.tasks.items():
            tasks[tid] = [{"attempt": a.number, "worker": a.worker_id, "status": a.status,
                           "history": [[round(t - t0, 6), s] for t, s in a.history],
                           **({"pair": True} if task.spec.pair else {}), **_steal_note(a)}
                          for a in task.attempts]
        end = (job.ended or self.clock()) - t0
        return {"job": job_id, "name": job.job.name, "status": job.status, "duration": round(end, 6),
                "workers": workers, "tasks": tasks}


def _steal_note(a: AttemptRec) -> dict:
    """What a work-stealing attempt said it did (its ``steal`` output), for the timeline."""
    said = [o["steal"] for o in a.outputs.values() if "steal" in o]
    return {"steal": said[-1]} if said else {}
