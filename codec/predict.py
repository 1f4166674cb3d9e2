"""Intra prediction (RFC 6386 section 12) and inter prediction (section 18), as numba kernels.

Planes are padded numpy arrays; ``(y, x)`` always addresses a pixel of the padded array. Layout of a
plane of the frame being reconstructed (B = border, 32 luma / 16 chroma pixels)::

      x: 0 .. B-1 | B .. B+W-1 (W = 16 * mb_cols, coded width rounded up to whole macroblocks) | ..
    +-------------+-------------------------------------------------------------+---------------+
    | border      | row B-1: 127 everywhere (and col B-1 of it), the "above" edge of row 0       |
    |   col B-1:  | decoded pixels                                               | border        |
    |   129 for   |                                                              |               |
    |   each row  |                                                              |               |
    +-------------+-------------------------------------------------------------+---------------+

Once a frame is decoded and loop-filtered its border is refilled by replicating the edge pixels, so
a reference plane behaves as the infinitely extended picture libvpx predicts from: a block whose
position lies wholly outside the picture is moved back to just outside it (same pixels), which
keeps every fetch inside the border.
"""

import numpy as np

from .jit import njit
from .tables import (B_DC_PRED, B_HD_PRED, B_HE_PRED, B_HU_PRED, B_LD_PRED, B_RD_PRED, B_TM_PRED,
                     B_VE_PRED, B_VL_PRED, B_VR_PRED, DC_PRED, H_PRED, TM_PRED, V_PRED)

BORDER_Y = 32
BORDER_UV = 16


@njit(cache=True, _nrt=False)
def _clamp255(v):
    return 0 if v < 0 else (255 if v > 255 else v)


@njit(cache=True, _nrt=False)
def predict_mb_intra(plane, y, x, size, mode, have_above, have_left):
    """Whole-block intra prediction in place (section 12.2): 16x16 luma or 8x8 chroma.

    DC uses only the edges that lie inside the frame (128 with neither); V, H and TM read the
    127/129 edge values the frame border holds.
    """
    if mode == DC_PRED:
        total = 0
        shift = 2 if size == 8 else 3
        if have_above:
            for i in range(size):
                total += np.int32(plane[y - 1, x + i])
            shift += 1
        if have_left:
            for i in range(size):
                total += np.int32(plane[y + i, x - 1])
            shift += 1
        dc = 128
        if have_above or have_left:
            dc = (total + (1 << (shift - 1))) >> shift
        for r in range(size):
            for c in range(size):
                plane[y + r, x + c] = dc
    elif mode == V_PRED:
        for r in range(size):
            for c in range(size):
                plane[y + r, x + c] = plane[y - 1, x + c]
    elif mode == H_PRED:
        for r in range(size):
            v = plane[y + r, x - 1]
            for c in range(size):
                plane[y + r, x + c] = v
    else:  # TM_PRED
        p = np.int32(plane[y - 1, x - 1])
        for r in range(size):
            left = np.int32(plane[y + r, x - 1])
            for c in range(size):
                plane[y + r, x + c] = _clamp255(left + np.int32(plane[y - 1, x + c]) - p)


@njit(cache=True, _nrt=False)
def predict_subblock(plane, y, x, mode, above_right, edge):
    """4x4 luma subblock prediction in place (section 12.3).

    ``above_right`` holds the 4 pixels right of the above row (for the right column of a macroblock
    they come from the macroblock above-right, as the RFC specifies). ``edge`` is int32 scratch of
    13: L[3], L[2], L[1], L[0], P, A[0] .. A[7], so the diagonal modes index one line of pixels.
    """
    for i in range(4):
        edge[3 - i] = plane[y + i, x - 1]
        edge[5 + i] = plane[y - 1, x + i]
        edge[9 + i] = above_right[i]
    edge[4] = plane[y - 1, x - 1]
    E = edge
    # A[i] = E[5 + i], L[i] = E[3 - i], P = E[4]
    if mode == B_DC_PRED:
        v = 4
        for i in range(4):
            v += E[5 + i] + E[3 - i]
        v >>= 3
        for r in range(4):
            for c in range(4):
                plane[y + r, x + c] = v
    elif mode == B_TM_PRED:
        for r in range(4):
            for c in range(4):
                plane[y + r, x + c] = _clamp255(E[3 - r] + E[5 + c] - E[4])
    elif mode == B_VE_PRED:
        for c in range(4):
            v = (E[4 + c] + 2 * E[5 + c] + E[6 + c] + 2) >> 2
            for r in range(4):
                plane[y + r, x + c] = v
    elif mode == B_HE_PRED:
        # avg3(L[r-1], L[r], L[r+1]) with L[-1] = P and L[4] taken as L[3]
        for r in range(4):
            above = E[4 - r]
            here = E[3 - r]
            below = E[2 - r] if r < 3 else E[0]
            v = (above + 2 * here + below + 2) >> 2
            for c in range(4):
                plane[y + r, x + c] = v
    else:
        _predict_diagonal(plane, y, x, mode, E)


@njit(cache=True, _nrt=False)
def _avg3(E, i):
    return (E[i - 1] + 2 * E[i] + E[i + 1] + 2) >> 2


@njit(cache=True, _nrt=False)
def _avg2(E, i):
    return (E[i] + E[i + 1] + 1) >> 1


@njit(cache=True, _nrt=False)
def _predict_diagonal(plane, y, x, mode, E):
    """The six diagonal subblock modes; each pixel copies a (smoothed) edge pixel on its diagonal.

    ``E`` is a copy of the edges, so the prediction can be written straight into ``plane``."""
    if mode == B_LD_PRED:
        # A[i] = E[5 + i]; the pixel at (r, c) lies on the anti-diagonal r + c.
        for r in range(4):
            for c in range(4):
                d = r + c
                if d < 6:
                    plane[y + r, x + c] = _avg3(E, 6 + d)
                else:
                    plane[y + r, x + c] = (E[11] + 3 * E[12] + 2) >> 2
    elif mode == B_RD_PRED:
        for r in range(4):
            for c in range(4):
                plane[y + r, x + c] = _avg3(E, 4 - r + c)
    elif mode == B_VR_PRED:
        plane[y + 3, x + 0] = _avg3(E, 2)
        plane[y + 2, x + 0] = _avg3(E, 3)
        plane[y + 3, x + 1] = plane[y + 1, x + 0] = _avg3(E, 4)
        plane[y + 2, x + 1] = plane[y + 0, x + 0] = _avg2(E, 4)
        plane[y + 3, x + 2] = plane[y + 1, x + 1] = _avg3(E, 5)
        plane[y + 2, x + 2] = plane[y + 0, x + 1] = _avg2(E, 5)
        plane[y + 3, x + 3] = plane[y + 1, x + 2] = _avg3(E, 6)
        plane[y + 2, x + 3] = plane[y + 0, x + 2] = _avg2(E, 6)
        plane[y + 1, x + 3] = _avg3(E, 7)
        plane[y + 0, x + 3] = _avg2(E, 7)
    elif mode == B_VL_PRED:
        # A + k is E + 5 + k
        plane[y + 0, x + 0] = _avg2(E, 5)
        plane[y + 1, x + 0] = _avg3(E, 6)
        plane[y + 2, x + 0] = plane[y + 0, x + 1] = _avg2(E, 6)
        plane[y + 1, x + 1] = plane[y + 3, x + 0] = _avg3(E, 7)
        plane[y + 2, x + 1] = plane[y + 0, x + 2] = _avg2(E, 7)
        plane[y + 3, x + 1] = plane[y + 1, x + 2] = _avg3(E, 8)
        plane[y + 2, x + 2] = plane[y + 0, x + 3] = _avg2(E, 8)
        plane[y + 3, x + 2] = plane[y + 1, x + 3] = _avg3(E, 9)
        plane[y + 2, x + 3] = _avg3(E, 10)
        plane[y + 3, x + 3] = _avg3(E, 11)
    elif mode == B_HD_PRED:
        plane[y + 3, x + 0] = _avg2(E, 0)
        plane[y + 3, x + 1] = _avg3(E, 1)
        plane[y + 2, x + 0] = plane[y + 3, x + 2] = _avg2(E, 1)
        plane[y + 2, x + 1] = plane[y + 3, x + 3] = _avg3(E, 2)
        plane[y + 2, x + 2] = plane[y + 1, x + 0] = _avg2(E, 2)
        plane[y + 2, x + 3] = plane[y + 1, x + 1] = _avg3(E, 3)
        plane[y + 1, x + 2] = plane[y + 0, x + 0] = _avg2(E, 3)
        plane[y + 1, x + 3] = plane[y + 0, x + 1] = _avg3(E, 4)
        plane[y + 0, x + 2] = _avg3(E, 5)
        plane[y + 0, x + 3] = _avg3(E, 6)
    else:  # B_HU_PRED; L + k is E + 3 - k, so the left column runs backwards through E
        l0, l1, l2, l3 = E[3], E[2], E[1], E[0]
        plane[y + 0, x + 0] = (l0 + l1 + 1) >> 1
        plane[y + 0, x + 1] = (l0 + 2 * l1 + l2 + 2) >> 2
        plane[y + 0, x + 2] = plane[y + 1, x + 0] = (l1 + l2 + 1) >> 1
        plane[y + 0, x + 3] = plane[y + 1, x + 1] = (l1 + 2 * l2 + l3 + 2) >> 2
        plane[y + 1, x + 2] = plane[y + 2, x + 0] = (l2 + l3 + 1) >> 1
        plane[y + 1, x + 3] = plane[y + 2, x + 1] = (l2 + 3 * l3 + 2) >> 2
        plane[y + 2, x + 2] = plane[y + 2, x + 3] = plane[y + 3, x + 0] = plane[y + 3, x + 1] = plane[y + 3, x + 2] = plane[y + 3, x + 3] = l3


@njit(cache=True, _nrt=False)
def predict_inter(dst, y, x, ref, ry, rx, bh, bw, frac_y, frac_x, filters, pic_h, pic_w, border, tmp):
    """Motion-compensated prediction of a ``bh x bw`` block at dst[y, x] (section 18).

    ``(ry, rx)`` is the whole-pixel source position in ``ref`` (padded coordinates), ``frac_*`` the
    eighth-pel fraction selecting a row of ``filters`` (six-tap or bilinear, both in six-tap layout).
    Two passes as libvpx: horizontal over bh + 5 rows into ``tmp``, rounded and clamped, then vertical.
    A position wholly outside the picture is first moved to just outside it: every pixel there is
    a copy of the same edge pixel, so the prediction is unchanged and the fetch stays in the border.
    """
    lo_y = border - (bh + 3)
    hi_y = border + pic_h + 2
    lo_x = border - (bw + 3)
    hi_x = border + pic_w + 2
    if ry < lo_y:
        ry = lo_y
    elif ry > hi_y:
        ry = hi_y
    if rx < lo_x:
        rx = lo_x
    elif rx > hi_x:
        rx = hi_x
    if frac_x == 0 and frac_y == 0:
        for r in range(bh):
            for c in range(bw):
                dst[np.uint64(y + r), np.uint64(x + c)] = ref[np.uint64(ry + r), np.uint64(rx + c)]
        return
    if bw == 8 and bh <= 8 and rx + 19 <= ref.shape[1] and tmp.shape[0] >= 21 and tmp.shape[1] >= 16:
        _predict_8_wide(dst, y, x, ref, ry, rx, bh, frac_y, frac_x, filters, tmp)
        return
    # A zero fraction is the identity filter (128 at the centre tap), so a one-dimensional pass
    # equals libvpx's two passes exactly.
    if frac_y == 0:
        _filter_rows(dst, y, x, ref, ry, rx, bh, bw, filters[frac_x])
        return
    if frac_x == 0:
        _filter_cols(dst, y, x, ref, ry, rx, bh, bw, filters[frac_y])
        return
    _filter_rows(tmp, 0, 0, ref, ry - 2, rx, bh + 5, bw, filters[frac_x])
    _filter_cols(dst, y, x, tmp, 2, 0, bh, bw, filters[frac_y])


# Unsigned indices: numba wraps negative signed indices around, a select per access that keeps
# LLVM from vectorizing the filter loops; every index here is known to be >= 0.
_U = (np.uint64(0), np.uint64(1), np.uint64(2), np.uint64(3), np.uint64(4), np.uint64(5))


@njit(cache=True, _nrt=False)
def _filter_rows(dst, y, x, src, sy, sx, bh, bw, f):
    """Horizontal six-tap pass: dst[y + r, x + c] from src[sy + r, sx + c - 2 .. sx + c + 3]."""
    f0, f1, f2, f3, f4, f5 = np.int32(f[0]), np.int32(f[1]), np.int32(f[2]), np.int32(f[3]), np.int32(f[4]), np.int32(f[5])
    u1, u2, u3, u4, u5 = _U[1], _U[2], _U[3], _U[4], _U[5]
    for r in range(bh):
        i = np.uint64(sy + r)
        o = np.uint64(y + r)
        for c in range(bw):
            j = np.uint64(sx - 2 + c)
            v = (np.int32(src[i, j]) * f0 + np.int32(src[i, j + u1]) * f1
                 + np.int32(src[i, j + u2]) * f2 + np.int32(src[i, j + u3]) * f3
                 + np.int32(src[i, j + u4]) * f4 + np.int32(src[i, j + u5]) * f5 + 64) >> 7
            dst[o, np.uint64(x + c)] = _clamp255(v)


@njit(cache=True, _nrt=False)
def _filter_cols(dst, y, x, src, sy, sx, bh, bw, f):
    """Vertical six-tap pass: dst[y + r, x + c] from src[sy + r - 2 .. sy + r + 3, sx + c]."""
    f0, f1, f2, f3, f4, f5 = np.int32(f[0]), np.int32(f[1]), np.int32(f[2]), np.int32(f[3]), np.int32(f[4]), np.int32(f[5])
    u1, u2, u3, u4, u5 = _U[1], _U[2], _U[3], _U[4], _U[5]
    for r in range(bh):
        i = np.uint64(sy - 2 + r)
        o = np.uint64(y + r)
        for c in range(bw):
            j = np.uint64(sx + c)
            v = (np.int32(src[i, j]) * f0 + np.int32(src[i + u1, j]) * f1 + np.int32(src[i + u2, j]) * f2
                 + np.int32(src[i + u3, j]) * f3 + np.int32(src[i + u4, j]) * f4 + np.int32(src[i + u5, j]) * f5
                 + 64) >> 7
            dst[o, np.uint64(x + c)] = _clamp255(v)


@njit(cache=True, _nrt=False)
def _predict_8_wide(dst, y, x, ref, ry, rx, bh, frac_y, frac_x, filters, tmp):
    """``predict_inter``'s filtered paths for an 8-wide (chroma) block, computed 16 wide: LLVM
    vectorizes the 16-wide filter loops and leaves 8-wide ones scalar (it unrolls them first), so
    filtering 8 more columns, thrown away, costs less than the 8 that are kept. The extra columns
    read up to ref[., rx + 18], which the caller checks lies in the row. ``tmp`` (int32, 21 rows
    of 16, checked by the caller) holds the horizontal pass in rows 0 .. bh + 4 and the result in
    rows 13 .. 12 + bh, so bh is at most 8 (the encoder's 8x16 partitions take the other path).
    """
    if frac_y == 0:
        _filter_rows(tmp, 13, 0, ref, ry, rx, bh, 16, filters[frac_x])
    elif frac_x == 0:
        _filter_cols(tmp, 13, 0, ref, ry, rx, bh, 16, filters[frac_y])
    else:
        _filter_rows(tmp, 0, 0, ref, ry - 2, rx, bh + 5, 16, filters[frac_x])
        _filter_cols(tmp, 13, 0, tmp, 2, 0, bh, 16, filters[frac_y])
    for r in range(bh):
        o = np.uint64(y + r)
        for c in range(8):
            dst[o, np.uint64(x + c)] = tmp[13 + r, c]
