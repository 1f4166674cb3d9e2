"""Joins match frames by presentation time, as ffmpeg's framesync does (issue 23): blend of a
4 s 25 fps clip and a 3.3 s 30 fps clip against FFmpeg's own ``blend`` filter run through PyAV
(``av.filter.Graph``, pushing both inputs in time order), frame for frame."""

from __future__ import annotations

import json
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest

from codec.image import Image
from codec.y4m import Y4mWriter

BLEND = {"nodes": [{"name": "d0", "stage": "decode"}, {"name": "d1", "stage": "decode"},
                   {"name": "blend", "stage": "blend", "delivery_function": "pair_delivery_func"}],
         "streams": [{"src": "input_0:chunks", "dst": "d0:chunks"}, {"src": "input_1:chunks", "dst": "d1:chunks"},
                     {"src": "d0:frames", "dst": "blend:frames_0"}, {"src": "d1:frames", "dst": "blend:frames_1"},
                     {"src": "blend:frames", "dst": "output_0:frames"}]}


def clip(path, n, rate, w=64, h=48, seed=0):
    """``n`` moving pictures at ``rate``: every frame differs, so a wrong pairing shows."""
    with Y4mWriter(str(path), rate=rate) as wr:
        for i in range(n):
            y = ((np.arange(w)[None, :] * 3 + np.arange(h)[:, None] * 2 + i * 7 + seed * 50) % 256).astype(np.uint8)
            u = np.full(((h + 1) // 2, (w + 1) // 2), (100 + i * 3 + seed * 40) % 256, np.uint8)
            v = np.full(((h + 1) // 2, (w + 1) // 2), (150 - i * 2 + seed) % 256, np.uint8)
            wr.write(Image(y, u, v))
    return str(path)


def pictures(path):
    from media.video import open_video
    with open_video(path) as v:
        return list(v), tuple(v.rate)


def ffmpeg_blend(p0, p1):
    """FFmpeg's ``[0][1]blend=all_mode=average`` (``[1]`` scaled to ``[0]``'s size when they
    differ) through PyAV, the inputs pushed in presentation-time order."""
    import av
    import av.filter

    from media.firstpass import _av_frame
    from media.video import _frame_to_image
    (a, ra), (b, rb) = pictures(p0), pictures(p1)
    g = av.filter.Graph()
    srcs = [g.add("buffer", f"video_size={ims[0].width}x{ims[0].height}:pix_fmt=yuv420p:"
                            f"time_base={r[1]}/{r[0]}:pixel_aspect=1/1") for ims, r in ((a, ra), (b, rb))]
    blend = g.add("blend", "all_mode=average")
    srcs[0].link_to(blend, 0, 0)
    if (a[0].width, a[0].height) != (b[0].width, b[0].height):
        sc = g.add("scale", f"{a[0].width}:{a[0].height}")
        srcs[1].link_to(sc)
        sc.link_to(blend, 0, 1)
    else:
        srcs[1].link_to(blend, 0, 1)
    sink = g.add("buffersink")
    blend.link_to(sink)
    g.configure()
    out = []

    def drain():
        while True:
            try:
                out.append(sink.pull())
            except (av.error.BlockingIOError, av.error.EOFError):
                return

    events = sorted([(Fraction(i * ra[1], ra[0]), 0, i) for i in range(len(a))] +
                    [(Fraction(i * rb[1], rb[0]), 1, i) for i in range(len(b))])
    for _, k, i in events:
        ims, r = (a, ra) if k == 0 else (b, rb)
        srcs[k].push(_av_frame(av, ims[i], i, Fraction(r[1], r[0])))
        drain()
    srcs[0].push(None)
    srcs[1].push(None)
    drain()
    return [_frame_to_image(f.reformat(format="yuv420p"), n) for n, f in enumerate(out)]


def run_blend(tmp_path, p0, p1, name, workers=0, per=None):
    from coordinator.config import RunConfig
    from pipeline.run import run_pipeline
    out = str(tmp_path / f"{name}.y4m")
    run_pipeline(BLEND, {"input_0": p0, "input_1": p1}, {"output_0": out}, RunConfig(workers=workers),
                 frames_per_chunk=per)
    return out


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("join")
    return {"a25": clip(d / "a25.y4m", 100, (25, 1), seed=1),            # 4 s
            "b30": clip(d / "b30.y4m", 99, (30, 1), seed=2),             # 3.3 s
            "b30big": clip(d / "b30big.y4m", 99, (30, 1), w=96, h=80, seed=3)}


@pytest.mark.parametrize("first,second,frames,per", [("a25", "b30", 100, 7), ("b30", "a25", 117, None),
                                                     ("a25", "b30big", 100, 13)])
def test_blend_of_other_rates_and_sizes_equals_ffmpegs(tmp_path, clips, first, second, frames, per):
    out = run_blend(tmp_path, clips[first], clips[second], f"{first}-{second}", per=per)
    mine, rate = pictures(out)
    ref = ffmpeg_blend(clips[first], clips[second])
    assert len(mine) == len(ref) == frames
    assert rate == pictures(clips[first])[1]
    for k, (m, r) in enumerate(zip(mine, ref)):
        assert np.array_equal(m.y, r.y) and np.array_equal(m.u, r.u) and np.array_equal(m.v, r.v), k


def test_blend_on_workers_writes_the_same_bytes(tmp_path, clips):
    here = run_blend(tmp_path, clips["b30"], clips["a25"], "here", per=9)
    there = run_blend(tmp_path, clips["b30"], clips["a25"], "there", workers=2, per=9)
    with open(here, "rb") as f, open(there, "rb") as g:
        assert f.read() == g.read()


def test_inputs_that_do_not_overlap_are_one_line_and_nothing_written(tmp_path, clips):
    """A join whose inputs never show a frame at the same time: the second input's first
    second is dropped upstream (``t_drop``), and the first input ends before that."""
    import os
    doc = json.loads(json.dumps(BLEND))
    doc["nodes"].insert(2, {"name": "late", "stage": "t_drop", "config": {"at": 0}})
    doc["streams"][3] = {"src": "d1:frames", "dst": "late:frames"}
    doc["streams"].append({"src": "late:frames", "dst": "blend:frames_1"})
    spec = tmp_path / "late.json"
    spec.write_text(json.dumps(doc))
    short = clip(tmp_path / "short.y4m", 5, (30, 1), seed=4)       # 0 .. 0.133 s
    out = tmp_path / "out.y4m"
    env = dict(os.environ, PYTHONPATH=os.path.dirname(__file__))
    r = subprocess.run([sys.executable, "-m", "excamera", "pipeline", "run", str(spec), "--stages",
                        "pipeline_test_stages", "-i", f"input_0={short}", "-i", f"input_1={clips['b30']}",
                        "-o", f"output_0={out}", "--workers", "0", "--frames-per-chunk", "10"],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 1, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("excamera: error:"), r.stderr
    assert "frames_0 (0.000..0.133 s) and frames_1 (0.333..3.267 s) do not overlap in time" in lines[0]
    assert not out.exists()
