"""The frame header (RFC 6386 sections 9 and 19): frame tag, key-frame size, first-partition fields.

One frozen dataclass per header section; each ``read`` takes the bool decoder (and, where values
persist between frames, the previous ones) and returns the section as coded in this frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .boolcoder import BoolDecoder
from .errors import CorruptFrameError
from .tables import MV_UPDATE_PROBS
from .tokens import read_coeff_updates

START_CODE = b"\x9d\x01\x2a"
MAX_PARTITIONS = 8


@dataclass(frozen=True)
class FrameTag:
    """Section 9.1: the 3-byte uncompressed tag, plus section 9.2's size for key frames."""

    key_frame: bool
    version: int            # 0: six-tap + normal filter; 1-3 bilinear; 3 also whole-pixel chroma MVs
    show_frame: bool
    first_part_size: int
    width: int = 0          # key frames only
    height: int = 0
    horiz_scale: int = 0
    vert_scale: int = 0

    @property
    def header_size(self) -> int:
        return 10 if self.key_frame else 3

    @staticmethod
    def read(buf) -> "FrameTag":
        if len(buf) < 3:
            raise CorruptFrameError(f"frame of {len(buf)} bytes is shorter than its 3-byte tag")
        buf = bytes(buf[:10])
        tag = buf[0] | buf[1] << 8 | buf[2] << 16
        key_frame = not (tag & 1)
        fields = dict(key_frame=key_frame, version=(tag >> 1) & 7, show_frame=bool((tag >> 4) & 1),
                      first_part_size=tag >> 5)
        if key_frame:
            if len(buf) < 10:
                raise CorruptFrameError(f"key frame of {len(buf)} bytes is shorter than its 10-byte header")
            if buf[3:6] != START_CODE:
                raise CorruptFrameError("key frame start code is not 9d 01 2a (offset 3)")
            w = buf[6] | buf[7] << 8
            h = buf[8] | buf[9] << 8
            fields.update(width=w & 0x3FFF, horiz_scale=w >> 14, height=h & 0x3FFF, vert_scale=h >> 14)
            if fields["width"] == 0 or fields["height"] == 0:
                raise CorruptFrameError(f"key frame size {fields['width']}x{fields['height']} is empty (offset 6)")
        return FrameTag(**fields)


@dataclass(frozen=True)
class Segmentation:
    """Section 9.3. ``quant`` and ``lf`` are the values in force (kept from earlier frames when not coded)."""

    enabled: bool
    update_map: bool
    update_data: bool
    absolute: bool
    quant: tuple
    lf: tuple
    tree_probs: tuple

    @staticmethod
    def read(bd: BoolDecoder, absolute: bool, quant, lf) -> "Segmentation":
        enabled = bd.flag()
        update_map = update_data = False
        tree_probs = (255, 255, 255)
        if enabled:
            update_map = bd.flag()
            update_data = bd.flag()
            if update_data:
                absolute = bd.flag()
                quant = tuple(bd.optional_signed(7) for _ in range(4))
                lf = tuple(bd.optional_signed(6) for _ in range(4))
            if update_map:
                tree_probs = tuple(bd.literal(8) if bd.flag() else 255 for _ in range(3))
        return Segmentation(enabled, update_map, update_data, absolute, tuple(quant), tuple(lf), tree_probs)


@dataclass(frozen=True)
class LoopFilter:
    """Sections 9.4 and 9.6 (the delta values in force, kept from earlier frames when not coded)."""

    simple: bool
    level: int
    sharpness: int
    deltas_enabled: bool
    update_deltas: bool
    ref_deltas: tuple
    mode_deltas: tuple

    @staticmethod
    def read(bd: BoolDecoder, ref_deltas, mode_deltas) -> "LoopFilter":
        simple = bd.flag()
        level = bd.literal(6)
        sharpness = bd.literal(3)
        deltas_enabled = bd.flag()
        update = False
        ref_deltas, mode_deltas = list(ref_deltas), list(mode_deltas)
        if deltas_enabled:
            update = bd.flag()
            if update:
                for deltas in (ref_deltas, mode_deltas):
                    for i in range(4):
                        if bd.flag():
                            deltas[i] = bd.signed(6)
        return LoopFilter(simple, level, sharpness, deltas_enabled, update, tuple(ref_deltas), tuple(mode_deltas))


@dataclass(frozen=True)
class Quant:
    """Section 9.6: base quantizer index and the deltas of the other five factors."""

    y_ac: int
    y_dc_delta: int
    y2_dc_delta: int
    y2_ac_delta: int
    uv_dc_delta: int
    uv_ac_delta: int

    @staticmethod
    def read(bd: BoolDecoder) -> "Quant":
        return Quant(bd.literal(7), *(bd.optional_signed(4) for _ in range(5)))


@dataclass(frozen=True)
class References:
    """Section 9.7-9.8: which references this frame refreshes, copies and their sign bias."""

    refresh_golden: bool = True
    refresh_altref: bool = True
    copy_to_golden: int = 0     # 1: last frame, 2: altref
    copy_to_altref: int = 0     # 1: last frame, 2: golden
    sign_bias_golden: bool = False
    sign_bias_altref: bool = False
    refresh_entropy: bool = True
    refresh_last: bool = True

    @staticmethod
    def read(bd: BoolDecoder, key_frame: bool) -> "References":
        if key_frame:
            return References(refresh_entropy=bd.flag())
        refresh_golden = bd.flag()
        refresh_altref = bd.flag()
        copy_to_golden = 0 if refresh_golden else bd.literal(2)
        copy_to_altref = 0 if refresh_altref else bd.literal(2)
        return References(refresh_golden, refresh_altref, copy_to_golden, copy_to_altref,
                          bd.flag(), bd.flag(), bd.flag(), bd.flag())


@dataclass(frozen=True)
class FrameHeader:
    """Everything the first partition codes before the macroblock headers."""

    tag: FrameTag
    color_space: int
    clamping_type: int
    segmentation: Segmentation
    loop_filter: LoopFilter
    log2_partitions: int
    quant: Quant
    refs: References
    coeff_probs: np.ndarray         # in force for this frame, after the updates
    coeff_updated: np.ndarray       # which of them this frame coded
    skip_enabled: bool
    prob_skip: int
    prob_intra: int
    prob_last: int
    prob_golden: int
    ymode_probs: np.ndarray
    uv_mode_probs: np.ndarray
    mv_probs: np.ndarray


def read_frame_header(bd: BoolDecoder, tag: FrameTag, state) -> FrameHeader:
    """Section 19.2, in bitstream order. ``state`` supplies the values that persist between frames
    (already reset to their defaults by the caller on a key frame)."""
    color_space = clamping = 0
    if tag.key_frame:
        color_space = bd.literal(1)
        clamping = bd.literal(1)
    seg = Segmentation.read(bd, state.segment_absolute, state.segment_quant, state.segment_lf)
    lf = LoopFilter.read(bd, state.ref_lf_deltas, state.mode_lf_deltas)
    log2_partitions = bd.literal(2)
    quant = Quant.read(bd)
    refs = References.read(bd, tag.key_frame)
    coeff_probs = state.coeff_probs.copy()
    coeff_updated = np.zeros_like(coeff_probs)
    read_coeff_updates(bd.st, bd.data, coeff_probs, coeff_updated)
    skip_enabled = bd.flag()
    prob_skip = bd.literal(8) if skip_enabled else 0
    prob_intra = prob_last = prob_golden = 0
    ymode_probs, uv_mode_probs, mv_probs = state.ymode_probs, state.uv_mode_probs, state.mv_probs
    if not tag.key_frame:
        prob_intra = bd.literal(8)
        prob_last = bd.literal(8)
        prob_golden = bd.literal(8)
        if bd.flag():
            ymode_probs = np.array([bd.literal(8) for _ in range(4)], np.uint8)
        if bd.flag():
            uv_mode_probs = np.array([bd.literal(8) for _ in range(3)], np.uint8)
        mv_probs = _read_mv_prob_updates(bd, mv_probs)
    return FrameHeader(tag, color_space, clamping, seg, lf, log2_partitions, quant, refs, coeff_probs,
                       coeff_updated, skip_enabled, prob_skip, prob_intra, prob_last, prob_golden,
                       ymode_probs, uv_mode_probs, mv_probs)


def _read_mv_prob_updates(bd: BoolDecoder, mv_probs: np.ndarray) -> np.ndarray:
    """Section 17.2: each MV probability may be replaced by a 7-bit value (0 meaning 1)."""
    out = mv_probs
    for i in range(2):
        for j in range(19):
            if bd.read(MV_UPDATE_PROBS[i, j]):
                if out is mv_probs:
                    out = mv_probs.copy()
                x = bd.literal(7)
                out[i, j] = x << 1 if x else 1
    return out
