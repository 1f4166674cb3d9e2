"""Bit-cost estimation for the encoder's decisions, in 1/256 bit (RFC 6386 sections 7, 8.1, 11, 13,
16 and 17).

A bool coded with probability p (the 8-bit chance, out of 256, that it is 0) costs -log2(p/256) bits
for a 0 and -log2(1 - p/256) for a 1. Section 7's coder spends that on average when the bools
follow their probabilities (within 0.05% measured; its rounded split drifts by about 1% on bools
that ignore them). Every cost here is a sum of such per-bool costs, each rounded to 1/256 bit
once, in ``BOOL_COST``; so a cost built from the tables equals the sum over its bools.

Costs that depend only on a frame's probabilities come as tables filled once per frame
(``token_costs``, ``mv_component_costs``, the mode helpers); the per-block kernels
(``block_token_cost``, and the RD quantizer in ``quantize.py``) only look them up.

Tokens are numbered as in ``tables.COEFF_TREE``: 0 ZERO, 1 ONE, 2 TWO, 3 THREE, 4 FOUR, 5..10
DCT_CAT1..DCT_CAT6, 11 DCT_EOB.
"""

import numpy as np

from .jit import njit
from .tables import (BMODE_PROBS, BMODE_TREE, CAT_BASE, CAT_BITS, CAT_PROBS, COEFF_BANDS, COEFF_TREE,
                     DCT_EOB, KF_BMODE_PROBS, KF_UV_MODE_PROBS, KF_YMODE_PROBS, KF_YMODE_TREE,
                     MODE_CONTEXTS, MV_LONG_BITS, MV_REF_TREE, MVP_BITS, MVP_IS_SHORT, MVP_SHORT,
                     MVP_SIGN, NUM_TOKENS, SMALL_MV_TREE, SPLIT_MV_PROBS, SPLIT_MV_TREE,
                     SUB_MV_REF_PROBS, SUB_MV_REF_TREE, TYPE_Y_AFTER_Y2, UV_MODE_TREE, YMODE_TREE,
                     ZIGZAG)

#: Costs are in units of 1/COST_ONE_BIT bit.
COST_ONE_BIT = 256


def _bool_cost_table() -> np.ndarray:
    # A probability of 0 (possible for coefficient probabilities, which are 8-bit literals) still
    # gives the 0 a sliver of the range (split = 1 in section 7.3); it is costed as p = 1.
    p = np.maximum(np.arange(256, dtype=np.float64), 1.0) / 256.0
    cost = np.empty((256, 2), np.int32)
    cost[:, 0] = np.rint(-np.log2(p) * COST_ONE_BIT)
    cost[:, 1] = np.rint(-np.log2(1.0 - p) * COST_ONE_BIT)
    cost.setflags(write=False)
    return cost


#: BOOL_COST[p, b]: cost of coding bool b with probability p (0..255) that it is 0.
BOOL_COST = _bool_cost_table()

#: Largest coefficient magnitude the token alphabet can code: DCT_CAT6 is 67 plus 11 extra bits.
MAX_LEVEL = int(CAT_BASE[5]) + (1 << int(CAT_BITS[5])) - 1  # 2114

#: The shape of a ``token_costs`` table: [block type, band, context, after_zero, token].
TOKEN_COST_SHAPE = (4, 8, 3, 2, NUM_TOKENS)
#: Cost standing for "cannot be coded here": DCT_EOB straight after a ZERO token (section 13.2).
NOT_CODABLE = 1 << 24

#: Largest motion vector component magnitude (quarter pixels) section 17's long form codes.
MV_MAX = (1 << MV_LONG_BITS) - 1  # 1023


def _level_tables():
    """Token of each magnitude 0..MAX_LEVEL, and the cost of its extra bits plus its sign."""
    v = np.arange(MAX_LEVEL + 1)
    cat = np.searchsorted(CAT_BASE, v, side="right") - 1  # -1 below DCT_CAT1's 5
    token = np.where(v <= 4, v, 5 + cat).astype(np.int8)
    extra = np.where(v > 0, BOOL_COST[128, 0], 0).astype(np.int32)  # the sign, at probability 128
    for k in range(6):
        sel = cat == k
        e = v[sel] - int(CAT_BASE[k])
        n = int(CAT_BITS[k])
        for j in range(n):  # most significant bit first
            extra[sel] += BOOL_COST[CAT_PROBS[k, j], (e >> (n - 1 - j)) & 1]
    token.setflags(write=False)
    extra.setflags(write=False)
    return token, extra


#: LEVEL_TOKEN[v]: the token that codes magnitude v; LEVEL_EXTRA_COST[v]: cost of its DCT_CAT
#: extra bits and its sign bit (0 for v = 0, which has no sign).
LEVEL_TOKEN, LEVEL_EXTRA_COST = _level_tables()


@njit(cache=True)
def bool_cost(p, b):
    """Cost of coding bool ``b`` (0 or 1) with probability ``p`` (0..255) that it is 0."""
    return BOOL_COST[p, b]


@njit(cache=True)
def _entry_cost(tree, probs, k):
    """Cost of taking entry ``k`` of ``tree`` (bit ``k & 1`` at node ``k & ~1``) from the root; -1 if
    the entry cannot be reached. Walks up: the parent of node ``n`` is the entry that holds ``n``."""
    cost = 0
    while True:
        node = k & ~1
        cost += BOOL_COST[probs[node >> 1], k & 1]
        if node == 0:
            return cost
        k = -1
        for j in range(tree.shape[0]):
            if tree[j] == node:
                k = j
                break
        if k < 0:
            return -1


@njit(cache=True)
def tree_cost(tree, probs, value):
    """Cost of coding leaf ``value`` of ``tree`` (section 8.1 tree_index form: node ``i`` is decided
    by ``probs[i >> 1]``; an entry ``<= 0`` is the leaf ``-entry``); -1 if it is not a leaf."""
    if value < 0:
        return -1
    for j in range(tree.shape[0]):
        if tree[j] == -value:
            return _entry_cost(tree, probs, j)
    return -1


@njit(cache=True)
def tree_costs(tree, probs, out):
    """Cost of every leaf of ``tree`` with ``probs`` into ``out[leaf]``; entries of ``out`` for
    values that are not leaves are left alone. Allocates nothing (trees have at most 22 entries)."""
    for j in range(tree.shape[0]):
        if tree[j] <= 0:
            out[-tree[j]] = _entry_cost(tree, probs, j)


@njit(cache=True)
def token_costs(coeff_probs, out):
    """Section 13.2: the cost of every token for every block type, band and context, from the
    frame's coefficient probabilities ``coeff_probs`` (uint8[4, 8, 3, 11]).

    ``out`` (int32, TOKEN_COST_SHAPE): ``out[t, b, c, 0, tok]`` codes ``tok`` from the root of
    COEFF_TREE; ``out[t, b, c, 1, tok]`` from node 2, as a token right after a ZERO is coded (its
    DCT_EOB entry is NOT_CODABLE). Extra bits and sign are not included (LEVEL_EXTRA_COST).
    """
    reach = np.zeros(COEFF_TREE.shape[0], np.int32)
    for t in range(4):
        for band in range(8):
            for ctx in range(3):
                p = coeff_probs[t, band, ctx]
                for after_zero in range(2):
                    start = 2 if after_zero else 0
                    reach[start] = 0
                    if after_zero:
                        out[t, band, ctx, 1, DCT_EOB] = NOT_CODABLE
                    for i in range(start, COEFF_TREE.shape[0], 2):
                        for b in range(2):
                            c = reach[i] + BOOL_COST[p[i >> 1], b]
                            nxt = COEFF_TREE[i + b]
                            if nxt > 0:
                                reach[nxt] = c
                            else:
                                out[t, band, ctx, after_zero, -nxt] = c


@njit(cache=True, _nrt=False)
def block_token_cost(levels, eob, btype, ctx, tok_cost):
    """Exact cost of the tokens a writer emits for one block (section 13), and the context the
    block leaves for its right and lower neighbours.

    ``levels``: int16[16] quantized levels in raster order (as ``tokens.py`` stores them); ``eob``:
    one past the zigzag index of the last nonzero level (0 when there is none); ``btype`` (0-3) and
    ``ctx`` (0-2, the above plus left neighbour contexts) select the probabilities; ``tok_cost`` is
    the frame's ``token_costs`` table. Tokens run from the first coefficient (1 for a Y block after
    Y2, else 0) to ``eob - 1``, then DCT_EOB unless ``eob`` is 16. Each token is costed in its band,
    with context 0, 1 or 2 after a ZERO, a ONE or anything larger, and without the DCT_EOB branch
    after a ZERO. Magnitudes above MAX_LEVEL are costed as MAX_LEVEL (quantize.py never makes them).

    Returns (cost, left_ctx): ``left_ctx`` is 1 when the block coded at least one token before
    DCT_EOB, as the decoder sets the contexts. A malformed pair whose ``levels[ZIGZAG[eob - 1]]``
    is 0 costs at least NOT_CODABLE: DCT_EOB cannot follow a ZERO.
    """
    first = 1 if btype == TYPE_Y_AFTER_Y2 else 0
    end = 16 if eob > 16 else eob
    cost = 0
    c = ctx
    after_zero = 0
    i = first
    while i < end:
        v = np.int32(levels[ZIGZAG[i]])
        if v < 0:
            v = -v
        if v > MAX_LEVEL:
            v = MAX_LEVEL
        cost += tok_cost[btype, COEFF_BANDS[i], c, after_zero, LEVEL_TOKEN[v]] + LEVEL_EXTRA_COST[v]
        c = 2 if v > 1 else v
        after_zero = 1 if v == 0 else 0
        i += 1
    if i < 16:
        cost += tok_cost[btype, COEFF_BANDS[i], c, after_zero, DCT_EOB]
    return cost, (1 if i > first else 0)


@njit(cache=True)
def mv_component_costs(p, out):
    """Section 17: cost of coding each motion vector component value with the component's 19
    probabilities ``p`` into ``out[v + MV_MAX]`` for v in -MV_MAX..MV_MAX (int32[2 * MV_MAX + 1]).

    ``v`` is what ``modes.read_mv_component`` returns: the difference from the best predictor, in
    quarter pixels. Magnitudes below 8 use the short tree; the rest the long form, whose bit 3 is
    implicit when no higher bit is set. The sign is coded for nonzero values only.
    """
    short = np.zeros(8, np.int32)
    tree_costs(SMALL_MV_TREE, p[MVP_SHORT:MVP_SHORT + 7], short)
    for x in range(MV_MAX + 1):
        if x < 8:
            c = BOOL_COST[p[MVP_IS_SHORT], 0] + short[x]
        else:
            c = BOOL_COST[p[MVP_IS_SHORT], 1]
            for i in range(3):
                c += BOOL_COST[p[MVP_BITS + i], (x >> i) & 1]
            for i in range(MV_LONG_BITS - 1, 3, -1):
                c += BOOL_COST[p[MVP_BITS + i], (x >> i) & 1]
            if x & 0xFFF0:
                c += BOOL_COST[p[MVP_BITS + 3], (x >> 3) & 1]
        if x == 0:
            out[MV_MAX] = c
        else:
            out[MV_MAX + x] = c + BOOL_COST[p[MVP_SIGN], 0]
            out[MV_MAX - x] = c + BOOL_COST[p[MVP_SIGN], 1]


# ---------------------------------------------------------------------------------------------
# Mode costs (sections 11 and 16). Each fills a table indexed by mode number (tables.DC_PRED ...).


@njit(cache=True)
def ymode_costs(key_frame, ymode_probs, out):
    """Section 11.2 / 16.1: cost of each luma mode DC_PRED..B_PRED into ``out`` (int32[5]).

    Key frames use the fixed key-frame tree and probabilities (``ymode_probs`` is ignored); inter
    frames the frame's ``ymode_probs``, and the cost excludes the intra/inter bool
    (``ref_frame_costs``).
    """
    if key_frame:
        tree_costs(KF_YMODE_TREE, KF_YMODE_PROBS, out)
    else:
        tree_costs(YMODE_TREE, ymode_probs, out)


@njit(cache=True)
def uvmode_costs(key_frame, uv_mode_probs, out):
    """Section 11.2 / 16.1: cost of each chroma mode DC_PRED..TM_PRED into ``out`` (int32[4]);
    key frames use the fixed key-frame probabilities (``uv_mode_probs`` is ignored)."""
    if key_frame:
        tree_costs(UV_MODE_TREE, KF_UV_MODE_PROBS, out)
    else:
        tree_costs(UV_MODE_TREE, uv_mode_probs, out)


@njit(cache=True)
def kf_bmode_costs(out):
    """Section 11.3: on key frames, ``out[above, left, mode]`` (int32[10, 10, 10]) is the cost of
    subblock mode ``mode`` given the modes of the subblocks above and to the left."""
    for a in range(10):
        for lft in range(10):
            tree_costs(BMODE_TREE, KF_BMODE_PROBS[a, lft], out[a, lft])


@njit(cache=True)
def inter_bmode_costs(out):
    """Section 16.2: on inter frames subblock modes have fixed probabilities, no context:
    ``out[mode]`` (int32[10])."""
    tree_costs(BMODE_TREE, BMODE_PROBS, out)


@njit(cache=True)
def ref_frame_costs(prob_intra, prob_last, prob_golden, out):
    """Section 16.1 / 19.3: cost of the reference frame choice of an inter-frame macroblock into
    ``out[ref]`` (int32[4]; INTRA_FRAME, LAST_FRAME, GOLDEN_FRAME, ALTREF_FRAME)."""
    out[0] = BOOL_COST[prob_intra, 0]
    inter = BOOL_COST[prob_intra, 1]
    out[1] = inter + BOOL_COST[prob_last, 0]
    out[2] = inter + BOOL_COST[prob_last, 1] + BOOL_COST[prob_golden, 0]
    out[3] = inter + BOOL_COST[prob_last, 1] + BOOL_COST[prob_golden, 1]


@njit(cache=True, _nrt=False)
def inter_mode_costs(cnt, out):
    """Section 16.3: cost of each inter mode NEARESTMV..SPLITMV into ``out[5..9]`` (int32[10];
    entries 0-4 untouched), given the census counts ``cnt`` (4 ints, as the decoder's near-MV search
    leaves them, each 0..5) that choose the probabilities from MODE_CONTEXTS. Allocates nothing: it
    runs per macroblock."""
    # MV_REF_TREE is a chain: node i has a leaf on its 0 branch and node i + 2 (or the last leaf) on
    # its 1 branch, and MODE_CONTEXTS gives node i's probability from cnt[i >> 1].
    acc = 0
    i = 0
    while True:
        p = MODE_CONTEXTS[cnt[i >> 1], i >> 1]
        out[-MV_REF_TREE[i]] = acc + BOOL_COST[p, 0]
        acc += BOOL_COST[p, 1]
        if MV_REF_TREE[i + 1] <= 0:
            out[-MV_REF_TREE[i + 1]] = acc
            return
        i = MV_REF_TREE[i + 1]


@njit(cache=True)
def split_mv_costs(partition_out, sub_ref_out):
    """Section 16.4: cost of each split partitioning into ``partition_out`` (int32[4], indexed
    MV_TOP_BOTTOM..MV_16) and of each sub-block reference into ``sub_ref_out[ctx, sub]`` (int32[5, 4];
    LEFT4X4..NEW4X4, ctx as in tables.SUB_MV_REF_PROBS)."""
    tree_costs(SPLIT_MV_TREE, SPLIT_MV_PROBS, partition_out)
    for ctx in range(5):
        tree_costs(SUB_MV_REF_TREE, SUB_MV_REF_PROBS[ctx], sub_ref_out[ctx])
