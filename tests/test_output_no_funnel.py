"""The ExCamera output joined without a funnel (``worker.assemble_ops``): the stitch proves the
chain from links, workers assemble parts, and ``-o s3://BUCKET/KEY`` is completed from them as
one multipart upload; a local ``-o`` is written part by part. The bytes are today's: compared
against ``--workers 0`` (one process, no job) and between local and S3 outputs, on moto's S3
server on loopback. Bad input: one line, exit 1, no multipart upload left open, nothing left."""

from __future__ import annotations

import itertools
import subprocess
import sys

import pytest

from common import CLIPS_DIR, ROOT, subprocess_env

CLIP = CLIPS_DIR / "RTn23_80x44p15_15f.y4m"   # 80x44, 15 frames
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
    return s3_server.bucket(f"nofunnel-{next(_BUCKETS)}")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The clip encoded in one process (``--workers 0``: no job, no parts)."""
    out = tmp_path_factory.mktemp("ref") / "ref.ivf"
    r = excamera("encode", CLIP, "-o", out, "--workers", 0, *ARGS, env=subprocess_env())
    assert r.returncode == 0, r.stderr
    return out.read_bytes()


def open_uploads(s3_server, bucket: str) -> list:
    return s3_server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])


def test_plan_parts_reach_the_minimum_but_the_last():
    from worker.assemble_ops import plan_parts

    sizes = [32 + n for n in (400, 700, 100, 900, 50, 20)]
    groups = plan_parts(sizes, 1000)
    assert groups == [(0, 2), (2, 4), (4, 6)]
    pieces = [sum(sizes[i] - 32 for i in range(a, b)) + (32 if g == 0 else 0) for g, (a, b) in enumerate(groups)]
    assert all(p >= 1000 for p in pieces[:-1]) and pieces[-1] < 1000
    assert plan_parts(sizes, 1 << 30) == [(0, 6)]                 # all under the minimum: one part
    assert len(plan_parts([32 + 10] * 50, 1, max_parts=7)) <= 7    # S3's part count bounds the parts


def test_local_and_s3_outputs_are_todays_bytes(s3_server, env, bucket, tmp_path, reference):
    local = tmp_path / "local.ivf"
    r = excamera("encode", CLIP, "-o", local, "--workers", 2, *ARGS, env=env)
    assert r.returncode == 0, r.stderr
    assert local.read_bytes() == reference
    url = f"s3://{bucket}/videos/x.ivf"
    r = excamera("encode", CLIP, "-o", url, "--workers", 2, "--storage", f"s3://{bucket}/jobs-here", *ARGS, env=env)
    assert r.returncode == 0, r.stderr
    assert f"{url}: 15 frames, 80x44" in r.stderr
    s3 = s3_server.client()
    assert s3.get_object(Bucket=bucket, Key="videos/x.ivf")["Body"].read() == reference
    # Only the output is left: the job's objects went, and no upload is open.
    assert s3_server.keys(bucket) == ["videos/x.ivf"] and open_uploads(s3_server, bucket) == []
    # --workers 0 to S3 (one process holds the stream anyway): the same bytes.
    r = excamera("encode", CLIP, "-o", f"s3://{bucket}/y.ivf", "--workers", 0, *ARGS, env=env)
    assert r.returncode == 0, r.stderr
    assert s3.get_object(Bucket=bucket, Key="y.ivf")["Body"].read() == reference


def test_several_parts_joined_in_s3(s3_server, bucket, monkeypatch, reference, tmp_path):
    """The part minimum lowered on both sides (moto's server runs in this process), so the 80x44
    clip makes several parts, each assembled by a worker and uploaded from there."""
    import moto.s3.models

    from codec.y4m import Y4mReader
    from coordinator.api import RunConfig, run_job
    from coordinator.excamera_job import JoinPlan, encode_inputs, encode_job
    from media.excamera_encode import EncodeSettings
    from storage.s3 import MultipartOutput

    part_min = 1000
    monkeypatch.setattr(moto.s3.models, "S3_UPLOAD_PART_MIN_SIZE", part_min)
    for k, v in s3_server.env.items():
        monkeypatch.setenv(k, v)           # the workers (child processes) reach the server too
    with Y4mReader(str(CLIP)) as reader:
        frames, rate = list(reader), reader.header.rate
    settings = EncodeSettings(4, 2, 28, "native", 1)
    url = f"s3://{bucket}/parts.ivf"
    upload = MultipartOutput(url)
    upload.start()
    h, w = frames[0].y.shape
    job = encode_job(len(frames), w, h, settings, join=JoinPlan(url, upload.upload_id, part_min), rate=rate)
    assert sum(t.fsm == "excamera-encode-assemble" for t in job.tasks) >= 1 and job.result_tasks == ("join",)
    run_job(job, RunConfig(workers=2, storage=str(tmp_path / "st"), timeout_s=240),
            inputs=encode_inputs(frames, rate, settings), ops_modules=("worker.codec_ops",))
    s3 = s3_server.client()
    got = s3.get_object(Bucket=bucket, Key="parts.ivf")
    assert got["Body"].read() == reference
    parts = int(got["ETag"].strip('"').rpartition("-")[2])  # a multipart object's ETag ends in -PARTS
    assert parts >= 3 and parts <= len(reference) // part_min
    assert open_uploads(s3_server, bucket) == []


def test_links_prove_the_chain_without_reading_chunks(tmp_path):
    """The stitch reads links only where they fit; a chunk whose bytes differ from its link's is
    caught by the assemble task that reads it."""
    import json

    from codec.y4m import Y4mReader
    from coordinator.api import RunConfig, run_job
    from coordinator.excamera_job import LAYOUT_KEY, JoinPlan, encode_inputs, encode_job
    from media.excamera_encode import EncodeSettings
    from storage import LocalStorage
    from worker.assemble_ops import op_assemble, op_stitch_links
    from worker.ops import OpContext, OperationError

    with Y4mReader(str(CLIP)) as reader:
        frames, rate = list(reader), reader.header.rate
    settings = EncodeSettings(4, 2, 28, "native", 1)
    h, w = frames[0].y.shape
    job = encode_job(len(frames), w, h, settings, join=JoinPlan(part_min=1000), rate=rate)
    r = run_job(job, RunConfig(workers=1, storage=str(tmp_path / "st"), timeout_s=240),
                inputs=encode_inputs(frames, rate, settings), ops_modules=("worker.codec_ops",))
    joined = b"".join(r.read("join", n) for n in sorted(r.objects["join"]))
    assert len(r.objects["join"]) >= 2 and joined[:4] == b"DKIF"
    store = LocalStorage(tmp_path / "st").scoped(r.storage_prefix)
    stitch = next(t for t in job.tasks if t.task_id == "stitch")
    chunks, links = stitch.params["chunks"], stitch.params["links"]
    assert all(store.exists(k) for k in chunks + links)  # (an FSM job's objects stay for the caller)

    class Counting:
        def __init__(self, base):
            self.base, self.read = base, []

        def __getattr__(self, name):
            return getattr(self.base, name)

        def get(self, key):
            self.read.append(key)
            return self.base.get(key)

    verified = [f"{k} {store.digest(k).sha256} {store.digest(k).size}" for k in chunks]
    params = {k: stitch.params[k] for k in ("frames", "width", "height", "rate_num", "rate_den")}
    counting = Counting(store)
    out = op_stitch_links(OpContext("j", "stitch", 2, counting), chunks=chunks, links=links, part_min=1000,
                          layout="again.json", verified=verified, **params)
    assert out["decoded"] is False and set(counting.read) == set(links)
    assert json.loads(store.get("again.json")) == json.loads(store.get(LAYOUT_KEY))
    # A broken link: the chain is proved by decoding the chunks instead, to the same layout.
    store.put(links[1], b"not a link")
    out = op_stitch_links(OpContext("j", "stitch", 3, store), chunks=chunks, links=links, part_min=1000,
                          layout="decoded.json", verified=verified, **params)
    assert out["decoded"] is True and json.loads(store.get("decoded.json")) == json.loads(store.get(LAYOUT_KEY))
    # A chunk that is not the bytes the layout names: its assemble task fails.
    data = bytearray(store.get(chunks[0]))
    data[-1] ^= 1
    store.put(chunks[0], bytes(data))
    layout_ref = store.digest(LAYOUT_KEY)
    with pytest.raises(OperationError, match="not the"):
        op_assemble(OpContext("j", "assemble-00000", 2, store), layout=LAYOUT_KEY, index=0, of=1,
                    parts="p/{:05d}.ivf", verified=[f"{LAYOUT_KEY} {layout_ref.sha256} {layout_ref.size}"])


def test_bad_output_one_line_and_nothing_left(s3_server, env, bucket, tmp_path):
    def one_line(p, text):
        lines = p.stderr.strip().splitlines()
        assert p.returncode == 1 and len(lines) == 1, p.stderr
        assert lines[0].startswith("excamera: error: ") and text in lines[0], p.stderr

    # A bucket that does not exist: refused before the input is read.
    one_line(excamera("encode", CLIP, "-o", "s3://no-such-bucket/x.ivf", "--workers", 2, *ARGS, env=env,
                      timeout=120), "s3://no-such-bucket/x.ivf: no such bucket")
    one_line(excamera("encode", CLIP, "-o", f"s3://{bucket}", "--workers", 2, *ARGS, env=env, timeout=60),
             "must end in .ivf")
    # (an s3:// .webm is joined in parts too: tests/test_webm_parts.py)
    # The upload started, then the input turns out unreadable: the upload is aborted.
    bad = tmp_path / "bad.y4m"
    bad.write_bytes(b"YUV4MPEG2 W80 H44 F15:1\nFRAME\n" + bytes(100))
    for workers in (2, 0):
        p = excamera("encode", bad, "-o", f"s3://{bucket}/x.ivf", "--workers", workers,
                     *(["--storage", f"s3://{bucket}/run"] if workers else []), *ARGS, env=env, timeout=120)
        one_line(p, str(bad))
    assert open_uploads(s3_server, bucket) == [] and s3_server.keys(bucket) == []
