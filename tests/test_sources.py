"""Sources as references (``media.source``), their indexes (``media.index``) and storage that
reports digests without reading (``Storage.stat``): against a real file, a loopback HTTP server
with byte ranges (``tests/range_server.py``) and moto's S3 server."""

from __future__ import annotations

import hashlib
import itertools
import os

import pytest

from common import ROOT
from media.index import KeyFrame, plan_ranges, read_index
from media.source import (FileRanges, RangeFile, SourceChanged, SourceError, kind_of, open_ranges,
                          open_source)
from range_server import RangeServer, raw_h264
from storage import LocalStorage, ObjectRef, open_storage
from worker.ops import OpContext, OperationError, get_verified

CLIPS = ROOT / "tests" / "data" / "clips"
GOP10 = CLIPS / "compressed" / "carphone_176x144_36f_gop10.mp4"
BIKES = CLIPS / "compressed" / "bikes_640x272_100f.mp4"
Y4M = CLIPS / "foreman_qcif_176x144_10f.y4m"


@pytest.fixture
def http():
    server = RangeServer({"clip.mp4": GOP10.read_bytes(), "bikes.mp4": BIKES.read_bytes()})
    yield server
    server.stop()


_BUCKETS = itertools.count()


def _read_all(f: RangeFile, step: int = 7777) -> bytes:
    out = []
    while chunk := f.read(step):
        out.append(chunk)
    return b"".join(out)


def test_kinds():
    assert [kind_of(r) for r in ("a.mp4", "/x/a.mp4", "file:///x/a.mp4", "s3://b/k", "https://h/a", "http://h/a",
                                 "job:source/input.mp4")] == ["file", "file", "file", "s3", "http", "http", "job"]
    with pytest.raises(SourceError, match="unknown scheme 'ftp'"):
        kind_of("ftp://host/a.mp4")


def test_file_ranges_read_where_it_lies_and_notice_a_change(tmp_path):
    path = tmp_path / "clip.mp4"
    path.write_bytes(GOP10.read_bytes())
    f = open_source(f"file://{path}")
    assert _read_all(f) == GOP10.read_bytes()
    f.seek(100)
    assert f.read(10) == GOP10.read_bytes()[100:110]
    assert f.seek(-5, os.SEEK_END) == len(GOP10.read_bytes()) - 5
    version = f.ranges.version
    with open(path, "r+b") as w:  # rewritten in place: same inode, new contents
        w.write(b"x" * 10)
    os.utime(path, ns=(1, 1))
    with pytest.raises(SourceChanged, match="changed while the job ran"):
        f.ranges.read(0, 10)  # (the file is one kept block: ask the source itself)
    with pytest.raises(SourceChanged):
        FileRanges(str(path), version)
    with pytest.raises(SourceError, match="No such file"):
        open_ranges(str(tmp_path / "missing.mp4"))


def test_http_ranges_fetch_only_what_is_read(http):
    f = open_source(http.url("bikes.mp4"))
    data = BIKES.read_bytes()
    assert f.size == len(data)
    f.seek(150_000)
    assert f.read(1000) == data[150_000:151_000]
    # One probe of one byte, then the aligned block holding the range: never the whole file
    # (the block is 1 MiB; the clip is smaller, so that is the file here, fetched once).
    assert [r for _, _, r in http.log] == ["bytes=0-0", f"bytes=0-{len(data) - 1}"]
    assert f.ranges.fetched == len(data)
    f.seek(0)
    assert _read_all(f) == data and len(http.log) == 2  # served from the kept block


def test_http_ranges_refused_and_changed(http):
    http.ranges = False
    with pytest.raises(SourceError, match=r"does not serve byte ranges \(answered 200"):
        open_ranges(http.url("clip.mp4"))
    http.ranges = True
    with pytest.raises(SourceError, match="HTTP 404"):
        open_ranges(http.url("nothing.mp4"))
    ranges = open_ranges(http.url("clip.mp4"))
    with pytest.raises(SourceError, match="refused the range"):
        ranges._read(ranges.size + 10, 5)
    old = ranges.version
    http.change_after = 0  # the next request sees another version
    with pytest.raises(SourceChanged, match="changed while the job ran"):
        ranges.read(0, 100)
    with pytest.raises(SourceChanged):  # a worker planned on the old version
        open_ranges(http.url("clip.mp4"), old)


def test_http_unreachable_is_one_line():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(SourceError) as e:
        open_ranges(f"http://127.0.0.1:{port}/clip.mp4")
    assert "\n" not in str(e.value) and str(e.value).startswith(f"http://127.0.0.1:{port}/clip.mp4: ")


def test_s3_ranges_pinned_to_the_etag(s3env):
    bucket = s3env.bucket(f"sources-{next(_BUCKETS)}")
    client = s3env.client()
    data = BIKES.read_bytes()
    client.put_object(Bucket=bucket, Key="in/bikes.mp4", Body=data)
    f = open_source(f"s3://{bucket}/in/bikes.mp4")
    assert f.size == len(data)
    f.seek(37194)
    assert f.read(500) == data[37194:37694]
    ranges = open_ranges(f"s3://{bucket}/in/bikes.mp4")
    old = ranges.version
    client.put_object(Bucket=bucket, Key="in/bikes.mp4", Body=data[::-1])
    with pytest.raises(SourceChanged, match="changed while the job ran"):
        ranges.read(0, 10)
    with pytest.raises(SourceChanged):
        open_ranges(f"s3://{bucket}/in/bikes.mp4", old)
    with pytest.raises(SourceError, match="no such object"):
        open_ranges(f"s3://{bucket}/in/missing.mp4")


def test_index_of_an_mp4_reads_no_picture_and_finds_its_gops():
    with open_source(str(GOP10)) as f:
        index = read_index(f)
    assert (index.kind, index.frames, index.width, index.height, index.indexed) == ("pyav", 36, 176, 144, True)
    assert [k.frame for k in index.keys] == [0, 10, 20, 30]
    with open_source(str(BIKES)) as f:
        index = read_index(f)
    assert [k.frame for k in index.keys] == [0, 30, 76] and index.frames == 100 and index.rate == (25, 1)
    assert [k.offset for k in index.keys] == [48, 37194, 135340]


def test_index_of_y4m_and_of_a_raw_stream(tmp_path):
    with open_source(str(Y4M)) as f:
        index = read_index(f)
    assert (index.kind, index.frames, index.indexed) == ("y4m", 10, True)
    assert index.frame_offset(3) == index.header_len + 3 * (6 + 176 * 144 * 3 // 2)
    raw = raw_h264(str(GOP10), str(tmp_path / "clip.h264"))
    with open_source(raw) as f:
        index = read_index(f)
    # No index: the packets were counted (no decoding), and one range covers them.
    assert (index.kind, index.frames, index.indexed, [k.frame for k in index.keys]) == ("pyav", 36, False, [0])


def test_plan_cuts_at_chunks_after_each_key_frame():
    from media.index import VideoIndex
    keys = tuple(KeyFrame(k, k * 100, k * 1000) for k in (0, 10, 20, 30))
    index = VideoIndex("pyav", 36, 176, 144, (30, 1), keys, True)
    plan = plan_ranges(index, 6, 6)
    # Key frame 10 starts mid-chunk 1: its range starts at chunk 2 (picture 12), decoding from
    # 10 (two pictures dropped); chunk 1 comes whole from the first range.
    assert [(r.key.frame, r.start, r.stop) for r in plan] == [(0, 0, 12), (10, 12, 24), (20, 24, 30), (30, 30, 36)]
    assert all(r.start - r.key.frame < 6 for r in plan)
    # Groups of at least 18 pictures: neighbours merge.
    assert [(r.key.frame, r.start, r.stop) for r in plan_ranges(index, 6, 18)] == [(0, 0, 24), (20, 24, 36)]
    # GOPs shorter than a chunk: a boundary keeps the last key frame before it.
    keys = tuple(KeyFrame(k, k, k) for k in range(0, 20, 2))
    plan = plan_ranges(VideoIndex("pyav", 20, 8, 8, (30, 1), keys, True), 6, 6)
    assert [(r.key.frame, r.start, r.stop) for r in plan] == [(0, 0, 6), (6, 6, 12), (12, 12, 18), (18, 18, 20)]
    # No index: one range.
    plan = plan_ranges(VideoIndex("pyav", 19, 8, 8, (25, 1), (KeyFrame(0, -1, -1),), False), 6, 6)
    assert [(r.start, r.stop) for r in plan] == [(0, 19)]


def test_local_storage_reports_a_digest_without_reading(tmp_path, monkeypatch):
    st = LocalStorage(tmp_path).scoped("jobs/j")
    ref = st.put("a/b.bin", b"hello")
    assert st.stat("a/b.bin") == ref
    monkeypatch.setattr(LocalStorage, "get", lambda self, key: pytest.fail("verify read the bytes"))
    assert st.verify(ref) is None
    monkeypatch.undo()
    # Rewritten behind the storage's back: the kept digest is stale, so verify reads the bytes.
    path = tmp_path / "jobs" / "j" / "a" / "b.bin"
    path.write_bytes(b"HELLO")
    os.utime(path, ns=(5, 5))
    assert st.stat("a/b.bin").sha256 == ""
    assert "holds 5 bytes with sha256" in st.verify(ref)


def test_s3_puts_send_a_checksum_and_stat_reports_it(s3env, monkeypatch):
    bucket = s3env.bucket(f"stat-{next(_BUCKETS)}")
    st = open_storage(f"s3://{bucket}/p").scoped("jobs/j")
    ref = st.put("chunk.y4m", b"raw pictures")
    assert st.stat("chunk.y4m") == ref
    from storage.s3 import S3Storage
    monkeypatch.setattr(S3Storage, "get", lambda self, key: pytest.fail("verify read the bytes"))
    assert st.verify(ref) is None
    lie = ObjectRef("chunk.y4m", hashlib.sha256(b"other bytes").hexdigest(), ref.size)
    monkeypatch.undo()
    assert "reported 12 bytes" in st.verify(lie)


def test_a_consumer_checks_what_it_was_handed(tmp_path):
    st = LocalStorage(tmp_path)
    ctx = OpContext("j", "t", 1, st)
    ref = st.put("input/c.y4m", b"pictures")
    line = f"{ref.key} {ref.sha256} {ref.size}"
    assert get_verified(ctx, "input/c.y4m", [line]) == b"pictures"
    assert get_verified(ctx, "input/c.y4m", []) == b"pictures"  # nothing handed: nothing to check
    st.put("input/c.y4m", b"PICTURES")  # replaced after the coordinator accepted it
    with pytest.raises(OperationError, match="not the 8 verified"):
        get_verified(ctx, "input/c.y4m", [line])
    with pytest.raises(OperationError, match="not among the objects verified"):
        get_verified(ctx, "input/c.y4m", ["input/d.y4m 00 1"])
