"""Inputs as people have them (issue 23): variable frame rate kept, a phone video's rotation
applied, pixel formats other than 8-bit 4:2:0 converted with one note, any size VP8 codes.

Every clip is made here with PyAV; every result is checked against PyAV's (ffmpeg's) own decode
of the same file: rotation against ffmpeg's ``transpose``/``hflip,vflip`` filters.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")

from codec.image import Image  # noqa: E402
from codec.ssim import mean_ssim  # noqa: E402
from codec.y4m import Y4mWriter  # noqa: E402
from media.video import open_video  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PASS_THROUGH = {"nodes": [{"name": "decode", "stage": "decode", "config": {}}],
                "streams": [{"src": "input_0:chunks", "dst": "decode:chunks"},
                            {"src": "decode:frames", "dst": "output_0:frames"}]}


def _rgb(w: int, h: int, i: int) -> np.ndarray:
    """A picture with structure in both directions and motion (so a turn or a shift shows)."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([(x * 3 + i * 5) % 256, (y * 5 + i * 3) % 256, ((x + 2 * y) * 2) % 256],
                    axis=-1).astype(np.uint8)


def make_clip(path: Path, codec: str, pix_fmt: str, w: int, h: int, n: int, pts=None,
              rotation: int | None = None, options=None) -> None:
    """``n`` frames; ``pts`` in milliseconds (time base 1/1000) or one per frame at 25 fps."""
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=25)
        s.width, s.height, s.pix_fmt = w, h, pix_fmt
        s.codec_context.time_base = Fraction(1, 1000) if pts else Fraction(1, 25)
        s.options = options or {}
        if rotation is not None:
            s.set_display_rotation(rotation)
        for i in range(n):
            f = av.VideoFrame.from_ndarray(_rgb(w, h, i), format="rgb24").reformat(format=pix_fmt)
            f.pts = pts[i] if pts else i
            f.time_base = s.codec_context.time_base
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)


def pyav_pictures(path: Path, filters: str | None = None) -> list[Image]:
    """ffmpeg's decode of ``path`` as yuv420p Images (through ``filters`` when given)."""
    out = []
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        graph = None
        for f in c.decode(s):
            if filters:
                if graph is None:
                    graph = av.filter.Graph()
                    src = graph.add_buffer(template=s)
                    chain = [src] + [graph.add(*part.split("=", 1)) if "=" in part else graph.add(part)
                                     for part in filters.split(",")]
                    chain.append(graph.add("buffersink"))
                    graph.link_nodes(*chain).configure()
                graph.push(f)
                f = graph.pull()
            f = f.reformat(format="yuv420p")
            planes = [np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, :p.width].copy()
                      for p in f.planes]
            out.append(Image(*planes))
    return out


def same(a: list[Image], b: list[Image]) -> bool:
    return len(a) == len(b) and all(x.md5() == y.md5() for x, y in zip(a, b))


def run_cli(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "excamera", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def run_pipeline(tmp_path: Path, clip: Path, out: Path, spec=None) -> subprocess.CompletedProcess:
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec or PASS_THROUGH))
    return run_cli("pipeline", "run", str(spec_path), "-i", f"input_0={clip}", "-o", f"output_0={out}",
                   "--workers", "0", "--frames-per-chunk", "4", "--no-audio")


def presentation_times(path: Path) -> list[Fraction]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return sorted(Fraction(p.pts) * s.time_base for p in c.demux(s) if p.size)


# -- variable frame rate --------------------------------------------------------------------------

VFR_MS = [0, 40, 60, 130, 140, 200, 290, 300, 333, 400, 480, 500, 560, 640, 650, 700]


@pytest.mark.parametrize("ext", [".webm", ".mkv", ".mp4"])
def test_variable_frame_rate_keeps_its_times(tmp_path, ext):
    clip = tmp_path / "vfr.mkv"
    make_clip(clip, "libx264", "yuv420p", 64, 48, len(VFR_MS), pts=VFR_MS,
              options={"g": "4", "bf": "0"})
    want = [Fraction(t, 1000) for t in VFR_MS]
    assert presentation_times(clip) == want  # the clip is variable rate indeed
    out = tmp_path / f"out{ext}"
    p = run_pipeline(tmp_path, clip, out)
    assert p.returncode == 0, p.stderr
    got = presentation_times(out)
    with av.open(str(out)) as c:
        tick = c.streams.video[0].time_base
    assert len(got) == len(want)
    assert all(abs(g - w) <= tick for g, w in zip(got, want)), (got, want)


# -- rotation -------------------------------------------------------------------------------------

# counterclockwise degrees in the display matrix -> what ffmpeg's autorotate applies
TURNS = {90: "transpose=cclock", 180: "hflip,vflip", -90: "transpose=clock"}


@pytest.mark.parametrize("degrees", sorted(TURNS))
def test_rotation_is_applied_as_ffmpeg_does(tmp_path, degrees):
    clip = tmp_path / "phone.mp4"
    make_clip(clip, "libx264", "yuv420p", 64, 36, 6, rotation=degrees)
    want = pyav_pictures(clip, TURNS[degrees])
    with open_video(clip) as video:
        got = list(video)
        assert (video.width, video.height) == (want[0].width, want[0].height)
    assert (want[0].width, want[0].height) == ((36, 64) if degrees % 180 else (64, 36))
    assert same(got, want)
    from media.index import read_index   # the distributed encode plans its sizes from this
    with open(clip, "rb") as f:
        index = read_index(f)
    assert (index.width, index.height) == (want[0].width, want[0].height)
    if degrees == 90:   # and through a pipeline, whose chunks are remuxed and decoded apart
        out = tmp_path / "out.y4m"
        p = run_pipeline(tmp_path, clip, out)
        assert p.returncode == 0, p.stderr
        with open_video(out) as video:
            assert same(list(video), want)


# -- pixel formats --------------------------------------------------------------------------------

def conversion_notes(stderr: str) -> list[str]:
    """The lines saying the pictures were converted (a run prints other notes too)."""
    return [x for x in stderr.splitlines() if "4:2:0" in x]


@pytest.mark.parametrize("codec,pix_fmt", [("libx264", "yuv444p"), ("libx264", "yuv420p10le"),
                                           ("ffv1", "yuv422p"), ("png", "rgb24")])
def test_other_pixel_formats_are_converted_with_one_note(tmp_path, codec, pix_fmt):
    clip = tmp_path / f"{pix_fmt}{'.mov' if codec == 'png' else '.mkv'}"   # Matroska takes no PNG
    make_clip(clip, codec, pix_fmt, 48, 32, 9, options={"g": "3"} if codec == "libx264" else None)
    with av.open(str(clip)) as c:
        assert c.streams.video[0].codec_context.format.name.startswith(pix_fmt[:6])
    want = pyav_pictures(clip)
    out = tmp_path / "out.y4m"
    p = run_pipeline(tmp_path, clip, out)
    assert p.returncode == 0, p.stderr
    lines = conversion_notes(p.stderr)
    assert len(lines) == 1 and lines[0].startswith("excamera: note: ") and pix_fmt in lines[0], p.stderr
    with open_video(out) as video:
        assert same(list(video), want)
    # the plain reader says it once too, and gives the same pictures
    p = run_cli("ssim", str(clip), str(clip))
    assert p.returncode == 0 and len(conversion_notes(p.stderr)) == 1, p.stderr


def test_yuv420p_input_has_no_note(tmp_path):
    clip = tmp_path / "plain.mkv"
    make_clip(clip, "libx264", "yuv420p", 48, 32, 8)
    p = run_pipeline(tmp_path, clip, tmp_path / "out.y4m")
    assert p.returncode == 0 and conversion_notes(p.stderr) == [], p.stderr


# -- sizes ----------------------------------------------------------------------------------------

def _y4m(path: Path, w: int, h: int, n: int) -> list[Image]:
    images = []
    with Y4mWriter(path, rate=(25, 1)) as out:
        for i in range(n):
            f = av.VideoFrame.from_ndarray(_rgb(w, h, i), format="rgb24").reformat(format="yuv420p")
            planes = [np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, :p.width].copy()
                      for p in f.planes]
            images.append(Image(*planes))
            out.write(images[-1])
    return images


def test_odd_sizes_encode_end_to_end(tmp_path):
    clip = tmp_path / "odd.y4m"
    source = _y4m(clip, 175, 97, 12)
    out = tmp_path / "odd.webm"
    p = run_cli("encode", str(clip), "-o", str(out), "--workers", "0", "--chunk-frames", "6")
    assert p.returncode == 0, p.stderr
    decoded = pyav_pictures(out)
    assert len(decoded) == 12 and (decoded[0].width, decoded[0].height) == (175, 97)
    assert mean_ssim(source, decoded).y >= 0.95
    # and through a pipeline, encoded by the writer
    out = tmp_path / "piped.webm"
    p = run_pipeline(tmp_path, clip, out)
    assert p.returncode == 0, p.stderr
    decoded = pyav_pictures(out)
    assert len(decoded) == 12 and (decoded[0].width, decoded[0].height) == (175, 97)
    assert mean_ssim(source, decoded).y >= 0.95


@pytest.mark.parametrize("workers", ["0", "1"])
def test_a_size_beyond_vp8_is_one_line(tmp_path, workers):
    clip = tmp_path / "wide.y4m"
    _y4m(clip, 16384, 16, 1)
    out = tmp_path / "wide.webm"
    p = run_cli("encode", str(clip), "-o", str(out), "--workers", workers, "--chunk-frames", "1")
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 1 and len(lines) == 1, p.stderr
    assert lines[0].startswith("excamera: error: ") and "16384x16" in lines[0] and "16383" in lines[0]
    assert not out.exists() and sorted(os.listdir(tmp_path)) == ["wide.y4m"]
