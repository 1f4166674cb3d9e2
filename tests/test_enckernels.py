"""The encoder's numeric kernels (forward transforms, quantizers, bit costs) against their slow
twins in ``tests/naive.py`` and against the decoder they feed.

Round trips go through the decoder's own inverse transforms and token reader, so a kernel that
agreed with a wrong twin would still fail there. The ``nojit`` tests also run with
``NUMBA_DISABLE_JIT=1`` (``make test``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import naive
from codec import tables
from codec.boolcoder import STATE_SIZE, bd_init, bd_overrun
from codec.modes import read_mv_component
from codec.quantize import (KIND_UV, KIND_Y1, KIND_Y2, QP_MAX, QP_Q, QP_ROUND, RD_WORK_SHAPE, frame_quant_params,
                            quant_params, quantize_block, rd_quantize_block)
from codec.rate import (BOOL_COST, LEVEL_EXTRA_COST, LEVEL_TOKEN, MAX_LEVEL, MV_MAX, NOT_CODABLE,
                        TOKEN_COST_SHAPE, block_token_cost, inter_bmode_costs, inter_mode_costs,
                        kf_bmode_costs, mv_component_costs, ref_frame_costs, split_mv_costs, token_costs,
                        tree_cost, tree_costs, uvmode_costs, ymode_costs)
from codec.tokens import _read_block
from codec.transform import FWHT_ROUND_UP, fdct4x4, fwht4x4, idct4x4, iwht4x4

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TYPES = [tables.TYPE_Y_AFTER_Y2, tables.TYPE_Y2, tables.TYPE_UV, tables.TYPE_Y_WITH_DC]


def _i16(values) -> np.ndarray:
    return np.array(values, np.int16)


residual = st.one_of(st.integers(-255, 255), st.sampled_from([-255, 255, 0]))
residuals = st.lists(residual, min_size=16, max_size=16)
y_dc = st.one_of(st.integers(-2040, 2040), st.sampled_from([-2040, 2040, 0, 1, -1]))


def _fdct(x) -> np.ndarray:
    out = np.zeros(16, np.int16)
    fdct4x4(_i16(x), out)
    return out


def _fwht(x) -> np.ndarray:
    out = np.zeros(16, np.int16)
    fwht4x4(_i16(x), out)
    return out


def _inverse(kernel, coeffs) -> np.ndarray:
    out = np.zeros(16, np.int16)
    kernel(np.asarray(coeffs, np.int16), out, np.zeros(16, np.int16))
    return out


# ---------------------------------------------------------------------------------------------
# Forward transforms


@pytest.mark.nojit
@FAST
@given(x=residuals)
def test_fdct_pairs_with_idct(x):
    """fdct then the decoder's idct gives the residual back within one, and stays in int16."""
    X = _fdct(x)
    assert np.abs(X.astype(int)).max() <= 2040
    back = _inverse(idct4x4, X).astype(int)
    assert np.abs(back - np.array(x)).max() <= 1


@FAST
@given(x=residuals)
def test_fdct_matches_exact_transform(x):
    """Each coefficient is the exact inverse-of-idct coefficient, rounded: up (by less than one)
    for odd outputs, within 3/4 for even ones, plus at most 4/32 carried from the row pass's
    rounding up; a zero residual gives zero coefficients."""
    exact = naive.fdct4x4_exact(x)
    diff = [int(k) - e for k, e in zip(_fdct(x), exact)]
    assert -0.75 - 0.125 < min(diff) and max(diff) < 1 + 0.125 + 0.01
    assert not _fdct([0] * 16).any()


@pytest.mark.parametrize("lo,hi", [(-255, 255), (0, 255), (-255, 0)])
def test_fdct_extremes_exhaustive(lo, hi):
    """Every block of only lo and hi values (2^16 each): no int16 overflow in the row pass kept
    in ``out`` (it would show as a coefficient far from the exact one), round trip within one."""
    out = np.zeros(16, np.int16)
    back = np.zeros(16, np.int16)
    tmp = np.zeros(16, np.int16)
    B = np.array(naive._idct_basis())
    blocks = np.where((np.arange(1 << 16)[:, None] >> np.arange(16)) & 1, hi, lo).astype(np.int16)
    for m, x in enumerate(blocks):
        fdct4x4(x, out)
        idct4x4(out, back, tmp)
        assert np.abs(back.astype(int) - x).max() <= 1, x
        if m % 257 == 0:  # the exact transform is slow in Python: a spread sample
            exact = B.T @ x.reshape(4, 4).astype(float) @ B / 2
            assert np.abs(out.reshape(4, 4) - exact).max() < 1.14, x


def test_fdct_round_trip_error_rate():
    """The tuned rounding offsets keep idct(fdct(x)) == x for all but a few pixels (1.7% measured;
    plain rounding to nearest gives 9%)."""
    rng = np.random.default_rng(12345)
    out = np.zeros(16, np.int16)
    back = np.zeros(16, np.int16)
    tmp = np.zeros(16, np.int16)
    off = 0
    n = 20000
    for _ in range(n):
        x = rng.integers(-255, 256, 16).astype(np.int16)
        fdct4x4(x, out)
        idct4x4(out, back, tmp)
        off += int((back != x).sum())
    assert off / (16 * n) < 0.025


def test_fdct_dc_only():
    """A flat residual v becomes the lone DC 8v, which the decoder's DC-only path maps back."""
    for v in range(-255, 256):
        X = _fdct([v] * 16)
        assert X[0] == 8 * v and not X[1:].any()
        assert (X[0] + 4) >> 3 == v


@pytest.mark.nojit
@FAST
@given(dcs=st.lists(y_dc, min_size=16, max_size=16))
def test_fwht_pairs_with_iwht_exactly(dcs):
    """fwht then the decoder's iwht gives the 16 DCs back exactly; each coefficient is half of the
    exact doubled transform, its half rounded one way or the other."""
    X = _fwht(dcs)
    doubled = naive.fwht4x4_doubled(dcs)
    assert all(abs(2 * int(k) - d) <= 1 for k, d in zip(X, doubled))
    assert np.array_equal(_inverse(iwht4x4, X), _i16(dcs))


def test_fwht_round_up_pattern_is_bent():
    """Why the round trip is exact: the +-1/2 errors of FWHT_ROUND_UP transform to +-2 everywhere
    (in iwht's units of 1/8), which (v + 3) >> 3 absorbs."""
    H = np.array(naive._WHT)
    err = np.where(FWHT_ROUND_UP.reshape(4, 4) == 1, 0.5, -0.5)
    assert np.array_equal(np.abs(H @ err @ H.T), np.full((4, 4), 2.0))


def test_fwht_extremes_exhaustive():
    """Every block of +-2040 DCs (2^16): exact round trip, |Y2 coefficient| <= 16320."""
    out = np.zeros(16, np.int16)
    back = np.zeros(16, np.int16)
    tmp = np.zeros(16, np.int16)
    blocks = np.where((np.arange(1 << 16)[:, None] >> np.arange(16)) & 1, 2040, -2040).astype(np.int16)
    for x in blocks:
        fwht4x4(x, out)
        assert np.abs(out.astype(int)).max() <= 16320
        iwht4x4(out, back, tmp)
        assert np.array_equal(back, x), x


# ---------------------------------------------------------------------------------------------
# Plain quantizer

factor = st.one_of(st.integers(4, 440), st.sampled_from([1, 2, 3, 4, 8, 157, 284, 440]))


@st.composite
def coef_blocks(draw, limit=16320):
    """16 coefficients, mostly small with a few large, some zero, some at the extremes."""
    big = st.one_of(st.integers(-limit, limit), st.sampled_from([-limit, limit]))
    small = st.integers(-40, 40)
    return draw(st.lists(st.one_of(small, small, st.just(0), big), min_size=16, max_size=16))


@pytest.mark.nojit
@FAST
@given(coef=coef_blocks(), q_dc=factor, q_ac=factor, btype=st.sampled_from(TYPES),
       rounding=st.tuples(st.floats(0, 0.99), st.floats(0, 0.99)),
       zbin=st.tuples(st.floats(0, 2), st.floats(0, 2)))
def test_quantize_matches_naive(coef, q_dc, q_ac, btype, rounding, zbin):
    qp = quant_params(q_dc, q_ac, rounding, zbin)
    levels = np.full(16, 99, np.int16)
    eob = quantize_block(_i16(coef), qp, btype, levels)
    first = 1 if btype == tables.TYPE_Y_AFTER_Y2 else 0
    want = [0] * 16
    for i in range(first, 16):
        k = 0 if i == 0 else 1
        want[naive.ZIGZAG[i]] = naive.quantize(coef[naive.ZIGZAG[i]], *qp[k])
    assert levels.tolist() == want
    nonzero = [i for i in range(16) if want[naive.ZIGZAG[i]]]
    assert eob == (max(nonzero) + 1 if nonzero else 0)
    # The decoder multiplies in int16: the clamp keeps every dequantized level there.
    assert all(abs(int(v) * int(qp[0 if p == 0 else 1, QP_Q])) <= 32767 for p, v in enumerate(levels))


@FAST
@given(coef=coef_blocks(limit=32767), q=st.one_of(st.integers(1, 32767), st.sampled_from([1, 2, 3, 157, 32767])),
       rounding=st.floats(0, 0.99))
def test_quantize_reciprocal_is_exact_over_int16(coef, q, rounding):
    """quantize_block divides by multiplying with a reciprocal: exact for every int16 coefficient
    and every factor."""
    qp = quant_params(q, q, (rounding, rounding))
    levels = np.zeros(16, np.int16)
    quantize_block(_i16(coef), qp, tables.TYPE_Y2, levels)
    for p in range(16):
        a = abs(coef[p])
        want = min((a + int(qp[0, QP_ROUND])) // q, int(qp[0, QP_MAX]))
        assert levels[p] == (-want if coef[p] < 0 else want)


@FAST
@given(coef=coef_blocks(), q_dc=factor, q_ac=factor)
def test_quantize_nearest_error_bound(coef, q_dc, q_ac):
    """Without dead zone, rounding 1/2: |dequant(level) - coef| <= q/2 wherever no clamp applies."""
    qp = quant_params(q_dc, q_ac)
    levels = np.zeros(16, np.int16)
    quantize_block(_i16(coef), qp, tables.TYPE_Y2, levels)
    for p in range(16):
        k = 0 if p == 0 else 1
        q = int(qp[k, QP_Q])
        if abs(coef[p]) + q // 2 < q * (int(qp[k, QP_MAX]) + 1):
            assert abs(int(levels[p]) * q - coef[p]) * 2 <= q
        else:  # clamped: the largest level, with the coefficient's sign
            assert abs(int(levels[p])) == qp[k, QP_MAX]


def test_frame_quant_params_follow_dq_columns():
    dq = np.array([[4, 5, 8, 8, 4, 5], [157, 284, 314, 440, 132, 284]], np.int32)
    qp = frame_quant_params(dq, rounding=(0.5, 0.25, 0.375), zbin=(0, 1.0, 0))
    assert qp.shape == (2, 3, 2, 4)
    for s in range(2):
        for kind in (KIND_Y1, KIND_Y2, KIND_UV):
            assert qp[s, kind, 0, QP_Q] == dq[s, 2 * kind] and qp[s, kind, 1, QP_Q] == dq[s, 2 * kind + 1]
    assert qp[1, KIND_Y2, 1].tolist() == [440, 440, 110, 32767 // 440]
    with pytest.raises(ValueError):
        quant_params(0, 4)


# ---------------------------------------------------------------------------------------------
# Bit costs


def test_bool_cost_table():
    for p in range(256):
        for b in range(2):
            assert BOOL_COST[p, b] == naive.bool_cost256(p, b)
    assert BOOL_COST[128, 0] == BOOL_COST[128, 1] == 256


def test_level_tables_every_magnitude():
    """Each magnitude's token and extra-bit-plus-sign cost, for all 1..MAX_LEVEL, as the twin codes
    a lone coefficient (its bools minus the token's path through the tree)."""
    probs = tables.DEFAULT_COEFF_PROBS
    assert LEVEL_TOKEN[0] == 0 and LEVEL_EXTRA_COST[0] == 0
    for v in range(1, MAX_LEVEL + 1):
        levels = [v] + [0] * 15
        bools, _ = naive.block_token_bools(levels, 1, tables.TYPE_Y_WITH_DC, 0, probs)
        token = LEVEL_TOKEN[v]
        path = naive.tree_bools(naive.COEFF_TREE, probs[3][0][0], int(token))
        assert bools[:len(path)] == path
        rest = bools[len(path):-1]  # the last bool is the next position's DCT_EOB
        assert LEVEL_EXTRA_COST[v] == naive.bools_cost(rest)[0], v
    assert MAX_LEVEL == 2114 and LEVEL_TOKEN[MAX_LEVEL] == 10 and LEVEL_TOKEN[66] == 9


MODE_TREES = [(tables.COEFF_TREE, 11), (tables.BMODE_TREE, 9), (tables.KF_YMODE_TREE, 4),
              (tables.YMODE_TREE, 4), (tables.UV_MODE_TREE, 3), (tables.SEGMENT_TREE, 3),
              (tables.MV_REF_TREE, 4), (tables.SPLIT_MV_TREE, 3), (tables.SUB_MV_REF_TREE, 3),
              (tables.SMALL_MV_TREE, 7)]


@pytest.mark.nojit
@FAST
@given(k=st.integers(0, len(MODE_TREES) - 1), data=st.data())
def test_tree_costs(k, data):
    tree, n = MODE_TREES[k]
    probs = np.array(data.draw(st.lists(st.integers(0, 255), min_size=n, max_size=n)), np.uint8)
    out = np.full(16, -7, np.int32)
    tree_costs(tree, probs, out)
    leaves = [-int(v) for v in tree if v <= 0]
    for leaf in leaves:
        want = naive.bools_cost(naive.tree_bools(tree, probs, leaf))[0]
        assert out[leaf] == want == tree_cost(tree, probs, leaf)
    assert all(out[v] == -7 for v in range(16) if v not in leaves)
    assert tree_cost(tree, probs, 15) == -1 and tree_cost(tree, probs, -1) == -1


@st.composite
def token_blocks(draw):
    """(levels, eob, btype, ctx, probs): a sparse block with magnitudes across every token."""
    btype = draw(st.sampled_from(TYPES))
    first = 1 if btype == tables.TYPE_Y_AFTER_Y2 else 0
    mag = st.one_of(st.integers(1, 4), st.integers(5, 66), st.integers(67, MAX_LEVEL),
                    st.sampled_from([1, 2, 5, 6, 7, 10, 11, 18, 19, 34, 35, 66, 67, MAX_LEVEL]))
    levels = [0] * 16
    for i in range(first, 16):
        if draw(st.integers(0, 3)) == 0:
            levels[naive.ZIGZAG[i]] = draw(mag) * draw(st.sampled_from([1, -1]))
    nonzero = [i for i in range(16) if levels[naive.ZIGZAG[i]]]
    eob = max(nonzero) + 1 if nonzero else 0
    ctx = draw(st.integers(0, 2))
    seed = draw(st.integers(0, 2**32 - 1))
    probs = np.random.default_rng(seed).integers(0, 256, (4, 8, 3, 11)).astype(np.uint8)
    if draw(st.booleans()):
        probs = tables.DEFAULT_COEFF_PROBS.copy()
    return levels, eob, btype, ctx, probs


@pytest.mark.nojit
@FAST
@given(block=token_blocks())
def test_block_token_cost_matches_naive(block):
    """The kernel's cost is the sum of the rounded costs of the bools the writer codes, within
    rounding of their exact -log2 sum, and it leaves the context the decoder would set."""
    levels, eob, btype, ctx, probs = block
    tok = np.zeros(TOKEN_COST_SHAPE, np.int32)
    token_costs(probs, tok)
    cost, left = block_token_cost(_i16(levels), eob, btype, ctx, tok)
    bools, want_left = naive.block_token_bools(levels, eob, btype, ctx, probs)
    rounded, exact = naive.bools_cost(bools)
    assert cost == rounded
    assert abs(cost / 256 - exact) <= len(bools) * 0.5 / 256 + 1e-9
    assert left == want_left == (1 if eob > 0 else 0)


@FAST
@given(block=token_blocks())
def test_block_token_bools_decode(block):
    """The twin's tokens, written by the RFC's bool encoder, are what the decoder's token reader
    reads back: same levels, same eob (so the twin really is the writer's token sequence)."""
    levels, eob, btype, ctx, probs = block
    bools, _ = naive.block_token_bools(levels, eob, btype, ctx, probs)
    enc = naive.BoolEncoder()
    for p, b in bools:
        enc.write_bool(p, b)
    data = np.frombuffer(enc.flush(), np.uint8)
    state = np.zeros(STATE_SIZE, np.int64)
    bd_init(state, data, 0, len(data))
    out = np.zeros(16, np.int16)
    assert _read_block(state, data, probs, btype, ctx, out) == eob
    assert out.tolist() == levels


def test_block_token_cost_against_bool_encoder():
    """Over a long stream the estimated cost is what the bool encoder really spends, within 0.5%.

    The blocks are drawn from the model itself: the decoder's token reader run over random bytes
    samples tokens with the probabilities' own frequencies (where the estimate is meant to hold;
    on blocks that ignore the probabilities the coder's rounded split drifts by about 1%)."""
    rng = np.random.default_rng(7)
    probs = rng.integers(1, 256, (4, 8, 3, 11)).astype(np.uint8)
    tok = np.zeros(TOKEN_COST_SHAPE, np.int32)
    token_costs(probs, tok)
    data = np.frombuffer(rng.bytes(1 << 16), np.uint8)
    state = np.zeros(STATE_SIZE, np.int64)
    bd_init(state, data, 0, len(data))
    enc = naive.BoolEncoder()
    total = 0
    for n in range(15000):
        btype, ctx = n % 4, int(rng.integers(0, 3))
        levels = np.zeros(16, np.int16)
        eob = _read_block(state, data, probs, btype, ctx, levels)
        total += block_token_cost(levels, eob, btype, ctx, tok)[0]
        for p, b in naive.block_token_bools(levels.tolist(), eob, btype, ctx, probs)[0]:
            enc.write_bool(p, b)
    spent = 8 * len(enc.flush())
    assert not bd_overrun(state) and spent > 40000
    assert abs(total / 256 - spent) <= 0.005 * spent


def test_block_token_cost_eob_after_zero_is_not_codable():
    tok = np.zeros(TOKEN_COST_SHAPE, np.int32)
    token_costs(tables.DEFAULT_COEFF_PROBS, tok)
    levels = np.zeros(16, np.int16)
    levels[0] = 3
    cost, _ = block_token_cost(levels, 2, tables.TYPE_Y_WITH_DC, 0, tok)  # ZERO at 1, then DCT_EOB
    assert cost >= NOT_CODABLE
    cost, left = block_token_cost(levels, 1, tables.TYPE_Y_WITH_DC, 0, tok)
    assert cost < NOT_CODABLE and left == 1
    cost, left = block_token_cost(levels, 0, tables.TYPE_Y_AFTER_Y2, 2, tok)  # DC not coded
    assert cost == BOOL_COST[tables.DEFAULT_COEFF_PROBS[0, 1, 2, 0], 0] and left == 0


mv_probs = st.lists(st.integers(1, 255), min_size=19, max_size=19)


@pytest.mark.nojit
@SLOW
@given(p=mv_probs)
def test_mv_component_costs(p):
    probs = np.array(p, np.uint8)
    out = np.zeros(2 * MV_MAX + 1, np.int32)
    mv_component_costs(probs, out)
    for v in list(range(-40, 41)) + [-MV_MAX, MV_MAX, 255, -256, 512, 1000, -1000]:
        assert out[v + MV_MAX] == naive.bools_cost(naive.mv_component_bools(v, probs))[0], v


@SLOW
@given(p=mv_probs, values=st.lists(st.integers(-MV_MAX, MV_MAX), min_size=1, max_size=20))
def test_mv_component_bools_decode(p, values):
    """The twin's bools for a component are what the decoder's read_mv_component reads back."""
    probs = np.array(p, np.uint8)
    enc = naive.BoolEncoder()
    for v in values:
        for pr, b in naive.mv_component_bools(v, probs):
            enc.write_bool(pr, b)
    data = np.frombuffer(enc.flush(), np.uint8)
    state = np.zeros(STATE_SIZE, np.int64)
    bd_init(state, data, 0, len(data))
    assert [read_mv_component(state, data, probs) for _ in values] == values


@FAST
@given(values=st.lists(st.one_of(st.integers(-MV_MAX, MV_MAX), st.integers(-20, 20)), max_size=40))
def test_mv_bool_counts(values):
    """The vectorized counts of the bools coding MV components against the twin's bools (with
    distinct probabilities, each bool's probability names its index)."""
    from codec.probupdate import mv_bool_counts
    probs = np.arange(100, 119).astype(np.uint8)
    want = np.zeros((19, 2), np.int64)
    for v in values:
        for pr, b in naive.mv_component_bools(v, probs):
            want[pr - 100, b] += 1
    np.testing.assert_array_equal(mv_bool_counts(np.array(values, np.int64)), want)


def test_mv_component_costs_all_values():
    probs = tables.DEFAULT_MV_PROBS[0].copy()
    out = np.zeros(2 * MV_MAX + 1, np.int32)
    mv_component_costs(probs, out)
    want = [naive.bools_cost(naive.mv_component_bools(v, probs))[0] for v in range(-MV_MAX, MV_MAX + 1)]
    assert out.tolist() == want


def _leaf_costs(tree, probs):
    return {-int(v): naive.bools_cost(naive.tree_bools(tree, probs, -int(v)))[0] for v in tree if v <= 0}


@pytest.mark.nojit
@FAST
@given(yp=st.lists(st.integers(1, 255), min_size=4, max_size=4),
       uvp=st.lists(st.integers(1, 255), min_size=3, max_size=3),
       refp=st.lists(st.integers(0, 255), min_size=3, max_size=3),
       cnt=st.lists(st.integers(0, 5), min_size=4, max_size=4))
def test_mode_costs(yp, uvp, refp, cnt):
    yp, uvp = np.array(yp, np.uint8), np.array(uvp, np.uint8)
    out = np.zeros(5, np.int32)
    ymode_costs(True, yp, out)
    assert dict(enumerate(out.tolist())) == _leaf_costs(tables.KF_YMODE_TREE, tables.KF_YMODE_PROBS)
    ymode_costs(False, yp, out)
    assert dict(enumerate(out.tolist())) == _leaf_costs(tables.YMODE_TREE, yp)
    out4 = np.zeros(4, np.int32)
    uvmode_costs(True, uvp, out4)
    assert dict(enumerate(out4.tolist())) == _leaf_costs(tables.UV_MODE_TREE, tables.KF_UV_MODE_PROBS)
    uvmode_costs(False, uvp, out4)
    assert dict(enumerate(out4.tolist())) == _leaf_costs(tables.UV_MODE_TREE, uvp)
    ref_frame_costs(refp[0], refp[1], refp[2], out4)
    c = naive.bool_cost256
    assert out4.tolist() == [c(refp[0], 0), c(refp[0], 1) + c(refp[1], 0),
                             c(refp[0], 1) + c(refp[1], 1) + c(refp[2], 0),
                             c(refp[0], 1) + c(refp[1], 1) + c(refp[2], 1)]
    out10 = np.full(10, -1, np.int32)
    inter_mode_costs(np.array(cnt, np.int32), out10)
    probs = [tables.MODE_CONTEXTS[cnt[i], i] for i in range(4)]
    assert dict(enumerate(out10.tolist()[5:], 5)) == _leaf_costs(tables.MV_REF_TREE, probs)
    assert out10[:5].tolist() == [-1] * 5


def test_fixed_mode_cost_tables():
    kf = np.zeros((10, 10, 10), np.int32)
    kf_bmode_costs(kf)
    for a in range(10):
        for lft in range(10):
            assert dict(enumerate(kf[a, lft].tolist())) == _leaf_costs(tables.BMODE_TREE,
                                                                       tables.KF_BMODE_PROBS[a, lft])
    inter = np.zeros(10, np.int32)
    inter_bmode_costs(inter)
    assert dict(enumerate(inter.tolist())) == _leaf_costs(tables.BMODE_TREE, tables.BMODE_PROBS)
    part = np.zeros(4, np.int32)
    sub = np.zeros((5, 4), np.int32)
    split_mv_costs(part, sub)
    assert dict(enumerate(part.tolist())) == _leaf_costs(tables.SPLIT_MV_TREE, tables.SPLIT_MV_PROBS)
    for ctx in range(5):
        assert dict(enumerate(sub[ctx].tolist())) == _leaf_costs(tables.SUB_MV_REF_TREE,
                                                                 tables.SUB_MV_REF_PROBS[ctx])


# ---------------------------------------------------------------------------------------------
# RD quantizer


@st.composite
def rd_cases(draw):
    """A block with at most 6 coefficients that round to a nonzero level (the twin is exhaustive),
    some near half-steps, with factors, lambda, context and probabilities."""
    btype = draw(st.sampled_from(TYPES))
    q_dc, q_ac = draw(factor), draw(factor)
    coef = [0] * 16
    positions = draw(st.lists(st.integers(0, 15), max_size=6, unique=True))
    for i in positions:
        q = q_dc if i == 0 else q_ac
        lvl = draw(st.one_of(st.integers(0, 3), st.integers(0, 80), st.just(MAX_LEVEL)))
        off = draw(st.one_of(st.integers(-q // 2, q // 2), st.sampled_from([-q // 2, q // 2])))
        coef[naive.ZIGZAG[i]] = max(-32768, min(32767, (lvl * q + off) * draw(st.sampled_from([1, -1]))))
    # Small coefficients that round to zero still count in the distortion.
    for i in range(16):
        q = q_dc if i == 0 else q_ac
        if i not in positions and draw(st.integers(0, 3)) == 0:
            coef[naive.ZIGZAG[i]] = draw(st.integers(-((q - 1) // 2), (q - 1) // 2))
    lam = draw(st.one_of(st.just(0.0), st.floats(0, 50), st.floats(0, 5000), st.just(1e9)))
    ctx = draw(st.integers(0, 2))
    seed = draw(st.integers(0, 2**32 - 1))
    probs = np.random.default_rng(seed).integers(1, 256, (4, 8, 3, 11)).astype(np.uint8)
    if draw(st.booleans()):
        probs = tables.DEFAULT_COEFF_PROBS.copy()
    return coef, q_dc, q_ac, btype, ctx, lam, probs


def _rd(coef, qp, btype, ctx, lam, probs):
    tok = np.zeros(TOKEN_COST_SHAPE, np.int32)
    token_costs(probs, tok)
    levels = np.full(16, 99, np.int16)
    eob = rd_quantize_block(_i16(coef), qp, btype, ctx, lam, tok, np.zeros(RD_WORK_SHAPE), levels)
    return levels, eob, tok


def _j(coef, levels, eob, qp, btype, ctx, lam, probs):
    first = 1 if btype == tables.TYPE_Y_AFTER_Y2 else 0
    d = sum((coef[naive.ZIGZAG[i]] - int(levels[naive.ZIGZAG[i]]) * int(qp[0 if i == 0 else 1, QP_Q])) ** 2
            for i in range(first, 16))
    bools, _ = naive.block_token_bools([int(v) for v in levels], eob, btype, ctx, probs)
    return d + lam * naive.bools_cost(bools)[0] / 256


@pytest.mark.nojit
@SLOW
@given(case=rd_cases())
def test_rd_quantize_is_optimal(case):
    """The trellis finds the least D + lambda R the exhaustive twin finds over the same choices,
    and its levels, eob and cost are consistent with the token writer."""
    coef, q_dc, q_ac, btype, ctx, lam, probs = case
    qp = quant_params(q_dc, q_ac)
    levels, eob, tok = _rd(coef, qp, btype, ctx, lam, probs)
    nonzero = [i for i in range(16) if levels[naive.ZIGZAG[i]]]
    assert eob == (max(nonzero) + 1 if nonzero else 0)
    if btype == tables.TYPE_Y_AFTER_Y2:
        assert levels[0] == 0
    best, _ = naive.rd_quantize_exhaustive(coef, q_dc, q_ac, int(qp[0, QP_MAX]), int(qp[1, QP_MAX]),
                                           btype, ctx, lam, probs)
    got = _j(coef, levels, eob, qp, btype, ctx, lam, probs)
    assert math.isclose(got, best, rel_tol=1e-9, abs_tol=1e-6)
    cost, _ = block_token_cost(levels, eob, btype, ctx, tok)
    assert cost < NOT_CODABLE


@FAST
@given(coef=coef_blocks(), q_dc=factor, q_ac=factor, btype=st.sampled_from(TYPES), ctx=st.integers(0, 2))
def test_rd_quantize_lambda_zero_is_nearest(coef, q_dc, q_ac, btype, ctx):
    """With lambda 0 only distortion counts: the levels are the nearest ones (plain quantizer)."""
    qp = quant_params(q_dc, q_ac)
    levels, eob, _ = _rd(coef, qp, btype, ctx, 0.0, tables.DEFAULT_COEFF_PROBS)
    plain = np.zeros(16, np.int16)
    assert quantize_block(_i16(coef), qp, btype, plain) == eob
    assert np.array_equal(levels, plain)


@FAST
@given(coef=coef_blocks(), q_dc=factor, q_ac=factor, btype=st.sampled_from(TYPES), ctx=st.integers(0, 2),
       lam=st.floats(0, 1e4))
def test_rd_quantize_bounds_and_monotone(coef, q_dc, q_ac, btype, ctx, lam):
    """Levels stay within QP_MAX and the decoder's int16 products; a larger lambda never spends
    more bits; an enormous lambda empties the block."""
    qp = quant_params(q_dc, q_ac)
    probs = tables.DEFAULT_COEFF_PROBS
    levels, eob, tok = _rd(coef, qp, btype, ctx, lam, probs)
    for p in range(16):
        k = 0 if p == 0 else 1
        assert abs(int(levels[p])) <= qp[k, QP_MAX]
        assert abs(int(levels[p]) * int(qp[k, QP_Q])) <= 32767
    bits = block_token_cost(levels, eob, btype, ctx, tok)[0]
    levels2, eob2, _ = _rd(coef, qp, btype, ctx, 4 * lam + 100, probs)
    assert block_token_cost(levels2, eob2, btype, ctx, tok)[0] <= bits
    levels3, eob3, _ = _rd(coef, qp, btype, ctx, 1e12, probs)
    assert eob3 == 0 and not levels3.any()


@SLOW
@given(levels=st.lists(st.one_of(st.integers(-2114, 2114), st.sampled_from([-2114, 2114, 67, -67, 0])),
                       min_size=16, max_size=16),
       prob=st.sampled_from([1, 2, 128, 254, 255]), btype=st.integers(0, 3), ctx=st.integers(0, 2))
def test_token_writer_stays_within_block_max_bytes(levels, prob, btype, ctx):
    """``_write_block`` writes without growing its buffer (no runtime), so ``write_tokens`` grows it
    by BLOCK_MAX_BYTES per block: no block, at any probabilities, may need more (the bounds-checked
    lane would catch a write past the end here), and what it writes reads back."""
    from codec.boolcoder import E_POS, ENC_STATE_SIZE, be_flush, be_init
    from codec.tokens import BLOCK_MAX_BYTES, _write_block
    block = np.array(levels, np.int16)
    first = 1 if btype == tables.TYPE_Y_AFTER_Y2 else 0
    block[:first] = 0
    nz = [i for i in range(16) if block[tables.ZIGZAG[i]] != 0]
    eob = nz[-1] + 1 if nz else 0
    probs = np.full((4, 8, 3, 11), prob, np.uint8)
    es = np.zeros(ENC_STATE_SIZE, np.int64)
    be_init(es)
    buf = np.zeros(BLOCK_MAX_BYTES, np.uint8)  # exactly the room write_tokens makes
    _write_block(es, buf, probs, btype, ctx, block.reshape(1, 1, 1, 16), 0, 0, 0, eob)
    assert es[E_POS] <= BLOCK_MAX_BYTES
    buf = be_flush(es, buf)
    data = buf[:es[E_POS]].copy()
    state = np.zeros(STATE_SIZE, np.int64)
    bd_init(state, data, 0, len(data))
    out = np.zeros(16, np.int16)
    assert _read_block(state, data, probs, btype, ctx, out) == eob
    np.testing.assert_array_equal(out, block)
