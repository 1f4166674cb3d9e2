"""ExCamera's two codec operations on decoder state: encode-given-state and rebase (NSDI 2017, §3).

* ``encode_given_state(state, image, q)``: code a chunk's first raw image as an *interframe*
  against a decoder state handed over from the previous chunk (full mode and motion search by the
  native encoder), instead of the key frame the chunk's first pass began with. Like that key frame,
  it refreshes all three references, so the chunk's later frames find what they expect there.
* ``rebase_frame(new_state, old_state, data, target)``: keep a frame's header, prediction modes,
  reference choices and motion vectors, recompute the prediction from ``new_state``'s references,
  quantize the residual toward ``target`` (the raw frame) again with the frame's quantizers, and
  re-optimize the coefficient probabilities against ``new_state``'s.
* ``reencode_chunk``: both, for a whole chunk (ExCamera's xc-enc -r).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from . import tables
from .bitstream import ParsedFrame, parse_frame, write_frame
from .boolcoder import BoolDecoder
from .decoder import _prepare_intra_edges, coding_state, decode_frame, decode_syntax, dequant_factors
from .encode_mb import count_tokens, rebase_macroblocks
from .encoder import EncodedFrame, _coeff_updates, _prob, _Scratch, _source_planes, encode_frame
from .errors import CorruptFrameError, StateError
from .header import FrameTag, read_frame_header
from .image import Image
from .quantize import frame_quant_params
from .rate import TOKEN_COST_SHAPE, token_costs
from .state import DecoderState, Picture

DEFAULT_KF_Q_WEIGHT = 0.75


def frame_header(state: DecoderState, data: bytes):
    """A frame's header (section 9, ``codec.header.FrameHeader``) alone: the macroblock headers
    and tokens after it are not read."""
    buf = np.frombuffer(data, np.uint8)
    tag = FrameTag.read(buf)
    if 3 + tag.first_part_size > len(buf) or tag.header_size > len(buf):
        raise CorruptFrameError(f"first partition ({tag.first_part_size} bytes) runs past the end "
                                f"of the {len(buf)}-byte frame")
    bd = BoolDecoder(buf, tag.header_size, len(buf))
    return read_frame_header(bd, tag, coding_state(state, tag))


def frame_quantizer(state: DecoderState, data: bytes) -> int:
    """The base quantizer index a frame codes (section 9.6), from its frame header alone."""
    return frame_header(state, data).quant.y_ac


def filter_hint(state: DecoderState, data: bytes) -> tuple[int, int]:
    """The loop-filter level and sharpness a frame codes (section 9.6): where the replacement of a
    first pass's key frame starts its own search (``encode_given_state``)."""
    lf = frame_header(state, data).loop_filter
    return lf.level, lf.sharpness


def blended_quantizer(q_key: int, q_inter: int, weight: float = DEFAULT_KF_Q_WEIGHT) -> int:
    """ExCamera's quantizer for the replacement of a key frame: between the key frame's and the
    next interframe's, ``weight`` toward the key frame's."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"key-frame quantizer weight {weight} is outside 0..1")
    return int(round(weight * q_key + (1.0 - weight) * q_inter))


def encode_given_state(state: DecoderState, image: Image, q: int, speed: int = 1,
                       hint: tuple[int, int] | None = None) -> EncodedFrame:
    """The chunk's first image as an interframe coded against ``state`` (refreshing every
    reference). ``hint``: the loop-filter level and sharpness to search around, steps of 4, 2, 1
    (``filter_hint`` of the key frame it replaces: libvpx searched the same picture at a nearby
    quantizer), rather than scanning every level and sharpness: 5 to 7 trial filterings of the
    picture instead of about 20, for the same levels on bigbuckbunny 720p."""
    _check_state(state, image)
    return encode_frame(state, image, q, key_frame=False, speed=speed, refresh_all=True, filter_hint=hint,
                        filter_step=4)


def _check_state(state: DecoderState, image: Image) -> None:
    if not state.has_keyframe:
        raise StateError("the state to encode against holds no picture (it precedes any key frame)")
    h, w = image.y.shape
    if (state.width, state.height) != (w, h):
        raise StateError(f"the state is for {state.width}x{state.height} frames, the raw frame is {w}x{h}")


def _ints(values) -> tuple:
    return tuple(int(v) for v in values)


def _as_coded_anew(header, state: DecoderState):
    """The header with every "as coded" detail cleared, so the writer codes what differs from
    ``state`` (the new one), and with updates forced where ``state`` lacks values it keeps."""
    seg = header.segmentation
    prev = coding_state(state, header.tag)
    if seg.enabled:
        same_data = (seg.absolute == prev.segment_absolute and tuple(seg.quant) == _ints(prev.segment_quant)
                     and tuple(seg.lf) == _ints(prev.segment_lf))
        seg = dataclasses.replace(seg, update_data=seg.update_data or not same_data, update_map=True,
                                  quant_coded=None, lf_coded=None, tree_probs_coded=None)
    else:  # not coded: the values the new state keeps stay in force
        seg = dataclasses.replace(seg, absolute=bool(prev.segment_absolute),
                                  quant=_ints(prev.segment_quant),
                                  lf=_ints(prev.segment_lf),
                                  quant_coded=None, lf_coded=None, tree_probs_coded=None)
    lf = header.loop_filter
    if lf.deltas_enabled:
        same = (tuple(lf.ref_deltas) == _ints(prev.ref_lf_deltas)
                and tuple(lf.mode_deltas) == _ints(prev.mode_lf_deltas))
        lf = dataclasses.replace(lf, update_deltas=lf.update_deltas or not same)
    else:  # not coded: the deltas the new state keeps stay in force
        lf = dataclasses.replace(lf, ref_deltas=_ints(prev.ref_lf_deltas),
                                 mode_deltas=_ints(prev.mode_lf_deltas))
    lf = dataclasses.replace(lf, ref_deltas_coded=None, mode_deltas_coded=None)
    # MV probabilities are coded as 7 bits (1 or even): a value in force that the old state had
    # (a default, say) may not be codable against the new one. They only shape the entropy coding
    # of the vectors, so the new state's value serves as well there.
    mv = np.array(header.mv_probs, np.uint8)
    uncodable = (mv != prev.mv_probs) & (mv != 1) & (mv % 2 == 1)
    mv[uncodable] = np.asarray(prev.mv_probs)[uncodable]
    return dataclasses.replace(header, segmentation=seg, loop_filter=lf, mv_probs=mv,
                               quant=dataclasses.replace(header.quant, deltas_coded=None), coeff_updated=None,
                               ymode_probs_coded=None, uv_mode_probs_coded=None, mv_probs_coded=None)


def _segment_tree_probs(segment_map: np.ndarray) -> tuple:
    """Section 9.3's three segment-id tree probabilities best for this map."""
    n = np.bincount(segment_map.ravel(), minlength=4)
    return (_prob(int(n[0] + n[1]), int(n.sum())), _prob(int(n[0]), int(n[0] + n[1])), _prob(int(n[2]), int(n[2] + n[3])))


def rebase_frame(new_state: DecoderState, old_state: DecoderState, data: bytes, target: Image,
                 rdq: bool = True, lambda_scale: float = 0.015) -> EncodedFrame:
    """``data`` (coded against ``old_state``) coded again against ``new_state``: same header
    fields, modes, references and vectors; new residual toward ``target``; probabilities anew."""
    parsed = parse_frame(old_state, data)
    hdr = parsed.header
    if hdr.tag.key_frame:
        raise ValueError("a key frame does not depend on the state: nothing to rebase")
    _check_state(new_state, target)
    header = _as_coded_anew(hdr, new_state)
    mb_rows, mb_cols = new_state.mb_rows, new_state.mb_cols
    if header.segmentation.enabled:
        header = dataclasses.replace(header, segmentation=dataclasses.replace(
            header.segmentation, tree_probs=_segment_tree_probs(parsed.segment_map)))
    segment = parsed.segment_map if header.segmentation.enabled else np.zeros((mb_rows, mb_cols), np.uint8)

    src = _source_planes(target, mb_rows, mb_cols)
    dq = dequant_factors(header)
    qps = frame_quant_params(dq)
    lam = lambda_scale * float(dq[0, 1]) ** 2
    base_probs = np.ascontiguousarray(new_state.coeff_probs)
    tok_cost = np.zeros(TOKEN_COST_SHAPE, np.int32)
    token_costs(base_probs, tok_cost)

    modes = {k: v.copy() for k, v in parsed.modes.items()}
    coeffs = np.zeros((mb_rows, mb_cols, 25, 16), np.int16)
    eobs = np.zeros((mb_rows, mb_cols, 25), np.uint8)
    pic = Picture.allocate(mb_rows, mb_cols)
    _prepare_intra_edges(pic, mb_rows, mb_cols)
    refs = [new_state.last, new_state.golden or new_state.last, new_state.altref or new_state.last]
    filters = tables.SIXTAP_FILTERS if hdr.tag.version == 0 or hdr.tag.version > 3 else tables.BILINEAR_FILTERS
    s = _Scratch(mb_cols)
    rebase_macroblocks(src[0], src[1], src[2], pic.y, pic.u, pic.v, refs[0].y, refs[0].u, refs[0].v, refs[1].y,
                       refs[1].u, refs[1].v, refs[2].y, refs[2].u, refs[2].v, dq, qps, segment, lam, rdq, tok_cost,
                       modes["ymode"], modes["uvmode"], modes["ref"], modes["bmodes"], modes["mvs"], modes["skip"],
                       filters, hdr.tag.version == 3, coeffs, eobs, s.above_ctx, s.lctx, s.coefs, s.s16, s.work,
                       s.edge, s.above_right, s.mc_tmp)
    skips = modes["skip"][1:, 1:]
    counts = np.zeros((4, 8, 3, 11, 2), np.int64)
    count_tokens(coeffs, eobs, modes["ymode"][1:, 1:], skips, s.tok_above, s.lctx, counts)
    header = dataclasses.replace(header, skip_enabled=True, prob_skip=_prob(int(skips.size - skips.sum()), skips.size),
                                 coeff_probs=_coeff_updates(base_probs, counts))
    # The map in force after the frame: the one it codes, or else the new state's (not the old's).
    prev = coding_state(new_state, header.tag)
    segment_after = parsed.segment_map if header.segmentation.enabled else prev.segment_map
    frame = ParsedFrame(header, modes, np.array(segment_after, np.uint8), coeffs, eobs)
    out = write_frame(new_state, frame)
    # The decoder's pixel stage on the syntax just written, as the encoder does: what
    # decode_frame(new_state, out) gives (tests/test_reencode.py checks both) without reading it
    # back.
    state, recon = decode_syntax(prev, header, modes, frame.segment_map, coeffs, eobs)
    return EncodedFrame(out, False, header.quant.y_ac, recon, state)


def reencode_chunk(state_in: DecoderState, raw: list[Image], prediction: list[bytes],
                   prediction_state: DecoderState | None = None, kf_q_weight: float = DEFAULT_KF_Q_WEIGHT,
                   speed: int = 1, given_state: DecoderState | None = None) -> list[EncodedFrame]:
    """ExCamera's re-encode of one chunk: its first raw image given a state, then every later
    frame of ``prediction`` (the chunk's first pass, coded from ``prediction_state``, by default the
    empty state: it starts with a key frame) rebased onto the states that follow ``state_in``.

    ``given_state`` is the state the first image is encoded against (ExCamera's parallel step
    uses the previous chunk's first-pass exit state); when it differs from ``state_in`` (the real
    state the previous chunk left, known only in the serial step) that frame is rebased too.
    Shown frames are rebased toward the raw image they show; a hidden frame (an alt-ref) toward
    the picture the first pass decoded for it."""
    if not prediction:
        raise ValueError("the prediction chunk has no frames")
    old = prediction_state if prediction_state is not None else DecoderState()
    old_states, shown = [], []
    for data in prediction:
        old_states.append(old)
        old, img = decode_frame(old, data)
        shown.append(img)
    n_shown = sum(img is not None for img in shown)
    if n_shown != len(raw):
        raise ValueError(f"the prediction shows {n_shown} frames but the raw chunk has {len(raw)}")
    first_q = frame_quantizer(old_states[0], prediction[0])
    next_q = frame_quantizer(old_states[1], prediction[1]) if len(prediction) > 1 else first_q
    q = blended_quantizer(first_q, next_q, kf_q_weight)
    if shown[0] is None:
        raise ValueError("the prediction's first frame is hidden; it must show the chunk's first image")
    given = given_state if given_state is not None else state_in
    out = [encode_given_state(given, raw[0], q, speed, filter_hint(old_states[0], prediction[0]))]
    if given is not state_in and given.digest() != state_in.digest():
        out[0] = rebase_frame(state_in, given, out[0].data, raw[0])
    # The first pass's state after its first frame stands for the state the replacement frame was
    # chosen against: its later frames were coded against that (and what followed).
    state = out[0].state
    shown_index = 1
    for i in range(1, len(prediction)):
        if shown[i] is not None:
            target = raw[shown_index]
            shown_index += 1
        else:
            target = Image(*_hidden_target(old_states, prediction, i))
        out.append(rebase_frame(state, old_states[i], prediction[i], target))
        state = out[-1].state
    return out


def _hidden_target(old_states, prediction, i):
    """The picture the first pass reconstructed for hidden frame i (its new last reference)."""
    st, _ = decode_frame(old_states[i], prediction[i])
    refs = parse_frame(old_states[i], prediction[i]).header.refs
    pic = st.altref if refs.refresh_altref else (st.golden if refs.refresh_golden else st.last)
    from .predict import BORDER_UV, BORDER_Y
    h, w = st.height, st.width
    ch, cw = (h + 1) // 2, (w + 1) // 2
    return (pic.y[BORDER_Y:BORDER_Y + h, BORDER_Y:BORDER_Y + w].copy(),
            pic.u[BORDER_UV:BORDER_UV + ch, BORDER_UV:BORDER_UV + cw].copy(),
            pic.v[BORDER_UV:BORDER_UV + ch, BORDER_UV:BORDER_UV + cw].copy())
