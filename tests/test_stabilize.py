"""Video stabilisation (pipeline/stages/stabilize.py, pipelines/stabilize.json): a textured
picture shaken by a known random jitter is found to move by exactly that jitter, and comes out of
the pipeline much steadier, frame for frame, the same bytes on any number of workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import cv2  # the vision extra, part of the test install
import numpy as np
import pytest

from codec.image import Image
from codec.y4m import Y4mWriter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = os.path.join(ROOT, "pipelines", "stabilize.json")
W, H, MARGIN, N = 176, 144, 12, 36


def shaky_clip(path, seed=7):
    """A random texture seen through a window that jumps by an even random shift (-6..6 px on
    each axis) every frame: the picture's content moves by minus the window's move. Returns the
    window offsets (N x 2, x then y)."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (H + 2 * MARGIN, W + 2 * MARGIN)).astype(np.float32)
    canvas = cv2.GaussianBlur(noise, (0, 0), 1.5)
    canvas = np.clip((canvas - canvas.mean()) * 3 + 128, 0, 255).astype(np.uint8)
    chroma = cv2.resize(canvas, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    shifts = rng.integers(-3, 4, (N, 2)) * 2                      # even: chroma moves whole pixels
    w = Y4mWriter(path, rate=(24, 1))
    for sx, sy in shifts:
        x, y = MARGIN + sx, MARGIN + sy
        u = chroma[y // 2:y // 2 + H // 2, x // 2:x // 2 + W // 2]
        w.write(Image(canvas[y:y + H, x:x + W].copy(), u.copy(), (255 - u).copy()))
    w.close()
    return shifts


def pictures(path):
    from media.video import open_video
    with open_video(path) as v:
        return list(v)


def steps(images):
    """The shift from each picture to the next (phase correlation of the middle, away from the
    borders the stabiliser uncovers), in pixels."""
    out = []
    for a, b in zip(images, images[1:]):
        (dx, dy), _ = cv2.phaseCorrelate(*(im.y[24:-24, 24:-24].astype(np.float64) for im in (a, b)))
        out.append(np.hypot(dx, dy))
    return np.array(out)


def excamera(*args):
    return subprocess.run([sys.executable, "-m", "excamera", *args], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)


def test_detect_finds_the_jitter_and_aggregate_undoes_it(tmp_path):
    from pipeline.stage import StageContext, get_stage
    from pipeline.values import FrameBatch
    clip = str(tmp_path / "shaky.y4m")
    shifts = shaky_clip(clip)
    batch = FrameBatch.from_images(pictures(clip), 0, (24, 1))
    ctx = StageContext("t", "t", 0)
    # Two tasks, the second given the first's last frame: frame 12's motion is found too.
    first, second = batch.slice(0, 12), batch.slice(12, N)
    det = get_stage("vidstabdetect").fn
    a = det(ctx, {"frames": [first]}, {"features": 200})
    b = det(ctx, {"frames": [second], "previous": [first.slice(11, 12)]}, {"features": 200})
    assert [f.start for f in a["frames"] + b["frames"]] == [0, 12]      # pictures passed on
    motions = a["motions"][0].records + b["motions"][0].records
    assert [m["frame"] for m in motions] == list(range(N))
    found = np.array([[m["dx"], m["dy"]] for m in motions])
    want = -np.diff(shifts, axis=0, prepend=shifts[:1])                 # content moves against the window
    assert np.abs(found - want).max() < 0.25
    assert max(abs(m["da"]) for m in motions) < 0.002
    # Without the frame before, a task's first frame has no motion.
    alone = det(ctx, {"frames": [second]}, {"features": 200})["motions"][0].records
    assert alone[0] == {"frame": 12, "dx": 0.0, "dy": 0.0, "da": 0.0}

    agg = get_stage("vidstabaggregate").fn
    (tr,) = agg(ctx, {"motions": [b["motions"][0], a["motions"][0]]}, {"smoothing": 0})["transforms"]
    assert (tr.start, tr.count) == (0, N)
    corr = np.array([[r["dx"], r["dy"]] for r in tr.records])
    # smoothing 0 holds the camera at frame 0: the correction is the window's offset from it
    assert np.abs(corr - (shifts - shifts[0])).max() < 1.0
    (tr10,) = agg(ctx, {"motions": [a["motions"][0], b["motions"][0]]}, {"smoothing": 10})["transforms"]
    out = get_stage("vidstabtransform").fn(ctx, {"frames": [batch], "transforms": [tr10]},
                                           {"zoom": 0.0, "border": "black"})["frames"]
    assert steps(out[0].images()).mean() < 0.2 * steps(batch.images()).mean()


def test_stabilize_pipeline_steadies_a_shaky_clip_the_same_on_any_workers(tmp_path):
    clip = str(tmp_path / "shaky.y4m")
    shaky_clip(clip)
    outs = []
    for workers in ("0", "2"):
        out = tmp_path / f"steady{workers}.webm"
        r = excamera("pipeline", "run", SPEC, "-i", clip, "-o", str(out), "--workers", workers,
                     "--frames-per-chunk", "12")
        assert r.returncode == 0, r.stderr
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    before, after = pictures(clip), pictures(str(tmp_path / "steady0.webm"))
    assert len(after) == len(before) == N
    ratio = steps(after).mean() / steps(before).mean()
    assert ratio < 0.2, ratio


def test_bad_options_and_missing_transforms_are_one_line(tmp_path):
    from pipeline.stage import StageContext, get_stage
    from pipeline.stages.stabilize import StabilizeError
    from pipeline.values import FrameBatch, Records
    batch = FrameBatch.from_images(pictures(os.path.join(ROOT, "tests", "data", "clips",
                                                         "foreman_qcif_176x144_10f.y4m")), 0, (30, 1))
    ctx = StageContext("t", "t", 0)
    partial = Records([{"frame": 0, "dx": 0, "dy": 0, "da": 0}], 0, 1)
    with pytest.raises(StabilizeError, match="no transform for frame 1"):
        get_stage("vidstabtransform").fn(ctx, {"frames": [batch], "transforms": [partial]},
                                         {"zoom": 0.0, "border": "black"})
    with pytest.raises(StabilizeError, match="smoothing is -1"):
        get_stage("vidstabaggregate").fn(ctx, {"motions": [partial]}, {"smoothing": -1})
    spec = json.loads(open(SPEC).read())
    spec["nodes"][2]["config"]["smoothing"] = -1
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(spec))
    out = tmp_path / "x.webm"
    r = excamera("pipeline", "run", str(bad), "-i", str(os.path.join(ROOT, "tests", "data", "clips",
                 "foreman_qcif_176x144_10f.y4m")), "-o", str(out), "--workers", "0")
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "smoothing is -1" in r.stderr and not out.exists()
