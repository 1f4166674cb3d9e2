"""Dynamic jobs: the engine adds the tasks a planner derives from each finished task."""

from coordinator import engine as eng
from coordinator.engine import Engine, PlanError, Result
from coordinator.fsm import DONE, FSM, Job, State, Task
from storage import LocalStorage

FSM_D = FSM("d", "run", (State("run", "echo", {"text": "${x}"}, {"ok": DONE}, timeout_s=10),))


class Clock:
    t = 0.0

    def __call__(self):
        return self.t


class ChainPlanner:
    """Each task t<i> done adds t<i+1> until ``n`` tasks ran; optionally fails at ``fail_at``;
    orders ready tasks by descending id to show the engine follows the planner's order."""

    def __init__(self, n, fail_at=None, stall=False):
        self.n, self.fail_at, self.stall = n, fail_at, stall
        self.seen = []

    def on_done(self, task_id, outputs):
        self.seen.append((task_id, outputs))
        i = int(task_id[1:])
        if i == self.fail_at:
            raise PlanError(f"cannot go on after {task_id}")
        if self.stall or i + 1 >= self.n:
            return []
        return [Task(f"t{i + 1}", "d", {"x": str(i + 1)})]

    def complete(self):
        return len(self.seen) >= self.n

    def result_tasks(self):
        return (f"t{self.n - 1}",)

    def order(self, ready, now):
        return sorted(ready, key=lambda t: t.spec.task_id, reverse=True)


def run(tmp_path, planner, first=("t0",)):
    clock = Clock()
    e = Engine(clock)
    storage = LocalStorage(tmp_path).scoped("jobs/j")
    job = Job("j", (FSM_D,), tuple(Task(t, "d", {"x": t}) for t in first))
    e.add_job("j", job, storage, workers=1, launcher=False, planner=planner)
    w = e.observe_connect("j", "n")
    order, end = [], None
    for _ in range(50):
        clock.t += 1
        for a in e.step():
            if isinstance(a, eng.SendCommand):
                order.append(a.task_id)
                e.observe_result(w, Result(a.seq, a.task_id, True, outputs={"text": a.args["text"]}))
            elif isinstance(a, eng.JobEnded):
                end = a
        if end:
            return e, order, end
    raise AssertionError("job did not end")


def test_tasks_added_as_others_finish(tmp_path):
    p = ChainPlanner(4)
    e, order, end = run(tmp_path, p)
    assert end.status == "succeeded" and order == ["t0", "t1", "t2", "t3"]
    assert p.seen[1] == ("t1", {"run": {"text": "1"}})
    assert len(e.jobs["j"].tasks) == 4 and e.jobs["j"].unfinished() == 0


def test_planner_orders_ready_tasks(tmp_path):
    p = ChainPlanner(3, stall=True)
    p.complete = lambda: len(p.seen) == 3
    _, order, end = run(tmp_path, p, first=("t0", "t1", "t2"))
    assert order == ["t2", "t1", "t0"] and end.status == "succeeded"


def test_plan_error_fails_the_job(tmp_path):
    _, _, end = run(tmp_path, ChainPlanner(5, fail_at=1))
    assert end.status == "failed" and "planning after task t1: cannot go on after t1" in end.error


def test_a_stalled_planner_fails_rather_than_hangs(tmp_path):
    _, _, end = run(tmp_path, ChainPlanner(5, stall=True))
    assert end.status == "failed" and "not complete" in end.error


def test_a_bad_new_task_fails_the_job(tmp_path):
    p = ChainPlanner(3)
    p.on_done = lambda tid, out: [Task("t0", "d", {"x": "again"})]
    _, _, end = run(tmp_path, p)
    assert end.status == "failed" and "taken" in end.error


class HoldingPlanner:
    """Three independent tasks; ``release`` says which of the ready ones may start now; idle
    workers exit after ``idle_exit_s`` (the streaming scheduler's policy)."""

    idle_exit_s = 1.0

    def __init__(self):
        self.release, self.done = set(), set()

    def on_done(self, task_id, outputs):
        self.done.add(task_id)
        return []

    def complete(self):
        return len(self.done) == 3

    def result_tasks(self):
        return ("a", "b", "c")

    def order(self, ready, now):
        return [t for t in ready if t.spec.task_id in self.release]


def test_idle_workers_exit_while_work_is_held_back_and_come_back_for_it(tmp_path):
    clock = Clock()
    e = Engine(clock)
    planner = HoldingPlanner()
    job = Job("j", (FSM_D,), tuple(Task(t, "d", {"x": t}) for t in "abc"))
    e.add_job("j", job, LocalStorage(tmp_path).scoped("jobs/j"), workers=3, spare=0, planner=planner)
    launches = [a.count for a in e.step() if isinstance(a, eng.Launch)]
    assert launches == []                       # nothing released: no worker launched at all
    planner.release = {"a"}
    assert [a.count for a in e.step() if isinstance(a, eng.Launch)] == [1]   # one, for a's work
    ws = [e.observe_connect("j", f"n{i}") for i in range(1)]
    cmds = [a for a in e.step() if isinstance(a, eng.SendCommand)]
    assert [c.task_id for c in cmds] == ["a"]
    e.observe_result(ws[0], Result(cmds[0].seq, "a", True, outputs={"text": "a"}))
    e.step()
    clock.t += 0.5
    assert not [a for a in e.step() if isinstance(a, eng.StopWorker)]      # idle 0.5 s: stays
    clock.t += 0.6
    actions = e.step()
    assert [a.worker_id for a in actions if isinstance(a, eng.StopWorker)] == ws   # idle 1.1 s: exits
    assert any(isinstance(a, eng.Event) and a.kind == "retire" for a in actions)
    assert e.jobs["j"].launches == 0            # a retirement gives its launch back to the budget
    planner.release = {"b", "c"}
    assert [a.count for a in e.step() if isinstance(a, eng.Launch)] == [2]   # two, for b and c
