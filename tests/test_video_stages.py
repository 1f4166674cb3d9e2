"""pipeline.stages.video: each stage called directly on real clips, compared picture for picture
with the ffmpeg binary's output for the same filter; encoded chunks checked with ffmpeg and
vpxdec (no warning, the input's frame count, SSIM >= 0.95 against the raw pictures)."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
from common import CLIPS_DIR, ffmpeg_yuv, requires_tool

from codec.image import Image
from codec.ssim import mean_ssim
from codec.y4m import read_y4m
from pipeline.filtergraph import FilterGraphError
from pipeline.stage import StageContext, get_stage
from pipeline.stages.video import StageInputError
from pipeline.values import EncodedChunk, FrameBatch

FOREMAN = CLIPS_DIR / "foreman_qcif_176x144_10f.y4m"
CISCO = CLIPS_DIR / "CiscoVT2people_160x96_6fps_5f.y4m"
PARK = CLIPS_DIR / "park_joy_90p_8_420.y4m"
MIRROR = "[0]crop=iw/2:ih:0:0,split[a][b];[b]hflip[c];[a][c]hstack"


def batch(path, start=0, frames=None) -> FrameBatch:
    header, images = read_y4m(path)
    return FrameBatch.from_images(images[:frames], start, header.rate)


def raw(batches) -> bytes:
    return b"".join(im.to_i420() for b in batches for im in b.images())


def run(name: str, tmp_path, **ports_and_config):
    d = get_stage(name)
    config = {k: o.default for k, o in d.options.items() if not o.required}
    inputs = {}
    for k, v in ports_and_config.items():
        (inputs if k in d.inputs else config)[k] = v
    ctx = StageContext(node=name, task_id="t", lineage=0, tmpdir=str(tmp_path))
    return d.fn(ctx, inputs, config)


def test_sprocket_names_are_registered():
    for name in ("decode", "grayscale", "video_filter", "duplicate_filter", "merge_filter", "blend",
                 "encode", "excamera_encode"):
        assert get_stage(name).name == name
    assert get_stage("encode_to_dash").name == "encode"
    assert get_stage("blend").delivery == "pair" and get_stage("merge_filter").delivery == "pair"
    assert get_stage("excamera_encode").delivery == "serialized_frames"
    assert set(get_stage("duplicate_filter").outputs) == {"frames_0", "frames_1"}


@requires_tool("ffmpeg")
@pytest.mark.parametrize("clip", [FOREMAN, CISCO, PARK], ids=["foreman", "cisco", "park_joy"])
def test_grayscale_equals_ffmpeg_hue(clip, tmp_path):
    b = batch(clip, start=7)
    (out,) = run("grayscale", tmp_path, frames=[b])["frames"]
    assert (out.start, out.count, out.fps) == (7, b.count, b.fps)
    assert raw([out]) == ffmpeg_yuv([clip], ["-vf", "hue=s=0"])
    # the same through the generic filter stage
    (vf,) = run("video_filter", tmp_path, frames=[b], filter="hue=s=0")["frames"]
    assert raw([vf]) == raw([out])


@requires_tool("ffmpeg")
def test_video_filter_joins_batches_in_order(tmp_path):
    b = batch(FOREMAN)
    parts = [b.slice(0, 4), b.slice(4, 10)]
    (out,) = run("video_filter", tmp_path, frames=parts, filter="crop=iw/2:ih:0:0, hflip")["frames"]
    assert out.start == 0 and out.count == 10
    assert raw([out]) == ffmpeg_yuv([FOREMAN], ["-vf", "crop=iw/2:ih:0:0,hflip"])


@requires_tool("ffmpeg")
@pytest.mark.parametrize("clip", [FOREMAN, CISCO], ids=["foreman", "cisco"])
def test_mirror_pipeline_equals_ffmpeg(clip, tmp_path):
    """Sprocket's mirror effect: duplicate -> crop | crop,hflip -> merge hstack."""
    b = batch(clip)
    dup = run("duplicate_filter", tmp_path, frames=[b])
    (left,) = run("video_filter", tmp_path, frames=dup["frames_0"], filter="crop=iw/2:ih:0:0")["frames"]
    (right,) = run("video_filter", tmp_path, frames=dup["frames_1"],
                   filter="crop=iw/2:ih:0:0,hflip")["frames"]
    (out,) = run("merge_filter", tmp_path, frames_0=[left], frames_1=[right],
                 filter_complex="hstack")["frames"]
    assert raw([out]) == ffmpeg_yuv([clip], ["-filter_complex", MIRROR])
    (labelled,) = run("merge_filter", tmp_path, frames_0=[left], frames_1=[right],
                      filter_complex="[0:v][1:v]hstack=inputs=2[v]")["frames"]
    assert raw([labelled]) == raw([out])


@requires_tool("ffmpeg")
def test_blend_equals_ffmpeg_average(tmp_path):
    a = batch(FOREMAN)
    mirrored = FrameBatch(np.ascontiguousarray(a.y[:, ::-1]), np.ascontiguousarray(a.u[:, ::-1]),
                          np.ascontiguousarray(a.v[:, ::-1]), a.start, a.fps)
    (out,) = run("blend", tmp_path, frames_0=[a], frames_1=[mirrored])["frames"]
    want = ffmpeg_yuv([FOREMAN, FOREMAN], ["-filter_complex", "[1]vflip[f];[0][f]blend=all_mode=average"])
    assert raw([out]) == want
    # rounding: (A + B) >> 1, i.e. down, on every plane
    assert out.y[0, 0, 0] == (int(a.y[0, 0, 0]) + int(a.y[0, -1, 0])) // 2


def test_blend_joins_other_sizes_and_lengths_by_time(tmp_path):
    """Issue 23: frames_1 is scaled to frames_0's size and paired by time (its last frame
    repeated), not refused; tests/test_join_by_time.py compares with ffmpeg's framesync."""
    for other in (batch(CISCO), batch(FOREMAN, frames=4)):
        (out,) = run("blend", tmp_path, frames_0=[batch(FOREMAN)], frames_1=[other])["frames"]
        assert (out.count, out.width, out.height) == (10, 176, 144)


def test_bad_filter_is_one_line(tmp_path):
    with pytest.raises(FilterGraphError, match="unknown filter 'huey'"):
        run("video_filter", tmp_path, frames=[batch(CISCO)], filter="huey=s=0")


def _decode_tools(path, tmp_path) -> bytes:
    """The file decoded by ffmpeg and by vpxdec (each silent, each the same pictures)."""
    ff = subprocess.run(["ffmpeg", "-nostdin", "-v", "warning", "-i", str(path), "-f", "rawvideo",
                         "-pix_fmt", "yuv420p", "-"], capture_output=True, timeout=60, check=False)
    assert ff.returncode == 0 and ff.stderr == b"", ff.stderr
    out = tmp_path / "vpxdec.yuv"
    vp = subprocess.run(["vpxdec", "--i420", "-o", str(out), str(path)], capture_output=True, timeout=60, check=False)
    assert vp.returncode == 0 and vp.stderr == b"", vp.stderr
    assert out.read_bytes() == ff.stdout
    return ff.stdout


def _images(data: bytes, w: int, h: int) -> list[Image]:
    cw, ch = (w + 1) // 2, (h + 1) // 2
    size = w * h + 2 * cw * ch
    out = []
    for k in range(len(data) // size):
        a = np.frombuffer(data, np.uint8, size, k * size)
        out.append(Image(a[:w * h].reshape(h, w), a[w * h:w * h + cw * ch].reshape(ch, cw),
                         a[w * h + cw * ch:].reshape(ch, cw)))
    return out


@requires_tool("ffmpeg")
@requires_tool("vpxdec")
@pytest.mark.parametrize("encoder", ["libvpx", "native"])
def test_encode_decodes_everywhere(encoder, tmp_path):
    gray = run("grayscale", tmp_path, frames=[batch(FOREMAN, start=30)])["frames"]
    (chunk,) = run("encode_to_dash", tmp_path, frames=gray, encoder=encoder)["chunks"]
    assert (chunk.container, chunk.start, chunk.count, chunk.fps) == ("ivf", 30, 10, (30, 1))
    again = run("encode", tmp_path, frames=gray, encoder=encoder)["chunks"][0]
    assert again.data == chunk.data  # deterministic
    path = tmp_path / "c.ivf"
    path.write_bytes(chunk.data)
    decoded = _images(_decode_tools(path, tmp_path), 176, 144)
    assert len(decoded) == 10
    assert mean_ssim(gray[0].images(), decoded).all >= 0.95
    (back,) = run("decode", tmp_path, chunks=[chunk])["frames"]
    assert back.start == 30 and back.images() == decoded


@requires_tool("ffmpeg")
@requires_tool("vpxdec")
def test_excamera_encode(tmp_path):
    import io

    from codec.chunks import frame_tag
    from codec.ivf import read_ivf
    b = batch(FOREMAN, start=12)
    (chunk,) = run("excamera_encode", tmp_path, frames=[b.slice(0, 5), b.slice(5, 10)],
                   chunk_frames=3, batch_chunks=2)["chunks"]
    assert (chunk.start, chunk.count) == (12, 10)
    frames = [f.data for f in read_ivf(io.BytesIO(chunk.data))[1]]
    keys = [i for i, d in enumerate(frames) if frame_tag(d).key_frame]
    assert keys == [0, 6]  # one key frame every N·x = 6 frames
    path = tmp_path / "x.ivf"
    path.write_bytes(chunk.data)
    decoded = _images(_decode_tools(path, tmp_path), 176, 144)
    assert len(decoded) == 10 and mean_ssim(b.images(), decoded).all >= 0.95
    # fewer frames than one chunk still encode
    (short,) = run("excamera_encode", tmp_path, frames=[b.slice(0, 2)], chunk_frames=6)["chunks"]
    assert short.count == 2


def test_decode_checks_the_count(tmp_path):
    data = (CISCO).read_bytes()
    chunk = EncodedChunk(data, "y4m", 5, 4, (6, 1))
    with pytest.raises(StageInputError, match="says 4 frames but decodes to 5"):
        run("decode", tmp_path, chunks=[chunk])
    with pytest.raises(StageInputError, match="chunk at frame 0"):
        run("decode", tmp_path, chunks=[EncodedChunk(b"DKIF garbage", "ivf", 0, 1)])


@requires_tool("ffmpeg")
@requires_tool("vpxdec")
def test_grayscale_flow_from_a_compressed_input(tmp_path):
    """Sprocket's grayscale pipeline by hand, without the framework: bikes (H.264, B-frames) cut
    at its key frames, decoded, grayscaled; raw output equals ffmpeg's, the encoded output decodes
    in ffmpeg and vpxdec without a warning, with every frame, at SSIM >= 0.95 against it."""
    from pipeline.media_io import cut_input, write_output
    bikes = CLIPS_DIR / "compressed" / "bikes_640x272_100f.mp4"
    chunks = list(cut_input(str(bikes), None))
    gray = [g for c in chunks for g in run("grayscale", tmp_path,
                                            frames=run("decode", tmp_path, chunks=[c])["frames"])["frames"]]
    # ffmpeg's CLI would pad the trimmed clip's timestamps with repeated frames: passthrough
    want = ffmpeg_yuv([bikes], ["-fps_mode", "passthrough", "-vf", "hue=s=0"])
    assert raw(gray) == want
    encoded = [e for g in gray for e in run("encode_to_dash", tmp_path, frames=[g])["chunks"]]
    out = tmp_path / "gray.webm"
    write_output(str(out), "chunks", encoded)
    decoded = _images(_decode_tools(out, tmp_path), 640, 272)
    assert len(decoded) == 100
    assert mean_ssim(_images(want, 640, 272), decoded).all >= 0.95
