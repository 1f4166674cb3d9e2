"""`excamera encode --workers 0`: ExCamera[N, x] in one process, and `excamera reencode`."""

from __future__ import annotations

import subprocess
import sys

import pytest

from codec.chunks import frame_tag
from codec.decoder import Decoder
from codec.ivf import read_ivf
from codec.state import DecoderState
from codec.y4m import read_y4m
from common import CLIPS_DIR, requires_tool
from media.excamera_encode import EncodeSettings, encode_frames

CLIP = CLIPS_DIR / "foreman_qcif_176x144_10f.y4m"


def run(*args):
    return subprocess.run([sys.executable, "-m", "excamera", *map(str, args)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def frames():
    return read_y4m(CLIP)[1]


@pytest.mark.parametrize("first_pass", ["native", "libvpx"])
def test_one_key_frame_per_batch_and_every_frame_shown(frames, first_pass):
    out = encode_frames(frames, EncodeSettings(chunk_frames=2, batch_chunks=2, cq_level=24, first_pass=first_pass))
    tags = [frame_tag(d) for d in out]
    assert [t.key_frame for t in tags] == [i % 4 == 0 for i in range(10)]
    dec = Decoder()
    shown = [dec.decode(d) for d in out]
    assert sum(img is not None for img in shown) == len(frames)


@pytest.mark.parametrize("first_pass", ["native", "libvpx"])
def test_same_input_same_bytes(frames, first_pass):
    # Across processes for libvpx: tests/test_firstpass_heap.py.
    settings = EncodeSettings(chunk_frames=3, batch_chunks=4, cq_level=30, first_pass=first_pass)
    assert encode_frames(frames, settings) == encode_frames(frames, settings)


def test_pictures_are_read_one_batch_at_a_time(frames):
    """From an iterator (a video being read), encode_frames takes the next batch's pictures only
    once the previous batch is coded, and gives the same bytes as from a list."""
    settings = EncodeSettings(chunk_frames=2, batch_chunks=2, cq_level=30, first_pass="native")
    events = []
    taken_after = []

    def reading():
        for i, image in enumerate(frames):
            taken_after.append(list(events))
            yield image

    out = encode_frames(reading(), settings, progress=lambda stage, done, total: events.append((stage, done, total)))
    assert out == encode_frames(frames, settings)
    for i, before in enumerate(taken_after):
        batch = i // 4  # 4 pictures a batch
        assert ("rebase", 2 * batch, None) in before or batch == 0  # the previous batch is done...
        assert not any(e[1] > 2 * batch for e in before)             # ...and nothing of this one yet
    assert events[-1] == ("rebase", 5, None)


def test_batches_of_chunks_save_bits_over_independent_chunks(frames):
    base = dict(chunk_frames=2, cq_level=30, first_pass="libvpx")
    joined = sum(map(len, encode_frames(frames, EncodeSettings(batch_chunks=5, **base))))
    independent = sum(map(len, encode_frames(frames, EncodeSettings(batch_chunks=1, **base))))
    assert joined < 0.8 * independent


@requires_tool("vpxdec")
def test_cli_output_decodes_in_vpxdec_like_ours(tmp_path):
    out = tmp_path / "out.ivf"
    res = run("encode", CLIP, "-o", out, "--chunk-frames", 3, "--batch-chunks", 2, "--workers", 0)
    assert res.returncode == 0, res.stderr
    ours = run("decode", out, "--frame-md5").stdout.split()[::2]
    assert len(ours) == 10
    res = subprocess.run(["vpxdec", "--i420", "-o", str(tmp_path / "f-%4.i420"), str(out)],
                         capture_output=True, text=True)
    assert res.returncode == 0 and res.stderr == ""
    import hashlib
    theirs = [hashlib.md5((tmp_path / f"f-{i:04d}.i420").read_bytes()).hexdigest() for i in range(1, 11)]
    assert ours == theirs


@requires_tool("ffmpeg")
def test_webm_output_decodes_in_ffmpeg_without_warnings(tmp_path):
    out = tmp_path / "out.webm"
    res = run("encode", CLIP, "-o", out, "--chunk-frames", 5, "--first-pass", "native", "--workers", 0)
    assert res.returncode == 0, res.stderr
    res = subprocess.run(["ffmpeg", "-v", "warning", "-i", str(out), "-f", "framemd5", "-"],
                         capture_output=True, text=True)
    assert res.returncode == 0 and res.stderr == ""
    assert len([l for l in res.stdout.splitlines() if not l.startswith("#")]) == 10


def test_bad_input_one_line_and_nothing_written(tmp_path):
    out = tmp_path / "out.ivf"
    res = run("encode", CLIP, "-o", out, "--chunk-frames", 12, "--workers", 0)
    assert res.returncode == 1 and res.stderr.count("\n") == 1
    assert "fewer than one chunk of 12" in res.stderr and not out.exists()
    garbage = tmp_path / "garbage.y4m"
    garbage.write_bytes(b"YUV4MPEG2 nonsense\n")
    res = run("encode", garbage, "-o", out, "--workers", 0)
    assert res.returncode == 1 and res.stderr.startswith("excamera: error:") and not out.exists()
    # Cut inside picture 7: batches before it are coded as it is read, yet nothing is written.
    data = CLIP.read_bytes()
    cut = tmp_path / "cut.y4m"
    cut.write_bytes(data[:len(data) * 75 // 100])
    res = run("encode", cut, "-o", out, "--chunk-frames", 2, "--batch-chunks", 2, "--first-pass", "native", "--workers", 0)
    assert res.returncode == 1 and res.stderr.count("\n") == 1 and "frame 7" in res.stderr, res.stderr
    assert run("encode", CLIP, "-o", tmp_path / "out.mp4", "--workers", 0).returncode == 1
    assert run("encode", CLIP, "-o", out, "--cq-level", 64, "--workers", 0).returncode == 2
    assert sorted(tmp_path.iterdir()) == sorted([garbage, cut])


def test_reencode_cli_continues_a_chunk_and_refuses_bad_states(tmp_path, frames):
    from codec.encoder import Encoder, EncoderConfig
    enc = Encoder(EncoderConfig(quantizer=40, speed=3))
    first = [enc.encode(f) for f in frames[:5]]
    (tmp_path / "s.state").write_bytes(first[-1].state.to_bytes())
    pred = Encoder(EncoderConfig(quantizer=40, speed=3))
    chunk = [pred.encode(f).data for f in frames[5:]]
    from excamera.commands.encode import write_ivf
    write_ivf(str(tmp_path / "pred.ivf"), chunk, 176, 144, (30, 1))
    raw = tmp_path / "raw.y4m"
    _write_y4m(raw, frames[5:])
    out = tmp_path / "out.ivf"
    res = run("reencode", raw, "--prediction", tmp_path / "pred.ivf", "--state-in", tmp_path / "s.state",
              "-o", out, "--state-out", tmp_path / "s2.state")
    assert res.returncode == 0, res.stderr
    header, data = read_ivf(out)
    assert header.user == bytes.fromhex(first[-1].state.digest())[:4]
    state = first[-1].state
    for f in data:
        assert (f.data[0] & 1) == 1  # interframes only
        state, _ = _decode(state, f.data)
    assert DecoderState.from_bytes((tmp_path / "s2.state").read_bytes()) == state
    # A corrupt state, and a raw chunk that does not match the prediction: one line, nothing written.
    (tmp_path / "bad.state").write_bytes(b"XCDS garbage")
    res = run("reencode", raw, "--prediction", tmp_path / "pred.ivf", "--state-in", tmp_path / "bad.state",
              "-o", tmp_path / "x.ivf")
    assert res.returncode == 1 and res.stderr.count("\n") == 1 and not (tmp_path / "x.ivf").exists()
    short = tmp_path / "short.y4m"
    _write_y4m(short, frames[5:8])
    res = run("reencode", short, "--prediction", tmp_path / "pred.ivf", "--state-in", tmp_path / "s.state",
              "-o", tmp_path / "x.ivf")
    assert res.returncode == 1 and "shows 5 frames but the raw chunk has 3" in res.stderr
    assert not (tmp_path / "x.ivf").exists()


def _decode(state, data):
    from codec.decoder import decode_frame
    return decode_frame(state, data)


def _write_y4m(path, images):
    h, w = images[0].y.shape
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F30:1 Ip A1:1 C420jpeg\n".encode())
        for img in images:
            f.write(b"FRAME\n" + img.to_i420())


def test_webm_output_repeats_byte_for_byte(tmp_path):
    outs = []
    for name in ("a.webm", "b.webm"):
        res = run("encode", CLIP, "-o", tmp_path / name, "--chunk-frames", 5, "--first-pass", "native", "--workers", 0)
        assert res.returncode == 0, res.stderr
        outs.append((tmp_path / name).read_bytes())
    assert outs[0] == outs[1]
