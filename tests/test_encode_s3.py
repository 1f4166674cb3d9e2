"""Whole jobs with their objects on S3 (moto's server on loopback, the ``s3_server`` fixture,
reached through ``AWS_ENDPOINT_URL_S3`` as AWS is): ``excamera encode --workers 2 --storage
s3://...`` byte-identical to local storage and leaving nothing behind (unless ``--keep``); bad
input in one line; ``excamera coordinator serve --storage s3://...``; and the coordinator removing
a failed job's objects."""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from common import CLIPS_DIR, ROOT, sigint_default
from storage import LocalStorage

TESTS = Path(__file__).resolve().parent
CLIP = CLIPS_DIR / "RTn23_80x44p15_15f.y4m"   # 80x44, 15 frames (as test_encode_distributed's CLI test)
ARGS = ["--chunk-frames", "4", "--batch-chunks", "2", "--cq-level", "28", "--first-pass", "native"]
_BUCKETS = itertools.count()


def excamera(*args, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "excamera", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def env(s3_child_env):
    return s3_child_env


@pytest.fixture
def bucket(s3_server):
    return s3_server.bucket(f"encode-{next(_BUCKETS)}")


def _took(stderr: str) -> float:
    return float(re.search(r", ([0-9.]+) s\n", stderr)[1])


def one_line_error(p, text: str) -> None:
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 1 and len(lines) == 1, p.stderr
    assert lines[0].startswith("excamera: error: ") and text in lines[0], p.stderr


@pytest.mark.slow
def test_encode_workers_2_on_s3_same_bytes_as_local_and_nothing_left(s3_server, env, bucket, tmp_path):
    local, on_s3, kept, in_dir = (tmp_path / f"{n}.ivf" for n in ("local", "s3", "kept", "dir"))
    r = excamera("encode", CLIP, "-o", local, "--workers", 2, *ARGS, env=env)
    assert r.returncode == 0, r.stderr
    r = excamera("encode", CLIP, "-o", on_s3, "--workers", 2, "--storage", f"s3://{bucket}/team/run", *ARGS, env=env)
    assert r.returncode == 0, r.stderr
    assert "15 frames, 80x44" in r.stderr and "2 workers" in r.stderr
    assert on_s3.read_bytes() == local.read_bytes()
    assert s3_server.keys(bucket) == []  # every object of the job, and the pre-flight's probe, gone
    print(f"\nencode --workers 2: S3 storage {_took(r.stderr):.2f} s")

    r = excamera("encode", CLIP, "-o", kept, "--workers", 2, "--storage", f"s3://{bucket}/team/run", "--keep",
                 *ARGS, env=env)
    assert r.returncode == 0, r.stderr
    assert kept.read_bytes() == local.read_bytes()
    job = re.search(r"kept the job's objects in s3://[^/]+/team/run/jobs/(job-[0-9a-f-]+)", r.stderr)[1]
    keys = s3_server.keys(bucket)
    prefix = f"team/run/jobs/{job}/"
    assert keys and all(k.startswith(prefix) for k in keys)
    # No whole stitched object, and no parts: the client read the chunks from S3 as their batches
    # ended and wrote them out itself (excamera.commands.encode_output).
    assert {f"{prefix}out/layout.json", f"{prefix}input/chunk-00000.y4m", f"{prefix}out/chunk-00003.ivf"} <= set(keys)
    assert not [k for k in keys if k.startswith(f"{prefix}out/parts/") or k == f"{prefix}output.ivf"]

    # A directory as --storage: the same contract.
    store = tmp_path / "store"
    r = excamera("encode", CLIP, "-o", in_dir, "--workers", 2, "--storage", store, *ARGS, env=env)
    assert r.returncode == 0, r.stderr
    assert in_dir.read_bytes() == local.read_bytes() and LocalStorage(store).list() == []


def test_encode_storage_bad_input_one_line_in_seconds(s3_server, env, bucket, tmp_path):
    out = tmp_path / "o.ivf"
    cases = []
    # A bucket that does not exist.
    cases.append((env, "s3://no-such-bucket/x", "--storage s3://no-such-bucket/x: no such bucket 'no-such-bucket'"))
    # No credentials anywhere (no environment, no ~/.aws: AWS_CONFIG_FILE and the credentials file are /dev/null).
    bare = {k: v for k, v in env.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    cases.append((bare, f"s3://{bucket}/x", f"--storage s3://{bucket}/x: no AWS credentials"))
    # An endpoint nobody answers on.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cases.append((dict(env, AWS_ENDPOINT_URL_S3=f"http://127.0.0.1:{port}"), f"s3://{bucket}/x",
                  "Could not connect to the endpoint URL"))
    # Not a storage URL at all.
    cases.append((env, "s3://Bad_Bucket/x", "not a valid bucket name"))
    for e, url, text in cases:
        # (timeout: a hang-catcher, e.g. retrying an endpoint that never answers)
        p = excamera("encode", CLIP, "-o", out, "--workers", 2, "--storage", url, *ARGS, env=e, timeout=120)
        one_line_error(p, text)
    assert s3_server.keys(bucket) == [] and not out.exists()
    # Usage: --keep without --storage, --storage without workers or with --coordinator.
    for args in (["--workers", 2, "--keep"], ["--workers", 0, "--storage", f"s3://{bucket}/x"],
                 ["--workers", 2, "--storage", f"s3://{bucket}/x", "--coordinator", "127.0.0.1:1", "--certs", tmp_path]):
        p = excamera("encode", CLIP, "-o", out, *args, *ARGS, env=env, timeout=60)
        assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
    assert s3_server.keys(bucket) == []


@pytest.mark.slow
def test_encode_interrupted_leaves_nothing(s3_server, env, bucket, tmp_path):
    """Ctrl-C while the job runs: the job's objects go with it."""
    out = tmp_path / "o.ivf"
    p = subprocess.Popen([sys.executable, "-m", "excamera", "encode", str(CLIP), "-o", str(out), "--workers", "2",
                          "--storage", f"s3://{bucket}/p", *ARGS], cwd=ROOT, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, preexec_fn=sigint_default)
    try:
        deadline = time.monotonic() + 60
        while not any("/pass/" in k for k in s3_server.keys(bucket)):  # the workers are at it
            assert p.poll() is None and time.monotonic() < deadline, "the job never wrote a first pass"
            time.sleep(0.05)
        p.send_signal(signal.SIGINT)
        assert p.wait(timeout=60) == 130
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert s3_server.keys(bucket) == [] and not out.exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_coordinator_serve_on_s3_removes_a_job_once_fetched(s3_server, env, bucket, tmp_path):
    from coordinator.api import RemoteCoordinator, RunConfig, run_job
    from coordinator.shaped import shaped_inputs, shaped_job
    from worker.fakecodec import reference_output

    certs = tmp_path / "certs"
    assert excamera("certs", "init", certs, env=env).returncode == 0
    client = tmp_path / "client"
    client.mkdir()
    for name in ("ca.pem", "client.pem", "client.key"):
        (client / name).write_bytes((certs / name).read_bytes())
    one_line_error(excamera("coordinator", "serve", "--listen", "127.0.0.1:0", "--certs", certs, "--storage",
                            "s3://no-such-bucket/x", env=env, timeout=60), "no such bucket")
    port = _free_port()
    coord = subprocess.Popen([sys.executable, "-m", "excamera", "coordinator", "serve", "--listen",
                              f"127.0.0.1:{port}", "--certs", str(certs), "--storage", f"s3://{bucket}/svc"],
                             cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        lines = iter(coord.stderr.readline, "")
        line = next(l for l in lines if l.startswith("excamera coordinator: serving on"))
        assert line.rstrip().endswith(f"storage s3://{bucket}/svc"), line
        threading.Thread(target=lambda: [None for _ in lines], daemon=True).start()  # drain its log
        chunks = [b"a" * 500, b"b" * 700, b"c" * 300]
        r = run_job(shaped_job(3, state_bytes=5000),
                    RunConfig(RemoteCoordinator(f"127.0.0.1:{port}", str(client)), workers=2),
                    inputs=shaped_inputs(chunks))
        assert r.read("") == reference_output(chunks, 5000)
        deadline = time.monotonic() + 30
        while s3_server.keys(bucket) and time.monotonic() < deadline:  # removed after the fetch
            time.sleep(0.1)
        assert s3_server.keys(bucket) == []
    finally:
        coord.send_signal(signal.SIGTERM)
        code = coord.wait(timeout=30)
    assert code == 0


@pytest.mark.slow
def test_coordinator_keep_false_removes_a_failed_job(s3_server, bucket, monkeypatch):
    """A job that fails after writing (an unverifiable result) leaves nothing in the bucket; the
    same job with keep=True leaves its object."""
    from coordinator.fsm import DONE, FSM, Job, State, Task
    from coordinator.launcher import LocalLauncher
    from coordinator.server import Coordinator
    from security import tls

    for k, v in s3_server.env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), str(ROOT)]))
    job = Job("liar", (FSM("f", "a", (State("a", "test-lie-object", {"key": "out/x"}, {"ok": DONE}),)),),
              (Task("t0", "f"),))

    async def run(keep: bool) -> str:
        bundle = tls.generate()
        with tempfile.TemporaryDirectory() as certs:
            tls.write(bundle.for_worker(), certs, overwrite=True)
            c = Coordinator(bundle, f"s3://{bucket}/co", launcher=LocalLauncher(certs, ops_modules=("runtime_test_ops",)),
                            keep=keep)
            await c.start()
            try:
                job_id, _ = await c.submit(job, workers=1, max_attempts=1)
                outcome = await asyncio.wait_for(c.wait(job_id), 60)
                assert outcome.status == "failed" and "unverified result object" in outcome.error
                assert outcome.storage_root == f"s3://{bucket}/co"
                if not keep:
                    deadline = time.monotonic() + 30
                    while s3_server.keys(bucket) and time.monotonic() < deadline:
                        await asyncio.sleep(0.1)
            finally:
                await c.stop()
            return job_id

    job_id = asyncio.run(run(keep=False))
    assert s3_server.keys(bucket) == []
    job_id = asyncio.run(run(keep=True))
    assert s3_server.keys(bucket) == [f"co/jobs/{job_id}/out/x"]


def test_a_submission_that_fails_midway_leaves_nothing(s3_server, bucket, monkeypatch):
    """Inputs stored several at a time; when producing them fails half-way, what was stored goes."""
    from coordinator.server import Coordinator
    from coordinator.shaped import shaped_job
    from security import tls

    for k, v in s3_server.env.items():
        monkeypatch.setenv(k, v)

    def inputs():
        for i in range(20):
            yield f"input/chunk-{i:04d}", bytes([i]) * 1000
        raise OSError("the source video went away")

    async def go():
        c = Coordinator(tls.generate(), f"s3://{bucket}/sub")
        await c.start()
        try:
            with pytest.raises(OSError, match="went away"):
                await c.submit(shaped_job(21), inputs=inputs(), job_id="job-half")
        finally:
            await c.stop()

    asyncio.run(go())
    assert s3_server.keys(bucket) == []
