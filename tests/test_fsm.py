"""coordinator.fsm: FSMs as data, validated; templates; the shipped FSMs' tables."""

import pytest

from coordinator.bench import bench_fsm, bench_job
from coordinator.fsm import DONE, FAILED, FSM, FsmError, Job, State, Task, fill, job_from_proto, job_to_proto
from coordinator.shaped import chunk_fsm, shaped_job, stitch_fsm


def two_states(**override):
    states = [State("a", "echo", {"text": "${x}"}, {"ok": "b"}), State("b", "echo", {}, {"ok": DONE})]
    return FSM(override.get("name", "f"), override.get("initial", "a"), override.get("states", states))


def test_valid():
    f = two_states()
    assert f.edges() == {("a", "ok", "b"), ("b", "ok", DONE)}
    assert f.reachable() == {"a", "b", DONE}
    assert f.next_state("a", "ok") == "b"
    with pytest.raises(FsmError, match="no transition from 'a' on outcome 'nope'"):
        f.next_state("a", "nope")


@pytest.mark.parametrize("states,initial,match", [
    ([State("a", "echo", {}, {"ok": DONE}), State("b", "echo", {}, {"ok": DONE})], "a", "unreachable state"),
    ([State("a", "echo", {}, {"ok": "zz"})], "a", "unknown state 'zz'"),
    ([State("a", "echo", {}, {"timeout": DONE})], "a", "no transitions on results"),
    ([State("a", "echo", {}, {"lost": DONE})], "a", "no transitions on results"),
    ([State("a", "echo", {}, {"ok": DONE, "timeout": "zz"})], "a", "'timeout' -> unknown state 'zz'"),
    ([State("a", "echo", {}, {"ok": DONE, "lost": "zz"})], "a", "'lost' -> unknown state 'zz'"),
    ([State("a", "echo", {}, {"ok": DONE, "bad outcome": DONE})], "a", "bad outcome name"),
    ([State("a", "", {}, {"ok": DONE})], "a", "issues no operation"),
    ([State("a", "echo", {}, {})], "a", "no transitions on results"),
    ([State("a", "echo", {}, {"ok": "a"})], "a", "no way to 'done'"),
    ([State("a", "echo", {}, {"ok": FAILED})], "a", "no way to 'done'"),
    ([State("a", "echo", {}, {"ok": DONE})], "b", "initial state"),
    ([State("done", "echo", {}, {"ok": DONE})], "done", "implicit terminal"),
    ([State("a", "echo", {}, {"ok": DONE}), State("a", "echo", {}, {"ok": DONE})], "a", "duplicate"),
    ([State("a", "echo", {}, {"ok": DONE}, timeout_s=0)], "a", "timeout_s"),
])
def test_invalid(states, initial, match):
    with pytest.raises(FsmError, match=match):
        FSM("f", initial, tuple(states))


def test_timeout_and_lost_edges_are_table_edges():
    """A state may name edges on the engine's outcomes; they count for reachability (here
    ``fallback`` is reachable only through a timeout edge) but a result cannot pick them."""
    f = FSM("f", "poll", (
        State("poll", "echo", {}, {"ok": DONE, "timeout": "fallback", "lost": FAILED}, timeout_s=5),
        State("fallback", "echo", {}, {"ok": DONE}),
    ))
    assert ("poll", "timeout", "fallback") in f.edges() and ("poll", "lost", FAILED) in f.edges()
    assert f.reachable() == {"poll", "fallback", DONE, FAILED}
    assert f.edge("poll", "timeout") == "fallback" and f.edge("poll", "lost") == FAILED
    assert f.edge("fallback", "timeout") is None and f.edge("fallback", "lost") is None
    with pytest.raises(FsmError, match="is the engine's"):
        f.next_state("poll", "timeout")
    with pytest.raises(FsmError, match=r"allowed: ok\)"):
        f.next_state("poll", "nope")
    with pytest.raises(FsmError, match="not an engine outcome"):
        f.edge("poll", "ok")
    job = Job("j", (f,), (Task("t", "f"),))
    assert job_from_proto(job_to_proto(job)) == job  # the edges travel over the Jobs service


def test_job_validation():
    f = two_states()
    Job("j", (f,), (Task("t1", "f", {"x": "1"}),))
    with pytest.raises(FsmError, match="uses \\$\\{x\\}"):
        Job("j", (f,), (Task("t1", "f", {}),))
    with pytest.raises(FsmError, match="no fsm"):
        Job("j", (f,), (Task("t1", "g", {"x": 1}),))
    with pytest.raises(FsmError, match="cycle"):
        Job("j", (f,), (Task("t1", "f", {"x": 1}, ("t2",)), Task("t2", "f", {"x": 1}, ("t1",))))
    with pytest.raises(FsmError, match="bad dependency"):
        Job("j", (f,), (Task("t1", "f", {"x": 1}, ("t9",)),))
    with pytest.raises(FsmError, match="duplicate task"):
        Job("j", (f,), (Task("t1", "f", {"x": 1}), Task("t1", "f", {"x": 1})))


def test_fill():
    ctx = {"n": 3, "name": "c1", "keys": ["a", "b"], "s.out": 7}
    assert fill({"a": "${n}", "b": "x-${name}-${n}", "c": ["${keys}", "z"], "d": "${s.out}", "e": 1.5},
                ctx) == {"a": 3, "b": "x-c1-3", "c": ["a", "b", "z"], "d": 7, "e": 1.5}
    with pytest.raises(FsmError, match="no such value"):
        fill({"a": "${missing}"}, ctx)


def test_proto_round_trip():
    job = shaped_job(3, state_bytes=10)
    spec = job_to_proto(job, workers=2, spare=1, inputs={"input/a": b"x"})
    assert job_from_proto(spec) == job
    assert spec.inputs["input/a"] == b"x" and spec.workers == 2


@pytest.mark.parametrize("fsm", [chunk_fsm(), stitch_fsm(), bench_fsm()], ids=lambda f: f.name)
def test_shipped_fsms_have_no_unreachable_state(fsm):
    names = {s.name for s in fsm.states}
    assert fsm.reachable() == names | {DONE}
    assert len(fsm.states) >= 1


def test_bench_fsm_has_five_states_and_a_ring():
    assert len(bench_fsm().states) == 5
    job = bench_job(10, 8 << 20, 4 << 20)
    sizes = [t.params["size"] for t in job.tasks]
    assert sizes == [4 << 20] * 2 + [0] * 8
    assert job.tasks[0].params["prev"] == "t00009" and job.tasks[9].params["next"] == "t00000"
