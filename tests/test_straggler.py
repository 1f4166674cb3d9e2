"""The realistic straggler: a worker frozen with SIGSTOP mid-task (alive, connected, silent).
Speculation by relative slowness (coordinator.engine.Speculation) gives its task a duplicate on
a spare worker long before the state's timeout, and the duplicate's result is the one taken; the
output is byte-identical to an undisturbed run's. What each test asserts comes from the job's
recorded attempts (who ran what, when, how it ended), not from how long the run took: the only
time bounds are hang-catchers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time

import pytest

from coordinator.api import embedded_coordinator
from coordinator.config import RunConfig
from coordinator.excamera_job import encode_inputs, encode_job
from media.excamera_encode import EncodeSettings, encode_frames
from coordinator.timeline import render
from media.video import open_video
from worker.codec_ops import ivf_frames

DEMO = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "demo", "foreman_cif_60f.ivf")
WORK_STATES = ("first-pass", "encode-given-state")


@pytest.fixture(scope="module")
def clip():
    with open_video(DEMO) as video:
        frames = [f for _, f in zip(range(24), video)]
        return frames, video.rate


def worker_pid(c, worker_id: str) -> int:
    return int(c.engine.workers[worker_id].name.rsplit("pid ", 1)[1].rstrip(")"))


async def encode(tmp_path, frames, rate, settings, freeze: bool):
    """The encode job on 3 workers and a spare; with ``freeze``, the worker of the first attempt
    found in a work state (once 3 peers finished that state, so speculation can judge it) is
    SIGSTOPped. The stitched frames, and (when frozen) the frozen attempt, the engine's clock at
    the freeze, the task's record, its FSM, and the timeline."""
    h, w = frames[0].y.shape
    async with embedded_coordinator(str(tmp_path)) as c:
        job_id, _ = await c.submit(encode_job(len(frames), w, h, settings), workers=3, spare=1,
                                   inputs=encode_inputs(frames, rate, settings))
        done = asyncio.ensure_future(c.wait(job_id))
        job = c.engine.jobs[job_id]
        frozen, frozen_attempt, frozen_at = None, None, None
        try:
            while freeze and frozen is None and not done.done():
                await asyncio.sleep(0.002)
                for task in job.live.values():
                    for a in task.running():
                        peers = job.durations.get((task.spec.fsm, a.state), [])
                        if a.state in WORK_STATES and len(peers) >= 3:
                            frozen, frozen_attempt = worker_pid(c, a.worker_id), a
                            os.kill(frozen, signal.SIGSTOP)
                            frozen_at = c.engine.clock()
                            break
                    if frozen:
                        break
            outcome = await asyncio.wait_for(done, 240)       # a hang-catcher
        finally:
            if frozen:
                os.kill(frozen, signal.SIGKILL)
        assert outcome.status == "succeeded", outcome.error
        ref = outcome.objects["stitch"]["stitch.object"]
        data = c.storage.scoped(outcome.storage_prefix).get(ref.key)
        return (ivf_frames(data, "stitched"), frozen_attempt, frozen_at, job.job,
                c.engine.timeline(job_id))


@pytest.mark.slow
def test_a_sigstopped_worker_is_overtaken_by_a_duplicate(clip, tmp_path):
    frames, rate = clip
    settings = EncodeSettings(chunk_frames=3, batch_chunks=4, cq_level=30, first_pass="native")
    expected = encode_frames(frames, settings, rate)
    base, *_ = asyncio.run(encode(tmp_path / "a", frames, rate, settings, freeze=False))
    out, frozen, frozen_at, job, timeline = asyncio.run(encode(tmp_path / "b", frames, rate, settings, freeze=True))
    assert base == expected and out == expected
    assert frozen is not None, "no worker was frozen: the job ended first"
    task = frozen.task
    print(f"froze {frozen.worker_id} in {task.spec.task_id}:{frozen.state}; attempts "
          f"{[(a.number, a.worker_id, a.status) for a in task.attempts]}")
    # The frozen attempt never finished: a duplicate on another worker, started after the freeze,
    # won, and the frozen one was superseded; the task's result is the duplicate's.
    winner = task.winner
    assert frozen.status == "superseded" and frozen.straggling
    assert winner is not None and winner is not frozen and winner.status == "succeeded"
    assert winner.worker_id != frozen.worker_id and winner.number > frozen.number
    assert winner.history[0][0] >= frozen_at
    # ... started by speculation, before the frozen state's fixed timeout could have re-issued it.
    entered = max(t for t, state in frozen.history if state == frozen.state)
    timeout = job.fsm(task.spec.fsm).state(frozen.state).timeout_s
    assert winner.history[0][0] - entered < timeout, (winner.history, entered, timeout)
    # The timeline shows the duplicate and which attempt won (the loser struck through).
    statuses = {a["worker"]: a["status"] for a in timeline["tasks"][task.spec.task_id]}
    assert statuses[frozen.worker_id] == "superseded" and statuses[winner.worker_id] == "succeeded"
    svg = render(timeline)
    assert f"{task.spec.task_id} " in svg and "(superseded: another attempt won)" in svg
    (tmp_path / "straggler.svg").write_text(svg)


def _worker_pids() -> list[int]:
    """This process's `excamera worker` children."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if ppid == os.getpid() and b"worker" in cmd:
            out.append(int(pid))
    return sorted(out)


def _cpu_ticks(pid: int) -> int:
    """User plus system CPU ticks the process has used (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, ValueError, IndexError):
        return 0


def _connected(pid: int) -> bool:
    """Whether the process holds an established TCP connection (a worker that reached the
    coordinator; one still starting up, busy importing, holds none)."""
    try:
        inodes = {os.readlink(f"/proc/{pid}/fd/{fd}")[8:-1] for fd in os.listdir(f"/proc/{pid}/fd")
                  if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:[")}
    except OSError:
        return False
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/net/{table}") as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if cols[3] == "01" and cols[9] in inodes:      # 01: ESTABLISHED
                    return True
    return False


def _busiest(pids: list[int]) -> int | None:
    """The connected worker using the most CPU over a moment (one at work on a task), or None."""
    pids = [p for p in pids if _connected(p)]
    before = {p: _cpu_ticks(p) for p in pids}
    time.sleep(0.1)
    used = {p: _cpu_ticks(p) - t for p, t in before.items()}
    pid = max(used, key=used.get, default=None)
    return pid if pid is not None and used[pid] > 0 else None


def run_frozen(tmp_path, spec: str, clip: str, name: str, *, freeze_after: int | None, out_ext: str,
               workers: int, spare: int, frames_per_chunk: int):
    """``run_pipeline`` on ``clip``, with (``freeze_after``: once that many progress reports came)
    the worker then busiest frozen by SIGSTOP; the output's bytes, the timeline, and the frozen pid
    (killed at the end)."""
    import json

    from pipeline.run import run_pipeline

    frozen, done = [], [0]

    def progress(node, n_done, planned, finished):
        done[0] += 1
        if freeze_after is not None and not frozen and done[0] >= freeze_after:
            pid = _busiest(_worker_pids())
            if pid is not None:
                frozen.append(pid)
                os.kill(pid, signal.SIGSTOP)

    out, tl = tmp_path / f"{name}{out_ext}", tmp_path / f"{name}.json"
    try:
        run_pipeline(spec, {"input_0": clip}, {"output_0": str(out)},
                     RunConfig(workers=workers, spare=spare, timeline=str(tl), timeout_s=300),  # (a hang-catcher)
                     on_progress=progress, frames_per_chunk=frames_per_chunk)
    finally:
        for pid in frozen:  # (the launcher may have killed it already, at the job's end)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    return out.read_bytes(), json.loads(tl.read_text()), (frozen[0] if frozen else None)


def overtaken(timeline: dict, pid: int, *, pair: bool = False) -> tuple[str, dict, dict]:
    """The frozen worker's last attempt and what overtook it: (task, its attempt, the winner).
    A frozen worker holds at most one attempt after the freeze (it never reports again), so its
    last one is the task it held, or was handed, when frozen: asserted superseded, never finished,
    with another worker's attempt of the task the one that succeeded. Not in a pair, also: every
    attempt it finished before succeeded, and the winner is a duplicate issued after it."""
    wid = next(w["worker"] for w in timeline["workers"] if w.get("name", "").endswith(f"(pid {pid})"))
    mine = sorted(((a["history"][0][0], task, a) for task, attempts in timeline["tasks"].items()
                   for a in attempts if a["worker"] == wid), key=lambda x: x[0])
    assert mine, f"the frozen worker {wid} never had a task"
    start, task, last = mine[-1]
    assert last["status"] == "superseded", (task, timeline["tasks"][task])
    winners = [a for a in timeline["tasks"][task] if a["status"] == "succeeded"]
    assert len(winners) == 1 and winners[0]["worker"] != wid, timeline["tasks"][task]
    if not pair:
        assert all(a["status"] == "succeeded" for _, _, a in mine[:-1]), mine
        assert winners[0]["attempt"] > last["attempt"] and winners[0]["history"][0][0] >= start, \
            timeline["tasks"][task]
    return task, last, winners[0]


@pytest.mark.slow
def test_a_sigstopped_worker_in_a_pipeline_is_overtaken_by_a_duplicate(tmp_path):
    """The grayscale pipeline, one task per frame and node: the worker busiest once a few tasks
    are done is frozen; the task it holds (or is handed next) gets a duplicate on another worker,
    which wins; same bytes as an undisturbed run."""
    from common import CLIPS_DIR

    spec = os.path.join(os.path.dirname(DEMO), "..", "pipelines", "grayscale.json")
    clip = str(CLIPS_DIR / "foreman_qcif_176x144_10f.y4m")
    kw = {"out_ext": ".ivf", "workers": 3, "spare": 1, "frames_per_chunk": 1}
    base, _, _ = run_frozen(tmp_path, spec, clip, "base", freeze_after=None, **kw)
    out, timeline, pid = run_frozen(tmp_path, spec, clip, "frozen", freeze_after=8, **kw)
    assert pid is not None, "no worker was at work to freeze"
    task, last, winner = overtaken(timeline, pid)
    print(f"frozen worker's {task} attempt {last['attempt']} superseded by attempt {winner['attempt']} "
          f"on {winner['worker']}")
    assert out == base


@pytest.mark.slow
def test_a_sigstopped_worker_in_a_stealing_pair_has_its_half_done_elsewhere(tmp_path):
    """decode and grayscale as work-stealing pairs (pipeline.steal): a worker frozen in the middle
    of a pair's attempt has its half done elsewhere, by its peer (which steals its units) or, once
    the keepalive has the frozen worker declared lost, by the attempt issued in its place; that
    attempt wins. Same bytes as an undisturbed run; a steal shows in the timeline's chart."""
    import json

    from common import CLIPS_DIR

    spec = {"nodes": [{"name": "decode", "stage": "decode", "steal": True},
                      {"name": "gray", "stage": "grayscale", "steal": True}],
            "streams": [{"src": "input_0:chunks", "dst": "decode:chunks"},
                        {"src": "decode:frames", "dst": "gray:frames"},
                        {"src": "gray:frames", "dst": "output_0:frames"}]}
    path = tmp_path / "steal.json"
    path.write_text(json.dumps(spec))
    clip = str(CLIPS_DIR / "compressed" / "bikes_640x272_100f.mp4")
    kw = {"out_ext": ".y4m", "workers": 4, "spare": 1, "frames_per_chunk": 25}
    base, _, _ = run_frozen(tmp_path, str(path), clip, "base", freeze_after=None, **kw)
    out, timeline, pid = run_frozen(tmp_path, str(path), clip, "frozen", freeze_after=2, **kw)
    assert pid is not None, "no worker was at work to freeze"
    winners = [a for attempts in timeline["tasks"].values() for a in attempts if a["status"] == "succeeded"]
    assert all(a.get("pair") for a in winners)
    # The frozen worker's pair attempt lost to its peer, which did units of the frozen one's half.
    task, last, winner = overtaken(timeline, pid, pair=True)
    assert last.get("pair") and winner.get("pair")
    stolen = int(winner["steal"].split(", ")[1].split()[0]) if winner.get("steal") else 0
    print(f"frozen worker's {task} attempt {last['attempt']} lost to {winner['worker']}'s: {winner.get('steal')}")
    assert stolen > 0 or winner["attempt"] > last["attempt"], (last, winner)
    assert out == base
    if stolen:
        assert "of them the peer&#x27;s" in render(timeline)   # the chart's tooltips carry the steal lines
