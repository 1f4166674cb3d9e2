"""A variable-frame-rate input keeps its times in every output of pictures (issue 23): ``.ivf``
(the header's rate/scale hold the input's time base, each frame's pts its time in it), HLS
``.m3u8`` and DASH ``.mpd`` (the packets carry the input's times), from ``excamera pipeline
run`` (in this process, and DASH muxed live on an embedded coordinator's workers). Read back by
ffprobe and PyAV; constant-rate outputs stay as they were.

The clip is made with PyAV: 16 H.264 pictures at the times ``VFR_MS`` (milliseconds)."""

from __future__ import annotations

import json
import subprocess
from fractions import Fraction
from pathlib import Path

import pytest

from common import requires_tool

av = pytest.importorskip("av")

from codec.errors import ContainerError  # noqa: E402
from codec.ivf import FRAME_HEADER_SIZE, IvfHeader, IvfWriter, read_ivf, restamp, shown_pts  # noqa: E402
from test_inputs_as_people_have_them import VFR_MS, make_clip, run_pipeline  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CLIP = ROOT / "tests" / "data" / "clips" / "foreman_qcif_176x144_10f.y4m"    # 10 frames at 30 fps
WANT = [Fraction(t, 1000) for t in VFR_MS]


@pytest.fixture(scope="module")
def vfr_clip(tmp_path_factory) -> Path:
    clip = tmp_path_factory.mktemp("vfr") / "vfr.mkv"
    make_clip(clip, "libx264", "yuv420p", 64, 48, len(VFR_MS), pts=VFR_MS, options={"g": "4", "bf": "0"})
    return clip


def ffprobe_times(path: Path) -> list[Fraction]:
    """The shown pictures' presentation times ffprobe reads from ``path`` (a manifest too), as
    exact fractions of a second, from the first."""
    p = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v", "-show_entries", "frame=pts,pkt_dts",
                        "-show_entries", "stream=time_base", "-of", "json", str(path)],
                       capture_output=True, text=True, timeout=60, cwd=path.parent)
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout)
    tb = Fraction(got["streams"][0]["time_base"])
    times = sorted(Fraction(f["pts"]) * tb for f in got["frames"])
    return [t - times[0] for t in times]


def close(got: list[Fraction], want: list[Fraction], tick) -> bool:
    return len(got) == len(want) and all(abs(g - w) <= tick for g, w in zip(got, want))


# -- IVF: the helpers -----------------------------------------------------------------------------

def _frames(flags: list[bool]) -> list[bytes]:
    """Payloads whose first byte carries VP8's show_frame bit (all ``restamp`` reads)."""
    return [bytes([0x10 if shown else 0x00, i % 256, 7]) + bytes(i % 5) for i, shown in enumerate(flags)]


def test_shown_pts_puts_a_hidden_frame_at_the_next_shown_frame():
    ticks = [0, 40, 60, 130]
    assert shown_pts([True, False, True, True, True], ticks) == [0, 40, 40, 60, 130]
    # more shown frames than times: the last interval again
    assert shown_pts([True] * 6, ticks) == [0, 40, 60, 130, 200, 270]


@pytest.mark.parametrize("piece", [1, 5, 12, 13, 31, 33, 1 << 20])
def test_restamp_in_pieces_gives_the_file_written_whole(tmp_path, piece):
    """A constant-rate IVF restamped as it streams by in pieces of any size is byte for byte the
    IVF written with the times in the first place."""
    flags = [True, True, False, True, True, False, True, True]
    frames, ticks, tb = _frames(flags), [0, 40, 60, 130, 140, 200], Fraction(1, 1000)
    plain, timed = tmp_path / "plain.ivf", tmp_path / "timed.ivf"
    with IvfWriter(plain, IvfHeader(width=64, height=48, rate=25, scale=1)) as w:
        for i, d in enumerate(frames):
            w.write(d, i)
    with IvfWriter(timed, IvfHeader(width=64, height=48, rate=1000, scale=1)) as w:
        for d, t in zip(frames, shown_pts(flags, ticks)):
            w.write(d, t)
    data = plain.read_bytes()
    out = list(restamp((data[i:i + piece] for i in range(0, len(data), piece)), ticks, tb))
    assert b"".join(out) == timed.read_bytes() != data
    header, got = read_ivf(timed)
    assert (header.rate, header.scale) == (1000, 1) and [f.pts for f in got] == [0, 40, 60, 60, 130, 140, 140, 200]


def test_restamp_of_a_cut_file_is_one_error(tmp_path):
    with IvfWriter(tmp_path / "a.ivf", IvfHeader(width=8, height=8)) as w:
        w.write(_frames([True])[0])
    data = (tmp_path / "a.ivf").read_bytes()
    for cut in (data[:20], data[:32 + FRAME_HEADER_SIZE - 1], data[:-1]):
        with pytest.raises(ContainerError, match="cut short"):
            b"".join(restamp([cut], [0, 40], Fraction(1, 1000)))
    with pytest.raises(ContainerError, match="does not fit an IVF header"):
        b"".join(restamp([data], [0, 40], Fraction(1, 1 << 33)))


# -- excamera pipeline run ------------------------------------------------------------------------

@requires_tool("ffprobe")
@pytest.mark.parametrize("ext", [".ivf", ".m3u8", ".mpd"])
def test_pipeline_output_keeps_variable_frame_rate_times(tmp_path, vfr_clip, ext):
    out = tmp_path / f"out{ext}"
    p = run_pipeline(tmp_path, vfr_clip, out)
    assert p.returncode == 0, p.stderr
    # HLS starts its times after x264's reordering delay: compared from the first, as all are
    assert close(ffprobe_times(out), WANT, Fraction(1, 1000)), ffprobe_times(out)
    if ext == ".ivf":
        header, frames = read_ivf(out)
        assert (header.rate, header.scale) == (1000, 1)          # the input's time base, 1/1000
        with av.open(str(out)) as c:
            s = c.streams.video[0]
            assert s.time_base == Fraction(1, 1000)
            assert sorted(pk.pts * s.time_base for pk in c.demux(s) if pk.size) == WANT


@requires_tool("ffprobe")
def test_dash_muxed_live_keeps_variable_frame_rate_times(tmp_path, vfr_clip):
    """``encode_to_dash`` on an embedded coordinator's workers: DASH muxed piece by piece as the
    job runs (``pipeline.live``), with the input's times."""
    from coordinator.config import RunConfig
    from pipeline.run import run_pipeline as run

    spec = json.loads((ROOT / "pipelines" / "sprocket" / "grayscale.json").read_text())
    mpd = tmp_path / "g.mpd"
    summary = run(spec, {"input_0": str(vfr_clip)}, {"output_0": str(mpd)}, RunConfig(workers=2),
                  frames_per_chunk=4, audio=False)
    assert "output_0" in summary["streamed"], summary      # muxed live, not written at the end
    assert close(ffprobe_times(mpd), WANT, Fraction(1, 1000)), ffprobe_times(mpd)


def test_live_dash_refuses_a_piece_off_the_input_times(tmp_path):
    """A piece of a stage that changes speed has no input time per picture: the live writer
    says so (and ``pipeline.live`` writes that output at the end instead)."""
    from codec.y4m import read_y4m
    from pipeline.media_io import DashWriter, MediaError
    from pipeline.stages.video import encode_vp8
    from pipeline.values import EncodedChunk, FrameBatch

    chunk = encode_vp8(FrameBatch.from_images(read_y4m(CLIP)[1][:4], 0, (30, 1)))
    fast = EncodedChunk(chunk.data, chunk.container, 0, chunk.count, chunk.fps, meta={"speed": 2})
    w = DashWriter(str(tmp_path / "x.mpd"), times=([0, 40, 60, 130, 140], Fraction(1, 1000)))
    with pytest.raises(MediaError, match="does not keep the input's times"):
        w.add(fast)
    w.abort()
    assert list(tmp_path.iterdir()) == []


# -- constant rate: as before ---------------------------------------------------------------------

def test_constant_rate_ivf_keeps_its_frame_rate(tmp_path):
    """No times to keep: the header holds the frame rate and the pts count frames, as before."""
    out = tmp_path / "c.ivf"
    p = run_pipeline(tmp_path, CLIP, out)
    assert p.returncode == 0, p.stderr
    header, frames = read_ivf(out)
    assert (header.rate, header.scale) == (30, 1)
    assert [f.pts for f in frames] == list(range(10))


# -- our own reader of such an IVF ----------------------------------------------------------------

def test_our_reader_takes_times_and_rate_from_a_variable_rate_ivf(tmp_path, vfr_clip):
    """An IVF whose header holds a time base (1/1000) is not read as 1000 frames per second:
    the times come back from the records' pts, the rate is their average, and the index agrees;
    an IVF counting frames keeps its header's rate."""
    from codec.ivf import read_timing, shown_timing
    from media.index import read_index
    from media.video import frame_times, open_video

    out = tmp_path / "vfr.ivf"
    p = run_pipeline(tmp_path, vfr_clip, out)
    assert p.returncode == 0, p.stderr
    ticks, tb = frame_times(str(out))
    assert tb == Fraction(1, 1000) and [Fraction(t, 1000) for t in ticks] == WANT
    want_rate = Fraction(len(VFR_MS) - 1, 1) / (WANT[-1] - WANT[0])
    with open_video(str(out)) as v:
        assert abs(Fraction(*v.rate) - want_rate) < Fraction(1, 100), v.rate
        assert sum(1 for _ in v) == len(VFR_MS)
    with open(out, "rb") as f:
        assert read_index(f).rate == open_video(str(out)).rate
    rate, times, _ = read_timing(out)
    assert times == ticks and rate == tuple(open_video(str(out)).rate)
    # the layouts that are constant-rate
    h = IvfHeader(width=64, height=48, rate=1000, scale=1)
    assert shown_timing([(i * 40, True) for i in range(5)], h) == ((25, 1), None)         # a steady step
    assert shown_timing([(0, True), (1, False), (2, True), (3, True)], h) == ((1000, 1), None)  # numbered records
    assert shown_timing([(0, True), (2, False), (2, True), (3, True)], h)[1] is not None    # uneven: times kept
