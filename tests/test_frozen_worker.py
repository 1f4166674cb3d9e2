"""A frozen worker never stalls a job (docs/design/engine.md): liveness and slowness apart.

Liveness: a worker frozen with SIGSTOP stops answering the transport's keepalive pings, its
stream breaks within seconds and the engine re-issues its task at once (the state timeouts here
are far longer than any test may wait), while a worker blocked in C holding the GIL still
answers (gRPC's C core does, outside Python) and is left alone. Slowness: an attempt is judged
against what its task should cost, its frames times the state's seconds per frame, from one
finished peer or a cost model. End to end: a pipeline and an ExCamera encode with a worker frozen
mid-task give byte-identical output, the frozen task duplicated and the duplicate's result
accepted. The only time bounds are hang-catchers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from common import CLIPS_DIR
from coordinator import engine as eng
from coordinator.api import embedded_coordinator
from coordinator.engine import Engine, Result, Speculation, task_frames
from coordinator.fsm import DONE, FSM, Job, State, Task
from coordinator.server import KEEPALIVE_S, KEEPALIVE_TIMEOUT_S
from storage import LocalStorage

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
#: Longer than any test here may take: only liveness (the keepalive) can move a frozen task on.
NEVER_S = 3600.0


def worker_pid(c, worker_id: str) -> int:
    return int(c.engine.workers[worker_id].name.rsplit("pid ", 1)[1].rstrip(")"))


def one_state_job(name: str, operation: str, args: dict, n: int) -> Job:
    fsm = FSM("f", "work", (State("work", operation, args, {"ok": DONE}, timeout_s=NEVER_S),))
    return Job(name, (fsm,), tuple(Task(f"t{i}", "f", {}) for i in range(n)))


# -- liveness, on real worker processes ------------------------------------------------------

def test_a_frozen_worker_is_lost_and_its_task_goes_on_elsewhere_at_once(tmp_path):
    """Three workers each sleep in a task whose state times out only after an hour, with
    speculation off; one is frozen. Its stream breaks (keepalive unanswered), the engine calls
    it lost and re-issues the task to a worker launched for it: the job succeeds in seconds."""

    async def go():
        async with embedded_coordinator(str(tmp_path), speculation=Speculation(factor=0)) as c:
            job_id, _ = await c.submit(one_state_job("sleepers", "sleep", {"seconds": 3.0}, 3), workers=3)
            job = c.engine.jobs[job_id]
            while sum(1 for t in job.tasks.values() if t.running()) < 3:
                await asyncio.sleep(0.01)
            task = job.tasks["t1"]
            victim = task.running()[0].worker_id
            pid = worker_pid(c, victim)
            os.kill(pid, signal.SIGSTOP)
            try:
                outcome = await asyncio.wait_for(c.wait(job_id), 120)   # a hang-catcher
            finally:
                os.kill(pid, signal.SIGKILL)
            events = [(e.kind, e.task_id, e.worker_id) for e in c.handles[job_id].events]
            return outcome, task, victim, events, c.engine.workers[victim].status

    outcome, task, victim, events, status = asyncio.run(go())
    assert outcome.status == "succeeded", outcome.error
    assert status == "gone"
    assert ("lost", "t1", victim) in events
    assert [a.status for a in task.attempts] == ["lost", "succeeded"]
    assert task.attempts[0].worker_id == victim and task.winner is task.attempts[1]
    assert task.winner.worker_id != victim


def test_a_worker_blocked_holding_the_gil_is_not_lost(tmp_path, monkeypatch):
    """A worker stuck in C with the GIL held (a kernel that keeps the interpreter: no Python
    thread, no event loop runs) for longer than the keepalive takes to give up on a silent peer
    still answers the pings: nothing is lost or re-issued."""
    monkeypatch.setenv("PYTHONPATH", str(TESTS))
    hold = KEEPALIVE_S + KEEPALIVE_TIMEOUT_S + 3.0

    async def go():
        async with embedded_coordinator(str(tmp_path), ops_modules=("frozen_worker_ops",),
                                        speculation=Speculation(factor=0)) as c:
            job_id, _ = await c.submit(one_state_job("gil", "test-hold-gil", {"seconds": hold}, 2), workers=2)
            outcome = await asyncio.wait_for(c.wait(job_id), 120)
            return outcome, c.engine.jobs[job_id], [e.kind for e in c.handles[job_id].events]

    outcome, job, kinds = asyncio.run(go())
    assert outcome.status == "succeeded", outcome.error
    assert {tid: [a.status for a in t.attempts] for tid, t in job.tasks.items()} == \
        {"t0": ["succeeded"], "t1": ["succeeded"]}
    assert "lost" not in kinds


# -- slowness: what a task should cost (engine, fake clock) ------------------------------------

class Clock:
    t = 0.0

    def __call__(self):
        return self.t


def framed(tmp_path, frames: list[int], speculation: Speculation, operation: str = "echo"):
    """A job of one-state tasks covering ``frames`` frames each, one worker per task and one
    spare; every task started."""
    clock = Clock()
    e = Engine(clock, speculation)
    fsm = FSM("f", "work", (State("work", operation, {}, {"ok": DONE}, timeout_s=NEVER_S),))
    tasks = tuple(Task(f"t{i}", "f", {"frames": n}) for i, n in enumerate(frames))
    e.add_job("j", Job("j", (fsm,), tasks), LocalStorage(tmp_path).scoped("jobs/j"),
              workers=len(frames) + 1, launcher=False)
    for i in range(len(frames) + 1):
        e.observe_connect("j", f"n{i}")
    cmds = [a for a in e.step() if isinstance(a, eng.SendCommand)]
    return clock, e, {c.task_id: c for c in cmds}


def duplicates(e, clock, dt: float, task_id: str) -> list:
    clock.t += dt
    return [a for a in e.step() if isinstance(a, eng.SendCommand) and a.task_id == task_id]


def test_one_finished_peer_sets_the_seconds_per_frame(tmp_path):
    """A 10-frame task done in 1 s (0.1 s a frame): a 30-frame task is slow past 2 x 30 x 0.1 =
    6 s (its worker's first state: plus cold_s), not at the 2 s its peer's time alone would say;
    its duplicate goes to the idle spare at once."""
    clock, e, cmds = framed(tmp_path, [10, 30], Speculation(cold_s=0.5))
    clock.t = 1.0
    e.observe_result(cmds["t0"].worker_id, Result(cmds["t0"].seq, "t0", True))
    assert duplicates(e, clock, 0.0, "t1") == []
    assert duplicates(e, clock, 5.4, "t1") == []         # 6.4 s in: under 6 + 0.5
    dup = duplicates(e, clock, 0.2, "t1")                # 6.6 s
    assert [(d.attempt, d.worker_id != cmds["t1"].worker_id) for d in dup] == [(2, True)]


def test_the_cost_model_judges_before_any_peer_finished(tmp_path):
    """No attempt of the state has finished: ``per_frame_s`` (the cost model) gives the cost;
    without it nothing is speculated."""
    model = Speculation(per_frame_s={"echo": 0.05}, cold_s=0.0)
    clock, e, cmds = framed(tmp_path / "model", [40], model)
    assert duplicates(e, clock, 3.9, "t0") == []          # 2 x 40 x 0.05 = 4 s
    assert len(duplicates(e, clock, 0.2, "t0")) == 1
    clock, e, cmds = framed(tmp_path / "none", [40], Speculation(cold_s=0.0))
    assert duplicates(e, clock, 100.0, "t0") == []


def test_a_task_says_its_frames():
    assert task_frames(Task("a", "f", {"frames": 12})) == 12
    inputs = {"frames": [{"key": "k", "a": 0, "b": 25, "count": 25}, {"key": "l", "a": 5, "b": 10, "count": 30}],
              "side": [{"key": "s", "a": 0, "b": 1, "count": 1}]}
    assert task_frames(Task("b", "f", {"inputs": json.dumps(inputs)})) == 30
    assert task_frames(Task("c", "f", {"x": "1"})) is None
    assert task_frames(Task("d", "f", {"inputs": "{not json"})) is None


# -- end to end: byte-identical output, the frozen task duplicated ----------------------------

def _stat(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def _worker_children() -> list[int]:
    """This process's ``excamera worker`` children."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().split(b"\0")
            if int(_stat(int(pid))[1]) == os.getpid() and b"worker" in cmd:
                out.append(int(pid))
        except (OSError, ValueError, IndexError):
            continue
    return sorted(out)


def _cpu_ticks(pid: int) -> int:
    """CPU time of every thread of ``pid`` so far (user + system, clock ticks)."""
    fields = _stat(pid)
    return int(fields[11]) + int(fields[12])


def _freeze_a_busy_worker(go: threading.Event, frozen: list[int], stop: threading.Event) -> None:
    """Once ``go`` is set, SIGSTOP the worker child that computes most (CPU time over 100 ms,
    every thread: operations run off the event loop's thread): it holds a task."""
    while not go.wait(0.05):
        if stop.is_set():
            return
    while not stop.is_set():
        with contextlib.suppress(OSError, IndexError, ValueError):
            before = {pid: _cpu_ticks(pid) for pid in _worker_children()}
            time.sleep(0.1)
            busy = sorted((_cpu_ticks(pid) - t, pid) for pid, t in before.items() if pid in _worker_children())
            if busy and busy[-1][0] >= 3:
                os.kill(busy[-1][1], signal.SIGSTOP)
                frozen.append(busy[-1][1])
                return


def _pipeline(tmp_path, name: str, freeze_after: int | None):
    from coordinator.config import RunConfig
    from pipeline.run import run_pipeline

    clip = str(CLIPS_DIR / "compressed" / "bikes_640x272_100f.mp4")
    out, tl = tmp_path / f"{name}.ivf", tmp_path / f"{name}.json"
    frozen, stop, go, done = [], threading.Event(), threading.Event(), {}
    freezer = None
    if freeze_after is not None:
        freezer = threading.Thread(target=_freeze_a_busy_worker, args=(go, frozen, stop))
        freezer.start()

    def progress(node, n_done, planned, finished):
        done[node] = n_done    # (every worker has connected once a few tasks are done)
        if freeze_after is not None and sum(done.values()) >= freeze_after:
            go.set()

    try:
        run_pipeline(str(ROOT / "pipelines" / "grayscale.json"), {"input_0": clip}, {"output_0": str(out)},
                     RunConfig(workers=3, timeline=str(tl), timeout_s=300), on_progress=progress)
    finally:
        stop.set()
        if freezer is not None:
            freezer.join()
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    return out.read_bytes(), json.loads(tl.read_text()), frozen


def frozen_worker_tasks(timeline: dict, pid: int) -> tuple[dict[str, list[dict]], str]:
    """The tasks that had an attempt on the worker process ``pid`` (task id -> its attempts),
    and its worker id."""
    wids = {w["worker"] for w in timeline["workers"] if w["name"].endswith(f"(pid {pid})")}
    assert len(wids) == 1, timeline["workers"]
    return {tid: attempts for tid, attempts in timeline["tasks"].items()
            if any(a["worker"] in wids for a in attempts)}, wids.pop()


@pytest.mark.slow
def test_a_pipeline_with_a_frozen_worker_gives_the_same_bytes(tmp_path):
    """The grayscale pipeline (decode, grayscale, encode) on 100 frames with three workers, one
    frozen while it computes: same bytes as undisturbed; the frozen worker's task has a later
    attempt on another worker that won, and its own attempt did not."""
    base, _, _ = _pipeline(tmp_path, "base", None)
    out, timeline, frozen = _pipeline(tmp_path, "frozen", 2)
    assert frozen, "no worker was computing to freeze"
    assert out == base
    tasks, wid = frozen_worker_tasks(timeline, frozen[0])
    stalled = {tid: a for tid, a in tasks.items() if any(x["worker"] == wid and x["status"] != "succeeded" for x in a)}
    assert stalled, tasks
    print(f"pipeline, worker {wid} frozen: {({t: [(x['worker'], x['status']) for x in a] for t, a in stalled.items()})}")
    for tid, attempts in stalled.items():
        mine = [i for i, x in enumerate(attempts) if x["worker"] == wid]
        won = [i for i, x in enumerate(attempts) if x["status"] == "succeeded"]
        assert len(won) == 1 and attempts[won[0]]["worker"] != wid and won[0] > mine[0], attempts
        assert attempts[mine[0]]["status"] in ("lost", "superseded"), attempts


@pytest.mark.slow
def test_an_encode_with_a_worker_frozen_before_any_peer_finished(tmp_path):
    """ExCamera on 24 CIF frames, three workers: one frozen in its first working state, before
    any attempt of that state finished (no peers to compare with: only liveness can tell).
    Byte-identical to the encode in one process; its task duplicated, the duplicate accepted."""
    from coordinator.excamera_job import encode_inputs, encode_job
    from media.excamera_encode import EncodeSettings, encode_frames
    from media.video import open_video
    from worker.codec_ops import ivf_frames

    with open_video(str(ROOT / "demo" / "foreman_cif_60f.ivf")) as video:
        frames, rate = [f for _, f in zip(range(24), video)], video.rate
    settings = EncodeSettings(chunk_frames=3, batch_chunks=4, cq_level=30, first_pass="native")
    expected = encode_frames(frames, settings, rate)
    h, w = frames[0].y.shape

    async def go():
        async with embedded_coordinator(str(tmp_path)) as c:
            job_id, _ = await c.submit(encode_job(len(frames), w, h, settings), workers=3,
                                       inputs=encode_inputs(frames, rate, settings))
            done = asyncio.ensure_future(c.wait(job_id))
            job = c.engine.jobs[job_id]
            pid = task = None
            while pid is None and not done.done():
                await asyncio.sleep(0.002)
                for t in job.live.values():
                    a = next((a for a in t.running() if a.state in ("first-pass", "encode-given-state")
                              and not job.durations.get((t.spec.fsm, a.state))), None)
                    if a is not None:
                        pid, task = worker_pid(c, a.worker_id), t
                        os.kill(pid, signal.SIGSTOP)
                        break
            try:
                outcome = await asyncio.wait_for(done, 240)
            finally:
                if pid is not None:
                    os.kill(pid, signal.SIGKILL)
            data = c.storage.scoped(outcome.storage_prefix).get(outcome.objects["stitch"]["stitch.object"].key) \
                if outcome.status == "succeeded" else b""
            return outcome, task, data

    outcome, task, data = asyncio.run(go())
    assert outcome.status == "succeeded", outcome.error
    assert ivf_frames(data, "stitched") == expected
    assert task is not None
    print(f"encode, {task.spec.task_id} frozen: {[(a.worker_id, a.status) for a in task.attempts]}")
    first = task.attempts[0]
    assert first.status in ("lost", "superseded") and first.worker_id != task.winner.worker_id
    assert task.winner is task.attempts[-1] and task.winner.number > 1
