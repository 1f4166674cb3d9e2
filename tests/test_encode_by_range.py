"""``excamera encode`` with workers that decode their own ranges of the input (``worker.decode_ops``,
``coordinator.excamera_job.SourceInput``): the same bytes as one process decoding everything,
for local files, ``http://`` (a loopback server with byte ranges) and ``s3://`` (moto), and bad
input said in one line with nothing left in storage."""

from __future__ import annotations

import itertools

import pytest

from common import ROOT, run_cli
from coordinator.excamera_job import RAW_KEY, SourceInput, chunk_id, encode_job
from media.excamera_encode import EncodeSettings
from media.index import plan_ranges, read_index
from media.rawchunk import chunk_object
from media.source import open_source
from media.video import open_video
from range_server import RangeServer, raw_h264
from storage import LocalStorage
from worker.decode_ops import op_decode_range
from worker.ops import OpContext, OperationError

CLIPS = ROOT / "tests" / "data" / "clips"
GOP10 = CLIPS / "compressed" / "carphone_176x144_36f_gop10.mp4"
BIKES = CLIPS / "compressed" / "bikes_640x272_100f.mp4"
Y4M = CLIPS / "foreman_qcif_176x144_10f.y4m"
#: Small and fast: the native first pass, chunks of 6, batches of 2 (several key frames).
FLAGS = ["--first-pass", "native", "--chunk-frames", "6", "--batch-chunks", "2", "--cq-level", "30"]

_BUCKETS = itertools.count()


def _decode_all(ref: str, n: int, storage, *, group: int | None = None, between=None):
    """Every range of ``ref``'s plan through the operation, as decode tasks would run it, pinned
    to the version planned on; ``between()`` runs after the planning."""
    with open_source(ref) as f:
        index = read_index(f)
        version = f.ranges.version
    if between is not None:
        between()
    ctx = OpContext("j", "decode", 1, storage)
    for r in plan_ranges(index, n, group or n):
        keys = [RAW_KEY.format(chunk_id(c)) for c in range(r.start // n, -(-r.stop // n))]
        op_decode_range(ctx, source=ref, version=version, kind=index.kind, start=r.start, stop=r.stop,
                        key_frame=r.key.frame, key_timestamp=r.key.timestamp, key_offset=r.key.offset,
                        chunk_frames=n, keys=keys, rate_num=index.rate[0], rate_den=index.rate[1],
                        width=index.width, height=index.height, header_len=index.header_len,
                        frame_stride=index.frame_stride)
    return index


@pytest.mark.parametrize("clip,n", [(GOP10, 6), (GOP10, 4), (BIKES, 6), (Y4M, 3), ("raw", 6)])
def test_decoded_ranges_are_the_whole_decode_cut_in_chunks(clip, n, tmp_path):
    path = raw_h264(str(GOP10), str(tmp_path / "clip.h264")) if clip == "raw" else str(clip)
    storage = LocalStorage(tmp_path / "st")
    index = _decode_all(path, n, storage, group=n * 2 if clip == Y4M else None)
    with open_video(path) as video:
        frames, rate = list(video), video.rate
    assert index.frames == len(frames) and index.rate == rate
    for i, a in enumerate(range(0, len(frames), n)):
        assert storage.get(RAW_KEY.format(chunk_id(i))) == chunk_object(frames[a:a + n], rate), i


def test_a_chunk_starting_mid_gop_is_decoded_from_its_key_frame_once(tmp_path):
    """Key frames 0, 10, 20, 30 and chunks of 6: the decode tasks start at pictures 0, 12, 24,
    30, each decoding from the key frame before it; each chunk comes from exactly one task."""
    settings = EncodeSettings(chunk_frames=6, batch_chunks=2)
    source = SourceInput(str(GOP10), settings, reach_local=True)
    job = encode_job(source.n_frames, source.width, source.height, settings, source=source.plan)
    decodes = [t for t in job.tasks if t.fsm == "excamera-decode"]
    assert [(t.params["key_frame"], t.params["start"], t.params["stop"]) for t in decodes] == \
        [(0, 0, 12), (10, 12, 24), (20, 24, 30), (30, 30, 36)]
    written = [k for t in decodes for k in t.params["keys"]]
    assert written == [RAW_KEY.format(chunk_id(i)) for i in range(6)]
    chunks = {t.task_id: t for t in job.tasks if t.fsm == "excamera-encode-chunk"}
    assert chunks["chunk-00001"].after == ("decode-00000",) and chunks["chunk-00002"].after == ("decode-00001",)
    assert source.plan.ref == str(GOP10) and list(source.pairs()) == []  # read where it lies
    # Workers that cannot reach this machine: the compressed file goes up once, nothing else.
    remote = SourceInput(str(GOP10), settings, reach_local=False)
    assert [(k, len(d)) for k, d in remote.pairs()] == [("source/input.mp4", GOP10.stat().st_size)]
    assert remote.plan.ref == "job:source/input.mp4"


def test_a_decode_task_refuses_a_changed_input(tmp_path):
    src = tmp_path / "clip.mp4"
    src.write_bytes(GOP10.read_bytes())
    with pytest.raises(OperationError, match="changed while the job ran"):
        _decode_all(str(src), 6, LocalStorage(tmp_path / "st"),
                    between=lambda: src.write_bytes(GOP10.read_bytes()[::-1]))


def _encode(src: str, out, *extra: str, env: dict | None = None):
    import os
    old = {}
    for k, v in (env or {}).items():
        old[k], os.environ[k] = os.environ.get(k), v
    try:
        return run_cli("encode", src, "-o", str(out), *FLAGS, *extra, timeout=600)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_same_bytes_by_range_for_every_worker_count(tmp_path):
    outs = {}
    for workers in ("0", "1", "2"):
        r = _encode(str(GOP10), tmp_path / f"w{workers}.ivf", "--workers", workers)
        assert r.returncode == 0, r.stderr
        outs[workers] = (tmp_path / f"w{workers}.ivf").read_bytes()
    assert outs["0"] == outs["1"] == outs["2"]
    assert len(outs["0"]) > 1000


def test_http_and_s3_inputs_give_the_same_bytes(tmp_path, s3_server):
    r = _encode(str(GOP10), tmp_path / "local.ivf", "--workers", "0")
    assert r.returncode == 0, r.stderr
    expect = (tmp_path / "local.ivf").read_bytes()
    server = RangeServer({"clip.mp4": GOP10.read_bytes()})
    try:
        for workers in ("2", "0"):
            r = _encode(server.url("clip.mp4"), tmp_path / f"http{workers}.ivf", "--workers", workers)
            assert r.returncode == 0, r.stderr
            assert (tmp_path / f"http{workers}.ivf").read_bytes() == expect
        assert all(rng for _, _, rng in server.log)  # every request a ranged one
    finally:
        server.stop()
    bucket = s3_server.bucket(f"byrange-{next(_BUCKETS)}")
    s3_server.client().put_object(Bucket=bucket, Key="in/clip.mp4", Body=GOP10.read_bytes())
    r = _encode(f"s3://{bucket}/in/clip.mp4", tmp_path / "s3.ivf", "--workers", "2",
                "--storage", f"s3://{bucket}/work", env=s3_server.env)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "s3.ivf").read_bytes() == expect
    assert s3_server.keys(bucket) == ["in/clip.mp4"]  # the job's objects are gone


def test_bad_inputs_are_one_line_and_leave_nothing(tmp_path, s3_server):
    server = RangeServer({"clip.mp4": GOP10.read_bytes()})
    try:
        r = _encode(server.url("missing.mp4"), tmp_path / "o.ivf", "--workers", "1")
        assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
        assert r.stderr.startswith("excamera: error: ") and "HTTP 404" in r.stderr
        server.ranges = False
        r = _encode(server.url("clip.mp4"), tmp_path / "o.ivf", "--workers", "1")
        assert r.returncode == 1 and "does not serve byte ranges" in r.stderr and r.stderr.count("\n") == 1, r.stderr
        server.ranges = True
        # The file changes once the client has planned (its probe and its one block): every
        # decode task's read is refused, the job fails, and its storage is emptied.
        server.change_after = len(server.log) + 2
        bucket = s3_server.bucket(f"byrange-{next(_BUCKETS)}")
        r = _encode(server.url("clip.mp4"), tmp_path / "o.ivf", "--workers", "1",
                    "--storage", f"s3://{bucket}/work", env=s3_server.env)
        assert r.returncode == 1, r.stderr
        assert "changed while the job ran" in r.stderr and r.stderr.count("\n") == 1, r.stderr
        assert s3_server.keys(bucket) == []
        assert not (tmp_path / "o.ivf").exists()
    finally:
        server.stop()
    r = _encode(str(tmp_path / "nothing.mp4"), tmp_path / "o.ivf", "--workers", "1")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "nothing.mp4" in r.stderr, r.stderr


def test_a_raw_stream_is_decoded_by_one_worker_and_says_so_once(tmp_path):
    raw = raw_h264(str(GOP10), str(tmp_path / "clip.h264"))
    r0 = _encode(raw, tmp_path / "r0.ivf", "--workers", "0")
    r2 = _encode(raw, tmp_path / "r2.ivf", "--workers", "2")
    assert r0.returncode == 0 and r2.returncode == 0, r0.stderr + r2.stderr
    assert r2.stderr.count("no index") == 1, r2.stderr
    assert (tmp_path / "r0.ivf").read_bytes() == (tmp_path / "r2.ivf").read_bytes()
