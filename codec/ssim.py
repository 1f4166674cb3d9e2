"""SSIM between two I420 pictures, computed the way ffmpeg's ``ssim`` filter computes it.

SSIM (Wang, Bovik, Sheikh, Simoncelli, "Image quality assessment: from error visibility to
structural similarity", IEEE Trans. Image Processing 13(4), 2004) compares two pictures window by
window through their means, variances and covariance::

    ssim(a, b) = (2 mu_a mu_b + C1) (2 cov_ab + C2) / ((mu_a^2 + mu_b^2 + C1) (var_a + var_b + C2))

with C1 = (0.01 * 255)^2 and C2 = (0.03 * 255)^2 for 8-bit samples. The paper weights each window
with an 11x11 Gaussian; ffmpeg (like x264, whose implementation it took) uses the usual faster
approximation, which is what the encoders' ``--tune ssim`` and the published figures use, so we
follow it:

* the plane is cut into 4x4 blocks (the last ``w % 4`` columns and ``h % 4`` rows are ignored) and
  each block keeps four integer sums: ``s1 = sum a``, ``s2 = sum b``, ``ss = sum a^2 + b^2`` and
  ``s12 = sum a b``;
* a window is 2x2 neighbouring blocks, i.e. an unweighted 8x8 window; windows overlap by 4 pixels
  each way, so a plane of ``(w // 4) x (h // 4)`` blocks has ``(w // 4 - 1) x (h // 4 - 1)`` of
  them: every 8x8 window whose corner is at a multiple of 4 and that lies inside the plane;
* over the 64 pixels of a window the formula above is evaluated on the sums, scaled by 64 to stay
  in integers: ``vars = 64 ss - s1^2 - s2^2``, ``covar = 64 s12 - s1 s2`` and::

      ssim = (2 s1 s2 + c1) (2 covar + c2) / ((s1^2 + s2^2 + c1) (vars + c2))

  with the integer constants ``c1 = round(C1 * 64) = 416`` and ``c2 = round(C2 * 64 * 63) =
  235963`` (the 63/64 makes the variances the unbiased ones; c1 is scaled by 64, not 64^2, as in
  x264 and ffmpeg: we keep their constant so that the figures agree with theirs);
* a plane's SSIM is the plain mean over its windows; a frame's ``All`` value is the mean of the
  three planes weighted by their sample counts (Y: w x h, U and V: ceil(w/2) x ceil(h/2) each);
  over a sequence each of Y, U, V and All is the plain mean over frames;
* in decibels: ``-10 log10(1 - ssim)``, infinite for identical pictures.

The sums are exact integers (a window's largest, ``64 s12 <= 64 * 64 * 255^2``, needs 28 bits);
the ratio is evaluated in float64 where ffmpeg uses float32, which moves the figures by less than
1e-6.

One deliberate departure: a plane smaller than 8x8 has no window, and ffmpeg then prints ``nan``
(0/0) or ``0``. We measure such a plane as one window covering the whole plane with the textbook
formula (population statistics, C1 and C2 as above), so every picture of at least 1x1 has a
defined SSIM, 1 exactly when identical.
"""

from __future__ import annotations

import math
from typing import Iterable, Iterator, NamedTuple

import numpy as np

from .errors import UnsupportedError
from .image import Image
from .jit import njit

#: ffmpeg's (and x264's) integer constants for 8-bit samples; see the module docstring.
SSIM_C1 = 416  # round(0.01^2 * 255^2 * 64)
SSIM_C2 = 235963  # round(0.03^2 * 255^2 * 64 * 63)
#: The textbook constants, used only for planes with no 8x8 window.
C1 = (0.01 * 255) ** 2
C2 = (0.03 * 255) ** 2
#: Smallest plane with at least one 8x8 window.
MIN_WINDOW_PLANE = 8


@njit(cache=True)
def _block_row_sums(a, b, by, sums):
    """Fill ``sums[bx] = (s1, s2, ss, s12)`` for every 4x4 block of block row ``by``."""
    for bx in range(sums.shape[0]):
        s1 = 0
        s2 = 0
        ss = 0
        s12 = 0
        for y in range(4 * by, 4 * by + 4):
            for x in range(4 * bx, 4 * bx + 4):
                pa = np.int64(a[y, x])
                pb = np.int64(b[y, x])
                s1 += pa
                s2 += pb
                ss += pa * pa + pb * pb
                s12 += pa * pb
        sums[bx, 0] = s1
        sums[bx, 1] = s2
        sums[bx, 2] = ss
        sums[bx, 3] = s12


@njit(cache=True)
def _window_ssim(s1, s2, ss, s12):
    """SSIM of one 8x8 window from its four integer sums (ffmpeg's integer form, see above)."""
    vars_ = 64 * ss - s1 * s1 - s2 * s2
    covar = 64 * s12 - s1 * s2
    num = np.float64(2 * s1 * s2 + SSIM_C1) * np.float64(2 * covar + SSIM_C2)
    den = np.float64(s1 * s1 + s2 * s2 + SSIM_C1) * np.float64(vars_ + SSIM_C2)
    return num / den


@njit(cache=True)
def ssim_plane_sum(a, b):
    """Sum of the SSIM of every 8x8 window (corner at a multiple of 4, inside the plane) of two
    equal-sized uint8 planes, and the number of windows. Two rows of block sums are kept: the
    previous block row and the current one, so memory is O(width)."""
    h4 = a.shape[0] // 4
    w4 = a.shape[1] // 4
    if h4 < 2 or w4 < 2 or b.shape[0] != a.shape[0] or b.shape[1] != a.shape[1]:
        return 0.0, 0
    above = np.empty((w4, 4), np.int64)
    below = np.empty((w4, 4), np.int64)
    _block_row_sums(a, b, 0, above)
    total = 0.0
    for by in range(1, h4):
        _block_row_sums(a, b, by, below)
        for bx in range(w4 - 1):
            total += _window_ssim(
                above[bx, 0] + above[bx + 1, 0] + below[bx, 0] + below[bx + 1, 0],
                above[bx, 1] + above[bx + 1, 1] + below[bx, 1] + below[bx + 1, 1],
                above[bx, 2] + above[bx + 1, 2] + below[bx, 2] + below[bx + 1, 2],
                above[bx, 3] + above[bx + 1, 3] + below[bx, 3] + below[bx + 1, 3])
        above, below = below, above
    return total, (h4 - 1) * (w4 - 1)


def _whole_plane_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """One window over a whole (small) plane, textbook formula with population statistics."""
    x = a.astype(np.float64)
    y = b.astype(np.float64)
    mx, my = x.mean(), y.mean()
    vx, vy = ((x - mx) ** 2).mean(), ((y - my) ** 2).mean()
    cov = ((x - mx) * (y - my)).mean()
    return float((2 * mx * my + C1) * (2 * cov + C2) / ((mx * mx + my * my + C1) * (vx + vy + C2)))


def ssim_plane(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two uint8 planes of the same shape (mean over the 8x8 windows; see above)."""
    if a.shape != b.shape or a.ndim != 2:
        raise UnsupportedError(f"cannot compare planes of shapes {a.shape} and {b.shape}")
    if a.dtype != np.uint8 or b.dtype != np.uint8:
        raise UnsupportedError(f"SSIM needs 8-bit planes, got {a.dtype} and {b.dtype}")
    if a.size == 0:
        raise UnsupportedError("cannot compute the SSIM of an empty plane")
    if min(a.shape) < MIN_WINDOW_PLANE:
        return _whole_plane_ssim(a, b)
    total, count = ssim_plane_sum(np.ascontiguousarray(a), np.ascontiguousarray(b))
    return total / count


class Ssim(NamedTuple):
    """SSIM of one frame, or a mean over frames: per plane and ``all`` (weighted by plane size)."""

    y: float
    u: float
    v: float
    all: float

    def db(self) -> "Ssim":
        """The same four values in decibels, ``-10 log10(1 - ssim)`` (``inf`` when 1)."""
        return Ssim(*(ssim_db(s) for s in self))


def ssim_db(ssim: float) -> float:
    """``-10 log10(1 - ssim)``: ``inf`` for 1 (identical), ``nan`` stays ``nan``."""
    if math.isnan(ssim):
        return ssim
    if ssim >= 1.0:
        return math.inf
    return -10.0 * math.log10(1.0 - ssim)


def ssim_planes(a: Image, b: Image) -> Ssim:
    """SSIM of two I420 pictures of the same size: ``(y, u, v, all)``.

    ``all`` weights each plane by its sample count, as ffmpeg does; raises ``UnsupportedError``
    when the sizes differ."""
    if (a.width, a.height) != (b.width, b.height):
        raise UnsupportedError(f"cannot compare a {a.width}x{a.height} picture with a "
                               f"{b.width}x{b.height} one")
    planes = [(a.y, b.y), (a.u, b.u), (a.v, b.v)]
    values = [ssim_plane(pa, pb) for pa, pb in planes]
    sizes = [pa.size for pa, _ in planes]
    # sum(n_i s_i) / sum(n_i): exactly 1.0 when every plane is (a weighted sum of coefficients
    # that were divided first would not be).
    weighted = sum(n * s for n, s in zip(sizes, values)) / sum(sizes)
    return Ssim(values[0], values[1], values[2], weighted)


class SsimMean:
    """Running mean of per-frame ``Ssim`` values (each of Y, U, V and All averaged over frames,
    as ffmpeg does), for streaming over a sequence without keeping it."""

    def __init__(self) -> None:
        self.count = 0
        self._sums = [0.0, 0.0, 0.0, 0.0]

    def add(self, value: Ssim) -> None:
        self.count += 1
        for i, s in enumerate(value):
            self._sums[i] += s

    def mean(self) -> Ssim:
        """The mean so far; ``ValueError`` before the first ``add``."""
        if not self.count:
            raise ValueError("no frame to average")
        return Ssim(*(s / self.count for s in self._sums))


def ssim_frames(a: Iterable[Image], b: Iterable[Image]) -> Iterator[Ssim]:
    """``ssim_planes`` of each pair of frames, in order, consuming both iterables lazily.

    Raises ``UnsupportedError`` when one sequence ends before the other (after yielding every
    common frame) or when a pair differs in size."""
    ia, ib = iter(a), iter(b)
    index = 0
    while True:
        fa, fb = next(ia, None), next(ib, None)
        if fa is None and fb is None:
            return
        if fa is None or fb is None:
            longer = "second" if fa is None else "first"
            raise UnsupportedError(f"the {longer} sequence has more than {index} frames, the "
                                   f"other has {index}")
        if (fa.width, fa.height) != (fb.width, fb.height):
            raise UnsupportedError(f"frame {index}: {fa.width}x{fa.height} against "
                                   f"{fb.width}x{fb.height}")
        yield ssim_planes(fa, fb)
        index += 1


def mean_ssim(a: Iterable[Image], b: Iterable[Image]) -> Ssim:
    """Mean SSIM of two sequences of equal length (see ``ssim_frames``)."""
    mean = SsimMean()
    for value in ssim_frames(a, b):
        mean.add(value)
    return mean.mean()
