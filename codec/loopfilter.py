"""The loop filter of RFC 6386 section 15 (normal and simple), applied to a whole reconstructed frame.

Edges are filtered macroblock by macroblock in raster order: left edge, inner vertical edges, top
edge, inner horizontal edges. Arithmetic follows libvpx's loopfilter_filters.c exactly: pixels are
moved to signed range (p - 128) and every intermediate is clamped to a signed char.

Planes are passed flattened; an edge is addressed by the index of its first q0 pixel, the step
``a`` across the edge (1 for a vertical edge, the row stride for a horizontal one) and the step
``l`` along it.
"""

import numpy as np

from .jit import njit


@njit(cache=True, _nrt=False)
def _c(v):
    return -128 if v < -128 else (127 if v > 127 else v)


@njit(cache=True, _nrt=False)
def _limits(level, sharpness):
    """Interior limit (section 15.2, adjusted by sharpness) for a filter level, as an int32: with
    the level's uint8 the limit typed as float64, and so did every comparison against it."""
    interior = np.int32(level)
    if sharpness:
        interior >>= np.int32(2 if sharpness > 4 else 1)
        if interior > 9 - sharpness:
            interior = np.int32(9 - sharpness)
    if interior < 1:
        interior = np.int32(1)
    return interior


@njit(cache=True, _nrt=False)
def _hev_threshold(level, key_frame):
    if key_frame:
        return np.int32(2 if level >= 40 else (1 if level >= 15 else 0))
    return np.int32(3 if level >= 40 else (2 if level >= 20 else (1 if level >= 15 else 0)))


@njit(cache=True, _nrt=False)
def _mask(p3, p2, p1, p0, q0, q1, q2, q3, interior, edge):
    """Section 15.3's filter_yes as an all-ones (-1) or zero int, so the filters need no branch."""
    ok = ((abs(p3 - p2) <= interior) & (abs(p2 - p1) <= interior) & (abs(p1 - p0) <= interior)
          & (abs(q1 - q0) <= interior) & (abs(q2 - q1) <= interior) & (abs(q3 - q2) <= interior)
          & (abs(p0 - q0) * 2 + (abs(p1 - q1) >> 1) <= edge))
    return -np.int32(ok)


@njit(inline='always')
def _subblock_filter(p3, p2, p1, p0, q0, q1, q2, q3, edge, interior, hev_t):
    """Section 15.3's subblock_filter on one line of eight pixels; returns the new p1, p0, q0, q1.

    Written without branches: a pixel the mask rejects gets a zero filter value, which leaves it
    unchanged, and high edge variance selects by masking, so a loop of these vectorizes.
    """
    m = _mask(p3, p2, p1, p0, q0, q1, q2, q3, interior, edge)
    hev = -np.int32((abs(p1 - p0) > hev_t) | (abs(q1 - q0) > hev_t))
    ps1 = p1 - 128; ps0 = p0 - 128; qs0 = q0 - 128; qs1 = q1 - 128
    f = _c(ps1 - qs1) & hev
    f = _c(f + 3 * (qs0 - ps0)) & m
    f1 = _c(f + 4) >> 3
    f2 = _c(f + 3) >> 3
    nq0 = _c(qs0 - f1) + 128
    np0 = _c(ps0 + f2) + 128
    f = ((f1 + 1) >> 1) & ~hev
    return _c(ps1 + f) + 128, np0, nq0, _c(qs1 - f) + 128


@njit(inline='always')
def _mb_filter(p3, p2, p1, p0, q0, q1, q2, q3, edge, interior, hev_t):
    """Section 15.3's MBfilter on one line of eight pixels; returns the new p2, p1, p0, q0, q1, q2.
    Branch-free: the high-variance part filters with the common adjustment, the rest with the
    27/18/9 taps."""
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
    u0 = _c((63 + fn * 27) >> 7)
    u1 = _c((63 + fn * 18) >> 7)
    u2 = _c((63 + fn * 9) >> 7)
    return (_c(ps2 + u2) + 128, _c(ps1 + u1) + 128, _c(ps0 + u0) + 128,
            _c(qs0 - u0) + 128, _c(qs1 - u1) + 128, _c(qs2 - u2) + 128)


@njit(cache=True, _nrt=False)
def _subblock_edge(buf, i, a_, l, n, edge, interior, hev_t):
    """Normal filter across an inner (subblock) edge of n pixels (section 15.3, subblock_filter).
    With literal steps (the staging buffer, l == 1) the loop vectorizes."""
    a = np.uint64(a_)
    for k in range(n):
        j = np.uint64(i + k * l)
        buf[j - np.uint64(2) * a], buf[j - a], buf[j], buf[j + a] = _subblock_filter(
            np.int32(buf[j - np.uint64(4) * a]), np.int32(buf[j - np.uint64(3) * a]),
            np.int32(buf[j - np.uint64(2) * a]), np.int32(buf[j - a]), np.int32(buf[j]),
            np.int32(buf[j + a]), np.int32(buf[j + np.uint64(2) * a]),
            np.int32(buf[j + np.uint64(3) * a]), edge, interior, hev_t)


@njit(cache=True, _nrt=False)
def _mb_edge(buf, i, a_, l, n, edge, interior, hev_t):
    """Normal filter across a macroblock edge of n pixels (section 15.3, MBfilter)."""
    a = np.uint64(a_)
    for k in range(n):
        j = np.uint64(i + k * l)
        (buf[j - np.uint64(3) * a], buf[j - np.uint64(2) * a], buf[j - a], buf[j], buf[j + a],
         buf[j + np.uint64(2) * a]) = _mb_filter(
            np.int32(buf[j - np.uint64(4) * a]), np.int32(buf[j - np.uint64(3) * a]),
            np.int32(buf[j - np.uint64(2) * a]), np.int32(buf[j - a]), np.int32(buf[j]),
            np.int32(buf[j + a]), np.int32(buf[j + np.uint64(2) * a]),
            np.int32(buf[j + np.uint64(3) * a]), edge, interior, hev_t)


@njit(cache=True, _nrt=False)
def _bytes(w):
    """The four bytes of a uint32 word, low byte (the leftmost pixel) first, as int32."""
    w = np.int64(w)
    return (np.int32(w & 255), np.int32((w >> 8) & 255), np.int32((w >> 16) & 255),
            np.int32((w >> 24) & 255))


@njit(cache=True, _nrt=False)
def _word(b0, b1, b2, b3):
    return np.uint32(b0 | (b1 << 8) | (b2 << 16) | (b3 << 24))


@njit(cache=True, _nrt=False)
def _subblock_edge_words(w, lo, n, edge, interior, hev_t):
    """``_subblock_edge`` across a vertical edge of n rows in word columns (see ``_filter``):
    w[lo + k] holds row k's p3 p2 p1 p0 and w[lo + n + k] its q0 q1 q2 q3. Each row is one lane,
    so the n rows filter side by side. (Unsigned indices: with signed ones numba wraps negative
    indices, and the loop did not vectorize.)"""
    for k in range(n):
        i, j = np.uint64(lo + k), np.uint64(lo + n + k)
        p3, p2, p1, p0 = _bytes(w[i])
        q0, q1, q2, q3 = _bytes(w[j])
        p1, p0, q0, q1 = _subblock_filter(p3, p2, p1, p0, q0, q1, q2, q3, edge, interior, hev_t)
        w[i] = _word(p3, p2, p1, p0)
        w[j] = _word(q0, q1, q2, q3)


@njit(cache=True, _nrt=False)
def _mb_edge_words(w, lo, n, edge, interior, hev_t):
    """``_mb_edge`` across a vertical edge in word columns, laid out as for ``_subblock_edge_words``."""
    for k in range(n):
        i, j = np.uint64(lo + k), np.uint64(lo + n + k)
        p3, p2, p1, p0 = _bytes(w[i])
        q0, q1, q2, q3 = _bytes(w[j])
        p2, p1, p0, q0, q1, q2 = _mb_filter(p3, p2, p1, p0, q0, q1, q2, q3, edge, interior, hev_t)
        w[i] = _word(p3, p2, p1, p0)
        w[j] = _word(q0, q1, q2, q3)


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
def _load_word_columns(src, w0, stride, w, rows, cols):
    """w[col * rows + row] = src[w0 + row * stride + col]: a rows x cols block of words, stored
    column by column."""
    for row in range(rows):
        base = np.uint64(w0 + row * stride)
        for col in range(cols):
            w[np.uint64(col * rows + row)] = src[base + np.uint64(col)]


@njit(cache=True, _nrt=False)
def _store_word_columns(w, dst, w0, stride, rows, cols):
    """The inverse of ``_load_word_columns``."""
    for row in range(rows):
        base = np.uint64(w0 + row * stride)
        for col in range(cols):
            dst[base + np.uint64(col)] = w[np.uint64(col * rows + row)]


@njit(cache=True, _nrt=False)
def _copy_words(src, i0, s_stride, dst, j0, d_stride, rows, cols):
    """dst[j0 + row * d_stride + col] = src[i0 + row * s_stride + col] for a rows x cols block."""
    for row in range(rows):
        a = np.uint64(i0 + row * s_stride)
        b = np.uint64(j0 + row * d_stride)
        for col in range(cols):
            dst[b + np.uint64(col)] = src[a + np.uint64(col)]


@njit(cache=True)
def loop_filter_frame(y, u, v, border_y, border_uv, levels, inner, simple, sharpness, key_frame):
    """Filter a reconstructed frame in place.

    ``y``, ``u``, ``v`` are the padded 2-D planes; ``levels[r, c]`` is each macroblock's filter level
    (0 = none) and ``inner[r, c]`` whether its inner edges are filtered (not for a macroblock with
    no coefficients unless it is B_PRED or SPLITMV, section 15.1).
    """
    _check_layout(y, border_y, 16, levels.shape)
    _check_layout(u, border_uv, 8, levels.shape)
    _check_layout(v, border_uv, 8, levels.shape)
    fy, fu, fv = y.ravel(), u.ravel(), v.ravel()
    _filter(fy, fu, fv, fy.view(np.uint32), fu.view(np.uint32), fv.view(np.uint32), fy.view(np.uint64),
            fu.view(np.uint64), fv.view(np.uint64), y.shape[1], u.shape[1], border_y, border_uv, levels, inner,
            simple, sharpness, key_frame, False, *_scratch())


@njit(cache=True)
def luma_filter_sse(y, src_y, border_y, level, sharpness, inner, key_frame):
    """The squared error between the source luma ``src_y`` and the reconstructed luma ``y``
    (padded, left unchanged) after the normal loop filter at one ``level`` and ``sharpness``
    everywhere.

    The encoder's filter-level search measures luma only, as libvpx's does: chroma follows luma's
    edges and would only triple the work."""
    work = y.copy()
    if level > 0:
        _check_layout(work, border_y, 16, inner.shape)
        levels = np.full(inner.shape, level, np.uint8)
        f = work.ravel()
        w, q = f.view(np.uint32), f.view(np.uint64)
        _filter(f, f, f, w, w, w, q, q, q, work.shape[1], 0, border_y, 0, levels, inner, False,
                sharpness, key_frame, True, *_scratch())
    return _plane_sse(work, border_y, src_y)


@njit(cache=True)
def _scratch():
    """``_filter``'s staging buffers: 80 words for vertical edges, 40 (and their bytes) for
    horizontal ones."""
    h = np.empty(40, np.uint64)
    return np.empty(80, np.uint32), h, h.view(np.uint8)


@njit(cache=True)
def _check_layout(plane, border, mb_size, mb_shape):
    """The kernels index without bounds checks and read planes as 4- and 8-byte words: the plane
    must be C-contiguous, hold mb_shape macroblocks of mb_size pixels after a border of at least 8
    (the filters reach 4 pixels before the first macroblock), and have its border and row length
    multiples of 8, as every plane ``state.Picture`` allocates does."""
    rows, cols = plane.shape
    if (not plane.flags.c_contiguous or border < 8 or border % 8 or cols % 8
            or cols < border + mb_size * mb_shape[1] or rows < border + mb_size * mb_shape[0]):
        raise ValueError("loop filter: not a padded whole-macroblock plane")


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
def _filter(fy, fu, fv, wy, wu, wv, qy, qu, qv, ys, uvs, border_y, border_uv, levels, inner, simple, sharpness,
            key_frame, luma_only, w, h, hb):
    """loop_filter_frame over the flattened planes, without the runtime (no reference counting);
    with ``luma_only`` the chroma planes are left alone (and may be anything). ``f*`` are the
    planes' bytes, ``w*`` the same memory as uint32 words, ``q*`` as uint64 words.

    libvpx's order is macroblock by macroblock (left edge, inner vertical edges, top edge, inner
    horizontal edges), and each edge reads what the one before it wrote, so only the 16 (or 8)
    pixels along one edge can be filtered side by side. The normal filter gets them into
    contiguous lanes without per-byte copies:

    * vertical edges: the luma rows y0 .. y0 + 15, pixels x0 - 4 .. x0 + 15, are read as five
      uint32 words per row and stored column by column in ``w``::

          w[ 0:16]  row 0..15, pixels x0-4 .. x0-1   (p3 p2 p1 p0 of the macroblock edge)
          w[16:32]  row 0..15, pixels x0   .. x0+3   (q0 .. q3; p3 .. p0 of the edge at x0+4)
          w[32:48]  ...        pixels x0+4 .. x0+7
          w[48:64]  ...        pixels x0+8 .. x0+11
          w[64:80]  ...        pixels x0+12.. x0+15

      so the edge between word columns k - 1 and k is 16 lanes, one per row (chroma: 8 rows of
      three words);
    * horizontal edges: rows y0 - 4 .. y0 + 15 of the macroblock's 16 columns are copied as two
      uint64 words a row into ``h`` (``hb`` is its bytes, 16 a row), where the edges are rows
      4, 8, 12 and 16 at a literal stride (chroma: 12 rows of one word, 8 bytes a row).

    The simple filter (luma only, rare) works on the plane in place.

    It stays one function because what is left in it is the edge order (each edge reads what the one
    before it wrote, in libvpx's order) while the filtering is already in helper kernels
    (``_mb_edge_words``, ``_subblock_edge``, ...): splitting it would only scatter that order.
    """
    mb_rows, mb_cols = levels.shape
    ysw, uvsw = ys >> 2, uvs >> 2   # row lengths in uint32 words
    ysq, uvsq = ys >> 3, uvs >> 3   # and in uint64 words
    for r in range(mb_rows):
        for c in range(mb_cols):
            level = levels[r, c]
            if level == 0:
                continue
            interior = _limits(level, sharpness)
            hev_t = _hev_threshold(level, key_frame)
            mb_edge = np.int32((np.int32(level) + 2) * 2 + interior)
            sub_edge = np.int32(np.int32(level) * 2 + interior)
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
                _load_word_columns(wy, (iy - 4) >> 2, ysw, w, 16, 5)
                if c > 0:
                    _mb_edge_words(w, 0, 16, mb_edge, interior, hev_t)
                if inner[r, c]:
                    for k in (16, 32, 48):
                        _subblock_edge_words(w, k, 16, sub_edge, interior, hev_t)
                _store_word_columns(w, wy, (iy - 4) >> 2, ysw, 16, 5)
                for plane in (wu, wv):
                    if luma_only:
                        break
                    _load_word_columns(plane, (iu - 4) >> 2, uvsw, w, 8, 3)
                    if c > 0:
                        _mb_edge_words(w, 0, 8, mb_edge, interior, hev_t)
                    if inner[r, c]:
                        _subblock_edge_words(w, 8, 8, sub_edge, interior, hev_t)
                    _store_word_columns(w, plane, (iu - 4) >> 2, uvsw, 8, 3)
            if r > 0 or inner[r, c]:
                _copy_words(qy, (iy - 4 * ys) >> 3, ysq, h, 0, 2, 20, 2)
                if r > 0:
                    _mb_edge(hb, 64, 16, 1, 16, mb_edge, interior, hev_t)
                if inner[r, c]:
                    for k in (128, 192, 256):
                        _subblock_edge(hb, k, 16, 1, 16, sub_edge, interior, hev_t)
                _copy_words(h, 0, 2, qy, (iy - 4 * ys) >> 3, ysq, 20, 2)
                for plane in (qu, qv):
                    if luma_only:
                        break
                    _copy_words(plane, (iu - 4 * uvs) >> 3, uvsq, h, 0, 1, 12, 1)
                    if r > 0:
                        _mb_edge(hb, 32, 8, 1, 8, mb_edge, interior, hev_t)
                    if inner[r, c]:
                        _subblock_edge(hb, 64, 8, 1, 8, sub_edge, interior, hev_t)
                    _copy_words(h, 0, 1, plane, (iu - 4 * uvs) >> 3, uvsq, 12, 1)
