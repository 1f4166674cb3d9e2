"""A decoded or raw picture: three 8-bit planes in I420 (4:2:0) layout at display size."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class Image:
    """Y at ``height x width``; U and V at ``ceil(height/2) x ceil(width/2)``; all ``uint8``."""

    y: np.ndarray
    u: np.ndarray
    v: np.ndarray

    @property
    def width(self) -> int:
        return self.y.shape[1]

    @property
    def height(self) -> int:
        return self.y.shape[0]

    def to_i420(self) -> bytes:
        """The planes back to back, no padding: the layout of vpxdec --i420 and the .md5 files."""
        return b"".join(np.ascontiguousarray(p).tobytes() for p in (self.y, self.u, self.v))

    def md5(self) -> str:
        return hashlib.md5(self.to_i420()).hexdigest()

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
