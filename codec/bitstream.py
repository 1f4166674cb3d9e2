"""A VP8 frame as a value, and its bitstream both ways (RFC 6386 sections 9, 19 and 7-17).

``parse_frame(state, data)`` reads a compressed frame into a ``ParsedFrame`` with the decoder's own
parsing functions (no pixels are reconstructed); ``write_frame(state, frame)`` codes a
``ParsedFrame`` back into bytes: frame tag (and key-frame start code and size), first partition
(frame header, then every macroblock header), the 3-byte sizes of all token partitions but the
last, then the token partitions. For a stream made by libvpx, ``write_frame(s, parse_frame(s, d))``
is ``d`` again, byte for byte: the ``*_coded`` fields of the header record how each value was coded,
the mode arrays record the split-MV partitioning and sub-modes, and each partition is flushed as
libvpx flushes it (``boolcoder.be_flush``).

``state`` is the ``DecoderState`` before the frame: it holds the probabilities the header's updates
are coded against and the segmentation and loop-filter values that persist. On a key frame the
values it resets are reset first (``decoder.coding_state``), for writing as for parsing. The state
after a frame is the decoder's: ``next_state(state, data)`` decodes the written bytes
(``decoder.decode_frame``), which also reconstructs the picture the references need.

How an encoder fills a ``ParsedFrame`` (``new_frame_header`` and ``new_frame`` give one with
everything at "nothing changes"):

* ``header`` (``header.FrameHeader``): the tag (``key_frame``, ``version``, ``show_frame``, and
  ``width``/``height`` on key frames; ``first_part_size`` is ignored and recomputed), the sections
  (segmentation, loop filter, quantizers, references) and the probabilities in force for this
  frame (``coeff_probs``, ``ymode_probs``, ``uv_mode_probs``, ``mv_probs``, ``prob_skip``,
  ``prob_intra``, ``prob_last``, ``prob_golden``). Leave the ``*_coded`` fields and
  ``coeff_updated`` None: whatever differs from ``state`` is then coded. A value that the frame
  does not code (segment values without ``update_data``, unchanged loop-filter deltas) must be
  the one in force, or ``write_frame`` raises ``ValueError``; so must a probability ``mv_probs``
  cannot code (MV probabilities are coded as 7 bits: 1 or even).
* ``modes`` (``modes.allocate_mode_info(mb_rows, mb_cols)``, border row and column left zero):
  ``ymode``; ``uvmode`` and (B_PRED) ``bmodes`` for intra macroblocks; ``ref`` (0 intra, 1 last,
  2 golden, 3 altref; 0 everywhere on key frames); ``mvs`` in quarter pixels, the same vector in
  all 16 subblocks unless SPLITMV; for SPLITMV ``partitioning`` (``tables.MV_TOP_BOTTOM`` ..
  ``MV_16``), the subblock vectors, and optionally ``sub_mv_modes`` (left zero, the cheapest
  consistent sub-mode is chosen). NEARESTMV / NEARMV / ZEROMV must carry the vector the
  neighbours imply (``modes._find_near_mvs``, clamped), NEWMV any vector within +-1023 of the
  clamped best one. ``skip`` flags (only when ``header.skip_enabled``; a skipped macroblock has no
  tokens). Derived, not read: the key-frame subblock-mode contexts of non-B_PRED neighbours.
* ``segment_map`` (mb_rows x mb_cols uint8): the segment ids in force after the frame; coded when
  ``segmentation.update_map``, otherwise it must equal the state's (zeros on a key frame).
* ``coeffs`` (mb_rows, mb_cols, 25, 16) int16 quantized levels in raster order (blocks 0-15 Y,
  16-19 U, 20-23 V, 24 Y2; a Y block's DC is 0 when the macroblock has Y2) and ``eobs``
  (mb_rows, mb_cols, 25): how many zigzag positions each block codes. ``tokens.derive_eobs`` gives
  the shortest; the above / left token contexts are derived from the eobs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .boolcoder import E_POS, ENC_STATE_SIZE, BoolEncoder, be_flush, be_init
from .decoder import coding_state, decode_frame, parse_frame_syntax
from .header import FrameHeader, FrameTag, LoopFilter, Quant, References, Segmentation, write_frame_header
from .modes import MODE_ERRORS, allocate_mode_info, write_modes
from .state import DecoderState
from .tokens import TOKEN_ERRORS, write_tokens

MAX_FIRST_PARTITION = (1 << 19) - 1     # the tag's 19-bit size field
MAX_TOKEN_PARTITION = (1 << 24) - 1     # the 3-byte partition size fields


@dataclass(frozen=True, eq=False)
class ParsedFrame:
    """One compressed frame as values: everything ``write_frame`` needs, nothing reconstructed."""

    header: FrameHeader         # tag, header sections, probabilities in force, as-coded details
    modes: dict                 # ``modes.allocate_mode_info`` arrays (with border), as read_modes fills them
    segment_map: np.ndarray     # (mb_rows, mb_cols) uint8, the segment ids in force after this frame
    coeffs: np.ndarray          # (mb_rows, mb_cols, 25, 16) int16 quantized levels, raster order
    eobs: np.ndarray            # (mb_rows, mb_cols, 25) uint8, zigzag positions coded per block

    @property
    def tag(self) -> FrameTag:
        return self.header.tag

    @property
    def partitions(self) -> int:
        """Number of token partitions (1, 2, 4 or 8)."""
        return 1 << self.header.log2_partitions


def parse_frame(state: DecoderState, data: bytes) -> ParsedFrame:
    """Read one compressed frame coded against ``state`` (the decoder's state before it).

    Raises ``CorruptFrameError`` as ``decode_frame`` does, and also for a token partition that
    runs out of data (its values would be guesses, which no writer can reproduce)."""
    syn = parse_frame_syntax(state, data)
    if syn.bad_row >= 0:
        from .errors import CorruptFrameError
        raise CorruptFrameError(f"token partition of macroblock row {syn.bad_row} ends early")
    return ParsedFrame(syn.header, syn.modes, syn.segment_map, syn.coeffs, syn.eobs)


def write_frame(state: DecoderState, frame: ParsedFrame) -> bytes:
    """Code ``frame`` against ``state`` (the decoder's state before it): the frame's bytes.

    Raises ``ValueError`` (with what and where) for a frame that cannot be coded as it stands."""
    hdr = frame.header
    tag = hdr.tag
    prev = coding_state(state, tag)
    rows, cols = prev.mb_rows, prev.mb_cols
    _check_shapes(frame, rows, cols)
    seg = hdr.segmentation
    if not seg.update_map:
        kept = np.zeros((rows, cols), np.uint8) if tag.key_frame else prev.segment_map
        if not np.array_equal(frame.segment_map, kept):
            raise ValueError("segment_map differs from the map in force but update_map is false")
    m = frame.modes
    if not hdr.skip_enabled and m["skip"].any():
        raise ValueError("skip flags set but the frame does not code them (skip_enabled is false)")

    be = BoolEncoder(capacity=256 + 8 * rows * cols)
    write_frame_header(be, hdr, prev)
    sign_bias = np.array([0, 0, hdr.refs.sign_bias_golden, hdr.refs.sign_bias_altref], np.int64)
    be.buf, status, r, c = write_modes(
        be.es, be.buf, tag.key_frame, seg.update_map, np.array(seg.tree_probs, np.uint8),
        np.ascontiguousarray(frame.segment_map, np.uint8), hdr.skip_enabled, hdr.prob_skip, hdr.prob_intra,
        hdr.prob_last, hdr.prob_golden, np.array(hdr.ymode_probs, np.uint8), np.array(hdr.uv_mode_probs, np.uint8),
        np.array(hdr.mv_probs, np.uint8), sign_bias, *(m[k] for k in _MODE_KEYS))
    if status:
        raise ValueError(f"macroblock ({r}, {c}): {MODE_ERRORS[status]}")
    first = be.finish()
    if len(first) > MAX_FIRST_PARTITION:
        raise ValueError(f"first partition of {len(first)} bytes exceeds the tag's 19-bit size field")

    parts = []
    ymodes, skips = m["ymode"][1:, 1:], m["skip"][1:, 1:]
    probs = np.ascontiguousarray(hdr.coeff_probs, np.uint8)
    for p in range(frame.partitions):
        es = np.zeros(ENC_STATE_SIZE, np.int64)
        be_init(es)
        buf = np.zeros(1024 + 64 * rows * cols // frame.partitions, np.uint8)
        buf, status, r, c, b = write_tokens(es, buf, p, frame.partitions, probs, ymodes, skips,
                                            frame.coeffs, frame.eobs)
        if status:
            raise ValueError(f"macroblock ({r}, {c}) block {b}: {TOKEN_ERRORS[status]}")
        buf = be_flush(es, buf)
        parts.append(buf[:es[E_POS]].tobytes())
        if len(parts[-1]) > MAX_TOKEN_PARTITION and p < frame.partitions - 1:
            raise ValueError(f"token partition {p} of {len(parts[-1])} bytes exceeds its 3-byte size field")
    sizes = b"".join(len(q).to_bytes(3, "little") for q in parts[:-1])
    out_tag = dataclasses.replace(tag, first_part_size=len(first))
    return out_tag.write() + first + sizes + b"".join(parts)


_MODE_KEYS = ("ymode", "uvmode", "ref", "skip", "bmodes", "mvs", "partitioning", "sub_mv_modes")
_MODE_DTYPES = dict(ymode=np.int8, uvmode=np.int8, ref=np.int8, skip=np.uint8, bmodes=np.int8, mvs=np.int16,
                    partitioning=np.int8, sub_mv_modes=np.int8)


def _check_shapes(frame: ParsedFrame, rows: int, cols: int) -> None:
    """Kernels do not check bounds: every array must have the frame's shape and dtype."""
    want = allocate_mode_info(rows, cols)
    for k in _MODE_KEYS:
        a = frame.modes.get(k)
        if not isinstance(a, np.ndarray) or a.shape != want[k].shape or a.dtype != _MODE_DTYPES[k]:
            raise ValueError(f"modes[{k!r}] must be a {want[k].shape} {np.dtype(_MODE_DTYPES[k])} array "
                             f"(modes.allocate_mode_info({rows}, {cols}))")
    for name, shape, dtype in (("segment_map", (rows, cols), np.uint8), ("coeffs", (rows, cols, 25, 16), np.int16),
                               ("eobs", (rows, cols, 25), np.uint8)):
        a = getattr(frame, name)
        if not isinstance(a, np.ndarray) or a.shape != shape or a.dtype != dtype:
            raise ValueError(f"{name} must be a {shape} {np.dtype(dtype)} array")
    if frame.segment_map.max(initial=0) > 3:
        raise ValueError("segment ids must be 0..3")


def next_state(state: DecoderState, data: bytes) -> DecoderState:
    """The decoder state after the frame ``data`` (written or parsed): ``decode_frame``'s."""
    return decode_frame(state, data)[0]


def new_frame_header(state: DecoderState, tag: FrameTag, y_ac: int, **fields) -> FrameHeader:
    """A header that changes nothing it need not: the probabilities, segment values and
    loop-filter deltas of ``state`` (after a key frame's reset), segmentation and loop-filter deltas
    off, one token partition, skip flags off, base quantizer ``y_ac`` with zero deltas, and on an
    interframe only the last frame refreshed. ``fields`` override any ``FrameHeader`` field."""
    prev = coding_state(state, tag)
    inter_refs = References(refresh_golden=False, refresh_altref=False, refresh_entropy=True, refresh_last=True)
    values = dict(
        tag=tag, color_space=0, clamping_type=0,
        segmentation=Segmentation(False, False, False, prev.segment_absolute, tuple(int(v) for v in prev.segment_quant),
                                  tuple(int(v) for v in prev.segment_lf), (255, 255, 255)),
        loop_filter=LoopFilter(False, 0, 0, False, False, tuple(int(v) for v in prev.ref_lf_deltas),
                               tuple(int(v) for v in prev.mode_lf_deltas)),
        log2_partitions=0, quant=Quant(y_ac, 0, 0, 0, 0, 0),
        refs=References() if tag.key_frame else inter_refs,
        coeff_probs=prev.coeff_probs.copy(), coeff_updated=None, skip_enabled=False, prob_skip=0,
        prob_intra=0 if tag.key_frame else 128, prob_last=0 if tag.key_frame else 128,
        prob_golden=0 if tag.key_frame else 128, ymode_probs=prev.ymode_probs.copy(),
        uv_mode_probs=prev.uv_mode_probs.copy(), mv_probs=prev.mv_probs.copy())
    values.update(fields)
    return FrameHeader(**values)


def new_frame(state: DecoderState, header: FrameHeader) -> ParsedFrame:
    """An empty frame for ``header``: every macroblock DC_PRED intra (on an interframe too), no
    tokens, the segment map in force. Fill its arrays in place before ``write_frame``."""
    prev = coding_state(state, header.tag)
    rows, cols = prev.mb_rows, prev.mb_cols
    seg_map = np.zeros((rows, cols), np.uint8) if header.tag.key_frame else prev.segment_map.copy()
    return ParsedFrame(header, allocate_mode_info(rows, cols), seg_map,
                       np.zeros((rows, cols, 25, 16), np.int16), np.zeros((rows, cols, 25), np.uint8))
