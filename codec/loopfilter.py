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


@njit(cache=True, _nrt=False)
def _c(v):
    return -128 if v < -128 else (127 if v > 127 else v)


@njit(cache=True, _nrt=False)
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


@njit(cache=True, _nrt=False)
def _hev_threshold(level, key_frame):
    if key_frame:
        return 2 if level >= 40 else (1 if level >= 15 else 0)
    return 3 if level >= 40 else (2 if level >= 20 else (1 if level >= 15 else 0))


@njit(cache=True, _nrt=False)
def _mask(p3, p2, p1, p0, q0, q1, q2, q3, interior, edge):
    """Section 15.3's filter_yes as an all-ones (-1) or zero int, so the filters need no branch."""
    ok = ((abs(p3 - p2) <= interior) & (abs(p2 - p1) <= interior) & (abs(p1 - p0) <= interior)
          & (abs(q1 - q0) <= interior) & (abs(q2 - q1) <= interior) & (abs(q3 - q2) <= interior)
          & (abs(p0 - q0) * 2 + (abs(p1 - q1) >> 1) <= edge))
    return -np.int32(ok)


@njit(cache=True, _nrt=False)
def _subblock_edge(buf, i, a_, l, n, edge, interior, hev_t):
    """Normal filter across an inner (subblock) edge of n pixels (section 15.3, subblock_filter).

    Written without branches: a pixel the mask rejects gets a zero filter value, which leaves it
    unchanged, and high edge variance selects by masking. Along a row (l == 1) this vectorizes.
    """
    a = np.uint64(a_)
    for k in range(n):
        j = np.uint64(i + k * l)
        p3 = np.int32(buf[j - np.uint64(4) * a]); p2 = np.int32(buf[j - np.uint64(3) * a]); p1 = np.int32(buf[j - np.uint64(2) * a])
        p0 = np.int32(buf[j - a]); q0 = np.int32(buf[j]); q1 = np.int32(buf[j + a])
        q2 = np.int32(buf[j + np.uint64(2) * a]); q3 = np.int32(buf[j + np.uint64(3) * a])
        m = _mask(p3, p2, p1, p0, q0, q1, q2, q3, interior, edge)
        hev = -np.int32((abs(p1 - p0) > hev_t) | (abs(q1 - q0) > hev_t))
        ps1 = p1 - 128; ps0 = p0 - 128; qs0 = q0 - 128; qs1 = q1 - 128
        f = _c(ps1 - qs1) & hev
        f = _c(f + 3 * (qs0 - ps0)) & m
        f1 = _c(f + 4) >> 3
        f2 = _c(f + 3) >> 3
        buf[j] = _c(qs0 - f1) + 128
        buf[j - a] = _c(ps0 + f2) + 128
        f = ((f1 + 1) >> 1) & ~hev
        buf[j + a] = _c(qs1 - f) + 128
        buf[j - np.uint64(2) * a] = _c(ps1 + f) + 128


@njit(cache=True, _nrt=False)
def _mb_edge(buf, i, a_, l, n, edge, interior, hev_t):
    """Normal filter across a macroblock edge of n pixels (section 15.3, MBfilter), branch-free:
    the high-variance part filters with the common adjustment, the rest with the 27/18/9 taps."""
    a = np.uint64(a_)
    for k in range(n):
        j = np.uint64(i + k * l)
        p3 = np.int32(buf[j - np.uint64(4) * a]); p2 = np.int32(buf[j - np.uint64(3) * a]); p1 = np.int32(buf[j - np.uint64(2) * a])
        p0 = np.int32(buf[j - a]); q0 = np.int32(buf[j]); q1 = np.int32(buf[j + a])
        q2 = np.int32(buf[j + np.uint64(2) * a]); q3 = np.int32(buf[j + np.uint64(3) * a])
        m = _mask(p3, p2, p1, p0, q0, q1, q2, q3, interior, edge)
        hev = -np.int32((abs(p1 - p0) > hev_t) | (abs(q1 - q0) > hev_t))
        ps2 = p2 - 128; ps1 = p1 - 128; ps0 = p0 - 128; qs0 = q0 - 128; qs1 = q1 - 128; qs2 = q2 - 128
        f = _c(_c(ps1 - qs1) + 3 * (qs0 - ps0)) & m
        fh = f & hev
        f1 = _c(fh + 4) >> 3
        f2 = _c(fh + 3) >> 3
        qs0 = _c(qs0 - f1)
        ps0 = _c(ps0 + f2)
        fn = f & ~hev
        u = _c((63 + fn * 27) >> 7)
        buf[j] = _c(qs0 - u) + 128
        buf[j - a] = _c(ps0 + u) + 128
        u = _c((63 + fn * 18) >> 7)
        buf[j + a] = _c(qs1 - u) + 128
        buf[j - np.uint64(2) * a] = _c(ps1 + u) + 128
        u = _c((63 + fn * 9) >> 7)
        buf[j + np.uint64(2) * a] = _c(qs2 - u) + 128
        buf[j - np.uint64(3) * a] = _c(ps2 + u) + 128


@njit(cache=True, _nrt=False)
def _simple_edge(buf, i, a_, l, n, edge):
    """The simple filter (section 15.2): two pixels each side, luma only."""
    a = np.uint64(a_)
    for k in range(n):
        j = np.uint64(i + k * l)
        p1 = np.int32(buf[j - np.uint64(2) * a]); p0 = np.int32(buf[j - a]); q0 = np.int32(buf[j]); q1 = np.int32(buf[j + a])
        if abs(p0 - q0) * 2 + (abs(p1 - q1) >> 1) > edge:
            continue
        f = _c(_c((p1 - 128) - (q1 - 128)) + 3 * (q0 - p0))
        f1 = _c(f + 4) >> 3
        f2 = _c(f + 3) >> 3
        buf[j] = _c(q0 - 128 - f1) + 128
        buf[j - a] = _c(p0 - 128 + f2) + 128


@njit(cache=True, _nrt=False)
def _transpose(src, i0, stride, t, t_stride, rows, cols):
    """t[col * t_stride + row] = src[i0 + row * stride + col] for a rows x cols block."""
    for row in range(rows):
        base = np.uint64(i0 + row * stride)
        for col in range(cols):
            t[np.uint64(col * t_stride + row)] = src[base + np.uint64(col)]


@njit(cache=True, _nrt=False)
def _transpose_back(t, t_stride, dst, i0, stride, rows, cols):
    """The inverse of ``_transpose``."""
    for row in range(rows):
        base = np.uint64(i0 + row * stride)
        for col in range(cols):
            dst[base + np.uint64(col)] = t[np.uint64(col * t_stride + row)]


@njit(cache=True)
def loop_filter_frame(y, u, v, border_y, border_uv, levels, inner, simple, sharpness, key_frame):
    """Filter a reconstructed frame in place.

    ``y``, ``u``, ``v`` are the padded 2-D planes; ``levels[r, c]`` is each macroblock's filter level
    (0 = none) and ``inner[r, c]`` whether its inner edges are filtered (not for a macroblock with
    no coefficients unless it is B_PRED or SPLITMV, section 15.1).
    """
    _filter(y.ravel(), u.ravel(), v.ravel(), y.shape[1], u.shape[1], border_y, border_uv, levels, inner, simple,
            sharpness, key_frame, False, np.empty(320, np.uint8))


@njit(cache=True)
def luma_filter_sse(y, src_y, border_y, level, sharpness, inner, key_frame):
    """The squared error between the source luma ``src_y`` and the reconstructed luma ``y``
    (padded, left unchanged) after the normal loop filter at one ``level`` and ``sharpness``
    everywhere.

    The encoder's filter-level search measures luma only, as libvpx's does: chroma follows luma's
    edges and would only triple the work."""
    work = y.copy()
    if level > 0:
        levels = np.full(inner.shape, level, np.uint8)
        _filter(work.ravel(), work.ravel(), work.ravel(), work.shape[1], 0, border_y, 0, levels, inner, False,
                sharpness, key_frame, True, np.empty(320, np.uint8))
    return _plane_sse(work, border_y, src_y)


@njit(cache=True, _nrt=False)
def _plane_sse(padded, border, src):
    total = np.int64(0)
    h, w = src.shape
    for r in range(h):
        for c in range(w):
            d = np.int64(padded[border + r, border + c]) - np.int64(src[r, c])
            total += d * d
    return total


@njit(cache=True, _nrt=False)
def _filter(fy, fu, fv, ys, uvs, border_y, border_uv, levels, inner, simple, sharpness, key_frame, luma_only, t):
    """loop_filter_frame over the flattened planes, without the runtime (no reference counting);
    with ``luma_only`` the chroma planes are left alone (and may be anything).

    The normal filter's vertical edges run on a transposed copy of the macroblock (``t``, with the
    four columns left of it), so that they too filter along contiguous rows, which vectorizes.
    """
    mb_rows, mb_cols = levels.shape
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
            if c > 0 or inner[r, c]:
                # Transposed: t row k is plane column x0 - 4 + k, so the edges are rows 4, 8, 12, 16.
                _transpose(fy, iy - 4, ys, t, 16, 16, 20)
                if c > 0:
                    _mb_edge(t, 64, 16, 1, 16, mb_edge, interior, hev_t)
                if inner[r, c]:
                    for k in (8, 12, 16):
                        _subblock_edge(t, 16 * k, 16, 1, 16, sub_edge, interior, hev_t)
                _transpose_back(t, 16, fy, iy - 4, ys, 16, 20)
                for plane in (fu, fv):
                    if luma_only:
                        break
                    _transpose(plane, iu - 4, uvs, t, 8, 8, 12)
                    if c > 0:
                        _mb_edge(t, 32, 8, 1, 8, mb_edge, interior, hev_t)
                    if inner[r, c]:
                        _subblock_edge(t, 64, 8, 1, 8, sub_edge, interior, hev_t)
                    _transpose_back(t, 8, plane, iu - 4, uvs, 8, 12)
            if r > 0:
                _mb_edge(fy, iy, ys, 1, 16, mb_edge, interior, hev_t)
                if not luma_only:
                    _mb_edge(fu, iu, uvs, 1, 8, mb_edge, interior, hev_t)
                    _mb_edge(fv, iu, uvs, 1, 8, mb_edge, interior, hev_t)
            if inner[r, c]:
                for k in (4, 8, 12):
                    _subblock_edge(fy, iy + k * ys, ys, 1, 16, sub_edge, interior, hev_t)
                if not luma_only:
                    _subblock_edge(fu, iu + 4 * uvs, uvs, 1, 8, sub_edge, interior, hev_t)
                    _subblock_edge(fv, iu + 4 * uvs, uvs, 1, 8, sub_edge, interior, hev_t)
