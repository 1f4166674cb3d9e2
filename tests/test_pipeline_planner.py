"""The planner driven directly: tasks finish in shuffled orders, and the task ids, object keys and
sink items are the same every time; downstream work starts before upstream work ends."""

import json
import hashlib
import random

import numpy as np
import pytest

import pipeline_test_stages  # noqa: F401 - registers the t_* stages
from coordinator import engine as eng
from coordinator.engine import Engine, PlanError, Result
from coordinator.fsm import Job
from storage import LocalStorage
from pipeline.delivery import Item
from pipeline.planner import ARGS, PipelinePlanner
from pipeline.spec import validate
from pipeline.values import FrameBatch
from pipeline.worker_op import run_stage

CHAIN = {"nodes": [{"name": "inv", "stage": "t_invert"},
                   {"name": "grp", "stage": "t_regroup", "config": {"frames_per_chunk": 5}},
                   {"name": "ovl", "stage": "t_overlay"}],
         "streams": [{"src": "input_0:frames", "dst": "inv:frames"},
                     {"src": "inv:frames", "dst": "grp:frames"},
                     {"src": "grp:frames", "dst": "ovl:frames"},
                     {"src": "input_1:frame", "dst": "ovl:image", "durable": True},
                     {"src": "ovl:frames", "dst": "output_0:frames"},
                     {"src": "grp:groups", "dst": "output_1:records"}]}


def batches(n_frames, per, start_seed=0):
    rng = np.random.default_rng(start_seed)
    out, start = [], 0
    while start < n_frames:
        n = min(per, n_frames - start)
        out.append(FrameBatch(rng.integers(0, 256, (n, 8, 12), np.uint8), rng.integers(0, 256, (n, 4, 6), np.uint8),
                              rng.integers(0, 256, (n, 4, 6), np.uint8), start, (10, 1)))
        start += n
    return out


def put_items(storage, source, values, port_type):
    items = []
    for i, v in enumerate(values):
        data = v.to_bytes()
        ref = storage.put(f"in/{source.replace(':', '/')}/{i:06d}", data)
        items.append(Item(ref.key, ref.sha256, ref.size, port_type, i, v.start, v.count, v.fps, {}, source))
    return items


def make(tmp_path, doc=CHAIN, frames=23, per=4):
    storage = LocalStorage(tmp_path).scoped("jobs/p")
    planner = PipelinePlanner(validate(doc))
    planner.add_input("input_0", "frames", put_items(storage, "input_0:frames", batches(frames, per), "frames"))
    if "input_1" in planner.spec.inputs:
        planner.add_input("input_1", "frame", put_items(storage, "input_1:frame", batches(1, 1, 7), "frame"))
    return planner, storage


def drive(planner, storage, rng, log=None, tasks=None):
    """Finish ready tasks in a random order until the planner is complete."""
    ready = list(planner.start())
    ran = []
    while ready:
        task = ready.pop(rng.randrange(len(ready)))
        if tasks is not None:
            tasks.append(task)
        out = run_stage(storage, task_id=task.task_id, **{a: task.params[a] for a in ARGS})
        ran.append(task.task_id)
        new = planner.on_done(task.task_id, {"run": out})
        if log is not None:
            log.append((task.task_id, [t.task_id for t in new]))
        ready.extend(new)
    assert planner.complete()
    return ran


def digest_of(storage, items):
    return [(i.key, i.sha256, i.start, i.count, hashlib.sha256(storage.get(i.key)).hexdigest() == i.sha256)
            for i in items]


def test_shuffled_completions_give_identical_tasks_keys_and_sinks(tmp_path):
    results = []
    for seed in range(4):
        planner, storage = make(tmp_path / str(seed))
        ran = drive(planner, storage, random.Random(seed))
        results.append((sorted(ran), digest_of(storage, planner.sink_items("output_0")),
                        digest_of(storage, planner.sink_items("output_1")), sorted(storage.list("n"))))
        assert len(ran) == 6 + 5 + 5    # 6 input batches, 23 frames in groups of 5 -> 5 groups
    first = results[0]
    assert all(r == first for r in results[1:])
    _, sink0, sink1, keys = first
    assert [s[2:4] for s in sink0] == [(0, 5), (5, 5), (10, 5), (15, 5), (20, 3)] and all(s[4] for s in sink0)
    assert all(k.startswith(("n/inv/", "n/grp/", "n/ovl/")) for k in keys)


def test_no_stage_barrier_downstream_starts_before_upstream_ends(tmp_path):
    planner, storage = make(tmp_path)
    log = []
    # In input order: grp's first group is planned once inv has done two batches (8 frames >= 5).
    drive(planner, storage, _InOrder(), log)
    planned_by = [tid for tid, new in log if any(t.startswith("grp.") for t in new)]
    assert planned_by[0].startswith("inv.000001-")
    # ... long before inv's last task is done (the scheduler may run it at once).
    order = [tid for tid, _ in log]
    assert order.index(planned_by[0]) < max(i for i, t in enumerate(order) if t.startswith("inv.")) - 2


class _InOrder:
    """A 'random' source that always takes the oldest ready task (fifo)."""

    def randrange(self, n):
        return 0


def test_durable_side_input_reaches_every_task(tmp_path):
    import json
    planner, storage = make(tmp_path)
    tasks = []
    drive(planner, storage, random.Random(3), tasks=tasks)
    ovl = [t for t in tasks if t.task_id.startswith("ovl.")]
    assert len(ovl) == 5
    side = [json.loads(t.params["inputs"])["image"] for t in ovl]
    assert all(s == side[0] for s in side) and side[0][0]["key"] == "in/input_1/frame/000000"


def test_pair_repeats_the_last_frame_of_the_shorter_input(tmp_path):
    doc = {"nodes": [{"name": "dup", "stage": "t_dup"}, {"name": "drop", "stage": "t_drop", "config": {"at": 8}},
                     {"name": "bl", "stage": "t_blend"}],
           "streams": [{"src": "input_0:frames", "dst": "dup:frames"},
                       {"src": "dup:frames_0", "dst": "bl:frames_0"}, {"src": "dup:frames_1", "dst": "drop:frames"},
                       {"src": "drop:frames", "dst": "bl:frames_1"}, {"src": "bl:frames", "dst": "output_0:frames"}]}
    planner, storage = make(tmp_path, doc, frames=12, per=4)
    tasks = []
    drive(planner, storage, random.Random(0), tasks=tasks)   # joined by time: frame 7 goes on
    joins = [json.loads(t.params["inputs"]) for t in tasks if t.task_id.startswith("bl.")]
    assert len(joins) == 3 and planner.complete()
    assert sorted([(d["a"], d["b"]) for d in j["frames_1"]] for j in joins) == [[(0, 4)], [(0, 4)], [(3, 4)]]


def test_the_planner_under_the_engine(tmp_path):
    """The engine runs the planner's tasks (fake clock, one worker answering with run_stage)."""
    planner, storage = make(tmp_path, frames=9, per=4)
    first = planner.start()
    e = Engine(lambda: 0.0)
    e.add_job("p", Job("p", planner.fsms(), tuple(first)), storage, workers=1, launcher=False, planner=planner)
    w = e.observe_connect("p", "fake")
    end = None
    for _ in range(200):
        for a in e.step():
            if isinstance(a, eng.SendCommand):
                assert a.operation == "pipeline-stage" and a.state == "run"
                out = run_stage(storage, task_id=a.task_id, **a.args)
                e.observe_result(w, Result(a.seq, a.task_id, True, outputs=out))
            elif isinstance(a, eng.JobEnded):
                end = a
        if end:
            break
    assert end is not None and end.status == "succeeded", end
    assert set(end.objects) == set(planner.result_tasks())
    assert {t.split(".")[0] for t in end.objects} == {"ovl", "grp"}   # the tasks feeding sinks
    assert sum(i.count for i in planner.sink_items("output_0")) == 9


def test_worker_slices_frame_batches_and_records():
    from pipeline.values import Records
    from pipeline.worker_op import _slice
    b = batches(6, 6)[0]
    part = _slice(b, 2, 5, 6)
    assert (part.start, part.count) == (2, 3) and np.array_equal(part.y, b.y[2:5])
    assert _slice(b, 0, 6, 6) is b
    r = Records([{"frame": f, "x": f * f} for f in range(10, 16)], 10, 6, (10, 1))
    cut = _slice(r, 1, 3, 6)
    assert (cut.start, cut.count, [x["frame"] for x in cut.records]) == (11, 2, [11, 12])
