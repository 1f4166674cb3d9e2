"""Encode-given-state and rebase (codec/reencode.py)."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from codec.decoder import decode_frame
from codec.encoder import Encoder, EncoderConfig, encode_frame
from codec.errors import StateError
from codec.image import Image
from codec.ivf import IvfHeader, IvfWriter
from codec.reencode import blended_quantizer, rebase_frame, reencode_chunk
from codec.ssim import ssim_planes
from codec.state import DecoderState
from codec.y4m import read_y4m
from common import CLIPS_DIR, requires_tool


@pytest.fixture(scope="module")
def two_chunks():
    _, frames = read_y4m(CLIPS_DIR / "foreman_qcif_176x144_10f.y4m")
    chunks = [frames[:5], frames[5:10]]
    first_pass = []
    for chunk in chunks:
        enc = Encoder(EncoderConfig(quantizer=40, speed=2))
        first_pass.append([enc.encode(f) for f in chunk])
    return chunks, first_pass


def test_reencoded_chunk_continues_the_previous_one(two_chunks):
    chunks, fp = two_chunks
    state = fp[0][-1].state
    out = reencode_chunk(state, chunks[1], [o.data for o in fp[1]])
    assert len(out) == 5
    # The key frame became an interframe, and a much smaller one.
    assert not out[0].key_frame and (out[0].data[0] & 1) == 1
    assert len(out[0].data) < len(fp[1][0].data) * 0.7
    # Each frame decodes from the state the previous one left, to the frame's reconstruction.
    for o in out:
        state, img = decode_frame(state, o.data)
        assert img.md5() == o.recon.md5()
    # Quality stays close to the independent first pass (whose key frame spent far more bits).
    for k, (o, f, p) in enumerate(zip(out, chunks[1], fp[1])):
        assert ssim_planes(o.recon, f).all > ssim_planes(p.recon, f).all - 0.03


@requires_tool("vpxdec")
def test_vpxdec_decodes_the_joined_stream_to_our_pictures(tmp_path, two_chunks):
    chunks, fp = two_chunks
    out = reencode_chunk(fp[0][-1].state, chunks[1], [o.data for o in fp[1]])
    frames = [o.data for o in fp[0]] + [o.data for o in out]
    pictures = [o.recon for o in fp[0]] + [o.recon for o in out]
    ivf = tmp_path / "joined.ivf"
    with IvfWriter(ivf, IvfHeader(width=176, height=144, frame_count=len(frames))) as w:
        for i, d in enumerate(frames):
            w.write(d, i)
    res = subprocess.run(["vpxdec", "--i420", "-o", str(tmp_path / "f-%4.i420"), str(ivf)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    for i, p in enumerate(pictures):
        assert (tmp_path / f"f-{i + 1:04d}.i420").read_bytes() == p.to_i420()


def test_given_state_differing_from_the_real_one_is_rebased(two_chunks):
    chunks, fp = two_chunks
    real = fp[0][-1].state
    given = fp[0][-2].state  # a stand-in for the previous chunk's first-pass exit state
    out = reencode_chunk(real, chunks[1], [o.data for o in fp[1]], given_state=given)
    state = real
    for o in out:
        state, img = decode_frame(state, o.data)
        assert img.md5() == o.recon.md5()


def test_rebase_onto_the_same_state_reproduces_the_frame(two_chunks):
    # The first pass ran at speed 2 (plain quantizer): rebasing a frame onto the very state it was
    # coded against, toward the same source, with the same quantizer, must give the same frame.
    chunks, fp = two_chunks
    for k in (1, 2, 4):
        before = fp[1][k]
        again = rebase_frame(fp[1][k - 1].state, fp[1][k - 1].state, before.data, chunks[1][k], rdq=False)
        assert again.data == before.data
    # With the trellis quantizer it spends fewer bits for a little less quality.
    trellis = rebase_frame(fp[1][0].state, fp[1][0].state, fp[1][1].data, chunks[1][1], rdq=True)
    assert len(trellis.data) < len(fp[1][1].data)
    assert ssim_planes(trellis.recon, chunks[1][1]).all > ssim_planes(fp[1][1].recon, chunks[1][1]).all - 0.02


def test_blended_quantizer():
    assert blended_quantizer(20, 40) == 25
    assert blended_quantizer(20, 40, 0.0) == 40
    with pytest.raises(ValueError):
        blended_quantizer(20, 40, 1.5)


def test_mismatched_states_and_chunks_are_refused(two_chunks):
    chunks, fp = two_chunks
    with pytest.raises(StateError, match="176x144"):
        small = Image(np.zeros((16, 16), np.uint8), np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8))
        reencode_chunk(encode_frame(DecoderState(), small, 40, True).state, chunks[1], [o.data for o in fp[1]])
    with pytest.raises(StateError, match="no picture"):
        reencode_chunk(DecoderState(), chunks[1], [o.data for o in fp[1]])
    with pytest.raises(ValueError, match="shows 5 frames but the raw chunk has 4"):
        reencode_chunk(fp[0][-1].state, chunks[1][:4], [o.data for o in fp[1]])



def _decoded(name: str, n: int = 12):
    """A conformance vector's first ``n`` frames, the state before each and the pictures shown."""
    from codec.ivf import read_ivf
    from common import VP8_DIR
    frames = [f.data for f in read_ivf(VP8_DIR / f"{name}.ivf")[1]][:n]
    states, pictures, state = [], [], DecoderState()
    for data in frames:
        states.append(state)
        state, img = decode_frame(state, data)
        pictures.append(img)
    return frames, states, pictures


def _rebase_matches_decoder(new, old, data, target) -> None:
    out = rebase_frame(new, old, data, target)
    ref_state, ref_img = decode_frame(new, out.data)
    assert out.state == ref_state
    assert out.recon.md5() == ref_img.md5()


# segment maps kept and updated, kept probabilities, golden and alt-ref updates, a hidden frame
REBASE_VECTORS = ("vp80-00-comprehensive-002", "vp80-00-comprehensive-007", "vp80-00-comprehensive-011",
                  "vp80-00-comprehensive-013", "vp80-03-segmentation-1437", "vp80-05-sharpness-1439")


@pytest.mark.parametrize("name", REBASE_VECTORS)
def test_a_rebased_frame_s_state_is_the_decoder_s(name):
    """``rebase_frame`` takes its next state and picture from the decoder's pixel stage on the
    syntax it writes: they must be what decoding the written bytes gives. Each interframe is
    rebased onto the state before the one it was coded against, and onto its own."""
    frames, states, pictures = _decoded(name)
    checked = 0
    for k in range(2, len(frames)):
        if (frames[k][0] & 1) == 0:  # key frames are not rebased
            continue
        target = next(p for p in pictures[k::-1] if p is not None)  # a hidden frame: any picture
        for new in (states[k - 1], states[k]):
            if new.has_keyframe:
                _rebase_matches_decoder(new, states[k], frames[k], target)
                checked += 1
    assert checked >= 8


def test_a_frame_rebased_onto_a_state_with_other_kept_values_keeps_the_state_s(two_chunks):
    """A frame that codes no segmentation and no loop-filter deltas (the native encoder's),
    rebased onto a state that holds a segment map, segment values and deltas: those stay in
    force, in the written frame as in the state after it."""
    chunks, fp = two_chunks
    _, seg_states, _ = _decoded("vp80-00-comprehensive-007", 6)
    new = seg_states[3]
    assert new.segment_map.any() and any(new.ref_lf_deltas) and (new.width, new.height) == (176, 144)
    for k in (1, 2, 3):
        _rebase_matches_decoder(new, fp[0][k - 1].state, fp[0][k].data, chunks[0][k])
