"""Video stabilisation under Sprocket's stage names, in three steps (docs/design/pipelines.md):

=================== ============================== ============================================
stage               ports                          what it does (in parallel?)
=================== ============================== ============================================
``vidstabdetect``   ``frames`` (+ ``previous``) -> the camera's motion from each frame to the
                    ``frames``, ``motions``        next (per chunk, in parallel); the pictures
                                                   pass through unchanged
``vidstabaggregate`` ``motions`` -> ``transforms`` the whole path summed and smoothed, and
                                                   each frame's correction (one task, ``all``)
``vidstabtransform`` ``frames``, ``transforms``    each frame moved by its correction (per
                    (durable) -> ``frames``        chunk, in parallel)
=================== ============================== ============================================

FFmpeg's own pair of filters (``vidstabdetect``/``vidstabtransform``, libvidstab) is not in
PyAV's FFmpeg build (``av.filter.filters_available`` lacks it), so the motion is found with
OpenCV: corners (``goodFeaturesToTrack``) of one frame followed into the next by pyramidal
Lucas-Kanade optical flow, and a similarity transform (rotation, scale, shift) fitted to the
pairs with RANSAC (``estimateAffinePartial2D``). A motion is kept as the shift of the picture's
centre and the rotation about it (``dx``, ``dy``, ``da``), so the three can be summed along the
video. The aggregate step sums them into the camera's path, smooths it with a moving average of
``2 * smoothing + 1`` frames (libvidstab's ``smoothing``; the window is cut short at the ends;
0 holds the camera still at the first frame's pose), and gives each frame the correction that
takes it from the path to the smoothed one. The transform step warps each plane by its
correction (bilinear; ``zoom`` percent in to hide the borders; ``border`` black or the edge
pixels repeated).

Every step depends on its inputs only (OpenCV's RANSAC seeds itself the same way each call), so
a re-run, or any number of workers, gives the same bytes. The first frame of a chunk is compared
with the chunk before's last (the ``with_previous`` delivery); the video's first frame has no
motion.
"""

from __future__ import annotations

import math

import numpy as np

from foundation.errors import ExcameraError
from pipeline.stage import Option, stage
from pipeline.values import FrameBatch, Records


class StabilizeError(ExcameraError):
    """Motions or transforms that do not fit the frames they are for."""


def _cv2():
    from pipeline.stages.vision import _import     # one line naming the vision extra when absent
    return _import("cv2")


# -- detect ----------------------------------------------------------------------------------------

def motion(prev: np.ndarray, cur: np.ndarray, features: int) -> tuple[float, float, float]:
    """The camera's motion from luma picture ``prev`` to ``cur``: (dx, dy, da), the shift of the
    picture's centre in pixels and the rotation about it in radians; zeros when too few points
    can be followed (a flat or blank picture)."""
    cv2 = _cv2()
    h, w = prev.shape
    pts = cv2.goodFeaturesToTrack(prev, maxCorners=features, qualityLevel=0.01, minDistance=max(3, min(h, w) // 40),
                                  blockSize=3)
    if pts is None or len(pts) < 6:
        return 0.0, 0.0, 0.0
    nxt, status, _ = cv2.calcOpticalFlowPyrLK(prev, cur, pts, None, winSize=(21, 21), maxLevel=3)
    ok = status.reshape(-1) == 1
    if ok.sum() < 6:
        return 0.0, 0.0, 0.0
    m, _ = cv2.estimateAffinePartial2D(pts[ok], nxt[ok], method=cv2.RANSAC, ransacReprojThreshold=2.0)
    if m is None:
        return 0.0, 0.0, 0.0
    c = np.array([(w - 1) / 2, (h - 1) / 2])
    moved = m[:, :2] @ c + m[:, 2] - c
    return float(moved[0]), float(moved[1]), float(math.atan2(m[1, 0], m[0, 0]))


@stage("vidstabdetect", inputs={"frames": "frames", "previous": "frame"}, delivery="with_previous",
       outputs={"frames": "frames", "motions": "records"}, optional_inputs=("previous",), extra="vision",
       options={"features": Option(int, 200, "corners followed from each frame to the next")})
def vidstabdetect(ctx, inputs, config):
    """Each frame's motion from the frame before (records ``{frame, dx, dy, da}``; the first
    frame of the video, or of a batch with no frame before it, has none), the pictures passed on."""
    if not 8 <= config["features"] <= 5000:
        raise StabilizeError(f"vidstabdetect: features is {config['features']}; it must be in 8..5000")
    prev = inputs.get("previous") or []
    last = prev[-1].y[-1] if prev else None
    last_n = prev[-1].start + prev[-1].count - 1 if prev else None
    records = []
    frames = sorted(inputs["frames"], key=lambda b: b.start)
    for b in frames:
        for i in range(b.count):
            n = b.start + i
            dx = dy = da = 0.0
            if last is not None and last_n == n - 1 and last.shape == b.y[i].shape:
                dx, dy, da = motion(last, b.y[i], config["features"])
            records.append({"frame": n, "dx": dx, "dy": dy, "da": da})
            last, last_n = b.y[i], n
    start = frames[0].start if frames else 0
    out = Records(records, start, len(records), frames[0].fps if frames else (30, 1))
    return {"frames": frames, "motions": [out]}


# -- aggregate -------------------------------------------------------------------------------------

def smooth(path: np.ndarray, radius: int) -> np.ndarray:
    """The moving average of ``path`` (frames x values) over ``2 * radius + 1`` frames, the window
    cut short at the ends; radius 0: every frame at the first frame's value (a still camera)."""
    if radius == 0:
        return np.repeat(path[:1], len(path), axis=0)
    sums = np.concatenate([np.zeros((1, path.shape[1])), np.cumsum(path, axis=0)])
    k = np.arange(len(path))
    lo, hi = np.maximum(k - radius, 0), np.minimum(k + radius + 1, len(path))
    return (sums[hi] - sums[lo]) / (hi - lo)[:, None]


@stage("vidstabaggregate", inputs={"motions": "records"}, outputs={"transforms": "records"},
       delivery="all",
       options={"smoothing": Option(int, 10, "frames either side averaged into the camera's "
                                             "smoothed path (0: a still camera)")})
def vidstabaggregate(ctx, inputs, config):
    """All the motions -> each frame's correction (records ``{frame, dx, dy, da}``): the smoothed
    path minus the path. One task sees the whole video (the ``all`` delivery)."""
    r = config["smoothing"]
    if not 0 <= r <= 10000:
        raise StabilizeError(f"vidstabaggregate: smoothing is {r}; it must be in 0..10000")
    by_frame = {}
    for value in inputs["motions"]:
        for rec in value.records:
            by_frame[int(rec["frame"])] = (float(rec["dx"]), float(rec["dy"]), float(rec["da"]))
    if not by_frame:
        return {"transforms": []}
    frames = sorted(by_frame)
    path = np.cumsum(np.array([by_frame[n] for n in frames]), axis=0)
    corr = smooth(path, r) - path
    records = [{"frame": n, "dx": float(c[0]), "dy": float(c[1]), "da": float(c[2])}
               for n, c in zip(frames, corr)]
    fps = inputs["motions"][0].fps
    return {"transforms": [Records(records, frames[0], frames[-1] - frames[0] + 1, fps)]}


# -- transform -------------------------------------------------------------------------------------

def _matrix(dx: float, dy: float, da: float, w: int, h: int, zoom: float, scale: float) -> np.ndarray:
    """The 2x3 warp of a plane ``w`` x ``h`` whose pixels are ``scale`` luma pixels: rotation by
    ``da`` and zoom about the centre, then the shift (in luma pixels)."""
    c = np.array([(w - 1) / 2, (h - 1) / 2])
    s = 1 + zoom / 100
    rot = s * np.array([[math.cos(da), -math.sin(da)], [math.sin(da), math.cos(da)]])
    t = c - rot @ c + np.array([dx, dy]) / scale
    return np.hstack([rot, t[:, None]])


def warp(batch: FrameBatch, corrections: list[tuple[float, float, float]], zoom: float, border: str
         ) -> FrameBatch:
    """Each picture of ``batch`` moved by its correction (chroma at half the shift)."""
    cv2 = _cv2()
    mode = cv2.BORDER_CONSTANT if border == "black" else cv2.BORDER_REPLICATE
    planes = []
    for name, fill, scale in (("y", 16, 1), ("u", 128, 2), ("v", 128, 2)):
        src = getattr(batch, name)
        out = np.empty_like(src)
        h, w = src.shape[1:]
        for i, (dx, dy, da) in enumerate(corrections):
            m = _matrix(dx, dy, da, w, h, zoom, scale)
            out[i] = cv2.warpAffine(src[i], m, (w, h), flags=cv2.INTER_LINEAR, borderMode=mode, borderValue=fill)
        planes.append(out)
    return FrameBatch(*planes, batch.start, batch.fps, dict(batch.meta))


@stage("vidstabtransform", inputs={"frames": "frames", "transforms": "records"}, outputs={"frames": "frames"},
       extra="vision",
       options={"zoom": Option(float, 0.0, "percent to zoom in, hiding the borders the moves uncover"),
                "border": Option(str, "black", "what the moves uncover: black, or the edge pixels "
                                               "repeated", ("black", "edge"))})
def vidstabtransform(ctx, inputs, config):
    """Each picture moved by its frame's correction from ``vidstabaggregate`` (the ``transforms``
    port, fed durably: every task sees the whole list)."""
    if not -50 <= config["zoom"] <= 100:
        raise StabilizeError(f"vidstabtransform: zoom is {config['zoom']}; it must be in -50..100 (percent)")
    table = {}
    for value in inputs.get("transforms") or []:
        for rec in value.records:
            table[int(rec["frame"])] = (float(rec["dx"]), float(rec["dy"]), float(rec["da"]))
    out = []
    for b in sorted(inputs["frames"], key=lambda b: b.start):
        missing = [b.start + i for i in range(b.count) if b.start + i not in table]
        if missing:
            raise StabilizeError(f"vidstabtransform: no transform for frame {missing[0]} "
                                 f"(vidstabaggregate covered {len(table)} frame(s))")
        corr = [table[b.start + i] for i in range(b.count)]
        out.append(warp(b, corr, config["zoom"], config["border"]))
    return {"frames": out}
