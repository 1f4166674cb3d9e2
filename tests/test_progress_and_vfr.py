"""Issue 23's last gaps: progress bars in frames (rate and time left in frames/s) on a terminal
and nothing but the summary line elsewhere; ``excamera encode`` keeping a variable-frame-rate
input's times in .webm and .ivf (``--workers 0`` and 2); Sprocket's ``encode_to_dash`` writing
DASH. (The other outputs of such an input: ``tests/test_vfr_outputs.py``.)

The terminal is a real pseudo terminal (``pty.openpty``) the command's stderr is attached to."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import xml.etree.ElementTree as ET
from fractions import Fraction
from pathlib import Path

import pytest

from common import requires_tool

av = pytest.importorskip("av")

from codec.ssim import mean_ssim  # noqa: E402
from test_inputs_as_people_have_them import VFR_MS, make_clip, presentation_times  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CLIP = ROOT / "tests" / "data" / "clips" / "foreman_qcif_176x144_10f.y4m"    # 10 frames
GRAYSCALE = ROOT / "pipelines" / "sprocket" / "grayscale.json"                  # uses encode_to_dash


def excamera(*args, stderr=subprocess.PIPE) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "excamera", *map(str, args)], stdout=subprocess.PIPE,
                          stderr=stderr, text=True, timeout=240, cwd=ROOT)


def on_a_terminal(*args) -> tuple[int, str]:
    """Run excamera with stderr on a pseudo terminal (120 columns); its exit status and what the
    terminal got."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "excamera", *map(str, args)], stdout=subprocess.DEVNULL,
                            stderr=slave, cwd=ROOT)
    os.close(slave)
    got = b""
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 240)
            assert ready, "no output from the command for 240 s"
            try:
                data = os.read(master, 65536)
            except OSError:          # EIO: every writer has closed the terminal
                break
            if not data:
                break
            got += data
    finally:
        os.close(master)
        rc = proc.wait(timeout=240)
    return rc, got.decode("utf-8", "replace")


# -- progress in frames ---------------------------------------------------------------------------

@pytest.mark.parametrize("workers", [0, 2])
def test_encode_bar_counts_frames_on_a_terminal(tmp_path, workers):
    # 10 frames in chunks of 4: 4 + 4 + 2; the bar ends at the real count, not 3 x 4
    rc, screen = on_a_terminal("encode", CLIP, "-o", tmp_path / "o.ivf", "--workers", workers,
                               "--chunk-frames", 4, "--batch-chunks", 2)
    assert rc == 0, screen
    assert "10/10" in screen and "frames/s" in screen, screen
    assert "12/" not in screen and "chunks" not in screen, screen
    if workers:
        assert "rebase" in screen and "first pass" in screen, screen


def test_pipeline_bar_counts_the_sinks_frames_on_a_terminal(tmp_path):
    rc, screen = on_a_terminal("pipeline", "run", GRAYSCALE, "-i", f"input_0={CLIP}",
                               "-o", f"output_0={tmp_path / 'g.webm'}", "--workers", 0, "--frames-per-chunk", 4)
    assert rc == 0, screen
    assert "output_0" in screen and "10/10" in screen and "frames/s" in screen, screen


def test_nothing_but_the_summary_when_not_a_terminal(tmp_path):
    enc = excamera("encode", CLIP, "-o", tmp_path / "o.ivf", "--workers", 0, "--chunk-frames", 4)
    assert enc.returncode == 0
    assert len(enc.stderr.splitlines()) == 1 and enc.stderr.startswith(f"{tmp_path / 'o.ivf'}: 10 frames")
    run = excamera("pipeline", "run", GRAYSCALE, "-i", f"input_0={CLIP}", "-o", f"output_0={tmp_path / 'g.webm'}",
                   "--workers", 0)
    assert run.returncode == 0
    assert len(run.stderr.splitlines()) == 1 and run.stderr.startswith("excamera: ") and "(10 frames)" in run.stderr
    for err in (enc.stderr, run.stderr):
        assert "\r" not in err and "\x1b" not in err and "frames/s" not in err


def test_node_progress_counts_sink_frames():
    """The pipeline's adapter: sources set the estimate, sinks count, a sink beyond it raises it."""
    from excamera.commands.progress import NodeProgress
    p = NodeProgress(["decode", "gray"], tty=False, sinks=["output_0"])
    p.frames("input_0", 30)
    p("decode", 1, 3, False)
    p.frames("output_0", 12)
    assert p.progress.line().startswith("output_0 12/30") and "decode 1/3" in p.progress.line()
    p.frames("output_0", 33)
    assert p.progress.line().startswith("output_0 33/33")


# -- variable frame rate through excamera encode --------------------------------------------------

@pytest.fixture(scope="module")
def vfr_clip(tmp_path_factory) -> Path:
    clip = tmp_path_factory.mktemp("vfr") / "vfr.mkv"
    make_clip(clip, "libx264", "yuv420p", 64, 48, len(VFR_MS), pts=VFR_MS, options={"g": "4", "bf": "0"})
    assert presentation_times(clip) == [Fraction(t, 1000) for t in VFR_MS]   # variable indeed
    return clip


@pytest.mark.parametrize("workers", [0, 2])
def test_encode_keeps_variable_frame_rate_times(tmp_path, vfr_clip, workers):
    out = tmp_path / "o.webm"
    r = excamera("encode", vfr_clip, "-o", out, "--workers", workers, "--chunk-frames", 4, "--batch-chunks", 2)
    assert r.returncode == 0, r.stderr
    got, want = presentation_times(out), [Fraction(t, 1000) for t in VFR_MS]
    with av.open(str(out)) as c:
        tick = c.streams.video[0].time_base
    assert len(got) == len(want)
    assert all(abs(g - w) <= tick for g, w in zip(got, want)), (got, want)


@pytest.mark.parametrize("workers", [0, 2])
def test_ivf_keeps_variable_frame_rate_times(tmp_path, vfr_clip, workers):
    """The IVF header's rate/scale hold the input's time base (1/1000 here) and each frame's pts
    its time in it; no note. The same bytes in this process and on workers."""
    out = tmp_path / "o.ivf"
    r = excamera("encode", vfr_clip, "-o", out, "--workers", workers, "--chunk-frames", 4, "--batch-chunks", 2)
    assert r.returncode == 0, r.stderr
    assert "variable frame rate" not in r.stderr, r.stderr
    assert out.read_bytes()[16:24] == (1000).to_bytes(4, "little") + (1).to_bytes(4, "little")
    with av.open(str(out)) as c:
        assert c.streams.video[0].time_base == Fraction(1, 1000)
    assert presentation_times(out) == [Fraction(t, 1000) for t in VFR_MS]
    if workers:
        here = tmp_path / "here.ivf"
        assert excamera("encode", vfr_clip, "-o", here, "--workers", 0, "--chunk-frames", 4,
                        "--batch-chunks", 2).returncode == 0
        assert here.read_bytes() == out.read_bytes()


@requires_tool("ffprobe")
@requires_tool("vpxdec")
def test_vfr_ivf_as_ffprobe_and_vpxdec_read_it(tmp_path, vfr_clip):
    """ffprobe shows the input's times; vpxdec (which takes rate/scale for a frame rate and has no
    use for times) decodes the same 16 pictures as ffmpeg."""
    out = tmp_path / "o.ivf"
    assert excamera("encode", vfr_clip, "-o", out, "--workers", 0, "--chunk-frames", 4).returncode == 0
    p = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "frame=pts_time", "-of", "csv=p=0", str(out)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    assert [Fraction(t).limit_denominator(1000) for t in p.stdout.split()] == [Fraction(t, 1000) for t in VFR_MS]
    vpx = subprocess.run(["vpxdec", "--i420", "--rawvideo", "-o", "-", str(out)], capture_output=True, timeout=60)
    ff = subprocess.run(["ffmpeg", "-v", "error", "-i", str(out), "-fps_mode", "passthrough", "-f", "rawvideo",
                         "-pix_fmt", "yuv420p", "-"],
                        capture_output=True, timeout=60)
    assert vpx.returncode == 0 and ff.returncode == 0, (vpx.stderr, ff.stderr)
    assert len(vpx.stdout) == 16 * 64 * 48 * 3 // 2 and vpx.stdout == ff.stdout


def test_constant_rate_input_has_no_note(tmp_path):
    r = excamera("encode", CLIP, "-o", tmp_path / "o.ivf", "--workers", 0)
    assert r.returncode == 0 and "variable" not in r.stderr


# -- Sprocket's encode_to_dash --------------------------------------------------------------------

def _dash(tmp_path: Path) -> Path:
    mpd = tmp_path / "g.mpd"
    r = excamera("pipeline", "run", GRAYSCALE, "-i", f"input_0={CLIP}", "-o", f"output_0={mpd}", "--workers", 0)
    assert r.returncode == 0, r.stderr
    assert "wrote" in r.stderr and "(10 frames)" in r.stderr
    return mpd


def test_encode_to_dash_writes_dash(tmp_path):
    """grayscale.json (decode -> grayscale -> encode_to_dash) to ``-o output_0=OUT.mpd``: a DASH
    manifest whose WebM segments, read by PyAV, hold the 10 grayscale pictures. (PyAV's wheels
    build FFmpeg without libxml2, so their FFmpeg has no DASH demuxer to open the manifest; the
    segments it names are what a player fetches: init segment, then media segments in order.)"""
    mpd = _dash(tmp_path)
    ns = {"d": "urn:mpeg:dash:schema:mpd:2011"}
    root = ET.parse(mpd).getroot()
    assert root.get("type") == "static"
    template = root.find(".//d:SegmentTemplate", ns)
    rep = root.find(".//d:Representation", ns).get("id")
    init = tmp_path / template.get("initialization").replace("$RepresentationID$", rep)
    repeats = [int(s.get("r", 0)) + 1 for s in template.findall(".//d:S", ns)]
    first = int(template.get("startNumber", "1"))
    media = template.get("media").replace("$RepresentationID$", rep)
    segments = [tmp_path / media.replace("$Number%05d$", f"{n:05d}") for n in range(first, first + sum(repeats))]
    joined = tmp_path / "joined.webm"
    joined.write_bytes(init.read_bytes() + b"".join(s.read_bytes() for s in segments))
    from test_sprocket_specs import pictures, reference
    got = pictures(str(joined))
    want = reference("hue=s=0", str(CLIP))
    assert len(got) == len(want) == 10
    assert mean_ssim(got, want).y >= 0.95
    assert all(abs(int(g.u.mean()) - 128) <= 2 for g in got)      # grayscale: chroma flat


@requires_tool("ffprobe")
def test_encode_to_dash_manifest_opens_in_ffprobe(tmp_path):
    mpd = _dash(tmp_path)
    p = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v", "-show_entries",
                        "stream=codec_name,nb_read_frames", "-of", "csv=p=0", str(mpd.resolve())],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    # (listed twice: in the DASH program and among the file's streams; one stream)
    assert set(p.stdout.split()) == {"vp8,10"}
