"""Schedulers (pipeline.schedulers) driven with a fake clock: fifo keeps the ready order, priority
puts the video's earliest frames first, streaming holds work back until its deadline needs it and
reports each late output; and every scheduler gives the same output bytes."""

import pytest

import pipeline_test_stages  # noqa: F401 - registers the t_* stages
from coordinator.fsm import Task
from pipeline.delivery import Item
from coordinator.config import RunConfig
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


def test_streaming_runs_on_the_fewest_workers_that_meet_every_due_time():
    clock = Clock()
    s = bound(StreamingScheduler(deadline=2.0, margin=1.5), clock)
    s.workers = 100
    ready = [Ready("a", t / 10) for t in range(10)]
    s.open_tasks = 10
    assert names(s.order(ready, 100.0)) == ["a.0.0", "a.0.1"]   # nothing measured yet: two at a time
    for node in ("a", "a", "b", "b"):
        s.task_done(node, 0.5)
    assert s.lead("a") == 1.0 and s.lead("b") == 0.5
    # Due at 102 + t. Earliest deadline first, the work due up to task j is 1.5 * 1.0 * (j + 1)
    # seconds and must end within 2 + j / 10 s: task 9 needs 15 / 2.9 = 5.2 workers, so 6.
    assert s.concurrency(ready, 100.0) == 6
    assert names(s.order(ready, 100.0)) == [f"a.0.{t}" for t in range(6)] and s.held == 4
    s.open_tasks = 14                                         # four of them running: two more
    assert len(s.order(ready, 100.0)) == 2
    s.open_tasks = 10
    s.workers = 3                                             # never more than the workers there are
    assert s.concurrency(ready, 100.0) == 3
    s.workers = 100
    assert len(s.order(ready, 102.05)) == 10                  # the first is already due: everyone
    relaxed = bound(StreamingScheduler(deadline=100.0), clock)
    relaxed.workers, relaxed.open_tasks = 100, 10
    for node in ("a", "a", "b", "b"):
        relaxed.task_done(node, 0.5)
    assert names(relaxed.order(ready, 100.0)) == ["a.0.0"]    # one worker meets a generous deadline


def test_streaming_times_a_task_from_its_release():
    """What the leads are made of: seconds from release to done (a task waiting while the work
    is held back is not slow), or the planner's seconds for a task it never released."""
    clock = Clock()
    s = bound(StreamingScheduler(deadline=2.0), clock)
    s.workers, s.open_tasks = 4, 1
    ready = [Ready("a", 0.0)]
    clock.t = 100.3
    assert names(s.order(ready, clock.t)) == ["a.0.0"]
    clock.t = 101.0
    s.task_done("a", 5.0, "a.0.0")
    s.task_done("a", 2.0, "a.unknown")
    assert s.times["a"] == [pytest.approx(0.7), 2.0]


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
        summary = run_pipeline(CHAIN, {"input_0": clip}, {"output_0": str(out)}, RunConfig(workers=0), scheduler=sched,
                               frames_per_chunk=4)
        outs.append(out.read_bytes())
        assert summary["schedule"]["scheduler"] == (sched if isinstance(sched, str) else "streaming")
    assert outs[0] == outs[1] == outs[2]


def test_the_fleet_projection_replays_task_times_through_the_schedulers():
    """bench/scheduler_projection.py's model on a known job: 6 pieces, each a 1 s task of a then
    of b, on 12 workers. Priority keeps the whole fleet to the end (half of it never has work);
    streaming at a generous deadline runs on fewer workers, holding them busy, and is never late."""
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parent.parent / "bench" / "scheduler_projection.py"
    spec_ = importlib.util.spec_from_file_location("scheduler_projection", path)
    sp = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(sp)
    timeline = {"workers": [{"history": [[0.5, "idle"]]}], "tasks": {
        f"{n}.{p:06d}-x": [{"status": "succeeded", "history": [[0.0, "run"], [1.0, "done"]]}]
        for n in "ab" for p in range(6)}}
    times = sp.measured_tasks(timeline)
    assert times[("b", 5)] == 1.0 and sp.first_join(timeline) == 0.5
    p = sp.simulate(validate(CHAIN), times, 1.0, PriorityScheduler(), 12, 0.0)
    assert p["busy"] == 12.0 and p["launches"] == 12 and p["late"] == 0
    assert p["held"] == pytest.approx(12 * p["makespan"]) and 2.0 <= p["makespan"] <= 2.1
    s = sp.simulate(validate(CHAIN), times, 1.0, StreamingScheduler(deadline=30.0), 12, 0.0)
    assert s["late"] == 0 and s["peak"] <= 2 and s["busy"] == 12.0
    assert s["held"] < 0.6 * p["held"]
