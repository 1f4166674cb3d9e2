"""Outputs people play (media/outputs.py, pipeline/media_io.py): ``.mp4`` H.264 + AAC, HLS
``.m3u8`` and DASH ``.mpd`` with their segments beside them and the sound in sync, opened by
ffprobe; a pipeline that drops frames writes what it kept back to back."""

from __future__ import annotations

import json
import subprocess
import xml.etree.ElementTree as ET

import pytest

from common import ROOT, requires_tool, run_cli
from sound_clips import events, flash_click_clip

av = pytest.importorskip("av")
SYNC_S = 0.040


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("clips") / "flash.mp4"
    flash_click_clip(path)
    return path


@pytest.fixture(scope="module")
def chunks(clip):
    from pipeline.media_io import cut_input
    return list(cut_input(str(clip), 25))


def ffprobe(path) -> dict:
    p = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_type,codec_name,width,height",
                        "-show_entries", "format=duration", "-of", "json", str(path)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    return json.loads(p.stdout)


def kinds(probe: dict) -> dict[str, str]:
    return {s["codec_type"]: s["codec_name"] for s in probe["streams"]}


def in_sync(path) -> None:
    flashes, clicks = events(path)
    assert len(flashes) == 3 and len(clicks) == 3, (flashes, clicks)
    assert max(abs(c - f) for f, c in zip(flashes, clicks)) < SYNC_S


@requires_tool("ffprobe")
def test_mp4_is_h264_with_aac_in_sync(chunks, clip, tmp_path):
    from pipeline.media_io import write_output

    out = tmp_path / "out.mp4"
    write_output(str(out), "chunks", chunks, sound=str(clip))
    probe = ffprobe(out)
    assert kinds(probe) == {"video": "h264", "audio": "aac"}
    assert float(probe["format"]["duration"]) == pytest.approx(3.0, abs=0.05)
    with open(out, "rb") as f:   # +faststart: the index (moov) before the media (mdat)
        head = f.read(4096)
    assert head.find(b"moov") != -1 and (head.find(b"mdat") == -1 or head.find(b"moov") < head.find(b"mdat"))
    in_sync(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]


@requires_tool("ffprobe")
def test_hls_playlist_with_segments_beside_it(chunks, clip, tmp_path):
    from pipeline.media_io import write_output

    out = tmp_path / "show.m3u8"
    write_output(str(out), "chunks", chunks, sound=str(clip))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["show-00000.ts", "show-00001.ts", "show.m3u8"]    # 3 s in 2 s segments
    text = out.read_text()
    assert "#EXT-X-PLAYLIST-TYPE:VOD" in text and "#EXT-X-ENDLIST" in text
    assert [line for line in text.splitlines() if not line.startswith("#")] == names[:2]
    assert kinds(ffprobe(out)) == {"video": "h264", "audio": "aac"}
    in_sync(out)


@requires_tool("ffprobe")
def test_dash_with_sound_as_a_second_adaptation_set(chunks, clip, tmp_path):
    from pipeline.media_io import write_output

    mpd = tmp_path / "show.mpd"
    write_output(str(mpd), "chunks", chunks, sound=str(clip))
    ns = {"d": "urn:mpeg:dash:schema:mpd:2011"}
    sets = ET.parse(mpd).getroot().findall(".//d:AdaptationSet", ns)
    assert sorted(s.get("contentType") for s in sets) == ["audio", "video"]
    assert kinds(ffprobe(mpd)) == {"video": "vp8", "audio": "opus"}
    # Each representation's init segment and media segments, joined, are one WebM stream: the
    # flashes in one and the clicks in the other still line up.
    joined = {}
    for rep in ("0", "1"):
        parts = [tmp_path / f"show-init-{rep}.webm"] + sorted(tmp_path.glob(f"show-{rep}-*.webm"))
        joined[rep] = tmp_path / f"joined-{rep}.webm"
        joined[rep].write_bytes(b"".join(p.read_bytes() for p in parts))
    from sound_clips import pcm, video_frames
    flashes = [t for t, y in video_frames(joined["0"]) if y.mean() > 128]
    t0, x, rate = pcm(joined["1"])
    import numpy as np
    loud = np.flatnonzero(np.abs(x) > 0.2)
    clicks = [t0 + loud[0] / rate] + [t0 + b / rate for a, b in zip(loud, loud[1:]) if b - a > rate // 10]
    assert len(flashes) == len(clicks) == 3
    assert max(abs(c - f) for f, c in zip(flashes, clicks)) < SYNC_S


def test_live_dash_writer_carries_the_sound(chunks, clip, tmp_path):
    from pipeline.media_io import DashWriter
    from pipeline.stages.video import decode_chunk, encode_vp8

    w = DashWriter(str(tmp_path / "live.mpd"), sound=str(clip))
    for c in reversed(chunks):                      # in any order: muxed in frame order
        w.add(encode_vp8(decode_chunk(c)))
    w.close()
    ns = {"d": "urn:mpeg:dash:schema:mpd:2011"}
    sets = ET.parse(tmp_path / "live.mpd").getroot().findall(".//d:AdaptationSet", ns)
    assert sorted(s.get("contentType") for s in sets) == ["audio", "video"]


def test_kept_pieces_play_back_to_back(chunks, tmp_path):
    """Frames 0-24 and 50-74 kept (a select stage's output): the WebM plays them one after the
    other, 50 frames at 25 fps with no hole."""
    from pipeline.media_io import write_output

    out = tmp_path / "kept.webm"
    write_output(str(out), "chunks", [chunks[2], chunks[0]])
    with av.open(str(out)) as c:
        times = [float(p.pts * p.time_base) for p in c.demux(c.streams.video[0]) if p.size]
    assert times == pytest.approx([i / 25 for i in range(50)], abs=1e-3)


def test_encode_refuses_mp4_in_one_line(clip, tmp_path):
    p = run_cli("encode", clip, "-o", tmp_path / "o.mp4", "--workers", "0", cwd=ROOT)
    assert p.returncode == 1
    assert p.stderr.splitlines() == [f"excamera: error: -o {tmp_path / 'o.mp4'}: the output must end in .ivf, "
                                     ".webm or .mkv (the ExCamera encode is VP8; excamera pipeline run writes .mp4)"]
    assert not (tmp_path / "o.mp4").exists()
