"""Stages under the names and ports Sprocket's pipespecs give them (docs/design/pipelines.md).

Each is built with ffmpeg's filter semantics (``pipeline.filtergraph``: FFmpeg's own filters,
in process), so its result equals ffmpeg's for the same filter string:

=================== ============================ ==============================================
stage               ports                        ffmpeg equivalent
=================== ============================ ==============================================
``rotate``          frames -> frames             ``transpose=2,transpose=2`` (180 degrees)
``pixscale``        frames -> frames             ``scale=800:800:flags=neighbor``
``scale``           frames -> frames             keeps frame ``floor(k * factor)`` as frame ``k``
                                                 (``factor`` 2: ``select='not(mod(n,2))'``)
``grayscale_flat``  frames -> frame              ``hue=s=0`` (per-frame port name)
``encode_frame_list`` frame_list -> chunks       the ``encode`` stage
``resize``          frames -> frames             ``scale=W:H`` (default a quarter: ``iw/4:-2``)
``overlay``         frames_0, frames_1 -> frames ``[0][1]overlay=X:Y``, frames paired by time
``scenechange``     frames -> scene_list         the ``scene_change`` stage
``rek``             scene_list, person -> frame  ``face_match`` then ``select`` (whole scenes
                                                 with the person), boxes in ``meta["faces"]``
``draw_frame``      frame -> frame               ``draw`` with the boxes from ``meta["faces"]``
``random_cut``      frames -> frame              per chunk, a random run of consecutive frames
                                                 kept (seeded: ``random_run``), the rest cut
=================== ============================ ==============================================

``matchFace`` (the person's photo) is ``reference_face`` (its port ``person`` too); Sprocket's ``rek`` finds the
photo through a side channel, so the pipespec reader joins ``matchFace`` to ``rek`` and Sprocket's
``draw`` on ``frame`` ports to ``draw_frame`` (``pipeline.spec``).
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from pipeline.stage import Option, stage
from pipeline.values import FrameBatch, Records


def _filtered(text: str, batches: list[FrameBatch]) -> list[FrameBatch]:
    from pipeline.filtergraph import FilterGraph
    graph = FilterGraph(text, 1)
    return [f for f in (graph.run([b])[0] for b in batches) if f is not None]


@stage("rotate", inputs={"frames": "frames"}, outputs={"frames": "frames"}, steal="frames")
def rotate(ctx, inputs, config):
    """The picture turned 180 degrees: ffmpeg's ``transpose=2,transpose=2``."""
    return {"frames": _filtered("transpose=2,transpose=2", inputs["frames"])}


@stage("pixscale", inputs={"frames": "frames"}, outputs={"frames": "frames"}, steal="frames",
       options={"width": Option(int, 800, "output width"), "height": Option(int, 800, "output height")})
def pixscale(ctx, inputs, config):
    """The picture resized to 800x800 by nearest-neighbour sampling (a pixelated look):
    ffmpeg's ``scale=800:800:flags=neighbor``."""
    w, h = config["width"], config["height"]
    if not (0 < w <= 16384 and 0 < h <= 16384):
        raise ValueError(f"pixscale: size {w}x{h} is out of range")
    return {"frames": _filtered(f"scale={w}:{h}:flags=neighbor", inputs["frames"])}


@stage("resize", inputs={"frames": "frames"}, outputs={"frames": "frames"}, steal="frames",
       options={"width": Option(str, "iw/4", "ffmpeg scale's width expression"),
                "height": Option(str, "-2", "ffmpeg scale's height expression (-2: keep the "
                                            "aspect ratio, even)"),
                "flags": Option(str, "bicubic", "ffmpeg scale's sampling")})
def resize(ctx, inputs, config):
    """The picture resized: ffmpeg's ``scale=W:H:flags=F`` (Sprocket names this stage for its
    picture-in-picture spec but never published it; by default a quarter of the width)."""
    text = f"scale='{config['width']}':'{config['height']}':flags={config['flags']}"
    return {"frames": _filtered(text, inputs["frames"])}


@stage("overlay", inputs={"frames_0": "frames", "frames_1": "frames"}, outputs={"frames": "frames"},
       delivery="pair",
       options={"x": Option(str, "main_w-overlay_w-10", "ffmpeg overlay's x expression"),
                "y": Option(str, "main_h-overlay_h-10", "ffmpeg overlay's y expression")})
def overlay(ctx, inputs, config):
    """frames_1 laid over frames_0 (picture in picture, by default at the bottom right):
    ffmpeg's ``[0][1]overlay=x=X:y=Y``, the frames paired by presentation time; frames_1 keeps
    its size."""
    from pipeline.stages.video import join_through
    text = f"overlay=x='{config['x']}':y='{config['y']}'"
    return {"frames": join_through(text, inputs, scale=False)}


def _factor(config) -> Fraction:
    f = Fraction(config["factor"]).limit_denominator(1000)
    if f <= 0:
        raise ValueError(f"scale: factor {config['factor']} must be positive")
    return f


@stage("scale", inputs={"frames": "frames"}, outputs={"frames": "frames"},
       options={"factor": Option(float, 2.0, "time factor: output frame k is input frame "
                                             "floor(k * factor); 2 plays twice as fast")})
def time_scale(ctx, inputs, config):
    """Frames kept by a time factor, at the same frame rate: output frame ``k`` is input frame
    ``floor(k * factor)`` (2: every other frame, as ffmpeg's ``select='not(mod(n,2))'``; 0.5:
    each frame twice). The sound follows: each batch says where it starts in the input
    (``meta["source_start"]``) and how fast it plays (``meta["speed"]``), so the output writer plays
    its sound ``factor`` times as fast with ffmpeg's ``atempo``, pitch kept (``media.audio``)."""
    f = _factor(config)
    out = []
    for b in sorted(inputs["frames"], key=lambda b: b.start):
        first = -((-b.start * f.denominator) // f.numerator)            # ceil(start / f)
        last = -((-(b.start + b.count) * f.denominator) // f.numerator)  # ceil(end / f)
        picks = [(k * f.numerator) // f.denominator - b.start for k in range(first, last)]
        if picks:
            idx = np.asarray(picks)
            meta = dict(b.meta, speed=float(f), source_start=b.start + picks[0])
            out.append(FrameBatch(b.y[idx], b.u[idx], b.v[idx], first, b.fps, meta))
    return {"frames": out}


@stage("grayscale_flat", inputs={"frames": "frames"}, outputs={"frame": "frames"}, steal="frames")
def grayscale_flat(ctx, inputs, config):
    """``grayscale`` (ffmpeg's ``hue=s=0``) with Sprocket's per-frame output port ``frame``."""
    from pipeline.stages.video import grayscale_batch
    return {"frame": [grayscale_batch(b) for b in inputs["frames"]]}


@stage("encode_frame_list", inputs={"frame_list": "frames"}, outputs={"chunks": "chunks"},
       options={"cq_level": Option(int, 20, "constant quality, libvpx's 0..63 scale")})
def encode_frame_list(ctx, inputs, config):
    """Pictures -> VP8 chunks, as ``encode`` (Sprocket's port ``frame_list``; its delivery
    function, ``serialized_frame_delivery_func``, groups the frames a second to a task)."""
    from pipeline.stages.video import encode_vp8, join
    return {"chunks": [encode_vp8(join(inputs["frame_list"]), config["cq_level"])]}


# -- face search under Sprocket's names ---------------------------------------------------------------

@stage("scenechange", inputs={"frames": "frames", "previous": "frame"}, delivery="with_previous",
       outputs={"scene_list": "frames", "records": "records"}, optional_inputs=("previous",),
       extra="vision")
def scenechange(ctx, inputs, config):
    """``scene_change`` (content detector) with Sprocket's output port ``scene_list``: the
    pictures, the cuts in ``meta["scene_cuts"]``."""
    from pipeline.stages.vision import scene_change
    cfg = {"detector": "content", "threshold": 0.0, "window": 2, "luma_only": False}
    out = scene_change(ctx, inputs, cfg)
    return {"scene_list": out["frames"], "records": out["records"]}


@stage("rek", inputs={"scene_list": "frames", "person": "frame"}, outputs={"frame": "frames"},
       delivery="serialized_scenes", extra="vision",
       options={"tolerance": Option(float, 0.53, "face distance that counts as the person")})
def rek(ctx, inputs, config):
    """Sprocket's face search on one scene: ``face_match`` against the person, then the whole
    scene kept when the person is in any frame (``select``); each kept frame carries its faces
    in ``meta["faces"]`` for ``draw_frame``."""
    from pipeline.stages.vision import face_match, select
    matched = face_match(ctx, {"frames": inputs["scene_list"], "person": inputs.get("person")},
                                {"tolerance": config["tolerance"], "upsample": -1})
    kept = select(ctx, matched, {"condition": "any_match", "whole_scenes": True})
    out = []
    for b, r in zip(kept["frames"], kept["records"]):
        out.append(FrameBatch(b.y, b.u, b.v, b.start, b.fps, {**b.meta, "faces": r.records}))
    return {"frame": out}


@stage("draw_frame", inputs={"frame": "frames"}, outputs={"frame": "frames"}, extra="vision",
       options={"thickness": Option(int, 2, "outline width in pixels"),
                "labels": Option(bool, True, "write the match distance inside each box")})
def draw_frame(ctx, inputs, config):
    """``draw`` on Sprocket's ``frame`` ports: the boxes each picture carries in
    ``meta["faces"]`` (from ``rek``)."""
    from pipeline.stages.vision import draw
    frames = inputs["frame"]
    records = [Records(b.meta.get("faces", []), b.start, b.count, b.fps) for b in frames]
    out = draw(ctx, {"frames": frames, "records": records}, config)["frames"]
    for b in out:
        b.meta.pop("faces", None)
    return {"frame": out}



# -- random_cut ---------------------------------------------------------------------------------------

def random_run(seed: int, start: int, count: int) -> tuple[int, int]:
    """The run ``random_cut`` keeps of the ``count`` frames from frame ``start``: (first index,
    length), length uniform in 1..count and the place uniform among those that fit. Drawn from
    the seed and the frame number only, so a re-run, or any worker, keeps the same frames."""
    rng = np.random.default_rng([seed, start])
    length = int(rng.integers(1, count + 1))
    return int(rng.integers(0, count - length + 1)), length


@stage("random_cut", inputs={"frames": "frames"}, outputs={"frame": "frames"},
       options={"seed": Option(int, 0, "the seed of the random cuts (the same seed: the same cut)")})
def random_cut(ctx, inputs, config):
    """Each input value (a chunk's pictures) cut to a random run of consecutive frames, which
    keep their frame numbers (Sprocket's ``random_cut``: "for each chunk, retain a random number
    of (continuous) frames while cut other frames"; its published code copies every frame, so
    the cut is built as its docstring says, seeded: ``random_run``)."""
    if config["seed"] < 0:
        raise ValueError(f"random_cut: seed {config['seed']} must be >= 0")
    out = []
    for b in sorted(inputs["frames"], key=lambda b: b.start):
        if b.count:
            a, n = random_run(config["seed"], b.start, b.count)
            out.append(b.slice(a, a + n))
    return {"frame": out}
