"""The loop filter of RFC 6386 section 15 (normal and simple), applied to a whole reconstructed frame.

Edges are filtered macroblock by macroblock in raster order: left edge, inner vertical edges, top
edge, inner horizontal edges. Arithmetic follows libvpx's loopfilter_filters.c exactly: pixels are
moved to signed range (p - 128) and every intermediate is clamped to a signed char.

Planes are passed flattened; an edge is addressed by the index of its first q0 pixel, the step
``a`` across the edge (1 for a vertical edge, the row stride for a horizontal one) and the step
``l`` along it.
"""

import numpy as np
from numba import njit


@njit(cache=True)
def _c(v):
    return -128 if v < -128 else (127 if v > 127 else v)


@njit(cache=True)
def _limits(level, sharpness):
    """Interior limit (section 15.2, adjusted by sharpness) for a filter level."""
    interior = level
    if sharpness:
        interior >>= 2 if sharpness > 4 else 1
        if interior > 9 - sharpness:
            interior = 9 - sharpness
    if interior < 1:
        interior = 1
    return interior


@njit(cache=True)
def _hev_threshold(level, key_frame):
    if key_frame:
        return 2 if level >= 40 else (1 if level >= 15 else 0)
    return 3 if level >= 40 else (2 if level >= 20 else (1 if level >= 15 else 0))


@njit(cache=True)
def _normal_mask(buf, i, a, interior, edge):
    p3 = np.int32(buf[i - 4 * a]); p2 = np.int32(buf[i - 3 * a]); p1 = np.int32(buf[i - 2 * a]); p0 = np.int32(buf[i - a])
    q0 = np.int32(buf[i]); q1 = np.int32(buf[i + a]); q2 = np.int32(buf[i + 2 * a]); q3 = np.int32(buf[i + 3 * a])
    return (abs(p3 - p2) <= interior and abs(p2 - p1) <= interior and abs(p1 - p0) <= interior
            and abs(q1 - q0) <= interior and abs(q2 - q1) <= interior and abs(q3 - q2) <= interior
            and abs(p0 - q0) * 2 + (abs(p1 - q1) >> 1) <= edge)


@njit(cache=True)
def _subblock_edge(buf, i, a, l, n, edge, interior, hev_t):
    """Normal filter across an inner (subblock) edge of n pixels (section 15.3, subblock_filter)."""
    for k in range(n):
        j = i + k * l
        if not _normal_mask(buf, j, a, interior, edge):
            continue
        ps1 = np.int32(buf[j - 2 * a]) - 128; ps0 = np.int32(buf[j - a]) - 128
        qs0 = np.int32(buf[j]) - 128; qs1 = np.int32(buf[j + a]) - 128
        hev = abs(ps1 - ps0) > hev_t or abs(qs1 - qs0) > hev_t
        f = _c(ps1 - qs1) if hev else 0
        f = _c(f + 3 * (qs0 - ps0))
        f1 = _c(f + 4) >> 3
        f2 = _c(f + 3) >> 3
        buf[j] = _c(qs0 - f1) + 128
        buf[j - a] = _c(ps0 + f2) + 128
        if not hev:
            f = (f1 + 1) >> 1
            buf[j + a] = _c(qs1 - f) + 128
            buf[j - 2 * a] = _c(ps1 + f) + 128


@njit(cache=True)
def _mb_edge(buf, i, a, l, n, edge, interior, hev_t):
    """Normal filter across a macroblock edge of n pixels (section 15.3, MBfilter)."""
    for k in range(n):
        j = i + k * l
        if not _normal_mask(buf, j, a, interior, edge):
            continue
        ps2 = np.int32(buf[j - 3 * a]) - 128; ps1 = np.int32(buf[j - 2 * a]) - 128; ps0 = np.int32(buf[j - a]) - 128
        qs0 = np.int32(buf[j]) - 128; qs1 = np.int32(buf[j + a]) - 128; qs2 = np.int32(buf[j + 2 * a]) - 128
        hev = abs(ps1 - ps0) > hev_t or abs(qs1 - qs0) > hev_t
        f = _c(_c(ps1 - qs1) + 3 * (qs0 - ps0))
        if hev:
            f1 = _c(f + 4) >> 3
            f2 = _c(f + 3) >> 3
            buf[j] = _c(qs0 - f1) + 128
            buf[j - a] = _c(ps0 + f2) + 128
        else:
            u = _c((63 + f * 27) >> 7)
            buf[j] = _c(qs0 - u) + 128
            buf[j - a] = _c(ps0 + u) + 128
            u = _c((63 + f * 18) >> 7)
            buf[j + a] = _c(qs1 - u) + 128
            buf[j - 2 * a] = _c(ps1 + u) + 128
            u = _c((63 + f * 9) >> 7)
            buf[j + 2 * a] = _c(qs2 - u) + 128
            buf[j - 3 * a] = _c(ps2 + u) + 128


@njit(cache=True)
def _simple_edge(buf, i, a, l, n, edge):
    """The simple filter (section 15.2): two pixels each side, luma only."""
    for k in range(n):
        j = i + k * l
        p1 = np.int32(buf[j - 2 * a]); p0 = np.int32(buf[j - a]); q0 = np.int32(buf[j]); q1 = np.int32(buf[j + a])
        if abs(p0 - q0) * 2 + (abs(p1 - q1) >> 1) > edge:
            continue
        f = _c(_c((p1 - 128) - (q1 - 128)) + 3 * (q0 - p0))
        f1 = _c(f + 4) >> 3
        f2 = _c(f + 3) >> 3
        buf[j] = _c(q0 - 128 - f1) + 128
        buf[j - a] = _c(p0 - 128 + f2) + 128


@njit(cache=True)
def loop_filter_frame(y, u, v, border_y, border_uv, levels, inner, simple, sharpness, key_frame):
    """Filter a reconstructed frame in place.

    ``y``, ``u``, ``v`` are the padded 2-D planes; ``levels[r, c]`` is each macroblock's filter level
    (0 = none) and ``inner[r, c]`` whether its inner edges are filtered (not for a macroblock with
    no coefficients unless it is B_PRED or SPLITMV, section 15.1).
    """
    mb_rows, mb_cols = levels.shape
    ys = y.shape[1]
    uvs = u.shape[1]
    fy = y.ravel()
    fu = u.ravel()
    fv = v.ravel()
    for r in range(mb_rows):
        for c in range(mb_cols):
            level = levels[r, c]
            if level == 0:
                continue
            interior = _limits(level, sharpness)
            hev_t = _hev_threshold(level, key_frame)
            mb_edge = (level + 2) * 2 + interior
            sub_edge = level * 2 + interior
            iy = (border_y + 16 * r) * ys + border_y + 16 * c
            iu = (border_uv + 8 * r) * uvs + border_uv + 8 * c
            if simple:
                if c > 0:
                    _simple_edge(fy, iy, 1, ys, 16, mb_edge)
                if inner[r, c]:
                    for k in (4, 8, 12):
                        _simple_edge(fy, iy + k, 1, ys, 16, sub_edge)
                if r > 0:
                    _simple_edge(fy, iy, ys, 1, 16, mb_edge)
                if inner[r, c]:
                    for k in (4, 8, 12):
                        _simple_edge(fy, iy + k * ys, ys, 1, 16, sub_edge)
                continue
            if c > 0:
                _mb_edge(fy, iy, 1, ys, 16, mb_edge, interior, hev_t)
                _mb_edge(fu, iu, 1, uvs, 8, mb_edge, interior, hev_t)
                _mb_edge(fv, iu, 1, uvs, 8, mb_edge, interior, hev_t)
            if inner[r, c]:
                for k in (4, 8, 12):
                    _subblock_edge(fy, iy + k, 1, ys, 16, sub_edge, interior, hev_t)
                _subblock_edge(fu, iu + 4, 1, uvs, 8, sub_edge, interior, hev_t)
                _subblock_edge(fv, iu + 4, 1, uvs, 8, sub_edge, interior, hev_t)
            if r > 0:
                _mb_edge(fy, iy, ys, 1, 16, mb_edge, interior, hev_t)
                _mb_edge(fu, iu, uvs, 1, 8, mb_edge, interior, hev_t)
                _mb_edge(fv, iu, uvs, 1, 8, mb_edge, interior, hev_t)
            if inner[r, c]:
                for k in (4, 8, 12):
                    _subblock_edge(fy, iy + k * ys, ys, 1, 16, sub_edge, interior, hev_t)
                _subblock_edge(fu, iu + 4 * uvs, uvs, 1, 8, sub_edge, interior, hev_t)
                _subblock_edge(fv, iu + 4 * uvs, uvs, 1, 8, sub_edge, interior, hev_t)
