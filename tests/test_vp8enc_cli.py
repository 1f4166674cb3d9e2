"""``excamera vp8enc`` end to end: the stream decodes (ours and vpxdec) to exactly ``--recon``, the
IVF header carries the input's size, rate and frame count, and bad input or options give one
error line, exit 1 (2 for usage errors), and leave no file behind.

Encodes are kept to a few frames so the whole file runs in well under a minute.
"""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest

from codec.image import Image
from codec.ivf import read_ivf
from codec.ssim import ssim_planes
from codec.y4m import Y4mWriter, read_y4m
from common import CLIPS_DIR, DATA, requires_tool, run_cli
from test_cli import assert_one_error_line

KODIM = DATA / "ssim" / "kodim03_yuv420_8bpc.y4m"


def _odd_clip(directory) -> str:
    """A 3-frame 37x23 y4m (odd width and height, not whole macroblocks) cropped from foreman."""
    _, frames = read_y4m(CLIPS_DIR / "foreman_qcif_176x144_10f.y4m")
    path = os.path.join(directory, "odd_37x23.y4m")
    with Y4mWriter(path, 37, 23, (15, 1)) as writer:
        for f in frames[3:6]:
            writer.write(Image(f.y[40:63, 70:107].copy(), f.u[20:32, 35:54].copy(), f.v[20:32, 35:54].copy()))
    return path


# name, input (or a function making it), frames encoded, options, least SSIM of recon vs source
CASES = [
    pytest.param(("foreman_qcif_176x144_10f.y4m", 4, ["--quantizer", "4"], 0.97), id="foreman-low-q"),
    pytest.param(("RTn23_80x44p15_15f.y4m", 5, ["--quantizer", "60", "--keyframe-interval", "2"], 0.75),
                 id="rtn23-middle-q-kf2"),
    pytest.param(("CiscoVT2people_160x96_6fps_5f.y4m", 3, ["--quantizer", "120", "--speed", "4"], 0.6),
                 id="cisco-high-q-speed4"),
    pytest.param(("park_joy_90p_8_420.y4m", 3, ["--ssim", "0.9", "--speed", "3"], 0.9), id="parkjoy-ssim"),
    pytest.param((_odd_clip, 3, ["--quantizer", "30", "--speed", "0"], 0.8), id="odd-37x23-speed0"),
    pytest.param((KODIM, 1, ["--quantizer", "50", "--keyframe-interval", "1"], 0.85), id="kodim-key-frame"),
]


class Encoded:
    """One ``excamera vp8enc`` run and what it wrote."""

    def __init__(self, tmp, source, frames: int, options: list[str], min_ssim: float):
        if callable(source):
            source = source(tmp)
        elif not os.path.isabs(str(source)):
            source = CLIPS_DIR / source
        self.source, self.frames, self.options, self.min_ssim = str(source), frames, options, min_ssim
        self.ivf, self.recon = os.path.join(tmp, "out.ivf"), os.path.join(tmp, "recon.y4m")
        self.proc = run_cli("vp8enc", self.source, "-o", self.ivf, "--recon", self.recon,
                            "--frames", str(frames), *options)


@pytest.fixture(scope="module", params=CASES)
def encoded(request, tmp_path_factory):
    source, frames, options, min_ssim = request.param
    out = Encoded(tmp_path_factory.mktemp("vp8enc"), source, frames, options, min_ssim)
    assert out.proc.returncode == 0, out.proc.stderr
    return out


def test_writes_the_stream_and_its_reconstruction(encoded):
    # Success is quiet on stderr (no progress bar without a terminal), one summary line on stdout.
    assert encoded.proc.stderr == ""
    summary = encoded.proc.stdout.decode()
    assert summary.startswith(f"{encoded.ivf}: {encoded.frames} frames") and summary.count("\n") == 1
    src_header, sources = read_y4m(encoded.source)
    sources = sources[:encoded.frames]
    ivf_header, records = read_ivf(encoded.ivf)
    assert (ivf_header.width, ivf_header.height) == (src_header.width, src_header.height)
    assert (ivf_header.rate, ivf_header.scale) == src_header.rate
    assert ivf_header.frame_count == len(records) == encoded.frames
    assert [r.pts for r in records] == list(range(encoded.frames))
    recon_header, recon = read_y4m(encoded.recon)
    assert (recon_header.width, recon_header.height, recon_header.rate) == \
        (src_header.width, src_header.height, src_header.rate)
    assert len(recon) == encoded.frames
    # A real encode of the source, not a blank or shifted picture.
    for r, s in zip(recon, sources):
        assert ssim_planes(r, s).all >= encoded.min_ssim
    # No temporary file left beside the outputs.
    assert sorted(n for n in os.listdir(os.path.dirname(encoded.ivf)) if n.startswith(".")) == []


def test_key_frames_follow_the_interval(encoded):
    _, records = read_ivf(encoded.ivf)
    interval = int(encoded.options[encoded.options.index("--keyframe-interval") + 1]) \
        if "--keyframe-interval" in encoded.options else 128
    keys = [not (r.data[0] & 1) for r in records]  # frame tag bit 0: 0 for a key frame
    assert keys == [i % interval == 0 for i in range(len(records))]


def test_our_decoder_shows_the_recon(encoded):
    proc = run_cli("decode", encoded.ivf, "-o", "-")
    assert proc.returncode == 0, proc.stderr
    _, recon = read_y4m(encoded.recon)
    assert proc.stdout == b"".join(r.to_i420() for r in recon)


@requires_tool("vpxdec")
def test_vpxdec_shows_the_recon(encoded, tmp_path):
    out = tmp_path / "vpxdec.i420"
    proc = subprocess.run(["vpxdec", "--i420", "-o", str(out), encoded.ivf], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    _, recon = read_y4m(encoded.recon)
    assert out.read_bytes() == b"".join(r.to_i420() for r in recon)


def test_the_ssim_target_is_met_on_every_frame(tmp_path):
    enc = Encoded(tmp_path, "park_joy_90p_8_420.y4m", 2, ["--ssim", "0.95", "--speed", "4"], 0.95)
    assert enc.proc.returncode == 0, enc.proc.stderr
    _, recon = read_y4m(enc.recon)
    _, sources = read_y4m(enc.source)
    for r, s in zip(recon, sources):
        assert ssim_planes(r, s).all >= 0.95


def test_lower_quantizer_gives_more_bits_and_more_quality(tmp_path):
    runs = {}
    for q in (10, 100):
        d = tmp_path / f"q{q}"
        d.mkdir()
        runs[q] = Encoded(d, "foreman_qcif_176x144_10f.y4m", 2, ["--quantizer", str(q), "--speed", "4"], 0)
        assert runs[q].proc.returncode == 0, runs[q].proc.stderr
    size = {q: os.path.getsize(r.ivf) for q, r in runs.items()}
    assert size[10] > 3 * size[100]
    _, sources = read_y4m(CLIPS_DIR / "foreman_qcif_176x144_10f.y4m")
    quality = {q: ssim_planes(read_y4m(r.recon)[1][1], sources[1]).all for q, r in runs.items()}
    assert quality[10] > quality[100] + 0.05


def test_a_video_read_through_pyav_encodes_like_its_y4m(tmp_path):
    """A lossless FFV1 .mkv of the same pictures: PyAV's frames equal the y4m's, so the streams
    are byte-identical, and the frame rate comes from the container."""
    av = pytest.importorskip("av")
    _, frames = read_y4m(CLIPS_DIR / "RTn23_80x44p15_15f.y4m")
    frames = frames[:3]
    mkv = tmp_path / "clip.mkv"
    with av.open(str(mkv), "w") as container:
        stream = container.add_stream("ffv1", rate=15)
        stream.width, stream.height, stream.pix_fmt = 80, 44, "yuv420p"
        for f in frames:
            vf = av.VideoFrame(80, 44, "yuv420p")
            for plane, data in zip(vf.planes, (f.y, f.u, f.v)):
                rows = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)
                rows[:data.shape[0], :data.shape[1]] = data
            container.mux(stream.encode(vf))
        container.mux(stream.encode())
    from_mkv, from_y4m = tmp_path / "mkv.ivf", tmp_path / "y4m.ivf"
    for src, out in ((mkv, from_mkv), (CLIPS_DIR / "RTn23_80x44p15_15f.y4m", from_y4m)):
        proc = run_cli("vp8enc", src, "-o", out, "--frames", "3", "--quantizer", "40", "--speed", "4")
        assert proc.returncode == 0, proc.stderr
    header, records = read_ivf(from_mkv)
    assert (header.width, header.height, header.rate, header.scale, header.frame_count) == (80, 44, 15, 1, 3)
    assert [r.data for r in records] == [r.data for r in read_ivf(from_y4m)[1]]


# -- bad input: one line, exit 1, nothing left behind -----------------------------------------------

def _y4m(path, header: bytes, frames: int = 0, frame_size: int = 0, cut: int = 0) -> str:
    data = header + (b"FRAME\n" + bytes(range(256)) * (frame_size // 256) + bytes(frame_size % 256)) * frames
    path.write_bytes(data[:len(data) - cut])
    return str(path)


BAD_INPUTS = [
    # (id, make the input in tmp_path -> path, fragments of the message)
    ("truncated-frame", lambda d: _y4m(d / "cut.y4m", b"YUV4MPEG2 W32 H16 F30:1\n", 3, 768, cut=100),
     ["cut.y4m", "truncated Y4M frame 2"]),
    ("truncated-header", lambda d: _y4m(d / "head.y4m", b"YUV4MPEG2 W32 H1"), ["truncated Y4M header"]),
    ("not-420", lambda d: _y4m(d / "c444.y4m", b"YUV4MPEG2 W16 H16 F30:1 C444\n", 1, 768),
     ["unsupported Y4M colourspace C444"]),
    ("10-bit", lambda d: _y4m(d / "c10.y4m", b"YUV4MPEG2 W16 H16 F30:1 C420p10\n", 1, 768),
     ["C420p10"]),
    ("zero-width", lambda d: _y4m(d / "w0.y4m", b"YUV4MPEG2 W0 H16 F30:1\n"), ["width 0 out of range"]),
    ("huge-height", lambda d: _y4m(d / "h.y4m", b"YUV4MPEG2 W16 H99999 F30:1\n"), ["height 99999 out of range"]),
    ("beyond-vp8", lambda d: _y4m(d / "vp8max.y4m", b"YUV4MPEG2 W16384 H16 F30:1\n", 1, 16384 * 16 * 3 // 2),
     ["16384x16", "16383x16383"]),
    ("garbage-header", lambda d: _y4m(d / "g.y4m", b"YUV4MPEG2 W16 Hsixteen\n"), ["bad Y4M header tag 'Hsixteen'"]),
    ("not-y4m", lambda d: _y4m(d / "junk.y4m", b"\x00\x01garbage\n" * 50), ["not a Y4M file"]),
    ("no-frames", lambda d: _y4m(d / "empty.y4m", b"YUV4MPEG2 W16 H16 F30:1\n"), ["no pictures"]),
    ("bad-frame-line", lambda d: _y4m(d / "fl.y4m", b"YUV4MPEG2 W16 H16 F30:1\nFRAMX\n" + bytes(384)),
     ["expected FRAME at offset 24"]),
    ("rate-too-big", lambda d: _y4m(d / "r.y4m", b"YUV4MPEG2 W16 H16 F5000000000:1\n", 1, 384),
     ["frame rate 5000000000/1", "IVF header"]),
    ("unreadable-video", lambda d: _y4m(d / "junk.mp4", bytes(range(256)) * 20), ["junk.mp4", "ffmpeg"]),
    ("missing-file", lambda d: str(d / "nothing.y4m"), ["nothing.y4m", "No such file"]),
]


@pytest.mark.parametrize("make,fragments", [pytest.param(m, f, id=i) for i, m, f in BAD_INPUTS])
def test_bad_input_is_one_line_and_leaves_nothing(tmp_path, make, fragments):
    src = make(tmp_path)
    before = set(os.listdir(tmp_path))
    proc = run_cli("vp8enc", src, "-o", tmp_path / "out.ivf", "--recon", tmp_path / "recon.y4m",
                   "--speed", "4")
    assert_one_error_line(proc, *fragments)
    assert set(os.listdir(tmp_path)) == before


def test_a_size_change_mid_stream_is_an_error(tmp_path, monkeypatch, capsys):
    """PyAV inputs can change size mid-stream; vp8enc encodes one size and says so."""
    from excamera import cli
    from media import video

    real = video.open_video

    def resized(path):
        reader = real(path)
        frames = iter([next(reader), Image.blank(reader.width + 2, reader.height)])
        reader._frames = frames
        return reader

    monkeypatch.setattr(video, "open_video", resized)
    code = cli.main(["vp8enc", str(CLIPS_DIR / "RTn23_80x44p15_15f.y4m"), "-o", str(tmp_path / "o.ivf"),
                     "--speed", "4"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1
    assert "frame 1 is 82x44 but the video started at 80x44" in err
    assert os.listdir(tmp_path) == []


def test_an_unwritable_output_is_one_line(tmp_path):
    proc = run_cli("vp8enc", CLIPS_DIR / "RTn23_80x44p15_15f.y4m", "-o", tmp_path / "no" / "out.ivf")
    assert_one_error_line(proc, str(tmp_path / "no" / "out.ivf"))
    proc = run_cli("vp8enc", CLIPS_DIR / "RTn23_80x44p15_15f.y4m", "-o", tmp_path / "out.ivf",
                   "--recon", tmp_path / "no" / "recon.y4m")
    assert_one_error_line(proc, "recon.y4m")
    assert os.listdir(tmp_path) == []


def test_a_failure_to_finish_the_recon_removes_the_finished_stream(tmp_path, monkeypatch, capsys):
    from codec.y4m import Y4mWriter
    from excamera import cli

    def full(self):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Y4mWriter, "close", full)
    code = cli.main(["vp8enc", str(CLIPS_DIR / "RTn23_80x44p15_15f.y4m"), "-o", str(tmp_path / "o.ivf"),
                     "--recon", str(tmp_path / "r.y4m"), "--frames", "2", "--speed", "4"])
    err = capsys.readouterr().err
    assert code == 1 and err == f"excamera: error: {tmp_path / 'r.y4m'}: No space left on device\n"
    assert os.listdir(tmp_path) == []


def test_interrupt_exits_130_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    from codec.encoder import Encoder
    from excamera import cli

    real = Encoder.encode

    def interrupted(self, image, force_key=False):
        if self.frames == 1:
            raise KeyboardInterrupt
        return real(self, image, force_key)

    monkeypatch.setattr(Encoder, "encode", interrupted)
    code = cli.main(["vp8enc", str(CLIPS_DIR / "RTn23_80x44p15_15f.y4m"), "-o", str(tmp_path / "o.ivf"),
                     "--recon", str(tmp_path / "r.y4m"), "--speed", "4"])
    assert code == 130 and capsys.readouterr().err == ""
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("options,fragment", [
    (["--quantizer", "128"], "0..127"),
    (["--quantizer", "-1"], "0..127"),
    (["--quantizer", "ten"], "not a whole number"),
    (["--ssim", "0"], "between 0 and 1"),
    (["--ssim", "1"], "between 0 and 1"),
    (["--ssim", "1.5"], "between 0 and 1"),
    (["--ssim", "nan"], "between 0 and 1"),
    (["--speed", "5"], "0..4"),
    (["--speed", "-1"], "0..4"),
    (["--keyframe-interval", "0"], "1 or more"),
    (["--frames", "0"], "1 or more"),
    (["--quantizer", "10", "--ssim", "0.9"], "not allowed with"),
    (["--recon", "r.ivf"], "must end in .y4m"),
])
def test_out_of_range_options_are_usage_errors(tmp_path, options, fragment):
    proc = run_cli("vp8enc", CLIPS_DIR / "RTn23_80x44p15_15f.y4m", "-o", tmp_path / "out.ivf", *options)
    assert proc.returncode == 2, proc.stderr
    assert "usage:" in proc.stderr and fragment in proc.stderr and "Traceback" not in proc.stderr
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("args,fragment", [
    (["-o", "out.webm"], "must end in .ivf"),
    ([], "required: -o"),
])
def test_output_must_be_an_ivf(tmp_path, args, fragment):
    proc = run_cli("vp8enc", CLIPS_DIR / "RTn23_80x44p15_15f.y4m", *args, cwd=tmp_path)
    assert proc.returncode == 2 and fragment in proc.stderr, proc.stderr
    assert os.listdir(tmp_path) == []


def test_progress_shows_frames_of_total_on_a_terminal_only(capsys):
    from excamera.commands.progress import Progress

    progress = Progress({"encoding x.y4m": 10}, unit="frames", enabled=True)
    progress.set("encoding x.y4m", 4)
    progress.set("encoding x.y4m", 10)
    progress.close()
    err = capsys.readouterr().err
    assert "encoding x.y4m" in err and "10/10" in err and "frames" in err
    quiet = Progress({"encoding x.y4m": None}, unit="frames", enabled=False)
    quiet.set("encoding x.y4m", 3)
    quiet.close()
    assert capsys.readouterr().err == ""


def test_frame_count_hint_of_a_y4m_is_its_frame_count():
    from media.video import open_video

    for clip in (CLIPS_DIR / "foreman_qcif_176x144_10f.y4m", KODIM):
        with open_video(clip) as video:
            assert video.frame_count_hint == len(read_y4m(clip)[1])
