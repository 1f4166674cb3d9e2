"""The bitstream writers: parse -> write round trips, the bool encoder, and edited frames.

* Every frame of every conformance stream: ``write_frame(parse_frame(...))`` gives the same bytes.
  The six WebP key frames were made by libwebp, which pads its partitions with more zero bytes
  than libvpx's flush; for those the test proves that this is the only difference.
* The bool encoder kernels against the naive RFC encoder (``tests/naive.py``) and the decoders.
* Each writer kernel against its reader on random input: whatever a reader makes of random bytes
  is a valid value, which the writer must code back to the same value.
* Edited frames (coefficients zeroed, modes changed, re-partitioned, probabilities re-coded) decode
  without error, and the same in our decoder as in libvpx's vpxdec.
"""

from __future__ import annotations

import dataclasses
import subprocess
from functools import lru_cache

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import naive
from codec import tables
from codec.bitstream import ParsedFrame, new_frame, new_frame_header, next_state, parse_frame, write_frame
from codec.boolcoder import (E_POS, E_RANGE, ENC_STATE_SIZE, STATE_SIZE, BoolDecoder, BoolEncoder, bd_init,
                             bd_literal, bd_read, bd_tree, be_flush, be_grow, be_init, be_literal, be_tree, be_write)
from codec.decoder import decode_frame, parse_frame_syntax
from codec.header import FrameTag, read_frame_header, write_frame_header
from codec.image import Image
from codec.ivf import IvfHeader, IvfWriter, read_ivf
from codec.modes import allocate_mode_info, read_modes, read_mv_component, write_modes, write_mv_component
from codec.state import DecoderState
from codec.tokens import BLOCK_MAX_BYTES, _read_block, _write_block, check_block, derive_eobs, read_tokens, write_tokens
from common import VECTORS, VP8_DIR, WEBP_IVF_DIR, requires_tool, vector_params

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@lru_cache(maxsize=None)
def frames_of(path) -> tuple[bytes, ...]:
    return tuple(f.data for f in read_ivf(path)[1])


# ---------------------------------------------------------------------------------------------
# Round trip over the conformance streams


def _zero_padded_only(orig: bytes, ours: bytes, state: DecoderState) -> None:
    """Assert that ``orig`` differs from ``ours`` only by zero bytes after the data of a partition
    (with the partition sizes adjusted), and that both decode to the same picture and state."""
    a, b = parse_frame_syntax(state, orig), parse_frame_syntax(state, ours)
    ta, tb = a.header.tag, b.header.tag
    assert dataclasses.replace(ta, first_part_size=0) == dataclasses.replace(tb, first_part_size=0)
    h = ta.header_size
    assert orig[3:h] == ours[3:h]
    spans = [((h, h + ta.first_part_size), (h, h + tb.first_part_size))] + list(zip(a.bounds, b.bounds))
    assert len(spans) == 1 + len(a.bounds) == 1 + len(b.bounds)
    for (s0, e0), (s1, e1) in spans:
        po, pw = orig[s0:e0], ours[s1:e1]
        assert len(po) >= len(pw) and po[:len(pw)] == pw, "ours must be a prefix of the original partition"
        assert not any(po[len(pw):]), "the original's extra bytes must all be zero padding"
    sa, ia = decode_frame(state, orig)
    sb, ib = decode_frame(state, ours)
    assert sa == sb and ia == ib


@pytest.mark.slow
@pytest.mark.parametrize("vector", vector_params())
def test_round_trip_is_byte_identical(vector):
    """parse -> write reproduces every frame; the libvpx streams byte for byte."""
    state = DecoderState()
    not_identical = []
    for i, data in enumerate(frames_of(vector)):
        ours = write_frame(state, parse_frame(state, data))
        if ours != data:
            not_identical.append(i)
            _zero_padded_only(data, ours, state)
        state = next_state(state, data)
    if vector.parent == WEBP_IVF_DIR:
        # libwebp flushes with more zero padding than libvpx: proven equivalent above.
        assert not_identical in ([], [0])
    else:
        assert not_identical == [], f"frames {not_identical} differ"


def test_round_trip_covers_the_corpus():
    """The corpus the round trip runs over is the conformance corpus (62 vectors + 6 WebP)."""
    assert len(VECTORS) == 68 and sum(v.parent == WEBP_IVF_DIR for v in VECTORS) == 6
    assert sum(len(frames_of(v)) for v in VECTORS) == 1940


def test_webp_padding_is_what_differs():
    """A WebP key frame: our partitions are libvpx-flushed (shorter), the original zero-padded."""
    path = WEBP_IVF_DIR / "blue-purple-pink.ivf"
    data = frames_of(path)[0]
    ours = write_frame(DecoderState(), parse_frame(DecoderState(), data))
    assert ours != data and len(ours) < len(data)
    _zero_padded_only(data, ours, DecoderState())


# ---------------------------------------------------------------------------------------------
# Section 7: the bool encoder

TREES = [(tables.COEFF_TREE, 11), (tables.BMODE_TREE, 9), (tables.KF_YMODE_TREE, 4), (tables.YMODE_TREE, 4),
         (tables.UV_MODE_TREE, 3), (tables.SEGMENT_TREE, 3), (tables.MV_REF_TREE, 4),
         (tables.SMALL_MV_TREE, 7), (tables.SPLIT_MV_TREE, 3), (tables.SUB_MV_REF_TREE, 3)]


@st.composite
def bool_ops(draw, max_ops=300):
    """('bool', prob, bit) / ('lit', n, value) / ('tree', k, probs, leaf), leaning on extreme
    probabilities (long runs of likely bits make 0xff bytes, and carries through them)."""
    ops = []
    skew = draw(st.booleans())
    for _ in range(draw(st.integers(0, max_ops))):
        kind = draw(st.sampled_from(["bool"] * 4 + ["lit", "tree"]))
        if kind == "bool":
            prob = draw(st.one_of(st.integers(0, 255), st.sampled_from([1, 2, 128, 254, 255])))
            bit = draw(st.integers(0, 1)) if not skew else int(prob < 128)
            ops.append(("bool", prob, bit))
        elif kind == "lit":
            n = draw(st.integers(0, 24))
            ops.append(("lit", n, draw(st.integers(0, (1 << n) - 1))))
        else:
            k = draw(st.integers(0, len(TREES) - 1))
            tree, nprobs = TREES[k]
            probs = draw(st.lists(st.integers(0, 255), min_size=nprobs, max_size=nprobs))
            leaves = sorted(-int(v) for v in tree if v <= 0)
            ops.append(("tree", k, probs, draw(st.sampled_from(leaves))))
    return ops


def _naive_encode(ops, flush="libvpx") -> bytes:
    enc = naive.BoolEncoder()
    for op in ops:
        if op[0] == "bool":
            enc.write_bool(op[1], op[2])
        elif op[0] == "lit":
            enc.write_literal(op[2], op[1])
        else:
            enc.write_tree(TREES[op[1]][0], op[2], op[3])
    return enc.flush_like_libvpx() if flush == "libvpx" else enc.flush()


def _kernel_encode(ops, capacity=1) -> bytes:
    """Through the kernels directly, from a tiny buffer so that growing it is exercised."""
    es = np.zeros(ENC_STATE_SIZE, np.int64)
    be_init(es)
    buf = np.zeros(capacity, np.uint8)
    for op in ops:
        if op[0] == "bool":
            buf = be_write(es, buf, op[2], op[1])
        elif op[0] == "lit":
            buf = be_literal(es, buf, op[1], op[2])
        else:
            buf = be_tree(es, buf, TREES[op[1]][0], np.array(op[2], np.uint8), op[3])
        assert 128 <= es[E_RANGE] <= 255
    buf = be_flush(es, buf)
    return buf[:es[E_POS]].tobytes()


def _check_decodes(data: bytes, ops) -> None:
    buf = np.frombuffer(data, np.uint8)
    s = np.zeros(STATE_SIZE, np.int64)
    bd_init(s, buf, 0, len(buf))
    for op in ops:
        if op[0] == "bool":
            assert bd_read(s, buf, op[1]) == op[2]
        elif op[0] == "lit":
            assert bd_literal(s, buf, op[1]) == op[2]
        else:
            assert bd_tree(s, buf, TREES[op[1]][0], np.array(op[2], np.uint8)) == op[3]


@pytest.mark.nojit
@FAST
@given(ops=bool_ops())
def test_bool_encoder_kernels_match_naive(ops):
    """Kernels = the RFC's encoder (with libvpx's flush), byte for byte; the decoders read it back."""
    data = _kernel_encode(ops)
    assert data == _naive_encode(ops)
    _check_decodes(data, ops)
    # The RFC's own flush pads differently but codes the same bools.
    _check_decodes(_naive_encode(ops, flush="rfc"), ops)


def _carry_ops(rng, episodes: int) -> list:
    """Bools that make carries run back through 0xff bytes (random bools almost never do).

    Tracks the coding interval exactly ([low, low + range) as Python ints, scaled up by every
    renormalising shift) and picks each bit so that the interval keeps straddling a point B: low
    then creeps up to B from below, its pending bits all ones, so 0xff bytes go out. A final 1
    lifts low past B, which carries through them."""
    ops, low, r = [], 0, 255

    def put(prob, bit):
        nonlocal low, r
        split = 1 + (((r - 1) * prob) >> 8)
        if bit:
            low, r = low + split, r - split
        else:
            r = split
        shift = 0
        while r < 128:
            low, r, shift = low << 1, r << 1, shift + 1
        ops.append(("bool", prob, bit))
        return shift

    for _ in range(episodes):
        for _ in range(int(rng.integers(0, 30))):
            put(int(rng.integers(0, 256)), int(rng.integers(0, 2)))
        b = low + r // 2
        for _ in range(int(rng.integers(16, 80))):
            split = 1 + (((r - 1) * 128) >> 8)
            b <<= put(128, int(low + split <= b))
        while low < b:
            split = 1 + (((r - 1) * 255) >> 8)
            b <<= put(255 if low + split >= b else 128, 1)
    return ops


def test_bool_encoder_carries_through_ff_bytes():
    """A carry that runs back through 0xff bytes (rare) happens and is handled like the RFC's."""
    rng = np.random.default_rng(7)
    ops = _carry_ops(rng, 40)
    enc = naive.BoolEncoder()
    for _, p, b in ops:
        enc.write_bool(p, b)
    expected = enc.flush_like_libvpx()
    assert enc.carries_through_ff > 10
    assert _kernel_encode(ops, capacity=3) == expected
    _check_decodes(expected, ops)


@FAST
@given(values=st.lists(st.tuples(st.integers(1, 7), st.integers(-127, 127), st.sampled_from([None, True, False])),
                       max_size=30))
def test_bool_encoder_class_fields(values):
    """``BoolEncoder``'s header fields read back through ``BoolDecoder``."""
    be = BoolEncoder(capacity=1)
    fields = []
    for n, v, coded in values:
        n = max(n, abs(v).bit_length())
        if coded is False:
            v = 0
        be.optional_signed(n, v, coded)
        be.literal(n, abs(v))
        be.signed(n, v)
        be.flag(v > 0)
        be.tree(tables.UV_MODE_TREE, [10, 128, 250], abs(v) % 4)
        fields.append((n, v))
    data = be.finish()
    bd = BoolDecoder(np.frombuffer(data, np.uint8), 0, len(data))
    for n, v in fields:
        assert bd.optional_signed(n) == v
        assert bd.literal(n) == abs(v)
        assert bd.signed(n) == v
        assert bd.flag() == (v > 0)
        assert bd_tree(bd.st, bd.data, tables.UV_MODE_TREE, np.array([10, 128, 250], np.uint8)) == abs(v) % 4
    assert not bd.overrun()


def test_bool_encoder_rejects_bad_values():
    be = BoolEncoder()
    with pytest.raises(ValueError, match="does not fit"):
        be.literal(3, 8)
    with pytest.raises(ValueError, match="not a leaf"):
        be.tree(tables.UV_MODE_TREE, [1, 2, 3], 7)
    with pytest.raises(ValueError, match="marked as not coded"):
        be.optional_signed(4, 3, False)


# ---------------------------------------------------------------------------------------------
# Writers against readers (and the naive token writer)


def test_mv_component_every_value():
    """Section 17: every codable difference, -1023..1023, through the writer and the reader."""
    probs = np.array(tables.DEFAULT_MV_PROBS[0])
    es = np.zeros(ENC_STATE_SIZE, np.int64)
    be_init(es)
    buf = np.zeros(16, np.uint8)
    values = list(range(-1023, 1024))
    for v in values:
        buf = write_mv_component(es, buf, v, probs)
    buf = be_flush(es, buf)
    data = buf[:es[E_POS]]
    s = np.zeros(STATE_SIZE, np.int64)
    bd_init(s, data, 0, len(data))
    assert [read_mv_component(s, data, probs) for _ in values] == values


@st.composite
def token_blocks(draw):
    btype = draw(st.integers(0, 3))
    first = 1 if btype == tables.TYPE_Y_AFTER_Y2 else 0
    eob = draw(st.sampled_from([0] + list(range(first + 1, 17))))
    level = st.one_of(st.integers(-4, 4), st.integers(-2114, 2114), st.sampled_from([5, 6, 7, 10, 11, 18, 19, 34,
                                                                                     35, 66, 67, 2114, -2114]))
    block = np.zeros(16, np.int16)
    for i in range(first, eob):
        block[tables.ZIGZAG[i]] = draw(level)
    if 0 < eob < 16 and block[tables.ZIGZAG[eob - 1]] == 0:
        block[tables.ZIGZAG[eob - 1]] = draw(st.sampled_from([1, -1, 3, 300]))
    return btype, draw(st.integers(0, 2)), block, eob


@pytest.mark.nojit
@FAST
@given(blocks=st.lists(token_blocks(), min_size=1, max_size=8), seed=st.integers(0, 2**32 - 1))
def test_write_block_matches_naive_and_reads_back(blocks, seed):
    """Section 13: the unrolled token writer = the naive tree walk, and ``_read_block`` inverts it."""
    probs = np.random.default_rng(seed).integers(1, 256, (4, 8, 3, 11)).astype(np.uint8)
    es = np.zeros(ENC_STATE_SIZE, np.int64)
    be_init(es)
    buf = np.zeros(8, np.uint8)
    enc = naive.BoolEncoder()
    for btype, ctx, block, eob in blocks:
        assert check_block(block, eob, btype) == 0
        buf = be_grow(buf, es[E_POS] + BLOCK_MAX_BYTES)
        _write_block(es, buf, probs, btype, ctx, block.reshape(1, 1, 1, 16), 0, 0, 0, eob)
        naive.write_block_tokens(enc, probs.tolist(), btype, ctx, block, eob)
    buf = be_flush(es, buf)
    data = buf[:es[E_POS]]
    assert data.tobytes() == enc.flush_like_libvpx()
    s = np.zeros(STATE_SIZE, np.int64)
    bd_init(s, data, 0, len(data))
    for btype, ctx, block, eob in blocks:
        out = np.zeros(16, np.int16)
        assert _read_block(s, data, probs, btype, ctx, out) == eob
        assert np.array_equal(out, block)


def test_check_block_rejects_uncodable_blocks():
    block = np.zeros(16, np.int16)
    block[tables.ZIGZAG[3]] = 5
    assert check_block(block, 4, tables.TYPE_UV) == 0
    assert check_block(block, 3, tables.TYPE_UV) != 0          # a nonzero past eob
    assert check_block(block, 5, tables.TYPE_UV) != 0          # EOB after a zero token
    assert check_block(block, 16, tables.TYPE_UV) == 0         # zeros up to the end are codable
    assert check_block(block, 1, tables.TYPE_Y_AFTER_Y2) != 0  # eob 1 impossible without DC
    block[0] = 1
    assert check_block(block, 4, tables.TYPE_Y_AFTER_Y2) != 0  # DC in a block after Y2
    block[0] = 2115
    assert check_block(block, 4, tables.TYPE_Y_WITH_DC) != 0   # beyond DCT_CAT6


def _finish(es, buf) -> np.ndarray:
    buf = be_flush(es, buf)
    return buf[:es[E_POS]].copy()


@st.composite
def mode_params(draw):
    key = draw(st.booleans())
    prob = st.integers(0, 255)
    return dict(
        key_frame=key, update_map=draw(st.booleans()), seg_probs=np.array(draw(st.lists(prob, min_size=3, max_size=3)),
                                                                        np.uint8),
        skip_enabled=draw(st.booleans()), prob_skip=draw(prob), prob_intra=draw(prob), prob_last=draw(prob),
        prob_golden=draw(prob), ymode_probs=np.array(draw(st.lists(prob, min_size=4, max_size=4)), np.uint8),
        uv_mode_probs=np.array(draw(st.lists(prob, min_size=3, max_size=3)), np.uint8),
        mv_probs=np.array(draw(st.lists(st.integers(1, 255), min_size=38, max_size=38)), np.uint8).reshape(2, 19),
        sign_bias=np.array([0, 0, draw(st.integers(0, 1)), draw(st.integers(0, 1))], np.int64),
    )


def _read_modes(data, p, rows, cols):
    m = allocate_mode_info(rows, cols)
    seg = np.zeros((rows, cols), np.uint8)
    s = np.zeros(STATE_SIZE, np.int64)
    bd_init(s, data, 0, len(data))
    read_modes(s, data, p["key_frame"], p["update_map"], p["seg_probs"], seg, p["skip_enabled"], p["prob_skip"],
               p["prob_intra"], p["prob_last"], p["prob_golden"], p["ymode_probs"], p["uv_mode_probs"],
               p["mv_probs"], p["sign_bias"], *m.values())
    return m, seg


@FAST
@given(p=mode_params(), data=st.binary(min_size=1, max_size=400).filter(lambda d: d[0] != 0xFF),
       rows=st.integers(1, 5), cols=st.integers(1, 6))
def test_write_modes_inverts_read_modes(p, data, rows, cols):
    """Whatever ``read_modes`` makes of random bytes (split MVs, coinciding vectors and all),
    ``write_modes`` codes back to the same mode arrays and segment map."""
    m, seg = _read_modes(np.frombuffer(data, np.uint8), p, rows, cols)
    es = np.zeros(ENC_STATE_SIZE, np.int64)
    be_init(es)
    buf, status, r, c = write_modes(es, np.zeros(4, np.uint8), p["key_frame"], p["update_map"], p["seg_probs"], seg,
                                    p["skip_enabled"], p["prob_skip"], p["prob_intra"], p["prob_last"],
                                    p["prob_golden"], p["ymode_probs"], p["uv_mode_probs"], p["mv_probs"],
                                    p["sign_bias"], *m.values())
    assert status == 0, (status, r, c)
    m2, seg2 = _read_modes(_finish(es, buf), p, rows, cols)
    if p["update_map"]:
        assert np.array_equal(seg, seg2)
    for k in m:
        assert np.array_equal(m[k], m2[k]), k


@FAST
@given(data=st.lists(st.binary(min_size=1, max_size=300).filter(lambda d: d[0] != 0xFF), min_size=1, max_size=4),
       rows=st.integers(1, 5), cols=st.integers(1, 5), seed=st.integers(0, 2**32 - 1))
def test_write_tokens_inverts_read_tokens(data, rows, cols, seed):
    """Random partitions through ``read_tokens``, then ``write_tokens`` per partition, read again."""
    rng = np.random.default_rng(seed)
    probs = rng.integers(0, 256, (4, 8, 3, 11)).astype(np.uint8)
    ymodes = rng.choice([tables.DC_PRED, tables.B_PRED, tables.SPLITMV, tables.NEWMV], (rows, cols)).astype(np.int8)
    skips = (rng.random((rows, cols)) < 0.2).astype(np.uint8)

    def read(parts):
        buf = np.frombuffer(b"".join(parts), np.uint8)
        pst = np.zeros((len(parts), STATE_SIZE), np.int64)
        pos = 0
        for i, q in enumerate(parts):
            bd_init(pst[i], buf, pos, pos + len(q))
            pos += len(q)
        coeffs = np.zeros((rows, cols, 25, 16), np.int16)
        eobs = np.zeros((rows, cols, 25), np.uint8)
        read_tokens(buf, pst, probs, ymodes, skips, coeffs, eobs)
        return coeffs, eobs

    coeffs, eobs = read(data)
    parts = []
    for i in range(len(data)):
        es = np.zeros(ENC_STATE_SIZE, np.int64)
        be_init(es)
        buf, status, *_ = write_tokens(es, np.zeros(4, np.uint8), i, len(data), probs, ymodes, skips, coeffs, eobs)
        assert status == 0
        parts.append(_finish(es, buf).tobytes())
    coeffs2, eobs2 = read(parts)
    assert np.array_equal(coeffs, coeffs2) and np.array_equal(eobs, eobs2)


def test_derive_eobs_is_shortest_coding():
    ymodes = np.full((1, 1), tables.DC_PRED, np.int8)
    coeffs = np.zeros((1, 1, 25, 16), np.int16)
    coeffs[0, 0, 3, tables.ZIGZAG[5]] = -7
    coeffs[0, 0, 24, 0] = 1
    eobs = np.full((1, 1, 25), 9, np.uint8)
    derive_eobs(ymodes, coeffs, eobs)
    assert eobs[0, 0, 3] == 6 and eobs[0, 0, 24] == 1 and eobs[0, 0].sum() == 7


@FAST
@given(data=st.binary(min_size=2, max_size=600).filter(lambda d: d[0] != 0xFF), key=st.booleans())
def test_write_frame_header_inverts_read(data, key):
    """Random first-partition bytes through ``read_frame_header``; written back, read again: equal,
    the as-coded fields included (so the bits are the same bits)."""
    tag = FrameTag(key, 0, True, 0, 32, 32) if key else FrameTag(False, 0, True, 0)
    state = DecoderState()
    bd = BoolDecoder(np.frombuffer(data, np.uint8), 0, len(data))
    hdr = read_frame_header(bd, tag, state)
    be = BoolEncoder()
    write_frame_header(be, hdr, state)
    out = be.finish()
    hdr2 = read_frame_header(BoolDecoder(np.frombuffer(out, np.uint8), 0, len(out)), tag, state)
    for f in dataclasses.fields(hdr):
        a, b = getattr(hdr, f.name), getattr(hdr2, f.name)
        assert np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b, f.name


def test_frame_tag_round_trip():
    for tag in (FrameTag(True, 0, True, 1234, 176, 144, 1, 2), FrameTag(False, 3, False, (1 << 19) - 1)):
        assert FrameTag.read(tag.write()) == tag
    with pytest.raises(ValueError, match="19 bits"):
        FrameTag(False, 0, True, 1 << 19).write()


# ---------------------------------------------------------------------------------------------
# Edited frames: our decoder and vpxdec must agree

INTER_STREAM = VP8_DIR / "vp80-03-segmentation-1413.ivf"  # 96x96, 8 partitions, segments, split MVs


def _edited_stream(path, edit, upto: int):
    """The first ``upto`` frames of ``path``, each parsed, edited by ``edit(i, frame, state)`` and
    written; states follow the written frames. Returns the frames and our decoded pictures."""
    state = DecoderState()
    out, images = [], []
    for i, data in enumerate(frames_of(path)[:upto]):
        frame = edit(i, parse_frame(state, data), state)
        written = write_frame(state, frame)
        state, image = decode_frame(state, written)
        out.append(written)
        images.append(image)
    return out, images


def _vpxdec_images(tmp_path, frames, width, height) -> list[bytes]:
    ivf = tmp_path / "edited.ivf"
    with IvfWriter(ivf, IvfHeader(width=width, height=height)) as w:
        for f in frames:
            w.write(f)
    raw = tmp_path / "out.i420"
    subprocess.run(["vpxdec", "--i420", "-o", str(raw), str(ivf)], check=True, capture_output=True, timeout=120)
    size = width * height + 2 * ((width + 1) // 2) * ((height + 1) // 2)
    data = raw.read_bytes()
    return [data[i:i + size] for i in range(0, len(data), size)]


def _zero_coeffs(i, f: ParsedFrame, state):
    if i % 2 == 0:
        return f
    return dataclasses.replace(f, coeffs=np.zeros_like(f.coeffs), eobs=np.zeros_like(f.eobs))


def _zero_mvs(i, f: ParsedFrame, state):
    """Every inter macroblock becomes ZEROMV with a zero vector."""
    if f.tag.key_frame:
        return f
    m = {k: v.copy() for k, v in f.modes.items()}
    inter = m["ref"] > 0
    # A SPLITMV macroblock's luma blocks carry their DC; a ZEROMV one's go through Y2: drop them.
    was_split = (m["ymode"] == tables.SPLITMV)[1:, 1:]
    coeffs, eobs = f.coeffs.copy(), f.eobs.copy()
    coeffs[was_split] = 0
    eobs[was_split] = 0
    m["ymode"][inter] = tables.ZEROMV
    m["mvs"][inter] = 0
    return dataclasses.replace(f, modes=m, coeffs=coeffs, eobs=eobs)


def _repartition(i, f: ParsedFrame, state):
    """8 token partitions, no skip flags, every probability re-sent: same pictures, other bytes."""
    m = {k: v.copy() for k, v in f.modes.items()}
    m["skip"][:] = 0
    hdr = dataclasses.replace(f.header, log2_partitions=3, skip_enabled=False, prob_skip=0,
                              coeff_updated=None)
    return dataclasses.replace(f, header=hdr, modes=m)


def _new_bmodes(i, f: ParsedFrame, state):
    """Key frames: every macroblock B_PRED with random subblock modes (contexts change everywhere)."""
    if not f.tag.key_frame:
        return f
    rng = np.random.default_rng(i)
    m = {k: v.copy() for k, v in f.modes.items()}
    m["ymode"][1:, 1:] = tables.B_PRED
    m["bmodes"][1:, 1:] = rng.integers(0, 10, m["bmodes"][1:, 1:].shape)
    # B_PRED macroblocks have no Y2: move nothing, just drop the luma DCs' Y2 block.
    coeffs, eobs = f.coeffs.copy(), f.eobs.copy()
    coeffs[:, :, 24] = 0
    derive_eobs(m["ymode"][1:, 1:], coeffs, eobs)
    return dataclasses.replace(f, modes=m, coeffs=coeffs, eobs=eobs)


@pytest.mark.parametrize("edit", [_zero_coeffs, _zero_mvs, _new_bmodes])
def test_edited_frames_decode(edit):
    """Edited frames write, decode in our decoder, and parse back to what was written."""
    frames, images = _edited_stream(INTER_STREAM, edit, 8)
    state = DecoderState()
    for data in frames:
        assert write_frame(state, parse_frame(state, data)) == data
        state = next_state(state, data)
    assert all(im is None or isinstance(im, Image) for im in images)


def test_repartitioned_stream_decodes_to_the_same_pictures():
    frames, images = _edited_stream(INTER_STREAM, _repartition, 8)
    state = DecoderState()
    for orig, data, image in zip(frames_of(INTER_STREAM), frames, images):
        assert data != orig and parse_frame_syntax(state, data).header.log2_partitions == 3
        state, expected = decode_frame(state, orig)
        assert (image is None and expected is None) or image == expected


@requires_tool("vpxdec")
@pytest.mark.parametrize("edit", [_zero_coeffs, _zero_mvs, _repartition, _new_bmodes])
def test_edited_frames_match_vpxdec(edit, tmp_path):
    frames, images = _edited_stream(INTER_STREAM, edit, 8)
    tag = FrameTag.read(frames[0])
    theirs = _vpxdec_images(tmp_path, frames, tag.width, tag.height)
    ours = [im.to_i420() for im in images if im is not None]
    assert len(ours) == len(theirs)
    for k, (a, b) in enumerate(zip(ours, theirs)):
        assert a == b, f"shown frame {k} differs from vpxdec"


def _hand_made_stream():
    """A stream built from scratch with ``new_frame_header`` / ``new_frame``, as an encoder would:
    a key frame of flat DC blocks, then an interframe mixing NEWMV, SPLITMV and intra macroblocks."""
    rng = np.random.default_rng(1)
    state = DecoderState()
    tag = FrameTag(True, 0, True, 0, 40, 40)
    f = new_frame(state, new_frame_header(state, tag, 40))
    f.coeffs[:, :, 24, 0] = rng.integers(-60, 60, f.coeffs.shape[:2])
    f.coeffs[:, :, 16:24, 0] = rng.integers(-30, 30, f.coeffs.shape[:2] + (8,))
    derive_eobs(f.modes["ymode"][1:, 1:], f.coeffs, f.eobs)
    frames = [write_frame(state, f)]
    state = next_state(state, frames[0])
    hdr = new_frame_header(state, FrameTag(False, 0, True, 0), 50, skip_enabled=True, prob_skip=200)
    f = new_frame(state, hdr)
    m = f.modes
    m["ref"][1:, 1:] = tables.LAST_FRAME
    m["ymode"][1:, 1:] = tables.NEWMV
    m["mvs"][1:, 1:] = rng.integers(-40, 40, (3, 3, 1, 2))
    m["ymode"][2, 2] = tables.SPLITMV
    m["partitioning"][2, 2] = tables.MV_QUARTERS
    for k, q in enumerate(tables.SPLIT_MV_PARTITIONS[tables.MV_QUARTERS]):
        m["mvs"][2, 2, k] = (4 * int(q), -3 * int(q))
    m["ref"][3, 1] = tables.INTRA_FRAME
    m["ymode"][3, 1] = tables.TM_PRED
    m["mvs"][3, 1] = 0
    m["skip"][1, 1:] = 1
    f.coeffs[1:, :, :16, 5] = rng.integers(-9, 9, (2, 3, 16))
    derive_eobs(m["ymode"][1:, 1:], f.coeffs, f.eobs)
    frames.append(write_frame(state, f))
    return frames


def test_hand_made_frames_decode():
    frames = _hand_made_stream()
    state = DecoderState()
    for data in frames:
        state, image = decode_frame(state, data)
        assert image is not None and image.width == 40
    # Parse gives back what was written.
    state = DecoderState()
    for data in frames:
        assert write_frame(state, parse_frame(state, data)) == data
        state = next_state(state, data)


@requires_tool("vpxdec")
def test_hand_made_frames_match_vpxdec(tmp_path):
    frames = _hand_made_stream()
    state = DecoderState()
    ours = []
    for data in frames:
        state, image = decode_frame(state, data)
        ours.append(image.to_i420())
    assert _vpxdec_images(tmp_path, frames, 40, 40) == ours


def test_write_frame_rejects_inconsistent_frames():
    data = frames_of(INTER_STREAM)[0]
    state = DecoderState()
    f = parse_frame(state, data)
    state1 = next_state(state, data)
    g = parse_frame(state1, frames_of(INTER_STREAM)[1])
    m = {k: v.copy() for k, v in g.modes.items()}
    r, c = np.argwhere(m["ref"][1:, 1:] > 0)[0] + 1
    m["ymode"][r, c] = tables.ZEROMV
    m["mvs"][r, c] = 4
    with pytest.raises(ValueError, match=rf"macroblock \({r - 1}, {c - 1}\): .* implies"):
        write_frame(state1, dataclasses.replace(g, modes=m))
    m["mvs"][r, c, 3] = 0
    with pytest.raises(ValueError, match="16 subblock vectors differ"):
        write_frame(state1, dataclasses.replace(g, modes=m))
    bad = f.coeffs.copy()
    bad[0, 0, 0, 15] = 5000
    with pytest.raises(ValueError, match=r"macroblock \(0, 0\)"):
        write_frame(state, dataclasses.replace(f, coeffs=bad, eobs=np.full_like(f.eobs, 16)))
    with pytest.raises(ValueError, match="must be a"):
        write_frame(state, dataclasses.replace(f, eobs=f.eobs[:, :1]))
    seg = dataclasses.replace(f.header.loop_filter, ref_deltas=(9, 9, 9, 9), update_deltas=False)
    with pytest.raises(ValueError, match="not coded"):
        write_frame(state, dataclasses.replace(f, header=dataclasses.replace(f.header, loop_filter=seg)))
