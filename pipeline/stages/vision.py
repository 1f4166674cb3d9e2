"""The vision stages: scene cuts (PySceneDetect), faces found and recognised (dlib), boxes
drawn, frames or whole scenes selected by what was found.

============== ======================================= =======================================
stage          inputs                                  outputs
============== ======================================= =======================================
scene_change   ``frames``, ``previous`` (optional)     ``frames`` (``meta["scene_cuts"]``),
                                                       ``records`` ``{frame, cut, score}``
face_detect    ``frames``                              ``records`` ``{frame, boxes}``
face_match     ``frames``, ``person`` (durable photo)  ``frames``, ``records`` ``{frame, boxes,
                                                       distances, matches, match}``
draw           ``frames``, ``records``                 ``frames``
select         ``frames``, ``records``                 ``frames``, ``records``, ``scenes``
reference_face ``image`` (or ``person``: Sprocket's)   ``person`` (alias ``matchFace``)
============== ======================================= =======================================

Boxes are ``[x, y, w, h]`` in pixels of the picture. The libraries (``scenedetect``,
``opencv-python-headless``, ``dlib-bin``, ``face-recognition-models``) are the ``vision`` extra;
they are imported when a stage runs, never when this module is, and a missing one is a one-line
error naming the extra.

Across chunk boundaries, ``scene_change`` judges the first frame of its input against the picture
on its optional ``previous`` port: the last frame of the preceding frames (``previous.start +
previous.count == frames.start``). Without it, a batch's first frame (other than frame 0) gets
``"cut": false, "score": null``: no cut can be seen there.
"""

from __future__ import annotations

import hashlib
import os
from fractions import Fraction

import numpy as np

from foundation.errors import ExcameraError
from pipeline.stage import Option, stage
from pipeline.values import FrameBatch, Records

EXTRA = "vision"
#: The content score of a cut (and what adaptive detection falls back to at a run's edges).
#: PySceneDetect's own default, 27, leans on its minimum scene length (15 frames) to ignore fast
#: motion; a minimum length would chain every chunk to the one before, so we have none and a
#: higher threshold instead (a fast pan over detail, bus, scores 27-29; hard cuts 55-78).
CONTENT_THRESHOLD = 40.0
ADAPTIVE_THRESHOLD = 3.0


class VisionError(ExcameraError):
    """Bad input to a vision stage (one line)."""


class MissingExtra(VisionError, ImportError):
    """The vision libraries are not installed."""


def _import(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtra(f"the vision stages need {module.split('.')[0]} ({e}); "
                           f"install them with: pip install 'excamera[{EXTRA}]'") from None


# -- pictures ---------------------------------------------------------------------------------------

def _color(batch: FrameBatch, i: int, code: str) -> np.ndarray:
    """Frame ``i`` as an ``h x w x 3`` uint8 picture (``code``: "BGR" or "RGB"), BT.601."""
    cv2 = _import("cv2")
    y, u, v = batch.y[i], batch.u[i], batch.v[i]
    h, w = y.shape
    if h % 2 or w % 2:  # OpenCV wants even sizes: repeat the last row/column, crop after
        y = np.pad(y, ((0, h % 2), (0, w % 2)), mode="edge")
    hh, ww = y.shape
    i420 = np.concatenate([y.ravel(), u.ravel(), v.ravel()]).reshape(hh * 3 // 2, ww)
    conv = cv2.COLOR_YUV2BGR_I420 if code == "BGR" else cv2.COLOR_YUV2RGB_I420
    return np.ascontiguousarray(cv2.cvtColor(i420, conv)[:h, :w])


def read_photo(path: str) -> FrameBatch:
    """A still image file (PNG, JPEG, ...) as a one-picture I420 batch; one line when unreadable."""
    from PIL import Image as PILImage, UnidentifiedImageError

    cv2 = _import("cv2")
    try:
        with PILImage.open(path) as im:
            rgb = np.asarray(im.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise VisionError(f"cannot read photo {path}: {e}") from None
    h, w = rgb.shape[:2]
    even = np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    i420 = cv2.cvtColor(even, cv2.COLOR_RGB2YUV_I420)
    hh, ww = even.shape[:2]
    y = i420[:hh, :][:h, :w]
    chroma = i420[hh:].reshape(2, hh // 2, ww // 2)
    return FrameBatch(y[None].copy(), chroma[0][None].copy(), chroma[1][None].copy())


def _frames(values: list[FrameBatch]):
    """(frame number, batch, index) of every picture, in frame order."""
    for b in sorted(values, key=lambda b: b.start):
        for i in range(b.count):
            yield b.start + i, b, i


def _join(values: list[FrameBatch]) -> FrameBatch:
    """Contiguous batches as one (meta of the first; scene cuts of all)."""
    values = sorted(values, key=lambda b: b.start)
    for a, b in zip(values, values[1:]):
        if a.start + a.count != b.start:
            raise VisionError(f"frames {a.start}..{a.start + a.count - 1} and {b.start}.. are not contiguous")
    if len(values) == 1:
        return values[0]
    meta = dict(values[0].meta)
    cuts = [c for b in values for c in b.meta.get("scene_cuts", ())]
    if cuts:
        meta["scene_cuts"] = cuts
    return FrameBatch(*(np.concatenate([getattr(b, p) for b in values]) for p in "yuv"),
                      values[0].start, values[0].fps, meta)


# -- scene_change -----------------------------------------------------------------------------------

def _detector(kind: str, threshold: float, window: int, luma_only: bool):
    sd = _import("scenedetect")
    if kind == "adaptive":
        d = sd.AdaptiveDetector(adaptive_threshold=threshold or ADAPTIVE_THRESHOLD, min_scene_len=0,
                                window_width=window, luma_only=luma_only)
    else:
        d = sd.ContentDetector(threshold=threshold or CONTENT_THRESHOLD, min_scene_len=0,
                               luma_only=luma_only)
    d.stats_manager = sd.StatsManager()  # the per-frame scores, through the public metrics API
    return d


def _scene_run(kind, config, pictures, fps) -> dict[int, tuple[bool, float | None]]:
    """Judge a run of consecutive pictures [(number, batch, index)]: number -> (cut, score). The
    first picture is context only (its score needs a predecessor)."""
    FrameTimecode = _import("scenedetect").FrameTimecode
    d = _detector(kind, config["threshold"], config["window"], config["luma_only"])
    rate = Fraction(*fps)
    found, tcs = set(), {}
    for n, b, i in pictures:
        tcs[n] = FrameTimecode(n, fps=rate)
        found.update(tc.frame_num for tc in d.process_frame(tcs[n], _color(b, i, "BGR")))
    first, last = pictures[0][0], pictures[-1][0]
    out = {}
    for n in range(first + 1, last + 1):
        (score,) = d.stats_manager.get_metrics(tcs[n], [d.FRAME_SCORE_KEY])
        score = float(score)
        if kind == "adaptive":
            w = config["window"]
            # Judged by its window only when the window is all real scores inside this run;
            # nearer the run's edges, by the plain content threshold.
            judged = n - w > first and n + w <= last
            cut = n in found if judged else score >= CONTENT_THRESHOLD
        else:
            cut = n in found
        out[n] = (cut, round(score, 4))
    out[first] = (False, None)
    return out


@stage("scene_change", inputs={"frames": "frames", "previous": "frame"}, delivery="with_previous",
       outputs={"frames": "frames", "records": "records"}, optional_inputs=("previous",),
       options={
           "detector": Option(str, "content", "PySceneDetect's ContentDetector or AdaptiveDetector",
                              ("content", "adaptive")),
           "threshold": Option(float, 0.0, "cut threshold; 0 = the detector's default "
                                           "(40 content score, 3.0 adaptive ratio)"),
           "window": Option(int, 2, "adaptive: frames either side of the judged one (frames "
                                    "nearer a task's edges are judged by the content score, 40)"),
           "luma_only": Option(bool, False, "score brightness changes only"),
       }, extra=EXTRA, aliases=("scene_detect",))
def scene_change(ctx, inputs, config):
    """Scene cuts by PySceneDetect: per frame ``{frame, cut, score}``, and the same pictures
    with ``meta["scene_cuts"]`` (the frames that start a new scene). ``previous`` (optional):
    the picture just before the first frame, so a cut on a chunk's first frame is seen."""
    if config["window"] < 1:
        raise VisionError(f"scene_change: window {config['window']} must be at least 1")
    batches = sorted(inputs["frames"], key=lambda b: b.start)
    if not batches:
        return {"frames": [], "records": []}
    pictures = list(_frames(batches))
    prev = inputs.get("previous") or []
    if prev:
        p = prev[-1]
        if p.start + p.count != pictures[0][0]:
            raise VisionError(f"scene_change: previous frame {p.start + p.count - 1} is not just "
                              f"before frame {pictures[0][0]}")
        pictures.insert(0, (p.start + p.count - 1, p, p.count - 1))
    runs, run = [], [pictures[0]]
    for pic in pictures[1:]:
        if pic[0] != run[-1][0] + 1:  # a gap: judge each run on its own
            runs.append(run)
            run = []
        run.append(pic)
    runs.append(run)
    verdict = {}
    for r in runs:
        verdict.update(_scene_run(config["detector"], config, r, batches[0].fps))
    frames, records = [], []
    for b in batches:
        nums = range(b.start, b.start + b.count)
        cuts = [n for n in nums if verdict[n][0]]
        frames.append(FrameBatch(b.y, b.u, b.v, b.start, b.fps, {**b.meta, "scene_cuts": cuts}))
        records.append(Records([{"frame": n, "cut": verdict[n][0], "score": verdict[n][1]} for n in nums],
                               b.start, b.count, b.fps))
    return {"frames": frames, "records": records}


# -- faces ------------------------------------------------------------------------------------------

_MODELS: dict[str, object] = {}
_REFERENCES: dict[tuple, np.ndarray] = {}


def _model_dir() -> str:
    """Where ``face-recognition-models`` keeps dlib's model files. Found, not imported: that
    package's ``__init__`` needs ``pkg_resources``, which setuptools 81 and later no longer ship."""
    import importlib.util

    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtra("the vision stages need face-recognition-models (dlib's face models); "
                           "install them with: pip install 'excamera[vision]'")
    return os.path.join(list(spec.submodule_search_locations)[0], "models")


def _models():
    """dlib's HOG face detector, 5-point shape predictor and ResNet face encoder, loaded once per
    process (a worker runs many tasks)."""
    if not _MODELS:
        dlib = _import("dlib")
        models = _model_dir()
        _MODELS.update(detector=dlib.get_frontal_face_detector(),
                       shape=dlib.shape_predictor(os.path.join(models, "shape_predictor_5_face_landmarks.dat")),
                       encoder=dlib.face_recognition_model_v1(
                           os.path.join(models, "dlib_face_recognition_resnet_model_v1.dat")))
    return _MODELS


def _upsample(config, height: int) -> int:
    """The HOG detector finds faces of about 80 pixels and up: double small pictures (``auto``:
    until they are at least 400 lines high, so QCIF and CIF faces are found)."""
    up = config["upsample"]
    if up >= 0:
        return up
    up = 0
    while height << up < 400 and up < 3:
        up += 1
    return up


def _detect(rgb: np.ndarray, up: int):
    """dlib rectangles of the faces in ``rgb``, clipped to the picture, in a fixed order."""
    dlib = _import("dlib")
    h, w = rgb.shape[:2]
    out = []
    for r in _models()["detector"](rgb, up):
        x0, y0 = max(r.left(), 0), max(r.top(), 0)
        x1, y1 = min(r.right(), w - 1), min(r.bottom(), h - 1)
        if x1 > x0 and y1 > y0:
            out.append(dlib.rectangle(x0, y0, x1, y1))
    return sorted(out, key=lambda r: (r.left(), r.top(), r.right(), r.bottom()))


def _box(r) -> list[int]:
    return [r.left(), r.top(), r.width(), r.height()]


def _embedding(rgb: np.ndarray, rect) -> np.ndarray:
    m = _models()
    return np.array(m["encoder"].compute_face_descriptor(rgb, m["shape"](rgb, rect), 1))


def _one_face(photo: FrameBatch, config, what="reference photo"):
    """The one face on ``photo`` (its rgb picture and rectangle); one line if not exactly one."""
    if photo.count < 1:
        raise VisionError(f"{what} has no picture")
    rgb = _color(photo, 0, "RGB")
    faces = _detect(rgb, _upsample(config, photo.height))
    if not faces:
        raise VisionError(f"{what} has no face")
    if len(faces) > 1:
        raise VisionError(f"{what} has {len(faces)} faces (it must show exactly one person)")
    return rgb, faces[0]


def _reference(photo: FrameBatch, config) -> np.ndarray:
    """The reference face's 128-d embedding (cached per process by the photo's pixels)."""
    key = (hashlib.sha256(b"".join(np.ascontiguousarray(p[0]).tobytes() for p in (photo.y, photo.u, photo.v))
                          + repr(photo.y.shape).encode()).hexdigest(), config["upsample"])
    if key not in _REFERENCES:
        rgb, rect = _one_face(photo, config)
        _REFERENCES[key] = _embedding(rgb, rect)
    return _REFERENCES[key]


_UPSAMPLE = Option(int, -1, "times the HOG detector doubles the picture; -1 = auto (small pictures "
                            "until 400 lines high)")


@stage("face_detect", inputs={"frames": "frames"}, outputs={"records": "records"},
       options={"upsample": _UPSAMPLE}, extra=EXTRA)
def face_detect(ctx, inputs, config):
    """Faces by dlib's HOG frontal face detector: per frame ``{frame, boxes: [[x, y, w, h]]}``."""
    out = []
    for b in sorted(inputs["frames"], key=lambda b: b.start):
        up = _upsample(config, b.height)
        recs = [{"frame": b.start + i, "boxes": [_box(r) for r in _detect(_color(b, i, "RGB"), up)]}
                for i in range(b.count)]
        out.append(Records(recs, b.start, b.count, b.fps))
    return {"records": out}


@stage("face_match", inputs={"frames": "frames", "person": "frame"},
       outputs={"frames": "frames", "records": "records"},
       options={"tolerance": Option(float, 0.6, "a face matches when its embedding is at most this "
                                                "far from the reference's (dlib's convention: 0.6)"),
                "upsample": _UPSAMPLE}, extra=EXTRA)
def face_match(ctx, inputs, config):
    """Faces compared with the person on the durable ``person`` photo (dlib's ResNet embeddings,
    Euclidean distance): per frame ``{frame, boxes, distances, matches, match}``; the pictures
    pass through as one batch (a scene from ``serialized_scenes`` stays one item)."""
    if not inputs.get("person"):
        raise VisionError("face_match: no reference photo on port person")
    ref = _reference(inputs["person"][0], config)
    batches = inputs["frames"]
    if not batches:
        return {"frames": [], "records": []}
    frames = _join(batches)
    up = _upsample(config, frames.height)
    recs = []
    for i in range(frames.count):
        rgb = _color(frames, i, "RGB")
        rects = _detect(rgb, up)
        dist = [round(float(np.linalg.norm(_embedding(rgb, r) - ref)), 4) for r in rects]
        matches = [d <= config["tolerance"] for d in dist]
        recs.append({"frame": frames.start + i, "boxes": [_box(r) for r in rects],
                     "distances": dist, "matches": matches, "match": any(matches)})
    return {"frames": [frames], "records": [Records(recs, frames.start, frames.count, frames.fps)]}


@stage("reference_face", inputs={"image": "frame", "person": "frame"}, outputs={"person": "frame"},
       optional_inputs=("image", "person"), options={"upsample": _UPSAMPLE}, aliases=("matchFace",),
       extra=EXTRA)
def reference_face(ctx, inputs, config):
    """Checks the person's photo shows exactly one face and passes it on (``meta["face_box"]``)
    for ``face_match``'s ``person`` port, which computes (and caches) its embedding."""
    given = inputs.get("image") or inputs.get("person")
    if not given:
        raise VisionError("reference_face: no photo on port image (or person)")
    photo = given[0]
    _, rect = _one_face(photo, config)
    return {"person": [FrameBatch(photo.y[:1], photo.u[:1], photo.v[:1], photo.start, photo.fps,
                                  {**photo.meta, "face_box": _box(rect)})]}


# -- draw -------------------------------------------------------------------------------------------

#: Outline colours (Y, U, V): a match green, a non-match red, a face with no verdict yellow.
COLORS = {True: (145, 54, 34), False: (81, 90, 240), None: (210, 16, 146)}


def _records_by_frame(values: list[Records]) -> dict[int, dict]:
    out = {}
    for r in values:
        for rec in r.records:
            if isinstance(rec.get("frame"), int):
                out[rec["frame"]] = rec
    return out


def _outline(h: int, w: int, box, thick: int) -> np.ndarray:
    """Mask of the outline of ``box`` (``thick`` pixels inward), clipped to the picture."""
    x, y, bw, bh = box
    m = np.zeros((h, w), bool)
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + bw, w), min(y + bh, h)
    if x1 <= x0 or y1 <= y0:
        return m
    m[y0:y1, x0:x1] = True
    t = thick
    m[max(y + t, 0):max(y + bh - t, 0), max(x + t, 0):max(x + bw - t, 0)] = False
    return m


def _label(h: int, w: int, box, text: str) -> np.ndarray:
    """Mask of ``text`` written inside the top-left corner of ``box`` (clipped to it)."""
    cv2 = _import("cv2")
    x, y, bw, bh = box
    canvas = np.zeros((h, w), np.uint8)
    cv2.putText(canvas, text, (x + 4, y + 14), cv2.FONT_HERSHEY_PLAIN, 0.9, 255, 1, cv2.LINE_8)
    inside = np.zeros((h, w), bool)
    inside[max(y, 0):max(y + bh, 0), max(x, 0):max(x + bw, 0)] = True
    return (canvas > 0) & inside


@stage("draw", inputs={"frames": "frames", "records": "records"}, outputs={"frames": "frames"},
       options={"thickness": Option(int, 2, "outline width in pixels"),
                "labels": Option(bool, True, "write the match distance inside each box")},
       delivery="pair", extra=EXTRA)
def draw(ctx, inputs, config):
    """Boxes of the records drawn on their frames (green: a match, red: not, yellow: a face with
    no verdict), with the distance inside each box; nothing outside the boxes changes."""
    if config["thickness"] < 1:
        raise VisionError(f"draw: thickness {config['thickness']} must be at least 1")
    recs = _records_by_frame(inputs["records"])
    out = []
    for b in sorted(inputs["frames"], key=lambda b: b.start):
        y, u, v = b.y.copy(), b.u.copy(), b.v.copy()
        h, w = b.height, b.width
        for i in range(b.count):
            rec = recs.get(b.start + i)
            if not rec:
                continue
            matches, dists = rec.get("matches") or [], rec.get("distances") or []
            for k, box in enumerate(rec.get("boxes") or []):
                verdict = bool(matches[k]) if k < len(matches) else None
                cy, cu, cv = COLORS[verdict]
                mask = _outline(h, w, box, config["thickness"])
                if config["labels"] and k < len(dists):
                    mask |= _label(h, w, box, f"{dists[k]:.2f}")
                y[i][mask] = cy
                cmask = _half(mask)
                u[i][cmask] = cu
                v[i][cmask] = cv
        out.append(FrameBatch(y, u, v, b.start, b.fps, dict(b.meta)))
    return {"frames": out}


def _half(mask: np.ndarray) -> np.ndarray:
    """A luma mask at chroma resolution: a chroma sample is set when its top-left luma one is."""
    return mask[::2, ::2]


# -- select -----------------------------------------------------------------------------------------

_CONDITIONS = {
    "any_match": lambda r: bool(r.get("match")) or any(r.get("matches") or ()),
    "any_face": lambda r: bool(r.get("boxes")),
    "no_face": lambda r: not r.get("boxes"),
    "cut": lambda r: bool(r.get("cut")),
}


def _scene_record(first: int, last: int, fps) -> dict:
    start, end = Fraction(first * fps[1], fps[0]), Fraction((last + 1) * fps[1], fps[0])
    return {"frame": first, "first_frame": first, "last_frame": last,
            "start_time": round(float(start), 6), "end_time": round(float(end), 6)}


@stage("select", inputs={"frames": "frames", "records": "records"},
       outputs={"frames": "frames", "records": "records", "scenes": "scene_list"},
       options={"condition": Option(str, "any_match", "which frames to keep: any face matched, any "
                                                      "face, no face, a scene cut",
                                    tuple(_CONDITIONS)),
                "whole_scenes": Option(bool, False, "keep or drop all the frames of the task "
                                                    "together (one scene, with serialized_scenes): "
                                                    "kept when any frame meets the condition")},
       delivery="pair", extra=EXTRA)
def select(ctx, inputs, config):
    """Keeps the frames whose record meets ``condition`` (or, with ``whole_scenes``, the task's
    whole scene when any does) with their records; ``scenes`` lists each kept run of frames
    ``{frame, first_frame, last_frame, start_time, end_time}`` (seconds). Each kept run of
    frames is one output value (one per task with ``whole_scenes``); a dropped task outputs none."""
    test = _CONDITIONS[config["condition"]]
    recs = _records_by_frame(inputs["records"])
    pictures = list(_frames(inputs["frames"]))
    if not pictures:
        return {"frames": [], "records": [], "scenes": []}
    for n, _, _ in pictures:
        if n not in recs:
            raise VisionError(f"select: no record for frame {n}")
    keep = [test(recs[n]) for n, _, _ in pictures]
    if config["whole_scenes"]:
        keep = [any(keep)] * len(keep)
    frames, records, runs = [], [], []
    k = 0
    while k < len(pictures):
        if not keep[k]:
            k += 1
            continue
        j = k
        while (j + 1 < len(pictures) and keep[j + 1] and pictures[j + 1][0] == pictures[j][0] + 1
               and pictures[j + 1][1] is pictures[k][1]):
            j += 1
        _, b, i0 = pictures[k]
        part = b.slice(i0, i0 + j - k + 1)
        part.meta = {key: val for key, val in b.meta.items() if key != "scene_cuts"}
        cuts = [c for c in b.meta.get("scene_cuts", ()) if part.start <= c < part.start + part.count]
        if cuts:
            part.meta["scene_cuts"] = cuts
        frames.append(part)
        records.append(Records([recs[n] for n in range(part.start, part.start + part.count)],
                               part.start, part.count, part.fps))
        runs.append((part.start, part.start + part.count - 1, part.fps))
        k = j + 1
    # Runs cut only by batch boundaries are one scene in the list.
    scenes = []
    for first, last, fps in runs:
        if scenes and scenes[-1][1] + 1 == first:
            scenes[-1][1] = last
        else:
            scenes.append([first, last, fps])
    if not scenes:
        return {"frames": [], "records": [], "scenes": []}
    fps = pictures[0][1].fps
    scene_list = Records([_scene_record(a, b, f) for a, b, f in scenes], pictures[0][0],
                         pictures[-1][0] - pictures[0][0] + 1, fps)
    return {"frames": frames, "records": records, "scenes": [scene_list]}
