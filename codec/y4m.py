"""YUV4MPEG2 (Y4M), the raw-video container of the encoder's input and the decoder's output.

Format (mjpegtools' ``yuv4mpeg(5)`` manual, also what ffmpeg and vpxenc read and write)::

    YUV4MPEG2 W<width> H<height> F<num>:<den> I<p|t|b|m> A<num>:<den> C<colourspace> X<any>\\n
    FRAME[ <params>]\\n<Y plane><U plane><V plane>
    FRAME\\n...

Header tags are separated by single spaces; W and H are required, the others optional. Only
8-bit 4:2:0 is accepted: ``C420jpeg``, ``C420mpeg2``, ``C420paldv``, ``C420`` or no C tag at all
(mjpegtools' default). The chroma siting and ffmpeg's ``XYSCSS=`` / ``XCOLORRANGE=`` extensions are
kept as metadata; the samples are the same. Planes are stored at display size with no padding:
Y is W x H, U and V are ceil(W/2) x ceil(H/2) each — the layout of ``codec.image.Image``.

Errors: a bad header, zero or huge dimensions, or a truncated frame raise ``ContainerError``
naming the byte offset; another colourspace (C444, C422, C420p10, mono, ...) raises
``UnsupportedError`` naming it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import BinaryIO, Iterator

import numpy as np

from codec.errors import ContainerError, UnsupportedError
from codec.image import Image
from codec.ivf import AtomicFile, AtomicWriter

SIGNATURE = b"YUV4MPEG2"
FRAME_TAG = b"FRAME"
MAX_DIMENSION = 16384
#: Longest header or FRAME line we read before calling the input garbage.
MAX_LINE = 4096
#: Colourspace tags holding 8-bit 4:2:0 samples; None is "no C tag".
SUPPORTED_COLORSPACES = ("420jpeg", "420mpeg2", "420paldv", "420", None)


@dataclass(frozen=True)
class Y4mHeader:
    """The stream header. ``colorspace`` is the C tag without its ``C`` (None when absent);
    ``extensions`` holds the X tags without their ``X``, in order (e.g. ``"YSCSS=420JPEG"``)."""

    width: int
    height: int
    rate: tuple[int, int] = (30, 1)
    interlace: str = "p"
    aspect: tuple[int, int] = (1, 1)
    colorspace: str | None = "420jpeg"
    extensions: tuple[str, ...] = field(default=())

    @property
    def frame_size(self) -> int:
        cw, ch = (self.width + 1) // 2, (self.height + 1) // 2
        return self.width * self.height + 2 * cw * ch

    def extension(self, key: str) -> str | None:
        """The value of ``X<key>=<value>``, or None."""
        for ext in self.extensions:
            k, _, v = ext.partition("=")
            if k == key:
                return v
        return None

    @property
    def color_range(self) -> str | None:
        """``"FULL"`` or ``"LIMITED"`` from ffmpeg's XCOLORRANGE tag, None when absent."""
        return self.extension("COLORRANGE")

    def to_bytes(self) -> bytes:
        parts = [f"YUV4MPEG2 W{self.width} H{self.height} F{self.rate[0]}:{self.rate[1]}",
                 f"I{self.interlace}", f"A{self.aspect[0]}:{self.aspect[1]}"]
        if self.colorspace is not None:
            parts.append(f"C{self.colorspace}")
        parts += [f"X{ext}" for ext in self.extensions]
        return (" ".join(parts) + "\n").encode("ascii")

    @classmethod
    def parse(cls, line: bytes) -> "Y4mHeader":
        """Parse a header line (without its newline); offsets in errors count from 0."""
        if not line.startswith(SIGNATURE + b" ") and line != SIGNATURE:
            raise ContainerError(f"not a Y4M file: expected {SIGNATURE.decode()!r} at offset 0")
        try:
            text = line.decode("ascii")
        except UnicodeDecodeError as e:
            raise ContainerError(f"garbage in Y4M header at offset {e.start}") from None
        fields: dict = {"extensions": []}
        pos = len(SIGNATURE) + 1
        for token in text[pos:].split(" "):
            here, pos = pos, pos + len(token) + 1
            if not token:
                continue  # tolerate doubled spaces
            tag, value = token[0], token[1:]
            try:
                if tag == "W":
                    fields["width"] = int(value)
                elif tag == "H":
                    fields["height"] = int(value)
                elif tag == "F":
                    fields["rate"] = _ratio(value)
                elif tag == "A":
                    fields["aspect"] = _ratio(value)
                elif tag == "I":
                    fields["interlace"] = value
                elif tag == "C":
                    fields["colorspace"] = value
                elif tag == "X":
                    fields["extensions"].append(value)
                else:
                    raise ValueError
            except ValueError:
                raise ContainerError(f"bad Y4M header tag {token!r} at offset {here}") from None
        for key in ("width", "height"):
            if key not in fields:
                raise ContainerError(f"Y4M header at offset 0 has no {key[0].upper()} ({key}) tag")
            if not 0 < fields[key] <= MAX_DIMENSION:
                raise ContainerError(f"Y4M {key} {fields[key]} out of range 1..{MAX_DIMENSION} "
                                     f"in the header at offset 0")
        colorspace = fields.setdefault("colorspace", None)
        if colorspace not in SUPPORTED_COLORSPACES:
            raise UnsupportedError(f"unsupported Y4M colourspace C{colorspace}: only 8-bit 4:2:0 "
                                   f"(C420jpeg, C420mpeg2, C420paldv, C420) is supported")
        fields["extensions"] = tuple(fields["extensions"])
        return cls(**fields)


def _ratio(value: str) -> tuple[int, int]:
    num, sep, den = value.partition(":")
    if not sep:
        raise ValueError(value)
    n, d = int(num), int(den)
    if n < 0 or d < 0:
        raise ValueError(value)
    return (n, d)


def _read_line(f: BinaryIO, offset: int, what: str) -> bytes | None:
    """One line without its newline; None at end of file before any byte."""
    line = f.readline(MAX_LINE + 1)
    if not line:
        return None
    if not line.endswith(b"\n"):
        if len(line) > MAX_LINE:
            raise ContainerError(f"Y4M {what} at offset {offset} is longer than {MAX_LINE} bytes")
        raise ContainerError(f"truncated Y4M {what} at offset {offset}")
    return line[:-1]


class Y4mReader:
    """Reads a Y4M file: ``reader.header``, then ``for image in reader: ...`` yields ``Image``.

    ``source`` is a path or a binary file object. ``frame_offset`` is the file offset of the
    FRAME line of the image last returned.
    """

    def __init__(self, source: str | os.PathLike | BinaryIO):
        if isinstance(source, (str, bytes, os.PathLike)):
            self._file: BinaryIO = open(source, "rb")
            self._owned = True
        else:
            self._file, self._owned = source, False
        try:
            line = _read_line(self._file, 0, "header")
            if line is None:
                raise ContainerError("empty file: no Y4M header at offset 0")
            self.header = Y4mHeader.parse(line)
        except BaseException:
            self.close()
            raise
        self._offset = len(line) + 1
        self.frame_offset = -1
        self.frame_count = 0

    def __iter__(self) -> Iterator[Image]:
        while (image := self.read_frame()) is not None:
            yield image

    def read_frame(self) -> Image | None:
        """The next frame, or None at a clean end of file."""
        offset = self._offset
        line = _read_line(self._file, offset, "FRAME line")
        if line is None:
            return None
        if not (line == FRAME_TAG or line.startswith(FRAME_TAG + b" ")):
            raise ContainerError(f"expected FRAME at offset {offset}, found {line[:16]!r}")
        size = self.header.frame_size
        data = self._file.read(size)
        start = offset + len(line) + 1
        if len(data) < size:
            raise ContainerError(f"truncated Y4M frame {self.frame_count} at offset {offset}: "
                                 f"{len(data)} of {size} bytes after the FRAME line")
        self._offset = start + size
        self.frame_offset = offset
        self.frame_count += 1
        return _planes(data, self.header.width, self.header.height)

    def close(self) -> None:
        if self._owned:
            self._file.close()

    def __enter__(self) -> "Y4mReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _planes(data: bytes, width: int, height: int) -> Image:
    buf = np.frombuffer(data, np.uint8)
    cw, ch = (width + 1) // 2, (height + 1) // 2
    ys, cs = width * height, cw * ch
    return Image(buf[:ys].reshape(height, width).copy(),
                 buf[ys:ys + cs].reshape(ch, cw).copy(),
                 buf[ys + cs:ys + 2 * cs].reshape(ch, cw).copy())


def read_y4m(source: str | os.PathLike | BinaryIO) -> tuple[Y4mHeader, list[Image]]:
    """The header and every frame of a Y4M file, read at once."""
    with Y4mReader(source) as reader:
        return reader.header, list(reader)


class Y4mWriter(AtomicWriter):
    """Writes a Y4M file through ``AtomicFile`` (temporary name, renamed on ``close()``).

    The header is ``YUV4MPEG2 W.. H.. F.. Ip A1:1 C420jpeg``. When ``width``/``height`` are not
    given they are taken from the first image. Every image must have the header's size: Y4M cannot
    change size mid-stream, so a different one raises ``UnsupportedError``.
    """

    def __init__(self, path: str | os.PathLike, width: int | None = None, height: int | None = None,
                 rate: tuple[int, int] = (30, 1)):
        self.rate = rate
        self.header: Y4mHeader | None = None
        self.frame_count = 0
        self._out = AtomicFile(path)
        if width is not None and height is not None:
            self._start(width, height)

    def _start(self, width: int, height: int) -> None:
        if not (0 < width <= MAX_DIMENSION and 0 < height <= MAX_DIMENSION):
            raise ValueError(f"Y4M size {width}x{height} out of range 1..{MAX_DIMENSION}")
        self.header = Y4mHeader(width, height, self.rate, "p", (1, 1), "420jpeg")
        self._out.write(self.header.to_bytes())

    def write(self, image: Image) -> None:
        if self.header is None:
            self._start(image.width, image.height)
        if (image.width, image.height) != (self.header.width, self.header.height):
            raise UnsupportedError(f"frame {self.frame_count} is {image.width}x{image.height} but the "
                                   f"Y4M stream is {self.header.width}x{self.header.height}; Y4M "
                                   f"cannot change size mid-stream (write raw .i420 instead)")
        self._out.write(FRAME_TAG + b"\n")
        self._out.write(image.i420_buffer())
        self.frame_count += 1
