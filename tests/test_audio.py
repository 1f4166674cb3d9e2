"""The input's sound in the outputs of ``excamera encode`` and ``excamera pipeline run``
(media/audio.py): kept in sync (measured on a clip whose flash frames and clicks fall at the same
instants), copied or transcoded as the container needs, cut to the frames a pipeline keeps,
sped up with the frames, dropped with ``--no-audio``, and bad sound or no video handled in one
line."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from common import DATA, ROOT, run_cli
from sound_clips import events, flash_click_clip, pcm, scene_tones, tone_clip, tone_of, with_tones

av = pytest.importorskip("av")

#: Sound further than this from its pictures is out of sync (the issue's bound).
SYNC_S = 0.040
PIPELINES = ROOT / "pipelines"


def streams(path) -> dict[str, str]:
    with av.open(str(path)) as c:
        return {s.type: s.codec_context.name for s in c.streams}


def offsets(path) -> list[float]:
    flashes, clicks = events(path)
    assert len(flashes) == 3 and len(clicks) == 3, (flashes, clicks)
    return [c - f for f, c in zip(flashes, clicks)]


@pytest.fixture(scope="module")
def mp4_clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("clips") / "flash.mp4"
    flash_click_clip(path)                     # H.264 + AAC, as a phone or camera writes
    return path


@pytest.fixture(scope="module")
def webm_clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("clips") / "flash.webm"
    flash_click_clip(path, vcodec="libvpx", acodec="libopus")
    return path


@pytest.mark.parametrize("clip, out, codec", [("mp4_clip", "o.webm", "opus"),    # AAC transcoded
                                              ("mp4_clip", "o.mkv", "aac"),      # copied
                                              ("webm_clip", "o.webm", "opus")])  # copied
def test_encode_keeps_the_sound_in_sync(clip, out, codec, request, tmp_path):
    src = request.getfixturevalue(clip)
    p = run_cli("encode", src, "-o", tmp_path / out, "--workers", "0")
    assert p.returncode == 0, p.stderr
    assert streams(tmp_path / out) == {"video": "vp8", "audio": codec}
    worst = max(map(abs, offsets(tmp_path / out)))
    print(f"{clip} -> {out}: worst sync offset {worst * 1000:.2f} ms")
    assert worst < SYNC_S


def test_opus_is_copied_byte_for_byte(webm_clip, tmp_path):
    p = run_cli("encode", webm_clip, "-o", tmp_path / "o.webm", "--workers", "0")
    assert p.returncode == 0, p.stderr

    def payloads(path):
        with av.open(str(path)) as c:
            return [bytes(q) for q in c.demux(c.streams.audio[0]) if q.size]
    assert payloads(tmp_path / "o.webm") == payloads(webm_clip)


@pytest.mark.parametrize("workers", ["0", "2"])
def test_pipeline_run_keeps_the_sound_in_sync(mp4_clip, workers, tmp_path):
    out = tmp_path / "mirror.webm"
    p = run_cli("pipeline", "run", PIPELINES / "mirror.json", "-i", f"input_0={mp4_clip}",
                "-o", f"output_0={out}", "--workers", workers)
    assert p.returncode == 0, p.stderr
    assert streams(out) == {"video": "vp8", "audio": "opus"}
    assert max(map(abs, offsets(out))) < SYNC_S


def test_no_audio_drops_the_sound(mp4_clip, tmp_path):
    p = run_cli("encode", mp4_clip, "-o", tmp_path / "e.webm", "--workers", "0", "--no-audio")
    assert p.returncode == 0, p.stderr
    p = run_cli("pipeline", "run", PIPELINES / "mirror.json", "-i", f"input_0={mp4_clip}",
                "-o", f"output_0={tmp_path / 'p.mp4'}", "--workers", "0", "--no-audio")
    assert p.returncode == 0, p.stderr
    assert streams(tmp_path / "e.webm") == {"video": "vp8"}
    assert streams(tmp_path / "p.mp4") == {"video": "h264"}


def test_ivf_output_says_the_sound_is_left_out(mp4_clip, tmp_path):
    p = run_cli("encode", mp4_clip, "-o", tmp_path / "o.ivf", "--workers", "0")
    assert p.returncode == 0, p.stderr
    assert p.stderr.splitlines()[0] == ("excamera: warning: an .ivf file holds no sound: written without it "
                                        "(write .webm or .mkv to keep it)")


def test_a_sound_nothing_decodes_is_one_warning_and_the_video_is_written(webm_clip, tmp_path):
    data = webm_clip.read_bytes()
    assert data.count(b"A_OPUS") == 1
    bogus = tmp_path / "bogus.webm"
    bogus.write_bytes(data.replace(b"A_OPUS", b"A_QXYZ"))   # a Matroska codec ID nothing knows
    for out in ("o.webm", "o.mkv"):
        p = run_cli("encode", bogus, "-o", tmp_path / out, "--workers", "0")
        assert p.returncode == 0, p.stderr
        warnings = [line for line in p.stderr.splitlines() if "warning" in line]
        assert warnings == ["excamera: warning: the input's sound is in a codec ffmpeg cannot decode or copy "
                            "(not one ffmpeg knows): the output is written without sound"], p.stderr
        assert streams(tmp_path / out) == {"video": "vp8"}


def test_no_video_stream_is_one_line_and_nothing_written(tmp_path):
    sound_only = tmp_path / "sound.m4a"
    with av.open(str(sound_only), "w") as c:
        s = c.add_stream("aac", rate=48000, layout="mono")
        f = av.AudioFrame.from_ndarray(np.zeros((1, 48000), np.float32), format="fltp", layout="mono")
        f.sample_rate, f.pts = 48000, 0
        for q in s.encode(f) + s.encode(None):
            c.mux(q)
    runs = [("encode", sound_only, "-o", tmp_path / "o.webm", "--workers", "0"),
            ("pipeline", "run", PIPELINES / "mirror.json", "-i", f"input_0={sound_only}",
             "-o", f"output_0={tmp_path / 'o.mp4'}", "--workers", "0")]
    for args in runs:
        p = run_cli(*args)
        assert p.returncode == 1
        assert p.stderr.splitlines() == [p.stderr.strip()] and "no video stream" in p.stderr, p.stderr
    assert sorted(x.name for x in tmp_path.iterdir()) == ["sound.m4a"]


# -- the sound follows the frames a pipeline keeps -----------------------------------------------

@pytest.mark.parametrize("ext, codec", [(".webm", "opus"), (".mp4", "aac")])
def test_dropped_frames_take_their_sound_with_them(ext, codec, tmp_path):
    from pipeline.media_io import cut_input, write_output

    clip = tmp_path / "tones.mp4"
    tone_clip(clip)                                    # 6 scenes of 8 frames at 24 fps
    chunks = list(cut_input(str(clip), 8))
    assert [(c.start, c.count) for c in chunks[:4]] == [(0, 8), (8, 8), (16, 8), (24, 8)]
    kept = [chunks[1], chunks[3]]                     # what a select stage would leave
    out = tmp_path / f"kept{ext}"
    write_output(str(out), "chunks", kept, sound=str(clip))
    assert streams(out) == {"video": "vp8" if ext == ".webm" else "h264", "audio": codec}
    t0, x, rate = pcm(out)
    assert abs(len(x) / rate + t0 - 16 / 24) < 0.05    # the two scenes' sound, and no more
    assert scene_tones(out, 8, 24, 2) == pytest.approx([tone_of(1), tone_of(3)], abs=15)


def test_find_person_keeps_the_sound_of_the_kept_scenes(tmp_path):
    pytest.importorskip("dlib")                          # the vision extra (setup.cfg)
    footage = tmp_path / "scenes_with_sound.mp4"
    with_tones(DATA / "vision" / "scenes.mp4", footage)     # 7 scenes of 8 frames at 30 fps
    out = tmp_path / "found.webm"
    p = run_cli("pipeline", "run", PIPELINES / "find_person.json", "-i", f"input_0={footage}",
                "-i", f"input_1={DATA / 'vision' / 'person.png'}", "-o", f"output_0={out}", "--workers", "0")
    assert p.returncode == 0, p.stderr
    # Which input frames were kept, from the pictures (the boxes drawn change them a little).
    with av.open(str(footage)) as c:
        source = [f.to_ndarray(format="gray").astype(np.float32) for f in c.decode(c.streams.video[0])]
    with av.open(str(out)) as c:
        kept = [int(np.argmin([np.mean((f.to_ndarray(format="gray") - s) ** 2) for s in source]))
                for f in c.decode(c.streams.video[0])]
    assert len(kept) == 16 and all(k % 8 == i % 8 for i, k in enumerate(kept))
    scenes = [kept[0] // 8, kept[8] // 8]
    assert scene_tones(out, 8, 30, 2) == pytest.approx([tone_of(s) for s in scenes], abs=20)


def test_a_faster_piece_plays_its_sound_faster_at_the_same_pitch(tmp_path):
    """A value whose ``meta["speed"]`` is 2 (a stage that keeps every other frame and says so)
    covers twice its frames of the input: its sound is played twice as fast, tones unchanged."""
    from pipeline.media_io import cut_input, write_output
    from pipeline.stages.video import decode_chunk

    clip = tmp_path / "tones.mp4"
    tone_clip(clip, scenes=4, per_scene=12)             # 4 scenes of 12 frames at 24 fps: 2 s
    batch = decode_chunk(next(iter(cut_input(str(clip), 48))))
    fast = batch.slice(0, 24)                           # stands for frames 0, 2, 4, ... 46
    fast.y, fast.u, fast.v = batch.y[::2], batch.u[::2], batch.v[::2]
    fast.meta = {"speed": 2}
    out = tmp_path / "fast.webm"
    write_output(str(out), "frames", [fast], sound=str(clip))
    t0, x, rate = pcm(out)
    assert abs(len(x) / rate + t0 - 1.0) < 0.06        # 2 s of sound in 1 s
    assert scene_tones(out, 6, 24, 4) == pytest.approx([tone_of(k) for k in range(4)], abs=15)


def test_spans_merge_what_follows_on():
    from media.audio import Span, spans_of

    spans = spans_of([(0, 8, 1), (8, 8, 1), (24, 8, 1), (32, 4, 2)], (24, 1))
    f = Fraction
    assert spans == [Span(f(0), f(16, 24), f(0)), Span(f(1), f(32, 24), f(16, 24)),
                     Span(f(32, 24), f(40, 24), f(24, 24), f(2))]


def test_scale_plays_the_sound_at_its_speed(tmp_path):
    """Sprocket's ``scale`` (factor 2: every other frame) says where each batch starts in the input
    and how fast it plays, so the output's sound is the whole input's, twice as fast: half as long."""
    import json

    import av

    from coordinator.config import RunConfig
    from pipeline.run import run_pipeline

    clip = ROOT / "tests" / "data" / "clips" / "compressed" / "bigbuckbunny_320x180_5s_aac.mp4"
    spec = {"nodes": [{"name": "decode", "stage": "decode", "config": {}},
                      {"name": "fast", "stage": "scale", "config": {"factor": 2}},
                      {"name": "encode", "stage": "encode", "config": {"cq_level": 30}}],
            "streams": [{"src": "input_0:chunks", "dst": "decode:chunks"},
                        {"src": "decode:frames", "dst": "fast:frames"},
                        {"src": "fast:frames", "dst": "encode:frames"},
                        {"src": "encode:chunks", "dst": "output_0:chunks"}]}
    path = tmp_path / "fast.json"
    path.write_text(json.dumps(spec))
    out = tmp_path / "fast.webm"
    run_pipeline(str(path), {"input_0": str(clip)}, {"output_0": str(out)}, RunConfig(workers=0))

    def seconds(f, kind):
        with av.open(str(f)) as c:
            s = getattr(c.streams, kind)[0]
            return float(sum(p.duration or 0 for p in c.demux(s)) * s.time_base)

    with av.open(str(out)) as c:
        v = c.streams.video[0]
        pictures = sum(1 for p in c.demux(v) if p.size) / float(v.average_rate)
    assert abs(seconds(out, "audio") - seconds(clip, "audio") / 2) < 0.15
    assert abs(seconds(out, "audio") - pictures) < 0.15
