"""Macroblock decisions of the encoder: intra modes, motion search and residual coding by
rate-distortion cost (RFC 6386 sections 11-18, read in the encoder's direction).

One kernel, ``encode_macroblocks``, visits the macroblocks of a frame in raster order. For each it
tries the candidate predictions, codes the residual of each (forward transform, quantization,
exact token cost with the neighbours' contexts), reconstructs it with the decoder's own code
(``reconstruct.add_mb_residual``, ``predict.*``) and keeps the one with the least
``J = SSE + lambda * bits``. The reconstruction it leaves is what the decoder computes before its
loop filter, so later intra predictions and contexts see exactly the decoder's values.

Coordinates: ``src_*`` are the source planes cropped or edge-extended to whole macroblocks
(16 * mb_rows x 16 * mb_cols luma); ``y``, ``u``, ``v`` the padded planes being reconstructed
(``state.Picture`` layout, border BORDER_Y / BORDER_UV); mode arrays carry the decoder's border row
and column (``modes.allocate_mode_info``).

Costs are in 1/256 bit (``rate.py``); ``lam`` is squared pixel error per bit.
"""

import numpy as np

from .jit import njit
from .modes import _clamp, _find_near_mvs, mv_bounds
from .predict import BORDER_UV, BORDER_Y, predict_inter, predict_mb_intra
from .quantize import KIND_UV, KIND_Y1, KIND_Y2, quantize_block, rd_quantize_block
from .rate import LEVEL_TOKEN, MAX_LEVEL, MV_MAX, block_token_cost, inter_mode_costs
from .reconstruct import (Y1_AC, Y1_DC, _add_residual, _pick, add_mb_residual, predict_bpred_subblock,
                          predict_inter_mb)
from .tables import (ALTREF_FRAME, B_PRED, COEFF_BANDS, GOLDEN_FRAME, IMPLIED_BMODE, INTRA_FRAME, LAST_FRAME,
                     MV_LEFT_RIGHT, MV_QUARTERS, MV_TOP_BOTTOM, NEARESTMV, NEARMV, NEWMV, SPLITMV, TYPE_UV, TYPE_Y2, TYPE_Y_AFTER_Y2,
                     SPLIT_MV_COUNTS, SPLIT_MV_PARTITIONS, TYPE_Y_WITH_DC, ZEROMV, ZIGZAG)
from .tokens import ABOVE_CTX, LEFT_CTX
from .transform import fdct4x4, fwht4x4

# Scratch layout passed in by the caller (no allocation inside the kernels).
S_RESID, S_DEQ, S_RES, S_TMP, S_WHT, S_DCS, S_Y2, S_BEST_LEVELS, S_BEST_PIXELS = range(9)
SCRATCH16_ROWS = 9
COEF_ROWS = 25

INF = np.int64(1) << np.int64(60)
# Subblock modes coded in full per B_PRED subblock, of the ten ranked by prediction error.
BPRED_FULL_RD = 3


@njit(cache=True, _nrt=False)
def _sse(src, sy, sx, rec, ry, rx, h, w):
    """Sum of squared differences of an h x w block."""
    total = np.int64(0)
    for r in range(h):
        a = np.uint64(sy + r)
        b = np.uint64(ry + r)
        for c in range(w):
            d = np.int32(src[a, np.uint64(sx + c)]) - np.int32(rec[b, np.uint64(rx + c)])
            total += d * d
    return total


@njit(cache=True, _nrt=False)
def _sad16(src, sy, sx, ref, ry, rx, limit):
    """Sum of absolute differences of a 16x16 block, stopping early once above ``limit``."""
    total = 0
    for r in range(16):
        a = np.uint64(sy + r)
        b = np.uint64(ry + r)
        for c in range(16):
            d = np.int32(src[a, np.uint64(sx + c)]) - np.int32(ref[b, np.uint64(rx + c)])
            total += d if d >= 0 else -d
        if total > limit:
            return total
    return total


@njit(cache=True, _nrt=False)
def _sad(src, sy, sx, ref, ry, rx, h, w):
    """Sum of absolute differences of an h x w block."""
    total = 0
    for r in range(h):
        a = np.uint64(sy + r)
        b = np.uint64(ry + r)
        for c in range(w):
            d = np.int32(src[a, np.uint64(sx + c)]) - np.int32(ref[b, np.uint64(rx + c)])
            total += d if d >= 0 else -d
    return total


@njit(cache=True, _nrt=False)
def _search_part(src, sy, sx, ref, y0, x0, h, w, start_r, start_c, best_r, best_c, lo_r, hi_r, lo_c, hi_c,
                 lam_sad, mvcost_r, mvcost_c, subpel, filters, pic_h, pic_w, pred, mc_tmp, out):
    """Small search for one h x w partition of a SPLITMV macroblock (16x8, 8x16 or 8x8, at y0, x0
    of the padded plane): full-pel cross steps of 2 and 1 pixel from the start, then half- and
    quarter-pel. The vector stays within [lo, hi], which the caller keeps codable (a difference
    from the best predictor within +-1023)."""
    cr = _clamp((start_r >> 2) << 2, lo_r, hi_r)
    cc = _clamp((start_c >> 2) << 2, lo_c, hi_c)
    best = INF
    for phase in range(3):  # 0: 2-pixel steps, 1: 1-pixel steps, 2/3: sub-pixel
        step = 8 if phase == 0 else 4
        moved = True
        first = True
        while moved:
            moved = False
            br, bc = cr, cc
            for d in range(5 if first else 4):
                if d == 4:
                    nr, nc = cr, cc
                else:
                    nr = cr + (step if d == 0 else (-step if d == 1 else 0))
                    nc = cc + (step if d == 2 else (-step if d == 3 else 0))
                if nr < lo_r or nr > hi_r or nc < lo_c or nc > hi_c:
                    continue
                s = _sad(src, sy, sx, ref, y0 + (nr >> 2), x0 + (nc >> 2), h, w) + np.int64(
                    lam_sad * (mvcost_r[_clamp(nr - best_r, -MV_MAX, MV_MAX) + MV_MAX]
                               + mvcost_c[_clamp(nc - best_c, -MV_MAX, MV_MAX) + MV_MAX]) / 256.0)
                if s < best:
                    best = s
                    br, bc = nr, nc
            first = False
            if br != cr or bc != cc:
                cr, cc = br, bc
                moved = True
        if phase == 1:
            break
    if subpel:
        best = INF
        for step in (2, 1):
            br, bc = cr, cc
            for dr in (-step, 0, step):
                for dc in (-step, 0, step):
                    nr = cr + dr
                    nc = cc + dc
                    if nr < lo_r or nr > hi_r or nc < lo_c or nc > hi_c:
                        continue
                    predict_inter(pred, 0, 0, ref, y0 + (nr >> 2), x0 + (nc >> 2), h, w, (nr & 3) * 2, (nc & 3) * 2,
                                  filters, pic_h, pic_w, BORDER_Y, mc_tmp)
                    s = _sad(src, sy, sx, pred, 0, 0, h, w) + np.int64(
                        lam_sad * (mvcost_r[_clamp(nr - best_r, -MV_MAX, MV_MAX) + MV_MAX]
                                   + mvcost_c[_clamp(nc - best_c, -MV_MAX, MV_MAX) + MV_MAX]) / 256.0)
                    if s < best:
                        best = s
                        br, bc = nr, nc
            cr, cc = br, bc
    out[0] = cr
    out[1] = cc


@njit(cache=True, _nrt=False)
def _forward(src, sy, sx, rec, ry, rx, resid, out):
    """Residual of the 4x4 block (source minus prediction) through the forward DCT into ``out``."""
    for r in range(4):
        a = np.uint64(sy + r)
        b = np.uint64(ry + r)
        for c in range(4):
            resid[4 * r + c] = np.int32(src[a, np.uint64(sx + c)]) - np.int32(rec[b, np.uint64(rx + c)])
    fdct4x4(resid, out)


@njit(cache=True, _nrt=False)
def _quant(coef, qp, btype, ctx, lam_coef, rdq, tok_cost, work, levels):
    """Quantize one block, by the trellis when ``rdq``; returns (eob, cost in 1/256 bit, nonzero ctx)."""
    cx = np.int64(ctx)  # contexts arrive as small unsigned ints; mixing those with int64 gives floats
    if rdq:
        eob = rd_quantize_block(coef, qp, btype, cx, lam_coef, tok_cost, work, levels)
    else:
        eob = quantize_block(coef, qp, btype, levels)
    cost, nz = block_token_cost(levels, eob, btype, cx, tok_cost)
    return eob, cost, nz


@njit(cache=True, _nrt=False)
def _code_luma16(src, sy, sx, y, y0, x0, qps, lam, rdq, tok_cost, work, actx, lctx, blk, eob, coefs, s16):
    """Code the luma of a macroblock predicted as a whole (a Y2 block plus 16 AC-only blocks)
    against the prediction now in ``y``; returns the token cost. Contexts are read, not updated."""
    dcs = s16[S_DCS]
    for k in range(16):
        _forward(src, sy + 4 * (k >> 2), sx + 4 * (k & 3), y, y0 + 4 * (k >> 2), x0 + 4 * (k & 3),
                 s16[S_RESID], coefs[k])
        dcs[k] = coefs[k, 0]
    fwht4x4(dcs, coefs[24])
    # Distortion weights (quantize.py): a DCT coefficient's squared error is 4x its pixels', a Y2
    # coefficient's 16x.
    e, cost, nz = _quant(coefs[24], qps[KIND_Y2], TYPE_Y2, actx[8] + lctx[8], 16.0 * lam, rdq, tok_cost, work,
                         blk[24])
    eob[24] = e
    above = s16[S_TMP]  # reuse as 4 + 4 small ints
    for i in range(4):
        above[i] = actx[i]
        above[4 + i] = lctx[i]
    for k in range(16):
        ctx = above[k & 3] + above[4 + (k >> 2)]
        e, c, nz = _quant(coefs[k], qps[KIND_Y1], TYPE_Y_AFTER_Y2, ctx, 4.0 * lam, rdq, tok_cost, work, blk[k])
        eob[k] = e
        cost += c
        above[k & 3] = nz
        above[4 + (k >> 2)] = nz
    return cost


@njit(cache=True, _nrt=False)
def _code_chroma(src_u, src_v, sy, sx, u, v, cy0, cx0, qps, lam, rdq, tok_cost, work, actx, lctx, blk, eob,
                 coefs, s16):
    """Code both chroma planes of a macroblock against the prediction now in ``u``, ``v``."""
    cost = 0
    for p in range(2):
        src = src_u if p == 0 else src_v
        rec = u if p == 0 else v
        a0 = actx[4 + 2 * p]
        a1 = actx[5 + 2 * p]
        l0 = lctx[4 + 2 * p]
        l1 = lctx[5 + 2 * p]
        for k in range(4):
            b = 16 + 4 * p + k
            _forward(src, sy + 4 * (k >> 1), sx + 4 * (k & 1), rec, cy0 + 4 * (k >> 1), cx0 + 4 * (k & 1),
                     s16[S_RESID], coefs[b])
            ctx = (a0 if (k & 1) == 0 else a1) + (l0 if (k >> 1) == 0 else l1)
            e, c, nz = _quant(coefs[b], qps[KIND_UV], TYPE_UV, ctx, 4.0 * lam, rdq, tok_cost, work, blk[b])
            eob[b] = e
            cost += c
            if k & 1:
                a1 = nz
            else:
                a0 = nz
            if k >> 1:
                l1 = nz
            else:
                l0 = nz
    return cost


@njit(cache=True, _nrt=False)
def _recon(y, u, v, y0, x0, cy0, cx0, blk, eob, has_y2, add_luma, f, s16):
    add_mb_residual(y, u, v, y0, x0, cy0, cx0, blk, eob, has_y2, add_luma, f, s16[S_DEQ], s16[S_RES],
                    s16[S_TMP], s16[S_WHT])


@njit(cache=True, _nrt=False)
def _clear(blk, eob, lo, hi):
    for b in range(lo, hi):
        eob[b] = 0
        for i in range(16):
            blk[b, i] = 0


@njit(cache=True, _nrt=False)
def _try_bpred(src, sy, sx, y, y0, x0, key_frame, bmodes, R, C, bcost_kf, bcost_inter, qps, lam, rdq, tok_cost,
               work, actx, lctx, blk, eob, coefs, f, s16, edge, above_right, best_modes, rank):
    """Choose and code each of the 16 subblock modes in turn (section 12.3), leaving the result
    reconstructed in ``y`` and coded in ``blk``; returns J (without the macroblock mode's cost)."""
    ctxs = s16[S_DCS]
    for i in range(4):
        ctxs[i] = actx[i]
        ctxs[4 + i] = lctx[i]
    total = np.int64(0)
    resid = s16[S_RESID]
    for k in range(16):
        by = y0 + 4 * (k >> 2)
        bx = x0 + 4 * (k & 3)
        a = lft = 0
        if key_frame:
            a = bmodes[R, C, k - 4] if k >= 4 else bmodes[R - 1, C, k + 12]
            lft = bmodes[R, C, k - 1] if k & 3 else bmodes[R, C - 1, k + 3]
        ctx = ctxs[k & 3] + ctxs[4 + (k >> 2)]
        # Rank the ten modes by prediction error plus mode cost; code only the best few in full.
        for m in range(10):
            predict_bpred_subblock(y, y0, x0, k, m, above_right, edge)
            mc = bcost_kf[a, lft, m] if key_frame else bcost_inter[m]
            rank[m] = _sse(src, sy + 4 * (k >> 2), sx + 4 * (k & 3), y, by, bx, 4, 4) + lam * mc / 256.0
        best_j = INF
        best_m = 0
        best_e = best_nz = 0
        keep_levels = s16[S_BEST_LEVELS]
        keep_pixels = s16[S_BEST_PIXELS]
        for t in range(BPRED_FULL_RD):
            m = 0
            for mm in range(1, 10):
                if rank[mm] < rank[m]:
                    m = mm
            rank[m] = INF
            predict_bpred_subblock(y, y0, x0, k, m, above_right, edge)
            _forward(src, sy + 4 * (k >> 2), sx + 4 * (k & 3), y, by, bx, resid, coefs[k])
            e, c, nz = _quant(coefs[k], qps[KIND_Y1], TYPE_Y_WITH_DC, ctx, 4.0 * lam, rdq, tok_cost, work, blk[k])
            _add_residual(y, by, bx, blk[k], e, -32769, f[Y1_DC], f[Y1_AC], s16[S_DEQ], s16[S_RES], s16[S_TMP])
            mc = bcost_kf[a, lft, m] if key_frame else bcost_inter[m]
            j = _sse(src, sy + 4 * (k >> 2), sx + 4 * (k & 3), y, by, bx, 4, 4) + lam * (c + mc) / 256.0
            if j < best_j:
                # Keep the winner's levels and pixels: coding it again would give the same.
                best_j = j
                best_m = m
                best_e = e
                best_nz = nz
                for i in range(16):
                    keep_levels[i] = blk[k, i]
                    keep_pixels[i] = y[by + (i >> 2), bx + (i & 3)]
        for i in range(16):
            blk[k, i] = keep_levels[i]
            y[by + (i >> 2), bx + (i & 3)] = keep_pixels[i]
        eob[k] = best_e
        nz = best_nz
        best_modes[k] = best_m
        bmodes[R, C, k] = best_m
        ctxs[k & 3] = nz
        ctxs[4 + (k >> 2)] = nz
        total += best_j
    return total


@njit(cache=True, _nrt=False)
def _subpel_sse(src, sy, sx, ref, y0, x0, mr, mc, filters, pic_h, pic_w, pred, mc_tmp):
    """Squared error of the 16x16 luma prediction at quarter-pel vector (mr, mc), predicted into ``pred``."""
    predict_inter(pred, 0, 0, ref, y0 + (mr >> 2), x0 + (mc >> 2), 16, 16, (mr & 3) * 2, (mc & 3) * 2, filters,
                  pic_h, pic_w, BORDER_Y, mc_tmp)
    return _sse(src, sy, sx, pred, 0, 0, 16, 16)


@njit(cache=True, _nrt=False)
def _motion_search(src, sy, sx, ref, y0, x0, best_r, best_c, start_r, start_c, lo_r, hi_r, lo_c, hi_c,
                   lam_sad, mvcost_r, mvcost_c, rng, subpel, filters, pic_h, pic_w, pred, mc_tmp, out):
    """Full-pel diamond search from (start_r, start_c) within +-rng pixels, then half- and
    quarter-pel refinement through the six-tap filters. Cost: SAD + lam_sad * bits of the vector
    difference from the best predictor at full pels, squared error + lam_sad^2 * bits at sub-pels.
    Vectors in quarter pixels, kept within [lo, hi].

    It could be two njit kernels (full-pel, then sub-pel) at the small cost of one more call per
    search; it stays whole because the stages hand over the vector and its cost, and the
    ``subpel`` branch already marks where one ends.
    """
    cr = (start_r >> 2) << 2
    cc = (start_c >> 2) << 2
    cr = _clamp(cr, lo_r, hi_r)
    cc = _clamp(cc, lo_c, hi_c)
    best = _sad16(src, sy, sx, ref, y0 + (cr >> 2), x0 + (cc >> 2), 1 << 30) + np.int64(
        lam_sad * (mvcost_r[_clamp(cr - best_r, -MV_MAX, MV_MAX) + MV_MAX]
                   + mvcost_c[_clamp(cc - best_c, -MV_MAX, MV_MAX) + MV_MAX]) / 256.0)
    step = 8
    while step >= 1:
        moved = True
        while moved:
            moved = False
            br, bc = cr, cc
            for d in range(4):
                nr = cr + (step * 4 if d == 0 else (-step * 4 if d == 1 else 0))
                nc = cc + (step * 4 if d == 2 else (-step * 4 if d == 3 else 0))
                if nr < lo_r or nr > hi_r or nc < lo_c or nc > hi_c:
                    continue
                if abs(nr - start_r) > rng * 4 or abs(nc - start_c) > rng * 4:
                    continue
                bits = (mvcost_r[_clamp(nr - best_r, -MV_MAX, MV_MAX) + MV_MAX]
                        + mvcost_c[_clamp(nc - best_c, -MV_MAX, MV_MAX) + MV_MAX])
                extra = np.int64(lam_sad * bits / 256.0)
                s = _sad16(src, sy, sx, ref, y0 + (nr >> 2), x0 + (nc >> 2), best - extra)
                if s + extra < best:
                    best = s + extra
                    br, bc = nr, nc
            if br != cr or bc != cc:
                cr, cc = br, bc
                moved = True
        step >>= 1
    if subpel:
        # Sub-pel positions are compared by squared error (as libvpx compares variance), with the
        # vector's bits at lambda. Each step tries the four neighbours and the one diagonal between
        # the better of each pair (as libvpx does): 5 filtered predictions a step instead of 8.
        lam = lam_sad * lam_sad
        best = _sse(src, sy, sx, ref, y0 + (cr >> 2), x0 + (cc >> 2), 16, 16) + np.int64(
            lam * (mvcost_r[_clamp(cr - best_r, -MV_MAX, MV_MAX) + MV_MAX]
                   + mvcost_c[_clamp(cc - best_c, -MV_MAX, MV_MAX) + MV_MAX]) / 256.0)
        for step in (2, 1):
            br, bc = cr, cc
            side = INF
            up = INF
            dr_best = -step
            dc_best = -step
            for d in range(5):
                if d < 2:
                    nr, nc = cr, cc + (-step if d == 0 else step)
                elif d < 4:
                    nr, nc = cr + (-step if d == 2 else step), cc
                else:
                    nr, nc = cr + dr_best, cc + dc_best
                if nr < lo_r or nr > hi_r or nc < lo_c or nc > hi_c:
                    continue
                s = _subpel_sse(src, sy, sx, ref, y0, x0, nr, nc, filters, pic_h, pic_w, pred, mc_tmp)
                s += np.int64(lam * (mvcost_r[_clamp(nr - best_r, -MV_MAX, MV_MAX) + MV_MAX]
                                     + mvcost_c[_clamp(nc - best_c, -MV_MAX, MV_MAX) + MV_MAX]) / 256.0)
                if d < 2 and s < side:
                    side = s
                    dc_best = nc - cc
                elif 2 <= d < 4 and s < up:
                    up = s
                    dr_best = nr - cr
                if s < best:
                    best = s
                    br, bc = nr, nc
            cr, cc = br, bc
    out[0] = cr
    out[1] = cc


@njit(cache=True, _nrt=False)
def _copy_mb(blk, eob, dst_blk, dst_eob):
    for b in range(25):
        dst_eob[b] = eob[b]
        for i in range(16):
            dst_blk[b, i] = blk[b, i]


@njit(cache=True, _nrt=False)
def _coded(eob):
    """How many coefficient positions a macroblock's 25 blocks code (0: nothing to code)."""
    n = 0
    for b in range(25):
        n += eob[b]
    return n


@njit(cache=True, _nrt=False)
def _finish_mb(eob, skip, R, C, actx, lctx, has_y2):
    """After a macroblock is coded: its skip flag and the token contexts it leaves."""
    skip[R, C] = 1 if _coded(eob) == 0 else 0
    _update_ctx(actx, lctx, eob, has_y2)


@njit(cache=True, _nrt=False)
def _extend_above_right(y, r, pic_w):
    """Above-right pixels for the next row's last macroblock, as reconstruct_frame extends them."""
    yr = BORDER_Y + 16 * r + 15
    for i in range(4):
        y[yr, BORDER_Y + pic_w + i] = y[yr, BORDER_Y + pic_w - 1]


@njit(cache=True, _nrt=False)
def _update_ctx(actx, lctx, eob, has_y2):
    """The token contexts a coded macroblock leaves (section 13.3), as the decoder sets them."""
    for b in range(16):
        nz = 1 if eob[b] > 0 else 0
        actx[b & 3] = nz
        lctx[b >> 2] = nz
    for p in range(2):
        for k in range(4):
            nz = 1 if eob[16 + 4 * p + k] > 0 else 0
            actx[4 + 2 * p + (k & 1)] = nz
            lctx[4 + 2 * p + (k >> 1)] = nz
    if has_y2:
        nz = 1 if eob[24] > 0 else 0
        actx[8] = nz
        lctx[8] = nz


@njit(cache=True, _nrt=False)
def encode_macroblocks(src_y, src_u, src_v, y, u, v, ly, lu, lv, gy, gu, gv, ay, au, av, use_golden, use_altref,
                       use_split, key_frame,
                       dq, qps, lam, rdq, tok_cost,
                       ymode_cost, uvmode_cost, bcost_kf, bcost_inter, ref_cost, mvcost_r, mvcost_c, sign_bias,
                       search_range, subpel, use_bpred, filters, full_pixel,
                       ymode, uvmode, ref, skip, bmodes, mvs, partitioning, coeffs, eobs, split_mv, split_try,
                       split_part_cost, split_new_cost,
                       above_ctx, lctx, tblk, teob, coefs, s16, work, imcost, edge, above_right, bm, near, cnt,
                       mv_out, pred, mc_tmp, rank, seen_mv, seen_cost, ref_best, mv_pred):
    """Choose, code and reconstruct every macroblock of a frame (see the module docstring).

    Candidates: the four whole-block intra modes and (``use_bpred``) B_PRED with the best of ten
    modes per subblock; on inter frames also ZEROMV, NEARESTMV, NEARMV and NEWMV from the last
    frame and golden (ZERO/NEAREST/NEAR from altref), and (``use_split``) SPLITMV from the last frame
    in 16x8 halves, 8x16 halves and 8x8 quarters, each part with its own vector (a small search from
    the macroblock's NEWMV vector, quarter-pel refinement when ``subpel``); ``split_part_cost`` is
    int32[4], the cost of each partitioning, and ``split_try`` int32[4, 2] scratch. For an inter
    macroblock coded whole, ``mv_pred[r, c]`` receives its best predictor (what a NEWMV vector is
    coded against); ``ref_best`` is int32[4, 2] scratch.
    Chroma: the best of four intra modes for intra macroblocks, the vector's prediction otherwise.
    Fills the mode arrays, ``coeffs``/``eobs`` and ``skip`` (1 where a macroblock has no
    coefficients), and returns the frame's SSE before loop filtering.

    It stays one function: its stages (the ``# ---`` comments: inter modes, SPLITMV, intra, final
    coding) share the running best candidate (``best_j``, ``best_kind``, ``best_ref``, its vector
    and partitioning, ...) and most of the sixty-odd arrays, which separate njit kernels would have
    to pass and return on every macroblock of the encoder's hot loop, while the work that stands
    alone is already in helper kernels (``_motion_search``, ``_try_bpred``, ``_code_luma16``, ...).
    """
    mb_rows, mb_cols = coeffs.shape[0], coeffs.shape[1]
    pic_h = 16 * mb_rows
    pic_w = 16 * mb_cols
    f = dq[0]
    lam_sad = np.sqrt(lam) * 1.0
    # B_PRED on inter frames only for macroblocks costing more than this (J of ~ 2 bits a pixel).
    bpred_gate = lam * 128.0
    # Intra candidates on inter frames only for macroblocks costing more than this (16 bits).
    intra_gate = lam * 16.0
    # Early skip below this squared error over the macroblock's 384 pixels: a residual this small
    # quantizes to nothing anyway (about a sixth of a quantizer step per pixel).
    skip_gate = 384 * f[Y1_AC] * f[Y1_AC] // 36
    last_best_r = last_best_c = last_new_r = last_new_c = 0
    split_bits = 0
    total_sse = np.int64(0)
    for i in range(above_ctx.shape[0]):
        for j in range(9):
            above_ctx[i, j] = 0
    for r in range(mb_rows):
        R = r + 1
        for j in range(9):
            lctx[j] = 0
        for c in range(mb_cols):
            C = c + 1
            sy, sx = 16 * r, 16 * c
            y0, x0 = BORDER_Y + 16 * r, BORDER_Y + 16 * c
            cy0, cx0 = BORDER_UV + 8 * r, BORDER_UV + 8 * c
            actx = above_ctx[c]
            blk = coeffs[r, c]
            eob = eobs[r, c]
            best_j = INF
            best_kind = -1   # 0..3 whole intra mode, 4 B_PRED, 5+ inter mode
            best_uv = 0
            best_mr = 0
            best_mc = 0
            intra_ref_cost = ref_cost[0] if not key_frame else 0
            best_nz = 1
            best_part = MV_QUARTERS
            # --- inter modes from the last frame (and the golden one when it differs) ---
            best_ref = LAST_FRAME
            n_seen = 0
            early = False
            best_dist = INF
            best_score = INF
            for rf in range(LAST_FRAME, ALTREF_FRAME + 1):
                if key_frame or early:
                    break
                if (rf == GOLDEN_FRAME and not use_golden) or (rf == ALTREF_FRAME and not use_altref):
                    continue
                ry = _pick(rf, ly, gy, ay)
                ru = _pick(rf, lu, gu, au)
                rv = _pick(rf, lv, gv, av)
                _find_near_mvs(ref, ymode, mvs, R, C, rf, sign_bias, near, cnt)
                inter_mode_costs(cnt, imcost)
                lo_r, hi_r, lo_c, hi_c = mv_bounds(r, c, mb_rows, mb_cols)
                best_r = _clamp(near[0, 0], lo_r, hi_r)
                best_c = _clamp(near[0, 1], lo_c, hi_c)
                ref_best[rf, 0] = best_r
                ref_best[rf, 1] = best_c
                if rf == LAST_FRAME:
                    last_best_r, last_best_c = best_r, best_c
                    split_bits = ref_cost[LAST_FRAME] + imcost[SPLITMV]
                # Altref (an older golden picture) gets the vectors its neighbours imply, no search.
                for k in range(4 if rf != ALTREF_FRAME else 3):
                    if k == 3:
                        # Early skip: ZERO or NEAREST from the last frame leaves no residual and
                        # little error (still background): take it without searching further.
                        if rf == LAST_FRAME and best_nz == 0 and best_dist <= skip_gate:
                            early = True
                            break
                        # Search range: at most 16 pixels beyond the frame, and a NEWMV
                        # difference < 1024.
                        _motion_search(src_y, sy, sx, ry, y0, x0, best_r, best_c, best_r, best_c, lo_r, hi_r, lo_c,
                                       hi_c, lam_sad, mvcost_r, mvcost_c, search_range, subpel, filters, pic_h,
                                       pic_w, pred, mc_tmp, mv_out)
                        if rf == LAST_FRAME:
                            last_new_r, last_new_c = mv_out[0], mv_out[1]
                    if k == 0:
                        mode, mr, mc = ZEROMV, 0, 0
                    elif k == 1:
                        mode = NEARESTMV
                        mr, mc = _clamp(near[1, 0], lo_r, hi_r), _clamp(near[1, 1], lo_c, hi_c)
                    elif k == 2:
                        mode = NEARMV
                        mr, mc = _clamp(near[2, 0], lo_r, hi_r), _clamp(near[2, 1], lo_c, hi_c)
                    else:
                        mode = NEWMV
                        mr, mc = mv_out[0], mv_out[1]
                    mode_bits = ref_cost[rf] + imcost[mode]
                    if mode == NEWMV:
                        mode_bits += (mvcost_r[_clamp(mr - best_r, -MV_MAX, MV_MAX) + MV_MAX]
                                      + mvcost_c[_clamp(mc - best_c, -MV_MAX, MV_MAX) + MV_MAX])
                    # The same prediction under another mode name (NEAREST or NEAR often is ZERO)
                    # codes the same residual: reuse its distortion and rate.
                    seen = -1
                    for t in range(n_seen):
                        if seen_mv[t, 0] == rf and seen_mv[t, 1] == mr and seen_mv[t, 2] == mc:
                            seen = t
                    if seen >= 0:
                        dist = seen_cost[seen, 0]
                        cost = seen_cost[seen, 1]
                        nz = seen_mv[seen, 3]
                    else:
                        mvs[R, C, 0, 0] = mr  # predict_inter_mb reads the vector from here
                        mvs[R, C, 0, 1] = mc
                        predict_inter_mb(y, u, v, ry, ru, rv, mvs, R, C, False, y0, x0, cy0, cx0, filters, pic_h,
                                         pic_w, full_pixel, mc_tmp)
                        # A prediction much worse than the best one seen is not worth coding.
                        score = (_sse(src_y, sy, sx, y, y0, x0, 16, 16) + _sse(src_u, 8 * r, 8 * c, u, cy0, cx0, 8, 8)
                                 + _sse(src_v, 8 * r, 8 * c, v, cy0, cx0, 8, 8) + lam * mode_bits / 256.0)
                        if score > 1.3 * best_score:
                            continue
                        if score < best_score:
                            best_score = score
                        _clear(tblk, teob, 0, 25)
                        cost = _code_luma16(src_y, sy, sx, y, y0, x0, qps, lam, False, tok_cost, work, actx, lctx,
                                            tblk, teob, coefs, s16)
                        cost += _code_chroma(src_u, src_v, 8 * r, 8 * c, u, v, cy0, cx0, qps, lam, False, tok_cost,
                                             work, actx, lctx, tblk, teob, coefs, s16)
                        _recon(y, u, v, y0, x0, cy0, cx0, tblk, teob, True, True, f, s16)
                        dist = (_sse(src_y, sy, sx, y, y0, x0, 16, 16) + _sse(src_u, 8 * r, 8 * c, u, cy0, cx0, 8, 8)
                                + _sse(src_v, 8 * r, 8 * c, v, cy0, cx0, 8, 8))
                        nz = _coded(teob)
                        seen_mv[n_seen, 0] = rf
                        seen_mv[n_seen, 1] = mr
                        seen_mv[n_seen, 2] = mc
                        seen_mv[n_seen, 3] = nz
                        seen_cost[n_seen, 0] = dist
                        seen_cost[n_seen, 1] = cost
                        n_seen += 1
                    j = dist + lam * (cost + mode_bits) / 256.0
                    if j < best_j:
                        best_j = j
                        best_dist = dist
                        best_kind = mode
                        best_mr, best_mc = mr, mc
                        best_nz = nz
                        best_ref = rf
            # --- SPLITMV from the last frame: halves (16x8, 8x16) and quarters, each part with its own vector ---
            if use_split and not key_frame and not early:
                # Vectors within the frame's reach and codable as a NEW4X4 difference.
                # (Whole pixels at both ends, where the full-pel search starts and steps.)
                lo_r, hi_r, lo_c, hi_c = mv_bounds(r, c, mb_rows, mb_cols)
                lo_r = ((max(lo_r, last_best_r - MV_MAX) + 3) >> 2) << 2
                hi_r = (min(hi_r, last_best_r + MV_MAX) >> 2) << 2
                lo_c = ((max(lo_c, last_best_c - MV_MAX) + 3) >> 2) << 2
                hi_c = (min(hi_c, last_best_c + MV_MAX) >> 2) << 2
                for part in (MV_TOP_BOTTOM, MV_LEFT_RIGHT, MV_QUARTERS):
                    bits = split_bits + split_part_cost[part]
                    ph = 8 if part != MV_LEFT_RIGHT else 16
                    pw = 8 if part != MV_TOP_BOTTOM else 16
                    for j in range(SPLIT_MV_COUNTS[part]):
                        py = 8 * (j >> 1) if part == MV_QUARTERS else (8 * j if part == MV_TOP_BOTTOM else 0)
                        px = 8 * (j & 1) if part == MV_QUARTERS else (8 * j if part == MV_LEFT_RIGHT else 0)
                        _search_part(src_y, sy + py, sx + px, ly, y0 + py, x0 + px, ph, pw, last_new_r, last_new_c,
                                     last_best_r, last_best_c, lo_r, hi_r, lo_c, hi_c, lam_sad, mvcost_r, mvcost_c,
                                     subpel, filters, pic_h, pic_w, pred, mc_tmp, mv_out)
                        split_try[j, 0] = mv_out[0]
                        split_try[j, 1] = mv_out[1]
                        bits += split_new_cost + (mvcost_r[_clamp(mv_out[0] - last_best_r, -MV_MAX, MV_MAX) + MV_MAX]
                                                  + mvcost_c[_clamp(mv_out[1] - last_best_c, -MV_MAX, MV_MAX) + MV_MAX])
                    for k in range(16):
                        j = SPLIT_MV_PARTITIONS[part, k]
                        mvs[R, C, k, 0] = split_try[j, 0]
                        mvs[R, C, k, 1] = split_try[j, 1]
                    predict_inter_mb(y, u, v, ly, lu, lv, mvs, R, C, True, y0, x0, cy0, cx0, filters, pic_h, pic_w,
                                     full_pixel, mc_tmp)
                    _clear(tblk, teob, 0, 25)
                    cost = _code_luma_blocks(src_y, sy, sx, y, y0, x0, qps, lam, False, tok_cost, work, actx, lctx,
                                             tblk, teob, coefs, s16)
                    cost += _code_chroma(src_u, src_v, 8 * r, 8 * c, u, v, cy0, cx0, qps, lam, False, tok_cost, work,
                                         actx, lctx, tblk, teob, coefs, s16)
                    _recon(y, u, v, y0, x0, cy0, cx0, tblk, teob, False, True, f, s16)
                    j = (_sse(src_y, sy, sx, y, y0, x0, 16, 16) + _sse(src_u, 8 * r, 8 * c, u, cy0, cx0, 8, 8)
                         + _sse(src_v, 8 * r, 8 * c, v, cy0, cx0, 8, 8) + lam * (cost + bits) / 256.0)
                    if j < best_j:
                        best_j = j
                        best_kind = SPLITMV
                        best_ref = LAST_FRAME
                        best_part = part
                        for jj in range(4):
                            split_mv[jj, 0] = split_try[jj, 0]
                            split_mv[jj, 1] = split_try[jj, 1]
                        best_nz = _coded(teob)
            # Intra modes, on an inter frame only where the best inter candidate leaves a residual.
            if key_frame or (best_nz > 0 and not early and best_j > intra_gate):
                # --- chroma intra mode (shared by the intra candidates) ---
                uv_j = INF
                for m in range(4):
                    predict_mb_intra(u, cy0, cx0, 8, m, r > 0, c > 0)
                    predict_mb_intra(v, cy0, cx0, 8, m, r > 0, c > 0)
                    _clear(tblk, teob, 0, 25)
                    cost = _code_chroma(src_u, src_v, 8 * r, 8 * c, u, v, cy0, cx0, qps, lam, False, tok_cost, work,
                                        actx, lctx, tblk, teob, coefs, s16)
                    _recon(y, u, v, y0, x0, cy0, cx0, tblk, teob, False, False, f, s16)
                    j = (_sse(src_u, 8 * r, 8 * c, u, cy0, cx0, 8, 8) + _sse(src_v, 8 * r, 8 * c, v, cy0, cx0, 8, 8)
                         + lam * (cost + uvmode_cost[m]) / 256.0)
                    if j < uv_j:
                        uv_j = j
                        best_uv = m
                # --- whole-block intra modes ---
                for m in range(4):
                    predict_mb_intra(y, y0, x0, 16, m, r > 0, c > 0)
                    _clear(tblk, teob, 0, 25)
                    cost = _code_luma16(src_y, sy, sx, y, y0, x0, qps, lam, False, tok_cost, work, actx, lctx, tblk,
                                        teob, coefs, s16)
                    _recon(y, u, v, y0, x0, cy0, cx0, tblk, teob, True, True, f, s16)
                    j = (_sse(src_y, sy, sx, y, y0, x0, 16, 16) + lam * (cost + ymode_cost[m] + intra_ref_cost) / 256.0
                         + uv_j)
                    if j < best_j:
                        best_j = j
                        best_kind = m
                # --- B_PRED ---
                if use_bpred and (key_frame or best_j > bpred_gate):
                    _clear(tblk, teob, 0, 25)
                    j = _try_bpred(src_y, sy, sx, y, y0, x0, key_frame, bmodes, R, C, bcost_kf, bcost_inter, qps, lam,
                                   False, tok_cost, work, actx, lctx, tblk, teob, coefs, f, s16, edge, above_right, bm,
                                   rank)
                    j += lam * (ymode_cost[B_PRED] + intra_ref_cost) / 256.0 + uv_j
                    if j < best_j:
                        best_j = j
                        best_kind = 4
            # --- code the winner for good (with the trellis quantizer when rdq) ---
            _clear(blk, eob, 0, 25)
            if best_kind <= 4:
                ymode[R, C] = best_kind
                uvmode[R, C] = best_uv
                ref[R, C] = INTRA_FRAME
                for k in range(16):
                    mvs[R, C, k, 0] = 0
                    mvs[R, C, k, 1] = 0
                if best_kind == 4:
                    _try_bpred(src_y, sy, sx, y, y0, x0, key_frame, bmodes, R, C, bcost_kf, bcost_inter, qps,
                               lam, rdq, tok_cost, work, actx, lctx, blk, eob, coefs, f, s16, edge, above_right,
                               bm, rank)
                else:
                    for k in range(16):
                        bmodes[R, C, k] = IMPLIED_BMODE[best_kind]
                    predict_mb_intra(y, y0, x0, 16, best_kind, r > 0, c > 0)
                    _code_luma16(src_y, sy, sx, y, y0, x0, qps, lam, rdq, tok_cost, work, actx, lctx, blk, eob,
                                 coefs, s16)
                predict_mb_intra(u, cy0, cx0, 8, best_uv, r > 0, c > 0)
                predict_mb_intra(v, cy0, cx0, 8, best_uv, r > 0, c > 0)
                _code_chroma(src_u, src_v, 8 * r, 8 * c, u, v, cy0, cx0, qps, lam, rdq, tok_cost, work, actx, lctx,
                             blk, eob, coefs, s16)
                _recon(y, u, v, y0, x0, cy0, cx0, blk, eob, best_kind != 4, best_kind != 4, f, s16)
            elif best_kind == SPLITMV:
                ymode[R, C] = SPLITMV
                uvmode[R, C] = 0
                ref[R, C] = LAST_FRAME
                partitioning[R, C] = best_part
                for k in range(16):
                    bmodes[R, C, k] = 0
                    mvs[R, C, k, 0] = split_mv[SPLIT_MV_PARTITIONS[best_part, k], 0]
                    mvs[R, C, k, 1] = split_mv[SPLIT_MV_PARTITIONS[best_part, k], 1]
                predict_inter_mb(y, u, v, ly, lu, lv, mvs, R, C, True, y0, x0, cy0, cx0, filters, pic_h, pic_w,
                                 full_pixel, mc_tmp)
                _code_luma_blocks(src_y, sy, sx, y, y0, x0, qps, lam, rdq, tok_cost, work, actx, lctx, blk, eob,
                                  coefs, s16)
                _code_chroma(src_u, src_v, 8 * r, 8 * c, u, v, cy0, cx0, qps, lam, rdq, tok_cost, work, actx, lctx,
                             blk, eob, coefs, s16)
                _recon(y, u, v, y0, x0, cy0, cx0, blk, eob, False, True, f, s16)
            else:
                ymode[R, C] = best_kind
                uvmode[R, C] = 0
                ref[R, C] = best_ref
                mv_pred[r, c, 0] = ref_best[best_ref, 0]
                mv_pred[r, c, 1] = ref_best[best_ref, 1]
                for k in range(16):
                    bmodes[R, C, k] = 0
                    mvs[R, C, k, 0] = best_mr
                    mvs[R, C, k, 1] = best_mc
                predict_inter_mb(y, u, v, _pick(best_ref, ly, gy, ay), _pick(best_ref, lu, gu, au),
                                 _pick(best_ref, lv, gv, av), mvs, R, C, False, y0, x0, cy0, cx0, filters, pic_h,
                                 pic_w, full_pixel, mc_tmp)
                _code_luma16(src_y, sy, sx, y, y0, x0, qps, lam, rdq, tok_cost, work, actx, lctx, blk, eob, coefs,
                             s16)
                _code_chroma(src_u, src_v, 8 * r, 8 * c, u, v, cy0, cx0, qps, lam, rdq, tok_cost, work, actx, lctx,
                             blk, eob, coefs, s16)
                _recon(y, u, v, y0, x0, cy0, cx0, blk, eob, True, True, f, s16)
            _finish_mb(eob, skip, R, C, actx, lctx, best_kind != 4 and best_kind != SPLITMV)
            total_sse += (_sse(src_y, sy, sx, y, y0, x0, 16, 16) + _sse(src_u, 8 * r, 8 * c, u, cy0, cx0, 8, 8)
                          + _sse(src_v, 8 * r, 8 * c, v, cy0, cx0, 8, 8))
        _extend_above_right(y, r, pic_w)
    return total_sse


def _token_paths():
    """For each token, the (node, bit) steps from the root of COEFF_TREE to its leaf: node k is
    probability k of the context (section 13.2)."""
    from .tables import COEFF_TREE
    paths = np.full((12, 11, 2), -1, np.int64)
    lengths = np.zeros(12, np.int64)

    def walk(i, path):
        for b in range(2):
            nxt = int(COEFF_TREE[i + b])
            step = path + [(i >> 1, b)]
            if nxt > 0:
                walk(nxt, step)
            else:
                tok = -nxt
                lengths[tok] = len(step)
                for n, (node, bit) in enumerate(step):
                    paths[tok, n] = node, bit
    walk(0, [])
    return paths, lengths


TOKEN_PATHS, TOKEN_PATH_LENGTHS = _token_paths()


@njit(cache=True, _nrt=False)
def _count_block(levels, eob, btype, ctx, counts):
    """Add one block's coded bools to ``counts[type, band, ctx, node, bit]`` (section 13)."""
    first = 1 if btype == TYPE_Y_AFTER_Y2 else 0
    end = 16 if eob > 16 else eob
    c = np.int64(ctx)
    after_zero = 0
    i = first
    while i < end:
        v = np.int64(levels[ZIGZAG[i]])
        if v < 0:
            v = -v
        if v > MAX_LEVEL:
            v = MAX_LEVEL
        tok = LEVEL_TOKEN[v]
        band = COEFF_BANDS[i]
        for n in range(1 if after_zero else 0, TOKEN_PATH_LENGTHS[tok]):
            counts[btype, band, c, TOKEN_PATHS[tok, n, 0], TOKEN_PATHS[tok, n, 1]] += 1
        c = 2 if v > 1 else v
        after_zero = 1 if v == 0 else 0
        i += 1
    if i < 16:
        counts[btype, COEFF_BANDS[i], c, 0, 0] += 1  # DCT_EOB: bit 0 at the root
    return 1 if i > first else 0


@njit(cache=True, _nrt=False)
def count_tokens(coeffs, eobs, ymodes, skips, above, left, counts):
    """The bools every token of a frame codes, per probability (for the probability updates of
    section 13.4), with the contexts the writer uses. ``ymodes``/``skips`` without border."""
    mb_rows, mb_cols = ymodes.shape
    for i in range(mb_cols):
        for j in range(9):
            above[i, j] = 0
    for r in range(mb_rows):
        for j in range(9):
            left[j] = 0
        for c in range(mb_cols):
            has_y2 = ymodes[r, c] != B_PRED and ymodes[r, c] != SPLITMV
            if skips[r, c]:
                for j in range(8):
                    above[c, j] = 0
                    left[j] = 0
                if has_y2:
                    above[c, 8] = 0
                    left[8] = 0
                continue
            if has_y2:
                nz = _count_block(coeffs[r, c, 24], eobs[r, c, 24], TYPE_Y2, above[c, 8] + left[8], counts)
                above[c, 8] = nz
                left[8] = nz
            for b in range(24):
                btype = (TYPE_Y_AFTER_Y2 if has_y2 else TYPE_Y_WITH_DC) if b < 16 else TYPE_UV
                a = ABOVE_CTX[b]
                lc = LEFT_CTX[b]
                nz = _count_block(coeffs[r, c, b], eobs[r, c, b], btype, above[c, a] + left[lc], counts)
                above[c, a] = nz
                left[lc] = nz


@njit(cache=True, _nrt=False)
def _code_luma_blocks(src, sy, sx, y, y0, x0, qps, lam, rdq, tok_cost, work, actx, lctx, blk, eob, coefs, s16):
    """Code the 16 luma blocks of a macroblock without Y2 (SPLITMV): each with its own DC."""
    ctxs = s16[S_DCS]
    for i in range(4):
        ctxs[i] = actx[i]
        ctxs[4 + i] = lctx[i]
    cost = 0
    for k in range(16):
        _forward(src, sy + 4 * (k >> 2), sx + 4 * (k & 3), y, y0 + 4 * (k >> 2), x0 + 4 * (k & 3),
                 s16[S_RESID], coefs[k])
        ctx = ctxs[k & 3] + ctxs[4 + (k >> 2)]
        e, c, nz = _quant(coefs[k], qps[KIND_Y1], TYPE_Y_WITH_DC, ctx, 4.0 * lam, rdq, tok_cost, work, blk[k])
        eob[k] = e
        cost += c
        ctxs[k & 3] = nz
        ctxs[4 + (k >> 2)] = nz
    return cost


@njit(cache=True, _nrt=False)
def rebase_macroblocks(src_y, src_u, src_v, y, u, v, ly, lu, lv, gy, gu, gv, ay, au, av, dq, qps, segment, lam,
                       rdq, tok_cost, ymode, uvmode, ref, bmodes, mvs, skip, filters, full_pixel, coeffs, eobs,
                       above_ctx, lctx, coefs, s16, work, edge, above_right, mc_tmp):
    """Code every macroblock with the modes, references and vectors it already has (ExCamera's
    rebase): predict from the given references as the decoder does, then quantize the residual
    toward the source (per-segment quantizers ``qps[segment]``). Fills ``coeffs``, ``eobs`` and
    ``skip``; leaves the reconstruction before loop filtering in y, u, v.

    It stays one function: the per-step work is already in helper kernels, and the B_PRED branch
    left inline (it could be one more kernel, one call per such macroblock) shows what keeps the
    rebase bit-exact, each subblock predicted from the one reconstructed before it.
    """
    mb_rows, mb_cols = coeffs.shape[0], coeffs.shape[1]
    pic_h = 16 * mb_rows
    pic_w = 16 * mb_cols
    for i in range(above_ctx.shape[0]):
        for j in range(9):
            above_ctx[i, j] = 0
    for r in range(mb_rows):
        R = r + 1
        for j in range(9):
            lctx[j] = 0
        for c in range(mb_cols):
            C = c + 1
            sy, sx = 16 * r, 16 * c
            y0, x0 = BORDER_Y + 16 * r, BORDER_Y + 16 * c
            cy0, cx0 = BORDER_UV + 8 * r, BORDER_UV + 8 * c
            actx = above_ctx[c]
            blk = coeffs[r, c]
            eob = eobs[r, c]
            seg = segment[r, c]
            f = dq[seg]
            qp = qps[seg]
            _clear(blk, eob, 0, 25)
            mode = ymode[R, C]
            has_y2 = mode != B_PRED and mode != SPLITMV
            if ref[R, C] == INTRA_FRAME:
                if mode == B_PRED:
                    ctxs = s16[S_Y2]
                    for i in range(4):
                        ctxs[i] = actx[i]
                        ctxs[4 + i] = lctx[i]
                    for k in range(16):
                        by = y0 + 4 * (k >> 2)
                        bx = x0 + 4 * (k & 3)
                        predict_bpred_subblock(y, y0, x0, k, bmodes[R, C, k], above_right, edge)
                        _forward(src_y, sy + 4 * (k >> 2), sx + 4 * (k & 3), y, by, bx, s16[S_RESID], coefs[k])
                        ctx = ctxs[k & 3] + ctxs[4 + (k >> 2)]
                        e, cst, nz = _quant(coefs[k], qp[KIND_Y1], TYPE_Y_WITH_DC, ctx, 4.0 * lam, rdq, tok_cost,
                                            work, blk[k])
                        eob[k] = e
                        _add_residual(y, by, bx, blk[k], e, -32769, f[Y1_DC], f[Y1_AC], s16[S_DEQ], s16[S_RES],
                                      s16[S_TMP])
                        ctxs[k & 3] = nz
                        ctxs[4 + (k >> 2)] = nz
                else:
                    predict_mb_intra(y, y0, x0, 16, mode, r > 0, c > 0)
                    _code_luma16(src_y, sy, sx, y, y0, x0, qp, lam, rdq, tok_cost, work, actx, lctx, blk, eob,
                                 coefs, s16)
                predict_mb_intra(u, cy0, cx0, 8, uvmode[R, C], r > 0, c > 0)
                predict_mb_intra(v, cy0, cx0, 8, uvmode[R, C], r > 0, c > 0)
            else:
                rf = ref[R, C]
                predict_inter_mb(y, u, v, _pick(rf, ly, gy, ay), _pick(rf, lu, gu, au),
                                 _pick(rf, lv, gv, av), mvs, R, C, mode == SPLITMV, y0, x0, cy0, cx0, filters,
                                 pic_h, pic_w, full_pixel, mc_tmp)
                if has_y2:
                    _code_luma16(src_y, sy, sx, y, y0, x0, qp, lam, rdq, tok_cost, work, actx, lctx, blk, eob,
                                 coefs, s16)
                else:
                    _code_luma_blocks(src_y, sy, sx, y, y0, x0, qp, lam, rdq, tok_cost, work, actx, lctx, blk,
                                      eob, coefs, s16)
            _code_chroma(src_u, src_v, 8 * r, 8 * c, u, v, cy0, cx0, qp, lam, rdq, tok_cost, work, actx, lctx, blk,
                         eob, coefs, s16)
            intra_bpred = ref[R, C] == INTRA_FRAME and mode == B_PRED
            _recon(y, u, v, y0, x0, cy0, cx0, blk, eob, has_y2, not intra_bpred, f, s16)
            _finish_mb(eob, skip, R, C, actx, lctx, has_y2)
        _extend_above_right(y, r, pic_w)
