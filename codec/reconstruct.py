"""Macroblock reconstruction: prediction plus dequantized, inverse-transformed residual
(RFC 6386 sections 12, 14 and 18), for a whole frame in one kernel.

Intra prediction reads unfiltered neighbours: the loop filter runs over the frame afterwards.
"""

import numpy as np

from .jit import njit
from .predict import BORDER_UV, BORDER_Y, predict_inter, predict_mb_intra, predict_subblock
from .tables import B_PRED, GOLDEN_FRAME, INTRA_FRAME, LAST_FRAME, SPLITMV
from .transform import idct4x4, iwht4x4

# Columns of the dequantization factor table ``dq[segment]``.
Y1_DC, Y1_AC, Y2_DC, Y2_AC, UV_DC, UV_AC = range(6)


@njit(cache=True, _nrt=False)
def _add_residual(plane, y, x, levels, eob, dc, dq_dc, dq_ac, deq, res, tmp):
    """Add one 4x4 block's residual to the prediction at plane[y, x].

    ``dc`` >= -32768 replaces the dequantized DC (a Y block whose DC came from Y2). Values are kept
    in int16 as libvpx keeps them; a block with only a DC uses the DC-only shortcut, which equals
    the full transform. Pixel indices are unsigned (no negative-index wraparound to check).
    """
    if dc > -32769:
        deq[0] = dc
    else:
        deq[0] = np.int32(levels[0]) * dq_dc
    y0 = np.uint64(y)
    x0 = np.uint64(x)
    if eob <= 1:
        if deq[0] == 0:
            return
        d = (np.int32(deq[0]) + 4) >> 3
        for r in range(4):
            for c in range(4):
                v = np.int32(plane[y0 + np.uint64(r), x0 + np.uint64(c)]) + d
                plane[y0 + np.uint64(r), x0 + np.uint64(c)] = 0 if v < 0 else (255 if v > 255 else v)
        return
    for i in range(1, 16):
        deq[i] = np.int32(levels[i]) * dq_ac
    idct4x4(deq, res, tmp)
    for r in range(4):
        for c in range(4):
            v = np.int32(plane[y0 + np.uint64(r), x0 + np.uint64(c)]) + res[4 * r + c]
            plane[y0 + np.uint64(r), x0 + np.uint64(c)] = 0 if v < 0 else (255 if v > 255 else v)


@njit(cache=True, _nrt=False)
def add_mb_residual(y, u, v, y0, x0, cy0, cx0, blk, eob, has_y2, add_luma, f, deq, res, tmp, wht):
    """Add a predicted macroblock's residual (sections 14.1-14.4): Y2 through the inverse WHT into
    the luma DCs, the luma blocks unless ``add_luma`` is false (intra B_PRED adds each subblock's
    right after predicting it), then chroma. ``blk``/``eob`` are the macroblock's coeffs and eobs,
    ``f`` its segment's dequantization factors. The encoder reconstructs with this same code."""
    if has_y2:
        for i in range(16):
            deq[i] = np.int32(blk[24, i]) * (f[Y2_DC] if i == 0 else f[Y2_AC])
        if eob[24] > 0:
            iwht4x4(deq, wht, tmp)
        else:
            wht[:] = 0
    if add_luma:
        for k in range(16):
            dc = np.int32(wht[k]) if has_y2 else -32769
            if eob[k] == 0 and (dc == 0 or dc == -32769):  # nothing to add
                continue
            _add_residual(y, y0 + 4 * (k >> 2), x0 + 4 * (k & 3), blk[k], eob[k], dc,
                          f[Y1_DC], f[Y1_AC], deq, res, tmp)
    for k in range(4):
        by = cy0 + 4 * (k >> 1)
        bx = cx0 + 4 * (k & 1)
        if eob[16 + k]:
            _add_residual(u, by, bx, blk[16 + k], eob[16 + k], -32769, f[UV_DC], f[UV_AC], deq, res, tmp)
        if eob[20 + k]:
            _add_residual(v, by, bx, blk[20 + k], eob[20 + k], -32769, f[UV_DC], f[UV_AC], deq, res, tmp)


@njit(cache=True, _nrt=False)
def predict_bpred_subblock(y, y0, x0, k, mode, above_right, edge):
    """Predict luma subblock k (raster order) of the B_PRED macroblock at y[y0, x0] (section 12.3).
    The right column takes its above-right pixels from the row above the macroblock, as the RFC
    specifies, whatever the subblock row."""
    by = y0 + 4 * (k >> 2)
    bx = x0 + 4 * (k & 3)
    ary = y0 - 1 if (k & 3) == 3 else by - 1
    for i in range(4):
        above_right[i] = y[ary, bx + 4 + i]
    predict_subblock(y, by, bx, mode, above_right, edge)


@njit(cache=True, _nrt=False)
def predict_inter_mb(y, u, v, ry, ru, rv, mvs, R, C, split, y0, x0, cy0, cx0, filters, pic_h, pic_w, full_pixel,
                     mc_tmp):
    """Motion-compensated prediction of one macroblock from reference planes ry, ru, rv (section
    18): whole 16x16 and 8x8 blocks, or with ``split`` each 4x4 luma subblock by its own vector and
    each 4x4 chroma block by the average of its four luma vectors."""
    if not split:
        mr = np.int32(mvs[R, C, 0, 0])
        mc = np.int32(mvs[R, C, 0, 1])
        predict_inter(y, y0, x0, ry, y0 + (mr >> 2), x0 + (mc >> 2), 16, 16, (mr & 3) * 2,
                      (mc & 3) * 2, filters, pic_h, pic_w, BORDER_Y, mc_tmp)
        # Chroma is half resolution: the quarter-pel luma vector is an eighth-pel one.
        if full_pixel:
            mr &= ~7
            mc &= ~7
        predict_inter(u, cy0, cx0, ru, cy0 + (mr >> 3), cx0 + (mc >> 3), 8, 8, mr & 7, mc & 7,
                      filters, pic_h // 2, pic_w // 2, BORDER_UV, mc_tmp)
        predict_inter(v, cy0, cx0, rv, cy0 + (mr >> 3), cx0 + (mc >> 3), 8, 8, mr & 7, mc & 7,
                      filters, pic_h // 2, pic_w // 2, BORDER_UV, mc_tmp)
    else:
        for k in range(16):
            by = y0 + 4 * (k >> 2)
            bx = x0 + 4 * (k & 3)
            mr = np.int32(mvs[R, C, k, 0])
            mc = np.int32(mvs[R, C, k, 1])
            predict_inter(y, by, bx, ry, by + (mr >> 2), bx + (mc >> 2), 4, 4, (mr & 3) * 2,
                          (mc & 3) * 2, filters, pic_h, pic_w, BORDER_Y, mc_tmp)
        for k in range(4):
            b = 8 * (k >> 1) + 2 * (k & 1)
            mr = _chroma_split_mv(mvs, R, C, b, 0, full_pixel)
            mc = _chroma_split_mv(mvs, R, C, b, 1, full_pixel)
            by = cy0 + 4 * (k >> 1)
            bx = cx0 + 4 * (k & 1)
            predict_inter(u, by, bx, ru, by + (mr >> 3), bx + (mc >> 3), 4, 4, mr & 7, mc & 7,
                          filters, pic_h // 2, pic_w // 2, BORDER_UV, mc_tmp)
            predict_inter(v, by, bx, rv, by + (mr >> 3), bx + (mc >> 3), 4, 4, mr & 7, mc & 7,
                          filters, pic_h // 2, pic_w // 2, BORDER_UV, mc_tmp)


@njit(cache=True, _nrt=False)
def _pick(ref, last, golden, altref):
    if ref == LAST_FRAME:
        return last
    if ref == GOLDEN_FRAME:
        return golden
    return altref


@njit(cache=True, _nrt=False)
def _chroma_split_mv(mvs, R, C, b, comp, full_pixel):
    """Average of the four luma vectors of a chroma subblock (libvpx build_uvmvs), eighth-pel."""
    s = 2 * (np.int32(mvs[R, C, b, comp]) + mvs[R, C, b + 1, comp] + mvs[R, C, b + 4, comp]
             + mvs[R, C, b + 5, comp])
    s += 4 if s >= 0 else -4
    v = s // 8 if s >= 0 else -((-s) // 8)
    return v & ~7 if full_pixel else v


@njit(cache=True)
def reconstruct_frame(y, u, v, ly, lu, lv, gy, gu, gv, ay, au, av, ymode, uvmode, ref, bmodes, mvs,
                      coeffs, eobs, segment, dq, filters, full_pixel):
    """Predict and reconstruct every macroblock of a frame into the padded planes y, u, v.

    Mode arrays carry the border row and column of ``modes.allocate_mode_info``; ``coeffs``,
    ``eobs`` and ``segment`` do not. (l|g|a)(y|u|v) are the reference planes.
    """
    _reconstruct(y, u, v, ly, lu, lv, gy, gu, gv, ay, au, av, ymode, uvmode, ref, bmodes, mvs, coeffs, eobs,
                 segment, dq, filters, full_pixel, np.zeros((4, 16), np.int16), np.zeros(17, np.int32),
                 np.zeros((21, 16), np.int32))


@njit(cache=True, _nrt=False)
def _reconstruct(y, u, v, ly, lu, lv, gy, gu, gv, ay, au, av, ymode, uvmode, ref, bmodes, mvs,
                 coeffs, eobs, segment, dq, filters, full_pixel, scratch, edge, mc_tmp):
    """reconstruct_frame's body, with its scratch arrays passed in: without the runtime (NRT),
    array views and calls cost no atomic reference counting, which took half the time."""
    mb_rows, mb_cols = segment.shape
    pic_h = 16 * mb_rows
    pic_w = 16 * mb_cols
    deq = scratch[0]
    res = scratch[1]
    tmp = scratch[2]
    wht = scratch[3]
    above_right = edge[13:]
    for r in range(mb_rows):
        R = r + 1
        for c in range(mb_cols):
            C = c + 1
            y0 = BORDER_Y + 16 * r
            x0 = BORDER_Y + 16 * c
            cy0 = BORDER_UV + 8 * r
            cx0 = BORDER_UV + 8 * c
            f = dq[segment[r, c]]
            mode = ymode[R, C]
            blk = coeffs[r, c]
            eob = eobs[r, c]
            has_y2 = mode != B_PRED and mode != SPLITMV
            if ref[R, C] == INTRA_FRAME:
                if mode == B_PRED:
                    for k in range(16):
                        by = y0 + 4 * (k >> 2)
                        bx = x0 + 4 * (k & 3)
                        predict_bpred_subblock(y, y0, x0, k, bmodes[R, C, k], above_right, edge)
                        _add_residual(y, by, bx, blk[k], eob[k], -32769, f[Y1_DC], f[Y1_AC], deq, res, tmp)
                else:
                    predict_mb_intra(y, y0, x0, 16, mode, r > 0, c > 0)
                predict_mb_intra(u, cy0, cx0, 8, uvmode[R, C], r > 0, c > 0)
                predict_mb_intra(v, cy0, cx0, 8, uvmode[R, C], r > 0, c > 0)
            else:
                rp = ref[R, C]
                ry = _pick(rp, ly, gy, ay)
                ru = _pick(rp, lu, gu, au)
                rv = _pick(rp, lv, gv, av)
                predict_inter_mb(y, u, v, ry, ru, rv, mvs, R, C, mode == SPLITMV, y0, x0, cy0, cx0, filters,
                                 pic_h, pic_w, full_pixel, mc_tmp)
            add_mb_residual(y, u, v, y0, x0, cy0, cx0, blk, eob, has_y2,
                            mode != B_PRED or ref[R, C] != INTRA_FRAME, f, deq, res, tmp, wht)
        # Above-right pixels for the next row's last macroblock: its row above, extended (libvpx).
        yr = BORDER_Y + 16 * r + 15
        for i in range(4):
            y[yr, BORDER_Y + pic_w + i] = y[yr, BORDER_Y + pic_w - 1]
