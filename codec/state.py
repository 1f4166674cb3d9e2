"""The decoder state as a value (everything the next frame depends on), and its transport form.

``DecoderState`` is immutable in use: decoding a frame builds a new state and never writes into the
arrays of the old one, so states can be kept, compared, hashed into a digest and sent to another
worker. ``to_bytes`` / ``from_bytes`` give a versioned, checksummed, compressed encoding; the
three references are stored once each even when they share one picture. Version 2 compresses with
zstd (level 1: on a 720p state about 5x faster to write and 3x faster to read than version 1's
zlib, for 10% more bytes; a state is written and read on every chunk's critical path); version 1
is still read.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from . import tables
from .errors import StateError
from .predict import BORDER_UV, BORDER_Y

MAGIC = b"XCDS"
VERSION = 2
ZLIB_VERSION = 1  # read, no longer written
MAX_DIMENSION = 16383
# magic, version, crc32 of the uncompressed payload, crc32 of the compressed bytes (a decompressor
# can decode some flipped bits to the same output; the second checksum catches those too)
_HEADER = struct.Struct("<4sHII")
_FIELDS = struct.Struct("<HHBBB3B")  # width, height, scales, segment_absolute, reference slots


@dataclass(frozen=True, eq=False)
class Picture:
    """A reconstructed picture: Y, U, V planes of whole macroblocks inside a replicated border."""

    y: np.ndarray
    u: np.ndarray
    v: np.ndarray

    @staticmethod
    def allocate(mb_rows: int, mb_cols: int) -> "Picture":
        return Picture(
            np.empty((16 * mb_rows + 2 * BORDER_Y, 16 * mb_cols + 2 * BORDER_Y), np.uint8),
            np.empty((8 * mb_rows + 2 * BORDER_UV, 8 * mb_cols + 2 * BORDER_UV), np.uint8),
            np.empty((8 * mb_rows + 2 * BORDER_UV, 8 * mb_cols + 2 * BORDER_UV), np.uint8),
        )

    def interior(self):
        """The three planes without their border (whole macroblocks, not cropped to display size)."""
        return (self.y[BORDER_Y:-BORDER_Y, BORDER_Y:-BORDER_Y],
                self.u[BORDER_UV:-BORDER_UV, BORDER_UV:-BORDER_UV],
                self.v[BORDER_UV:-BORDER_UV, BORDER_UV:-BORDER_UV])

    def extend_border(self) -> None:
        """Replicate the edge pixels into the border (the reference is an infinite picture)."""
        for plane, b in ((self.y, BORDER_Y), (self.u, BORDER_UV), (self.v, BORDER_UV)):
            plane[:, :b] = plane[:, b:b + 1]
            plane[:, -b:] = plane[:, -b - 1:-b]
            plane[:b, :] = plane[b:b + 1, :]
            plane[-b:, :] = plane[-b - 1:-b, :]

    @staticmethod
    def from_interior(y: np.ndarray, u: np.ndarray, v: np.ndarray) -> "Picture":
        pic = Picture.allocate(y.shape[0] // 16, y.shape[1] // 16)
        for dst, src in zip(pic.interior(), (y, u, v)):
            dst[:] = src
        pic.extend_border()
        return pic


class _Inflater:
    """A state's compressed body read in two steps, never inflating more than asked: the fixed
    fields first, then exactly the bytes they imply (``StateError`` for anything else)."""

    def __init__(self, body: bytes, version: int):
        self.body, self.version = body, version
        self.zlib = zlib.decompressobj() if version == ZLIB_VERSION else None
        self.head_size = 0

    def head(self, n: int) -> bytes:
        self.head_size = n
        try:
            if self.zlib is not None:
                return self.zlib.decompress(self.body, n)
            import zstandard
            return zstandard.ZstdDecompressor().stream_reader(self.body).read(n)
        except (zlib.error, _zstd_error()) as e:
            raise StateError(f"corrupt decoder state: {e}") from None

    def rest(self, n: int) -> bytes:
        wrong = StateError(f"corrupt decoder state: payload is not the {n} bytes its header implies")
        try:
            if self.zlib is not None:
                out = self.zlib.decompress(self.zlib.unconsumed_tail, n + 1)
                if len(out) != n or not self.zlib.eof or self.zlib.unused_data:
                    raise wrong
                return out
            import zstandard
            # The frame declares its size: only that one is inflated, and libzstd refuses a frame
            # whose content is not the size it declares.
            if zstandard.frame_content_size(self.body) != self.head_size + n:
                raise wrong
            return zstandard.ZstdDecompressor().decompress(self.body, allow_extra_data=False)[self.head_size:]
        except (zlib.error, _zstd_error()) as e:
            raise StateError(f"corrupt decoder state: {e}") from None


def _zstd_error():
    import zstandard
    return zstandard.ZstdError


def _frozen(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class DecoderState:
    """Everything decoding the next frame depends on (RFC 6386 sections 9.3-9.11, 13.4, 16, 17)."""

    width: int = 0                      # display size from the last key frame; 0 before any
    height: int = 0
    horiz_scale: int = 0                # upscaling bits of the key frame header (section 9.2)
    vert_scale: int = 0
    coeff_probs: np.ndarray = field(default_factory=lambda: tables.DEFAULT_COEFF_PROBS)
    ymode_probs: np.ndarray = field(default_factory=lambda: tables.DEFAULT_YMODE_PROBS)
    uv_mode_probs: np.ndarray = field(default_factory=lambda: tables.DEFAULT_UV_MODE_PROBS)
    mv_probs: np.ndarray = field(default_factory=lambda: tables.DEFAULT_MV_PROBS)
    segment_absolute: bool = False      # segment values replace (True) or adjust the frame's
    segment_quant: np.ndarray = field(default_factory=lambda: _frozen(np.zeros(4, np.int8)))
    segment_lf: np.ndarray = field(default_factory=lambda: _frozen(np.zeros(4, np.int8)))
    segment_map: np.ndarray = field(default_factory=lambda: _frozen(np.zeros((0, 0), np.uint8)))
    ref_lf_deltas: np.ndarray = field(default_factory=lambda: _frozen(np.zeros(4, np.int8)))
    mode_lf_deltas: np.ndarray = field(default_factory=lambda: _frozen(np.zeros(4, np.int8)))
    last: Picture | None = None
    golden: Picture | None = None
    altref: Picture | None = None

    @property
    def has_keyframe(self) -> bool:
        return self.last is not None

    @property
    def mb_rows(self) -> int:
        return (self.height + 15) // 16

    @property
    def mb_cols(self) -> int:
        return (self.width + 15) // 16

    # -- value semantics -------------------------------------------------------------------

    @cached_property
    def _payload(self) -> bytes:
        pictures: list[Picture] = []
        slots = []
        for pic in (self.last, self.golden, self.altref):
            if pic is None:
                slots.append(255)
                continue
            for i, seen in enumerate(pictures):
                if seen is pic:
                    slots.append(i)
                    break
            else:
                slots.append(len(pictures))
                pictures.append(pic)
        parts = [
            _FIELDS.pack(self.width, self.height, self.horiz_scale << 4 | self.vert_scale,
                         int(self.segment_absolute), len(pictures), *slots),
            self.coeff_probs.tobytes(), self.ymode_probs.tobytes(), self.uv_mode_probs.tobytes(),
            self.mv_probs.tobytes(), self.segment_quant.tobytes(), self.segment_lf.tobytes(),
            self.ref_lf_deltas.tobytes(), self.mode_lf_deltas.tobytes(), self.segment_map.tobytes(),
        ]
        for pic in pictures:
            parts.extend(np.ascontiguousarray(p).tobytes() for p in pic.interior())
        return b"".join(parts)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DecoderState):
            return NotImplemented
        return self._payload == other._payload

    __hash__ = None

    def digest(self) -> str:
        """A short hex digest of the whole state (equal states, equal digests)."""
        return hashlib.sha256(self._payload).hexdigest()[:16]

    def to_bytes(self, level: int = 1) -> bytes:
        import zstandard
        payload = self._payload
        body = zstandard.ZstdCompressor(level=level).compress(payload)
        return _HEADER.pack(MAGIC, VERSION, zlib.crc32(payload), zlib.crc32(body)) + body

    @staticmethod
    def from_bytes(data: bytes) -> "DecoderState":
        """Parse ``to_bytes`` output; raises ``StateError`` for anything malformed."""
        if len(data) < _HEADER.size or data[:4] != MAGIC:
            raise StateError("not an excamera decoder state (bad signature)")
        _, version, crc, body_crc = _HEADER.unpack_from(data)
        if version not in (VERSION, ZLIB_VERSION):
            raise StateError(f"decoder state version {version} is not supported (expected {VERSION})")
        if zlib.crc32(data[_HEADER.size:]) != body_crc:
            raise StateError("corrupt decoder state: checksum mismatch")
        d = _Inflater(data[_HEADER.size:], version)
        head = d.head(_FIELDS.size)
        if len(head) < _FIELDS.size:
            raise StateError("truncated decoder state")
        width, height, scales, absolute, npics, *slots = _FIELDS.unpack(head)
        empty = width == height == npics == 0 and slots == [255, 255, 255]  # before any key frame
        if not (empty or 0 < width <= MAX_DIMENSION and 0 < height <= MAX_DIMENSION) or npics > 3 \
                or any(s != 255 and s >= npics for s in slots) or absolute > 1:
            raise StateError("corrupt decoder state: impossible header values")
        rows, cols = (height + 15) // 16, (width + 15) // 16
        sizes = [1056, 4, 3, 38, 4, 4, 4, 4, rows * cols] + [256 * rows * cols, 64 * rows * cols,
                                                           64 * rows * cols] * npics
        expected = sum(sizes)
        body = d.rest(expected)
        if zlib.crc32(head + body) != crc:
            raise StateError("corrupt decoder state: checksum mismatch")
        chunks = []
        pos = 0
        for n in sizes:
            chunks.append(body[pos:pos + n])
            pos += n

        def arr(i, dtype, shape):
            return _frozen(np.frombuffer(chunks[i], dtype).reshape(shape).copy())

        segment_map = arr(8, np.uint8, (rows, cols))
        if segment_map.size and segment_map.max() > 3:
            raise StateError("corrupt decoder state: segment id out of range")
        pics = []
        for k in range(npics):
            base = 9 + 3 * k
            pics.append(Picture.from_interior(
                np.frombuffer(chunks[base], np.uint8).reshape(16 * rows, 16 * cols),
                np.frombuffer(chunks[base + 1], np.uint8).reshape(8 * rows, 8 * cols),
                np.frombuffer(chunks[base + 2], np.uint8).reshape(8 * rows, 8 * cols)))
        refs = [None if s == 255 else pics[s] for s in slots]
        if refs[0] is None and not empty:
            raise StateError("corrupt decoder state: no last reference")
        return DecoderState(
            width=width, height=height, horiz_scale=scales >> 4, vert_scale=scales & 15,
            coeff_probs=arr(0, np.uint8, (4, 8, 3, 11)), ymode_probs=arr(1, np.uint8, (4,)),
            uv_mode_probs=arr(2, np.uint8, (3,)), mv_probs=arr(3, np.uint8, (2, 19)),
            segment_absolute=bool(absolute), segment_quant=arr(4, np.int8, (4,)),
            segment_lf=arr(5, np.int8, (4,)), ref_lf_deltas=arr(6, np.int8, (4,)),
            mode_lf_deltas=arr(7, np.int8, (4,)), segment_map=segment_map,
            last=refs[0], golden=refs[1], altref=refs[2])
