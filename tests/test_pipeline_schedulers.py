"""Schedulers (pipeline.schedulers) driven with a fake clock: fifo keeps the ready order, priority
puts the video's earliest frames first, streaming holds work back until its deadline needs it and
reports each late output; and every scheduler gives the same output bytes."""

import pytest

import pipeline_test_stages  # noqa: F401 - registers the t_* stages
from coordinator.fsm import Task
from pipeline.delivery import Item
from pipeline.run import run_pipeline
from pipeline.schedulers import PriorityScheduler, Scheduler, StreamingScheduler, make_scheduler
from pipeline.spec import SpecError, validate

CHAIN = {"nodes": [{"name": "a", "stage": "t_invert"}, {"name": "b", "stage": "t_invert"}],
         "streams": [{"src": "input_0:frames", "dst": "a:frames"}, {"src": "a:frames", "dst": "b:frames"},
                     {"src": "b:frames", "dst": "output_0:frames"}]}


class Clock:
    t = 100.0

    def __call__(self):
        return self.t


class Ready:
    def __init__(self, node, first_time):
        self.spec = Task(f"{node}.{first_time}", f"node-{node}", {"node": node, "first_time": first_time})


def names(tasks):
    return [t.spec.task_id for t in tasks]


def bound(s, clock=None):
    s.bind(validate(CHAIN), clock or Clock())
    s.start(100.0)
    return s


def test_fifo_keeps_order_priority_puts_early_frames_and_later_stages_first():
    ready = [Ready("a", 0.5), Ready("a", 0.6), Ready("b", 0.0), Ready("b", 0.5)]
    assert names(bound(Scheduler()).order(ready, 0)) == ["a.0.5", "a.0.6", "b.0.0", "b.0.5"]
    # b is nearer the output: at the same frame time it goes first.
    assert names(bound(PriorityScheduler()).order(ready, 0)) == ["b.0.0", "b.0.5", "a.0.5", "a.0.6"]


def test_streaming_holds_back_work_until_its_deadline_needs_it():
    clock = Clock()
    s = bound(StreamingScheduler(deadline=2.0, margin=1.5), clock)
    ready = [Ready("a", t / 10) for t in range(10)]
    assert len(s.order(ready, 100.0)) == 10          # nothing measured yet: run
    for node in ("a", "a", "b", "b"):
        s.task_done(node, 0.5)
    assert s.lead("a") == 1.0 and s.lead("b") == 0.5
    # Many workers (no queue): due(t) = 100 + 2 + t; released when now >= due - 1.5 * lead(a),
    # i.e. at 100.5 + t (less 1.5 * the work due earlier / 100 workers: 0.0075 s a task).
    s.workers = 100
    assert names(s.order(ready, 100.6)) == ["a.0.0", "a.0.1"]
    assert len(s.order(ready, 101.0)) == 6 and s.held == 4
    assert len(s.order(ready, 102.0)) == 10
    # One worker: ten tasks of 0.5 s queue up behind each other, so every one must start now.
    s.workers = 1
    assert len(s.order(ready, 100.6)) == 10 and s.held == 0


def test_streaming_reports_each_late_output():
    clock = Clock()
    s = bound(StreamingScheduler(deadline=2.0), clock)
    item = lambda start: Item(f"k{start}", "0", 1, "frames", start, start, 5, (10, 1))  # noqa: E731
    clock.t = 101.0
    s.output("output_0", item(0))          # due at 102.0: on time
    clock.t = 103.0
    s.output("output_0", item(5))          # due at 102.5: 0.5 s late
    r = s.report()
    assert r["outputs"] == 2 and r["misses"] == [{"sink": "output_0", "frame": 5, "due_s": 2.5, "late_s": 0.5}]


@pytest.mark.parametrize("value,message", [
    ("lifo", "not available"), ({"name": "streaming"}, "needs a deadline"),
    ({"name": "streaming", "deadline": -1}, "deadline -1"), ({"name": "priority", "speed": 2}, "unknown option"),
    ({"name": "streaming", "deadline": 5, "margin": 0.5}, "margin"), (3, "not a name"),
])
def test_bad_scheduler_options_are_one_line(value, message):
    with pytest.raises(SpecError, match=message):
        make_scheduler(value)


def test_every_scheduler_gives_the_same_bytes(tmp_path):
    from common import CLIPS_DIR

    clip = str(CLIPS_DIR / "RTn23_80x44p15_15f.y4m")
    outs = []
    for sched in ("fifo", "priority", {"name": "streaming", "deadline": 30}):
        out = tmp_path / f"{len(outs)}.y4m"
        summary = run_pipeline(CHAIN, {"input_0": clip}, {"output_0": str(out)}, workers=0, scheduler=sched,
                               frames_per_chunk=4)
        outs.append(out.read_bytes())
        assert summary["schedule"]["scheduler"] == (sched if isinstance(sched, str) else "streaming")
    assert outs[0] == outs[1] == outs[2]
