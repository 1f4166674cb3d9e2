"""Speculative execution by relative slowness (coordinator.engine.Speculation), with a fake clock."""

from coordinator import engine as eng
from coordinator.engine import Engine, Result, Speculation
from coordinator.fsm import DONE, FSM, Job, State, Task
from storage import LocalStorage

FSM_S = FSM("s", "work", (
    State("work", "echo", {"text": "${x}"}, {"ok": "wait"}, timeout_s=100),
    State("wait", "receive-state", {"sender": "${x}", "tag": "t", "into": "k"}, {"ok": DONE}, timeout_s=100),
))


class Clock:
    t = 0.0

    def __call__(self):
        return self.t


def setup(tmp_path, n, workers, speculation=None):
    clock = Clock()
    e = Engine(clock, speculation)
    job = Job("j", (FSM_S,), tuple(Task(f"t{i}", "s", {"x": str(i)}) for i in range(n)))
    e.add_job("j", job, LocalStorage(tmp_path).scoped("jobs/j"), workers=workers, launcher=False)
    ws = [e.observe_connect("j", f"n{i}") for i in range(workers)]
    return clock, e, ws


def drive(e, clock, dt, _=None):
    """Advance the clock by ``dt`` and step: the commands sent."""
    clock.t += dt
    return [a for a in e.step() if isinstance(a, eng.SendCommand)]


def test_a_slow_attempt_gets_a_duplicate_and_the_first_result_wins(tmp_path):
    clock, e, ws = setup(tmp_path, 5, 5)
    cmds = drive(e, clock, 0, None)
    assert len(cmds) == 5
    slow = next(c for c in cmds if c.task_id == "t4")
    clock.t += 1.0  # four finish "work" in 1 s; t4's worker is frozen
    for c in cmds:
        if c is not slow:
            e.observe_result(c.worker_id, Result(c.seq, c.task_id, True, outputs={"text": "x"}))
    waits = {c.task_id: c for c in drive(e, clock, 0, None)}
    assert set(waits) == {"t0", "t1", "t2", "t3"} and all(c.state == "wait" for c in waits.values())
    for c in waits.values():  # they finish, so their workers are idle again
        e.observe_result(c.worker_id, Result(c.seq, c.task_id, True))
    drive(e, clock, 0, None)
    # 1.9 s in: under 2x the 1 s median, no duplicate yet.
    assert not [c for c in drive(e, clock, 0.9, None)]
    actions = e.step()
    clock.t += 0.2   # 2.1 s: past 2x the median
    actions = e.step()
    dup = [a for a in actions if isinstance(a, eng.SendCommand)]
    assert [(d.task_id, d.state, d.attempt) for d in dup] == [("t4", "work", 2)]
    assert any(isinstance(a, eng.Event) and a.kind == "speculate" and a.task_id == "t4" for a in actions)
    # The duplicate finishes first; the frozen original is stopped.
    e.observe_result(dup[0].worker_id, Result(dup[0].seq, "t4", True, outputs={"text": "x"}))
    nxt = [a for a in e.step() if isinstance(a, eng.SendCommand)]
    e.observe_result(nxt[0].worker_id, Result(nxt[0].seq, "t4", True))
    actions = e.step()
    assert any(isinstance(a, eng.StopWorker) and a.worker_id == slow.worker_id for a in actions)
    # its FSM reads a mailbox (receive-state): released at the rendezvous once the task is done
    assert any(isinstance(a, eng.ReleaseMailbox) and a.task_id == "t4" for a in actions)
    assert any(isinstance(a, eng.JobEnded) and a.status == "succeeded" for a in actions)
    attempts = e.timeline("j")["tasks"]["t4"]
    assert [a["status"] for a in attempts] == ["superseded", "succeeded"]


def straggle(tmp_path, n, slow_state="work", speculation=None):
    """``n`` tasks on ``n + 1`` workers (one spare, idle): all but the last finish ``slow_state``
    (and everything before it) in 1 s each, the last sits in ``slow_state`` for 50 s (half its
    timeout, so only speculation can act); the commands the engine sent for the last task meanwhile,
    and the states it said it speculated on."""
    clock, e, ws = setup(tmp_path, n, n + 1, speculation)
    slow_id = f"t{n - 1}"
    cmds = drive(e, clock, 0)
    assert sorted(c.task_id for c in cmds) == [f"t{i}" for i in range(n)]
    while True:                     # everyone through the states before ``slow_state``, 1 s each
        clock.t += 1.0
        if all(c.state == slow_state for c in cmds):
            break
        for c in cmds:
            if c.state != slow_state:
                e.observe_result(c.worker_id, Result(c.seq, c.task_id, True, outputs={"text": "x"}))
        cmds = [c for c in cmds if c.state == slow_state] + drive(e, clock, 0)
    slow = next(c for c in cmds if c.task_id == slow_id)
    for c in cmds:                  # the others finish ``slow_state`` (the peers' sample)
        if c is not slow:
            e.observe_result(c.worker_id, Result(c.seq, c.task_id, True, outputs={"text": "x"}))
    for c in drive(e, clock, 0):    # and whatever follows it
        if c.task_id != slow_id:
            e.observe_result(c.worker_id, Result(c.seq, c.task_id, True))
    sent, spoke = [], []
    for _ in range(50):
        clock.t += 1.0
        actions = e.step()
        sent += [a for a in actions if isinstance(a, eng.SendCommand) and a.task_id == slow_id]
        spoke += [a.from_state for a in actions if isinstance(a, eng.Event) and a.kind == "speculate"]
    return sent, spoke


def test_too_few_finished_peers_are_never_speculated(tmp_path):
    """Speculation.min_sample (3): two peers finished in 1 s leave a 50 s attempt alone; three
    peers give it a duplicate (the same drive, so the first half could have failed)."""
    assert Speculation().min_sample == 3
    sent, spoke = straggle(tmp_path / "two", 3)
    assert sent == [] and spoke == []
    sent, spoke = straggle(tmp_path / "three", 4)
    assert [(c.task_id, c.state, c.attempt) for c in sent] == [("t3", "work", 2)] and spoke == ["work"]


def test_waiting_states_are_never_speculated(tmp_path):
    """A receive-state (Speculation.waits) waits on other tasks: 50 s in it against three peers'
    1 s gets no duplicate; the same with the exemption lifted gets one."""
    sent, spoke = straggle(tmp_path / "exempt", 4, slow_state="wait")
    assert sent == [] and spoke == []
    sent, spoke = straggle(tmp_path / "not", 4, slow_state="wait", speculation=Speculation(waits=frozenset()))
    # (the duplicate starts the task over, from its first state)
    assert [(c.task_id, c.state, c.attempt) for c in sent] == [("t3", "work", 2)] and spoke == ["wait"]


def test_speculation_can_be_turned_off(tmp_path):
    clock, e, ws = setup(tmp_path, 5, 6, Speculation(factor=0))
    cmds = drive(e, clock, 0, None)
    clock.t += 1.0
    for c in cmds[:4]:
        e.observe_result(c.worker_id, Result(c.seq, c.task_id, True, outputs={"text": "x"}))
    e.step()
    clock.t += 10
    assert not [a for a in e.step() if isinstance(a, eng.SendCommand) and a.state == "work"]


def test_a_duplicate_with_no_idle_worker_launches_one(tmp_path):
    """Every worker busy (the others wait on the slow task's state): the duplicate must not wait
    for one of them, so the engine launches a worker for it."""
    clock = Clock()
    e = Engine(clock)
    job = Job("j", (FSM_S,), tuple(Task(f"t{i}", "s", {"x": str(i)}) for i in range(4)))
    e.add_job("j", job, LocalStorage(tmp_path).scoped("jobs/j"), workers=4, launcher=True)
    assert [a.count for a in e.step() if isinstance(a, eng.Launch)] == [4]
    for i in range(4):
        e.observe_connect("j", f"n{i}")
    cmds = drive(e, clock, 0)
    slow = next(c for c in cmds if c.task_id == "t3")
    clock.t += 1.0
    for c in cmds:
        if c is not slow:
            e.observe_result(c.worker_id, Result(c.seq, c.task_id, True, outputs={"text": "x"}))
    waits = drive(e, clock, 0)      # three now wait; t3 still works; no worker is idle
    assert sorted(c.state for c in waits) == ["wait"] * 3
    clock.t += 2.5                  # past 2x the 1 s median
    actions = e.step()
    assert any(isinstance(a, eng.Event) and a.kind == "speculate" for a in actions)
    assert [a.count for a in actions if isinstance(a, eng.Launch)] == [1]
    assert not [a for a in e.step() if isinstance(a, eng.Launch)]   # once, not every step
    e.observe_connect("j", "n4")
    dup = [a for a in e.step() if isinstance(a, eng.SendCommand)]
    assert [(d.task_id, d.state, d.attempt) for d in dup] == [("t3", "work", 2)]
