"""Work stealing (pipeline.steal, issue 12): a pair of attempts splits a task's pictures from
opposite ends; a slow peer's half is done by the fast one; the output is the same bytes as one
attempt alone, and the engine starts both at once and lets the loser finish without a stop."""

from __future__ import annotations

import threading
import time

import pytest
from common import CLIPS_DIR

from coordinator import engine as eng
from coordinator.engine import Engine, Result
from coordinator.fsm import DONE, FSM, Job, State, Task
from storage import LocalStorage
from pipeline.media_io import cut_input
from pipeline.spec import SpecError, validate
from pipeline.stage import StageContext, get_stage
from pipeline.stages.video import decode_chunk, grayscale_batch
from pipeline.steal import UNITS, run_pair, unit_bounds, walk

FOREMAN = CLIPS_DIR / "foreman_qcif_176x144_10f.y4m"
BIKES = CLIPS_DIR / "compressed" / "bikes_640x272_100f.mp4"


@pytest.fixture(scope="module")
def chunk():
    return next(iter(cut_input(str(BIKES), 25)))         # 30 frames, remuxed H.264


@pytest.fixture(scope="module")
def frames(chunk):
    return decode_chunk(chunk)


class SlowStorage(LocalStorage):
    """A storage whose writes take ``delay`` seconds: the injected straggler."""

    def __init__(self, root, delay):
        super().__init__(root)
        self.delay = delay

    def put(self, key, data):
        time.sleep(self.delay)
        return super().put(key, data)


def ctx(attempt=1):
    return StageContext("n", "t", 0, attempt)


def test_units_and_walks():
    assert unit_bounds(30) == [(0, 3), (3, 7), (7, 11), (11, 15), (15, 18), (18, 22), (22, 26), (26, 30)]
    assert unit_bounds(3) == [(0, 1), (1, 2), (2, 3)] and len(unit_bounds(1000)) == UNITS
    assert walk(8, 0, False) == list(range(8)) and walk(8, 1, False) == list(range(7, -1, -1))
    assert walk(8, 1, True) == [4, 5, 6, 7, 0, 1, 2, 3]


@pytest.mark.parametrize("role", [0, 1])
def test_one_attempt_alone_makes_the_same_bytes(tmp_path, chunk, frames, role):
    st = get_stage("grayscale")
    out, line = run_pair(LocalStorage(tmp_path), st, ctx(), {"frames": [frames]}, {}, "p", role)
    assert out["frames"][0].to_bytes() == grayscale_batch(frames).to_bytes()
    assert line == f"role {role}: did 8 of 8 units, 4 of them the peer's"
    out, line = run_pair(LocalStorage(tmp_path), get_stage("decode"), ctx(), {"chunks": [chunk]}, {}, "d", role)
    assert out["frames"][0].to_bytes() == frames.to_bytes()
    assert line.startswith(f"role {role}: did 8 of 8 units")


@pytest.mark.parametrize("stage", ["grayscale", "decode"])
def test_a_slow_peer_costs_nothing_and_changes_nothing(tmp_path, chunk, frames, stage):
    """Role 1 writes slowly (0.3 s a unit); role 0 does most of the work, its peer's half
    included, and both put together the same object."""
    st = get_stage(stage)
    values = {"frames": [frames]} if stage == "grayscale" else {"chunks": [chunk]}
    want = (grayscale_batch(frames) if stage == "grayscale" else frames).to_bytes()
    got = {}

    def attempt(role, storage):
        got[role] = run_pair(storage, st, ctx(role + 1), values, {}, "p", role)

    slow = threading.Thread(target=attempt, args=(1, SlowStorage(tmp_path, 0.3)))
    slow.start()
    attempt(0, LocalStorage(tmp_path))
    slow.join(60)                               # a hang-catcher: it stops a unit after the fast one
    assert not slow.is_alive()
    assert got[0][0]["frames"][0].to_bytes() == want == got[1][0]["frames"][0].to_bytes()
    did = {r: int(got[r][1].split("did ")[1].split()[0]) for r in (0, 1)}
    stolen = int(got[0][1].split(", ")[1].split()[0])
    # the slow one stopped within a unit of its peer's win: few units were done twice
    assert did[0] >= 6 and stolen >= 2 and did[0] + did[1] <= UNITS + 2, got


def test_two_equal_attempts_split_the_work(tmp_path, frames):
    st = get_stage("grayscale")
    got = {}

    def attempt(role):
        got[role] = run_pair(SlowStorage(tmp_path, 0.05), st, ctx(role + 1), {"frames": [frames]}, {}, "p", role)

    ts = [threading.Thread(target=attempt, args=(r,)) for r in (0, 1)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    did = [int(got[r][1].split("did ")[1].split()[0]) for r in (0, 1)]
    assert 8 <= sum(did) <= 10 and min(did) >= 3, did   # about half each; they meet in the middle
    assert got[0][0]["frames"][0].to_bytes() == got[1][0]["frames"][0].to_bytes()


def test_inputs_that_do_not_split_run_whole(tmp_path, frames):
    st = get_stage("grayscale")
    out, line = run_pair(LocalStorage(tmp_path), st, ctx(), {"frames": [frames, frames]}, {}, "p", 0)
    assert line.startswith("whole") and len(out["frames"]) == 2


def test_steal_in_a_pipespec():
    doc = {"nodes": [{"name": "d", "stage": "decode", "steal": True},
                     {"name": "g", "stage": "grayscale", "steal": True}],
           "streams": [{"src": "input_0:chunks", "dst": "d:chunks"}, {"src": "d:frames", "dst": "g:frames"},
                       {"src": "g:frames", "dst": "output_0:frames"}]}
    spec = validate(doc)
    assert spec.nodes["d"].steal and spec.nodes["g"].steal
    assert "g: stage grayscale, delivery default, work-stealing pairs; frames <- d:frames" in spec.describe()
    doc["nodes"][1]["steal"] = "yes"
    with pytest.raises(SpecError, match=r'^node g: steal must be true or false, got "yes"$'):
        validate(doc)
    doc["nodes"][1] = {"name": "g", "stage": "encode", "steal": True}
    doc["streams"][2] = {"src": "g:chunks", "dst": "output_0:chunks"}
    with pytest.raises(SpecError, match=r"^node g: stage encode cannot split a task between a pair of "
                                        r"attempts \(steal works with: decode, duplicate_filter, grayscale, grayscale_flat, "
                                        r"pixscale, resize, rotate\)$"):
        validate(doc)


FSM_P = FSM("p", "work", (State("work", "echo", {"text": "${x}"}, {"ok": DONE}, timeout_s=100),))


def pair_job(tmp_path, workers):
    """An engine with pair task ``a`` and plain task ``b``, ``workers`` connected; its clock and
    the commands of the first step."""
    clock = type("C", (), {"t": 0.0, "__call__": lambda self: self.t})()
    e = Engine(clock)
    job = Job("j", (FSM_P,), (Task("a", "p", {"x": "1"}, pair=True), Task("b", "p", {"x": "2"})))
    e.add_job("j", job, LocalStorage(tmp_path).scoped("jobs/j"), workers=workers, launcher=False)
    for i in range(workers):
        e.observe_connect("j", f"n{i}")
    return e, clock, [a for a in e.step() if isinstance(a, eng.SendCommand)]


def test_the_engine_starts_a_pair_and_lets_the_loser_finish(tmp_path):
    e, clock, cmds = pair_job(tmp_path, 3)
    assert sorted((c.task_id, c.attempt) for c in cmds) == [("a", 1), ("a", 2), ("b", 1)]
    a1, a2 = sorted((c for c in cmds if c.task_id == "a"), key=lambda c: c.attempt)
    clock.t = 1.0
    e.observe_result(a2.worker_id, Result(a2.seq, "a", True, outputs={"steal": "role 1: did 5 of 8 units, 1 of them the peer's"}))
    actions = e.step()
    assert not [a for a in actions if isinstance(a, eng.StopWorker)]   # the loser is left to finish
    e.observe_result(a1.worker_id, Result(a1.seq, "a", True))          # ... and goes idle, no rejection
    e.step()
    assert not e.rejected and e.workers[a1.worker_id].status == "idle"
    tl = e.timeline("j")["tasks"]["a"]
    assert [(a["status"], a.get("pair"), a.get("steal", "")[:6]) for a in tl] == [
        ("superseded", True, ""), ("succeeded", True, "role 1")]


def test_a_frozen_loser_is_stopped_after_the_drain_time(tmp_path):
    e, clock, cmds = pair_job(tmp_path, 2)
    assert sorted((c.task_id, c.attempt) for c in cmds) == [("a", 1), ("a", 2)]   # b waits
    e.observe_result(cmds[0].worker_id, Result(cmds[0].seq, "a", True))
    later = [a for a in e.step() if isinstance(a, eng.SendCommand)]
    assert [c.task_id for c in later] == ["b"]          # on the winner's worker
    clock.t = eng.PAIR_DRAIN_S + 0.1
    stops = [a for a in e.step() if isinstance(a, eng.StopWorker)]
    assert [s.worker_id for s in stops] == [cmds[1].worker_id]
