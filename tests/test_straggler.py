"""The realistic straggler: a worker frozen with SIGSTOP mid-task (alive, connected, silent).
Speculation by relative slowness (coordinator.engine.Speculation) gives its task a duplicate on
a spare worker long before the state's timeout; the job finishes within 1.5x its undisturbed time
plus a few seconds, byte-identical."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time

import pytest

from coordinator.api import embedded_coordinator
from coordinator.excamera_job import encode_inputs, encode_job
from excamera.encode import EncodeSettings, encode_frames
from excamera.timeline import render
from excamera.video import open_video
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
    h, w = frames[0].y.shape
    async with embedded_coordinator(str(tmp_path)) as c:
        t0 = time.monotonic()
        job_id, _ = await c.submit(encode_job(len(frames), w, h, settings), workers=3, spare=1,
                                   inputs=encode_inputs(frames, rate, settings))
        done = asyncio.ensure_future(c.wait(job_id))
        job = c.engine.jobs[job_id]
        frozen, frozen_task = None, None
        try:
            while freeze and frozen is None and not done.done():
                await asyncio.sleep(0.002)
                for task in job.live.values():
                    for a in task.running():
                        peers = job.durations.get((task.spec.fsm, a.state), [])
                        if a.state in WORK_STATES and len(peers) >= 3:
                            frozen, frozen_task = worker_pid(c, a.worker_id), task.spec.task_id
                            os.kill(frozen, signal.SIGSTOP)
                            break
                    if frozen:
                        break
            outcome = await asyncio.wait_for(done, 240)
            elapsed = time.monotonic() - t0
        finally:
            if frozen:
                os.kill(frozen, signal.SIGKILL)
        assert outcome.status == "succeeded", outcome.error
        ref = outcome.objects["stitch"]["stitch.object"]
        data = c.storage.scoped(outcome.storage_prefix).get(ref.key)
        attempts = [a.status for a in job.tasks[frozen_task].attempts] if frozen_task else []
        return ivf_frames(data, "stitched"), elapsed, frozen_task, attempts, c.engine.timeline(job_id)


@pytest.mark.slow
def test_a_sigstopped_worker_costs_at_most_half_again(clip, tmp_path):
    frames, rate = clip
    settings = EncodeSettings(chunk_frames=3, batch_chunks=4, cq_level=30, first_pass="native")
    expected = encode_frames(frames, settings, rate)
    base, t_base, _, _, _ = asyncio.run(encode(tmp_path / "a", frames, rate, settings, freeze=False))
    out, t_frozen, task, attempts, timeline = asyncio.run(encode(tmp_path / "b", frames, rate, settings, freeze=True))
    print(f"undisturbed {t_base:.2f} s, one worker frozen in {task}: {t_frozen:.2f} s, attempts {attempts}")
    assert base == expected and out == expected
    assert task is not None and "superseded" in attempts and attempts[-1] == "succeeded"
    assert t_frozen <= 1.5 * t_base + 5.0
    # The timeline shows the duplicate and which attempt won (the loser struck through).
    svg = render(timeline)
    assert f"{task} " in svg and "(superseded: another attempt won)" in svg
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


def run_frozen(tmp_path, spec: str, clip: str, name: str, *, freeze_after: int | None, last: bool,
               out_ext: str, **kw):
    """``run_pipeline`` on ``clip``, with (``freeze_after``: once that many progress reports came)
    a worker frozen by SIGSTOP, the newest if ``last`` else the oldest; the output's bytes, the
    wall time, the timeline, and the frozen pids (killed at the end)."""
    import json

    from pipeline.run import run_pipeline

    frozen, done = [], [0]

    def progress(node, n_done, planned, finished):
        done[0] += 1
        if freeze_after is not None and not frozen and done[0] >= freeze_after:
            pids = _worker_pids()
            if pids:
                frozen.append(pids[-1] if last else pids[0])
                os.kill(frozen[0], signal.SIGSTOP)

    out, tl = tmp_path / f"{name}{out_ext}", tmp_path / f"{name}.json"
    t0 = time.monotonic()
    try:
        run_pipeline(spec, {"input_0": clip}, {"output_0": str(out)}, timeline=str(tl), on_progress=progress, **kw)
    finally:
        for pid in frozen:  # (the launcher may have killed it already, at the job's end)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    return out.read_bytes(), time.monotonic() - t0, json.loads(tl.read_text()), frozen


@pytest.mark.slow
def test_a_sigstopped_worker_costs_a_pipeline_at_most_half_again(tmp_path):
    """The grayscale pipeline, one task per frame and node: a worker frozen once a few tasks are
    done (it holds or will be handed a task) is overtaken by a duplicate; same bytes, bounded delay."""
    from common import CLIPS_DIR

    spec = os.path.join(os.path.dirname(DEMO), "..", "pipelines", "grayscale.json")
    clip = str(CLIPS_DIR / "foreman_qcif_176x144_10f.y4m")
    kw = {"last": False, "out_ext": ".ivf", "workers": 3, "spare": 1, "frames_per_chunk": 1}
    base, t_base, _, _ = run_frozen(tmp_path, spec, clip, "base", freeze_after=None, **kw)
    out, t_frozen, timeline, frozen = run_frozen(tmp_path, spec, clip, "frozen", freeze_after=8, **kw)
    statuses = [a["status"] for attempts in timeline["tasks"].values() for a in attempts]
    print(f"pipeline undisturbed {t_base:.2f} s, one worker frozen: {t_frozen:.2f} s; attempts {statuses.count('superseded')} "
          f"superseded, {statuses.count('lost')} lost")
    assert frozen and out == base
    assert t_frozen <= 1.5 * t_base + 5.0


@pytest.mark.slow
def test_a_sigstopped_worker_in_a_stealing_pair_costs_nothing(tmp_path):
    """decode and grayscale as work-stealing pairs (pipeline.steal): a worker frozen in the middle
    of a pair's attempt leaves its half to its peer, which does it and wins; the frozen worker is
    stopped later. Same bytes as an undisturbed run; the timeline shows the steal."""
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
    kw = {"last": True, "out_ext": ".y4m", "workers": 4, "spare": 1, "frames_per_chunk": 25}
    base, t_base, _, _ = run_frozen(tmp_path, str(path), clip, "base", freeze_after=None, **kw)
    out, t_frozen, timeline, frozen = run_frozen(tmp_path, str(path), clip, "frozen", freeze_after=2, **kw)
    winners = [a for attempts in timeline["tasks"].values() for a in attempts if a["status"] == "succeeded"]
    assert all(a.get("pair") for a in winners)
    stolen = [int(a["steal"].split(", ")[1].split()[0]) for a in winners if "steal" in a]
    print(f"stealing pipeline undisturbed {t_base:.2f} s, one worker frozen {t_frozen:.2f} s; "
          f"units stolen per winner {stolen}")
    assert frozen and out == base
    assert t_frozen <= 1.5 * t_base + 5.0
    assert sum(stolen) > 0
    assert "of them the peer&#x27;s" in render(timeline)   # the chart's tooltips carry the steal lines
