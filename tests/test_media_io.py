"""pipeline.media_io: inputs cut into chunks (round trips against a whole decode), images read,
outputs written in each form, atomically."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from common import CLIPS_DIR, ffmpeg_yuv, requires_tool

from codec.y4m import read_y4m
from media.video import open_video
from pipeline.media_io import (
    MediaError,
    check_output,
    cut_input,
    read_image,
    write_output,
)
from pipeline.stages.video import decode_chunk, encode_vp8
from pipeline.values import EncodedChunk, FrameBatch, Records

FOREMAN = CLIPS_DIR / "foreman_qcif_176x144_10f.y4m"
CISCO = CLIPS_DIR / "CiscoVT2people_160x96_6fps_5f.y4m"
BIKES = CLIPS_DIR / "compressed" / "bikes_640x272_100f.mp4"
BUNNY = CLIPS_DIR / "compressed" / "bigbuckbunny_1280x720_30f.mp4"


def batch(path, start=0) -> FrameBatch:
    header, images = read_y4m(path)
    return FrameBatch.from_images(images, start, header.rate)


def round_trip(path, frames_per_chunk, tmp_path) -> list[EncodedChunk]:
    """Cut ``path``; the chunks' pictures, in order, must be exactly a whole decode's."""
    chunks = list(cut_input(str(path), frames_per_chunk))
    with open_video(path) as video:
        whole = [im.md5() for im in video]
        rate = video.rate
    got = []
    for c in chunks:
        assert c.start == len(got) and c.fps == rate
        b = decode_chunk(EncodedChunk.from_bytes(c.to_bytes()), str(tmp_path))
        assert b.count == c.count
        got += [im.md5() for im in b.images()]
    assert got == whole
    return chunks


def test_cut_raw_input(tmp_path):
    chunks = round_trip(FOREMAN, 4, tmp_path)
    assert [(c.container, c.count) for c in chunks] == [("y4m", 4), ("y4m", 4), ("y4m", 2)]
    # one second of frames by default: 6 fps, 5 frames
    assert [c.count for c in round_trip(CISCO, None, tmp_path)] == [5]


def test_cut_vp8_ivf_is_decoded(tmp_path):
    chunk = encode_vp8(batch(CISCO))
    path = tmp_path / "in.ivf"
    path.write_bytes(chunk.data)
    chunks = round_trip(path, 2, tmp_path)
    assert [(c.container, c.count) for c in chunks] == [("y4m", 2), ("y4m", 2), ("y4m", 1)]


def test_cut_at_key_frames_without_reencoding(tmp_path):
    """bikes: key frames at 0, 30, 76 of 100 (with B-frames): three remuxed pieces."""
    chunks = round_trip(BIKES, 25, tmp_path)
    assert [(c.container, c.start, c.count) for c in chunks] == [
        ("matroska", 0, 30), ("matroska", 30, 46), ("matroska", 76, 24)]
    assert sum(len(c.data) for c in chunks) < 1.2 * os.path.getsize(BIKES)
    # at 15 frames per chunk the 46-frame GOP is too long (> 2 chunks): decoded and cut there
    chunks = round_trip(BIKES, 15, tmp_path)
    assert [(c.container, c.count) for c in chunks] == [
        ("matroska", 30), ("y4m", 15), ("y4m", 15), ("y4m", 16), ("matroska", 24)]
    # at 10 every GOP is too long: the whole input is decoded and cut
    chunks = round_trip(BIKES, 10, tmp_path)
    assert [(c.container, c.count) for c in chunks] == [("y4m", 10)] * 10
    assert [c.count for c in round_trip(BIKES, 40, tmp_path)] == [76, 24]  # 30 < 40, then 30 + 46


def test_cut_idr_gops_without_a_decode(tmp_path, monkeypatch):
    """bikes and bigbuckbunny key frames are all H.264 IDR pictures: remuxed with no decode at
    all (a decode here would fail the test), and still exactly a whole decode's pictures."""
    import pipeline.media_io as media_io

    def no_decode(*a, **k):
        raise AssertionError("decoded an IDR-only input")
    monkeypatch.setattr(media_io, "_Cutter", no_decode)
    monkeypatch.setattr(media_io, "_decoded_md5s", no_decode)
    assert [c.count for c in round_trip(BIKES, 25, tmp_path)] == [30, 46, 24]
    assert [c.count for c in round_trip(BUNNY, None, tmp_path)] == [30]
    with pytest.raises(AssertionError, match="decoded an IDR-only input"):
        list(cut_input(str(BIKES), 15))  # a GOP of 46 > 2 x 15: that stretch must be decoded


def test_cut_single_gop(tmp_path):
    """bigbuckbunny: one key frame in 30 frames of 720p."""
    chunks = round_trip(BUNNY, None, tmp_path)  # 25 fps: a 30-frame GOP fits (<= 2 chunks)
    assert [(c.container, c.count) for c in chunks] == [("matroska", 30)]
    chunks = round_trip(BUNNY, 12, tmp_path)
    assert [(c.container, c.count) for c in chunks] == [("y4m", 12), ("y4m", 12), ("y4m", 6)]


@requires_tool("ffmpeg")
def test_cut_open_gop_falls_back_to_raw(tmp_path):
    """An open GOP's leading B-frames need the GOP before: that piece is decoded, not remuxed."""
    path = tmp_path / "open.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(BIKES), "-frames:v", "40",
                    "-c:v", "libx264", "-g", "12", "-bf", "3", "-x264-params", "open-gop=1",
                    str(path)], check=True, timeout=120)
    from pipeline.media_io import _IdrCheck, _open, _packets
    container, stream = _open(str(path))
    check = _IdrCheck(stream)
    for p in _packets(str(path), container, stream):
        check.see(p)
    container.close()
    assert check.prefix == 4 and not check.ok  # its I pictures are not IDR: checked by decoding
    chunks = round_trip(path, 12, tmp_path)
    assert sum(c.count for c in chunks) == 40
    assert "y4m" in {c.container for c in chunks}


def test_cut_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        cut_input(str(tmp_path / "missing.mp4"), 10)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 1000)
    with pytest.raises(MediaError, match="not a video file ffmpeg can read"):
        list(cut_input(str(bad), 10))
    with pytest.raises(MediaError, match="frames_per_chunk 0"):
        cut_input(str(FOREMAN), 0)


def test_read_image(tmp_path):
    from PIL import Image as PILImage
    rgb = np.zeros((31, 45, 3), np.uint8)
    rgb[:, :, 0] = 200
    path = tmp_path / "red.png"
    PILImage.fromarray(rgb).save(path)
    b = read_image(str(path))
    assert (b.count, b.width, b.height) == (1, 45, 31) and b.u.shape == (1, 16, 23)
    assert b.v.mean() > 200  # red: high Cr
    (tmp_path / "x.png").write_bytes(b"not a picture")
    with pytest.raises(MediaError, match="x.png: not an image file"):
        read_image(str(tmp_path / "x.png"))


@pytest.mark.parametrize("path, port, match", [
    ("o.json", "frames", r"a frames port is written as .ivf, .m3u8, .mkv, .mp4, .mpd, .webm, .y4m, not .json"),
    ("o.webm", "records", r"a records port is written as .json"),
    ("o.avi", "chunks", r"not .avi"),
    ("o", "chunks", "not a file without an extension"),
    ("o.webm", "blobs", "type 'blobs' cannot be written"),
    ("nodir/o.webm", "chunks", "does not exist"),
])
def test_check_output_refuses(tmp_path, path, port, match):
    with pytest.raises(MediaError, match=match) as e:
        check_output(str(tmp_path / path), port)
    assert "\n" not in str(e.value)


@contextlib.contextmanager
def _as_nobody():
    """Run the block with the real and effective uid of ``nobody`` when this is root (who may
    write anywhere, and CI runs as root), the saved uid kept so root comes back after; as any
    other user, as that user. ``os.access`` asks with the real uid, so both must change."""
    if os.getuid() != 0:
        yield
        return
    os.setresuid(65534, 65534, 0)
    try:
        yield
    finally:
        os.setresuid(0, 0, 0)


def test_check_output_unwritable():
    # Under a world-searchable directory (pytest's own tmp dir is root's alone, closed to nobody).
    base = tempfile.mkdtemp(prefix="excamera-ro-")
    os.chmod(base, 0o755)
    ro = os.path.join(base, "ro")
    os.mkdir(ro, 0o555)
    os.chmod(ro, 0o555)
    try:
        with _as_nobody():
            assert os.path.isdir(ro) and not os.access(ro, os.W_OK)
            with pytest.raises(MediaError, match="is not writable"):
                check_output(os.path.join(ro, "o.webm"), "chunks")
        check_output(os.path.join(base, "o.webm"), "chunks")   # its writable parent passes
    finally:
        shutil.rmtree(base)


def _vp8_chunks():
    b = batch(FOREMAN)
    return b, [encode_vp8(b.slice(0, 4)), encode_vp8(b.slice(4, 10))]


def _decode_raw(path) -> bytes:
    proc = subprocess.run(["ffmpeg", "-nostdin", "-v", "warning", "-i", str(path), "-f", "rawvideo",
                           "-pix_fmt", "yuv420p", "-"], capture_output=True, timeout=60, check=False)
    assert proc.returncode == 0 and proc.stderr == b"", proc.stderr
    return proc.stdout


def _concat(chunks) -> bytes:
    return b"".join(im.to_i420() for c in chunks for im in decode_chunk(c).images())


@requires_tool("ffmpeg")
@pytest.mark.parametrize("ext", [".webm", ".ivf"])
def test_write_vp8_stream(tmp_path, ext):
    b, chunks = _vp8_chunks()
    out = tmp_path / f"out{ext}"
    write_output(str(out), "chunks", chunks[::-1])  # any order: placed by start
    assert _decode_raw(out) == _concat(chunks)  # the chunks' own frames, not re-encoded
    if shutil.which("vpxdec"):
        vp = subprocess.run(["vpxdec", "--i420", "-o", str(tmp_path / "v.yuv"), str(out)],
                            capture_output=True, timeout=60, check=False)
        assert vp.returncode == 0 and vp.stderr == b"", vp.stderr
        assert (tmp_path / "v.yuv").read_bytes() == _concat(chunks)
        (tmp_path / "v.yuv").unlink()
    probe = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v", "-show_entries",
                            "packet=pts_time,flags", "-of", "csv=p=0", str(out)],
                           capture_output=True, text=True, check=True).stdout.split()
    times = [float(line.split(",")[0]) for line in probe]
    keys = [i for i, line in enumerate(probe) if "K" in line]
    assert keys == [0, 4] and times == pytest.approx([i / 30 for i in range(10)], abs=1e-3)
    # frames are encoded first with the encode stage's defaults
    out2 = tmp_path / f"frames{ext}"
    write_output(str(out2), "frames", [b])
    assert _decode_raw(out2) == _concat([encode_vp8(b)])
    assert sorted(os.listdir(tmp_path)) == sorted([f"out{ext}", f"frames{ext}"])  # no temporaries


@requires_tool("ffmpeg")
def test_write_y4m(tmp_path):
    b, chunks = _vp8_chunks()
    write_output(str(tmp_path / "f.y4m"), "frames", [b.slice(5, 10), b.slice(0, 5)])
    assert (tmp_path / "f.y4m").read_bytes() == FOREMAN.read_bytes().replace(
        b" A0:0 C420jpeg XYSCSS=420JPEG", b" A1:1 C420jpeg")
    write_output(str(tmp_path / "c.y4m"), "chunks", chunks)
    assert ffmpeg_yuv([tmp_path / "c.y4m"], []) == _concat(chunks)


@requires_tool("ffmpeg")
def test_write_dash(tmp_path):
    _, chunks = _vp8_chunks()
    mpd = tmp_path / "show.mpd"
    write_output(str(mpd), "chunks", chunks)
    ns = {"d": "urn:mpeg:dash:schema:mpd:2011"}
    root = ET.parse(mpd).getroot()
    template = root.find(".//d:Representation/d:SegmentTemplate", ns)
    rep = root.find(".//d:Representation", ns)
    assert rep.get("codecs") == "vp8" and rep.get("mimeType") == "video/webm"
    init = template.get("initialization").replace("$RepresentationID$", rep.get("id"))
    n_segments = sum(1 + int(s.get("r", 0)) for s in template.findall(".//d:S", ns))
    media = [template.get("media").replace("$RepresentationID$", rep.get("id"))
             .replace("$Number%05d$", f"{k:05d}") for k in range(1, n_segments + 1)]
    assert n_segments == 2  # one segment per chunk: each starts with a key frame
    assert sorted(os.listdir(tmp_path)) == sorted([init, *media, "show.mpd"])
    joined = tmp_path / "joined.webm"
    joined.write_bytes(b"".join((tmp_path / f).read_bytes() for f in [init, *media]))
    assert _decode_raw(joined) == _concat(chunks) == _decode_raw(mpd)


def test_write_json(tmp_path):
    out = tmp_path / "r.json"
    write_output(str(out), "records", [Records([{"frame": 3, "s": 1}], 3, 1),
                                       Records([{"frame": 0}, {"frame": 1}], 0, 2)])
    assert json.loads(out.read_text()) == [{"frame": 0}, {"frame": 1}, {"frame": 3, "s": 1}]


@pytest.mark.parametrize("ext", [".webm", ".ivf", ".y4m", ".mpd"])
def test_failed_write_leaves_nothing(tmp_path, ext):
    """Two sizes cannot share one stream: the write fails and leaves no file behind."""
    mixed = [encode_vp8(batch(FOREMAN)), EncodedChunk(encode_vp8(batch(CISCO)).data, "ivf", 10, 5, (30, 1))]
    with pytest.raises(MediaError) as e:
        write_output(str(tmp_path / f"out{ext}"), "chunks", mixed)
    assert "\n" not in str(e.value)
    assert os.listdir(tmp_path) == []


def test_failed_dash_move_leaves_nothing(tmp_path, monkeypatch):
    from pipeline import media_io
    real = os.replace

    def fail_on_manifest(a, b):
        if str(b).endswith(".mpd"):
            raise OSError("disk full")
        real(a, b)

    monkeypatch.setattr(media_io.os, "replace", fail_on_manifest)
    with pytest.raises(OSError, match="disk full"):
        write_output(str(tmp_path / "x.mpd"), "chunks", _vp8_chunks()[1])
    assert os.listdir(tmp_path) == []


@requires_tool("ffmpeg")
def test_write_non_vp8_chunks_encodes_them(tmp_path):
    """Chunks straight from the input (raw Y4M, remuxed H.264) are decoded and encoded."""
    for clip, n, frames in ((FOREMAN, 4, 10), (BIKES, 25, 100)):
        out = tmp_path / f"{clip.stem}.ivf"
        write_output(str(out), "chunks", list(cut_input(str(clip), n)))
        w, h = (176, 144) if clip == FOREMAN else (640, 272)
        assert len(_decode_raw(out)) == frames * (w * h * 3 // 2)
