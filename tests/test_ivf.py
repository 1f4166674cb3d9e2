"""codec.ivf: reading every vector, byte-identical round trips, and every rejection."""

from __future__ import annotations

import io
import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codec.errors import ContainerError, UnsupportedError
from codec.ivf import (FRAME_HEADER_SIZE, HEADER_SIZE, MAX_FRAME_SIZE, AtomicFile, IvfHeader,
                       IvfReader, IvfWriter, read_ivf)
from common import INVALID_STREAMS, VECTORS, stem

pytestmark = pytest.mark.nojit


def header(**kw) -> bytes:
    return IvfHeader(**{"width": 176, "height": 144, **kw}).to_bytes()


def frame(payload: bytes, pts: int = 0) -> bytes:
    return struct.pack("<IQ", len(payload), pts) + payload


@pytest.mark.parametrize("vector", VECTORS + INVALID_STREAMS, ids=stem)
def test_reads_every_stream_and_round_trips_byte_for_byte(vector, tmp_path):
    raw = vector.read_bytes()
    hdr, frames = read_ivf(vector)
    assert raw[:4] == b"DKIF" and hdr.fourcc == b"VP80"
    offset = HEADER_SIZE
    for i, f in enumerate(frames):
        assert (f.index, f.offset) == (i, offset)
        assert raw[offset + FRAME_HEADER_SIZE:offset + FRAME_HEADER_SIZE + len(f.data)] == f.data
        offset += FRAME_HEADER_SIZE + len(f.data)
    assert offset == len(raw)
    out = tmp_path / "copy.ivf"
    with IvfWriter(out, hdr) as w:
        for f in frames:
            w.write(f.data, f.pts)
    if hdr.frame_count == len(frames):
        assert out.read_bytes() == raw
    else:  # the writer fixes the count; everything else is identical
        assert out.read_bytes()[24:28] == struct.pack("<I", len(frames))
        assert out.read_bytes()[28:] == raw[28:] and out.read_bytes()[:24] == raw[:24]


def test_header_fields_and_user_bytes():
    hdr = IvfHeader(b"VP80", 352, 288, 30000, 1001, 7, b"\x01\x02\x03\x04")
    raw = hdr.to_bytes()
    assert len(raw) == 32 and raw[28:32] == b"\x01\x02\x03\x04"
    assert IvfHeader.parse(raw) == hdr
    assert hdr.frame_rate == (30000, 1001)
    assert IvfHeader(rate=0, scale=0).frame_rate == (30, 1)


def test_reader_accepts_file_objects_and_reports_position():
    data = header() + frame(b"abc", 5) + frame(b"", 6)
    reader = IvfReader(io.BytesIO(data))
    assert reader.position == (0, 32)
    frames = list(reader)
    assert [(f.index, f.pts, f.offset, f.data) for f in frames] == [(0, 5, 32, b"abc"), (1, 6, 47, b"")]
    assert reader.position == (2, 59)


def test_other_fourcc_allowed_when_asked():
    hdr, frames = read_ivf(io.BytesIO(header(fourcc=b"VP90")), fourcc=None)
    assert hdr.fourcc == b"VP90" and frames == []


@pytest.mark.parametrize("data, message", [
    (b"", "truncated IVF header: 0 of 32 bytes (offset 0)"),
    (header()[:31], "truncated IVF header: 31 of 32 bytes (offset 0)"),
    (b"RIFF" + header()[4:], "not an IVF file: signature b'RIFF' at offset 0"),
    (header()[:4] + b"\x01\x00" + header()[6:], "unsupported IVF version 1 at offset 4"),
    (header()[:6] + b"\x40\x00" + header()[8:], "bad IVF header length 64 at offset 6"),
    (header() + frame(b"abc") + b"\x05\x00\x00", "truncated IVF frame header at offset 47: 3 of 12 bytes"),
    (header() + frame(b"abc") + struct.pack("<IQ", 100, 1) + b"x" * 10,
     "IVF frame at offset 47 claims 100 bytes but the file ends after 10"),
    (header() + struct.pack("<IQ", MAX_FRAME_SIZE + 1, 0),
     f"absurd IVF frame size {MAX_FRAME_SIZE + 1} at offset 32"),
    (header() + struct.pack("<IQ", 0xFFFFFFFF, 0), "absurd IVF frame size 4294967295 at offset 32"),
])
def test_rejects_bad_containers(data, message):
    with pytest.raises(ContainerError) as e:
        read_ivf(io.BytesIO(data))
    assert message in str(e.value)


def test_rejects_wrong_fourcc_as_unsupported():
    with pytest.raises(UnsupportedError, match=r"unsupported codec fourcc b'VP90' at offset 8, expected b'VP80'"):
        read_ivf(io.BytesIO(header(fourcc=b"VP90")))


def test_frames_before_an_error_are_still_yielded():
    reader = IvfReader(io.BytesIO(header() + frame(b"ok") + struct.pack("<IQ", 9, 0)))
    assert reader.read_frame().data == b"ok"
    with pytest.raises(ContainerError, match="offset 46"):
        reader.read_frame()


def test_writer_fixes_frame_count_and_pts(tmp_path):
    path = tmp_path / "out.ivf"
    with IvfWriter(path, width=64, height=48, rate=25, scale=1, user=b"abcd") as w:
        w.write(b"one")
        w.write(b"two", pts=10)
        w.write(b"three")
    hdr, frames = read_ivf(path)
    assert (hdr.width, hdr.height, hdr.rate, hdr.frame_count, hdr.user) == (64, 48, 25, 3, b"abcd")
    assert [(f.pts, f.data) for f in frames] == [(0, b"one"), (10, b"two"), (11, b"three")]


def test_writer_uses_a_temporary_name_until_close(tmp_path):
    path = tmp_path / "out.ivf"
    w = IvfWriter(path)
    w.write(b"x")
    assert not path.exists()
    temps = os.listdir(tmp_path)
    assert len(temps) == 1 and temps[0].startswith(".out.ivf.") and temps[0].endswith(".tmp")
    w.close()
    assert os.listdir(tmp_path) == ["out.ivf"]


def test_writer_removes_the_temporary_file_on_error(tmp_path):
    path = tmp_path / "out.ivf"
    with pytest.raises(RuntimeError):
        with IvfWriter(path) as w:
            w.write(b"x")
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []


def test_writer_replaces_an_existing_file_only_on_success(tmp_path):
    path = tmp_path / "out.ivf"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with IvfWriter(path) as w:
            raise RuntimeError("boom")
    assert path.read_bytes() == b"old"
    with IvfWriter(path):
        pass
    assert read_ivf(path)[1] == []


def test_atomic_file_gives_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        with AtomicFile(tmp_path / "f") as f:
            f.write(b"data")
    finally:
        os.umask(old)
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o644


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.binary(max_size=64), st.integers(0, 2**64 - 1)), max_size=8),
       st.binary(min_size=4, max_size=4))
def test_round_trip_random_frames(tmp_path_factory, frames, user):
    path = tmp_path_factory.mktemp("ivf") / "r.ivf"
    with IvfWriter(path, user=user) as w:
        for data, pts in frames:
            w.write(data, pts)
    hdr, got = read_ivf(path)
    assert hdr.user == user and hdr.frame_count == len(frames)
    assert [(f.data, f.pts) for f in got] == frames
