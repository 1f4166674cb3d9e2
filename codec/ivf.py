"""IVF, the container of the VP8 test vectors and of everything excamera writes.

IVF is libvpx's minimal container (described in the WebM project's ``ivfdec.c`` / ``ivfenc.c``
and in the VP8 test-vector README; it is not part of RFC 6386). All integers are little-endian::

    file header, 32 bytes
      0  4  signature  b"DKIF"
      4  2  version    0
      6  2  header length in bytes, 32
      8  4  fourcc     b"VP80"
     12  2  width      (pixels; informative, the frames carry their own size)
     14  2  height
     16  4  rate       frame rate numerator   (time base denominator)
     20  4  scale      frame rate denominator (time base numerator)
     24  4  frame count (writers that stream often leave it wrong; we read to end of file)
     28  4  unused     excamera stores a decoder-state digest here; exposed as ``user``

    then per frame
      0  4  frame size in bytes (payload only)
      4  8  presentation timestamp (pts), in units of scale/rate seconds
     12  -  payload: one compressed VP8 frame

``IvfReader`` validates all of it and raises ``ContainerError`` naming the byte offset;
``IvfWriter`` writes under a temporary name and renames on ``close()`` (``AtomicFile``), so no
half-written file is ever left under the final name.

A variable-frame-rate input's times go into the same two fields as libvpx and ffmpeg read them:
the header's rate/scale hold the time base (rate = its denominator, scale = its numerator) and
each frame's pts is in ticks of it (``shown_pts`` maps decode-order frames to those ticks;
``restamp`` rewrites a constant-rate file's bytes as they stream past).
"""

from __future__ import annotations

import os
import struct
import tempfile
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import BinaryIO, Iterable, Iterator, Sequence

from codec.errors import ContainerError, UnsupportedError

SIGNATURE = b"DKIF"
VERSION = 0
HEADER_SIZE = 32
FRAME_HEADER_SIZE = 12
VP8_FOURCC = b"VP80"
#: A frame bigger than this is taken as corruption, not as a frame (a 16383x16383 intra frame
#: at the lowest quantizer is still far below it).
MAX_FRAME_SIZE = 64 << 20

_HEADER = struct.Struct("<4sHH4sHHIII4s")
_FRAME_HEADER = struct.Struct("<IQ")
assert _HEADER.size == HEADER_SIZE and _FRAME_HEADER.size == FRAME_HEADER_SIZE


@dataclass(frozen=True)
class IvfHeader:
    """The 32-byte file header."""

    fourcc: bytes = VP8_FOURCC
    width: int = 0
    height: int = 0
    rate: int = 30  # frame rate = rate / scale
    scale: int = 1
    frame_count: int = 0
    user: bytes = bytes(4)  # bytes 28..31, "unused" in libvpx; excamera's state digest

    @property
    def frame_rate(self) -> tuple[int, int]:
        """(numerator, denominator), 30:1 when the header leaves either at zero."""
        if self.rate <= 0 or self.scale <= 0:
            return (30, 1)
        return (self.rate, self.scale)

    def to_bytes(self) -> bytes:
        if len(self.fourcc) != 4 or len(self.user) != 4:
            raise ValueError("IVF fourcc and user fields are 4 bytes each")
        return _HEADER.pack(SIGNATURE, VERSION, HEADER_SIZE, self.fourcc, self.width, self.height,
                            self.rate, self.scale, self.frame_count, self.user)

    @classmethod
    def parse(cls, data: bytes, *, fourcc: bytes | None = VP8_FOURCC) -> "IvfHeader":
        """Parse and validate a file header; ``fourcc=None`` accepts any codec."""
        if len(data) < HEADER_SIZE:
            raise ContainerError(f"truncated IVF header: {len(data)} of {HEADER_SIZE} bytes (offset 0)")
        sig, version, length, cc, w, h, rate, scale, count, user = _HEADER.unpack_from(data)
        if sig != SIGNATURE:
            raise ContainerError(f"not an IVF file: signature {sig!r} at offset 0, expected {SIGNATURE!r}")
        if version != VERSION:
            raise ContainerError(f"unsupported IVF version {version} at offset 4, expected {VERSION}")
        if length != HEADER_SIZE:
            raise ContainerError(f"bad IVF header length {length} at offset 6, expected {HEADER_SIZE}")
        if fourcc is not None and cc != fourcc:
            raise UnsupportedError(f"unsupported codec fourcc {cc!r} at offset 8, expected {fourcc!r}")
        return cls(cc, w, h, rate, scale, count, user)


@dataclass(frozen=True)
class IvfFrame:
    """One frame record. ``offset`` is where its 12-byte frame header starts in the file;
    the payload starts at ``offset + FRAME_HEADER_SIZE``."""

    index: int  # 0-based position in the file
    pts: int
    offset: int
    data: bytes


class IvfReader:
    """Reads an IVF file frame by frame: ``for frame in IvfReader(path): ...``.

    ``source`` is a path, or a binary file object positioned at the file header. The header is
    read and validated on construction. Iteration yields ``IvfFrame`` until end of file; a frame
    record that is cut short raises ``ContainerError``.
    """

    def __init__(self, source: str | os.PathLike | BinaryIO, *, fourcc: bytes | None = VP8_FOURCC):
        if isinstance(source, (str, bytes, os.PathLike)):
            self._file: BinaryIO = open(source, "rb")
            self._owned = True
        else:
            self._file, self._owned = source, False
        try:
            self.header = IvfHeader.parse(self._file.read(HEADER_SIZE), fourcc=fourcc)
        except BaseException:
            self.close()
            raise
        self._offset = HEADER_SIZE
        self._index = 0

    def __iter__(self) -> Iterator[IvfFrame]:
        while (frame := self.read_frame()) is not None:
            yield frame

    @property
    def position(self) -> tuple[int, int]:
        """(index, file offset) of the next frame record to be read."""
        return self._index, self._offset

    def read_frame(self) -> IvfFrame | None:
        """The next frame, or None at a clean end of file."""
        offset = self._offset
        head = self._file.read(FRAME_HEADER_SIZE)
        if not head:
            return None
        if len(head) < FRAME_HEADER_SIZE:
            raise ContainerError(f"truncated IVF frame header at offset {offset}: "
                                 f"{len(head)} of {FRAME_HEADER_SIZE} bytes")
        size, pts = _FRAME_HEADER.unpack(head)
        if size > MAX_FRAME_SIZE:
            raise ContainerError(f"absurd IVF frame size {size} at offset {offset} "
                                 f"(limit {MAX_FRAME_SIZE})")
        data = self._file.read(size)
        if len(data) < size:
            raise ContainerError(f"IVF frame at offset {offset} claims {size} bytes but the file "
                                 f"ends after {len(data)}")
        frame = IvfFrame(self._index, pts, offset, data)
        self._offset += FRAME_HEADER_SIZE + size
        self._index += 1
        return frame

    def close(self) -> None:
        if self._owned:
            self._file.close()

    def __enter__(self) -> "IvfReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_ivf(source: str | os.PathLike | BinaryIO, *, fourcc: bytes | None = VP8_FOURCC
             ) -> tuple[IvfHeader, list[IvfFrame]]:
    """The header and every frame of an IVF file, read at once."""
    with IvfReader(source, fourcc=fourcc) as reader:
        return reader.header, list(reader)


class AtomicFile:
    """A binary output file written under a temporary name in the target's directory.

    ``commit()`` renames it onto the target (atomically, on POSIX); ``discard()`` removes it.
    Used as a context manager it commits on success and discards on any exception, so a failed
    run never leaves a partial output behind. Shared by ``IvfWriter``, ``codec.y4m`` and the CLI.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        directory, name = os.path.split(os.path.abspath(self.path))
        fd, self.tmp_path = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
        self.file: BinaryIO = os.fdopen(fd, "w+b")
        self.done = False

    def write(self, data: bytes) -> int:
        return self.file.write(data)

    def commit(self) -> None:
        if self.done:
            return
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(self.tmp_path, 0o666 & ~umask)  # mkstemp makes it 0600; give normal bits
            os.replace(self.tmp_path, self.path)
        except BaseException:
            self.discard()
            raise
        self.done = True

    def discard(self) -> None:
        if self.done:
            return
        self.done = True
        try:
            self.file.close()
        finally:
            try:
                os.unlink(self.tmp_path)
            except FileNotFoundError:
                pass

    def __enter__(self) -> "AtomicFile":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


class AtomicWriter:
    """Base of the container writers: ``self._out`` is an ``AtomicFile``; used as a context manager
    the output is committed by ``close()`` on success and discarded on any exception."""

    _out: "AtomicFile"

    def close(self) -> None:
        self._out.commit()

    def abort(self) -> None:
        self._out.discard()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class IvfWriter(AtomicWriter):
    """Writes an IVF file through ``AtomicFile``; ``close()`` fixes up the frame count in the
    header and renames the file into place. Use as a context manager, or call ``close()`` /
    ``abort()`` yourself."""

    def __init__(self, path: str | os.PathLike, header: IvfHeader | None = None, **fields):
        self.header = header if header is not None else IvfHeader(**fields)
        self.frame_count = 0
        self._next_pts = 0
        self._out = AtomicFile(path)
        try:
            self._out.write(self.header.to_bytes())
        except BaseException:
            self._out.discard()
            raise

    def write(self, data: bytes, pts: int | None = None) -> None:
        """Append one frame; ``pts`` defaults to one more than the previous frame's."""
        if len(data) > MAX_FRAME_SIZE:
            raise ValueError(f"frame of {len(data)} bytes exceeds the IVF limit {MAX_FRAME_SIZE}")
        pts = self._next_pts if pts is None else pts
        self._out.write(_FRAME_HEADER.pack(len(data), pts))
        self._out.write(data)
        self._next_pts = pts + 1
        self.frame_count += 1

    def close(self) -> None:
        if self._out.done:
            return
        try:
            header = IvfHeader(self.header.fourcc, self.header.width, self.header.height,
                               self.header.rate, self.header.scale, self.frame_count, self.header.user)
            self._out.file.seek(0)
            self._out.write(header.to_bytes())
        except BaseException:
            self._out.discard()
            raise
        self._out.commit()


def tick_of(k: int, ticks: Sequence[int]) -> int:
    """The time of the ``k``-th shown picture: ``ticks[k]``; past the end, one more step of the
    last interval per picture (the last picture lasts as long as the one before it)."""
    if k < len(ticks):
        return ticks[k]
    step = ticks[-1] - ticks[-2] if len(ticks) > 1 else 1
    return ticks[-1] + step * (k - len(ticks) + 1)


def shown_pts(shown: Sequence[bool], ticks: Sequence[int]) -> list[int]:
    """Each VP8 frame's pts (decode order; ``shown``: its show_frame flag) at a variable rate:
    the k-th shown frame at ``ticks[k]``, a hidden frame (an altref) at the time of the shown
    frame after it, as ``codec.chunks.presentation_times`` places it at a constant rate."""
    out, k = [], 0
    for visible in shown:
        out.append(tick_of(k, ticks))
        k += bool(visible)
    return out


def ivf_time_base(time_base: Fraction) -> tuple[int, int]:
    """(rate, scale) of the header for ``time_base``; ``ContainerError`` if either needs more
    than the field's 32 bits."""
    tb = Fraction(time_base)
    if not (0 < tb.numerator <= 0xFFFFFFFF and 0 < tb.denominator <= 0xFFFFFFFF):
        raise ContainerError(f"time base {tb} does not fit an IVF header (32-bit rate and scale)")
    return tb.denominator, tb.numerator


def restamp(parts: Iterable[bytes], ticks: Sequence[int], time_base: Fraction) -> Iterator[bytes]:
    """The bytes of an IVF file (``parts``: pieces of any size, in order) with the header's time
    base set to ``time_base`` and each frame's pts to its time in ``ticks`` (``shown_pts``;
    a frame's show_frame flag is bit 4 of its first byte, RFC 6386 9.1): a constant-rate stream
    given a variable-rate input's times while it is written, one piece at a time (the pieces
    yielded add up to as many bytes as those taken); ``ContainerError`` for a file cut short."""
    rate, scale = ivf_time_base(time_base)
    pending = b""
    header_done, skip, k = False, 0, 0   # skip: payload bytes of the current frame still to pass
    for part in parts:
        data = pending + bytes(part)
        out, pos = [], 0
        while pos < len(data):
            if skip:
                n = min(skip, len(data) - pos)
                out.append(data[pos:pos + n])
                pos, skip = pos + n, skip - n
            elif not header_done:
                if len(data) - pos < HEADER_SIZE:
                    break
                header = IvfHeader.parse(data[pos:pos + HEADER_SIZE], fourcc=None)
                out.append(replace(header, rate=rate, scale=scale).to_bytes())
                pos, header_done = pos + HEADER_SIZE, True
            else:
                if len(data) - pos < FRAME_HEADER_SIZE:
                    break
                size, _ = _FRAME_HEADER.unpack_from(data, pos)
                if size and len(data) - pos < FRAME_HEADER_SIZE + 1:
                    break                 # the flag's byte is in the next piece
                visible = not size or bool(data[pos + FRAME_HEADER_SIZE] & 0x10)   # empty: a repeat
                out.append(_FRAME_HEADER.pack(size, tick_of(k, ticks)))
                k += visible
                pos, skip = pos + FRAME_HEADER_SIZE, size
        pending = data[pos:]
        yield b"".join(out)
    if pending or skip or not header_done:
        raise ContainerError("IVF stream cut short while restamping its times")


def shown_timing(records: Iterable[tuple[int, bool]], header: IvfHeader):
    """The rate and times of an IVF stream from its frame records (``(pts, shown)`` in decode
    order): ``(rate, times)``, ``rate`` as ``(num, den)`` frames per second and ``times`` the
    shown pictures' ticks of the header's time base from the first, or None at a constant rate.

    Three layouts are constant-rate: pts counting shown pictures (vpxenc; a hidden frame shares
    the next picture's pts), pts counting every record (excamera's decode-order index, for
    files whose hidden frames take a number of their own), and a steady step of k ticks (rate
    = header rate / k). Anything else plays at a variable rate: its average rate is given."""
    records = list(records)
    pts = [p for p, shown in records if shown]
    if len(pts) < 2 or header.rate <= 0 or header.scale <= 0:
        return header.frame_rate, None
    if all(p == i for i, (p, _) in enumerate(records)):
        return header.frame_rate, None
    steps = {b - a for a, b in zip(pts, pts[1:])}
    if len(steps) == 1 and min(steps) > 0:
        rate = Fraction(header.rate, header.scale * min(steps))
        return (rate.numerator, rate.denominator), None
    if any(b <= a for a, b in zip(pts, pts[1:])):   # out of order or repeated: trust the header
        return header.frame_rate, None
    rate = Fraction((len(pts) - 1) * header.rate, (pts[-1] - pts[0]) * header.scale).limit_denominator(1001)
    return (rate.numerator, rate.denominator), [p - pts[0] for p in pts]


def read_timing(path: str | os.PathLike):
    """``(rate, times, time_base)`` of the IVF file at ``path`` (``shown_timing``; the time base
    is the header's, 0 where it has none), reading the 12-byte record headers and each frame's
    first byte (its show_frame flag, RFC 6386 9.1) only."""
    records = []
    with open(path, "rb") as f:
        header = IvfHeader.parse(f.read(HEADER_SIZE), fourcc=None)
        while len(head := f.read(FRAME_HEADER_SIZE)) == FRAME_HEADER_SIZE:
            size, pts = _FRAME_HEADER.unpack(head)
            first = f.read(1) if size else b""
            if size and not first:
                break
            records.append((pts, not size or bool(first[0] & 0x10)))
            f.seek(max(0, size - 1), os.SEEK_CUR)
    base = Fraction(header.scale, header.rate) if header.rate > 0 and header.scale > 0 else Fraction(0)
    return (*shown_timing(records, header), base)
