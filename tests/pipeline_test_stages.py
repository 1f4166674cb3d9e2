"""Small stages for the pipeline framework's tests (registered on import; workers import this
module through ``--ops``). Deterministic numpy work on ``FrameBatch`` values."""

from __future__ import annotations

import os
import time

import numpy as np

from pipeline.stage import Option, stage
from pipeline.values import FrameBatch, Records


@stage("t_unpack", inputs={"chunks": "chunks"}, outputs={"frames": "frames"})
def t_unpack(ctx, inputs, config):
    """Chunks to frames (a stand-in for ``decode``): Y4M pieces directly, any other container
    through ``media.video`` (PyAV) from a scratch file."""
    from media.video import open_video

    out = []
    for c in inputs["chunks"]:
        path = os.path.join(ctx.tmpdir, f"chunk.{'y4m' if c.container == 'y4m' else c.container}")
        with open(path, "wb") as f:
            f.write(c.data)
        with open_video(path) as video:
            images = list(video)
        out.append(FrameBatch.from_images(images, c.start, c.fps, c.meta))
    return {"frames": out}


@stage("t_invert", inputs={"frames": "frames"}, outputs={"frames": "frames"},
       options={"sleep_s": Option(float, 0.0, "wait this long first (kill tests)"),
                "luma_only": Option(bool, False), "mode": Option(str, "full", choices=("full", "half"))})
def t_invert(ctx, inputs, config):
    time.sleep(config["sleep_s"])
    out = []
    for b in inputs["frames"]:
        y = 255 - b.y if config["mode"] == "full" else b.y // 2
        u, v = (b.u, b.v) if config["luma_only"] else (255 - b.u, 255 - b.v)
        out.append(FrameBatch(y, u, v, b.start, b.fps, dict(b.meta)))
    return {"frames": out}


@stage("t_dup", inputs={"frames": "frames"}, outputs={"frames_0": "frames", "frames_1": "frames"})
def t_dup(ctx, inputs, config):
    return {"frames_0": list(inputs["frames"]), "frames_1": list(inputs["frames"])}


@stage("t_blend", inputs={"frames_0": "frames", "frames_1": "frames"}, outputs={"frames": "frames"},
       delivery="pair", aliases=("t_mix",))
def t_blend(ctx, inputs, config):
    out = []
    for a, b in zip(inputs["frames_0"], inputs["frames_1"]):
        avg = [((p.astype(np.uint16) + q + 1) // 2).astype(np.uint8) for p, q in ((a.y, b.y), (a.u, b.u), (a.v, b.v))]
        out.append(FrameBatch(*avg, a.start, a.fps))
    return {"frames": out}


@stage("t_overlay", inputs={"frames": "frames", "image": "frame"}, outputs={"frames": "frames"})
def t_overlay(ctx, inputs, config):
    """Each picture's luma plus a side image's (its first picture), saturating."""
    (img,) = inputs["image"]
    out = []
    for b in inputs["frames"]:
        y = np.minimum(b.y.astype(np.uint16) + img.y[0] // 4, 255).astype(np.uint8)
        out.append(FrameBatch(y, b.u, b.v, b.start, b.fps))
    return {"frames": out}


@stage("t_regroup", inputs={"frames": "frames"}, outputs={"frames": "frames", "groups": "records"},
       delivery="serialized_frames",
       options={"frames_per_chunk": Option(int, 4, "frames per task")})
def t_regroup(ctx, inputs, config):
    """Frames in one batch per task, and a record of what the task got."""
    batches = inputs["frames"]
    y = np.concatenate([b.y for b in batches])
    u = np.concatenate([b.u for b in batches])
    v = np.concatenate([b.v for b in batches])
    first = batches[0].start
    rec = Records([{"frame": first, "count": int(y.shape[0]), "lineage": ctx.lineage,
                    "parts": [[b.start, b.count] for b in batches]}], first, int(y.shape[0]), batches[0].fps)
    return {"frames": [FrameBatch(y, u, v, first, batches[0].fps)], "groups": [rec]}


@stage("t_cuts", inputs={"frames": "frames"}, outputs={"frames": "frames"},
       options={"every": Option(int, 5, "a scene cut before every frame number divisible by this")})
def t_cuts(ctx, inputs, config):
    """Marks scene cuts in ``meta["scene_cuts"]``."""
    out = []
    for b in inputs["frames"]:
        cuts = [f for f in range(b.start, b.start + b.count) if f % config["every"] == 0 and f]
        out.append(FrameBatch(b.y, b.u, b.v, b.start, b.fps, {"scene_cuts": cuts}))
    return {"frames": out}


@stage("t_scene", inputs={"frames": "frames"}, outputs={"scenes": "records"}, delivery="serialized_scenes")
def t_scene(ctx, inputs, config):
    first = inputs["frames"][0].start
    n = sum(b.count for b in inputs["frames"])
    return {"scenes": [Records([{"frame": first, "count": n}], first, n, inputs["frames"][0].fps)]}


@stage("t_fail", inputs={"frames": "frames"}, outputs={"frames": "frames"},
       options={"at": Option(int, 0, "fail on the batch starting at this frame")})
def t_fail(ctx, inputs, config):
    for b in inputs["frames"]:
        if b.start == config["at"]:
            raise ValueError(f"refusing frame {b.start}")
    return {"frames": list(inputs["frames"])}


@stage("t_tmp", inputs={"frames": "frames"}, outputs={"frames": "frames"})
def t_tmp(ctx, inputs, config):
    """Checks it got a private scratch directory."""
    assert ctx.tmpdir and os.path.isdir(ctx.tmpdir) and not os.listdir(ctx.tmpdir)
    return {"frames": list(inputs["frames"])}


@stage("t_needs", inputs={"frames": "frames"}, outputs={"frames": "frames"},
       options={"level": Option(int, help="a required option")})
def t_needs(ctx, inputs, config):
    return {"frames": list(inputs["frames"])}


def user_pairs(node, waiting, end):
    """A user delivery function: two consecutive items per task, in order; a lone last one at
    the end (state: the next frame expected and the group count)."""
    from pipeline.delivery import Batch

    (port,) = node.ports
    items = waiting[port]
    out = []
    while True:
        have = {i.start: i for i in items}
        first = have.get(node.state.setdefault("next", 0))
        if first is None:
            break
        second = have.get(first.end)
        if second is None and not end:
            break
        group = [first] + ([second] if second is not None else [])
        for i in group:
            items.remove(i)
        node.state["next"] = group[-1].end
        n = node.state.get("groups", 0)
        node.state["groups"] = n + 1
        out.append(Batch({port: group}, n))
    return out


user_pairs.ports = 1


@stage("t_drop", inputs={"frames": "frames"}, outputs={"frames": "frames"},
       options={"at": Option(int, 0, "drop the batch starting at this frame")})
def t_drop(ctx, inputs, config):
    return {"frames": [b for b in inputs["frames"] if b.start != config["at"]]}


def two_chunks(node, waiting, end):
    """The README's example: chunks 2k and 2k+1 together (a lone last one at the end)."""
    from pipeline.delivery import Batch

    (port,) = node.ports
    groups = {}
    for i in waiting[port]:
        groups.setdefault(i.lineage // 2, []).append(i)
    out = []
    for k, group in sorted(groups.items()):
        if len(group) == 2 or end:
            for i in group:
                waiting[port].remove(i)
            out.append(Batch({port: sorted(group, key=lambda i: i.start)}, lineage=k))
    return out
