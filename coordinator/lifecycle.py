"""The engine's four lifecycles: the statuses of jobs, tasks, task attempts and worker
connections, and the transitions each allows (docs/design/engine.md).

Each status is a ``StrEnum``: its value is the same string the wire (``JobEvent``), the journal
(``coordinator.journal``), timeline JSON and logs have always carried, and it compares equal to
that string. Each table is a literal, after Ray's autoscaler: status -> {next status: why the edge
exists}. ``coordinator.engine`` checks every change against its table (``LifecycleError``
otherwise) and counts it; the docs render these tables (docs/hooks.py).
"""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class TaskStatus(StrEnum):
    WAITING = "waiting"
    READY = "ready"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class AttemptStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    ERRORED = "errored"
    LOST = "lost"
    REDIRECTED = "redirected"
    SUPERSEDED = "superseded"


class WorkerStatus(StrEnum):
    IDLE = "idle"
    BUSY = "busy"
    STOPPING = "stopping"
    GONE = "gone"


J, T, A, W = JobStatus, TaskStatus, AttemptStatus, WorkerStatus

TASK_TRANSITIONS: dict[TaskStatus, dict[TaskStatus, str]] = {
    T.WAITING: {T.READY: "every task it runs after is done",
                T.CANCELLED: "the job ended before it could start"},
    T.READY: {T.RUNNING: "an idle worker took it (late binding)",
              T.CANCELLED: "the job ended before a worker took it"},
    T.RUNNING: {T.DONE: "an attempt reached done with every object verified; first valid wins",
                T.READY: "every attempt failed or was lost and attempts remain: re-issue",
                T.FAILED: "the FSM reached failed, or no attempts remain",
                T.CANCELLED: "the job ended (cancelled, or another task failed)"},
    T.DONE: {}, T.FAILED: {}, T.CANCELLED: {},
}

ATTEMPT_TRANSITIONS: dict[AttemptStatus, dict[AttemptStatus, str]] = {
    A.RUNNING: {A.SUCCEEDED: "its FSM reached done and its objects verified",
                A.ERRORED: "an operation failed, a result did not verify, or the table had no edge",
                A.LOST: "its worker went away, or it ran past four timeouts and was abandoned",
                A.REDIRECTED: "a timeout or lost edge of its FSM moved the task to another state; "
                              "a new attempt starts there",
                A.SUPERSEDED: "another attempt of the task won, or the job ended"},
    A.SUCCEEDED: {}, A.ERRORED: {}, A.LOST: {}, A.REDIRECTED: {}, A.SUPERSEDED: {},
}

WORKER_TRANSITIONS: dict[WorkerStatus, dict[WorkerStatus, str]] = {
    W.IDLE: {W.BUSY: "given a task attempt",
             W.STOPPING: "the job ended, or it is not needed",
             W.GONE: "its stream ended while idle"},
    W.BUSY: {W.IDLE: "its attempt ended and it can take another task",
             W.STOPPING: "its attempt was superseded or abandoned, or the job ended",
             W.GONE: "its stream ended mid-task (killed, crashed, network)"},
    W.STOPPING: {W.GONE: "its stream ended after the shutdown"},
    W.GONE: {},
}

JOB_TRANSITIONS: dict[JobStatus, dict[JobStatus, str]] = {
    J.RUNNING: {J.SUCCEEDED: "every task done and every result object verified",
                J.FAILED: "a task failed, or a result did not verify",
                J.CANCELLED: "cancelled by a client"},
    J.SUCCEEDED: {}, J.FAILED: {}, J.CANCELLED: {},
}

#: Table name (as ``Engine.seen`` and the docs name it) -> its table; each starts at its first key.
TABLES: dict[str, dict] = {"task": TASK_TRANSITIONS, "attempt": ATTEMPT_TRANSITIONS,
                           "worker": WORKER_TRANSITIONS, "job": JOB_TRANSITIONS}

#: A task's statuses once nothing more will happen to it.
TASK_ENDED = frozenset(s for s, edges in TASK_TRANSITIONS.items() if not edges)
#: A worker's statuses while it can be given work or told to stop.
WORKER_LIVE = frozenset({W.IDLE, W.BUSY})

del J, T, A, W
