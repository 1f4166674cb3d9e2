"""Slow, obvious twins of the codec's numba kernels, written from the text of RFC 6386.

Each function here follows the RFC's own description (the section is named in its docstring), in
plain Python on plain ints and lists, so a reader can check it against the RFC line by line. They
are deliberately not derived from ``codec/``: ``tests/test_kernels.py`` runs each kernel against
its twin, so a shared mistake would hide. Where libvpx (which produced the conformance MD5s) stores
a value in a narrower C type than the RFC's prose suggests, the twin wraps it the same way and says
so.

Nothing here is fast; nothing here imports numba.
"""

from __future__ import annotations

import itertools
import math

# ---------------------------------------------------------------------------------------------
# Small helpers


def wrap16(v: int) -> int:
    """Store ``v`` in a C ``short``: keep the low 16 bits, two's complement."""
    v &= 0xFFFF
    return v - 0x10000 if v >= 0x8000 else v


def clamp255(v: int) -> int:
    """Section 12.2 / 18.3 ``clamp255``."""
    return 0 if v < 0 else 255 if v > 255 else v


def c(v: int) -> int:
    """Section 15.2: clamp to a signed char."""
    return -128 if v < -128 else (v if v < 128 else 127)


def u2s(v: int) -> int:
    return v - 128


def s2u(v: int) -> int:
    return c(v) + 128


# ---------------------------------------------------------------------------------------------
# Section 7.3: the boolean entropy encoder and decoder


class BoolEncoder:
    """RFC 6386 section 7.3 ``bool_encoder``: write bools, then ``flush()`` once for the bytes."""

    def __init__(self):
        self.output = bytearray()
        self.range = 255
        self.bottom = 0  # uint32
        self.bit_count = 24
        self.carries_through_ff = 0

    def _add_one_to_output(self):
        q = len(self.output) - 1
        while self.output[q] == 255:
            self.output[q] = 0
            q -= 1
            self.carries_through_ff += 1  # so tests can tell the rare case was exercised
        self.output[q] += 1

    def write_bool(self, prob: int, bool_value: int) -> None:
        split = 1 + (((self.range - 1) * prob) >> 8)
        if bool_value:
            self.bottom += split
            self.range -= split
        else:
            self.range = split
        while self.range < 128:
            self.range <<= 1
            if self.bottom & (1 << 31):
                self._add_one_to_output()
            self.bottom = (self.bottom << 1) & 0xFFFFFFFF
            self.bit_count -= 1
            if not self.bit_count:
                self.output.append(self.bottom >> 24)
                self.bottom &= (1 << 24) - 1
                self.bit_count = 8

    def write_literal(self, value: int, n: int) -> None:
        """n bits, most significant first, each at probability 128 (section 7.3 read_literal)."""
        for i in range(n - 1, -1, -1):
            self.write_bool(128, (value >> i) & 1)

    def write_tree(self, tree, probs, leaf: int, start: int = 0) -> None:
        """Write ``leaf`` through a tree in tree_index form (section 8.1): find its path, then
        write each branch bit at the probability of the node it leaves. ``start`` is the node to
        begin at (section 13.2: after a zero token the coefficient tree starts past EOB)."""
        path = self._tree_path(tree, start, leaf)
        if path is None:
            raise ValueError(f"leaf {leaf} is not in the tree")
        for node, bit in path:
            self.write_bool(probs[node >> 1], bit)

    @classmethod
    def _tree_path(cls, tree, i, leaf):
        for bit in (0, 1):
            nxt = tree[i + bit]
            if nxt <= 0:
                if -nxt == leaf:
                    return [(i, bit)]
            else:
                rest = cls._tree_path(tree, nxt, leaf)
                if rest is not None:
                    return [(i, bit)] + rest
        return None

    def flush(self) -> bytes:
        """``flush_bool_encoder``: propagate a pending carry, then write out ``bottom``."""
        cnt = self.bit_count
        v = self.bottom
        if v & (1 << (32 - cnt)):
            self._add_one_to_output()
        v = (v << (cnt & 7)) & 0xFFFFFFFF
        cnt >>= 3
        for _ in range(cnt):
            v = (v << 8) & 0xFFFFFFFF
        for _ in range(4):
            self.output.append(v >> 24)
            v = (v << 8) & 0xFFFFFFFF
        return bytes(self.output)

    def flush_like_libvpx(self) -> bytes:
        """libvpx's ``vp8_stop_encode``: 32 zero bools at probability 128 instead of the RFC's
        flush, which pushes every pending bit out; the encoder is then spent."""
        for _ in range(32):
            self.write_bool(128, 0)
        return bytes(self.output)


def write_block_tokens(enc: BoolEncoder, probs, btype: int, ctx: int, block, eob: int) -> None:
    """Sections 13.2-13.3 the slow way: the tokens of one block (``block`` in raster order) for
    zigzag positions ``first..eob-1``, each through the whole coefficient tree (entered past the
    EOB branch after a zero token), then its extra bits and sign; then EOB if ``eob`` < 16.
    The tables (tree, bands, zigzag, categories) are facts of the format, taken from codec.tables."""
    from codec import tables as T
    first = 1 if btype == T.TYPE_Y_AFTER_Y2 else 0
    i, prev_zero = first, False
    while i < eob:
        v = int(block[int(T.ZIGZAG[i])])
        a = abs(v)
        if a <= 4:
            token = a
        else:
            cat = max(k for k in range(6) if int(T.CAT_BASE[k]) <= a)
            token = 5 + cat
        enc.write_tree(T.COEFF_TREE, [int(x) for x in probs[btype][int(T.COEFF_BANDS[i])][ctx]], token,
                       start=2 if prev_zero else 0)
        if token >= 5:
            nbits, extra = int(T.CAT_BITS[cat]), a - int(T.CAT_BASE[cat])
            for k in range(nbits):
                enc.write_bool(int(T.CAT_PROBS[cat][k]), (extra >> (nbits - 1 - k)) & 1)
        if a:
            enc.write_bool(128, v < 0)
        ctx = 0 if a == 0 else 1 if a == 1 else 2
        prev_zero = a == 0
        i += 1
    if eob < 16:
        assert not prev_zero, "EOB cannot follow a zero token"
        enc.write_tree(T.COEFF_TREE, [int(x) for x in probs[btype][int(T.COEFF_BANDS[i])][ctx]], T.DCT_EOB)


class NaiveBoolDecoder:
    """RFC 6386 section 7.3 ``bool_decoder``: a 2-byte ``value`` window and a ``bit_count``.

    Bytes past the end of ``data`` read as zero, as libvpx does; ``bits_past_end`` counts how many
    bits of ``value``'s comparison byte are already beyond the data.
    """

    def __init__(self, data: bytes):
        self.data = bytes(data)
        self.pos = 0
        self.value = (self._next() << 8) | self._next()
        self.range = 255
        self.bit_count = 0

    def _next(self) -> int:
        b = self.data[self.pos] if self.pos < len(self.data) else 0
        self.pos += 1
        return b

    def read_bool(self, prob: int) -> int:
        split = 1 + (((self.range - 1) * prob) >> 8)
        SPLIT = split << 8
        if self.value >= SPLIT:
            ret = 1
            self.range -= split
            self.value -= SPLIT
        else:
            ret = 0
            self.range = split
        while self.range < 128:
            self.value <<= 1
            self.range <<= 1
            self.bit_count += 1
            if self.bit_count == 8:
                self.bit_count = 0
                self.value |= self._next()
        return ret

    def read_literal(self, n: int) -> int:
        v = 0
        for _ in range(n):
            v = (v << 1) + self.read_bool(128)
        return v

    def read_tree(self, tree, probs) -> int:
        """Section 8.1 ``treed_read``."""
        i = 0
        while True:
            i = tree[i + self.read_bool(probs[i >> 1])]
            if i <= 0:
                return -i

    def consumed_bits(self) -> int:
        """Bits shifted out of the 16-bit window so far (the window's top byte starts there)."""
        return 8 * (self.pos - 2) + self.bit_count


def libvpx_read_bools(data: bytes, probs) -> list[int]:
    """libvpx's ``vp8dx_decode_bool`` (dboolhuff.h): a left-aligned 64-bit ``value``.

    For any data an encoder can produce this agrees with the RFC decoder. It differs only when
    ``value >= range`` (first byte 0xff, which no encoder writes): libvpx's ``value <<= shift``
    then drops the excess high bits at once, where the RFC's uint32 keeps 16 of them.
    """
    M = (1 << 64) - 1
    value, count, pos, rng, out = 0, -8, 0, 255, []
    for prob in probs:
        split = 1 + (((rng - 1) * prob) >> 8)
        if count < 0:  # vp8dx_bool_decoder_fill: top up the window, zeros past the end
            shift = 64 - 8 - (count + 8)
            while shift >= 0:
                value |= (data[pos] if pos < len(data) else 0) << shift
                pos += 1
                count += 8
                shift -= 8
        bigsplit = split << 56
        if value >= bigsplit:
            rng, value, bit = rng - split, value - bigsplit, 1
        else:
            rng, bit = split, 0
        while rng < 128:
            rng <<= 1
            value = (value << 1) & M
            count -= 1
        out.append(bit)
    return out


# ---------------------------------------------------------------------------------------------
# Section 14.3 / 14.4: inverse WHT and DCT, with libvpx's short (int16) storage

COSPI8SQRT2MINUS1 = 20091
SINPI8SQRT2 = 35468


def idct4x4(coeffs) -> list[int]:
    """Section 14.4 ``short_idct4x4llm_c``: vertical pass into a short buffer, then horizontal.

    ``coeffs``: 16 ints (raster order, each a C short). Returns the 16 output shorts.
    """
    ip = [wrap16(int(v)) for v in coeffs]
    tmp = [0] * 16
    for i in range(4):
        a1 = ip[i] + ip[8 + i]
        b1 = ip[i] - ip[8 + i]
        temp1 = (ip[4 + i] * SINPI8SQRT2) >> 16
        temp2 = ip[12 + i] + ((ip[12 + i] * COSPI8SQRT2MINUS1) >> 16)
        c1 = temp1 - temp2
        temp1 = ip[4 + i] + ((ip[4 + i] * COSPI8SQRT2MINUS1) >> 16)
        temp2 = (ip[12 + i] * SINPI8SQRT2) >> 16
        d1 = temp1 + temp2
        tmp[0 * 4 + i] = wrap16(a1 + d1)
        tmp[3 * 4 + i] = wrap16(a1 - d1)
        tmp[1 * 4 + i] = wrap16(b1 + c1)
        tmp[2 * 4 + i] = wrap16(b1 - c1)
    out = [0] * 16
    for r in range(4):
        row = tmp[4 * r:4 * r + 4]
        a1 = row[0] + row[2]
        b1 = row[0] - row[2]
        temp1 = (row[1] * SINPI8SQRT2) >> 16
        temp2 = row[3] + ((row[3] * COSPI8SQRT2MINUS1) >> 16)
        c1 = temp1 - temp2
        temp1 = row[1] + ((row[1] * COSPI8SQRT2MINUS1) >> 16)
        temp2 = (row[3] * SINPI8SQRT2) >> 16
        d1 = temp1 + temp2
        out[4 * r + 0] = wrap16((a1 + d1 + 4) >> 3)
        out[4 * r + 3] = wrap16((a1 - d1 + 4) >> 3)
        out[4 * r + 1] = wrap16((b1 + c1 + 4) >> 3)
        out[4 * r + 2] = wrap16((b1 - c1 + 4) >> 3)
    return out


def iwht4x4(coeffs) -> list[int]:
    """Section 14.3 ``vp8_short_inv_walsh4x4_c``: vertical pass into shorts, then horizontal."""
    ip = [wrap16(int(v)) for v in coeffs]
    op = [0] * 16
    for i in range(4):
        a1 = ip[0 + i] + ip[12 + i]
        b1 = ip[4 + i] + ip[8 + i]
        c1 = ip[4 + i] - ip[8 + i]
        d1 = ip[0 + i] - ip[12 + i]
        op[0 + i] = wrap16(a1 + b1)
        op[4 + i] = wrap16(c1 + d1)
        op[8 + i] = wrap16(a1 - b1)
        op[12 + i] = wrap16(d1 - c1)
    out = [0] * 16
    for r in range(4):
        x = op[4 * r:4 * r + 4]
        a1 = x[0] + x[3]
        b1 = x[1] + x[2]
        c1 = x[1] - x[2]
        d1 = x[0] - x[3]
        a2 = a1 + b1
        b2 = c1 + d1
        c2 = a1 - b1
        d2 = d1 - c1
        out[4 * r + 0] = wrap16((a2 + 3) >> 3)
        out[4 * r + 1] = wrap16((b2 + 3) >> 3)
        out[4 * r + 2] = wrap16((c2 + 3) >> 3)
        out[4 * r + 3] = wrap16((d2 + 3) >> 3)
    return out


# ---------------------------------------------------------------------------------------------
# Section 15.2 / 15.3: loop-filter segments. A segment is a list of 8 pixels
# p3 p2 p1 p0 | q0 q1 q2 q3; each function returns the filtered segment (a new list).


def _common_adjust(use_outer_taps: bool, seg: list[int]) -> int:
    """Section 15.2 ``common_adjust`` on seg[2..5] = P1 P0 Q0 Q1, in place; returns ``a``."""
    p1, p0, q0, q1 = (u2s(v) for v in seg[2:6])
    a = c((c(p1 - q1) if use_outer_taps else 0) + 3 * (q0 - p0))
    b = c(a + 3) >> 3
    a = c(a + 4) >> 3
    seg[4] = s2u(q0 - a)
    seg[3] = s2u(p0 + b)
    return a


def simple_segment(edge_limit: int, seg) -> list[int]:
    """Section 15.2 ``simple_segment`` (seg: P1 P0 Q0 Q1 at [2..5]; the rest is untouched)."""
    seg = list(seg)
    P1, P0, Q0, Q1 = seg[2:6]
    if abs(P0 - Q0) * 2 + abs(P1 - Q1) // 2 <= edge_limit:
        _common_adjust(True, seg)
    return seg


def _filter_yes(I, E, p3, p2, p1, p0, q0, q1, q2, q3) -> bool:
    return (abs(p0 - q0) * 2 + abs(p1 - q1) // 2 <= E
            and abs(p3 - p2) <= I and abs(p2 - p1) <= I and abs(p1 - p0) <= I
            and abs(q3 - q2) <= I and abs(q2 - q1) <= I and abs(q1 - q0) <= I)


def _hev(threshold, p1, p0, q0, q1) -> bool:
    return abs(p1 - p0) > threshold or abs(q1 - q0) > threshold


def subblock_filter(hev_threshold: int, interior_limit: int, edge_limit: int, seg) -> list[int]:
    """Section 15.3 ``subblock_filter`` on an 8-pixel segment."""
    seg = list(seg)
    p3, p2, p1, p0, q0, q1, q2, q3 = (u2s(v) for v in seg)
    if _filter_yes(interior_limit, edge_limit, p3, p2, p1, p0, q0, q1, q2, q3):
        hv = _hev(hev_threshold, p1, p0, q0, q1)
        a = (_common_adjust(hv, seg) + 1) >> 1
        if not hv:
            seg[5] = s2u(q1 - a)
            seg[2] = s2u(p1 + a)
    return seg


def mb_filter(hev_threshold: int, interior_limit: int, edge_limit: int, seg) -> list[int]:
    """Section 15.3 ``MBfilter`` on an 8-pixel segment."""
    seg = list(seg)
    p3, p2, p1, p0, q0, q1, q2, q3 = (u2s(v) for v in seg)
    if _filter_yes(interior_limit, edge_limit, p3, p2, p1, p0, q0, q1, q2, q3):
        if not _hev(hev_threshold, p1, p0, q0, q1):
            w = c(c(p1 - q1) + 3 * (q0 - p0))
            a = c((27 * w + 63) >> 7)
            seg[4] = s2u(q0 - a)
            seg[3] = s2u(p0 + a)
            a = c((18 * w + 63) >> 7)
            seg[5] = s2u(q1 - a)
            seg[2] = s2u(p1 + a)
            a = c((9 * w + 63) >> 7)
            seg[6] = s2u(q2 - a)
            seg[1] = s2u(p2 + a)
        else:
            _common_adjust(True, seg)
    return seg


def interior_limit(level: int, sharpness: int) -> int:
    """Section 15.4."""
    lim = level
    if sharpness:
        lim >>= 2 if sharpness > 4 else 1
        if lim > 9 - sharpness:
            lim = 9 - sharpness
    if not lim:
        lim = 1
    return lim


def hev_threshold(level: int, key_frame: bool) -> int:
    """Section 15.4."""
    if key_frame:
        return 2 if level >= 40 else 1 if level >= 15 else 0
    return 3 if level >= 40 else 2 if level >= 20 else 1 if level >= 15 else 0


def filter_edge(plane, r0: int, c0: int, vertical: bool, length: int, fn) -> None:
    """Apply ``fn(segment) -> segment`` to each of ``length`` 8-pixel segments straddling an edge.

    ``plane`` is a 2-D array (modified in place); the edge's first q0 pixel is at (r0, c0). A
    vertical edge runs down from there (segments are horizontal), a horizontal edge runs right.
    """
    for k in range(length):
        if vertical:
            r, cols = r0 + k, [c0 + d for d in range(-4, 4)]
            seg = fn([int(plane[r, x]) for x in cols])
            for x, v in zip(cols, seg):
                plane[r, x] = v
        else:
            x, rows = c0 + k, [r0 + d for d in range(-4, 4)]
            seg = fn([int(plane[y, x]) for y in rows])
            for y, v in zip(rows, seg):
                plane[y, x] = v


def loop_filter_frame(planes, offsets, levels, inner, simple: bool, sharpness: int,
                      key_frame: bool) -> None:
    """Section 15.1: filter every macroblock in raster order, four steps each, per plane.

    ``planes`` = (y, u, v) 2-D arrays, ``offsets`` = the (row, col) of each plane's picture origin,
    ``levels[r][c]`` the filter level of each macroblock (0 = skip), ``inner[r][c]`` whether its
    subblock edges are filtered. The simple filter touches luma only (section 15.2).
    """
    mb_rows, mb_cols = len(levels), len(levels[0])
    for idx, (plane, (oy, ox)) in enumerate(zip(planes, offsets)):
        if simple and idx > 0:
            continue
        size = 16 if idx == 0 else 8
        for r in range(mb_rows):
            for col in range(mb_cols):
                level = int(levels[r][col])
                if level == 0:
                    continue
                I = interior_limit(level, sharpness)
                H = hev_threshold(level, key_frame)
                mbE = (level + 2) * 2 + I
                subE = level * 2 + I
                if simple:
                    def mb_fn(s): return simple_segment(mbE, s)
                    def sub_fn(s): return simple_segment(subE, s)
                else:
                    def mb_fn(s): return mb_filter(H, I, mbE, s)
                    def sub_fn(s): return subblock_filter(H, I, subE, s)
                y0, x0 = oy + size * r, ox + size * col
                inner_steps = range(4, size, 4)
                if col > 0:
                    filter_edge(plane, y0, x0, True, size, mb_fn)
                if inner[r][col]:
                    for k in inner_steps:
                        filter_edge(plane, y0, x0 + k, True, size, sub_fn)
                if r > 0:
                    filter_edge(plane, y0, x0, False, size, mb_fn)
                if inner[r][col]:
                    for k in inner_steps:
                        filter_edge(plane, y0 + k, x0, False, size, sub_fn)


# ---------------------------------------------------------------------------------------------
# Section 12: intra prediction

# Mode numbers of section 8.1 / 11.2 (the enum order of the RFC).
DC_PRED, V_PRED, H_PRED, TM_PRED = 0, 1, 2, 3
(B_DC_PRED, B_TM_PRED, B_VE_PRED, B_HE_PRED, B_LD_PRED,
 B_RD_PRED, B_VR_PRED, B_VL_PRED, B_HD_PRED, B_HU_PRED) = range(10)


def block_intra_predict(size: int, mode: int, A, L, P: int, have_above: bool, have_left: bool):
    """Sections 12.2 / 12.3: a ``size`` x ``size`` DC/V/H/TM prediction, as a list of rows.

    ``A`` is the row above (``size`` pixels), ``L`` the column left, ``P`` the corner; for an edge
    outside the frame the caller passes the RFC's 127 (above) / 129 (left) values, which V, H and
    TM use and DC ignores.
    """
    if mode == DC_PRED:
        pixels = (list(A) if have_above else []) + (list(L) if have_left else [])
        if not pixels:
            v = 128
        else:
            shf = {8: 3, 16: 4, 32: 5}[len(pixels)]
            v = (sum(pixels) + (1 << (shf - 1))) >> shf
        return [[v] * size for _ in range(size)]
    if mode == V_PRED:
        return [list(A) for _ in range(size)]
    if mode == H_PRED:
        return [[L[r]] * size for r in range(size)]
    if mode == TM_PRED:
        return [[clamp255(L[r] + A[col] - P) for col in range(size)] for r in range(size)]
    raise ValueError(mode)


def subblock_intra_predict(A, L, mode: int):
    """Section 12.3 ``subblock_intra_predict``.

    ``A`` has 9 entries: A[-1] (= P) then A[0..7], i.e. ``A[i + 1]`` is the RFC's A[i];
    ``L`` has 4 entries L[0..3]. Returns the 4x4 block B[r][c].
    """
    P = A[0]

    def a(i):  # the RFC's A[i], i = -1 .. 7
        return A[i + 1]

    def l(i):  # the RFC's L[i], i = -1 .. 3 (L[-1] = P)
        return P if i == -1 else L[i]

    E = [L[3], L[2], L[1], L[0], P, a(0), a(1), a(2), a(3)]

    def avg3(x, y, z):
        return (x + y + y + z + 2) >> 2

    def avg2(x, y):
        return (x + y + 1) >> 1

    def avg3a(i):  # avg3p(A + i)
        return avg3(a(i - 1), a(i), a(i + 1))

    def avg2a(i):  # avg2p(A + i)
        return avg2(a(i), a(i + 1))

    def avg3e(i):
        return avg3(E[i - 1], E[i], E[i + 1])

    def avg2e(i):
        return avg2(E[i], E[i + 1])

    def avg3l(i):
        return avg3(l(i - 1), l(i), l(i + 1))

    def avg2l(i):
        return avg2(l(i), l(i + 1))

    B = [[None] * 4 for _ in range(4)]

    def put(value, *cells):
        for r, col in cells:
            B[r][col] = value

    if mode == B_DC_PRED:
        v = 4
        for i in range(4):
            v += a(i) + l(i)
        v >>= 3
        put(v, *[(r, col) for r in range(4) for col in range(4)])
    elif mode == B_TM_PRED:
        for r in range(4):
            for col in range(4):
                B[r][col] = clamp255(l(r) + a(col) - P)
    elif mode == B_VE_PRED:
        for col in range(4):
            put(avg3a(col), (0, col), (1, col), (2, col), (3, col))
    elif mode == B_HE_PRED:
        put(avg3(l(2), l(3), l(3)), (3, 0), (3, 1), (3, 2), (3, 3))
        for r in range(3):
            put(avg3l(r), (r, 0), (r, 1), (r, 2), (r, 3))
    elif mode == B_LD_PRED:
        put(avg3a(1), (0, 0))
        put(avg3a(2), (0, 1), (1, 0))
        put(avg3a(3), (0, 2), (1, 1), (2, 0))
        put(avg3a(4), (0, 3), (1, 2), (2, 1), (3, 0))
        put(avg3a(5), (1, 3), (2, 2), (3, 1))
        put(avg3a(6), (2, 3), (3, 2))
        put(avg3(a(6), a(7), a(7)), (3, 3))
    elif mode == B_RD_PRED:
        put(avg3e(1), (3, 0))
        put(avg3e(2), (3, 1), (2, 0))
        put(avg3e(3), (3, 2), (2, 1), (1, 0))
        put(avg3e(4), (3, 3), (2, 2), (1, 1), (0, 0))
        put(avg3e(5), (2, 3), (1, 2), (0, 1))
        put(avg3e(6), (1, 3), (0, 2))
        put(avg3e(7), (0, 3))
    elif mode == B_VR_PRED:
        put(avg3e(2), (3, 0))
        put(avg3e(3), (2, 0))
        put(avg3e(4), (3, 1), (1, 0))
        put(avg2e(4), (2, 1), (0, 0))
        put(avg3e(5), (3, 2), (1, 1))
        put(avg2e(5), (2, 2), (0, 1))
        put(avg3e(6), (3, 3), (1, 2))
        put(avg2e(6), (2, 3), (0, 2))
        put(avg3e(7), (1, 3))
        put(avg2e(7), (0, 3))
    elif mode == B_VL_PRED:
        put(avg2a(0), (0, 0))
        put(avg3a(1), (1, 0))
        put(avg2a(1), (2, 0), (0, 1))
        put(avg3a(2), (1, 1), (3, 0))
        put(avg2a(2), (2, 1), (0, 2))
        put(avg3a(3), (3, 1), (1, 2))
        put(avg2a(3), (2, 2), (0, 3))
        put(avg3a(4), (3, 2), (1, 3))
        put(avg3a(5), (2, 3))
        put(avg3a(6), (3, 3))
    elif mode == B_HD_PRED:
        put(avg2e(0), (3, 0))
        put(avg3e(1), (3, 1))
        put(avg2e(1), (2, 0), (3, 2))  # the RFC's "svg2p" is a typo for avg2p
        put(avg3e(2), (2, 1), (3, 3))
        put(avg2e(2), (2, 2), (1, 0))
        put(avg3e(3), (2, 3), (1, 1))
        put(avg2e(3), (1, 2), (0, 0))
        put(avg3e(4), (1, 3), (0, 1))
        put(avg3e(5), (0, 2))
        put(avg3e(6), (0, 3))
    elif mode == B_HU_PRED:
        put(avg2l(0), (0, 0))
        put(avg3l(1), (0, 1))
        put(avg2l(1), (0, 2), (1, 0))
        put(avg3l(2), (0, 3), (1, 1))
        put(avg2l(2), (1, 2), (2, 0))
        put(avg3(l(2), l(3), l(3)), (1, 3), (2, 1))
        put(l(3), (2, 2), (2, 3), (3, 0), (3, 1), (3, 2), (3, 3))
    else:
        raise ValueError(mode)
    assert all(v is not None for row in B for v in row)
    return B


# ---------------------------------------------------------------------------------------------
# Section 18.3: sub-pixel interpolation


def inter_predict(pic, py: int, px: int, bh: int, bw: int, frac_y: int, frac_x: int, filters):
    """Section 18.3: the ``bh`` x ``bw`` prediction whose whole-pixel origin is picture position
    (py, px), displaced by (frac_y, frac_x) eighths of a pixel.

    ``pic`` is the unpadded reference plane (2-D); it is read through clamped coordinates, i.e. as
    the infinite extension of its edge pixels. ``filters[f]`` is the 6-tap row of fraction f (the
    bilinear filters in the same layout). Whole-pixel copy when both fractions are 0; otherwise a
    horizontal pass over rows -2 .. bh+2, each sample rounded and clamped, then a vertical pass.
    """
    H, W = len(pic), len(pic[0])

    def ref(y, x):
        return int(pic[min(max(y, 0), H - 1)][min(max(x, 0), W - 1)])

    if frac_y == 0 and frac_x == 0:
        return [[ref(py + r, px + col) for col in range(bw)] for r in range(bh)]
    hf = [int(t) for t in filters[frac_x]]
    vf = [int(t) for t in filters[frac_y]]

    def interp(fil, samples):
        return clamp255((sum(s * t for s, t in zip(samples, fil)) + 64) >> 7)

    temp = {}
    for r in range(-2, bh + 3):
        for col in range(bw):
            temp[r, col] = interp(hf, [ref(py + r, px + col + k) for k in range(-2, 4)])
    return [[interp(vf, [temp[r + k, col] for k in range(-2, 4)]) for col in range(bw)]
            for r in range(bh)]


# ---------------------------------------------------------------------------------------------
# SSIM (not RFC 6386): Wang et al. 2004 with the 8x8-window approximation of ffmpeg's ssim filter


def ssim_plane(a, b) -> float:
    """SSIM of two planes (lists of rows of ints 0..255), straight from the definition.

    Every 8x8 window whose top-left corner lies on a multiple of 4 and that fits inside the plane,
    its 64 pixels summed directly (no 4x4 block sums), the integer form with ffmpeg's constants
    c1 = 416 and c2 = 235963, the plain mean over windows. A plane with no such window is one
    window over the whole plane, textbook formula: population statistics, C1 = (0.01*255)^2,
    C2 = (0.03*255)^2.
    """
    h, w = len(a), len(a[0])
    values = []
    for top in range(0, h - 7, 4):
        for left in range(0, w - 7, 4):
            s1 = s2 = ss = s12 = 0
            for y in range(top, top + 8):
                for x in range(left, left + 8):
                    p, q = int(a[y][x]), int(b[y][x])
                    s1 += p
                    s2 += q
                    ss += p * p + q * q
                    s12 += p * q
            var = 64 * ss - s1 * s1 - s2 * s2
            cov = 64 * s12 - s1 * s2
            values.append((2 * s1 * s2 + 416) * (2 * cov + 235963)
                          / ((s1 * s1 + s2 * s2 + 416) * (var + 235963)))
    if values:
        return sum(values) / len(values)
    n = h * w
    pa = [int(v) for row in a for v in row]
    pb = [int(v) for row in b for v in row]
    ma, mb = sum(pa) / n, sum(pb) / n
    va = sum((p - ma) ** 2 for p in pa) / n
    vb = sum((q - mb) ** 2 for q in pb) / n
    cov = sum((p - ma) * (q - mb) for p, q in zip(pa, pb)) / n
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    return (2 * ma * mb + c1) * (2 * cov + c2) / ((ma * ma + mb * mb + c1) * (va + vb + c2))


def ssim_all(planes_a, planes_b) -> float:
    """A frame's "All": the planes' SSIM weighted by their sample counts."""
    sizes = [len(p) * len(p[0]) for p in planes_a]
    values = [ssim_plane(p, q) for p, q in zip(planes_a, planes_b)]
    return sum(n * v for n, v in zip(sizes, values)) / sum(sizes)


# Encoder side. Section 14.3's inverse DCT and 14.4's inverse WHT, run backwards in exact
# arithmetic; section 13's tokens as a writer emits them; section 17's motion vector components.
# Bit costs are -log2 of each bool's probability (section 7), in floats and, to compare with the
# kernels' integer tables, rounded to 1/256 bit per bool.

def _idct_basis() -> list[list[float]]:
    """The 1-D basis of section 14.3's inverse DCT as exact reals: output k of a pass is
    sum_j basis[k][j] * input_j (the RFC's constants 20091 and 35468 approximate c - 1 and s)."""
    cc = math.cos(math.pi / 8) * math.sqrt(2)
    ss = math.sin(math.pi / 8) * math.sqrt(2)
    return [[1, cc, 1, ss], [1, ss, -1, -cc], [1, -ss, -1, cc], [1, -cc, 1, -ss]]


def fdct4x4_exact(block) -> list[float]:
    """The real-valued forward DCT that section 14.3's inverse undoes: the inverse computes
    x = B X B^T / 8 with B B^T = 4 I, so X = B^T x B / 2. ``block``: 16 residuals, raster."""
    B = _idct_basis()
    x = [[int(block[4 * r + c]) for c in range(4)] for r in range(4)]
    return [sum(B[i][k] * x[i][j] * B[j][m] for i in range(4) for j in range(4)) / 2
            for k in range(4) for m in range(4)]


_WHT = [[1, 1, 1, 1], [1, 1, -1, -1], [1, -1, -1, 1], [1, -1, 1, -1]]


def fwht4x4_doubled(dcs) -> list[int]:
    """Twice the forward WHT that section 14.4's inverse undoes (x = H X H^T / 8, H H^T = 4 I,
    so 2 X = H^T x H), which is an integer: the kernel must round each entry's half."""
    x = [[int(dcs[4 * r + c]) for c in range(4)] for r in range(4)]
    return [sum(_WHT[i][k] * x[i][j] * _WHT[j][m] for i in range(4) for j in range(4))
            for k in range(4) for m in range(4)]


ZIGZAG = [0, 1, 4, 8, 5, 2, 3, 6, 9, 12, 13, 10, 7, 11, 14, 15]  # section 13
BANDS = [0, 1, 2, 3, 6, 4, 5, 6, 6, 6, 6, 6, 6, 6, 6, 7]  # section 13.3
# Section 13.2: dct_cat1..6 as (smallest value, extra-bit probabilities).
DCT_CATS = [(5, [159]), (7, [165, 145]), (11, [173, 148, 140]), (19, [176, 155, 140, 135]),
            (35, [180, 157, 141, 134, 130]),
            (67, [254, 254, 243, 230, 196, 177, 153, 140, 133, 130, 129])]
ZERO_TOKEN, EOB_TOKEN = 0, 11
COEFF_TREE = [-EOB_TOKEN, 2, -ZERO_TOKEN, 4, -1, 6, 8, 12, -2, 10, -3, -4, 14, 16, -5, -6, 18, 20,
              -7, -8, -9, -10]


def quantize(coef: int, q: int, zbin: int, rnd: int, max_level: int) -> int:
    """Dead-zone quantizer: 0 if |coef| < zbin, else sign * min((|coef| + rnd) // q, max_level)."""
    a = abs(int(coef))
    v = 0 if a < zbin else min((a + rnd) // q, max_level)
    return -v if coef < 0 else v


def bool_cost256(prob: int, bit: int) -> int:
    """-log2 of the bool's probability in 1/256 bit, rounded; probability 0 counts as 1."""
    p = max(prob, 1) / 256
    return round(-256 * math.log2(p if bit == 0 else 1 - p))


def tree_bools(tree, probs, leaf: int) -> list[tuple[int, int]]:
    """The (probability, bit) pairs that code ``leaf`` of ``tree`` (section 8.1)."""
    path = BoolEncoder._tree_path(list(tree), 0, leaf)
    assert path is not None, leaf
    return [(int(probs[node >> 1]), bit) for node, bit in path]


def block_token_bools(levels, eob: int, btype: int, ctx: int, coeff_probs):
    """Section 13: the (probability, bit) pairs a writer codes for one block, and the context the
    block leaves (1 when it codes any token before DCT_EOB).

    ``levels``: 16 ints in raster order; tokens run over zigzag positions first..eob-1 (first = 1
    for a Y block after Y2, type 0), then DCT_EOB unless eob = 16. A token's probabilities are
    coeff_probs[btype][band][ctx]; ctx is the neighbours' for the first token, then 0, 1, 2 after a
    zero, a one, a larger value. After a ZERO token the tree is entered at node 2: no DCT_EOB.
    """
    first = 1 if btype == 0 else 0
    out = []
    i = first
    prev_zero = False
    while i < eob:
        v = int(levels[ZIGZAG[i]])
        a = abs(v)
        probs = coeff_probs[btype][BANDS[i]][ctx]
        if a <= 4:
            token, extra = a, []
        else:
            k = max(n for n, (base, _) in enumerate(DCT_CATS) if a >= base)
            base, cat_probs = DCT_CATS[k]
            token = 5 + k
            e = a - base
            nb = len(cat_probs)
            extra = [(cat_probs[j], (e >> (nb - 1 - j)) & 1) for j in range(nb)]
        path = tree_bools(COEFF_TREE, probs, token)
        if prev_zero:
            assert path[0] == (int(probs[0]), 1)
            path = path[1:]
        out += path + extra
        if a:
            out.append((128, int(v < 0)))
        ctx = 0 if a == 0 else (1 if a == 1 else 2)
        prev_zero = a == 0
        i += 1
    if i < 16:
        assert not prev_zero, "DCT_EOB cannot follow a ZERO token"
        out.append((int(coeff_probs[btype][BANDS[i]][ctx][0]), 0))
    return out, int(i > first)


def mv_component_bools(v: int, p) -> list[tuple[int, int]]:
    """Section 17.2 (the writer of section 17.1's read_mvcomponent): the (probability, bit) pairs
    coding component ``v`` with its 19 probabilities ``p`` (is_short, sign, short tree[8], long
    bits[10])."""
    x = abs(v)
    out = []
    if x < 8:
        out.append((int(p[0]), 0))
        out += tree_bools([2, 8, 4, 6, -0, -1, -2, -3, 10, 12, -4, -5, -6, -7], p[2:9], x)
    else:
        out.append((int(p[0]), 1))
        for i in range(3):
            out.append((int(p[9 + i]), (x >> i) & 1))
        for i in range(9, 3, -1):
            out.append((int(p[9 + i]), (x >> i) & 1))
        if x & 0xFFF0:  # otherwise bit 3 is implied: a long value is at least 8
            out.append((int(p[9 + 3]), (x >> 3) & 1))
    if x:
        out.append((int(p[1]), int(v < 0)))
    return out


def bools_cost(bools) -> tuple[int, float]:
    """(sum of the rounded 1/256-bit costs, exact bits) of (probability, bit) pairs."""
    return (sum(bool_cost256(p, b) for p, b in bools),
            sum(-math.log2((max(p, 1) / 256) if b == 0 else 1 - max(p, 1) / 256) for p, b in bools))


def rd_quantize_exhaustive(coef, q_dc: int, q_ac: int, max_dc: int, max_ac: int, btype: int,
                           ctx: int, lam: float, coeff_probs):
    """The least D + lam * R over every block the RD quantizer may choose: each coded coefficient
    at its nearest level L or L - 1 (same sign), every level from some zigzag position on zeroed,
    the last coded one nonzero. D is the squared coefficient error (position 0 excluded for a Y
    block after Y2, whose DC is in Y2), R the rounded token cost. Returns (best J, one best levels).
    Exponential: for blocks with few nonzero candidates only."""
    first = 1 if btype == 0 else 0
    cands = []
    for i in range(16):
        c = int(coef[ZIGZAG[i]])
        q, mx = (q_dc, max_dc) if i == 0 else (q_ac, max_ac)
        big = min((abs(c) + q // 2) // q, mx)
        sgn = -1 if c < 0 else 1
        cands.append(sorted({sgn * big, sgn * max(big - 1, 0)}))
    best = (math.inf, None)
    for eob in range(16 + 1):
        if 0 < eob <= first:
            continue
        for choice in itertools.product(*[cands[i] for i in range(first, eob)]):
            if eob > first and choice[-1] == 0:
                continue
            levels = [0] * 16
            for i, v in zip(range(first, eob), choice):
                levels[ZIGZAG[i]] = v
            d = 0
            for i in range(first, 16):
                q = q_dc if i == 0 else q_ac
                d += (int(coef[ZIGZAG[i]]) - levels[ZIGZAG[i]] * q) ** 2
            bools, _ = block_token_bools(levels, eob, btype, ctx, coeff_probs)
            j = d + lam * bools_cost(bools)[0] / 256
            if j < best[0]:
                best = (j, levels)
    return best
