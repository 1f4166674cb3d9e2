"""DCT/WHT coefficient tokens (RFC 6386 section 13): probability updates and per-macroblock decoding.

Levels are stored quantized, in raster (de-zigzagged) order: ``coeffs[r, c, b, i]`` for block ``b``
of macroblock (r, c), blocks 0-15 Y, 16-19 U, 20-23 V, 24 Y2. ``eobs[r, c, b]`` is one past the
position of the last token decoded for the block (0 when the block ends at once); the
reconstruction uses it to skip empty blocks and the loop filter to spot macroblocks with no tokens.
"""

import numpy as np

from .boolcoder import BITS, END, FAKE, POS, RANGE, VALUE, bd_literal, bd_overrun, bd_read, bd_step
from .jit import njit
from .tables import (B_PRED, CAT_BASE, CAT_BITS, CAT_PROBS, COEFF_BANDS, COEFF_UPDATE_PROBS, SPLITMV,
                     TYPE_UV, TYPE_Y2, TYPE_Y_AFTER_Y2, TYPE_Y_WITH_DC, ZIGZAG)

# Index of each block's entry in the above / left context arrays (Y 0-3, U 4-5, V 6-7, Y2 8).
ABOVE_CTX = np.array([0, 1, 2, 3] * 4 + [4, 5, 4, 5, 6, 7, 6, 7, 8], np.int64)
LEFT_CTX = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8], np.int64)


@njit(cache=True)
def read_coeff_updates(st, data, probs, updated):
    """Section 13.4: each of the 1056 probabilities may be replaced by an 8-bit literal."""
    for i in range(4):
        for j in range(8):
            for k in range(3):
                for t in range(11):
                    if bd_read(st, data, COEFF_UPDATE_PROBS[i, j, k, t]):
                        probs[i, j, k, t] = bd_literal(st, data, 8)
                        updated[i, j, k, t] = 1


@njit(cache=True, _nrt=False)
def _read_block(st, data, probs, btype, ctx, out):
    """Tokens of one block (section 13.2) into ``out`` (int16[16], zeroed); returns its eob.

    The bool decoder's state is kept in locals for the block (``bd_step``) and written back once.

    It stays whole: the bool decoder's state lives in locals for the whole block (the point of this
    kernel), and a split-off njit kernel, say for a token's value, would have to take and return all
    six of them as ``bd_step`` does, once per token read.
    """
    value, bits, rng, pos, end, fake = st[VALUE], st[BITS], st[RANGE], st[POS], st[END], st[FAKE]
    i = 1 if btype == TYPE_Y_AFTER_Y2 else 0
    p = probs[btype, COEFF_BANDS[i], ctx]
    b, value, bits, rng, pos, fake = bd_step(data, p[0], value, bits, rng, pos, end, fake)
    eob = 0
    if b:
        while True:
            # After a zero the next token cannot be EOB, so the EOB branch is skipped.
            b, value, bits, rng, pos, fake = bd_step(data, p[1], value, bits, rng, pos, end, fake)
            if not b:
                i += 1
                if i == 16:
                    eob = 16
                    break
                p = probs[btype, COEFF_BANDS[i], 0]
                continue
            b, value, bits, rng, pos, fake = bd_step(data, p[2], value, bits, rng, pos, end, fake)
            if not b:
                v = 1
                nctx = 1
            else:
                nctx = 2
                b, value, bits, rng, pos, fake = bd_step(data, p[3], value, bits, rng, pos, end, fake)
                if not b:
                    b, value, bits, rng, pos, fake = bd_step(data, p[4], value, bits, rng, pos, end, fake)
                    if not b:
                        v = 2
                    else:
                        b, value, bits, rng, pos, fake = bd_step(data, p[5], value, bits, rng, pos, end, fake)
                        v = 3 + b
                else:
                    b, value, bits, rng, pos, fake = bd_step(data, p[6], value, bits, rng, pos, end, fake)
                    if not b:
                        b, value, bits, rng, pos, fake = bd_step(data, p[7], value, bits, rng, pos, end, fake)
                        cat = b
                    else:
                        b1, value, bits, rng, pos, fake = bd_step(data, p[8], value, bits, rng, pos, end, fake)
                        b, value, bits, rng, pos, fake = bd_step(data, p[9 + b1], value, bits, rng, pos, end,
                                                                 fake)
                        cat = 2 + 2 * b1 + b
                    extra = 0
                    for k in range(CAT_BITS[cat]):
                        b, value, bits, rng, pos, fake = bd_step(data, CAT_PROBS[cat, k], value, bits, rng, pos,
                                                                 end, fake)
                        extra = (extra << 1) | b
                    v = CAT_BASE[cat] + extra
            b, value, bits, rng, pos, fake = bd_step(data, 128, value, bits, rng, pos, end, fake)
            out[ZIGZAG[i]] = -v if b else v
            i += 1
            if i == 16:
                eob = 16
                break
            p = probs[btype, COEFF_BANDS[i], nctx]
            b, value, bits, rng, pos, fake = bd_step(data, p[0], value, bits, rng, pos, end, fake)
            if not b:
                eob = i
                break
    st[VALUE] = value
    st[BITS] = bits
    st[RANGE] = rng
    st[POS] = pos
    st[FAKE] = fake
    return eob


@njit(cache=True)
def read_tokens(data, part_st, probs, ymodes, skips, coeffs, eobs):
    """Decode the token partitions of a frame (section 13); macroblock row r reads partition
    r % len(part_st). Returns the first macroblock row whose partition overran its data, or -1."""
    return _read_tokens(data, part_st, probs, ymodes, skips, coeffs, eobs,
                        np.zeros((ymodes.shape[1], 9), np.uint8), np.zeros(9, np.uint8))


@njit(cache=True, _nrt=False)
def _read_tokens(data, part_st, probs, ymodes, skips, coeffs, eobs, above, left):
    """read_tokens with its context arrays passed in (no runtime: no reference counting)."""
    mb_rows, mb_cols = ymodes.shape
    nparts = part_st.shape[0]
    bad_row = -1
    for r in range(mb_rows):
        st = part_st[r % nparts]
        left[:] = 0
        for c in range(mb_cols):
            has_y2 = ymodes[r, c] != B_PRED and ymodes[r, c] != SPLITMV
            if skips[r, c]:
                # A skipped macroblock leaves zero contexts, except Y2's when it has no Y2 block.
                above[c, :8] = 0
                left[:8] = 0
                if has_y2:
                    above[c, 8] = 0
                    left[8] = 0
                continue
            if has_y2:
                ctx = above[c, 8] + left[8]
                e = _read_block(st, data, probs, TYPE_Y2, ctx, coeffs[r, c, 24])
                eobs[r, c, 24] = e
                above[c, 8] = left[8] = 1 if e > 0 else 0
            ytype = TYPE_Y_AFTER_Y2 if has_y2 else TYPE_Y_WITH_DC
            for b in range(24):
                btype = ytype if b < 16 else TYPE_UV
                a = ABOVE_CTX[b]
                lc = LEFT_CTX[b]
                e = _read_block(st, data, probs, btype, above[c, a] + left[lc], coeffs[r, c, b])
                eobs[r, c, b] = e
                above[c, a] = left[lc] = 1 if e > 0 else 0
            if bad_row < 0 and bd_overrun(st):
                bad_row = r
    return bad_row


# ---------------------------------------------------------------------------------------------
# Writing: the mirror images of the readers above (section 13), over the same arrays.

from .boolcoder import E_COUNT, E_LOW, E_POS, E_RANGE, be_grow, be_literal, be_put, be_write  # noqa: E402

# write_tokens status codes (0: fine); the Python side turns them into messages.
TOKEN_OK, TOKEN_BAD_EOB, TOKEN_NONZERO_PAST_EOB, TOKEN_EOB_AFTER_ZERO, TOKEN_TOO_LARGE, TOKEN_SKIPPED_NONZERO = \
    0, 1, 2, 3, 4, 5
TOKEN_ERRORS = {
    TOKEN_BAD_EOB: "eob out of range (0..16; 0 or 2..16 for a Y block after Y2)",
    TOKEN_NONZERO_PAST_EOB: "nonzero coefficient at or past eob (or at DC in a Y block after Y2)",
    TOKEN_EOB_AFTER_ZERO: "the coefficient before eob is zero (an end of block cannot follow a zero token)",
    TOKEN_TOO_LARGE: "coefficient level beyond +-2114 (DCT_CAT6's largest)",
    TOKEN_SKIPPED_NONZERO: "a skipped macroblock has tokens (eob > 0)",
}
MAX_LEVEL = 67 + 2047
#: Most bytes one block's tokens can add: 16 coefficients of at most 24 bools (tree, DCT_CAT6's
#: 11 extra bits, sign) and an EOB, each bool shifting out at most 7 bits.
BLOCK_MAX_BYTES = (16 * 24 + 1) * 7 // 8 + 2


@njit(cache=True)
def write_coeff_updates(es, buf, probs, updated):
    """Mirror of ``read_coeff_updates``: a flag per probability, then the 8-bit value where set."""
    for i in range(4):
        for j in range(8):
            for k in range(3):
                for t in range(11):
                    u = updated[i, j, k, t] != 0
                    buf = be_write(es, buf, u, COEFF_UPDATE_PROBS[i, j, k, t])
                    if u:
                        buf = be_literal(es, buf, 8, probs[i, j, k, t])
    return buf


@njit(cache=True)
def check_block(block, eob, btype):
    """The status of writing ``block`` (int16[16], raster order) with ``eob`` as type ``btype``:
    the tokens must be exactly the first ``eob`` zigzag positions, and an EOB token (when
    ``eob`` < 16) can only follow a nonzero one."""
    first = 1 if btype == TYPE_Y_AFTER_Y2 else 0
    if eob < 0 or eob > 16 or (first == 1 and eob == 1):
        return TOKEN_BAD_EOB
    if first == 1 and block[0] != 0:
        return TOKEN_NONZERO_PAST_EOB
    for i in range(max(eob, first), 16):
        if block[ZIGZAG[i]] != 0:
            return TOKEN_NONZERO_PAST_EOB
    for i in range(first, eob):
        v = np.int32(block[ZIGZAG[i]])
        if v > MAX_LEVEL or v < -MAX_LEVEL:
            return TOKEN_TOO_LARGE
    if 0 < eob < 16 and block[ZIGZAG[eob - 1]] == 0:
        return TOKEN_EOB_AFTER_ZERO
    return TOKEN_OK


@njit(cache=True, _nrt=False)
def _write_block(es, buf, probs, btype, ctx, coeffs, r, c, b, eob):
    """Mirror of ``_read_block``: the tokens of one checked block (``check_block``),
    ``coeffs[r, c, b]``, the encoder held in locals for the block. ``buf`` must have room for
    BLOCK_MAX_BYTES more bytes (``write_tokens`` grows it per block), so this needs no runtime:
    no reference counting per token.

    It stays whole: the bool encoder's state lives in locals for the whole block, and a split-off
    njit kernel, say for a token's value, would have to take and return all four of them as
    ``be_put`` does, once per token written.
    """
    low, rng, count, pos = es[E_LOW], es[E_RANGE], es[E_COUNT], es[E_POS]
    i = 1 if btype == TYPE_Y_AFTER_Y2 else 0
    band = COEFF_BANDS[i]
    cx = np.int64(ctx)  # (a small unsigned int mixed with int64 would become a float)
    after_zero = False
    while i < eob:
        if not after_zero:
            low, rng, count, pos = be_put(buf, probs[btype, band, cx, 0], 1, low, rng, count, pos)  # not EOB
        v = np.int32(coeffs[r, c, b, ZIGZAG[i]])
        a = -v if v < 0 else v
        if a == 0:
            low, rng, count, pos = be_put(buf, probs[btype, band, cx, 1], 0, low, rng, count, pos)
            after_zero = True
            nctx = 0
        else:
            after_zero = False
            low, rng, count, pos = be_put(buf, probs[btype, band, cx, 1], 1, low, rng, count, pos)
            if a == 1:
                low, rng, count, pos = be_put(buf, probs[btype, band, cx, 2], 0, low, rng, count, pos)
                nctx = 1
            else:
                nctx = 2
                low, rng, count, pos = be_put(buf, probs[btype, band, cx, 2], 1, low, rng, count, pos)
                if a <= 4:
                    low, rng, count, pos = be_put(buf, probs[btype, band, cx, 3], 0, low, rng, count, pos)
                    if a == 2:
                        low, rng, count, pos = be_put(buf, probs[btype, band, cx, 4], 0, low, rng, count, pos)
                    else:
                        low, rng, count, pos = be_put(buf, probs[btype, band, cx, 4], 1, low, rng, count, pos)
                        low, rng, count, pos = be_put(buf, probs[btype, band, cx, 5], a - 3, low, rng, count, pos)
                else:
                    low, rng, count, pos = be_put(buf, probs[btype, band, cx, 3], 1, low, rng, count, pos)
                    cat = 5
                    while cat > 0 and a < CAT_BASE[cat]:
                        cat -= 1
                    if cat < 2:
                        low, rng, count, pos = be_put(buf, probs[btype, band, cx, 6], 0, low, rng, count, pos)
                        low, rng, count, pos = be_put(buf, probs[btype, band, cx, 7], cat, low, rng, count, pos)
                    else:
                        b1 = (cat - 2) >> 1
                        low, rng, count, pos = be_put(buf, probs[btype, band, cx, 6], 1, low, rng, count, pos)
                        low, rng, count, pos = be_put(buf, probs[btype, band, cx, 8], b1, low, rng, count, pos)
                        low, rng, count, pos = be_put(buf, probs[btype, band, cx, 9 + b1], (cat - 2) & 1, low, rng, count, pos)
                    extra = a - CAT_BASE[cat]
                    nb = CAT_BITS[cat]
                    for k in range(nb):
                        low, rng, count, pos = be_put(buf, CAT_PROBS[cat, k], (extra >> (nb - 1 - k)) & 1,
                                                            low, rng, count, pos)
            low, rng, count, pos = be_put(buf, 128, 1 if v < 0 else 0, low, rng, count, pos)
        i += 1
        if i < 16:
            band = COEFF_BANDS[i]
            cx = np.int64(nctx)
    if eob < 16:
        low, rng, count, pos = be_put(buf, probs[btype, band, cx, 0], 0, low, rng, count, pos)  # EOB
    es[E_LOW] = low
    es[E_RANGE] = rng
    es[E_COUNT] = count
    es[E_POS] = pos


@njit(cache=True)
def write_tokens(es, buf, part, nparts, probs, ymodes, skips, coeffs, eobs):
    """Mirror of ``read_tokens`` for one token partition: the macroblock rows r with
    r % nparts == part, coded with the above / left contexts of the whole frame (which depend on
    eobs and modes only, so each partition can be written on its own).

    ``ymodes`` and ``skips`` are (mb_rows, mb_cols) without the border (``skips`` all 0 when the
    frame does not code skip flags). Returns (buf, status, row, col, block); status 0 is success,
    else a ``TOKEN_ERRORS`` key for that block, and nothing more is written.
    """
    mb_rows, mb_cols = ymodes.shape
    above = np.zeros((mb_cols, 9), np.uint8)
    left = np.zeros(9, np.uint8)
    for r in range(mb_rows):
        mine = r % nparts == part
        left[:] = 0
        for c in range(mb_cols):
            has_y2 = ymodes[r, c] != B_PRED and ymodes[r, c] != SPLITMV
            if skips[r, c]:
                for b in range(25):
                    if eobs[r, c, b] != 0:
                        return buf, TOKEN_SKIPPED_NONZERO, r, c, b
                above[c, :8] = 0
                left[:8] = 0
                if has_y2:
                    above[c, 8] = 0
                    left[8] = 0
                continue
            if has_y2:
                e = eobs[r, c, 24]
                if mine:
                    s = check_block(coeffs[r, c, 24], e, TYPE_Y2)
                    if s:
                        return buf, s, r, c, 24
                    buf = be_grow(buf, es[E_POS] + BLOCK_MAX_BYTES)
                    _write_block(es, buf, probs, TYPE_Y2, above[c, 8] + left[8], coeffs, r, c, 24, e)
                above[c, 8] = left[8] = 1 if e > 0 else 0
            elif eobs[r, c, 24] != 0:
                return buf, TOKEN_BAD_EOB, r, c, 24
            ytype = TYPE_Y_AFTER_Y2 if has_y2 else TYPE_Y_WITH_DC
            for b in range(24):
                btype = ytype if b < 16 else TYPE_UV
                a = ABOVE_CTX[b]
                lc = LEFT_CTX[b]
                e = eobs[r, c, b]
                if mine:
                    s = check_block(coeffs[r, c, b], e, btype)
                    if s:
                        return buf, s, r, c, b
                    buf = be_grow(buf, es[E_POS] + BLOCK_MAX_BYTES)
                    _write_block(es, buf, probs, btype, above[c, a] + left[lc], coeffs, r, c, b, e)
                above[c, a] = left[lc] = 1 if e > 0 else 0
    return buf, TOKEN_OK, -1, -1, -1


@njit(cache=True)
def derive_eobs(ymodes, coeffs, eobs):
    """For an encoder: each block's eob as one past its last nonzero coefficient in zigzag order
    (0 for an empty block), the shortest coding of ``coeffs``. ``ymodes`` without the border."""
    mb_rows, mb_cols = ymodes.shape
    for r in range(mb_rows):
        for c in range(mb_cols):
            for b in range(25):
                e = 0
                for i in range(15, -1, -1):
                    if coeffs[r, c, b, ZIGZAG[i]] != 0:
                        e = i + 1
                        break
                eobs[r, c, b] = e
