"""Worker state machines as data, and the jobs built from them.

An ``FSM`` is a set of ``State``\\ s: each names the registered operation it issues, the
arguments (templates filled per task), a transition table from outcome to next state, and a
timeout. Two terminal states are implicit: ``done`` (the task succeeded) and ``failed`` (it
cannot). The outcome of a result is ``error`` when the operation failed, otherwise the
operation's ``outcome`` output, or ``ok``.

Two outcomes are the engine's, never a worker's (a result naming one is an error): ``timeout``
(the state ran past its ``timeout_s``) and ``lost`` (the worker running it went away, or was
abandoned). A state's table may name an edge on either; the engine then stops the worker (on
``timeout``), records the transition in the attempt's history and the job's events, and carries
on from the target: ``done`` or ``failed`` end the task as a result would, any other state starts
a new attempt of the task *there*, on another worker, with the outputs of the states already run
(not their scratch). Such redirects count as lost attempts (at most ``max_lost`` per task), so a
timeout loop ends. When a state names no such edge, the documented default applies:

* no ``timeout`` edge: past ``timeout_s`` the attempt is marked straggling and a duplicate attempt
  starts from the initial state on another worker (the first valid result wins); past four
  timeouts the attempt is abandoned (its worker stopped), which counts as ``lost``;
* no ``lost`` edge: the task is re-issued from its initial state on another worker.

Templates: a string argument ``"${name}"`` is replaced by the typed value of ``name``; inside a
longer string, ``${name}`` is formatted in. Names are the task's params, ``task_id``, ``job_id``,
``attempt``, and ``<state>.<output>`` for outputs of earlier states of the same attempt.

A ``Job`` is a list of ``Task``\\ s, each run by one of the job's FSMs, optionally after other
tasks are done. ``result_tasks`` name the tasks whose object outputs are the job's result.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from foundation.errors import ExcameraError

DONE, FAILED = "done", "failed"
TERMINAL = (DONE, FAILED)
OK, ERROR = "ok", "error"
TIMEOUT, LOST = "timeout", "lost"
#: Engine-made outcomes: a table may name edges on them, a worker's result may not pick them.
RESERVED_OUTCOMES = (TIMEOUT, LOST)

_TEMPLATE = re.compile(r"\$\{([A-Za-z0-9_.:-]+)\}")
_NAME = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class FsmError(ExcameraError):
    """An FSM or job that is not well-formed, or a transition the table does not allow."""


@dataclass(frozen=True)
class State:
    name: str
    operation: str = ""
    args: Mapping[str, Any] = field(default_factory=dict)
    on: Mapping[str, str] = field(default_factory=dict)   # outcome -> next state
    timeout_s: float = 60.0


@dataclass(frozen=True)
class FSM:
    name: str
    initial: str
    states: tuple[State, ...]

    def __post_init__(self):
        object.__setattr__(self, "states", tuple(self.states))
        self.validate()

    def validate(self) -> None:
        """Well-formed: known targets, an operation per state, reserved outcomes unused, every
        state reachable from ``initial``, and ``done`` reachable from every state."""
        names = [s.name for s in self.states]
        where = f"fsm {self.name!r}"
        if not _NAME.fullmatch(self.name or ""):
            raise FsmError(f"{where}: bad name")
        if len(set(names)) != len(names):
            raise FsmError(f"{where}: duplicate state names")
        for s in self.states:
            if s.name in TERMINAL:
                raise FsmError(f"{where}: {s.name!r} is an implicit terminal state; do not declare it")
            if not _NAME.fullmatch(s.name):
                raise FsmError(f"{where}: bad state name {s.name!r}")
            if not s.operation:
                raise FsmError(f"{where}: state {s.name!r} issues no operation")
            if not any(o not in RESERVED_OUTCOMES for o in s.on):
                raise FsmError(f"{where}: state {s.name!r} has no transitions on results")
            if not 0 < s.timeout_s <= 24 * 3600:
                raise FsmError(f"{where}: state {s.name!r}: timeout_s {s.timeout_s} out of range")
            for outcome, target in s.on.items():
                if not _NAME.fullmatch(outcome or ""):
                    raise FsmError(f"{where}: state {s.name!r}: bad outcome name {outcome!r}")
                if target not in names and target not in TERMINAL:
                    raise FsmError(f"{where}: state {s.name!r}: {outcome!r} -> unknown state {target!r}")
        if self.initial not in names:
            raise FsmError(f"{where}: initial state {self.initial!r} is not declared")
        unreachable = set(names) - self.reachable()
        if unreachable:
            raise FsmError(f"{where}: unreachable state(s) {', '.join(sorted(unreachable))}")
        stuck = [n for n in names if DONE not in self.reachable(n)]
        if stuck:
            raise FsmError(f"{where}: no way to {DONE!r} from {', '.join(stuck)}")

    def state(self, name: str) -> State:
        for s in self.states:
            if s.name == name:
                return s
        raise FsmError(f"fsm {self.name!r}: no state {name!r}")

    def edges(self) -> set[tuple[str, str, str]]:
        """Every (state, outcome, next state) of the table."""
        return {(s.name, o, t) for s in self.states for o, t in s.on.items()}

    def reachable(self, start: str | None = None) -> set[str]:
        seen, todo = set(), [start or self.initial]
        while todo:
            n = todo.pop()
            if n in seen:
                continue
            seen.add(n)
            if n not in TERMINAL:
                todo.extend(self.state(n).on.values())
        return seen

    def next_state(self, state: str, outcome: str) -> str:
        """The table's target for a result's ``outcome`` in ``state``; FsmError when there is
        none, or when the outcome is one only the engine may produce (``timeout``, ``lost``)."""
        if outcome in RESERVED_OUTCOMES:
            raise FsmError(f"fsm {self.name!r}: state {state!r}: outcome {outcome!r} is the engine's; "
                           f"a result cannot pick it")
        target = self.state(state).on.get(outcome)
        if target is None:
            allowed = sorted(o for o in self.state(state).on if o not in RESERVED_OUTCOMES)
            raise FsmError(f"fsm {self.name!r}: no transition from {state!r} on outcome {outcome!r} "
                           f"(allowed: {', '.join(allowed) or 'none'})")
        return target

    def edge(self, state: str, outcome: str) -> str | None:
        """The table's target for an engine outcome (``timeout``, ``lost``) in ``state``, or None
        when the state names no such edge (the engine's default policy applies)."""
        if outcome not in RESERVED_OUTCOMES:
            raise FsmError(f"fsm {self.name!r}: {outcome!r} is not an engine outcome")
        return self.state(state).on.get(outcome)


@dataclass(frozen=True)
class Task:
    task_id: str
    fsm: str
    params: Mapping[str, Any] = field(default_factory=dict)
    after: tuple[str, ...] = ()
    # Start two attempts at once that split the work between them (work stealing: the
    # operation looks at its attempt number); the first to finish wins, as with a duplicate.
    pair: bool = False


@dataclass(frozen=True)
class Job:
    name: str
    fsms: tuple[FSM, ...]
    tasks: tuple[Task, ...]
    result_tasks: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "fsms", tuple(self.fsms))
        object.__setattr__(self, "tasks", tuple(self.tasks))
        object.__setattr__(self, "result_tasks", tuple(self.result_tasks))
        self.validate()

    def fsm(self, name: str) -> FSM:
        for f in self.fsms:
            if f.name == name:
                return f
        raise FsmError(f"job {self.name!r}: no fsm {name!r}")

    def check_task(self, t: Task, known) -> None:
        """One task well-formed against this job: its id, its FSM, its dependencies (ids in
        ``known``) and the params its FSM's templates use. A dynamic job's planner adds tasks
        while it runs; each is checked here first."""
        where = f"job {self.name!r}"
        if not _NAME.fullmatch(t.task_id):
            raise FsmError(f"{where}: bad task id {t.task_id!r}")
        fsm = self.fsm(t.fsm)
        for dep in t.after:
            if dep not in known or dep == t.task_id:
                raise FsmError(f"{where}: task {t.task_id}: bad dependency {dep!r}")
        names = set(t.params) | {"task_id", "job_id", "attempt", "after"}  # after: the engine's
        for s in fsm.states:
            for ref in template_names(s.args):
                if "." not in ref and ref not in names:
                    raise FsmError(f"{where}: task {t.task_id}: state {s.name!r} uses ${{{ref}}}, "
                                   f"which is not a param ({', '.join(sorted(t.params)) or 'none'})")

    def validate(self) -> None:
        where = f"job {self.name!r}"
        if not self.tasks:
            raise FsmError(f"{where}: no tasks")
        ids = [t.task_id for t in self.tasks]
        if len(set(ids)) != len(ids):
            raise FsmError(f"{where}: duplicate task ids")
        if len({f.name for f in self.fsms}) != len(self.fsms):
            raise FsmError(f"{where}: duplicate fsm names")
        known = set(ids)
        for t in self.tasks:
            self.check_task(t, known)
        for r in self.result_tasks:
            if r not in known:
                raise FsmError(f"{where}: result task {r!r} is not a task")
        # No dependency cycles (they would never start).
        order, seen = [], {}
        deps = {t.task_id: t.after for t in self.tasks}

        def visit(n: str, path: tuple[str, ...]) -> None:
            if seen.get(n) == 2:
                return
            if seen.get(n) == 1:
                raise FsmError(f"{where}: dependency cycle through {' -> '.join(path + (n,))}")
            seen[n] = 1
            for d in deps[n]:
                visit(d, path + (n,))
            seen[n] = 2
            order.append(n)

        for n in ids:
            visit(n, ())


def template_names(args: Mapping[str, Any]) -> set[str]:
    out = set()
    for v in args.values():
        for s in (v if isinstance(v, list) else [v]):
            if isinstance(s, str):
                out.update(_TEMPLATE.findall(s))
    return out


def fill(args: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments with every ``${name}`` replaced from ``context`` (FsmError if missing)."""

    def one(s: Any) -> Any:
        if not isinstance(s, str):
            return s
        m = _TEMPLATE.fullmatch(s)
        if m:
            return lookup(m.group(1))
        return _TEMPLATE.sub(lambda m: str(lookup(m.group(1))), s)

    def lookup(name: str) -> Any:
        if name not in context:
            raise FsmError(f"template ${{{name}}}: no such value")
        return context[name]

    out = {}
    for k, v in args.items():
        if isinstance(v, list):
            filled = [one(i) for i in v]
            flat: list = []
            for i in filled:  # "${keys}" inside a list may itself be a list: splice it
                flat.extend(i if isinstance(i, list) else [i])
            out[k] = flat
        else:
            out[k] = one(v)
    return out


# -- protobuf (jobs service) ---------------------------------------------------------------------

def job_to_proto(job: Job, *, workers: int = 0, spare: int = 0, max_attempts: int = 0,
                 inputs: Mapping[str, bytes] | None = None):
    from protos import jobs_pb2, values

    spec = jobs_pb2.JobSpec(name=job.name, workers=workers, spare=spare, max_attempts=max_attempts,
                            result_tasks=list(job.result_tasks))
    for f in job.fsms:
        fp = spec.fsms.add(name=f.name, initial=f.initial)
        for s in f.states:
            sp = fp.states.add(name=s.name, operation=s.operation, timeout_s=s.timeout_s)
            values.to_map(s.args, sp.args)
            sp.transitions.update(s.on)
    for t in job.tasks:
        tp = spec.tasks.add(task_id=t.task_id, fsm=t.fsm, after=list(t.after))
        values.to_map(t.params, tp.params)
    for k, v in (inputs or {}).items():
        spec.inputs[k] = v
    return spec


def job_from_proto(spec) -> Job:
    """A Job from a ``JobSpec`` message; FsmError (a ValueError) when it is not well-formed."""
    from protos import values

    try:
        fsms = tuple(FSM(f.name, f.initial, tuple(
            State(s.name, s.operation, values.from_map(s.args), dict(s.transitions), s.timeout_s or 60.0)
            for s in f.states)) for f in spec.fsms)
        tasks = tuple(Task(t.task_id, t.fsm, values.from_map(t.params), tuple(t.after)) for t in spec.tasks)
    except ValueError as e:
        raise FsmError(str(e)) from None
    return Job(spec.name or "job", fsms, tasks, tuple(spec.result_tasks))
