"""Quantization of a block's transform coefficients for the encoder (RFC 6386 sections 13 and 14.1).

The decoder multiplies each level by its block type's factor: the DC factor for coefficient 0, the
AC factor for the rest (``reconstruct.py``, columns Y1_DC..UV_AC of ``dq``). The quantizers here
make levels for that: int16[16] in raster order, as ``tokens.py`` stores them, and return the eob,
one past the zigzag index of the last nonzero level (0 when all are zero). A Y block whose DC went
to Y2 (TYPE_Y_AFTER_Y2) codes from coefficient 1; its ``levels[0]`` is left 0.

Quantizer parameters of one block type are an int32[2, 4] array (``quant_params``): row 0 for the
DC, row 1 for the AC coefficients, columns QP_Q (the factor), QP_ZBIN (magnitudes below it quantize
to 0), QP_ROUND (added before the division) and QP_MAX (largest level: within the token alphabet,
MAX_LEVEL, and small enough that level * factor fits the decoder's int16).

Two quantizers:

- ``quantize_block``: level = (|c| + round) // q, 0 inside the zero bin.
- ``rd_quantize_block``: a trellis over the block's tokens that minimizes D + lambda * R, with D
  the squared error in the coefficient domain and R the exact token cost (``rate.py``); for each
  coefficient it weighs the nearest level, the level one smaller, and ending the block there.

Distortion scale: fdct4x4's coefficients are twice an orthonormal transform's, so a DCT block's
squared coefficient error is 4x its squared pixel error; a Y2 coefficient error reaches the pixels
at 1/16 of its square (fwht4x4 doubles, and each Y DC reaches its 16 pixels as DC / 8).
"""

import math

import numpy as np

from .jit import njit
from .rate import LEVEL_EXTRA_COST, LEVEL_TOKEN, MAX_LEVEL
from .tables import COEFF_BANDS, DCT_EOB, TYPE_Y_AFTER_Y2, ZIGZAG

QP_Q, QP_ZBIN, QP_ROUND, QP_MAX = range(4)

#: Quantizer kinds: the pairs of columns (DC, AC) of the decoder's dequantization table ``dq``.
KIND_Y1, KIND_Y2, KIND_UV = range(3)


def quant_params(q_dc: int, q_ac: int, rounding=(0.5, 0.5), zbin=(0.0, 0.0)) -> np.ndarray:
    """Parameters of one block type: factors ``q_dc``, ``q_ac`` as the decoder applies them;
    ``rounding`` and ``zbin`` (DC, AC) as fractions of the factor. rounding 0.5 with zbin 0 is
    rounding to nearest; a smaller rounding or a zbin above 1 - rounding widens the dead zone."""
    qp = np.zeros((2, 4), np.int32)
    for k, q in enumerate((int(q_dc), int(q_ac))):
        if not 1 <= q <= 32767:
            raise ValueError(f"quantizer factor {q} outside 1..32767")
        if not 0.0 <= rounding[k] < 1.0 or zbin[k] < 0.0:
            raise ValueError(f"rounding {rounding[k]} or zero bin {zbin[k]} out of range")
        qp[k, QP_Q] = q
        qp[k, QP_ZBIN] = int(math.ceil(zbin[k] * q))
        qp[k, QP_ROUND] = int(rounding[k] * q)
        qp[k, QP_MAX] = min(MAX_LEVEL, 32767 // q)
    return qp


def frame_quant_params(dq: np.ndarray, rounding=(0.5, 0.5, 0.5), zbin=(0.0, 0.0, 0.0)) -> np.ndarray:
    """``quant_params`` for every segment and kind: int32[segments, 3, 2, 4], indexed
    [segment, KIND_Y1 | KIND_Y2 | KIND_UV], from the decoder's ``dq`` table (segments x 6).
    ``rounding`` and ``zbin`` give one fraction per kind (the same for its DC and AC)."""
    out = np.zeros((dq.shape[0], 3, 2, 4), np.int32)
    for s in range(dq.shape[0]):
        for k in range(3):
            out[s, k] = quant_params(dq[s, 2 * k], dq[s, 2 * k + 1], (rounding[k],) * 2, (zbin[k],) * 2)
    return out


@njit(cache=True, _nrt=False)
def quantize_block(coef, qp, btype, levels):
    """Plain dead-zone quantizer: ``coef`` (int16[16], raster) into ``levels`` (int16[16], raster);
    returns the eob. ``qp``: int32[2, 4] (``quant_params``); ``btype``: the block's token type.

    The division by the factor q is a multiplication by m = floor(2^32 / q) + 1 and a shift: with
    m * q = 2^32 + e, 0 < e <= q, the quotient is exact while numerator * q < 2^32, and here the
    numerator is below 2^15 + 2^14 (an int16 magnitude plus half a factor) and q below 2^15."""
    first = 1 if btype == TYPE_Y_AFTER_Y2 else 0
    levels[0] = 0
    eob = 0
    m_dc = (np.int64(1) << 32) // qp[0, QP_Q] + 1
    m_ac = (np.int64(1) << 32) // qp[1, QP_Q] + 1
    for i in range(first, 16):
        pos = ZIGZAG[i]
        k = 0 if i == 0 else 1
        c = np.int64(coef[pos])
        a = -c if c < 0 else c
        v = np.int64(0)
        if a >= qp[k, QP_ZBIN]:
            v = ((a + qp[k, QP_ROUND]) * (m_dc if i == 0 else m_ac)) >> 32
            if v > qp[k, QP_MAX]:
                v = qp[k, QP_MAX]
        if v:
            eob = i + 1
        levels[pos] = -v if c < 0 else v
    return eob


#: Shape of the float64 workspace ``rd_quantize_block`` needs (``np.empty(RD_WORK_SHAPE)``).
RD_WORK_SHAPE = (2, 17, 3)
_EOB, _ROUNDED, _SMALLER = 0, 1, 2


@njit(cache=True, _nrt=False)
def rd_quantize_block(coef, qp, btype, ctx, lam, tok_cost, work, levels):
    """Rate-distortion quantizer (a trellis over the token contexts): the levels minimizing
    D + lam * R / 256 into ``levels``; returns the eob.

    ``coef``: int16[16] raster; ``qp``: int32[2, 4] (only QP_Q and QP_MAX are used); ``btype``,
    ``ctx``: the block's token type and neighbour context (0-2); ``lam``: distortion units per
    bit; ``tok_cost``: the frame's ``rate.token_costs`` table; ``work``: float64 RD_WORK_SHAPE
    scratch. D is the squared coefficient error (the module docstring relates it to pixels) and R
    the cost ``rate.block_token_cost`` gives the result.

    Each coefficient may take its nearest level L (clamped to QP_MAX) or L - 1, and the block may
    end (DCT_EOB, all later levels 0) anywhere the format allows: at the first coefficient, or
    right after a nonzero level. The token context after a coefficient is min(|level|, 2), so a
    backward pass over (position, context) finds the optimum over all those choices exactly:
    ``work[0, i, c]`` is the best cost of positions i..15 entered with context c, and
    ``work[1, i, c]`` the choice made there. Ties go to the larger level, then to coding on.

    Its three passes (the last level worth coding, the backward pass, the traceback) could be
    separate njit kernels sharing ``work``; they stay in one because it runs for every block of
    every candidate the encoder codes, and the passes share ``last`` and ``tail`` as locals.
    """
    first = 1 if btype == TYPE_Y_AFTER_Y2 else 0
    lamr = lam / 256.0
    for i in range(16):
        levels[i] = 0
    # Past the last coefficient whose nearest level is nonzero only DCT_EOB is worth coding (a run of
    # ZEROs must end on a nonzero level), so the trellis starts there.
    last = first - 1
    tail = 0.0  # squared error of zeroing positions i..15
    for i in range(15, first - 1, -1):
        k = 0 if i == 0 else 1
        a = np.int64(coef[ZIGZAG[i]])
        if a < 0:
            a = -a
        if a + (qp[k, QP_Q] >> 1) >= qp[k, QP_Q]:
            last = i
            break
        tail += a * a
    if last < first:
        return 0
    # From position last + 1: after a ZERO nothing can follow (a block cannot end on a ZERO token:
    # eob counts to the last nonzero); after a nonzero level, DCT_EOB (none at 16).
    n = last + 1
    work[0, n, 0] = math.inf
    work[1, n, 0] = _EOB
    for cx in range(1, 3):
        work[0, n, cx] = 0.0 if n == 16 else tail + lamr * tok_cost[btype, COEFF_BANDS[n], cx, 0, DCT_EOB]
        work[1, n, cx] = _EOB
    for i in range(last, first - 1, -1):
        k = 0 if i == 0 else 1
        q = np.int64(qp[k, QP_Q])
        c = np.int64(coef[ZIGZAG[i]])
        a = -c if c < 0 else c
        tail += a * a
        big = (a + (q >> 1)) // q
        if big > qp[k, QP_MAX]:
            big = qp[k, QP_MAX]
        band = COEFF_BANDS[i]
        for cx in range(3):
            after_zero = 1 if (cx == 0 and i > first) else 0
            best = math.inf
            choice = _EOB
            for cand in range(2):
                v = big - cand
                if v < 0:
                    break
                e = a - v * q
                if v == 0:
                    r = tok_cost[btype, band, cx, after_zero, 0]
                    nxt = 0
                else:
                    r = tok_cost[btype, band, cx, after_zero, LEVEL_TOKEN[v]] + LEVEL_EXTRA_COST[v]
                    nxt = 2 if v > 1 else 1
                j = e * e + lamr * r + work[0, i + 1, nxt]
                if j < best:
                    best = j
                    choice = _ROUNDED + cand
            if not after_zero:
                j = tail + lamr * tok_cost[btype, band, cx, 0, DCT_EOB]
                if j < best:
                    best = j
                    choice = _EOB
            work[0, i, cx] = best
            work[1, i, cx] = choice
    cx = ctx
    i = first
    while i < 16:
        choice = np.int64(work[1, i, cx])
        if choice == _EOB:
            break
        k = 0 if i == 0 else 1
        q = np.int64(qp[k, QP_Q])
        pos = ZIGZAG[i]
        c = np.int64(coef[pos])
        a = -c if c < 0 else c
        big = (a + (q >> 1)) // q
        if big > qp[k, QP_MAX]:
            big = qp[k, QP_MAX]
        v = big - (choice - _ROUNDED)
        levels[pos] = -v if c < 0 else v
        cx = 2 if v > 1 else v
        i += 1
    return 0 if i == first else i
