"""Per-macroblock headers of the first partition (RFC 6386 sections 10, 11, 16, 17, 19.3).

``read_modes`` fills arrays with one entry per macroblock plus a border row above and a border
column to the left (index [r + 1, c + 1] is macroblock (r, c)). The border is never written: it reads
as an intra DC_PRED macroblock with zero motion and B_DC_PRED subblocks, which is what the format
assumes outside the frame.

Motion vectors are stored per subblock (``mvs[..., 16, 2]``, row then column, quarter-pel); a
macroblock that is not SPLITMV stores its one vector in all 16, an intra one zeros, so a neighbour's
subblock vector can be read the same way whatever its mode.

``partitioning`` holds a SPLITMV macroblock's partition id (section 16.4) and ``sub_mv_modes`` the
LEFT4X4 / ABOVE4X4 / ZERO4X4 / NEW4X4 mode coded for each subblock's partition: the vectors alone do
not say which was coded when, say, the left and above vectors coincide, and ``write_modes`` (the
mirror of ``read_modes``) needs it to reproduce the bits.
"""

import numpy as np

from .boolcoder import bd_read, bd_tree, be_tree, be_write
from .jit import njit
from .tables import (ALTREF_FRAME, B_DC_PRED, B_PRED, BMODE_PROBS, BMODE_TREE, DC_PRED, GOLDEN_FRAME,
                     IMPLIED_BMODE, INTRA_FRAME, KF_BMODE_PROBS, KF_UV_MODE_PROBS, KF_YMODE_PROBS,
                     KF_YMODE_TREE, LAST_FRAME, MODE_CONTEXTS, MV_LONG_BITS, MV_REF_TREE, MVP_BITS,
                     MVP_IS_SHORT, MVP_SHORT, MVP_SIGN, NEARESTMV, NEARMV, NEW4X4, NEWMV, SEGMENT_TREE,
                     SMALL_MV_TREE, SPLIT_MV_COUNTS, SPLIT_MV_PARTITIONS, SPLIT_MV_PROBS, SPLIT_MV_TREE,
                     SPLITMV, SUB_MV_REF_PROBS, SUB_MV_REF_TREE, TM_PRED, UV_MODE_TREE, YMODE_TREE,
                     ZERO4X4, LEFT4X4, ABOVE4X4)


def allocate_mode_info(mb_rows: int, mb_cols: int):
    """Zeroed mode arrays for a frame, with the border row and column."""
    shape = (mb_rows + 1, mb_cols + 1)
    return dict(
        ymode=np.zeros(shape, np.int8),
        uvmode=np.zeros(shape, np.int8),
        ref=np.zeros(shape, np.int8),
        skip=np.zeros(shape, np.uint8),
        bmodes=np.zeros(shape + (16,), np.int8),
        mvs=np.zeros(shape + (16, 2), np.int16),
        partitioning=np.zeros(shape, np.int8),
        sub_mv_modes=np.zeros(shape + (16,), np.int8),
    )


@njit(cache=True, _nrt=False)
def read_mv_component(st, data, p):
    """Section 17.1: one motion vector component in quarter pixels."""
    if bd_read(st, data, p[MVP_IS_SHORT]):
        x = 0
        for i in range(3):
            x += bd_read(st, data, p[MVP_BITS + i]) << i
        for i in range(MV_LONG_BITS - 1, 3, -1):
            x += bd_read(st, data, p[MVP_BITS + i]) << i
        # Bit 3 is implicit (1) when no higher bit is set: a long vector is at least 8.
        if not (x & 0xFFF0) or bd_read(st, data, p[MVP_BITS + 3]):
            x += 8
    else:
        x = bd_tree(st, data, SMALL_MV_TREE, p[MVP_SHORT:MVP_SHORT + 7])
    if x and bd_read(st, data, p[MVP_SIGN]):
        x = -x
    return x


@njit(cache=True, _nrt=False)
def _clamp(v, lo, hi):
    return lo if v < lo else (hi if v > hi else v)


@njit(cache=True, _nrt=False)
def mv_bounds(r, c, mb_rows, mb_cols):
    """(lo_r, hi_r, lo_c, hi_c), in quarter pixels: how far a predicted vector of macroblock
    (r, c) may point, at most one macroblock beyond the frame edge (section 16.3)."""
    return -(r + 1) * 64, (mb_rows - r) * 64, -(c + 1) * 64, (mb_cols - c) * 64


@njit(cache=True, _nrt=False)
def _find_near_mvs(ref, ymode, mvs, R, C, this_ref, sign_bias, near, cnt):
    """Section 16.3 (libvpx vp8_find_near_mvs): census of the above, left and above-left vectors.

    Leaves best, nearest and near in ``near[0..2]`` (unclamped) and the counts in ``cnt``.
    """
    near[:, :] = 0
    cnt[:] = 0
    n = 0  # index of the last distinct vector found
    for k in range(3):
        if k == 0:
            rr, cc, weight = R - 1, C, 2
        elif k == 1:
            rr, cc, weight = R, C - 1, 2
        else:
            rr, cc, weight = R - 1, C - 1, 1
        nref = ref[rr, cc]
        if nref == INTRA_FRAME:
            continue
        mr = np.int32(mvs[rr, cc, 15, 0])
        mc = np.int32(mvs[rr, cc, 15, 1])
        if mr == 0 and mc == 0:
            cnt[0] += weight
            continue
        if sign_bias[nref] != sign_bias[this_ref]:
            mr = -mr
            mc = -mc
        if n == 0 or mr != near[n, 0] or mc != near[n, 1]:
            n += 1
            near[n, 0] = mr
            near[n, 1] = mc
        cnt[n] += weight
    # With three distinct vectors, merge above-left into nearest when they agree.
    if cnt[3] and near[3, 0] == near[1, 0] and near[3, 1] == near[1, 1]:
        cnt[1] += 1
    cnt[3] = ((ymode[R - 1, C] == SPLITMV) + (ymode[R, C - 1] == SPLITMV)) * 2 + (ymode[R - 1, C - 1] == SPLITMV)
    if cnt[2] > cnt[1]:
        t = cnt[1]; cnt[1] = cnt[2]; cnt[2] = t
        for j in range(2):
            t = near[1, j]; near[1, j] = near[2, j]; near[2, j] = t
    if cnt[1] >= cnt[0]:
        near[0, 0] = near[1, 0]
        near[0, 1] = near[1, 1]


@njit(cache=True, _nrt=False)
def _sub_mv_context(lr, lc, ar, ac):
    """Section 16.4: which SUB_MV_REF_PROBS a split partition is coded with, from the vectors of
    the sub-blocks to its left (lr, lc) and above (ar, ac)."""
    left_zero = lr == 0 and lc == 0
    if lr == ar and lc == ac:
        return 4 if left_zero else 3
    if ar == 0 and ac == 0:
        return 2
    return 1 if left_zero else 0


@njit(cache=True, _nrt=False)
def _read_split(st, data, mvs, sub_mv_modes, R, C, best_r, best_c, mv_probs):
    """Section 16.4: partition and per-partition vectors of a SPLITMV macroblock."""
    part = bd_tree(st, data, SPLIT_MV_TREE, SPLIT_MV_PROBS)
    layout = SPLIT_MV_PARTITIONS[part]
    for j in range(SPLIT_MV_COUNTS[part]):
        k = 0
        while layout[k] != j:
            k += 1
        if k & 3:
            lr, lc = mvs[R, C, k - 1, 0], mvs[R, C, k - 1, 1]
        else:
            lr, lc = mvs[R, C - 1, k + 3, 0], mvs[R, C - 1, k + 3, 1]
        if k >= 4:
            ar, ac = mvs[R, C, k - 4, 0], mvs[R, C, k - 4, 1]
        else:
            ar, ac = mvs[R - 1, C, k + 12, 0], mvs[R - 1, C, k + 12, 1]
        ctx = _sub_mv_context(lr, lc, ar, ac)
        sub = bd_tree(st, data, SUB_MV_REF_TREE, SUB_MV_REF_PROBS[ctx])
        if sub == LEFT4X4:
            mr, mc = np.int32(lr), np.int32(lc)
        elif sub == ABOVE4X4:
            mr, mc = np.int32(ar), np.int32(ac)
        elif sub == ZERO4X4:
            mr, mc = 0, 0
        else:
            mr = read_mv_component(st, data, mv_probs[0]) + best_r
            mc = read_mv_component(st, data, mv_probs[1]) + best_c
        for kk in range(k, 16):
            if layout[kk] == j:
                mvs[R, C, kk, 0] = mr
                mvs[R, C, kk, 1] = mc
                sub_mv_modes[R, C, kk] = sub
    return part


@njit(cache=True)
def read_modes(st, data, key_frame, update_map, seg_probs, segment_map, skip_enabled, prob_skip,
               prob_intra, prob_last, prob_golden, ymode_probs, uv_mode_probs, mv_probs, sign_bias,
               ymode, uvmode, ref, skip, bmodes, mvs, partitioning, sub_mv_modes):
    """Read every macroblock header of a frame (section 19.3).

    ``segment_map`` (mb_rows x mb_cols) is updated in place when the map is coded, reset to 0 on a
    key frame that does not code it, and otherwise kept from the previous frame.
    """
    _read_modes(st, data, key_frame, update_map, seg_probs, segment_map, skip_enabled, prob_skip, prob_intra,
                prob_last, prob_golden, ymode_probs, uv_mode_probs, mv_probs, sign_bias, ymode, uvmode, ref,
                skip, bmodes, mvs, partitioning, sub_mv_modes, np.zeros((4, 2), np.int32), np.zeros(4, np.int32),
                np.zeros(4, np.uint8))


@njit(cache=True, _nrt=False)
def _read_modes(st, data, key_frame, update_map, seg_probs, segment_map, skip_enabled, prob_skip,
                prob_intra, prob_last, prob_golden, ymode_probs, uv_mode_probs, mv_probs, sign_bias,
                ymode, uvmode, ref, skip, bmodes, mvs, partitioning, sub_mv_modes, near, cnt, probs):
    """read_modes with its scratch passed in (no runtime: no reference counting).

    It stays whole, section 19.3's per-macroblock syntax in order, so it reads line for line against
    ``write_modes``; the parts that stand alone are kernels already (``_read_split``,
    ``_find_near_mvs``, ``read_mv_component``).
    """
    mb_rows, mb_cols = segment_map.shape
    for r in range(mb_rows):
        R = r + 1
        for c in range(mb_cols):
            C = c + 1
            if update_map:
                segment_map[r, c] = bd_tree(st, data, SEGMENT_TREE, seg_probs)
            elif key_frame:
                segment_map[r, c] = 0
            skip[R, C] = bd_read(st, data, prob_skip) if skip_enabled else 0
            if key_frame:
                y = bd_tree(st, data, KF_YMODE_TREE, KF_YMODE_PROBS)
                ymode[R, C] = y
                if y == B_PRED:
                    for k in range(16):
                        a = bmodes[R, C, k - 4] if k >= 4 else bmodes[R - 1, C, k + 12]
                        lft = bmodes[R, C, k - 1] if k & 3 else bmodes[R, C - 1, k + 3]
                        bmodes[R, C, k] = bd_tree(st, data, BMODE_TREE, KF_BMODE_PROBS[a, lft])
                else:
                    bmodes[R, C, :] = IMPLIED_BMODE[y]
                uvmode[R, C] = bd_tree(st, data, UV_MODE_TREE, KF_UV_MODE_PROBS)
                continue
            if not bd_read(st, data, prob_intra):
                y = bd_tree(st, data, YMODE_TREE, ymode_probs)
                ymode[R, C] = y
                if y == B_PRED:
                    for k in range(16):
                        bmodes[R, C, k] = bd_tree(st, data, BMODE_TREE, BMODE_PROBS)
                uvmode[R, C] = bd_tree(st, data, UV_MODE_TREE, uv_mode_probs)
                continue
            this_ref = LAST_FRAME
            if bd_read(st, data, prob_last):
                this_ref = GOLDEN_FRAME + bd_read(st, data, prob_golden)
            ref[R, C] = this_ref
            _find_near_mvs(ref, ymode, mvs, R, C, this_ref, sign_bias, near, cnt)
            for i in range(4):
                probs[i] = MODE_CONTEXTS[cnt[i], i]
            y = bd_tree(st, data, MV_REF_TREE, probs)
            ymode[R, C] = y
            # Predictors are clamped to at most one macroblock beyond the frame edge (section 16.3).
            lo_r, hi_r, lo_c, hi_c = mv_bounds(r, c, mb_rows, mb_cols)
            if y == NEARESTMV or y == NEARMV:
                k = 1 if y == NEARESTMV else 2
                mr = _clamp(near[k, 0], lo_r, hi_r)
                mc = _clamp(near[k, 1], lo_c, hi_c)
            elif y == NEWMV:
                mr = _clamp(near[0, 0], lo_r, hi_r) + read_mv_component(st, data, mv_probs[0])
                mc = _clamp(near[0, 1], lo_c, hi_c) + read_mv_component(st, data, mv_probs[1])
            elif y == SPLITMV:
                partitioning[R, C] = _read_split(st, data, mvs, sub_mv_modes, R, C, _clamp(near[0, 0], lo_r, hi_r),
                                                 _clamp(near[0, 1], lo_c, hi_c), mv_probs)
                continue
            else:  # ZEROMV
                mr, mc = 0, 0
            for k in range(16):
                mvs[R, C, k, 0] = mr
                mvs[R, C, k, 1] = mc


# ---------------------------------------------------------------------------------------------
# Writing: the mirror image of read_modes over the same arrays.


# write_modes status codes (0: fine); the Python side turns them into messages.
MODE_ERRORS = {
    1: "segment id is not 0..3",
    2: "luma mode is not a valid intra mode for this frame",
    3: "subblock mode is not 0..9",
    4: "chroma mode is not 0..3",
    5: "reference frame is not 0..3 (0 on key frames)",
    6: "the motion vector is not the one its mode (NEAREST / NEAR / ZERO) implies",
    7: "a coded motion vector difference is beyond +-1023 quarter pixels",
    8: "SPLITMV: subblocks of one partition have different vectors, or a bad partition id",
    9: "not SPLITMV but the 16 subblock vectors differ",
    10: "inter mode is not NEARESTMV..SPLITMV",
}


@njit(cache=True)
def write_mv_component(es, buf, v, p):
    """Mirror of ``read_mv_component`` (section 17.1): |v| < 8 through the short tree, else the
    long form, bits 0-2, then 9 down to 4, then bit 3 only when a higher bit is set (else implied)."""
    x = -v if v < 0 else v
    if x < 8:
        buf = be_write(es, buf, 0, p[MVP_IS_SHORT])
        buf = be_tree(es, buf, SMALL_MV_TREE, p[MVP_SHORT:MVP_SHORT + 7], x)
    else:
        buf = be_write(es, buf, 1, p[MVP_IS_SHORT])
        for i in range(3):
            buf = be_write(es, buf, (x >> i) & 1, p[MVP_BITS + i])
        for i in range(MV_LONG_BITS - 1, 3, -1):
            buf = be_write(es, buf, (x >> i) & 1, p[MVP_BITS + i])
        if x & 0xFFF0:
            buf = be_write(es, buf, (x >> 3) & 1, p[MVP_BITS + 3])
    if x:
        buf = be_write(es, buf, 1 if v < 0 else 0, p[MVP_SIGN])
    return buf


@njit(cache=True)
def _mv_fits(d):
    return -1023 <= d <= 1023


@njit(cache=True)
def _nb_mv(ref, mvs, rr, cc, k, comp):
    """Subblock k's vector component of macroblock [rr, cc] as the decoder has it: 0 if intra."""
    if ref[rr, cc] == INTRA_FRAME:
        return 0
    return np.int32(mvs[rr, cc, k, comp])


@njit(cache=True)
def _write_split(es, buf, ref, mvs, sub_mv_modes, R, C, part, best_r, best_c, mv_probs):
    """Mirror of ``_read_split``; returns (buf, status). Each partition is coded with its recorded
    sub-mode when that mode yields its vector, else with the first of LEFT, ABOVE, ZERO, NEW
    that does (so an encoder may leave ``sub_mv_modes`` zero)."""
    if part < 0 or part > 3:
        return buf, 8
    layout = SPLIT_MV_PARTITIONS[part]
    for k in range(16):
        for kk in range(k):
            if layout[kk] == layout[k] and (mvs[R, C, kk, 0] != mvs[R, C, k, 0] or mvs[R, C, kk, 1] != mvs[R, C, k, 1]):
                return buf, 8
    buf = be_tree(es, buf, SPLIT_MV_TREE, SPLIT_MV_PROBS, part)
    for j in range(SPLIT_MV_COUNTS[part]):
        k = 0
        while layout[k] != j:
            k += 1
        if k & 3:
            lr, lc = _nb_mv(ref, mvs, R, C, k - 1, 0), _nb_mv(ref, mvs, R, C, k - 1, 1)
        else:
            lr, lc = _nb_mv(ref, mvs, R, C - 1, k + 3, 0), _nb_mv(ref, mvs, R, C - 1, k + 3, 1)
        if k >= 4:
            ar, ac = _nb_mv(ref, mvs, R, C, k - 4, 0), _nb_mv(ref, mvs, R, C, k - 4, 1)
        else:
            ar, ac = _nb_mv(ref, mvs, R - 1, C, k + 12, 0), _nb_mv(ref, mvs, R - 1, C, k + 12, 1)
        ctx = _sub_mv_context(lr, lc, ar, ac)
        mr, mc = np.int32(mvs[R, C, k, 0]), np.int32(mvs[R, C, k, 1])
        sub = sub_mv_modes[R, C, k]
        ok = (sub == LEFT4X4 and mr == lr and mc == lc) or (sub == ABOVE4X4 and mr == ar and mc == ac) \
            or (sub == ZERO4X4 and mr == 0 and mc == 0) or sub == NEW4X4
        if not ok:
            if mr == lr and mc == lc:
                sub = LEFT4X4
            elif mr == ar and mc == ac:
                sub = ABOVE4X4
            elif mr == 0 and mc == 0:
                sub = ZERO4X4
            else:
                sub = NEW4X4
        if sub == NEW4X4 and not (_mv_fits(mr - best_r) and _mv_fits(mc - best_c)):
            return buf, 7
        buf = be_tree(es, buf, SUB_MV_REF_TREE, SUB_MV_REF_PROBS[ctx], sub)
        if sub == NEW4X4:
            buf = write_mv_component(es, buf, mr - best_r, mv_probs[0])
            buf = write_mv_component(es, buf, mc - best_c, mv_probs[1])
    return buf, 0


@njit(cache=True)
def _bmode_ctx(ymode, bmodes, R, C, k, above):
    """Key frames: the subblock mode above (or left of) subblock k, as ``read_modes`` sees it:
    B_DC_PRED outside the frame, the implied mode of a neighbour that is not B_PRED."""
    if above:
        if k >= 4:
            return bmodes[R, C, k - 4]
        rr, cc, kk = R - 1, C, k + 12
    else:
        if k & 3:
            return bmodes[R, C, k - 1]
        rr, cc, kk = R, C - 1, k + 3
    if rr == 0 or cc == 0:
        return B_DC_PRED
    y = ymode[rr, cc]
    return bmodes[rr, cc, kk] if y == B_PRED else IMPLIED_BMODE[y]


@njit(cache=True)
def write_modes(es, buf, key_frame, update_map, seg_probs, segment_map, skip_enabled, prob_skip,
                prob_intra, prob_last, prob_golden, ymode_probs, uv_mode_probs, mv_probs, sign_bias,
                ymode, uvmode, ref, skip, bmodes, mvs, partitioning, sub_mv_modes):
    """Mirror of ``read_modes``: write every macroblock header of a frame (section 19.3) from the
    arrays ``read_modes`` fills (border row and column included, left zero).

    What is read from the arrays: the segment id (when the map is coded), the skip flag (when
    coded), ``ymode``; for intra macroblocks ``uvmode`` and, for B_PRED, ``bmodes``; for inter
    ones (``ref`` > 0) the vector in ``mvs`` (all 16 equal unless SPLITMV), ``partitioning`` and
    ``sub_mv_modes`` for SPLITMV. NEARESTMV, NEARMV and ZEROMV must carry the vector they imply;
    NEWMV codes its difference from the clamped best vector. Returns (buf, status, row, col):
    status 0 is success, else a ``MODE_ERRORS`` key for macroblock (row, col).

    It stays one function, section 19.3's per-macroblock syntax in order (the parts that stand alone
    are kernels already: ``_write_split``, ``_find_near_mvs``, ``write_mv_component``), because its
    checks return ``(buf, status, row, col)`` early and ``buf`` may be reallocated, which split-off
    kernels would have to thread back through every call.
    """
    mb_rows, mb_cols = segment_map.shape
    near = np.zeros((4, 2), np.int32)
    cnt = np.zeros(4, np.int32)
    probs = np.zeros(4, np.uint8)
    for r in range(mb_rows):
        R = r + 1
        for c in range(mb_cols):
            C = c + 1
            if update_map:
                if segment_map[r, c] > 3:
                    return buf, 1, r, c
                buf = be_tree(es, buf, SEGMENT_TREE, seg_probs, segment_map[r, c])
            if skip_enabled:
                buf = be_write(es, buf, skip[R, C] != 0, prob_skip)
            y = ymode[R, C]
            if key_frame or ref[R, C] == INTRA_FRAME:
                if ref[R, C] != INTRA_FRAME:
                    return buf, 5, r, c
                if y < DC_PRED or y > B_PRED:
                    return buf, 2, r, c
                if uvmode[R, C] < DC_PRED or uvmode[R, C] > TM_PRED:
                    return buf, 4, r, c
                if key_frame:
                    buf = be_tree(es, buf, KF_YMODE_TREE, KF_YMODE_PROBS, y)
                else:
                    buf = be_write(es, buf, 0, prob_intra)
                    buf = be_tree(es, buf, YMODE_TREE, ymode_probs, y)
                if y == B_PRED:
                    for k in range(16):
                        b = bmodes[R, C, k]
                        if b < 0 or b > 9:
                            return buf, 3, r, c
                        if key_frame:
                            a = _bmode_ctx(ymode, bmodes, R, C, k, True)
                            lft = _bmode_ctx(ymode, bmodes, R, C, k, False)
                            buf = be_tree(es, buf, BMODE_TREE, KF_BMODE_PROBS[a, lft], b)
                        else:
                            buf = be_tree(es, buf, BMODE_TREE, BMODE_PROBS, b)
                buf = be_tree(es, buf, UV_MODE_TREE, KF_UV_MODE_PROBS if key_frame else uv_mode_probs,
                              uvmode[R, C])
                continue
            this_ref = ref[R, C]
            if this_ref < LAST_FRAME or this_ref > ALTREF_FRAME:
                return buf, 5, r, c
            if y < NEARESTMV or y > SPLITMV:
                return buf, 10, r, c
            buf = be_write(es, buf, 1, prob_intra)
            buf = be_write(es, buf, this_ref != LAST_FRAME, prob_last)
            if this_ref != LAST_FRAME:
                buf = be_write(es, buf, this_ref == ALTREF_FRAME, prob_golden)
            _find_near_mvs(ref, ymode, mvs, R, C, this_ref, sign_bias, near, cnt)
            for i in range(4):
                probs[i] = MODE_CONTEXTS[cnt[i], i]
            buf = be_tree(es, buf, MV_REF_TREE, probs, y)
            lo_r, hi_r, lo_c, hi_c = mv_bounds(r, c, mb_rows, mb_cols)
            best_r = _clamp(near[0, 0], lo_r, hi_r)
            best_c = _clamp(near[0, 1], lo_c, hi_c)
            if y == SPLITMV:
                buf, s = _write_split(es, buf, ref, mvs, sub_mv_modes, R, C, partitioning[R, C], best_r, best_c,
                                      mv_probs)
                if s:
                    return buf, s, r, c
                continue
            mr = np.int32(mvs[R, C, 0, 0])
            mc = np.int32(mvs[R, C, 0, 1])
            for k in range(1, 16):
                if mvs[R, C, k, 0] != mr or mvs[R, C, k, 1] != mc:
                    return buf, 9, r, c
            if y == NEARESTMV or y == NEARMV:
                k = 1 if y == NEARESTMV else 2
                if mr != _clamp(near[k, 0], lo_r, hi_r) or mc != _clamp(near[k, 1], lo_c, hi_c):
                    return buf, 6, r, c
            elif y == NEWMV:
                if not (_mv_fits(mr - best_r) and _mv_fits(mc - best_c)):
                    return buf, 7, r, c
                buf = write_mv_component(es, buf, mr - best_r, mv_probs[0])
                buf = write_mv_component(es, buf, mc - best_c, mv_probs[1])
            elif mr != 0 or mc != 0:  # ZEROMV
                return buf, 6, r, c
    return buf, 0, -1, -1
