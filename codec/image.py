"""A decoded or raw picture: three 8-bit planes in I420 (4:2:0) layout at display size."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, eq=False)
class Image:
    """Y at ``height x width``; U and V at ``ceil(height/2) x ceil(width/2)``; all ``uint8``."""

    y: np.ndarray
    u: np.ndarray
    v: np.ndarray
    # The three planes back to back, when they are views of one such buffer (the decoder's
    # output): to_i420 and i420_buffer then need no gathering.
    i420: np.ndarray | None = field(default=None, repr=False, compare=False)

    @staticmethod
    def from_i420(buf: np.ndarray, width: int, height: int) -> "Image":
        """The picture whose planes are views of ``buf`` (uint8, the I420 layout, kept as is)."""
        cw, ch = (width + 1) // 2, (height + 1) // 2
        n, c = width * height, cw * ch
        if buf.dtype != np.uint8 or buf.shape != (n + 2 * c,):
            raise ValueError(f"an I420 buffer of {width}x{height} holds {n + 2 * c} bytes, "
                             f"not {buf.shape} of {buf.dtype}")
        return Image(buf[:n].reshape(height, width), buf[n:n + c].reshape(ch, cw),
                     buf[n + c:].reshape(ch, cw), buf)

    @property
    def width(self) -> int:
        return self.y.shape[1]

    @property
    def height(self) -> int:
        return self.y.shape[0]

    def to_i420(self) -> bytes:
        """The planes back to back, no padding: the layout of vpxdec --i420 and the .md5 files."""
        if self.i420 is not None:
            return self.i420.tobytes()
        return b"".join(np.ascontiguousarray(p).tobytes() for p in (self.y, self.u, self.v))

    def i420_buffer(self):
        """``to_i420``'s bytes as a buffer (for hashing or writing), without a copy when the
        image has them in one piece."""
        if self.i420 is not None:
            return memoryview(self.i420)
        return self.to_i420()

    def md5(self) -> str:
        return hashlib.md5(self.i420_buffer()).hexdigest()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Image):
            return NotImplemented
        return all(np.array_equal(a, b) for a, b in zip((self.y, self.u, self.v), (other.y, other.u, other.v)))

    __hash__ = None  # mutable arrays inside: not hashable

    @staticmethod
    def blank(width: int, height: int, value: int = 0) -> "Image":
        cw, ch = (width + 1) // 2, (height + 1) // 2
        return Image(
            np.full((height, width), value, np.uint8),
            np.full((ch, cw), value, np.uint8),
            np.full((ch, cw), value, np.uint8),
        )
