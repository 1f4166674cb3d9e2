"""Each numba kernel of ``codec/`` against its slow twin in ``tests/naive.py`` (written from RFC 6386).

Hypothesis draws the inputs; the strategies lean towards the cases that matter (smooth pixel runs
that pass the loop-filter masks, int16 extremes that make the transforms wrap, blocks near and far
outside the picture). The ``nojit`` tests also run with ``NUMBA_DISABLE_JIT=1`` (``make test``).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import naive
from codec import tables
from codec.boolcoder import (BoolDecoder, STATE_SIZE, bd_init, bd_literal, bd_overrun, bd_read,
                             bd_tree)
from codec.loopfilter import _mb_edge, _simple_edge, _subblock_edge, loop_filter_frame, luma_filter_sse
from codec.predict import BORDER_UV, BORDER_Y, predict_inter, predict_mb_intra, predict_subblock
from codec.transform import idct4x4, iwht4x4

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])

pixel = st.integers(0, 255)

# ---------------------------------------------------------------------------------------------
# Section 7: bool encoder (naive) -> kernels / naive decoder

TREES = [(tables.COEFF_TREE, 11), (tables.BMODE_TREE, 9), (tables.KF_YMODE_TREE, 4),
         (tables.YMODE_TREE, 4), (tables.UV_MODE_TREE, 3), (tables.SEGMENT_TREE, 3)]


def _leaves(tree):
    return sorted(-int(v) for v in tree if v <= 0)


@st.composite
def bool_ops(draw, max_ops=200):
    """A list of ('bool', prob, bit) / ('lit', n, value) / ('tree', k, probs, leaf) to write."""
    ops = []
    for _ in range(draw(st.integers(0, max_ops))):
        kind = draw(st.sampled_from(["bool", "bool", "bool", "lit", "tree"]))
        if kind == "bool":
            prob = draw(st.one_of(st.integers(0, 255), st.sampled_from([1, 128, 255])))
            ops.append(("bool", prob, draw(st.integers(0, 1))))
        elif kind == "lit":
            n = draw(st.integers(0, 24))
            ops.append(("lit", n, draw(st.integers(0, (1 << n) - 1))))
        else:
            k = draw(st.integers(0, len(TREES) - 1))
            tree, nprobs = TREES[k]
            probs = draw(st.lists(st.integers(1, 255), min_size=nprobs, max_size=nprobs))
            ops.append(("tree", k, probs, draw(st.sampled_from(_leaves(tree)))))
    return ops


def _encode(ops) -> bytes:
    enc = naive.BoolEncoder()
    for op in ops:
        if op[0] == "bool":
            enc.write_bool(op[1], op[2])
        elif op[0] == "lit":
            enc.write_literal(op[2], op[1])
        else:
            enc.write_tree(TREES[op[1]][0], op[2], op[3])
    return enc.flush()


@pytest.mark.nojit
@FAST
@given(ops=bool_ops(), pre=st.binary(max_size=5), post=st.binary(max_size=5))
def test_bool_roundtrip_kernels_and_naive_decoder(ops, pre, post):
    data = _encode(ops)
    buf = np.frombuffer(pre + data + post, np.uint8)
    st_ = np.zeros(STATE_SIZE, np.int64)
    bd_init(st_, buf, len(pre), len(pre) + len(data))
    nd = naive.NaiveBoolDecoder(data)
    for op in ops:
        if op[0] == "bool":
            assert bd_read(st_, buf, op[1]) == op[2]
            assert nd.read_bool(op[1]) == op[2]
        elif op[0] == "lit":
            assert bd_literal(st_, buf, op[1]) == op[2]
            assert nd.read_literal(op[1]) == op[2]
        else:
            tree = TREES[op[1]][0]
            probs = np.array(op[2], np.uint8)
            assert bd_tree(st_, buf, tree, probs) == op[3]
            assert nd.read_tree(tree, op[2]) == op[3]
        assert not bd_overrun(st_)
    # The range is part of the state both decoders share with the encoder.
    assert st_[2] == nd.range


@FAST
@given(ops=bool_ops(max_ops=60))
def test_bool_decoder_class(ops):
    """``BoolDecoder`` (the header's face of the kernels) reads what the encoder wrote."""
    data = _encode(ops)
    bd = BoolDecoder(np.frombuffer(data, np.uint8), 0, len(data))
    for op in ops:
        if op[0] == "bool":
            assert bd.read(op[1]) == op[2]
        elif op[0] == "lit":
            assert bd.literal(op[1]) == op[2]
        else:
            assert bd_tree(bd.st, bd.data, TREES[op[1]][0], np.array(op[2], np.uint8)) == op[3]
    assert not bd.overrun()


@FAST
@given(values=st.lists(st.tuples(st.integers(0, 7), st.integers(-127, 127), st.booleans()),
                       max_size=30))
def test_bool_decoder_signed_fields(values):
    """``signed`` / ``optional_signed`` read the header's magnitude-then-sign fields."""
    enc = naive.BoolEncoder()
    for n, v, present in values:
        n = max(n, abs(v).bit_length())
        enc.write_bool(128, present)
        if present:
            enc.write_literal(abs(v), n)
            enc.write_bool(128, v < 0)
    data = enc.flush()
    bd = BoolDecoder(np.frombuffer(data, np.uint8), 0, len(data))
    for n, v, present in values:
        n = max(n, abs(v).bit_length())
        assert bd.optional_signed(n) == (v if present else 0)


@pytest.mark.nojit
@FAST
@given(data=st.binary(min_size=1, max_size=12).filter(lambda d: d[0] != 0xFF),
       probs=st.lists(st.one_of(st.integers(0, 255), st.sampled_from([1, 255])),
                      min_size=1, max_size=40))
def test_bool_overrun_flag(data, probs):
    """``bd_overrun`` is true exactly when fewer than 8 real bits remain under the comparison byte
    (the naive decoder counts the bits it shifted out), and reads past the end read zeros.
    Data starting 0xff is left out: see test_bool_first_byte_ff_matches_libvpx."""
    buf = np.frombuffer(data, np.uint8)
    st_ = np.zeros(STATE_SIZE, np.int64)
    bd_init(st_, buf, 0, len(buf))
    nd = naive.NaiveBoolDecoder(data)
    total = 8 * len(data)
    assert not bd_overrun(st_)
    i = 0
    while nd.consumed_bits() <= total + 24:
        p = probs[i % len(probs)]
        i += 1
        assert bd_read(st_, buf, p) == nd.read_bool(p)
        inside = total - nd.consumed_bits() >= 8
        assert bool(bd_overrun(st_)) == (not inside), (i, nd.consumed_bits(), total)
        assert i < 100_000
    assert bd_overrun(st_)


@FAST
@given(data=st.binary(min_size=1, max_size=12).filter(lambda d: d[0] != 0xFF),
       probs=st.lists(st.integers(0, 255), min_size=1, max_size=300))
def test_bool_decoders_agree_on_any_data(data, probs):
    """On arbitrary bytes (corrupt partitions included), kernel = RFC decoder = libvpx's."""
    buf = np.frombuffer(data, np.uint8)
    st_ = np.zeros(STATE_SIZE, np.int64)
    bd_init(st_, buf, 0, len(buf))
    nd = naive.NaiveBoolDecoder(data)
    got = [int(bd_read(st_, buf, p)) for p in probs]
    assert got == [nd.read_bool(p) for p in probs]
    assert got == naive.libvpx_read_bools(data, probs)


@given(st.binary(min_size=1, max_size=12), st.lists(st.integers(0, 255), min_size=1, max_size=120))
@FAST
def test_bool_window_overflow_matches_libvpx(tail, probs):
    """A partition starting with 0xff puts value above range (no encoder writes that); libvpx
    drops the excess bits as its 64-bit window shifts, and so must we."""
    data = b"\xff" + tail
    buf = np.frombuffer(data, np.uint8)
    st_ = np.zeros(STATE_SIZE, np.int64)
    bd_init(st_, buf, 0, len(buf))
    got = [int(bd_read(st_, buf, p)) for p in probs]
    assert got == naive.libvpx_read_bools(data, probs)


def test_bool_first_byte_ff_matches_libvpx():
    data = b"\xff\x10"
    probs = [128] * 16
    buf = np.frombuffer(data, np.uint8)
    st_ = np.zeros(STATE_SIZE, np.int64)
    bd_init(st_, buf, 0, len(buf))
    got = [int(bd_read(st_, buf, p)) for p in probs]
    assert got == naive.libvpx_read_bools(data, probs)


# ---------------------------------------------------------------------------------------------
# Section 14.3 / 14.4: inverse transforms

int16s = st.one_of(st.integers(-32768, 32767),
                   st.sampled_from([-32768, -32767, -1, 0, 1, 32766, 32767]),
                   st.integers(-2048, 2048), st.integers(-64, 64))
blocks = st.lists(int16s, min_size=16, max_size=16)


def _run_transform(kernel, coeffs):
    c = np.array(coeffs, np.int16)
    out = np.zeros(16, np.int16)
    tmp = np.zeros(16, np.int16)
    kernel(c, out, tmp)
    assert list(c) == list(coeffs), "the input must not be modified"
    return [int(v) for v in out]


@FAST
@given(coeffs=blocks)
def test_idct_matches_rfc(coeffs):
    assert _run_transform(idct4x4, coeffs) == naive.idct4x4(coeffs)


@FAST
@given(coeffs=blocks)
def test_iwht_matches_rfc(coeffs):
    assert _run_transform(iwht4x4, coeffs) == naive.iwht4x4(coeffs)


TRANSFORMS = pytest.mark.parametrize("kernel,twin", [(idct4x4, naive.idct4x4), (iwht4x4, naive.iwht4x4)],
                                     ids=["idct", "iwht"])


@pytest.mark.nojit
@TRANSFORMS
def test_transforms_fixed_cases(kernel, twin):
    """A few hand-picked in-range blocks (also run without JIT): DC only, a ramp, a pattern."""
    cases = [[0] * 16, [100] + [0] * 15, [-100] + [0] * 15, list(range(-8, 8)), [1, 2, 3, 4] * 4,
             [2047, -2048] * 8, [-2048] * 16]
    for coeffs in cases:
        assert _run_transform(kernel, coeffs) == twin(coeffs), coeffs


@TRANSFORMS
def test_transforms_wrap_like_libvpx(kernel, twin):
    """Hostile coefficients overflow the int16 first-pass buffer; the result wraps as in libvpx.
    (JIT only: without numba, numpy refuses to store an out-of-range value in an int16.)"""
    cases = [[32767] * 16, [-32768] * 16, [32767, -32768] * 8, [32767, 32767, -32768, -32768] * 4]
    for coeffs in cases:
        assert _run_transform(kernel, coeffs) == twin(coeffs), coeffs


def test_dc_only_transforms():
    """The DC-only shortcuts of the RFC (14.3 ``vp8_short_inv_walsh4x4_1_c``; libvpx's
    ``vp8_dc_only_idct_add``): a lone DC gives (dc + 3) >> 3, resp. (dc + 4) >> 3, everywhere."""
    for dc in (-2048 * 157, -1000, -5, -4, -3, 0, 3, 4, 5, 1000, 32767):
        dc = naive.wrap16(dc)
        coeffs = [dc] + [0] * 15
        assert _run_transform(iwht4x4, coeffs) == [(dc + 3) >> 3] * 16
        assert _run_transform(idct4x4, coeffs) == [(dc + 4) >> 3] * 16


# ---------------------------------------------------------------------------------------------
# Section 15: loop-filter segments


@st.composite
def segments(draw):
    """8 pixels p3..q3 made of two near-flat halves, so the filter masks often pass."""
    noise = draw(st.sampled_from([0, 1, 2, 3, 6, 20]))
    base_p = draw(pixel)
    step = draw(st.one_of(st.integers(-12, 12), st.integers(-255, 255)))
    base_q = min(max(base_p + step, 0), 255)
    seg = []
    for k in range(8):
        base = base_p if k < 4 else base_q
        seg.append(min(max(base + draw(st.integers(-noise, noise)), 0), 255))
    return seg


limits = dict(edge=st.one_of(st.integers(0, 200), st.integers(0, 1000)),
              interior=st.integers(0, 63), hev_t=st.one_of(st.integers(0, 3), st.integers(0, 255)))


def _run_segment(kernel, seg, *args):
    """The kernel on one segment, alone in a row (a = 1) and alone in a column (a = stride)."""
    row = np.array(seg, np.uint8)
    kernel(row, 4, 1, 1, 1, *args)
    col = np.zeros((8, 3), np.uint8)
    col[:, 1] = seg
    flat = col.ravel()
    kernel(flat, 4 * 3 + 1, 3, 1, 1, *args)
    assert (col[:, 0] == 0).all() and (col[:, 2] == 0).all()
    assert list(col[:, 1]) == list(row), "vertical and horizontal addressing must agree"
    return [int(v) for v in row]


@pytest.mark.nojit
@FAST
@given(seg=segments(), edge=limits["edge"])
def test_simple_segment(seg, edge):
    assert _run_segment(_simple_edge, seg, edge) == naive.simple_segment(edge, seg)


@FAST
@given(seg=segments(), edge=limits["edge"], interior=limits["interior"], hev_t=limits["hev_t"])
def test_subblock_segment(seg, edge, interior, hev_t):
    got = _run_segment(_subblock_edge, seg, edge, interior, hev_t)
    assert got == naive.subblock_filter(hev_t, interior, edge, seg)


@FAST
@given(seg=segments(), edge=limits["edge"], interior=limits["interior"], hev_t=limits["hev_t"])
def test_mb_segment(seg, edge, interior, hev_t):
    got = _run_segment(_mb_edge, seg, edge, interior, hev_t)
    assert got == naive.mb_filter(hev_t, interior, edge, seg)


@st.composite
def smooth_planes(draw, h, w, block=4):
    """A plane of near-flat ``block`` x ``block`` tiles: edges the filters act on."""
    seed = draw(st.integers(0, 2**32 - 1))
    noise = draw(st.sampled_from([0, 1, 2, 4, 16]))
    spread = draw(st.sampled_from([2, 8, 30, 255]))
    rng = np.random.default_rng(seed)
    base = int(rng.integers(0, 256))
    tiles = base + rng.integers(-spread, spread + 1, ((h + block - 1) // block, (w + block - 1) // block))
    plane = np.kron(tiles, np.ones((block, block), np.int64))[:h, :w]
    plane = plane + rng.integers(-noise, noise + 1, (h, w))
    return np.clip(plane, 0, 255).astype(np.uint8)


@FAST
@given(data=st.data(), which=st.sampled_from(["simple", "subblock", "mb"]),
       vertical=st.booleans(), edge=limits["edge"], interior=limits["interior"],
       hev_t=limits["hev_t"])
def test_edges_in_2d(data, which, vertical, edge, interior, hev_t):
    """A whole 16- or 8-pixel edge in a small 2-D plane, either orientation; nothing else moves."""
    n = data.draw(st.sampled_from([8, 16]))
    plane = data.draw(smooth_planes(n + 6, n + 6))
    expect = plane.copy()
    if which == "simple":
        kernel, args = _simple_edge, (edge,)
        def fn(s): return naive.simple_segment(edge, s)
    elif which == "subblock":
        kernel, args = _subblock_edge, (edge, interior, hev_t)
        def fn(s): return naive.subblock_filter(hev_t, interior, edge, s)
    else:
        kernel, args = _mb_edge, (edge, interior, hev_t)
        def fn(s): return naive.mb_filter(hev_t, interior, edge, s)
    stride = plane.shape[1]
    r0, c0 = (1, 4) if vertical else (4, 1)
    flat = plane.ravel()
    if vertical:
        kernel(flat, r0 * stride + c0, 1, stride, n, *args)
    else:
        kernel(flat, r0 * stride + c0, stride, 1, n, *args)
    naive.filter_edge(expect, r0, c0, vertical, n, fn)
    np.testing.assert_array_equal(plane, expect)


@SLOW
@given(data=st.data(), mb_rows=st.integers(1, 3), mb_cols=st.integers(1, 3),
       simple=st.booleans(), sharpness=st.integers(0, 7), key_frame=st.booleans())
def test_loop_filter_frame(data, mb_rows, mb_cols, simple, sharpness, key_frame):
    """The whole-frame filter against section 15.1's procedure built from the segment twins.
    (Borders of 8: the kernel reads planes as 8-byte words, see loopfilter._check_layout.)"""
    border_y, border_uv = 8, 8
    y = np.ascontiguousarray(data.draw(smooth_planes(16 * mb_rows + 2 * border_y, 16 * mb_cols + 2 * border_y)))
    u = np.ascontiguousarray(data.draw(smooth_planes(8 * mb_rows + 2 * border_uv, 8 * mb_cols + 2 * border_uv)))
    v = np.ascontiguousarray(data.draw(smooth_planes(8 * mb_rows + 2 * border_uv, 8 * mb_cols + 2 * border_uv)))
    levels = np.array(data.draw(st.lists(st.one_of(st.integers(0, 63), st.sampled_from([0, 14, 15, 39, 40, 63])),
                                         min_size=mb_rows * mb_cols, max_size=mb_rows * mb_cols)),
                      np.uint8).reshape(mb_rows, mb_cols)
    inner = np.array(data.draw(st.lists(st.booleans(), min_size=mb_rows * mb_cols,
                                        max_size=mb_rows * mb_cols))).reshape(mb_rows, mb_cols)
    expect = [p.copy() for p in (y, u, v)]
    loop_filter_frame(y, u, v, border_y, border_uv, levels, inner, simple, sharpness, key_frame)
    naive.loop_filter_frame(expect, [(border_y, border_y), (border_uv, border_uv), (border_uv, border_uv)],
                            levels.tolist(), inner.tolist(), simple, sharpness, key_frame)
    for got, want in zip((y, u, v), expect):
        np.testing.assert_array_equal(got, want)


@SLOW
@given(data=st.data(), mb_rows=st.integers(1, 3), mb_cols=st.integers(1, 3), level=st.integers(0, 63),
       sharpness=st.integers(0, 7), key_frame=st.booleans())
def test_luma_filter_sse(data, mb_rows, mb_cols, level, sharpness, key_frame):
    """The encoder's level-search measure: luma SSE after the whole-frame filter at one level, with
    the reconstruction left as it was."""
    border = 8
    y = np.ascontiguousarray(data.draw(smooth_planes(16 * mb_rows + 2 * border, 16 * mb_cols + 2 * border)))
    src = np.ascontiguousarray(data.draw(smooth_planes(16 * mb_rows, 16 * mb_cols)))
    inner = np.array(data.draw(st.lists(st.booleans(), min_size=mb_rows * mb_cols,
                                        max_size=mb_rows * mb_cols))).reshape(mb_rows, mb_cols)
    before = y.copy()
    planes = [y.copy(), np.zeros((8 * mb_rows + 8, 8 * mb_cols + 8), np.uint8),
              np.zeros((8 * mb_rows + 8, 8 * mb_cols + 8), np.uint8)]
    naive.loop_filter_frame(planes, [(border, border), (4, 4), (4, 4)], [[level] * mb_cols] * mb_rows,
                            inner.tolist(), False, sharpness, key_frame)
    d = planes[0][border:-border, border:-border].astype(np.int64) - src
    assert luma_filter_sse(y, src, border, level, sharpness, inner, key_frame) == int((d * d).sum())
    np.testing.assert_array_equal(y, before)


# ---------------------------------------------------------------------------------------------
# Section 12: intra prediction


@pytest.mark.nojit
@FAST
@given(data=st.data(), mode=st.integers(0, 9))
def test_predict_subblock(data, mode):
    plane = np.array(data.draw(st.lists(pixel, min_size=7 * 9, max_size=7 * 9)), np.uint8).reshape(7, 9)
    y, x = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 5))
    above_right = data.draw(st.lists(pixel, min_size=4, max_size=4))
    A = [int(plane[y - 1, x + i]) for i in range(-1, 4)] + above_right  # A[-1] .. A[7]
    L = [int(plane[y + i, x - 1]) for i in range(4)]
    want = plane.copy()
    want[y:y + 4, x:x + 4] = naive.subblock_intra_predict(A, L, mode)
    predict_subblock(plane, y, x, mode, np.array(above_right, np.int32), np.zeros(13, np.int32))
    np.testing.assert_array_equal(plane, want)


@st.composite
def edge_values(draw, n):
    """n edge pixels: random, flat, or the frame-border constants 127 / 129."""
    kind = draw(st.sampled_from(["random", "flat", "127", "129"]))
    if kind == "random":
        return draw(st.lists(pixel, min_size=n, max_size=n))
    v = draw(pixel) if kind == "flat" else int(kind)
    return [v] * n


@FAST
@given(data=st.data(), size=st.sampled_from([16, 8]), mode=st.integers(0, 3),
       have_above=st.booleans(), have_left=st.booleans())
def test_predict_mb_intra(data, size, mode, have_above, have_left):
    """DC/V/H/TM at 16x16 and 8x8; DC averages only the edges inside the frame (128 with none)."""
    plane = np.zeros((size + 2, size + 3), np.uint8)
    plane[:] = data.draw(pixel)
    A = data.draw(edge_values(size))
    L = data.draw(edge_values(size))
    P = data.draw(st.sampled_from([127, 129, data.draw(pixel)]))
    plane[0, 1:1 + size] = A
    plane[1:1 + size, 0] = L
    plane[0, 0] = P
    want = plane.copy()
    want[1:1 + size, 1:1 + size] = naive.block_intra_predict(size, mode, A, L, P, have_above, have_left)
    predict_mb_intra(plane, 1, 1, size, mode, have_above, have_left)
    np.testing.assert_array_equal(plane, want)


@pytest.mark.nojit
def test_dc_prediction_edge_rules():
    """Section 12.2 spelled out: 128 with no edge, the average of the one edge there is.

    Also the named test of a no-JIT pitfall: the edge sums exceed 255, so the DC sum must not be
    accumulated in the pixels' uint8 type (NumPy 2 keeps ``0 + np.uint8`` a uint8)."""
    plane = np.zeros((18, 18), np.uint8)
    plane[0, 1:17] = 10  # above
    plane[1:17, 0] = 30  # left
    for have_above, have_left, want in ((False, False, 128), (True, False, 10), (False, True, 30),
                                        (True, True, 20)):
        p = plane.copy()
        predict_mb_intra(p, 1, 1, 16, tables.DC_PRED, have_above, have_left)
        assert (p[1:17, 1:17] == want).all(), (have_above, have_left)


# ---------------------------------------------------------------------------------------------
# Section 18: inter prediction

FILTER_SETS = {"sixtap": tables.SIXTAP_FILTERS, "bilinear": tables.BILINEAR_FILTERS}
# (block height, block width, border): 16x16 luma blocks only in a luma-sized border.
SHAPES = [(16, 16, BORDER_Y), (8, 8, BORDER_Y), (8, 8, BORDER_UV), (4, 4, BORDER_Y), (4, 4, BORDER_UV),
          (16, 8, BORDER_Y), (8, 16, BORDER_Y)]  # the encoder's 16x8 and 8x16 partitions


@st.composite
def positions(draw, extent, size):
    """A whole-pixel block origin along one axis: inside, straddling an edge, or far outside."""
    return draw(st.one_of(
        st.integers(0, max(extent - size, 0)),
        st.integers(-size - 6, 5), st.integers(extent - 6, extent + 6),
        st.integers(-4096, -size - 6), st.integers(extent + 6, extent + 4096),
    ))


@FAST
@given(data=st.data(), shape=st.sampled_from(SHAPES), kind=st.sampled_from(sorted(FILTER_SETS)),
       frac_y=st.integers(0, 7), frac_x=st.integers(0, 7))
def test_predict_inter(data, shape, kind, frac_y, frac_x):
    bh, bw, border = shape
    pic_h = data.draw(st.sampled_from([bh, 2 * bh, 3 * bh, 16, 32, 48]))
    pic_w = data.draw(st.sampled_from([bw, 2 * bw, 3 * bw, 16, 32, 48]))
    seed = data.draw(st.integers(0, 2**32 - 1))
    pic = np.random.default_rng(seed).integers(0, 256, (pic_h, pic_w)).astype(np.uint8)
    ref = np.pad(pic, border, mode="edge")
    py = data.draw(positions(pic_h, bh))
    px = data.draw(positions(pic_w, bw))
    filters = FILTER_SETS[kind]
    dst = np.full((bh + 4, bw + 4), 7, np.uint8)
    want = dst.copy()
    want[2:2 + bh, 2:2 + bw] = naive.inter_predict(pic, py, px, bh, bw, frac_y, frac_x, filters)
    ref_before = ref.copy()
    scratch = np.full((32, 16), -7, np.int32)  # rows 21 on must stay as they are
    predict_inter(dst, 2, 2, ref, border + py, border + px, bh, bw, frac_y, frac_x, filters,
                  pic_h, pic_w, border, scratch[:21])
    np.testing.assert_array_equal(dst, want)
    np.testing.assert_array_equal(ref, ref_before)
    assert (scratch[21:] == -7).all(), "predict_inter wrote past its 21-row scratch (8x16 blocks did)"


@pytest.mark.nojit
@pytest.mark.parametrize("kind", sorted(FILTER_SETS))
def test_predict_inter_corners(kind):
    """Each corner, far outside in both directions, at a half-pel offset (also run without JIT)."""
    bh = bw = 4
    pic = (np.arange(12 * 20).reshape(12, 20) * 37 % 256).astype(np.uint8)
    ref = np.pad(pic, BORDER_UV, mode="edge")
    for py in (-1000, -7, -2, 9, 11, 1000):
        for px in (-1000, -7, -3, 17, 19, 1000):
            dst = np.zeros((bh, bw), np.uint8)
            predict_inter(dst, 0, 0, ref, BORDER_UV + py, BORDER_UV + px, bh, bw, 4, 4,
                          FILTER_SETS[kind], 12, 20, BORDER_UV, np.zeros((21, 16), np.int32))
            want = naive.inter_predict(pic, py, px, bh, bw, 4, 4, FILTER_SETS[kind])
            assert dst.tolist() == want, (py, px)


def test_loop_filter_refuses_a_plane_it_cannot_read_as_words():
    """loop_filter_frame reads planes as 8-byte words without bounds checks: a border or row
    length that is not a multiple of 8, or a plane too small for its macroblocks, is refused."""
    levels, inner = np.full((1, 1), 20, np.uint8), np.ones((1, 1), bool)
    u = v = np.zeros((24, 24), np.uint8)
    for y, border in ((np.zeros((36, 36), np.uint8), 10),   # border not a multiple of 8
                      (np.zeros((32, 36), np.uint8), 8),    # row length not a multiple of 8
                      (np.zeros((16, 16), np.uint8), 8)):   # no room for the macroblock
        with pytest.raises(ValueError, match="not a padded whole-macroblock plane"):
            loop_filter_frame(y, u, v, border, 8, levels, inner, False, 0, True)
