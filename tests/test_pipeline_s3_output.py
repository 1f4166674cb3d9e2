"""``excamera pipeline run ... -o output_0=s3://BUCKET/KEY.ivf`` (``pipeline.ivf_join``): a chunks
sink joined into one S3 multipart upload by the job's own tasks, on moto's S3 server on loopback.
The bytes are the local ``-o out.ivf``'s; a low part minimum (both sides: the server runs in this
process) makes several parts; this process never reads the sink's chunks (its storage reads are
recorded); a failure aborts the upload (nothing at the key, no upload left open); outputs that
cannot be joined in parts are refused in one line."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys

import pytest

from common import ROOT
from coordinator_daemon import Daemon, certs  # noqa: F401 - the certs fixture
from coordinator.config import RunConfig
from pipeline.run import PipelineError, run_pipeline

CLIPS = ROOT / "tests" / "data" / "clips"
GOP10 = CLIPS / "compressed" / "carphone_176x144_36f_gop10.mp4"
GRAYSCALE = ROOT / "pipelines" / "grayscale.json"
PART_MIN = 1000
_BUCKETS = itertools.count()
PIPELINE_DIR = str(ROOT / "pipeline") + os.sep


@pytest.fixture
def s3(s3env, monkeypatch):
    """The S3 server with its part minimum lowered, a fresh bucket holding the clip, and the
    environment pointing there (this process and the workers it starts)."""
    import moto.s3.models

    monkeypatch.setattr(moto.s3.models, "S3_UPLOAD_PART_MIN_SIZE", PART_MIN)
    bucket = s3env.bucket(f"pipeout-{next(_BUCKETS)}")
    s3env.client().put_object(Bucket=bucket, Key="in/clip.mp4", Body=GOP10.read_bytes())
    return s3env, bucket


@pytest.fixture
def client_reads(monkeypatch):
    """The storage keys read by the pipeline's client code in this process (a ``get`` with a
    frame of ``pipeline/`` on its stack; the embedded coordinator's own verification is not)."""
    from storage.core import LocalStorage

    reads: list[str] = []
    original = LocalStorage.get

    def get(self, key):
        f = sys._getframe(1)
        while f is not None and not f.f_code.co_filename.startswith(PIPELINE_DIR):
            f = f.f_back
        if f is not None:
            reads.append(key)
        return original(self, key)

    monkeypatch.setattr(LocalStorage, "get", get)
    return reads


def _run(src: str, out: str, workers: int, **kw):
    return run_pipeline(str(GRAYSCALE), {"input_0": src}, {"output_0": out}, RunConfig(workers=workers),
                        frames_per_chunk=3, audio=False, **kw)


def _parts(s3_server, bucket: str, key: str) -> tuple[bytes, int]:
    got = s3_server.client().get_object(Bucket=bucket, Key=key)
    etag = got["ETag"].strip('"')
    return got["Body"].read(), int(etag.rpartition("-")[2]) if "-" in etag else 1


def _open_uploads(s3_server, bucket: str) -> list:
    return s3_server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])


@pytest.mark.slow
def test_joined_in_s3_same_bytes_as_local_in_parts_and_no_chunk_read_here(s3, client_reads, tmp_path):
    server, bucket = s3
    src = f"s3://{bucket}/in/clip.mp4"
    local = tmp_path / "local.ivf"
    chunks = _run(src, str(local), 2)["nodes"]["encode"][0]
    expect = local.read_bytes()
    assert len(expect) > 3 * PART_MIN and chunks >= 3
    # The check below can fail: writing a local output, this process reads every chunk back.
    assert sum("/n/encode/" in k for k in client_reads) == chunks
    client_reads.clear()

    summary = _run(src, f"s3://{bucket}/out/gray.ivf", 2, part_min=PART_MIN)
    data, parts = _parts(server, bucket, "out/gray.ivf")
    assert data == expect
    assert 3 <= parts <= len(expect) // PART_MIN
    assert summary["outputs"] == {"output_0": 36}
    assert not [k for k in client_reads if "/n/" in k], client_reads   # no chunk (nor anything else) read here
    assert _open_uploads(server, bucket) == [] and server.keys(bucket) == ["in/clip.mp4", "out/gray.ivf"]

    # --workers 0: the same tasks in this process, through the same operations: the same bytes.
    _run(src, f"s3://{bucket}/out/w0.ivf", 0, part_min=PART_MIN)
    data, parts = _parts(server, bucket, "out/w0.ivf")
    assert data == expect and parts >= 3


def test_a_failure_aborts_the_upload_and_leaves_nothing(s3, monkeypatch, tmp_path):
    import worker.assemble_ops
    from worker.ops import OperationError

    server, bucket = s3
    src = f"s3://{bucket}/in/clip.mp4"
    # A stage fails (workers: the job fails before any part): the upload is aborted.
    spec = {"nodes": [{"name": "decode", "stage": "decode", "config": {}},
                      {"name": "fail", "stage": "t_fail", "config": {"at": 0}},
                      {"name": "encode", "stage": "encode", "config": {}}],
            "streams": [{"src": "input_0:chunks", "dst": "decode:chunks"},
                        {"src": "decode:frames", "dst": "fail:frames"},
                        {"src": "fail:frames", "dst": "encode:frames"},
                        {"src": "encode:chunks", "dst": "output_0:chunks"}]}
    with pytest.raises(PipelineError, match="refusing frame 0"):
        run_pipeline(spec, {"input_0": src}, {"output_0": f"s3://{bucket}/out/a.ivf"},
                     RunConfig(workers=2, max_attempts=1), stage_modules=("pipeline_test_stages",),
                     frames_per_chunk=3, audio=False, part_min=PART_MIN)
    assert _open_uploads(server, bucket) == [] and server.keys(bucket) == ["in/clip.mp4"]

    # The join itself fails after a part went up (in this process, --workers 0): aborted too.
    real = worker.assemble_ops.assemble_part
    made = []

    def assemble_part(ctx, doc, g):
        if g == 1:
            assert len(_open_uploads(server, bucket)) == 1   # part 0 is up, in the open upload
            raise OperationError("part 1: the disk is on fire")
        made.append(g)
        return real(ctx, doc, g)

    monkeypatch.setattr(worker.assemble_ops, "assemble_part", assemble_part)
    with pytest.raises(PipelineError, match="the disk is on fire"):
        _run(src, f"s3://{bucket}/out/b.ivf", 0, part_min=PART_MIN)
    assert made == [0]
    assert _open_uploads(server, bucket) == [] and server.keys(bucket) == ["in/clip.mp4"]
    monkeypatch.setattr(worker.assemble_ops, "assemble_part", real)

    # The upload is complete, then another (local) output fails: the object goes too (all or none).
    import pipeline.media_io

    two = {"nodes": [{"name": "decode", "stage": "decode", "config": {}},
                     {"name": "dup", "stage": "duplicate_filter", "config": {}},
                     {"name": "e0", "stage": "encode", "config": {}}, {"name": "e1", "stage": "encode", "config": {}}],
           "streams": [{"src": "input_0:chunks", "dst": "decode:chunks"}, {"src": "decode:frames", "dst": "dup:frames"},
                       {"src": "dup:frames_0", "dst": "e0:frames"}, {"src": "dup:frames_1", "dst": "e1:frames"},
                       {"src": "e0:chunks", "dst": "output_0:chunks"}, {"src": "e1:chunks", "dst": "output_1:chunks"}]}

    def write_output(path, *args, **kw):
        assert server.keys(bucket) == ["in/clip.mp4", "out/c.ivf"]   # joined before the local outputs
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pipeline.media_io, "write_output", write_output)
    with pytest.raises(PipelineError, match="No space left"):
        run_pipeline(two, {"input_0": src}, {"output_0": f"s3://{bucket}/out/c.ivf", "output_1": str(tmp_path / "c.ivf")},
                     RunConfig(workers=0), frames_per_chunk=3, audio=False, part_min=PART_MIN)
    assert _open_uploads(server, bucket) == [] and server.keys(bucket) == ["in/clip.mp4"]
    assert not (tmp_path / "c.ivf").exists()


def _excamera(*args, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "excamera", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_cli_writes_s3_and_refuses_what_cannot_be_joined_in_one_line(s3_server, s3_child_env, tmp_path):
    bucket = s3_server.bucket(f"pipeout-{next(_BUCKETS)}")
    s3_server.client().put_object(Bucket=bucket, Key="in/clip.mp4", Body=GOP10.read_bytes())
    common = ["pipeline", "run", GRAYSCALE, "-i", f"input_0=s3://{bucket}/in/clip.mp4", "--frames-per-chunk", 3,
              "--workers", 0, "--no-audio"]
    local = tmp_path / "local.ivf"
    r = _excamera(*common, "-o", f"output_0={local}", env=s3_child_env)
    assert r.returncode == 0, r.stderr
    r = _excamera(*common, "-o", f"output_0=s3://{bucket}/out/cli.ivf", env=s3_child_env)
    assert r.returncode == 0, r.stderr
    assert f"s3://{bucket}/out/cli.ivf (36 frames)" in r.stderr
    assert s3_server.client().get_object(Bucket=bucket, Key="out/cli.ivf")["Body"].read() == local.read_bytes()

    for out, text in ((f"s3://{bucket}/out/x.mp4", "an s3:// output takes a chunks port"),
                      (f"s3://{bucket}/out/x.webm", "written as .ivf, joined in S3 by the workers"),
                      ("s3://Bad_Bucket/x.ivf", "not a valid bucket name"),
                      ("s3://no-such-bucket/x.ivf", "no such bucket")):
        r = _excamera(*common, "-o", f"output_0={out}", env=s3_child_env, timeout=120)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 1 and len(lines) == 1, r.stderr
        assert lines[0].startswith("excamera: error: output_0: ") and text in lines[0], r.stderr
    assert _open_uploads(s3_server, bucket) == []
    assert s3_server.keys(bucket) == ["in/clip.mp4", "out/cli.ivf"]


@pytest.mark.slow
def test_a_running_coordinator_joins_in_s3_and_sends_no_chunk_back(s3, certs, tmp_path, monkeypatch):
    """``--coordinator``: the joins travel in the planner's JSON (``pipeline.remote``), the
    daemon's workers assemble the parts, and no sink object is fetched back (each fetch recorded)."""
    import coordinator.api
    from coordinator.config import RemoteCoordinator

    server, bucket = s3
    full, client = certs
    src = f"s3://{bucket}/in/clip.mp4"
    local = tmp_path / "local.ivf"
    _run(src, str(local), 0)
    fetched: list[str] = []
    real = coordinator.api.fetch_remote

    async def fetch_remote(stub, job_id, job_key, key, *args, **kw):
        fetched.append(key)
        return await real(stub, job_id, job_key, key, *args, **kw)

    monkeypatch.setattr(coordinator.api, "fetch_remote", fetch_remote)
    daemon = Daemon(tmp_path, full)
    daemon.start()    # (its workers reach the S3 server: this environment's AWS_ENDPOINT_URL_S3)
    try:
        config = RunConfig(workers=2, backend=RemoteCoordinator(daemon.address, str(client)))
        there = tmp_path / "there.ivf"
        run_pipeline(str(GRAYSCALE), {"input_0": src}, {"output_0": str(there)}, config, frames_per_chunk=3,
                     audio=False)
        assert there.read_bytes() == local.read_bytes() and fetched   # (a local output: fetched)
        fetched.clear()
        summary = run_pipeline(str(GRAYSCALE), {"input_0": src}, {"output_0": f"s3://{bucket}/out/remote.ivf"},
                               config, frames_per_chunk=3, audio=False, part_min=PART_MIN)
    finally:
        daemon.stop()
        daemon.reap()
    data, parts = _parts(server, bucket, "out/remote.ivf")
    assert data == local.read_bytes() and parts >= 3
    assert fetched == [] and summary["outputs"] == {"output_0": 36}
    assert _open_uploads(server, bucket) == []
