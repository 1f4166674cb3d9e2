"""pipeline.values: each port type's value travels through storage as one object and back
unchanged; a damaged object is refused with BadValue, never read as other pictures."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest
from common import CLIPS_DIR

from codec.y4m import read_y4m
from pipeline.values import (
    VERSION,
    BadValue,
    EncodedChunk,
    FrameBatch,
    Records,
    _header,
)

FOREMAN = CLIPS_DIR / "foreman_qcif_176x144_10f.y4m"


@pytest.fixture(scope="module")
def batch() -> FrameBatch:
    header, images = read_y4m(FOREMAN)
    return FrameBatch.from_images(images, 40, header.rate, {"scene_cut": [3]})


def same(a: FrameBatch, b: FrameBatch) -> bool:
    return (a.start, a.count, a.fps, a.meta) == (b.start, b.count, b.fps, b.meta) and all(
        np.array_equal(getattr(a, p), getattr(b, p)) for p in "yuv")


def test_frame_batch_round_trip(batch):
    data = batch.to_bytes()
    assert len(data) < 0.9 * batch.count * 176 * 144 * 3 // 2  # compressed
    assert same(FrameBatch.from_bytes(data), batch)
    assert same(FrameBatch.from_bytes(batch.slice(2, 5).to_bytes()), batch.slice(2, 5))


def test_frame_batch_written_with_zlib_still_reads(batch):
    """Objects from before zstd (a zlib body, no "z" in the header) read as they always did."""
    head = {"start": batch.start, "count": batch.count, "fps": list(batch.fps), "meta": batch.meta,
            "width": batch.width, "height": batch.height}
    planes = b"".join(p.tobytes() for p in (batch.y, batch.u, batch.v))
    assert same(FrameBatch.from_bytes(_header(FrameBatch.MAGIC, head) + zlib.compress(planes, 1)), batch)


def damaged(data: bytes) -> list[bytes]:
    mid = len(data) // 2
    return [data[:-7], data[:30], data[:mid] + bytes(b ^ 0x55 for b in data[mid:mid + 8]) + data[mid + 8:],
            data + b"junk", b"XXXX" + data[4:], data[:4] + bytes([VERSION + 1]) + data[5:]]


def test_frame_batch_damaged_is_refused(batch):
    for bad in damaged(batch.to_bytes()):
        with pytest.raises(BadValue, match="frame batch"):
            FrameBatch.from_bytes(bad)


def test_frame_batch_header_that_lies_is_refused(batch):
    """A header claiming more pictures than the body holds: refused before any allocation."""
    data = batch.to_bytes()
    head_len = int.from_bytes(data[5:9], "little")
    head = json.loads(data[9:9 + head_len])
    for key, value in (("count", 11), ("width", 177), ("count", 1 << 20), ("width", -1)):
        lie = dict(head, **{key: value})
        with pytest.raises(BadValue, match="frame batch"):
            FrameBatch.from_bytes(_header(FrameBatch.MAGIC, lie) + data[9 + head_len:])


def test_encoded_chunk_and_records_round_trip():
    c = EncodedChunk(b"\x01\x02payload", "ivf", 30, 6, (25, 1), {"peer": 1})
    d = EncodedChunk.from_bytes(c.to_bytes())
    assert (d.data, d.container, d.start, d.count, d.fps, d.meta) == (c.data, c.container, 30, 6, (25, 1), {"peer": 1})
    with pytest.raises(BadValue, match="encoded chunk"):
        EncodedChunk.from_bytes(b"XCFB" + c.to_bytes()[4:])
    r = Records([{"frame": 30, "faces": []}, {"frame": 31, "faces": [[1, 2, 3, 4]]}], 30, 2, (25, 1))
    assert Records.from_bytes(r.to_bytes()).records == r.records
