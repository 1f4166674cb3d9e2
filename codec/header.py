"""The frame header (RFC 6386 sections 9 and 19): frame tag, key-frame size, first-partition fields.

One frozen dataclass per header section; each ``read`` takes the bool decoder (and, where values
persist between frames, the previous ones) and returns the section as coded in this frame, and
each ``write`` takes a bool encoder and the same previous values and codes the section back, field
for field in the same order.

A decoded value does not always say how it was coded: a zero delta may be coded or left out, a
probability may be re-sent unchanged. The ``*_coded`` fields record that, so that parse -> write
reproduces the bytes. They default to ``None``, meaning "code what differs from the values in
force" (nonzero optional values, changed deltas and probabilities, tree probabilities other than
255), which is what libvpx does and what an encoder filling a header by hand wants.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .boolcoder import BoolDecoder, BoolEncoder
from .errors import CorruptFrameError
from .tables import MV_UPDATE_PROBS
from .tokens import read_coeff_updates, write_coeff_updates

START_CODE = b"\x9d\x01\x2a"
MAX_PARTITIONS = 8


def _four(values) -> tuple:
    values = tuple(int(v) for v in values)
    if len(values) != 4:
        raise ValueError(f"expected 4 values, got {len(values)}")
    return values


def _read_optional(bd: BoolDecoder, bits: int, count: int) -> tuple[tuple, tuple]:
    """``count`` optional signed values (flag, then magnitude and sign); the values and the flags."""
    values, coded = [], []
    for _ in range(count):
        coded.append(bd.flag())
        values.append(bd.signed(bits) if coded[-1] else 0)
    return tuple(values), tuple(coded)


def _check_kept(what: str, mine, prev) -> None:
    """A value the frame does not code must be the one in force, or the decoder would disagree."""
    def norm(v):
        return tuple(norm(x) for x in v) if isinstance(v, (tuple, list, np.ndarray)) else int(v)
    if norm(mine) != norm(prev):
        raise ValueError(f"{what}: values {norm(mine)} differ from those in force {norm(prev)} "
                         "but are not coded")


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

    def write(self) -> bytes:
        """The 3-byte tag (and the 7 bytes of start code and size of a key frame), as ``read``
        parses them; ``first_part_size`` must be the first partition's real size."""
        for name, value, bits in (("version", self.version, 3), ("first_part_size", self.first_part_size, 19),
                                  ("width", self.width, 14), ("height", self.height, 14),
                                  ("horiz_scale", self.horiz_scale, 2), ("vert_scale", self.vert_scale, 2)):
            if not 0 <= value < (1 << bits):
                raise ValueError(f"frame tag {name} {value} does not fit in {bits} bits")
        tag = (not self.key_frame) | self.version << 1 | bool(self.show_frame) << 4 | self.first_part_size << 5
        out = bytes([tag & 255, (tag >> 8) & 255, tag >> 16])
        if self.key_frame:
            if not (self.width and self.height):
                raise ValueError(f"key frame size {self.width}x{self.height} is empty")
            w = self.width | self.horiz_scale << 14
            h = self.height | self.vert_scale << 14
            out += START_CODE + bytes([w & 255, w >> 8, h & 255, h >> 8])
        return out


@dataclass(frozen=True)
class Segmentation:
    """Section 9.3. ``absolute``, ``quant`` and ``lf`` are the values in force (kept from earlier
    frames when ``update_data`` is false); ``tree_probs`` are 255 where not coded."""

    enabled: bool
    update_map: bool
    update_data: bool
    absolute: bool
    quant: tuple
    lf: tuple
    tree_probs: tuple
    quant_coded: tuple | None = None        # with update_data: which quant values were coded
    lf_coded: tuple | None = None           # ... and which filter levels
    tree_probs_coded: tuple | None = None   # with update_map: which tree probabilities were coded

    @staticmethod
    def read(bd: BoolDecoder, absolute: bool, quant, lf) -> "Segmentation":
        enabled = bd.flag()
        update_map = update_data = False
        tree_probs = (255, 255, 255)
        quant_coded = lf_coded = tree_probs_coded = None
        if enabled:
            update_map = bd.flag()
            update_data = bd.flag()
            if update_data:
                absolute = bd.flag()
                quant, quant_coded = _read_optional(bd, 7, 4)
                lf, lf_coded = _read_optional(bd, 6, 4)
            if update_map:
                tree_probs, tree_probs_coded = [], []
                for _ in range(3):
                    tree_probs_coded.append(bd.flag())
                    tree_probs.append(bd.literal(8) if tree_probs_coded[-1] else 255)
                tree_probs, tree_probs_coded = tuple(tree_probs), tuple(tree_probs_coded)
        return Segmentation(enabled, update_map, update_data, absolute, tuple(quant), tuple(lf), tree_probs,
                            quant_coded, lf_coded, tree_probs_coded)

    def write(self, be: BoolEncoder, absolute: bool, quant, lf) -> None:
        """Mirror of ``read``; the arguments are the values in force before this frame, which
        must be this section's own when it does not update them."""
        be.flag(self.enabled)
        if not self.enabled:
            _check_kept("segmentation (not enabled)", (self.absolute, self.quant, self.lf), (absolute, quant, lf))
            return
        be.flag(self.update_map)
        be.flag(self.update_data)
        if self.update_data:
            be.flag(self.absolute)
            for values, coded, bits in ((self.quant, self.quant_coded, 7), (self.lf, self.lf_coded, 6)):
                coded = coded or (None,) * 4
                for v, f in zip(_four(values), coded, strict=True):
                    be.optional_signed(bits, v, f)
        else:
            _check_kept("segmentation (update_data false)", (self.absolute, self.quant, self.lf),
                        (absolute, quant, lf))
        if self.update_map:
            coded = self.tree_probs_coded or tuple(p != 255 for p in self.tree_probs)
            for p, f in zip(self.tree_probs, coded, strict=True):
                be.flag(f)
                if f:
                    be.literal(8, p)
                elif p != 255:
                    raise ValueError(f"segment tree probability {p} marked as not coded (it would read as 255)")


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
    ref_deltas_coded: tuple | None = None   # with update_deltas: which deltas were (re-)sent
    mode_deltas_coded: tuple | None = None

    @staticmethod
    def read(bd: BoolDecoder, ref_deltas, mode_deltas) -> "LoopFilter":
        simple = bd.flag()
        level = bd.literal(6)
        sharpness = bd.literal(3)
        deltas_enabled = bd.flag()
        update = False
        ref_deltas, mode_deltas = list(ref_deltas), list(mode_deltas)
        coded = [None, None]
        if deltas_enabled:
            update = bd.flag()
            if update:
                for n, deltas in enumerate((ref_deltas, mode_deltas)):
                    flags = []
                    for i in range(4):
                        flags.append(bd.flag())
                        if flags[-1]:
                            deltas[i] = bd.signed(6)
                    coded[n] = tuple(flags)
        return LoopFilter(simple, level, sharpness, deltas_enabled, update, tuple(ref_deltas), tuple(mode_deltas),
                          *coded)

    def write(self, be: BoolEncoder, ref_deltas, mode_deltas) -> None:
        """Mirror of ``read``; the arguments are the deltas in force before this frame."""
        be.flag(self.simple)
        be.literal(6, self.level)
        be.literal(3, self.sharpness)
        be.flag(self.deltas_enabled)
        update = self.deltas_enabled and self.update_deltas
        if self.deltas_enabled:
            be.flag(self.update_deltas)
        if not update:
            _check_kept("loop filter deltas (not updated)", (self.ref_deltas, self.mode_deltas),
                        (ref_deltas, mode_deltas))
            return
        for mine, prev, coded in ((self.ref_deltas, ref_deltas, self.ref_deltas_coded),
                                  (self.mode_deltas, mode_deltas, self.mode_deltas_coded)):
            mine, prev = _four(mine), _four(prev)
            coded = coded or tuple(m != p for m, p in zip(mine, prev))
            for m, p, f in zip(mine, prev, coded, strict=True):
                be.flag(f)
                if f:
                    be.signed(6, m)
                elif m != p:
                    raise ValueError(f"loop filter delta {m} (in force: {p}) marked as not coded")


@dataclass(frozen=True)
class Quant:
    """Section 9.6: base quantizer index and the deltas of the other five factors."""

    y_ac: int
    y_dc_delta: int
    y2_dc_delta: int
    y2_ac_delta: int
    uv_dc_delta: int
    uv_ac_delta: int
    deltas_coded: tuple | None = None   # which of the five deltas were coded (a zero may be)

    @staticmethod
    def read(bd: BoolDecoder) -> "Quant":
        y_ac = bd.literal(7)
        deltas, coded = _read_optional(bd, 4, 5)
        return Quant(y_ac, *deltas, coded)

    @property
    def deltas(self) -> tuple:
        return (self.y_dc_delta, self.y2_dc_delta, self.y2_ac_delta, self.uv_dc_delta, self.uv_ac_delta)

    def write(self, be: BoolEncoder) -> None:
        be.literal(7, self.y_ac)
        for v, f in zip(self.deltas, self.deltas_coded or (None,) * 5, strict=True):
            be.optional_signed(4, v, f)


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

    def write(self, be: BoolEncoder, key_frame: bool) -> None:
        if key_frame:
            if not (self.refresh_golden and self.refresh_altref and self.refresh_last) \
                    or self.copy_to_golden or self.copy_to_altref or self.sign_bias_golden or self.sign_bias_altref:
                raise ValueError("a key frame refreshes every reference, copies none and has no sign bias")
            be.flag(self.refresh_entropy)
            return
        be.flag(self.refresh_golden)
        be.flag(self.refresh_altref)
        if not self.refresh_golden:
            be.literal(2, self.copy_to_golden)
        elif self.copy_to_golden:
            raise ValueError("copy_to_golden is not coded when golden is refreshed")
        if not self.refresh_altref:
            be.literal(2, self.copy_to_altref)
        elif self.copy_to_altref:
            raise ValueError("copy_to_altref is not coded when altref is refreshed")
        for f in (self.sign_bias_golden, self.sign_bias_altref, self.refresh_entropy, self.refresh_last):
            be.flag(f)


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
    # As coded (None: code what differs from the values in force; see the module docstring).
    # ``coeff_updated`` above may be None too.
    ymode_probs_coded: bool | None = None
    uv_mode_probs_coded: bool | None = None
    mv_probs_coded: np.ndarray | None = None    # (2, 19) bool


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
    ymode_coded = uv_mode_coded = mv_coded = None
    if not tag.key_frame:
        prob_intra = bd.literal(8)
        prob_last = bd.literal(8)
        prob_golden = bd.literal(8)
        ymode_coded = bd.flag()
        if ymode_coded:
            ymode_probs = np.array([bd.literal(8) for _ in range(4)], np.uint8)
        uv_mode_coded = bd.flag()
        if uv_mode_coded:
            uv_mode_probs = np.array([bd.literal(8) for _ in range(3)], np.uint8)
        mv_probs, mv_coded = _read_mv_prob_updates(bd, mv_probs)
    return FrameHeader(tag, color_space, clamping, seg, lf, log2_partitions, quant, refs, coeff_probs,
                       coeff_updated, skip_enabled, prob_skip, prob_intra, prob_last, prob_golden,
                       ymode_probs, uv_mode_probs, mv_probs, ymode_coded, uv_mode_coded, mv_coded)


def _read_mv_prob_updates(bd: BoolDecoder, mv_probs: np.ndarray):
    """Section 17.2: each MV probability may be replaced by a 7-bit value (0 meaning 1).
    Returns the probabilities in force and which of them were coded."""
    out = mv_probs
    coded = np.zeros((2, 19), np.bool_)
    for i in range(2):
        for j in range(19):
            if bd.read(MV_UPDATE_PROBS[i, j]):
                if out is mv_probs:
                    out = mv_probs.copy()
                x = bd.literal(7)
                out[i, j] = x << 1 if x else 1
                coded[i, j] = True
    return out, coded


def write_frame_header(be: BoolEncoder, header: FrameHeader, state) -> None:
    """Mirror of ``read_frame_header`` (section 19.2): code ``header`` against ``state``, the
    values in force before the frame (reset to their defaults by the caller on a key frame, as for
    reading). Raises ``ValueError`` for a header that cannot be coded as it stands (a value out of
    its field's range, or one that differs from the value in force but is marked as not coded)."""
    tag = header.tag
    for name, shape in (("coeff_probs", (4, 8, 3, 11)), ("ymode_probs", (4,)), ("uv_mode_probs", (3,)),
                        ("mv_probs", (2, 19))):
        if np.shape(getattr(header, name)) != shape:
            raise ValueError(f"{name} must have shape {shape}, not {np.shape(getattr(header, name))}")
    if header.coeff_updated is not None and np.shape(header.coeff_updated) != (4, 8, 3, 11):
        raise ValueError("coeff_updated must have shape (4, 8, 3, 11)")
    if tag.key_frame:
        be.literal(1, header.color_space)
        be.literal(1, header.clamping_type)
    elif header.color_space or header.clamping_type:
        raise ValueError("color_space and clamping_type are coded on key frames only")
    header.segmentation.write(be, state.segment_absolute, state.segment_quant, state.segment_lf)
    header.loop_filter.write(be, state.ref_lf_deltas, state.mode_lf_deltas)
    be.literal(2, header.log2_partitions)
    header.quant.write(be)
    header.refs.write(be, tag.key_frame)
    probs = np.ascontiguousarray(header.coeff_probs, np.uint8)
    updated = header.coeff_updated
    changed = probs != state.coeff_probs
    if updated is None:
        updated = changed
    elif (changed & ~np.asarray(updated, bool)).any():
        raise ValueError("coefficient probabilities differ from those in force but are not marked as updated")
    be.buf = write_coeff_updates(be.es, be.buf, probs, np.ascontiguousarray(updated, np.uint8))
    be.flag(header.skip_enabled)
    if header.skip_enabled:
        be.literal(8, header.prob_skip)
    if tag.key_frame:
        for name in ("ymode_probs", "uv_mode_probs", "mv_probs"):
            _check_kept(f"{name} on a key frame", getattr(header, name), getattr(state, name))
        return
    be.literal(8, header.prob_intra)
    be.literal(8, header.prob_last)
    be.literal(8, header.prob_golden)
    for name, coded in (("ymode_probs", header.ymode_probs_coded), ("uv_mode_probs", header.uv_mode_probs_coded)):
        mine, prev = getattr(header, name), getattr(state, name)
        if coded is None:
            coded = bool((np.asarray(mine) != prev).any())
        be.flag(coded)
        if coded:
            for p in mine:
                be.literal(8, p)
        else:
            _check_kept(f"{name} (not coded)", mine, prev)
    _write_mv_prob_updates(be, np.asarray(header.mv_probs), state.mv_probs, header.mv_probs_coded)


def _write_mv_prob_updates(be: BoolEncoder, mv_probs: np.ndarray, prev: np.ndarray, coded) -> None:
    """Mirror of ``_read_mv_prob_updates``: a coded probability is 1 or an even number."""
    if coded is None:
        coded = mv_probs != prev
    for i in range(2):
        for j in range(19):
            p = int(mv_probs[i, j])
            if coded[i, j]:
                if p != 1 and (p & 1 or not 2 <= p <= 254):
                    raise ValueError(f"MV probability [{i}][{j}] = {p} cannot be coded (1 or even 2..254)")
                be.write(1, MV_UPDATE_PROBS[i, j])
                be.literal(7, p >> 1)
            else:
                if p != prev[i, j]:
                    raise ValueError(f"MV probability [{i}][{j}] = {p} (in force: {prev[i, j]}) marked as not coded")
                be.write(0, MV_UPDATE_PROBS[i, j])
