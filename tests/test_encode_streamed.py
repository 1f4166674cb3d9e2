"""`excamera encode -o LOCAL --workers N` writes its output as the batches' chunks become final
(``excamera.commands.encode_output``; ``docs/design/data-path.md``): the temporary file holds the
first batch's frames while a later batch is still being rebased, every chunk is checked against
the digest the coordinator accepted, and the file appears only when the job succeeds."""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path

import pytest

from common import CLIPS_DIR

TESTS = Path(__file__).resolve().parent
CLIP = CLIPS_DIR / "RTn23_80x44p15_15f.y4m"   # 80x44, 15 frames
#: Chunks of 4 frames, batches of 2 chunks: rebase-00000 makes frames 0-7, rebase-00001 8-14.
COMMON = ["--chunk-frames", "4", "--batch-chunks", "2", "--cq-level", "28", "--first-pass", "native"]
FIRST_BATCH = 8


def cli(*args) -> int:
    from excamera.cli import main

    return main([str(a) for a in args])


@pytest.fixture
def gated(monkeypatch, tmp_path):
    """Every rebase task but the first batch's waits, in its worker, until the output being
    written holds the first batch's frames (``streamed_test_ops``); ``gated(out, fail)`` sets it
    up for the output ``out`` and returns where the gate keeps its copies of the file it saw."""
    import coordinator.api
    import coordinator.excamera_job as ej
    from coordinator.fsm import FSM, State

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p))
    real_run_job, real_rebase_fsm = coordinator.api.run_job, ej.rebase_fsm

    def run_job(job, config=None, *, ops_modules=(), **kw):
        return real_run_job(job, config, ops_modules=tuple(ops_modules) + ("streamed_test_ops",), **kw)

    def setup(out: Path, fail: bool = False, records: int = FIRST_BATCH) -> Path:
        snapshots = tmp_path / "seen"

        def rebase_fsm(work_s, checked=False):
            real = real_rebase_fsm(work_s, checked)
            gate = State("gate", "test-gate-on-output",
                         {"pattern": str(out.parent / f".{out.name}.*.tmp"), "records": records,
                          "snapshots": str(snapshots), "fail": fail}, {"ok": real.initial}, work_s)
            return FSM(real.name, "gate", (gate,) + real.states)

        monkeypatch.setattr(ej, "rebase_fsm", rebase_fsm)
        monkeypatch.setattr(coordinator.api, "run_job", run_job)
        return snapshots

    return setup


def _reference_and_target(tmp_path):
    """``--workers 0``'s output (written), and where the streamed run writes, each alone in a
    directory of its own."""
    zero = tmp_path / "zero" / "out.ivf"
    zero.parent.mkdir()
    assert cli("encode", CLIP, "-o", zero, "--workers", 0, *COMMON) == 0
    out = tmp_path / "two" / "out.ivf"
    out.parent.mkdir()
    return zero, out


def test_first_batch_is_in_the_file_while_the_next_is_rebased(tmp_path, gated):
    from streamed_test_ops import ivf_records

    zero, out = _reference_and_target(tmp_path)
    seen = gated(out)
    assert cli("encode", CLIP, "-o", out, "--workers", 2, "--timeline", tmp_path / "t.json", *COMMON) == 0
    final = out.read_bytes()
    assert final == zero.read_bytes()
    assert os.listdir(out.parent) == ["out.ivf"]  # the temporary file became it
    # What batch 1's rebase task saw before it began: the first batch's frames already written,
    # before the header's frame count (0 until the end), exactly as they end up in the file.
    # (each attempt of it: a gate slower than its peers may get a duplicate, which sees it too)
    snapshots = list(seen.iterdir())
    assert snapshots
    for snapshot in snapshots:
        held = snapshot.read_bytes()
        assert snapshot.name.startswith("rebase-00001-")
        assert ivf_records(str(snapshot)) == FIRST_BATCH and int.from_bytes(held[24:28], "little") == 0
        assert held[32:] == final[32:len(held)] and len(held) < len(final)
    # No task copies the bytes into the job's storage: the stitch (the chain proved) is the last.
    tasks = set(json.loads((tmp_path / "t.json").read_text())["tasks"])
    assert "stitch" in tasks and not any(t.startswith(("assemble", "join")) for t in tasks)


@pytest.mark.parametrize("ext", ["ivf", "webm"])
def test_a_job_that_fails_after_the_first_batch_leaves_nothing(tmp_path, gated, capsys, ext):
    out = tmp_path / "out" / f"out.{ext}"
    out.parent.mkdir()
    # (.webm: the muxer holds a cluster until it closes it; the gate fails once the file exists)
    seen = gated(out, fail=True, records=FIRST_BATCH if ext == "ivf" else 0)
    assert cli("encode", CLIP, "-o", out, "--workers", 2, *COMMON) == 1
    err = capsys.readouterr().err
    assert "failed on purpose after the first batch" in err and "Traceback" not in err
    assert any(seen.iterdir())              # it failed with the file under way
    assert os.listdir(out.parent) == []     # and nothing is left: no output, no temporary file


def test_each_chunk_checked_against_its_accepted_digest(tmp_path):
    """The writer reads what the rebase tasks' events say was accepted; a chunk whose stored
    bytes differ fails the output (nothing written), and the stitch's layout must name exactly
    the chunks written, in order."""
    from codec.y4m import read_y4m
    from coordinator.api import RunConfig, run_job
    from coordinator.excamera_job import JoinPlan, encode_inputs, encode_job
    from excamera.commands.base import write_ivf
    from excamera.commands.encode_output import StreamedOutput, rebase_batches
    from media.excamera_encode import EncodeSettings, encode_frames
    from protos import jobs_pb2 as jpb
    from storage import LocalStorage, StorageError

    header, frames = read_y4m(CLIP)
    rate, (h, w) = header.rate, frames[0].y.shape
    settings = EncodeSettings(4, 2, 28, "native", 1)
    job = encode_job(len(frames), w, h, settings, join=JoinPlan(streamed=True), rate=rate)
    assert job.result_tasks == ("stitch",) and not any(t.fsm.endswith(("assemble", "join")) for t in job.tasks)
    r = run_job(job, RunConfig(workers=1, storage=str(tmp_path / "st"), timeout_s=240),
                inputs=encode_inputs(frames, rate, settings), ops_modules=("worker.codec_ops",))
    store = LocalStorage(tmp_path / "st").scoped(r.storage_prefix)
    batches = rebase_batches(job)
    assert [t for t, _ in batches] == ["rebase-00000", "rebase-00001"]

    def events(tamper=None):
        for task, keys in reversed(batches):  # (out of order: written in order all the same)
            ev = jpb.JobEvent(kind="task", task_id=task, to_state="done")
            for k in keys:
                ref = store.digest(k)
                ev.objects.add(key=k, sha256=ref.sha256 if k != tamper else "0" * 64, size=ref.size)
            yield ev

    zero = tmp_path / "zero.ivf"
    write_ivf(str(zero), encode_frames(frames, settings, rate), w, h, rate)
    out = tmp_path / "out" / "o.ivf"
    out.parent.mkdir()
    s = StreamedOutput(str(out), batches, w, h, rate, len(frames))
    s.start(store)
    for ev in events():
        s.on_event(ev)
    assert s.finish(r.read("stitch")) == os.path.getsize(zero) - 32 - 12 * len(frames)
    assert out.read_bytes() == zero.read_bytes() and len(s.written) == 4
    out.unlink()

    second = batches[1][1][0]
    s = StreamedOutput(str(out), batches, w, h, rate, len(frames))
    s.start(store)
    for ev in events(tamper=second):
        s.on_event(ev)
    with pytest.raises(StorageError, match="do not match the digest"):
        s.finish(r.read("stitch"))
    assert os.listdir(out.parent) == []

    # Streamed chunks that are not the ones the stitch laid out: refused.
    s = StreamedOutput(str(out), batches, w, h, rate, len(frames))
    s.start(store)
    for ev in events():
        s.on_event(ev)
    layout = json.loads(r.read("stitch"))
    layout["chunks"][0][1] = "f" * 64
    with pytest.raises(StorageError, match="not the one the stitch proved"):
        s.finish(json.dumps(layout).encode())
    assert glob.glob(str(out.parent / "*")) + glob.glob(str(out.parent / ".*")) == []


# -- through a running coordinator (``excamera encode --coordinator``) -----------------------------

#: ``excamera coordinator serve`` whose launched workers also import ``streamed_test_ops`` (the
#: daemon has no option for test operations: its launcher is given the module here).
SERVE_WITH_TEST_OPS = """
import sys
import coordinator.launcher as launcher
real = launcher.LocalLauncher.__init__
def init(self, certs_dir, **kw):
    real(self, certs_dir, **dict(kw, ops_modules=tuple(kw.get("ops_modules", ())) + ("streamed_test_ops",)))
launcher.LocalLauncher.__init__ = init
from excamera.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    """A running coordinator daemon (``keep=False``: a job's objects go once its results are
    fetched); yields (address, client certs dir, its storage directory)."""
    import signal
    import subprocess
    import sys

    from coordinator_daemon import excamera, free_port, wait_listening
    from security import tls

    d = tmp_path_factory.mktemp("daemon")
    certs, client = d / "certs", d / "client"
    assert excamera("certs", "init", certs).returncode == 0
    client.mkdir()
    for name in tls.WORKER_FILES:
        (client / name).write_bytes((certs / name).read_bytes())
    port = free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(TESTS.parent), str(TESTS),
                                                                   os.environ.get("PYTHONPATH")) if p))
    with open(d / "daemon.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-c", SERVE_WITH_TEST_OPS, "coordinator", "serve", "--listen",
                                 f"127.0.0.1:{port}", "--certs", str(certs), "--storage", str(d / "store"),
                                 "--state-dir", "none"], cwd=TESTS.parent, stderr=log, stdout=log, env=env)
    try:
        wait_listening(proc, port, d / "daemon.log")
        yield f"127.0.0.1:{port}", client, d / "store"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, (d / "daemon.log").read_text()


def _job_objects(store: Path) -> list[str]:
    return sorted(str(p.relative_to(store)) for p in store.rglob("*") if p.is_file()) if store.exists() else []


def test_remote_first_batch_is_in_the_file_while_the_next_is_rebased(tmp_path, gated, daemon):
    import time

    from streamed_test_ops import ivf_records

    address, client, store = daemon
    zero, out = _reference_and_target(tmp_path)
    seen = gated(out)
    assert cli("encode", CLIP, "-o", out, "--workers", 2, "--coordinator", address, "--certs", client,
               *COMMON) == 0
    final = out.read_bytes()
    assert final == zero.read_bytes()
    assert os.listdir(out.parent) == ["out.ivf"]
    snapshots = list(seen.iterdir())
    assert snapshots
    for snapshot in snapshots:  # what batch 1's rebase task saw before it began (as embedded)
        held = snapshot.read_bytes()
        assert snapshot.name.startswith("rebase-00001-")
        assert ivf_records(str(snapshot)) == FIRST_BATCH and int.from_bytes(held[24:28], "little") == 0
        assert held[32:] == final[32:len(held)] and len(held) < len(final)
    # Every chunk and the layout were fetched (the first batch's while the job ran, released
    # after): the daemon keeps none of the job's objects once its workers have hung up.
    deadline = time.monotonic() + 60
    while (left := [k for k in _job_objects(store) if k.startswith("jobs/")]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert left == []


def test_remote_job_that_fails_after_the_first_batch_leaves_nothing(tmp_path, gated, daemon, capsys):
    address, client, _ = daemon
    out = tmp_path / "out" / "out.ivf"
    out.parent.mkdir()
    seen = gated(out, fail=True)
    assert cli("encode", CLIP, "-o", out, "--workers", 2, "--coordinator", address, "--certs", client,
               *COMMON) == 1
    err = capsys.readouterr().err
    assert "failed on purpose after the first batch" in err and "Traceback" not in err
    assert any(seen.iterdir())              # it failed with the first batch in the file
    assert os.listdir(out.parent) == []     # and nothing is left


def test_fetch_serves_a_running_jobs_done_tasks_objects_only(tmp_path, gated, daemon):
    """While a job runs, its done rebase task's "done" event (over Watch) names the chunks the
    coordinator accepted, and Fetch serves them, re-verified; a task not done yet, a result not
    made yet, another job's object, or a job that has ended: refused."""
    import asyncio
    import hashlib

    import grpc

    from codec.y4m import read_y4m
    from coordinator.api import RemoteCoordinator, RemoteObjects, _submit_parts, fetch_remote
    from coordinator.excamera_job import LAYOUT_KEY, JoinPlan, encode_inputs, encode_job
    from coordinator.fsm import job_to_proto
    from excamera.commands.encode_output import rebase_batches
    from media.excamera_encode import EncodeSettings
    from protos import jobs_pb2 as jpb
    from protos import jobs_pb2_grpc as jpb_grpc
    from security import tls
    from storage import StorageError

    address, client, _ = daemon
    gated(tmp_path / "never" / "out.ivf")  # batch 1's rebase waits for a file nobody writes
    header, frames = read_y4m(CLIP)
    rate, (h, w) = header.rate, frames[0].y.shape
    settings = EncodeSettings(4, 2, 28, "native", 1)
    job = encode_job(len(frames), w, h, settings, join=JoinPlan(streamed=True), rate=rate)
    (first, first_keys), (_, later_keys) = rebase_batches(job)
    inputs = encode_inputs(frames, rate, settings)
    remote = RemoteCoordinator(address, certs=str(client))

    async def held_job(stub):
        """A submitted job (its reference) and its first batch's "done" event, while batch 1 waits."""
        ref = await stub.SubmitStream(_submit_parts(job_to_proto(job, workers=1), inputs), timeout=60)
        async for ev in stub.Watch(jpb.JobRef(job_id=ref.job_id), timeout=240):
            assert not (ev.kind == "job" and ev.to_state != "running"), ev
            if ev.kind == "task" and ev.task_id == first and ev.to_state == "done":
                return ref, ev
        raise AssertionError("the watch ended early")

    async def refused(stub, job_id, job_key, key):
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await fetch_remote(stub, job_id, job_key, key)
        return e.value.code(), e.value.details()

    async def main():
        bundle = tls.load(str(client), need=tls.WORKER_FILES)
        async with grpc.aio.secure_channel(address, tls.client_credentials(bundle)) as ch:
            stub = jpb_grpc.JobsStub(ch)
            (a, ev), (b, _) = await asyncio.gather(held_job(stub), held_job(stub))
            try:
                # The event names the batch's chunks with the digests the coordinator accepted.
                assert sorted(o.key for o in ev.objects) == sorted(first_keys)
                accepted = {o.key: o for o in ev.objects}
                for key in first_keys:
                    data = await fetch_remote(stub, a.job_id, a.job_key, key)
                    assert hashlib.sha256(data).hexdigest() == accepted[key].sha256
                    assert len(data) == accepted[key].size
                    # the same through the blocking reader the streamed output uses
                    reader = RemoteObjects(remote, a.job_id, a.job_key)
                    try:
                        assert await asyncio.to_thread(reader.get, key) == data
                        with pytest.raises(StorageError, match="failed_precondition"):
                            await asyncio.to_thread(reader.get, later_keys[0])
                        with pytest.raises(StorageError, match="failed_precondition: .* is running"):
                            await asyncio.to_thread(reader.release, [key])  # (a succeeded job's only)
                    finally:
                        reader.close()
                for key in (later_keys[0], LAYOUT_KEY, "no/such/object"):  # not done, not made, none
                    code, detail = await refused(stub, a.job_id, a.job_key, key)
                    assert code == grpc.StatusCode.FAILED_PRECONDITION and "is running" in detail
                # another job's done chunk: only with that job's key
                code, _ = await refused(stub, b.job_id, a.job_key, first_keys[0])
                assert code == grpc.StatusCode.PERMISSION_DENIED
                assert await fetch_remote(stub, b.job_id, b.job_key, first_keys[0])
            finally:
                for r in (a, b):
                    await stub.Cancel(jpb.JobRef(job_id=r.job_id, job_key=r.job_key), timeout=30)
            async for end in stub.Watch(jpb.JobRef(job_id=a.job_id), timeout=60):
                pass
            assert end.kind == "job" and end.to_state == "cancelled"
            code, detail = await refused(stub, a.job_id, a.job_key, first_keys[0])  # ended: as before
            assert code == grpc.StatusCode.FAILED_PRECONDITION and "is cancelled" in detail

    asyncio.run(main())
