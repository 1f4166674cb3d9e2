"""The VP8 decoder (RFC 6386), staged: frame header -> macroblock headers -> tokens ->
reconstruction -> loop filter -> reference update.

``decode_frame(state, frame)`` is a pure function of the previous ``DecoderState`` and one compressed
frame; ``Decoder`` is a convenience holder of the current state. Where libvpx and the RFC text
differ, we follow libvpx (the conformance vectors' MD5s come from it) and say so.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np

from . import tables
from .boolcoder import BoolDecoder, bd_init, bd_overrun, STATE_SIZE
from .errors import CorruptFrameError
from .header import FrameHeader, FrameTag, read_frame_header
from .image import Image
from .jit import njit
from .loopfilter import loop_filter_frame
from .modes import allocate_mode_info, read_modes
from .predict import BORDER_UV, BORDER_Y
from .reconstruct import reconstruct_frame
from .state import DecoderState, Picture, _frozen
from .tokens import read_tokens

_KEY_FRAME_RESET = dict(
    coeff_probs=tables.DEFAULT_COEFF_PROBS, ymode_probs=tables.DEFAULT_YMODE_PROBS,
    uv_mode_probs=tables.DEFAULT_UV_MODE_PROBS, mv_probs=tables.DEFAULT_MV_PROBS,
    segment_absolute=False, segment_quant=_frozen(np.zeros(4, np.int8)),
    segment_lf=_frozen(np.zeros(4, np.int8)), ref_lf_deltas=_frozen(np.zeros(4, np.int8)),
    mode_lf_deltas=_frozen(np.zeros(4, np.int8)),
)


def _clamp(v: int, lo: int, hi: int) -> int:
    return lo if v < lo else hi if v > hi else v


def dequant_factors(hdr: FrameHeader) -> np.ndarray:
    """Section 14.1 (and 9.3 for segments): six factors per segment, in reconstruct's column order."""
    q, seg = hdr.quant, hdr.segmentation
    dq = np.zeros((4, 6), np.int32)
    for s in range(4):
        base = int(q.y_ac)
        if seg.enabled:  # Python ints: a segment value may be a numpy int8, which would wrap
            base = int(seg.quant[s]) if seg.absolute else base + int(seg.quant[s])
        base = _clamp(base, 0, 127)

        def dc(delta):
            return int(tables.DC_QLOOKUP[_clamp(base + int(delta), 0, 127)])

        def ac(delta):
            return int(tables.AC_QLOOKUP[_clamp(base + int(delta), 0, 127)])

        dq[s] = (dc(q.y_dc_delta), ac(0), 2 * dc(q.y2_dc_delta), max(ac(q.y2_ac_delta) * 155 // 100, 8),
                 min(dc(q.uv_dc_delta), 132), ac(q.uv_ac_delta))
    return dq


def segment_filter_levels(hdr: FrameHeader) -> np.ndarray:
    """Section 9.6: the loop-filter level of each segment (the frame's level without segments),
    before the per-macroblock deltas."""
    lf, seg = hdr.loop_filter, hdr.segmentation
    per_seg = np.full(4, lf.level, np.int32)
    if seg.enabled:
        for s in range(4):
            per_seg[s] = seg.lf[s] if seg.absolute else lf.level + seg.lf[s]
    return np.clip(per_seg, 0, 63).astype(np.int32)


@njit(cache=True, _nrt=False)
def _filter_levels(seg_levels, segment, ref, ymode, deltas_enabled, ref_deltas, mode_deltas, levels):
    """Section 9.6 / 15.1: each macroblock's loop-filter level (libvpx vp8_loop_filter_frame) into
    ``levels``. ``ref`` and ``ymode`` carry the border row and column of ``allocate_mode_info``."""
    mb_rows, mb_cols = segment.shape
    for r in range(mb_rows):
        for c in range(mb_cols):
            level = np.int32(seg_levels[segment[r, c]])
            if deltas_enabled:
                rf = ref[r + 1, c + 1]
                mode = ymode[r + 1, c + 1]
                level += ref_deltas[rf]
                if rf == tables.INTRA_FRAME:
                    if mode == tables.B_PRED:
                        level += mode_deltas[0]
                elif mode == tables.ZEROMV:
                    level += mode_deltas[1]
                elif mode == tables.SPLITMV:
                    level += mode_deltas[3]
                else:
                    level += mode_deltas[2]
                level = 0 if level < 0 else (63 if level > 63 else level)
            levels[r, c] = level


@njit(cache=True, _nrt=False)
def _inner_edges(eobs, ymode, inner):
    """Section 15.1: whether each macroblock's inner edges are filtered: it has coefficients, or
    is B_PRED or SPLITMV."""
    mb_rows, mb_cols = inner.shape
    for r in range(mb_rows):
        for c in range(mb_cols):
            mode = ymode[r + 1, c + 1]
            any_coeff = False
            for k in range(25):
                any_coeff |= eobs[r, c, k] > 0
            inner[r, c] = any_coeff or mode == tables.B_PRED or mode == tables.SPLITMV


@njit(cache=True, _nrt=False)
def _prepare_edges(plane, border, n):
    """The out-of-frame neighbours intra prediction sees (section 12.2): 127 above the frame
    (including the corner and the above-right pixels), 129 left of it, for n rows."""
    for c in range(plane.shape[1]):
        plane[border - 1, c] = 127
    for r in range(n):
        plane[border + r, border - 1] = 129


@njit(cache=True, _nrt=False)
def _extend_border(plane, border):
    """``Picture.extend_border`` for one plane: replicate the edge pixels into the border."""
    rows, cols = plane.shape
    for r in range(border, rows - border):
        left = plane[r, border]
        right = plane[r, cols - border - 1]
        for c in range(border):
            plane[r, c] = left
            plane[r, cols - border + c] = right
    for r in range(border):
        for c in range(cols):
            plane[r, c] = plane[border, c]
            plane[rows - border + r, c] = plane[rows - border - 1, c]


@njit(cache=True)
def decode_pixels(y, u, v, ly, lu, lv, gy, gu, gv, ay, au, av, ymode, uvmode, ref, bmodes, mvs, coeffs, eobs,
                  segment, dq, filters, full_pixel, filter_frame, seg_levels, deltas_enabled, ref_deltas,
                  mode_deltas, simple, sharpness, key_frame):
    """Stages 4-6 of ``decode_frame`` in one kernel: reconstruction into the new picture's planes
    y, u, v (see ``reconstruct_frame``), the loop filter when ``filter_frame`` (the frame's level
    is not 0) and the border. One kernel, not three calls from Python with numpy in between: the
    per-frame arrays are made here and one cached entry point is loaded at start-up. (The shown
    picture is copied out by numpy, whose row copies are memcpy: faster than a byte loop here.)"""
    mb_rows, mb_cols = segment.shape
    _prepare_edges(y, BORDER_Y, 16 * mb_rows)
    _prepare_edges(u, BORDER_UV, 8 * mb_rows)
    _prepare_edges(v, BORDER_UV, 8 * mb_rows)
    reconstruct_frame(y, u, v, ly, lu, lv, gy, gu, gv, ay, au, av, ymode, uvmode, ref, bmodes, mvs, coeffs, eobs,
                      segment, dq, filters, full_pixel)
    if filter_frame:
        levels = np.empty((mb_rows, mb_cols), np.uint8)
        _filter_levels(seg_levels, segment, ref, ymode, deltas_enabled, ref_deltas, mode_deltas, levels)
        inner = np.empty((mb_rows, mb_cols), np.bool_)
        _inner_edges(eobs, ymode, inner)
        loop_filter_frame(y, u, v, BORDER_Y, BORDER_UV, levels, inner, simple, sharpness, key_frame)
    _extend_border(y, BORDER_Y)
    _extend_border(u, BORDER_UV)
    _extend_border(v, BORDER_UV)


def _partition_bounds(buf: np.ndarray, start: int, count: int) -> list[tuple[int, int]]:
    """Section 9.5: token partitions follow the first one, sizes in 3-byte little-endian fields.

    As libvpx, a partition that is empty or runs past the frame is an error; the last one takes
    what remains.
    """
    n = len(buf)
    table_end = start + 3 * (count - 1)
    if table_end > n:
        raise CorruptFrameError(f"partition size table runs past the end of the frame (offset {start})")
    bounds = []
    pos = table_end
    for i in range(count):
        if i < count - 1:
            o = start + 3 * i
            size = int(buf[o]) | int(buf[o + 1]) << 8 | int(buf[o + 2]) << 16
        else:
            size = n - pos
        if size <= 0 or pos + size > n:
            raise CorruptFrameError(f"token partition {i + 1} ({size} bytes at offset {pos}) "
                                    f"does not fit in the {n}-byte frame")
        bounds.append((pos, pos + size))
        pos += size
    return bounds


def coding_state(state: DecoderState, tag: FrameTag) -> DecoderState:
    """The state a frame with this tag is coded against: ``state`` itself for an interframe, and
    for a key frame ``state`` with its size and the values a key frame resets to their defaults
    (probabilities, segment values, loop-filter deltas; sections 9.3, 9.6, 9.11)."""
    if not tag.key_frame:
        if not state.has_keyframe:
            raise CorruptFrameError("interframe with no key frame before it")
        return state
    mb_rows, mb_cols = (tag.height + 15) // 16, (tag.width + 15) // 16
    segment_map = state.segment_map
    if segment_map.shape != (mb_rows, mb_cols):
        segment_map = np.zeros((mb_rows, mb_cols), np.uint8)
    # dataclasses.replace, not __dict__: the state may hold its cached digest payload
    return dataclasses.replace(state, **_KEY_FRAME_RESET, segment_map=segment_map,
                               width=tag.width, height=tag.height,
                               horiz_scale=tag.horiz_scale, vert_scale=tag.vert_scale)


class FrameSyntax(NamedTuple):
    """Everything ``parse_frame_syntax`` reads from a frame (sections 9-13), before reconstruction."""

    prev: DecoderState          # the state the frame is coded against (``coding_state``)
    header: FrameHeader
    modes: dict                 # ``modes.allocate_mode_info`` arrays, filled by ``read_modes``
    segment_map: np.ndarray     # the map in force after this frame
    coeffs: np.ndarray          # (mb_rows, mb_cols, 25, 16) int16 quantized levels, raster order
    eobs: np.ndarray            # (mb_rows, mb_cols, 25) uint8
    bounds: list                # [(start, end)] of each token partition in the frame
    bad_row: int                # first macroblock row whose token partition ran out of data, or -1


def parse_frame_syntax(state: DecoderState, frame: bytes) -> FrameSyntax:
    """Stages 1-3 of ``decode_frame``: frame header, macroblock headers and tokens, no pixels."""
    buf = np.frombuffer(frame, np.uint8)
    tag = FrameTag.read(buf)
    prev = coding_state(state, tag)
    mb_rows, mb_cols = prev.mb_rows, prev.mb_cols
    # libvpx checks the first partition against the bytes after the 3-byte tag, and its bool
    # decoder may read on into the token partitions; we do the same.
    first_start = tag.header_size
    if 3 + tag.first_part_size > len(buf) or first_start > len(buf):
        raise CorruptFrameError(f"first partition ({tag.first_part_size} bytes) runs past the end "
                                f"of the {len(buf)}-byte frame")
    bd = BoolDecoder(buf, first_start, len(buf))
    hdr = read_frame_header(bd, tag, prev)

    modes = allocate_mode_info(mb_rows, mb_cols)
    seg = hdr.segmentation
    segment_map = prev.segment_map.copy()  # a fresh array: states never share writable data
    sign_bias = np.array([0, 0, hdr.refs.sign_bias_golden, hdr.refs.sign_bias_altref], np.int64)
    read_modes(bd.st, buf, tag.key_frame, seg.update_map, np.array(seg.tree_probs, np.uint8),
               segment_map, hdr.skip_enabled, hdr.prob_skip, hdr.prob_intra, hdr.prob_last,
               hdr.prob_golden, hdr.ymode_probs.copy(), hdr.uv_mode_probs.copy(), hdr.mv_probs.copy(), sign_bias,
               modes["ymode"], modes["uvmode"], modes["ref"], modes["skip"], modes["bmodes"],
               modes["mvs"], modes["partitioning"], modes["sub_mv_modes"])
    # Stricter than libvpx (which flags the frame and shows it): a first partition that ran out
    # of data means the sizes are forged or the frame truncated, so we stop before allocating.
    if bd.overrun():
        raise CorruptFrameError(f"first partition ends before its {mb_rows * mb_cols} macroblock "
                                f"headers do (frame of {len(buf)} bytes)")

    first_end = first_start + tag.first_part_size
    bounds = _partition_bounds(buf, first_end, 1 << hdr.log2_partitions)
    part_st = np.zeros((len(bounds), STATE_SIZE), np.int64)
    for i, (s, e) in enumerate(bounds):
        bd_init(part_st[i], buf, s, e)
    coeffs = np.zeros((mb_rows, mb_cols, 25, 16), np.int16)
    eobs = np.zeros((mb_rows, mb_cols, 25), np.uint8)
    bad_row = read_tokens(buf, part_st, hdr.coeff_probs, modes["ymode"][1:, 1:], modes["skip"][1:, 1:],
                          coeffs, eobs)
    if bad_row >= 0 and not state.has_keyframe:
        raise CorruptFrameError(f"token partition of macroblock row {bad_row} ends early "
                                "in the stream's first key frame")
    return FrameSyntax(prev, hdr, modes, segment_map, coeffs, eobs, bounds, bad_row)


def decode_frame(state: DecoderState, frame: bytes) -> tuple[DecoderState, Image | None]:
    """Decode one compressed frame; return the new state and the picture to show (None if hidden)."""
    prev, hdr, modes, segment_map, coeffs, eobs, _, _ = parse_frame_syntax(state, frame)
    return decode_syntax(prev, hdr, modes, segment_map, coeffs, eobs)


def decode_syntax(prev: DecoderState, hdr: FrameHeader, modes, segment_map, coeffs,
                  eobs) -> tuple[DecoderState, Image | None]:
    """Stages 4-5 of ``decode_frame``: the pixels and the state after the frame, from its syntax
    (``parse_frame_syntax``'s, or the encoder's own before it writes it)."""
    tag, seg, lf = hdr.tag, hdr.segmentation, hdr.loop_filter
    pic = Picture.allocate(prev.mb_rows, prev.mb_cols)
    segment = segment_map if seg.enabled else np.zeros_like(segment_map)
    refs = [prev.last or pic, prev.golden or pic, prev.altref or pic]
    filters = tables.SIXTAP_FILTERS if tag.version == 0 or tag.version > 3 else tables.BILINEAR_FILTERS
    decode_pixels(pic.y, pic.u, pic.v, refs[0].y, refs[0].u, refs[0].v, refs[1].y, refs[1].u, refs[1].v,
                  refs[2].y, refs[2].u, refs[2].v, modes["ymode"], modes["uvmode"], modes["ref"], modes["bmodes"],
                  modes["mvs"], coeffs, eobs, segment, dequant_factors(hdr), filters, tag.version == 3,
                  bool(lf.level), segment_filter_levels(hdr), bool(lf.deltas_enabled),
                  np.asarray(lf.ref_deltas, np.int32), np.asarray(lf.mode_deltas, np.int32), bool(lf.simple),
                  int(lf.sharpness), bool(tag.key_frame))
    new_state = _next_state(prev, hdr, pic, segment_map)
    image = None
    if tag.show_frame:  # the shown picture, cropped to display size, as one I420 buffer
        w, h = prev.width, prev.height
        cw, ch = (w + 1) // 2, (h + 1) // 2
        image = Image.from_i420(np.empty(w * h + 2 * cw * ch, np.uint8), w, h)
        np.copyto(image.y, pic.y[BORDER_Y:BORDER_Y + h, BORDER_Y:BORDER_Y + w])
        np.copyto(image.u, pic.u[BORDER_UV:BORDER_UV + ch, BORDER_UV:BORDER_UV + cw])
        np.copyto(image.v, pic.v[BORDER_UV:BORDER_UV + ch, BORDER_UV:BORDER_UV + cw])
    return new_state, image


def _prepare_intra_edges(pic: Picture, mb_rows: int, mb_cols: int) -> None:
    """The out-of-frame neighbours intra prediction sees (section 12.2), in a new picture."""
    _prepare_edges(pic.y, BORDER_Y, 16 * mb_rows)
    _prepare_edges(pic.u, BORDER_UV, 8 * mb_rows)
    _prepare_edges(pic.v, BORDER_UV, 8 * mb_rows)


def _next_state(prev: DecoderState, hdr: FrameHeader, pic: Picture, segment_map) -> DecoderState:
    """Probabilities, persistent header values and references after this frame (sections 9.7-9.11).

    References are updated in libvpx's order: copies to altref, then to golden (which may thus
    copy the altref just assigned), then refreshes with the new picture.
    """
    refs = hdr.refs
    if refs.refresh_entropy:
        probs = dict(coeff_probs=hdr.coeff_probs, ymode_probs=hdr.ymode_probs,
                     uv_mode_probs=hdr.uv_mode_probs, mv_probs=hdr.mv_probs)
    else:
        probs = dict(coeff_probs=prev.coeff_probs, ymode_probs=prev.ymode_probs,
                     uv_mode_probs=prev.uv_mode_probs, mv_probs=prev.mv_probs)
    last, golden, altref = prev.last, prev.golden, prev.altref
    if refs.copy_to_altref == 1:
        altref = last
    elif refs.copy_to_altref == 2:
        altref = golden
    if refs.copy_to_golden == 1:
        golden = last
    elif refs.copy_to_golden == 2:
        golden = altref
    if refs.refresh_golden:
        golden = pic
    if refs.refresh_altref:
        altref = pic
    if refs.refresh_last:
        last = pic
    seg, lf = hdr.segmentation, hdr.loop_filter
    return DecoderState(
        width=prev.width, height=prev.height, horiz_scale=prev.horiz_scale, vert_scale=prev.vert_scale,
        segment_absolute=seg.absolute, segment_quant=_frozen(np.array(seg.quant, np.int8)),
        segment_lf=_frozen(np.array(seg.lf, np.int8)), segment_map=segment_map,
        ref_lf_deltas=_frozen(np.array(lf.ref_deltas, np.int8)),
        mode_lf_deltas=_frozen(np.array(lf.mode_deltas, np.int8)),
        last=last, golden=golden, altref=altref, **probs)


class Decoder:
    """Holds the current ``DecoderState``; ``decode`` advances it by one frame."""

    def __init__(self, state: DecoderState | None = None):
        self.state = state if state is not None else DecoderState()

    def decode(self, frame: bytes) -> Image | None:
        self.state, image = decode_frame(self.state, frame)
        return image
