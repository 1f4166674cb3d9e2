"""End-to-end runtime tests: the ExCamera-shaped job over real worker processes, kill -9,
stragglers, verification of results, the Jobs service, the load benchmark (small)."""

import asyncio
import json
import os
import random
import signal
from pathlib import Path

import pytest

from coordinator.api import JobFailed, RemoteCoordinator, RunConfig, embedded_coordinator, run_job, submit_remote
from coordinator.bench import bench
from coordinator.fsm import DONE, FSM, Job, State, Task
from coordinator.shaped import chunk_fsm, shaped_inputs, shaped_job
from security import tls
from worker.fakecodec import reference_output

TESTS = Path(__file__).resolve().parent


def chunks_for(n, seed=0):
    rng = random.Random(seed)
    return [rng.randbytes(rng.randrange(100, 3000)) for _ in range(n)]


def fsm_pairs(result_or_timeline, task_prefix):
    """(state, next state) pairs seen in the winning attempts of tasks starting with the prefix."""
    pairs = set()
    for tid, attempts in result_or_timeline["tasks"].items():
        if tid.startswith(task_prefix):
            for a in attempts:
                if a["status"] == "succeeded":
                    states = [s for _, s in a["history"]]
                    pairs.update(zip(states, states[1:]))
    return pairs


def test_shaped_job_matches_reference_and_covers_every_edge(tmp_path):
    chunks = chunks_for(6)
    tl = tmp_path / "t.json"
    r = run_job(shaped_job(6, state_bytes=200_000),
                RunConfig(workers=3, spare=1, storage=str(tmp_path / "s"), timeline=str(tl), timeout_s=120),
                inputs=shaped_inputs(chunks))
    assert r.read("stitch") == reference_output(chunks, 200_000)
    timeline = json.loads(tl.read_text())
    assert {(a, b) for a, _, b in chunk_fsm().edges()} == fsm_pairs(timeline, "chunk-")
    assert fsm_pairs(timeline, "stitch") == {("stitch", DONE)}
    assert len(timeline["workers"]) >= 3 and timeline["status"] == "succeeded"
    # Late binding: 6 chunks + stitch over 4 workers, so workers took several tasks each.
    busy = [w for w in timeline["workers"] if any(":" in label for _, label in w["history"])]
    assert len(busy) <= 4
    from coordinator.timeline import render

    svg = render(timeline)
    assert svg.startswith("<svg") and svg.count("<rect") > 7 * 6 and "chain-step" in svg


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_kill_9_workers_at_random_moments(tmp_path, seed):
    """Several workers are killed with SIGKILL mid-job; the job still finishes, byte-identical."""
    rng = random.Random(seed)
    chunks = chunks_for(8, seed)
    expected = reference_output(chunks, 100_000)

    async def go():
        async with embedded_coordinator(str(tmp_path)) as c:
            job_id, _ = await c.submit(shaped_job(8, state_bytes=100_000, work_s=0.3),
                                       inputs=shaped_inputs(chunks), workers=4, spare=1)
            done = asyncio.ensure_future(c.wait(job_id))
            kills = []
            while len(kills) < 4 and not done.done():
                await asyncio.sleep(rng.uniform(0.3, 0.9))
                pids = c.launcher.pids(job_id)
                if pids:
                    pid = rng.choice(pids)
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                    assert b"worker" in cmdline and any(a.endswith(b"excamera") for a in cmdline)
                    os.kill(pid, signal.SIGKILL)
                    kills.append(pid)
            outcome = await asyncio.wait_for(done, 120)
            lost = sum(t.lost for t in c.engine.jobs[job_id].tasks.values())
            return outcome, kills, lost

    outcome, kills, lost = asyncio.run(go())
    assert outcome.status == "succeeded", outcome.error
    assert len(kills) >= 3 and lost >= 1  # the kills really interrupted tasks
    ref = outcome.objects["stitch"]["stitch.object"]
    data = (Path(outcome.storage_root) / outcome.storage_prefix / ref.key).read_bytes()
    assert data == expected


def test_straggler_reissued_first_valid_result_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(TESTS))
    slow = FSM("slow-chunk", "maybe-slow", (
        State("maybe-slow", "test-slow-first-attempt", {"task": "chunk-0002", "seconds": 60.0},
              {"ok": "first-pass"}, timeout_s=1.0),) + chunk_fsm().states)
    base = shaped_job(4, state_bytes=50_000)
    tasks = tuple(Task(t.task_id, "slow-chunk", t.params, t.after) if t.fsm == "excamera-chunk" else t
                  for t in base.tasks)
    job = Job("straggler", base.fsms + (slow,), tasks, base.result_tasks)
    chunks = chunks_for(4, 7)
    r = run_job(job, RunConfig(workers=4, spare=1, storage=str(tmp_path), timeout_s=90),
                inputs=shaped_inputs(chunks), ops_modules=("runtime_test_ops",))
    assert r.read("stitch") == reference_output(chunks, 50_000)
    attempts = r.timeline["tasks"]["chunk-0002"]
    assert [a["status"] for a in attempts] == ["superseded", "succeeded"]


def test_never_success_with_unverified_or_missing_results(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(TESTS))
    for op in ("test-lie-object", "test-ghost-object"):
        job = Job("liar", (FSM("f", "a", (State("a", op, {"key": "out/x"}, {"ok": DONE}),)),),
                  (Task("t0", "f"),))
        with pytest.raises(JobFailed, match="unverified result object: storage key 'out/x'"):
            run_job(job, RunConfig(workers=1, storage=str(tmp_path), max_attempts=2, timeout_s=60),
                    ops_modules=("runtime_test_ops",))


def test_jobs_service_submit_watch_list_cancel(tmp_path):
    certs = tmp_path / "certs"
    chunks = chunks_for(3, 3)
    sleeper = Job("sleeper", (FSM("s", "a", (State("a", "sleep", {"seconds": 60.0}, {"ok": DONE}),)),),
                  (Task("t0", "s"),))

    async def go():
        import grpc

        from protos import jobs_pb2 as jpb
        from protos import jobs_pb2_grpc as jpb_grpc

        async with embedded_coordinator(str(tmp_path / "s")) as c:
            tls.write(c.bundle.for_worker(), certs)
            events = []
            r = await submit_remote(shaped_job(3, state_bytes=1000), RemoteCoordinator(c.address, str(certs)),
                                    inputs=shaped_inputs(chunks), workers=2, on_event=events.append)
            (ref,) = r.objects[""].values()
            data = (Path(c.storage.root) / r.storage_prefix / ref.key).read_bytes()
            assert r.read("") == data  # fetched over the Jobs service, checked against its digest
            kinds = {e.kind for e in events}
            async with grpc.aio.secure_channel(c.address, tls.client_credentials(c.bundle.for_worker())) as ch:
                stub = jpb_grpc.JobsStub(ch)
                listed = await stub.List(jpb.ListRequest())
                ref2 = await stub.Submit(__import__("coordinator.fsm", fromlist=["x"]).job_to_proto(sleeper))
                await asyncio.sleep(0.5)
                with pytest.raises(grpc.aio.AioRpcError) as denied:  # the job key is the submitter's
                    await stub.Cancel(jpb.JobRef(job_id=ref2.job_id, job_key="x" * 43))
                assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
                cancelled = await stub.Cancel(ref2)
                final = [e async for e in stub.Watch(jpb.JobRef(job_id=ref2.job_id))][-1]
                bad = jpb.JobSpec(name="bad")  # no tasks
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    await stub.Submit(bad)
            return data, kinds, listed, cancelled, final, e.value

    data, kinds, listed, cancelled, final, err = asyncio.run(go())
    assert data == reference_output(chunks, 1000)
    assert {"job", "task", "transition", "attempt"} <= kinds
    assert [(j.status, j.tasks, j.done) for j in listed.jobs] == [("succeeded", 4, 4)]
    assert cancelled.cancelled and final.to_state == "cancelled"
    assert "no tasks" in err.details()


def test_load_benchmark_small():
    """The load benchmark's smaller variant: correctness, not time (the bench checks every
    relayed state's digest against its sender's)."""
    figures = asyncio.run(bench(workers=50, relay_mb=50, state_mb=4, processes=1, quiet=True))
    assert figures["transitions"] == 50 * 5
    assert figures["relayed_mb"] == pytest.approx(48.0, abs=0.01)  # 12 states of 4 MiB (+ empty ones)


def test_a_job_s_held_states_outlive_the_rendezvous_default_time_to_live(tmp_path):
    """The coordinator releases mailboxes itself; the rendezvous's 600 s default would drop a
    state a chunk re-issued later still needs. An explicit limit still wins."""
    from coordinator.server import HELD_TTL_S
    from rendezvous.core import DEFAULT_TTL_S, Message

    async def main():
        async with embedded_coordinator(str(tmp_path), launch_workers=False) as c:
            core = c._rendezvous_server.servicer.core
            job_id, _ = await c.submit(shaped_job(2), workers=1, launch=False)
            assert core._job(job_id).limits.ttl_s == HELD_TTL_S > 100 * DEFAULT_TTL_S
            body = b"state"
            import hashlib
            core.put(job_id, Message("chunk-0", "chunk-1", "fp-state", len(body), hashlib.sha256(body).hexdigest(),
                                     0, body), now=0.0)
            assert core.expire(2 * DEFAULT_TTL_S) == [] and core.held(job_id)[0] == 1
            assert len(core.expire(HELD_TTL_S + 1)) == 1
            other, _ = await c.submit(shaped_job(2), workers=1, launch=False,
                                      rendezvous_limits={"ttl_s": 5.0})
            assert core._job(other).limits.ttl_s == 5.0
    asyncio.run(main())
