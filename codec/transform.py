"""Inverse transforms of RFC 6386 section 14.3 (DCT) and 14.4 (Walsh-Hadamard), as libvpx computes them,
and the forward transforms an encoder pairs with them.

Intermediate values are stored through int16 arrays, as libvpx stores them in ``short``: corrupt or
hostile streams can overflow, and wrapping the same way keeps us bit-exact even then.
"""

import numpy as np

from .jit import njit

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


# ---------------------------------------------------------------------------------------------
# Forward transforms for the encoder. The format fixes only the inverses above; these are their
# counterparts, derived from them (see fdct4x4 and fwht4x4).

# cos(pi/8)*sqrt(2) and sin(pi/8)*sqrt(2) in 16-bit fixed point (the latter is SINPI8SQRT2).
_C16 = 85627
_S16 = 35468
# Rounding offsets of fdct4x4 (row pass >> 12, column pass >> 5 for even outputs and >> 21 for odd
# ones). Odd outputs round up, where idct4x4 floors its products by c and s; the rest were tuned
# against idct4x4 over random residuals (see fdct4x4). All are below one unit, so 0 maps to 0.
_FDCT_ROW_ODD = (1 << 12) - 1
_FDCT_COL_0 = 15
_FDCT_COL_2 = 16
_FDCT_COL_1 = (1 << 21) - 1
_FDCT_COL_3 = 3 << 19

@njit(cache=True, _nrt=False)
def fdct4x4(block, out):
    """Forward DCT of a 4x4 residual (raster order, int16) into ``out`` (int16, 16, raster order).

    idct4x4 computes x = Inv X Inv^T / 8 with the 1-D basis Inv = [[1, c, 1, s], [1, s, -1, -c],
    [1, -s, -1, c], [1, -c, 1, -s]] (c = cos(pi/8)*sqrt(2), s = sin(pi/8)*sqrt(2)), whose columns
    are orthogonal with norm 2; so X = Inv^T x Inv / 2 inverts it. Rows first, columns second, as
    integers: the row pass keeps 4 fractional bits (in ``out``, |value| <= 16320 for residuals in
    [-255, 255], so int16 holds it), the column pass removes them and halves. |X| <= 2040.

    The rounding offsets are not all one half: idct4x4 floors its products by c and s, which biases
    its corner pixels, and offsets chosen over random residuals partly pay that back (fdct then
    idct is off by one in 1.7% of pixels instead of 9% with rounding to nearest, never by more
    than one). A flat residual v gives the lone DC 8v.
    """
    for r in range(4):
        x0 = np.int64(block[4 * r])
        x1 = np.int64(block[4 * r + 1])
        x2 = np.int64(block[4 * r + 2])
        x3 = np.int64(block[4 * r + 3])
        a = x0 + x3
        b = x1 + x2
        cc = x1 - x2
        d = x0 - x3
        out[4 * r] = (a + b) << 4
        out[4 * r + 2] = (a - b) << 4
        out[4 * r + 1] = (d * _C16 + cc * _S16 + _FDCT_ROW_ODD) >> 12
        out[4 * r + 3] = (d * _S16 - cc * _C16 + _FDCT_ROW_ODD) >> 12
    for i in range(4):
        x0 = np.int64(out[i])
        x1 = np.int64(out[4 + i])
        x2 = np.int64(out[8 + i])
        x3 = np.int64(out[12 + i])
        a = x0 + x3
        b = x1 + x2
        cc = x1 - x2
        d = x0 - x3
        out[i] = (a + b + _FDCT_COL_0) >> 5
        out[8 + i] = (a - b + _FDCT_COL_2) >> 5
        out[4 + i] = (d * _C16 + cc * _S16 + _FDCT_COL_1) >> 21
        out[12 + i] = (d * _S16 - cc * _C16 + _FDCT_COL_3) >> 21


# Which coefficients of fwht4x4 round a half up (1) rather than down (0). The pattern is "bent":
# its +-1/2 errors have a flat transform (+-2 after iwht4x4's scaling by 8), which the inverse's
# (v + 3) >> 3 absorbs, so fwht4x4 then iwht4x4 is exact. Rounding every half the same way would
# leave one of the 16 DCs off by one whenever their sum is odd.
FWHT_ROUND_UP = np.array([0, 1, 1, 0, 1, 0, 1, 0, 1, 1, 0, 0, 0, 0, 0, 0], np.int64)


@njit(cache=True, _nrt=False)
def fwht4x4(dcs, out):
    """Forward Walsh-Hadamard transform of the 16 luma DCs (``dcs[i]`` = DC of Y block i, int16)
    into the Y2 block ``out`` (int16, 16, raster order).

    iwht4x4 computes x = H X H^T / 8 with H = [[1, 1, 1, 1], [1, 1, -1, -1], [1, -1, -1, 1],
    [1, -1, 1, -1]] (H H^T = 4 I), so X = H^T x H / 2. Every entry of H^T x H has the parity of the
    sum of x; halves are rounded by FWHT_ROUND_UP so that iwht4x4 recovers ``dcs`` exactly.
    Row pass in ``out`` (|value| <= 8160 for |DC| <= 2040), |X| <= 16320.
    """
    for r in range(4):
        x0 = np.int64(dcs[4 * r])
        x1 = np.int64(dcs[4 * r + 1])
        x2 = np.int64(dcs[4 * r + 2])
        x3 = np.int64(dcs[4 * r + 3])
        out[4 * r] = x0 + x1 + x2 + x3
        out[4 * r + 1] = x0 + x1 - x2 - x3
        out[4 * r + 2] = x0 - x1 - x2 + x3
        out[4 * r + 3] = x0 - x1 + x2 - x3
    for i in range(4):
        x0 = np.int64(out[i])
        x1 = np.int64(out[4 + i])
        x2 = np.int64(out[8 + i])
        x3 = np.int64(out[12 + i])
        out[i] = (x0 + x1 + x2 + x3 + FWHT_ROUND_UP[i]) >> 1
        out[4 + i] = (x0 + x1 - x2 - x3 + FWHT_ROUND_UP[4 + i]) >> 1
        out[8 + i] = (x0 - x1 - x2 + x3 + FWHT_ROUND_UP[8 + i]) >> 1
        out[12 + i] = (x0 - x1 + x2 - x3 + FWHT_ROUND_UP[12 + i]) >> 1
