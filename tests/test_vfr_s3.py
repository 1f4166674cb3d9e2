"""A variable-frame-rate input keeps its times in the outputs the workers join in S3 (issues 21
and 23; ``worker.assemble_ops``): ``-o s3://.../x.ivf`` is byte for byte the local ``-o x.ivf``
(the header's rate/scale the input's time base, each frame's pts its time), an S3 ``.webm`` /
``.mkv`` shows the input's times (PyAV, within 1 ms), and ``--workers 0`` to S3 gives the bytes
``--workers 2`` gives. The times reach the workers as one job input, checked against its digest.

The clip: 16 H.264 pictures at the times ``VFR_MS`` (tests/test_inputs_as_people_have_them.py)."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import subprocess
import sys
from fractions import Fraction

import pytest

from common import ROOT

av = pytest.importorskip("av")

from test_inputs_as_people_have_them import VFR_MS, make_clip  # noqa: E402

ARGS = ["--chunk-frames", "4", "--batch-chunks", "2", "--cq-level", "30", "--first-pass", "native"]
WANT = [Fraction(t, 1000) for t in VFR_MS]
MS = Fraction(1, 1000)
_BUCKETS = itertools.count()


def excamera(*args, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "excamera", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def encoded(s3_server, tmp_path_factory):
    """The VFR clip encoded to local files and to S3 (two workers and in this process): the
    bytes by name, each with its stderr."""
    from common import subprocess_env

    env = subprocess_env()
    for k in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN"):
        env.pop(k, None)
    env.update(s3_server.env)
    where = tmp_path_factory.mktemp("vfr-s3")
    clip = where / "vfr.mkv"
    make_clip(clip, "libx264", "yuv420p", 64, 48, len(VFR_MS), pts=VFR_MS, options={"g": "4", "bf": "0"})
    bucket = s3_server.bucket(f"vfr-{next(_BUCKETS)}")
    got = {}
    for name, workers in (("local.ivf", 2), ("local.webm", 2), ("s3.ivf", 2), ("s3-0.ivf", 0),
                          ("s3.webm", 2), ("s3-0.webm", 0), ("s3.mkv", 2)):
        out = where / name if name.startswith("local") else f"s3://{bucket}/{name}"
        r = excamera("encode", clip, "-o", out, "--workers", workers, *ARGS, env=env)
        assert r.returncode == 0, r.stderr
        assert "16 frames, 64x48" in r.stderr and "constant rate" not in r.stderr, r.stderr
        if name.startswith("local"):
            data = (where / name).read_bytes()
        else:
            data = s3_server.client().get_object(Bucket=bucket, Key=name)["Body"].read()
            (where / name).write_bytes(data)
        got[name] = where / name
    assert s3_server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    return got


def shown_times(path) -> list[Fraction]:
    """The decoded pictures' presentation times PyAV reads from ``path``, from the first."""
    with av.open(path if isinstance(path, io.BytesIO) else str(path)) as c:
        times = sorted(Fraction(f.pts) * f.time_base for f in c.decode(video=0))
    return [t - times[0] for t in times]


def test_s3_ivf_is_the_local_file_byte_for_byte(encoded):
    from codec.ivf import IvfHeader, read_ivf

    local = encoded["local.ivf"].read_bytes()
    assert encoded["s3.ivf"].read_bytes() == local
    assert encoded["s3-0.ivf"].read_bytes() == local
    header, records = read_ivf(io.BytesIO(local))
    assert (header.rate, header.scale) == (1000, 1)          # the clip's time base, 1/1000
    assert sorted({r.pts for r in records}) == VFR_MS        # every frame at a time of the input
    assert IvfHeader.parse(local[:32]).frame_count == len(records)


def test_s3_webm_and_mkv_show_the_input_times(encoded):
    local = shown_times(encoded["local.webm"])            # ffmpeg's muxer, from the same frames
    assert len(local) == len(WANT) and all(abs(a - b) <= MS for a, b in zip(local, WANT))
    for name in ("s3.webm", "s3.mkv"):
        got = shown_times(encoded[name])
        assert len(got) == len(WANT), name
        assert all(abs(g - w) <= MS for g, w in zip(got, WANT)), (name, got)
        assert all(abs(g - w) <= MS for g, w in zip(got, local)), (name, got)


def test_workers_0_and_2_give_the_same_webm(encoded):
    assert encoded["s3-0.webm"].read_bytes() == encoded["s3.webm"].read_bytes()


def test_the_times_object_is_checked_against_its_digest(tmp_path):
    """A times object that is not the one the job named fails the stitch in one line."""
    from storage import LocalStorage
    from worker.assemble_ops import read_times, times_object
    from worker.ops import OpContext, OperationError, get_verified

    storage = LocalStorage(str(tmp_path))
    data = times_object([0, 40, 60], Fraction(1, 1000))
    assert read_times(data, "t", 3) == ([0, 40, 60], Fraction(1, 1000))
    storage.put("t", json.dumps({"time_base": [1, 1000], "ticks": [0, 40, 61]}).encode())
    ctx = OpContext("job", "stitch", 1, storage)
    with pytest.raises(OperationError, match="not the"):
        get_verified(ctx, "t", [f"t {hashlib.sha256(data).hexdigest()} {len(data)}"])
    for bad, why in ((b"[]", "not a times object"), (times_object([0, 40, 40], MS), "increasing"),
                     (data, "3 times for 4 frames")):
        with pytest.raises(OperationError, match=why):
            read_times(bad, "t", 4)


def test_matroska_here_spans_the_sound_and_duration_by_the_times():
    """``matroska_here`` (``--workers 0``, the functions the tasks run) with times: the clusters
    at the pictures' times in ms and the Duration the last time plus one step; without times, the
    constant-rate layout as before (the same bytes whatever the times would have been)."""
    from common import CLIPS_DIR
    from media.excamera_encode import EncodeSettings, encode_frames
    from media.video import open_video
    from worker.assemble_ops import matroska_here

    with open_video(str(CLIPS_DIR / "RTn23_80x44p15_15f.y4m")) as v:
        frames = encode_frames(v, EncodeSettings(5, 3, 30, "native", 0), v.rate)
        w, h, rate = v.width, v.height, v.rate
    ticks = [round(1000 * i * i / 30) for i in range(15)]           # slowing down: 0, 33, 133, ...
    plain, _ = matroska_here("webm", frames, w, h, rate, 5, None, 1 << 30)
    timed, _ = matroska_here("webm", frames, w, h, rate, 5, None, 1 << 30, (ticks, MS))
    assert plain != timed
    with av.open(io.BytesIO(b"".join(timed))) as c:
        got = sorted(Fraction(f.pts) * f.time_base for f in c.decode(video=0))
        duration = Fraction(c.duration, 1_000_000)
    assert got == [t * MS for t in ticks]
    assert abs(duration - (2 * ticks[-1] - ticks[-2]) * MS) <= MS


def test_the_job_names_the_times_only_for_a_variable_rate():
    """The stitch of a job with times takes them (as ``"KEY SHA256 SIZE"``) and the audio task
    spans the pictures' duration; a constant-rate job's tasks are as they were, no times."""
    from coordinator.excamera_job import TIMES_KEY, JoinPlan, encode_job
    from media.excamera_encode import EncodeSettings

    settings = EncodeSettings(4, 2, 30, "native", 0)
    line = f"{TIMES_KEY} {'0' * 64} 99"
    timed = encode_job(16, 64, 48, settings, join=JoinPlan("s3://b/k.webm", "u", audio="in.mp4", times=line,
                                                           duration=(7, 10)), rate=(25, 1))
    plain = encode_job(16, 64, 48, settings, join=JoinPlan("s3://b/k.webm", "u", audio="in.mp4"), rate=(25, 1))
    tasks = {t.task_id: t for t in timed.tasks}
    assert tasks["stitch"].params["times"] == line
    audio = tasks["audio"].params
    assert Fraction(audio["frames"] * audio["rate_den"], audio["rate_num"]) == Fraction(7, 10)
    stitch_fsm = next(f for f in timed.fsms if f.name == "excamera-encode-stitch")
    assert stitch_fsm.state("stitch").args["times"] == "${times}"
    plain_tasks = {t.task_id: t for t in plain.tasks}
    assert "times" not in plain_tasks["stitch"].params
    assert (plain_tasks["audio"].params["rate_num"], plain_tasks["audio"].params["rate_den"]) == (25, 1)
    assert "times" not in next(f for f in plain.fsms if f.name == "excamera-encode-stitch").state("stitch").args


def _vfr_clip_with_sound(path) -> None:
    """The VFR pictures (``VFR_MS``) over 0.75 s of AAC (a tone) in Matroska."""
    import numpy as np

    rate = 48000
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=25)
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        v.codec_context.time_base = MS
        v.options = {"g": "4", "bf": "0"}
        a = c.add_stream("aac", rate=rate, layout="mono")
        packets = []
        for i, t in enumerate(VFR_MS):
            f = av.VideoFrame.from_ndarray(np.full((72, 64), 16 + 12 * i, np.uint8), format="yuv420p")
            f.pts, f.time_base = t, MS
            packets += v.encode(f)
        packets += v.encode(None)
        samples = (0.3 * np.sin(np.arange(rate * 3 // 4) * 2 * np.pi * 440 / rate)).astype(np.float32)[None]
        for s in range(0, samples.shape[1], 1024):
            f = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, s:s + 1024]), format="fltp", layout="mono")
            f.sample_rate, f.pts, f.time_base = rate, s, Fraction(1, rate)
            packets += a.encode(f)
        packets += a.encode(None)
        for p in sorted(packets, key=lambda p: float(p.dts * p.time_base) if p.dts is not None else 0.0):
            c.mux(p)


def test_the_sound_spans_the_times_as_the_local_file(s3_server, s3_child_env, tmp_path):
    """An .mkv in S3 (AAC copied) carries the sound packets the local .mkv carries, for as long
    as the pictures' times last; ``--workers 0`` and ``--workers 2`` give the same bytes."""
    clip = tmp_path / "vfr-sound.mkv"
    _vfr_clip_with_sound(clip)
    bucket = s3_server.bucket(f"vfr-{next(_BUCKETS)}")
    for out, workers in ((tmp_path / "local.mkv", 2), (f"s3://{bucket}/w2.mkv", 2), (f"s3://{bucket}/w0.mkv", 0)):
        r = excamera("encode", clip, "-o", out, "--workers", workers, *ARGS, env=s3_child_env)
        assert r.returncode == 0 and "constant rate" not in r.stderr, r.stderr
    w2, w0 = (s3_server.client().get_object(Bucket=bucket, Key=k)["Body"].read() for k in ("w2.mkv", "w0.mkv"))
    assert w2 == w0

    def sound(src) -> list[Fraction]:
        with av.open(src) as c:
            return [Fraction(p.pts) * p.time_base for p in c.demux(audio=0) if p.size]

    local, joined = sound(str(tmp_path / "local.mkv")), sound(io.BytesIO(w2))
    assert len(joined) == len(local) > 30
    assert all(abs(a - b) <= MS for a, b in zip(joined, local))
    got = shown_times(io.BytesIO(w2))
    assert len(got) == len(WANT) and all(abs(g - w) <= MS for g, w in zip(got, shown_times(tmp_path / "local.mkv")))
