"""The pipespecs in pipelines/, run whole: raw output equals ffmpeg's own for the same filters,
picture for picture; encoded output decodes in ffmpeg and vpxdec without a warning, with every
frame and SSIM >= 0.95 against the raw result; any worker count gives the same bytes; and the
find-person pipeline keeps exactly the person's scenes of the bundled footage."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from codec.y4m import read_y4m
from common import CLIPS_DIR, DATA, ROOT, ffmpeg_yuv, requires_tool
from media.video import open_video
from coordinator.config import RunConfig
from pipeline.run import run_pipeline

PIPELINES = ROOT / "pipelines"
FOREMAN = CLIPS_DIR / "foreman_qcif_176x144_10f.y4m"
MIRROR = "[0]crop=iw/2:ih:0:0,split[a][b];[b]hflip[c];[a][c]hstack"


def shipped(name: str) -> dict:
    return json.loads((PIPELINES / f"{name}.json").read_text())


def raw(doc: dict) -> dict:
    """The pipespec with its encode node taken out: the pictures go to output_0 as they are."""
    enc = next(n["name"] for n in doc["nodes"] if n["stage"] in ("encode", "encode_to_dash", "excamera_encode"))
    streams = []
    for s in doc["streams"]:
        if s["src"].startswith(enc + ":"):
            continue
        if s["dst"].startswith(enc + ":"):
            s = dict(s, dst="output_0:frames")
        streams.append(s)
    return {"nodes": [n for n in doc["nodes"] if n["name"] != enc], "streams": streams}


def y4m_planes(path) -> bytes:
    return b"".join(f.to_i420() for f in read_y4m(path)[1])


@pytest.fixture(scope="module")
def flipped(tmp_path_factory):
    """A second input for blend: foreman mirrored, by ffmpeg."""
    out = tmp_path_factory.mktemp("flip") / "flipped.y4m"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(FOREMAN), "-vf", "hflip", "-pix_fmt", "yuv420p",
                    str(out)], check=True, timeout=60)
    return out


CASES = {"grayscale": ([], ["-vf", "hue=s=0"]), "mirror": ([], ["-filter_complex", MIRROR]),
         "blend": (["flipped"], ["-filter_complex", "[0][1]blend=all_mode=average"])}


@requires_tool("ffmpeg")
@pytest.mark.parametrize("name", sorted(CASES))
def test_raw_output_equals_ffmpeg(name, tmp_path, flipped):
    extra, ffargs = CASES[name]
    inputs = {"input_0": str(FOREMAN), **({"input_1": str(flipped)} if extra else {})}
    out = tmp_path / "out.y4m"
    summary = run_pipeline(raw(shipped(name)), inputs, {"output_0": str(out)}, RunConfig(workers=0), frames_per_chunk=4)
    assert summary["outputs"] == {"output_0": 10}
    theirs = ffmpeg_yuv([FOREMAN] + ([flipped] if extra else []), ffargs)
    assert y4m_planes(out) == theirs


def decodes_cleanly(path: Path) -> int:
    """Frames ffmpeg decodes from ``path``, asserting it says nothing (no warning, no error)."""
    p = subprocess.run(["ffmpeg", "-nostdin", "-v", "warning", "-i", str(path), "-f", "framemd5", "-"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    return sum(1 for line in p.stdout.splitlines() if line and not line.startswith("#"))


@requires_tool("ffmpeg")
@requires_tool("vpxdec")
@pytest.mark.parametrize("name", sorted(CASES))
def test_encoded_output_plays_with_every_frame_and_ssim(name, tmp_path, flipped):
    from codec.ssim import mean_ssim

    extra, _ = CASES[name]
    inputs = {"input_0": str(FOREMAN), **({"input_1": str(flipped)} if extra else {})}
    out, ref = tmp_path / "out.webm", tmp_path / "raw.y4m"
    run_pipeline(shipped(name), inputs, {"output_0": str(out)}, RunConfig(workers=2), frames_per_chunk=4)
    run_pipeline(raw(shipped(name)), inputs, {"output_0": str(ref)}, RunConfig(workers=0), frames_per_chunk=4)
    assert decodes_cleanly(out) == 10
    p = subprocess.run(["vpxdec", "--i420", "-o", str(tmp_path / "v.i420"), str(out)], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0 and p.stderr.strip() == "", p.stderr
    with open_video(out) as video:
        pictures = list(video)
    assert len(pictures) == 10
    assert (tmp_path / "v.i420").read_bytes() == b"".join(f.to_i420() for f in pictures)
    score = mean_ssim(pictures, read_y4m(ref)[1]).all
    assert score >= 0.95, score


def test_worker_counts_give_identical_bytes(tmp_path):
    outs = []
    for workers in (0, 1, 2, 4):
        out = tmp_path / f"w{workers}.webm"
        run_pipeline(shipped("grayscale"), {"input_0": str(FOREMAN)}, {"output_0": str(out)}, RunConfig(workers=workers),
                     frames_per_chunk=3)
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] == outs[2] == outs[3]


def test_excamera_gray_keeps_one_key_frame_every_n_x(tmp_path):
    from codec.chunks import frame_tag
    from codec.ivf import read_ivf

    doc = shipped("excamera_gray")
    for n in doc["nodes"]:
        if n["stage"] == "excamera_encode":
            n["config"].update(chunk_frames=2, batch_chunks=3)       # N*x = 6 on a 15-frame clip
    out = tmp_path / "out.ivf"
    run_pipeline(doc, {"input_0": str(CLIPS_DIR / "RTn23_80x44p15_15f.y4m")}, {"output_0": str(out)}, RunConfig(workers=2),
                 frames_per_chunk=4)
    frames = [r.data for r in read_ivf(out)[1]]
    keys = [i for i, d in enumerate(frames) if frame_tag(d).key_frame]
    assert len(frames) == 15 and keys == [0, 6, 12]


FOOTAGE = DATA / "vision" / "scenes.mp4"
PERSON = DATA / "vision" / "person.png"


def test_find_person_keeps_exactly_the_persons_scenes(tmp_path):
    """The bundled footage: seven 8-frame scenes (foreman, bus, carphone, foreman, the Cisco call,
    Zhling, a Kodak still); the photo is a foreman frame not in the video."""
    listing, video = tmp_path / "found.json", tmp_path / "found.webm"
    run_pipeline(PIPELINES / "find_person_scenes.json", {"input_0": str(FOOTAGE), "input_1": str(PERSON)},
                 {"output_0": str(listing)}, RunConfig(workers=2), frames_per_chunk=5)
    scenes = json.loads(listing.read_text())
    got = [(s["first_frame"], s["last_frame"]) for s in (scenes if isinstance(scenes, list) else scenes["records"])]
    assert got == [(0, 7), (24, 31)], scenes
    run_pipeline(PIPELINES / "find_person.json", {"input_0": str(FOOTAGE), "input_1": str(PERSON)},
                 {"output_0": str(video)}, RunConfig(workers=0), frames_per_chunk=5)
    with open_video(video) as v:
        assert sum(1 for _ in v) == 16


@requires_tool("ffmpeg")
def test_dash_is_written_while_the_pipeline_runs(tmp_path):
    """.mpd output: the manifest is on disk, still a live one (type="dynamic"), beside its first
    segments while the job is held unfinished (its planner's report that the encode node is done
    waits for it: the job cannot end meanwhile), so a player can start; at the end the manifest is
    static and the segments hold every frame, the same pictures as the .ivf."""
    import time

    mpd, ivf = tmp_path / "out.mpd", tmp_path / "out.ivf"
    clip = str(CLIPS_DIR / "RTn23_80x44p15_15f.y4m")
    seen: dict[str, object] = {}

    def progress(node, done, planned, finished):
        if node != "encode" or not finished or seen:
            return
        deadline = time.monotonic() + 60          # a hang-catcher: it takes a moment normally
        while time.monotonic() < deadline:
            text = mpd.read_text() if mpd.exists() else ""
            if 'type="dynamic"' in text:
                seen["manifest"] = text
                seen["segments"] = sorted(p.name for p in tmp_path.glob("out-*.webm"))
                break
            time.sleep(0.01)
        seen.setdefault("manifest", None)

    summary = run_pipeline(shipped("grayscale"), {"input_0": clip}, {"output_0": str(mpd)}, RunConfig(workers=2),
                           frames_per_chunk=3, on_progress=progress)
    assert seen.get("manifest"), "no live manifest appeared while the job was held before its end"
    assert "out-init-0.webm" in seen["segments"] and len(seen["segments"]) >= 2, seen
    assert summary["streamed"]["output_0"] > 0, summary
    run_pipeline(shipped("grayscale"), {"input_0": clip}, {"output_0": str(ivf)}, RunConfig(workers=0), frames_per_chunk=3)
    p = subprocess.run(["ffmpeg", "-nostdin", "-v", "warning", "-i", str(mpd), "-f", "framemd5", "-"],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    q = subprocess.run(["ffmpeg", "-nostdin", "-v", "warning", "-i", str(ivf), "-f", "framemd5", "-"],
                       capture_output=True, text=True, timeout=120)
    md5 = lambda out: [line.split(",")[-1] for line in out.splitlines() if line and not line.startswith("#")]  # noqa: E731
    assert p.returncode == 0 and p.stderr == "", p.stderr
    assert md5(p.stdout) == md5(q.stdout) and len(md5(p.stdout)) == 15
    assert "type=\"static\"" in mpd.read_text()


@pytest.mark.parametrize("photo", ["no_face", "unreadable"])
def test_find_person_bad_reference_photo_is_one_line_and_writes_nothing(photo, tmp_path):
    """A photo with no face in it (found by the workers: their retries and the coordinator's log
    stay off the terminal), or a file that is no image: one line naming it, exit 1, no output."""
    from PIL import Image

    path = tmp_path / "person.png"
    if photo == "no_face":   # a picture of a park: no face anywhere
        first = read_y4m(CLIPS_DIR / "park_joy_90p_8_420.y4m")[1][0]
        Image.fromarray(first.y).save(path)
    else:
        path.write_bytes(b"not an image at all")
    out = tmp_path / "found.webm"
    p = subprocess.run([__import__("sys").executable, "-m", "excamera", "pipeline", "run",
                        str(PIPELINES / "find_person.json"), "-i", f"input_0={FOOTAGE}", "-i", f"input_1={path}",
                        "-o", f"output_0={out}", "--workers", "2" if photo == "no_face" else "0",
                        "--frames-per-chunk", "8"],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 1 and len(lines) == 1 and lines[0].startswith("excamera: error:"), p.stderr
    assert ("no face" in lines[0]) if photo == "no_face" else ("input_1" in lines[0]), lines[0]
    assert not out.exists() and sorted(x.name for x in tmp_path.iterdir()) == ["person.png"]
