"""The vision stages (pipeline.stages.vision) on real footage: tests/data/vision/scenes.mp4 is seven
hard-cut scenes of 8 frames at 352x288 (tests/data/SOURCES.md): foreman, bus, carphone, foreman
again, the Cisco call (two people), Zhling, a Kodak still. person.png is foreman frame 13, which is
not in the video. These tests need the vision extra and fail (never skip) without it."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from media.video import open_video
from pipeline.stage import get_stage
from pipeline.stages import vision as V
from pipeline.values import FrameBatch, Records

DATA = Path(__file__).resolve().parent / "data"
ROOT = Path(__file__).resolve().parent.parent
VIDEO = DATA / "vision" / "scenes.mp4"
PERSON = DATA / "vision" / "person.png"

#: (first, last, who) of each scene; faces on each.
SCENES = [(0, 7, "foreman"), (8, 15, "bus"), (16, 23, "carphone"), (24, 31, "foreman"),
          (32, 39, "cisco"), (40, 47, "zhling"), (48, 55, "kodim")]
FACES = {"foreman": 1, "bus": 0, "carphone": 1, "cisco": 2, "zhling": 1, "kodim": 0}
CUTS = [8, 16, 24, 32, 40, 48]
#: The tolerance find_person.json uses (the default, 0.6, also matches the carphone look-alike).
FIND_TOLERANCE = 0.53


def config(stage_name, **over):
    d = get_stage(stage_name)
    cfg = {k: o.default for k, o in d.options.items()}
    cfg.update(over)
    return cfg


def run(stage_name, inputs, **over):
    return get_stage(stage_name).fn(None, inputs, config(stage_name, **over))


@pytest.fixture(scope="module")
def video():
    with open_video(VIDEO) as r:
        images, rate = list(r), r.rate
    assert (len(images), images[0].width, images[0].height) == (56, 352, 288)
    return FrameBatch.from_images(images, 0, rate)


@pytest.fixture(scope="module")
def person():
    return V.read_photo(str(PERSON))


def scene_of(n):
    return next(who for a, b, who in SCENES if a <= n <= b)


def group_scenes(batches):
    """What serialized_scenes does: the pictures in order, cut before each flagged frame."""
    pictures = [(b.start + i, b, i) for b in sorted(batches, key=lambda b: b.start) for i in range(b.count)]
    cuts = {c for b in batches for c in b.meta.get("scene_cuts", ())}
    groups, cur = [], []
    for n, b, i in pictures:
        if cur and n in cuts:
            groups.append(cur)
            cur = []
        cur.append(b.slice(i, i + 1))
    groups.append(cur)
    return [FrameBatch(*(np.concatenate([getattr(p, c) for p in g]) for c in "yuv"), g[0].start, g[0].fps)
            for g in groups]


# -- the extra --------------------------------------------------------------------------------------

def test_import_needs_no_vision_library_and_running_without_it_is_one_line():
    code = (
        "import sys\n"
        "for m in ('cv2', 'dlib', 'scenedetect', 'face_recognition_models'): sys.modules[m] = None\n"
        "from pipeline.stage import get_stage\n"
        "from pipeline.values import FrameBatch\n"
        "import numpy as np\n"
        "d = get_stage('scene_change')\n"
        "b = FrameBatch(np.zeros((2, 4, 4), np.uint8), np.zeros((2, 2, 2), np.uint8), np.zeros((2, 2, 2), np.uint8))\n"
        "try:\n"
        "    d.fn(None, {'frames': [b]}, {'detector': 'content', 'threshold': 0.0, 'window': 2, 'luma_only': False})\n"
        "except ImportError as e:\n"
        "    print('ERR', e)\n")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    line = p.stdout.strip()
    assert line.startswith("ERR ") and "\n" not in line
    assert "pip install 'excamera[vision]'" in line


def test_registered_with_ports_and_aliases():
    assert get_stage("matchFace").name == "reference_face"
    sc = get_stage("scene_change")
    assert sc.optional_inputs == ("previous",) and sc.inputs["previous"] == "frame"
    assert get_stage("face_match").options["tolerance"].default == 0.6
    assert get_stage("select").outputs["scenes"] == "scene_list"
    assert all(get_stage(n).extra == "vision" for n in
               ("scene_change", "face_detect", "face_match", "draw", "select", "reference_face"))


# -- scene_change -----------------------------------------------------------------------------------

def test_scene_change_finds_exactly_the_hard_cuts(video):
    out = run("scene_change", {"frames": [video]})
    (frames,), (recs,) = out["frames"], out["records"]
    assert frames.meta["scene_cuts"] == CUTS
    assert np.array_equal(frames.y, video.y) and frames.start == 0
    assert [r["frame"] for r in recs.records] == list(range(56))
    assert [r["frame"] for r in recs.records if r["cut"]] == CUTS
    assert recs.records[0]["score"] is None                  # nothing before frame 0
    cut_scores = [recs.records[c]["score"] for c in CUTS]
    other = [r["score"] for r in recs.records[1:] if not r["cut"]]
    assert min(cut_scores) > V.CONTENT_THRESHOLD > max(other)


@pytest.mark.parametrize("detector", ["content", "adaptive"])
@pytest.mark.parametrize("size", [56, 8, 5])
def test_scene_change_across_chunks_with_the_previous_frame(video, detector, size):
    # With size 8 every cut is on a chunk's first frame; with 5, cuts 40 is, the others are inside.
    cuts, records = [], []
    for a in range(0, 56, size):
        chunk = video.slice(a, min(a + size, 56))
        prev = [video.slice(a - 1, a)] if a else []
        out = run("scene_change", {"frames": [chunk], "previous": prev}, detector=detector)
        cuts += out["frames"][0].meta["scene_cuts"]
        records += out["records"][0].records
        assert out["records"][0].start == a and out["records"][0].count == chunk.count
    assert cuts == CUTS
    assert all(r["score"] is not None for r in records[1:])


def test_scene_change_without_the_previous_frame_cannot_see_a_cut_on_the_first(video):
    out = run("scene_change", {"frames": [video.slice(16, 24)]})
    first = out["records"][0].records[0]
    assert first == {"frame": 16, "cut": False, "score": None}
    assert out["frames"][0].meta["scene_cuts"] == []
    out = run("scene_change", {"frames": [video.slice(16, 24)], "previous": [video.slice(15, 16)]})
    assert out["frames"][0].meta["scene_cuts"] == [16]


def test_scene_change_several_batches_in_one_task_and_a_gap(video):
    out = run("scene_change", {"frames": [video.slice(20, 30), video.slice(10, 20), video.slice(44, 50)]})
    assert [b.start for b in out["frames"]] == [10, 20, 44]
    assert [b.meta["scene_cuts"] for b in out["frames"]] == [[16], [24], [48]]
    assert out["records"][2].records[0]["score"] is None   # 44 follows a gap: no predecessor


def test_scene_change_bad_input(video):
    with pytest.raises(V.VisionError, match="previous frame 9 is not just before frame 16"):
        run("scene_change", {"frames": [video.slice(16, 24)], "previous": [video.slice(9, 10)]})
    with pytest.raises(V.VisionError, match="window 0"):
        run("scene_change", {"frames": [video]}, detector="adaptive", window=0)


# -- faces ------------------------------------------------------------------------------------------

def test_face_detect_finds_faces_in_the_face_clips_and_none_in_bus_or_kodim(video):
    probe = [a + k for a, _, _ in SCENES for k in (0, 5)]
    batches = [video.slice(n, n + 1) for n in probe]
    out = run("face_detect", {"frames": batches})["records"]
    assert [r.start for r in out] == probe
    for r in out:
        (rec,) = r.records
        who = scene_of(rec["frame"])
        assert len(rec["boxes"]) == FACES[who], (rec, who)
        for x, y, w, h in rec["boxes"]:
            assert 0 <= x and 0 <= y and x + w <= 352 and y + h <= 288 and w >= 40 and h >= 40


def halve(p):
    """A picture plane at half size (2x2 means)."""
    h, w = p.shape[1] // 2 * 2, p.shape[2] // 2 * 2
    q = p[:, :h, :w].astype(np.uint16)
    return ((q[:, 0::2, 0::2] + q[:, 1::2, 0::2] + q[:, 0::2, 1::2] + q[:, 1::2, 1::2] + 2) // 4).astype(np.uint8)


def test_face_detect_upsamples_small_pictures():
    with open_video(DATA / "clips" / "foreman_qcif_176x144_10f.y4m") as r:
        qcif = FrameBatch.from_images(list(r)[:3], 0, r.rate)
    tiny = FrameBatch(halve(qcif.y), halve(qcif.u), halve(qcif.v), 0, qcif.fps)   # 88x72
    for batch in (qcif, tiny):
        recs = run("face_detect", {"frames": [batch]})["records"][0].records
        assert [len(r["boxes"]) for r in recs] == [1, 1, 1], batch.width
    # Without doubling, the HOG detector misses faces of about 35 pixels.
    assert [r["boxes"] for r in run("face_detect", {"frames": [tiny]}, upsample=0)["records"][0].records] == [[]] * 3
    assert [V._upsample({"upsample": -1}, h) for h in (72, 144, 288, 480, 720)] == [3, 2, 1, 0, 0]


def test_face_match_at_the_default_tolerance(video, person):
    """Foreman matches, the Cisco pair and Zhling do not; the carphone man, a look-alike at this
    resolution, also matches at dlib's 0.6 (README): the distances say how far apart they are."""
    probe = [a + k for a, _, who in SCENES if FACES[who] for k in (0, 3, 7)]
    dist = {}
    for n in probe:
        (rec,) = run("face_match", {"frames": [video.slice(n, n + 1)], "person": [person]})["records"][0].records
        who = scene_of(n)
        assert len(rec["boxes"]) == FACES[who] == len(rec["distances"]) == len(rec["matches"])
        assert rec["matches"] == [d <= 0.6 for d in rec["distances"]] and rec["match"] == any(rec["matches"])
        dist.setdefault(who, []).extend(rec["distances"])
    assert max(dist["foreman"]) < 0.5                     # the person: every frame a match
    assert 0.55 < min(dist["carphone"]) < 0.6             # the look-alike: a match at 0.6 ...
    assert min(dist["carphone"]) > FIND_TOLERANCE          # ... but not at find_person's 0.53
    assert min(dist["cisco"] + dist["zhling"]) > 0.75      # others: far


def test_find_person_keeps_exactly_the_scenes_of_the_person(video, person):
    # decode gave chunks of 10 frames (cut 40 falls on a chunk's first frame) -> scene_change with
    # the previous frame -> serialized_scenes -> face_match -> select whole scenes -> draw.
    marked = []
    for a in range(0, 56, 10):
        prev = [video.slice(a - 1, a)] if a else []
        marked += run("scene_change", {"frames": [video.slice(a, min(a + 10, 56))], "previous": prev})["frames"]
    scenes = group_scenes(marked)
    assert [(s.start, s.start + s.count - 1) for s in scenes] == [(a, b) for a, b, _ in SCENES]
    kept, listed, distances = [], [], {}
    for s in scenes:
        m = run("face_match", {"frames": [s], "person": [person]}, tolerance=FIND_TOLERANCE)
        (recs,) = m["records"]
        distances[scene_of(s.start)] = [d for r in recs.records for d in r["distances"]]
        sel = run("select", {"frames": m["frames"], "records": m["records"]}, whole_scenes=True)
        listed += [r for v in sel["scenes"] for r in v.records]
        if sel["frames"]:
            drawn = run("draw", {"frames": sel["frames"], "records": sel["records"]})["frames"]
            assert sum(b.count for b in drawn) == s.count
            assert not np.array_equal(drawn[0].y, s.y)
            kept.append((drawn[0].start, drawn[-1].start + drawn[-1].count - 1))
    assert kept == [(0, 7), (24, 31)]
    assert [(r["first_frame"], r["last_frame"]) for r in listed] == kept
    assert listed[1]["start_time"] == 0.8 and listed[1]["end_time"] == pytest.approx(32 / 30, abs=1e-6)
    print("\nfind_person distances:", {k: (min(v), max(v)) if v else () for k, v in distances.items()})


def test_reference_photo_must_show_exactly_one_face(video, tmp_path):
    bus, cisco = video.slice(8, 9), video.slice(32, 33)
    for stage_name, port in (("face_match", "person"), ("reference_face", "image")):
        inputs = {"frames": [video.slice(0, 1)]} if stage_name == "face_match" else {}
        with pytest.raises(V.VisionError, match="^reference photo has no face$"):
            run(stage_name, {**inputs, port: [bus]})
        with pytest.raises(V.VisionError, match="^reference photo has 2 faces"):
            run(stage_name, {**inputs, port: [cisco]})
    bad = tmp_path / "person.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(V.VisionError, match=f"^cannot read photo {bad}: ") as e:
        V.read_photo(str(bad))
    assert "\n" not in str(e.value)
    with pytest.raises(V.VisionError, match="cannot read photo"):
        V.read_photo(str(tmp_path / "missing.png"))


def test_models_and_the_reference_embedding_are_loaded_once_per_process(person):
    m = V._models()
    assert V._models() is m and m["encoder"] is V._models()["encoder"]
    cfg = config("face_match")
    assert V._reference(person, cfg) is V._reference(V.read_photo(str(PERSON)), cfg)


def test_reference_face_passes_the_photo_on(person):
    (out,) = run("matchFace", {"image": [person]})["person"]
    assert np.array_equal(out.y, person.y) and out.count == 1
    x, y, w, h = out.meta["face_box"]
    assert 80 < x < 200 and 40 < y < 160 and w > 80 and h > 80


def test_read_photo_round_trips_colour(tmp_path):
    from PIL import Image as PILImage

    rgb = np.zeros((31, 45, 3), np.uint8)
    rgb[:, :20] = (200, 30, 40)
    PILImage.fromarray(rgb).save(tmp_path / "p.png")
    b = V.read_photo(str(tmp_path / "p.png"))
    assert (b.count, b.height, b.width, b.u.shape) == (1, 31, 45, (1, 16, 23))
    back = V._color(b, 0, "RGB")
    assert np.abs(back.astype(int) - rgb).max() <= 12


# -- draw -------------------------------------------------------------------------------------------

def gray(n=2, h=64, w=80, start=10):
    return FrameBatch(np.full((n, h, w), 128, np.uint8), np.full((n, h // 2, w // 2), 128, np.uint8),
                      np.full((n, h // 2, w // 2), 128, np.uint8), start, (30, 1))


def test_draw_changes_only_the_box_outlines_and_is_deterministic():
    frames = gray()
    boxes = [[10, 8, 30, 24], [50, 30, 40, 40]]               # the second runs off the picture
    recs = Records([{"frame": 10, "boxes": boxes, "distances": [0.41, 0.9], "matches": [True, False]}], 10, 2)
    a = run("draw", {"frames": [frames], "records": [recs]}, labels=False)["frames"][0]
    b = run("draw", {"frames": [frames], "records": [recs]}, labels=False)["frames"][0]
    assert all(np.array_equal(getattr(a, p), getattr(b, p)) for p in "yuv")
    assert np.array_equal(a.y[1], frames.y[1])                   # frame 11 has no record
    outline = np.zeros((64, 80), bool)
    for x, y, w, h in boxes:
        outline[y:y + h, x:x + w] = True
        outline[y + 2:y + h - 2, x + 2:x + w - 2] = False
    changed = a.y[0] != 128
    assert np.array_equal(changed, outline)
    assert (a.y[0][8, 10], a.u[0][4, 5], a.v[0][4, 5]) == V.COLORS[True]
    assert (a.y[0][30, 50], a.u[0][15, 25], a.v[0][15, 25]) == V.COLORS[False]
    assert not ((a.u[0] != 128) & ~outline[::2, ::2]).any()
    # Labels: inside the boxes only, and deterministic too.
    c = run("draw", {"frames": [frames], "records": [recs]})["frames"][0]
    inside = np.zeros((64, 80), bool)
    for x, y, w, h in boxes:
        inside[y:y + h, x:x + w] = True
    assert ((c.y[0] != 128) & ~inside).sum() == 0 and (c.y[0] != a.y[0]).any()
    assert np.array_equal(c.y, run("draw", {"frames": [frames], "records": [recs]})["frames"][0].y)
    assert np.array_equal(frames.y, np.full((2, 64, 80), 128, np.uint8))   # input untouched


def test_draw_a_face_without_verdict_is_yellow():
    recs = Records([{"frame": 10, "boxes": [[4, 4, 20, 20]]}], 10, 1)
    out = run("draw", {"frames": [gray(1)], "records": [recs]})["frames"][0]
    assert (out.y[0][4, 4], out.u[0][2, 2], out.v[0][2, 2]) == V.COLORS[None]


# -- select -----------------------------------------------------------------------------------------

def face_records(flags, start=10):
    """flags: per frame, None (no face) or a bool (one face, matched or not)."""
    return Records([{"frame": start + i, "boxes": [] if f is None else [[1, 1, 8, 8]],
                     "matches": [] if f is None else [f], "match": bool(f)} for i, f in enumerate(flags)],
                   start, len(flags))


def test_select_frames_by_condition():
    frames = gray(6)
    frames.y[:] = np.arange(6, dtype=np.uint8)[:, None, None]
    recs = face_records([None, True, True, False, None, True])
    out = run("select", {"frames": [frames], "records": [recs]})
    assert [(b.start, b.count) for b in out["frames"]] == [(11, 2), (15, 1)]
    assert out["frames"][0].y[:, 0, 0].tolist() == [1, 2]
    assert [[r["frame"] for r in v.records] for v in out["records"]] == [[11, 12], [15]]
    assert [(r["first_frame"], r["last_frame"], r["start_time"]) for r in out["scenes"][0].records] == \
        [(11, 12, round(11 / 30, 6)), (15, 15, 0.5)]
    faces = run("select", {"frames": [frames], "records": [recs]}, condition="any_face")["frames"]
    assert [(b.start, b.count) for b in faces] == [(11, 3), (15, 1)]
    none = run("select", {"frames": [frames], "records": [recs]}, condition="no_face")["frames"]
    assert [(b.start, b.count) for b in none] == [(10, 1), (14, 1)]


def test_select_whole_scenes_keeps_or_drops_the_whole_task():
    frames = gray(4)
    frames.meta["scene_cuts"] = [10]
    kept = run("select", {"frames": [frames], "records": [face_records([None, False, True, None])]},
               whole_scenes=True)
    assert [(b.start, b.count) for b in kept["frames"]] == [(10, 4)]
    assert kept["frames"][0].meta["scene_cuts"] == [10]
    assert [(r["first_frame"], r["last_frame"], r["end_time"]) for r in kept["scenes"][0].records] == \
        [(10, 13, round(14 / 30, 6))]
    # A scene split over two batches is still listed once.
    two = run("select", {"frames": [frames.slice(2, 4), frames.slice(0, 2)],
                         "records": [face_records([None, False, True, None])]}, whole_scenes=True)
    assert [(b.start, b.count) for b in two["frames"]] == [(10, 2), (12, 2)]
    assert [(r["first_frame"], r["last_frame"]) for r in two["scenes"][0].records] == [(10, 13)]
    dropped = run("select", {"frames": [frames], "records": [face_records([None, False, False, None])]},
                  whole_scenes=True)
    assert dropped == {"frames": [], "records": [], "scenes": []}


def test_select_needs_a_record_for_every_frame():
    with pytest.raises(V.VisionError, match="^select: no record for frame 13$"):
        run("select", {"frames": [gray(4)], "records": [face_records([True, True, True])]})


# -- the shipped pipespec ---------------------------------------------------------------------------

def test_find_person_pipespec_connects_the_vision_stages():
    spec = json.loads((ROOT / "pipelines" / "find_person.json").read_text())
    nodes = {n["name"]: n for n in spec["nodes"]}
    streams = {(s["src"], s["dst"]): s.get("durable", False) for s in spec["streams"]}
    assert streams[("input_1:frame", "face_match:person")] is True
    assert nodes["face_match"]["delivery_function"] == "serialized_scenes"
    assert nodes["select"]["config"] == {"condition": "any_match", "whole_scenes": True}
    assert nodes["face_match"]["config"]["tolerance"] == FIND_TOLERANCE
    for (src, dst) in streams:
        for end, side in ((src, "outputs"), (dst, "inputs")):
            node, port = end.split(":")
            if node in nodes and nodes[node]["stage"] not in ("decode", "encode"):
                d = get_stage(nodes[node]["stage"])
                assert port in getattr(d, side), end
                for k in nodes[node].get("config", {}):
                    assert k in d.options, (node, k)
    order = ["input_0", "decode", "scene_change", "face_match", "select", "draw", "encode", "output_0"]
    for a, b in zip(order, order[1:]):
        assert any(s.split(":")[0] == a and d.split(":")[0] == b for s, d in streams), (a, b)
