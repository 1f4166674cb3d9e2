"""DCT/WHT coefficient tokens (RFC 6386 section 13): probability updates and per-macroblock decoding.

Levels are stored quantized, in raster (de-zigzagged) order: ``coeffs[r, c, b, i]`` for block ``b``
of macroblock (r, c), blocks 0-15 Y, 16-19 U, 20-23 V, 24 Y2. ``eobs[r, c, b]`` is one past the
position of the last token decoded for the block (0 when the block ends at once); the
reconstruction uses it to skip empty blocks and the loop filter to spot macroblocks with no tokens.
"""

import numpy as np
from numba import njit

from .boolcoder import BITS, END, FAKE, POS, RANGE, VALUE, bd_literal, bd_overrun, bd_read, bd_step
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
