"""coordinator.engine driven directly with a fake clock: lifecycles, policies, rejections.

Every scenario adds the lifecycle edges it exercised to SEEN; the last test checks that every
edge of every lifecycle table was exercised by some scenario."""

import json
from collections import Counter

from coordinator import engine as eng
from coordinator.engine import Engine, Result
from coordinator.fsm import DONE, FAILED, FSM, Job, State, Task
from coordinator.lifecycle import AttemptStatus, JobStatus, TaskStatus, WorkerStatus
from storage import LocalStorage, ObjectRef

SEEN: Counter = Counter()


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


FSM_T = FSM("t", "start", (
    State("start", "echo", {"text": "${x}"}, {"ok": "work", "skip": DONE}, timeout_s=10),
    State("work", "upload", {"key": "out/${task_id}"}, {"ok": DONE, "again": "start", "give-up": FAILED},
          timeout_s=10),
))


class Harness:
    def __init__(self, tmp_path, tasks, *, workers=2, spare=0, max_attempts=2, launcher=False, fsm=FSM_T,
                 max_lost=10):
        self.clock = Clock()
        self.e = Engine(self.clock)
        self.storage = LocalStorage(tmp_path).scoped("jobs/j")
        self.job = self.e.add_job("j", Job("j", (fsm,), tuple(tasks)), self.storage, workers=workers,
                                  spare=spare, max_attempts=max_attempts, launcher=launcher,
                                  max_lost=max_lost)
        self.outstanding = {}  # worker -> SendCommand

    def connect(self, n=1):
        return [self.e.observe_connect("j", f"name{i}") for i in range(n)]

    def step(self):
        actions = self.e.step()
        for a in actions:
            if isinstance(a, eng.SendCommand):
                self.outstanding[a.worker_id] = a
        return actions

    def answer(self, worker, ok=True, outputs=None, error=""):
        cmd = self.outstanding.pop(worker)
        self.e.observe_result(worker, Result(cmd.seq, cmd.task_id, ok, error, outputs or {}))
        return cmd

    def ok_object(self, worker):
        cmd = self.outstanding[worker]
        ref = self.storage.put(cmd.args["key"], b"data-" + cmd.task_id.encode())
        return self.answer(worker, outputs={"object": ref})

    def finish(self):
        SEEN.update(self.e.seen)


def ended(actions):
    return [a for a in actions if isinstance(a, eng.JobEnded)]


def tasks(n, **kw):
    return [Task(f"t{i}", "t", {"x": f"v{i}"}, **kw) for i in range(n)]


def test_happy_path_and_dependencies(tmp_path):
    h = Harness(tmp_path, [Task("a", "t", {"x": "1"}), Task("b", "t", {"x": "2"}, after=("a",))])
    w1, w2 = h.connect(2)
    h.step()
    assert set(h.outstanding) == {w1}  # b waits for a; late binding gave a to the first worker
    cmd = h.outstanding[w1]
    assert (cmd.operation, cmd.args, cmd.state) == ("echo", {"text": "1"}, "start")
    assert h.e.jobs["j"].tasks["b"].status == "waiting"
    h.answer(w1)
    h.step()
    assert h.outstanding[w1].args == {"key": "out/a"}
    h.ok_object(w1)
    actions = h.step()
    # "t" never reads a mailbox (no receive-state): nothing to release at the rendezvous
    assert not any(isinstance(a, eng.ReleaseMailbox) for a in actions)
    assert h.e.jobs["j"].tasks["b"].status == "running"
    w = next(iter(h.outstanding))
    h.answer(w, outputs={"outcome": "skip"})  # an operation-chosen outcome picks the edge
    actions = h.step()
    (end,) = ended(actions)
    assert end.status == "succeeded" and list(end.objects) == ["b"] and end.objects["b"] == {}
    stops = [a.worker_id for a in actions if isinstance(a, eng.StopWorker)]
    assert sorted(stops) == sorted([w1, w2])
    for w in (w1, w2):
        h.e.observe_disconnect(w)
    h.step()
    assert {h.e.workers[w].status for w in (w1, w2)} == {"gone"}
    tl = h.e.timeline("j")
    assert [s for _, s in tl["tasks"]["a"][0]["history"]] == ["start", "work", "done"]
    h.finish()


def test_lost_worker_reissued(tmp_path):
    h = Harness(tmp_path, tasks(1))
    (w1,) = h.connect(1)
    h.step()
    h.e.observe_disconnect(w1)  # kill -9 mid-task
    (w2,) = h.connect(1)
    h.step()
    cmd = h.outstanding[w2]
    assert (cmd.task_id, cmd.attempt, cmd.state) == ("t0", 2, "start")
    h.answer(w2)
    h.step()
    h.ok_object(w2)
    assert ended(h.step())[0].status == "succeeded"
    assert h.e.jobs["j"].tasks["t0"].lost == 1
    h.e.observe_disconnect(w2)  # after its shutdown
    (w3,) = h.connect(1)         # a late worker for an ended job is told to stop
    assert [a for a in h.step() if isinstance(a, eng.StopWorker)][0].worker_id == w3
    h.finish()


def test_errors_retry_then_fail_and_cancel_the_rest(tmp_path):
    h = Harness(tmp_path, tasks(4) + [Task("z", "t", {"x": "z"}, after=("t0",))], max_attempts=2)
    w1, w2 = h.connect(2)
    h.step()
    h.answer(w1, ok=False, error="boom")   # t0 attempt 1
    h.step()
    # t0 went back to ready and was re-issued (to the first idle worker)
    assert h.e.jobs["j"].tasks["t0"].status == "running"
    assert len(h.e.jobs["j"].tasks["t0"].attempts) == 2
    w_t0 = next(w for w, c in h.outstanding.items() if c.task_id == "t0")
    h.answer(w_t0, ok=False, error="boom again")
    actions = h.step()
    (end,) = ended(actions)
    assert end.status == "failed" and "task t0 failed after 2 attempt(s): boom again" in end.error
    st = {t: r.status for t, r in h.e.jobs["j"].tasks.items()}
    assert st["t0"] == "failed" and st["z"] == "cancelled" and "cancelled" in st.values()
    h.finish()


def test_unverified_and_missing_objects_are_errors(tmp_path):
    h = Harness(tmp_path, tasks(1), max_attempts=2)
    (w1,) = h.connect(1)
    h.step()
    h.answer(w1)
    h.step()
    h.answer(w1, outputs={"object": ObjectRef("out/t0", "0" * 64, 4)})  # never written
    h.step()
    h.answer(w1)
    h.step()
    h.storage.put("out/t0", b"real")
    h.answer(w1, outputs={"object": ObjectRef("out/t0", "0" * 64, 4)})  # wrong digest
    (end,) = ended(h.step())
    assert end.status == "failed" and "unverified result object" in end.error
    h.finish()


def test_fsm_failed_state_and_missing_edge(tmp_path):
    h = Harness(tmp_path, tasks(1), max_attempts=3)
    (w1,) = h.connect(1)
    h.step()
    h.answer(w1, outputs={"outcome": "bogus"})  # no edge: the attempt errors
    h.step()
    assert "no transition from 'start' on outcome 'bogus'" in h.e.jobs["j"].tasks["t0"].last_error
    h.answer(w1)
    h.step()
    h.answer(w1, outputs={"outcome": "give-up"})  # the table says failed: no more attempts
    (end,) = ended(h.step())
    assert end.status == "failed" and len(h.e.jobs["j"].tasks["t0"].attempts) == 2
    h.finish()


def test_results_for_tasks_not_given_are_rejected(tmp_path, caplog):
    h = Harness(tmp_path, tasks(1))
    w1, w2 = h.connect(2)
    h.step()
    busy, idle = (w1, w2) if w1 in h.outstanding else (w2, w1)
    cmd = h.outstanding[busy]
    h.e.observe_result(idle, Result(cmd.seq, cmd.task_id, True))          # not its task
    h.e.observe_result(busy, Result(cmd.seq + 5, cmd.task_id, True))      # wrong seq
    h.e.observe_result(busy, Result(cmd.seq, "t9", True))                 # wrong task
    h.e.observe_result("w999", Result(1, "t0", True))                     # unknown worker
    h.step()
    assert len(h.e.rejected) == 4
    assert all("result for a task not given" in r or "unknown" in r for r in h.e.rejected)
    assert "result for a task not given" in caplog.text
    assert h.e.jobs["j"].tasks["t0"].attempts[0].state == "start"  # nothing moved
    h.answer(busy)
    h.step()
    h.finish()


def test_straggler_duplicate_first_valid_wins(tmp_path):
    h = Harness(tmp_path, tasks(1), workers=1, spare=1)
    w1, w2 = h.connect(2)
    h.step()
    slow = next(iter(h.outstanding))
    other = w2 if slow == w1 else w1
    h.clock.t += 11  # past the state's 10 s timeout
    h.step()
    assert h.outstanding[other].task_id == "t0" and h.outstanding[other].attempt == 2
    h.answer(other)
    h.step()
    h.ok_object(other)
    actions = h.step()
    assert ended(actions)[0].status == "succeeded"
    assert [a.worker_id for a in actions if isinstance(a, eng.StopWorker)][0] == slow
    atts = h.e.jobs["j"].tasks["t0"].attempts
    assert [a.status for a in atts] == ["superseded", "succeeded"]
    h.answer(slow)  # its late result is ignored quietly
    h.step()
    assert not h.e.rejected
    h.finish()


def test_abandoned_after_four_timeouts(tmp_path):
    h = Harness(tmp_path, tasks(1), workers=1)
    (w1,) = h.connect(1)
    h.step()
    h.clock.t += 11
    h.step()                      # straggling, but no idle worker for a duplicate
    h.clock.t += 30
    actions = h.step()            # 41 s > 4 x 10 s: abandoned
    assert any(isinstance(a, eng.StopWorker) and a.worker_id == w1 for a in actions)
    assert h.e.jobs["j"].tasks["t0"].attempts[0].status == "lost"
    assert h.e.jobs["j"].tasks["t0"].status == "ready"
    h.e.observe_disconnect(w1)
    h.step()
    h.finish()


def test_cancel_and_idle_disconnect(tmp_path):
    h = Harness(tmp_path, tasks(1), workers=1)
    w1, w2 = h.connect(2)
    h.step()
    idle = w2 if w1 in h.outstanding else w1
    h.e.observe_disconnect(idle)
    h.e.observe_cancel("j")
    (end,) = ended(h.step())
    assert end.status == "cancelled"
    h.finish()


def test_launches_up_to_workers_plus_spare(tmp_path):
    h = Harness(tmp_path, tasks(5), workers=3, spare=2, launcher=True)
    launches = [a for a in h.step() if isinstance(a, eng.Launch)]
    assert launches == [eng.Launch("j", 5)]
    assert not [a for a in h.step() if isinstance(a, eng.Launch)]  # pending, not launched twice
    ws = h.connect(5)
    h.step()
    h.e.observe_disconnect(ws[0])
    assert [a for a in h.step() if isinstance(a, eng.Launch)] == [eng.Launch("j", 1)]
    h.finish()


def test_plain_job_retires_idle_workers_no_task_can_use(tmp_path):
    """A job without a planner (an encode's tail: the last tasks run while the others' workers
    sit idle) stops at once the idle workers beyond its unstarted tasks, and after a grace those
    only a waiting task could use; a launcher replaces one should a task come back. Without a
    launcher nothing is stopped (nothing could replace it)."""
    def job(launcher):
        last = Task("last", "t", {"x": "z"}, after=("t0", "t1", "t2", "t3"))
        h = Harness(tmp_path / str(launcher), tasks(4) + [last], workers=4, launcher=launcher)
        h.step()
        ws = h.connect(4)
        h.step()
        return h, ws

    def skip(h, w):   # the task's quick way to done
        h.answer(w, outputs={"outcome": "skip"})
        return h.step()

    h, ws = job(True)
    assert sorted(h.outstanding) == sorted(ws)
    actions = skip(h, ws[0])      # idle, and "last" still to run: kept a while
    assert not [a for a in actions if isinstance(a, eng.StopWorker)]
    h.clock.t += eng.PLAIN_IDLE_EXIT_S - 0.5
    assert not [a for a in h.step() if isinstance(a, eng.StopWorker)]
    h.clock.t += 0.5              # idle that long while only a waiting task could use it: goes
    actions = h.step()
    assert [a.worker_id for a in actions if isinstance(a, eng.StopWorker)] == [ws[0]]
    assert [e.detail for e in events(actions, "retire")] == ["idle: no task left can use it"]
    h.e.observe_disconnect(ws[0])
    assert not [a for a in skip(h, ws[1]) if isinstance(a, eng.StopWorker)]
    actions = skip(h, ws[2])      # two idle, one task left that can use one: the longer idle goes at once
    assert [a.worker_id for a in actions if isinstance(a, eng.StopWorker)] == [ws[1]]
    assert not [a for a in actions if isinstance(a, eng.Launch)]
    actions = skip(h, ws[3])      # "last" starts on one of them; the other goes
    assert next(iter(h.outstanding.values())).task_id == "last"
    (runner,) = h.outstanding
    assert [a.worker_id for a in actions if isinstance(a, eng.StopWorker)] == [({ws[2], ws[3]} - {runner}).pop()]
    for w in set(ws[1:]) - {runner}:   # the stopped workers exit
        h.e.observe_disconnect(w)
    assert not [a for a in h.step() if isinstance(a, eng.Launch)]
    h.e.observe_disconnect(runner)  # its worker is lost: the launcher replaces it
    assert [a for a in h.step() if isinstance(a, eng.Launch)] == [eng.Launch("j", 1)]
    assert h.e.jobs["j"].tasks["last"].status == "ready"
    h.finish()

    h, ws = job(False)            # two idle, one task waiting, past the grace: all kept
    actions = skip(h, ws[0]) + skip(h, ws[1])
    h.clock.t += eng.PLAIN_IDLE_EXIT_S + 1
    assert not [a for a in actions + h.step() if isinstance(a, eng.StopWorker)]
    assert sum(h.e.workers[w].status == "idle" for w in ws) == 2
    h.finish()


# -- timeout and lost edges named by the FSM (a custom FSM) ---------------------------------------

FSM_EDGES = FSM("t", "probe", (
    # probe: a quick check; if it hangs, skip to the fallback; if its worker dies, give up.
    State("probe", "echo", {"text": "${x}"}, {"ok": "work", "timeout": "fallback", "lost": FAILED},
          timeout_s=10),
    State("work", "upload", {"key": "out/${task_id}"}, {"ok": DONE, "timeout": DONE}, timeout_s=10),
    # fallback uses the probe's output when there is one (carried to the new attempt)
    State("fallback", "echo", {"text": "fallback-${x}"}, {"ok": DONE, "timeout": "fallback"}, timeout_s=10),
))


def events(actions, kind="transition"):
    return [a for a in actions if isinstance(a, eng.Event) and a.kind == kind]


def test_timeout_edge_moves_the_task_to_its_target(tmp_path):
    h = Harness(tmp_path, [Task("t0", "t", {"x": "v"})], fsm=FSM_EDGES)
    w1, w2 = h.connect(2)
    h.step()
    slow = next(iter(h.outstanding))
    other = w2 if slow == w1 else w1
    h.clock.t += 11  # past probe's 10 s: its timeout edge, not the straggler default
    actions = h.step()
    assert [a.worker_id for a in actions if isinstance(a, eng.StopWorker)] == [slow]
    (tr,) = [e for e in events(actions) if e.from_state == "probe"]
    assert (tr.to_state, tr.worker_id) == ("fallback", slow) and tr.detail.startswith("timeout: timed out")
    a1, a2 = h.e.jobs["j"].tasks["t0"].attempts
    assert a1.status == "redirected" and [s for _, s in a1.history] == ["probe", "fallback"]
    # the new attempt starts AT the target state, on the other worker: no duplicate of probe
    cmd = h.outstanding[other]
    assert (cmd.state, cmd.attempt, cmd.args) == ("fallback", 2, {"text": "fallback-v"})
    assert [e.to_state for e in events(actions, "attempt")] == ["fallback"]
    assert not events(actions, "straggler")
    h.outstanding.pop(slow)
    h.answer(other)
    (end,) = ended(h.step())
    assert end.status == "succeeded"
    tl = h.e.timeline("j")["tasks"]["t0"]
    assert [(x["status"], [s for _, s in x["history"]]) for x in tl] == [
        ("redirected", ["probe", "fallback"]), ("succeeded", ["fallback", "done"])]
    assert h.e.jobs["j"].tasks["t0"].lost == 1
    h.finish()


def test_timeout_edge_to_done_keeps_earlier_outputs(tmp_path):
    h = Harness(tmp_path, [Task("t0", "t", {"x": "v"})], fsm=FSM_EDGES, workers=1)
    (w1,) = h.connect(1)
    h.step()
    h.answer(w1, outputs={"text": "v"})
    h.step()
    assert h.outstanding[w1].state == "work"
    h.clock.t += 11
    actions = h.step()          # work's timeout edge leads to done: the task succeeds
    (end,) = ended(actions)
    assert end.status == "succeeded" and end.objects == {"t0": {}}
    (a1,) = h.e.jobs["j"].tasks["t0"].attempts
    assert a1.status == "succeeded" and a1.outputs["probe"] == {"text": "v"}
    assert [s for _, s in a1.history] == ["probe", "work", "done"]
    assert any(isinstance(a, eng.StopWorker) and a.worker_id == w1 for a in actions)
    h.finish()


def test_lost_edge_to_failed_fails_at_once(tmp_path):
    h = Harness(tmp_path, [Task("t0", "t", {"x": "v"})], fsm=FSM_EDGES, max_attempts=5)
    w1, _ = h.connect(2)
    h.step()
    busy = next(iter(h.outstanding))
    h.e.observe_disconnect(busy)
    actions = h.step()
    (end,) = ended(actions)
    assert end.status == "failed" and "the lost edge of 'probe' leads to failed" in end.error
    assert len(h.e.jobs["j"].tasks["t0"].attempts) == 1  # no re-issue: the table said failed
    (tr,) = events(actions)
    assert (tr.from_state, tr.to_state) == ("probe", FAILED) and tr.detail.startswith("lost:")
    h.finish()


def test_timeout_edge_loop_is_bounded(tmp_path):
    h = Harness(tmp_path, [Task("t0", "t", {"x": "v"})], fsm=FSM_EDGES, workers=1, max_lost=3)
    h.connect(1)
    h.step()
    for _ in range(3):  # probe times out, then fallback -> fallback on every timeout
        h.clock.t += 11
        h.outstanding.clear()
        actions = h.step()
        if ended(actions):
            break
        h.connect(1)   # the launcher's replacement for the stopped worker
        h.step()
    (end,) = ended(actions)
    assert end.status == "failed" and "resuming at 'fallback'" in end.error
    assert [a.status for a in h.e.jobs["j"].tasks["t0"].attempts] == ["redirected"] * 3
    h.finish()


def test_a_result_cannot_pick_an_engine_outcome(tmp_path):
    h = Harness(tmp_path, [Task("t0", "t", {"x": "v"})], fsm=FSM_EDGES, workers=1, max_attempts=1)
    (w1,) = h.connect(1)
    h.step()
    h.answer(w1, outputs={"outcome": "timeout"})
    (end,) = ended(h.step())
    assert end.status == "failed" and "outcome 'timeout' is the engine's" in end.error
    h.finish()


def test_no_edges_keeps_the_default_policy(tmp_path):
    """A lost worker in a state without a lost edge: re-issued from the initial state."""
    h = Harness(tmp_path, [Task("t0", "t", {"x": "v"})], fsm=FSM_EDGES, workers=1)
    (w1,) = h.connect(1)
    h.step()
    h.answer(w1)
    h.step()                       # now in "work", which names no lost edge
    h.e.observe_disconnect(w1)
    (w2,) = h.connect(1)
    h.step()
    assert (h.outstanding[w2].state, h.outstanding[w2].attempt) == ("probe", 2)
    assert h.e.jobs["j"].tasks["t0"].attempts[0].status == "lost"
    h.finish()


def test_statuses_are_enums_with_the_wire_strings(tmp_path):
    """The records hold enum members; what leaves the engine (actions, events, timeline JSON)
    carries the same plain strings as before the enums."""
    h = Harness(tmp_path, [Task("a", "t", {"x": "1"})])
    (w,) = h.connect(1)
    h.step()
    job = h.e.jobs["j"]
    assert job.status is JobStatus.RUNNING and job.tasks["a"].status is TaskStatus.RUNNING
    assert job.tasks["a"].attempts[0].status is AttemptStatus.RUNNING
    assert h.e.workers[w].status is WorkerStatus.BUSY
    h.answer(w, outputs={"outcome": "skip"})
    actions = h.step()
    (end,) = ended(actions)
    assert end.status is JobStatus.SUCCEEDED
    moves = [(a.from_state, a.to_state) for a in actions if isinstance(a, eng.Event) and a.kind == "task"]
    assert moves == [("running", "done")]
    doc = json.loads(json.dumps(h.e.timeline("j")))
    assert doc["status"] == "succeeded" and doc["tasks"]["a"][0]["status"] == "succeeded"
    assert [label for _, label in doc["workers"][0]["history"]] == ["idle", "a:start", "idle", "stopping"]
    assert f"{end.status}" == str(end.status) == "succeeded"
    h.finish()


def test_every_lifecycle_edge_is_exercised():
    missing = [(table, a, b) for table, t in eng.TABLES.items() for a, outs in t.items()
               for b in outs if SEEN[(table, a, b)] == 0]
    assert not missing, f"edges never exercised by the scenarios above: {missing}"
    extra = [k for k in SEEN if k[2] not in eng.TABLES[k[0]].get(k[1], {})]
    assert not extra


def test_lifecycle_tables_have_no_unreachable_status():
    for name, table in eng.TABLES.items():
        start = next(iter(table))
        seen, todo = set(), [start]
        while todo:
            s = todo.pop()
            if s not in seen:
                seen.add(s)
                todo.extend(table[s])
        assert seen == set(table), f"{name}: unreachable {set(table) - seen}"


def test_lifecycle_tables_are_keyed_by_one_enum_each():
    """Each table's statuses, sources and targets alike, are exactly the members of its enum,
    and every edge says why it exists."""
    enums = {"task": TaskStatus, "attempt": AttemptStatus, "worker": WorkerStatus, "job": JobStatus}
    assert set(eng.TABLES) == set(enums)
    for name, table in eng.TABLES.items():
        members = set(enums[name])
        assert set(table) == members, name
        for src, edges in table.items():
            assert type(src) is enums[name] and all(type(dst) is enums[name] for dst in edges), (name, src)
            assert all(why.strip() for why in edges.values()), (name, src)
