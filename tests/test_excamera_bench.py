"""The ExCamera benchmark's helpers (bench/excamera_bench.py): the timed stages reproduce
``encode_frames``, vpxenc runs with ExCamera's first-pass settings, and the measuring helpers say
what they claim. Nothing here is timed."""

import math
import subprocess

import pytest

from common import CLIPS_DIR, VP8_DIR, requires_tool
from bench import excamera_bench as xb
from codec.ivf import read_ivf
from media.excamera_encode import EncodeSettings, encode_frames
from media.video import open_video

RTN = CLIPS_DIR / "RTn23_80x44p15_15f.y4m"
FOREMAN = CLIPS_DIR / "foreman_qcif_176x144_10f.y4m"


@pytest.fixture(scope="module")
def rtn():
    return xb.read_frames(str(RTN), 100)


def test_read_frames_takes_the_first_pictures(rtn):
    frames, rate = rtn
    assert len(frames) == 15 and rate == (15, 1)
    few, _ = xb.read_frames(str(RTN), 4)
    assert len(few) == 4
    assert all((a.y == b.y).all() and (a.u == b.u).all() and (a.v == b.v).all() for a, b in zip(few, frames))


class FakeClock:
    """Each reading one second after the last: every timed block lasts exactly 1 s."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        self.now += 1.0
        return self.now


@pytest.mark.parametrize("first_pass, n_frames, chunk, batch", [
    ("libvpx", 15, 3, 3),   # 5 chunks: key, given state, given state + rebased first frame, key, ...
    ("libvpx", 14, 4, 16),  # one batch, a short last chunk
    ("native", 12, 3, 4),
])
def test_staged_encode_equals_encode_frames(rtn, first_pass, n_frames, chunk, batch):
    frames, rate = rtn
    frames = frames[:n_frames]
    settings = EncodeSettings(chunk, batch, 30, first_pass)
    with xb.fixed_first_passes():  # each first pass once, for both
        data, times = xb.staged_encode(frames, settings, rate, clock=FakeClock(), cpu_clock=FakeClock())
        assert data == encode_frames(frames, settings, rate)
    n_chunks = math.ceil(n_frames / chunk)
    assert len(times) == n_chunks
    for i, t in enumerate(times):
        assert t.first_pass == (1.0, 1.0) and t.state_dump == (1.0, 1.0)
        if i % batch == 0:
            assert t.encode_given_state is None and t.rebase is None
        else:
            assert t.encode_given_state == (1.0, 1.0) and t.rebase == (1.0, 1.0)
    assert xb.key_frame_indices(data) == xb.expected_key_frames(n_frames, chunk, batch)


def test_fixed_first_passes_gives_the_first_answer_again(rtn, monkeypatch):
    import media.excamera_encode as encode

    calls = []
    monkeypatch.setattr(encode, "first_pass_chunk", lambda f, s, r: calls.append(len(f)) or [bytes([len(calls)])])
    frames, rate = rtn
    settings = EncodeSettings(3, 2, 30)
    with xb.fixed_first_passes():
        a = encode.first_pass_chunk(frames[:3], settings, rate)
        assert encode.first_pass_chunk(frames[:3], settings, rate) is a      # same pictures: memo
        assert encode.first_pass_chunk(list(frames[:3]), settings, rate) is a
        b = encode.first_pass_chunk(frames[3:6], settings, rate)              # other pictures
        c = encode.first_pass_chunk(frames[:3], EncodeSettings(3, 2, 31), rate)  # other settings
    assert (a, b, c) == ([b"\x01"], [b"\x02"], [b"\x03"]) and calls == [3, 3, 3]
    assert encode.first_pass_chunk(frames[:3], settings, rate) == [b"\x04"]  # restored on exit


def test_staged_encode_refuses_fewer_frames_than_a_chunk(rtn):
    frames, rate = rtn
    with pytest.raises(ValueError, match="fewer than one chunk"):
        xb.staged_encode(frames[:5], EncodeSettings(6, 16, 30), rate)


def test_expected_key_frames():
    assert xb.expected_key_frames(60, 6, 16) == [0]
    assert xb.expected_key_frames(200, 6, 16) == [0, 96, 192]
    assert xb.expected_key_frames(13, 3, 1) == [0, 3, 6, 9, 12]


def test_stage_summary():
    times = [xb.ChunkTimes((1.0, 0.5), (0.2, 0.2)),
             xb.ChunkTimes((3.0, 1.5), (0.4, 0.2), (2.0, 1.0), (5.0, 4.0)),
             xb.ChunkTimes((2.0, 1.0), (0.3, 0.2), (4.0, 3.0), (1.0, 1.0))]
    s = xb.stage_summary(times)
    assert s["first pass"] == (3, 2.0, 3.0, 1.0)
    assert s["encode-given-state"] == (2, 3.0, 4.0, 2.0)
    assert s["rebase"] == (2, 3.0, 5.0, 2.5)
    assert s["state dump"][0] == 3 and s["state dump"][1] == pytest.approx(0.3)
    empty = xb.stage_summary(times[:1])["rebase"]
    assert empty[0] == 0 and all(math.isnan(v) for v in empty[1:])


def test_kbps():
    assert xb.kbps(1000, 30, (30, 1)) == pytest.approx(8.0)
    assert xb.kbps(3000, 10, (30000, 1001)) == pytest.approx(8 * 3000 * 30000 / 1001 / 10 / 1000)
    with pytest.raises(ValueError):
        xb.kbps(10, 0, (30, 1))


def test_measure_counts_bytes_and_compares_pictures():
    vector = VP8_DIR / "vp80-00-comprehensive-001.ivf"
    data = [r.data for r in read_ivf(vector)[1]]
    with open_video(vector) as video:
        pictures = list(video)
    assert xb.measure(data, pictures) == (sum(map(len, data)), 1.0)
    size, ssim = xb.measure(data, pictures[1:] + pictures[:1])  # shifted by one: not identical
    assert size == sum(map(len, data)) and 0 < ssim < 1
    with pytest.raises(xb.BenchError, match="more than"):
        xb.measure(data, pictures[:-1])
    n = len(pictures)
    with pytest.raises(xb.BenchError, match=f"shows {n - 1} pictures, the source has {n}"):
        xb.measure(data[:-1], pictures)


def test_bd_between():
    a = xb.Curve("a", [xb.Point(c, s, q, 0.0) for c, s, q in
                       [(1, 1000, 0.99), (2, 700, 0.98), (3, 500, 0.97), (4, 350, 0.95)]])
    half = xb.Curve("half", [xb.Point(p.cq, p.size // 2, p.ssim, 0.0) for p in a.points])
    assert xb.bd_between(a, a, 10, (30, 1)) == pytest.approx(0.0, abs=1e-9)
    assert xb.bd_between(a, half, 10, (30, 1)) == pytest.approx(-50.0, abs=0.1)
    far = xb.Curve("far", [xb.Point(p.cq, p.size, 0.5 + p.ssim / 100, 0.0) for p in a.points])
    assert xb.bd_between(a, far, 10, (30, 1)) is None
    assert xb.bd_between(a, xb.Curve("short", a.points[:3]), 10, (30, 1)) is None


def test_find_inputs_names_what_is_missing(tmp_path):
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "a.y4m").write_bytes(b"")
    clips = [xb.Clip("a", "clip A", "clips/a.y4m", 10), xb.Clip("b", "clip B", "clips/compressed/b.mp4", 10)]
    found, missing = xb.find_inputs(str(tmp_path), clips)
    assert found == [(clips[0], str(tmp_path / "clips" / "a.y4m"))]
    assert len(missing) == 1
    assert "clip B" in missing[0] and str(tmp_path / "clips/compressed/b.mp4") in missing[0]
    assert "--testdata" in missing[0]


def test_vpxenc_command_mirrors_the_first_pass_settings():
    from media.firstpass import KEY_FRAME_DISTANCE, MAX_LAG, TARGET_KBPS

    cmd = xb.vpxenc_command("in.y4m", "out.ivf", 24, 2, 120)
    for flag in ("--good", "--cpu-used=0", "--end-usage=cq", "--cq-level=24", "--passes=2",
                 "--tune=ssim", "--auto-alt-ref=1", "--threads=1", f"--lag-in-frames={MAX_LAG}",
                 f"--kf-min-dist={KEY_FRAME_DISTANCE}", f"--kf-max-dist={KEY_FRAME_DISTANCE}",
                 f"--target-bitrate={TARGET_KBPS}", "--limit=120"):
        assert flag in cmd
    assert cmd[-3:] == ["-o", "out.ivf", "in.y4m"]
    with pytest.raises(ValueError, match="1 or 2 passes"):
        xb.vpxenc_command("in.y4m", "out.ivf", 24, 3, 10)
    with pytest.raises(ValueError, match="cq-level"):
        xb.vpxenc_command("in.y4m", "out.ivf", 64, 1, 10)


@requires_tool("vpxenc")
def test_one_pass_vpxenc_makes_the_first_pass_bytes(tmp_path):
    """Serial vpxenc really runs ExCamera's settings: over one chunk, its one-pass stream is
    libvpx_first_pass's, byte for byte (the look-ahead of 25 covers the chunk)."""
    from media.firstpass import libvpx_first_pass

    frames, rate = xb.read_frames(str(FOREMAN), 6)
    y4m, out = tmp_path / "in.y4m", tmp_path / "out.ivf"
    xb.write_y4m(str(y4m), frames, rate)
    from media.firstpass import CPU_USED
    subprocess.run(xb.vpxenc_command(str(y4m), str(out), 30, 1, 6, cpu_used=CPU_USED), check=True,
                   capture_output=True, timeout=120)
    assert xb.ivf_frames(str(out)) == libvpx_first_pass(frames, rate, 30)


@requires_tool("vpxenc")
def test_two_pass_vpxenc_stream_measures(tmp_path):
    frames, rate = xb.read_frames(str(FOREMAN), 10)
    y4m, out = tmp_path / "in.y4m", tmp_path / "out.ivf"
    xb.write_y4m(str(y4m), frames, rate)
    cpu = xb.run_vpxenc(xb.vpxenc_command(str(y4m), str(out), 30, 2, 10))
    assert cpu >= 0
    data = xb.ivf_frames(str(out))
    assert xb.key_frame_indices(data) == [0]
    size, ssim = xb.measure(data, frames)
    assert size == sum(map(len, data)) and 0.9 < ssim < 1


@requires_tool("vpxenc")
def test_run_vpxenc_failure_is_a_bench_error(tmp_path):
    with pytest.raises(xb.BenchError, match="vpxenc failed"):
        xb.run_vpxenc(xb.vpxenc_command(str(tmp_path / "missing.y4m"), str(tmp_path / "o.ivf"), 30, 1, 5))


def test_main_without_inputs_says_where_it_looked(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(xb.shutil, "which", lambda name: f"/usr/bin/{name}")
    assert xb.main(["--testdata", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "no input to measure" in err
    assert str(tmp_path / "clips" / "compressed" / "Zhling_1280x720.264") in err
    assert str(tmp_path / "clips" / "carphone_qcif_176x144_120f_decoded.y4m") in err


def test_main_without_vpxenc_says_so(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(xb.shutil, "which", lambda name: None)
    assert xb.main(["--testdata", str(tmp_path)]) == 1
    assert "vpxenc NOT FOUND" in capsys.readouterr().err
