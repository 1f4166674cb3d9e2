"""Inverse transforms of RFC 6386 section 14.3 (DCT) and 14.4 (Walsh-Hadamard), as libvpx computes them.

Intermediate values are stored through int16 arrays, as libvpx stores them in ``short``: corrupt or
hostile streams can overflow, and wrapping the same way keeps us bit-exact even then.
"""

import numpy as np
from numba import njit

# Section 14.3: cos(pi/8)*sqrt(2) - 1 and sin(pi/8)*sqrt(2), in 16-bit fixed point.
COSPI8SQRT2MINUS1 = 20091
SINPI8SQRT2 = 35468


@njit(cache=True, _nrt=False)
def idct4x4(coeffs, out, tmp):
    """Inverse DCT of 16 dequantized coefficients (raster order, int16) into ``out`` (int16, 16).

    ``tmp`` is int16 scratch of 16, passed in so the hot loop allocates nothing.

    Vertical pass first, then horizontal with rounding (+4) >> 3, as libvpx's vp8_short_idct4x4llm_c.
    """
    for i in range(4):
        i0 = np.int32(coeffs[i])
        i4 = np.int32(coeffs[4 + i])
        i8 = np.int32(coeffs[8 + i])
        i12 = np.int32(coeffs[12 + i])
        a1 = i0 + i8
        b1 = i0 - i8
        c1 = ((i4 * SINPI8SQRT2) >> 16) - (i12 + ((i12 * COSPI8SQRT2MINUS1) >> 16))
        d1 = (i4 + ((i4 * COSPI8SQRT2MINUS1) >> 16)) + ((i12 * SINPI8SQRT2) >> 16)
        tmp[i] = a1 + d1
        tmp[12 + i] = a1 - d1
        tmp[4 + i] = b1 + c1
        tmp[8 + i] = b1 - c1
    for r in range(4):
        i0 = np.int32(tmp[4 * r])
        i1 = np.int32(tmp[4 * r + 1])
        i2 = np.int32(tmp[4 * r + 2])
        i3 = np.int32(tmp[4 * r + 3])
        a1 = i0 + i2
        b1 = i0 - i2
        c1 = ((i1 * SINPI8SQRT2) >> 16) - (i3 + ((i3 * COSPI8SQRT2MINUS1) >> 16))
        d1 = (i1 + ((i1 * COSPI8SQRT2MINUS1) >> 16)) + ((i3 * SINPI8SQRT2) >> 16)
        out[4 * r] = (a1 + d1 + 4) >> 3
        out[4 * r + 3] = (a1 - d1 + 4) >> 3
        out[4 * r + 1] = (b1 + c1 + 4) >> 3
        out[4 * r + 2] = (b1 - c1 + 4) >> 3


@njit(cache=True, _nrt=False)
def iwht4x4(coeffs, out, tmp):
    """Inverse Walsh-Hadamard transform of the Y2 block (section 14.4); ``out[i]`` is the DC of Y block i."""
    for i in range(4):
        i0 = np.int32(coeffs[i])
        i4 = np.int32(coeffs[4 + i])
        i8 = np.int32(coeffs[8 + i])
        i12 = np.int32(coeffs[12 + i])
        a1 = i0 + i12
        b1 = i4 + i8
        c1 = i4 - i8
        d1 = i0 - i12
        tmp[i] = a1 + b1
        tmp[4 + i] = c1 + d1
        tmp[8 + i] = a1 - b1
        tmp[12 + i] = d1 - c1
    for r in range(4):
        i0 = np.int32(tmp[4 * r])
        i1 = np.int32(tmp[4 * r + 1])
        i2 = np.int32(tmp[4 * r + 2])
        i3 = np.int32(tmp[4 * r + 3])
        a1 = i0 + i3
        b1 = i1 + i2
        c1 = i1 - i2
        d1 = i0 - i3
        out[4 * r] = (a1 + b1 + 3) >> 3
        out[4 * r + 1] = (c1 + d1 + 3) >> 3
        out[4 * r + 2] = (a1 - b1 + 3) >> 3
        out[4 * r + 3] = (d1 - c1 + 3) >> 3
