"""Clips with sound made by PyAV for the audio tests, and measurements on decoded output.

* ``flash_click_clip``: dark frames with a white flash frame at given frame numbers, and a
  5 ms 1 kHz click starting at the same instants: the sync of an output is how far each click
  lands from its flash once both streams are decoded (``events``).
* ``tone_clip``: pictures that differ per scene (scene ``k``: a grey level and a bar at a
  place of its own) with a tone of ``300 + 150 k`` Hz under each: which sound came with which
  frames is read back from the decoded output (``tones``).
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np


def _mux(path, fmt, vcodec, acodec, fps, size, pictures, samples, rate, layout="mono"):
    import av

    c = av.open(str(path), "w", format=fmt)
    v = c.add_stream(vcodec, rate=fps)
    v.width, v.height, v.pix_fmt = size[0], size[1], "yuv420p"
    a = c.add_stream(acodec, rate=rate, layout=layout)
    packets = []
    for i, y in enumerate(pictures):
        chroma = np.full((size[1] // 2, size[0]), 128, np.uint8)
        f = av.VideoFrame.from_ndarray(np.concatenate([y, chroma]), format="yuv420p")
        f.pts, f.time_base = i, Fraction(1, fps)
        packets += v.encode(f)
    packets += v.encode(None)
    for s in range(0, samples.shape[1], 1024):
        f = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, s:s + 1024]), format="fltp", layout=layout)
        f.sample_rate, f.pts, f.time_base = rate, s, Fraction(1, rate)
        packets += a.encode(f)
    packets += a.encode(None)
    for p in sorted(packets, key=lambda p: float(p.dts * p.time_base) if p.dts is not None else 0.0):
        c.mux(p)
    c.close()


def flash_click_clip(path, events=(10, 30, 55), fps=25, frames=75, size=(96, 64), vcodec="libx264",
                     acodec="aac", fmt=None, rate=48000) -> None:
    pictures = [np.full((size[1], size[0]), 235 if i in events else 16, np.uint8) for i in range(frames)]
    samples = np.zeros((1, rate * frames // fps), np.float32)
    click = 0.8 * np.sin(np.arange(rate // 200) * 2 * np.pi * 1000 / rate)
    for e in events:
        s = e * rate // fps
        samples[0, s:s + len(click)] = click
    _mux(path, fmt, vcodec, acodec, fps, size, pictures, samples, rate)


def tone_of(scene: int) -> float:
    return 300.0 + 150.0 * scene


def tone_clip(path, scenes=6, per_scene=8, fps=24, size=(96, 64), acodec="aac", fmt=None, rate=48000) -> None:
    pictures = []
    for k in range(scenes):
        y = np.full((size[1], size[0]), 40 + 30 * k, np.uint8)
        y[:, 8 + 12 * k: 16 + 12 * k] = 250
        pictures += [y] * per_scene
    t = np.arange(rate * scenes * per_scene // fps) / rate
    scene = np.minimum((t * fps // per_scene).astype(int), scenes - 1)
    samples = (0.5 * np.sin(2 * np.pi * np.vectorize(tone_of)(scene) * t)).astype(np.float32)[None]
    _mux(path, fmt, "libx264", acodec, fps, size, pictures, samples, rate)


def pcm(path) -> tuple[float, np.ndarray, int]:
    """The first audio stream decoded: (time of its first sample, mono samples, rate)."""
    import av

    with av.open(str(path)) as c:
        s = c.streams.audio[0]
        t0, parts = None, []
        for f in c.decode(s):
            if t0 is None:
                t0 = float(f.pts * f.time_base)
            a = f.to_ndarray()
            parts.append(a[0] if f.format.is_planar else a[0, ::len(f.layout.channels)])
        return t0, np.concatenate(parts).astype(np.float32), f.sample_rate


def video_frames(path) -> list[tuple[float, np.ndarray]]:
    """(time, luma) of each decoded picture of the first video stream."""
    import av

    with av.open(str(path)) as c:
        return [(float(f.pts * f.time_base), f.to_ndarray(format="gray").astype(np.float32))
                for f in c.decode(c.streams.video[0])]


def events(path) -> tuple[list[float], list[float]]:
    """(times of the flash frames, times the clicks start) in the decoded ``path``."""
    flashes = [t for t, y in video_frames(path) if y.mean() > 128]
    t0, x, rate = pcm(path)
    clicks, quiet_until = [], -1.0
    for j in np.flatnonzero(np.abs(x) > 0.2):
        t = t0 + j / rate
        if t > quiet_until:
            clicks.append(t)
        quiet_until = t + 0.1
    return flashes, clicks


def dominant(x: np.ndarray, rate: int) -> float:
    w = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(w) * rate / len(x))


def with_tones(src, dst, per_scene=8, rate=48000) -> None:
    """``src``'s video packets remuxed into MP4 beside an AAC track: a tone of ``tone_of(k)``
    under frames ``k * per_scene ..`` (the scenes of tests/data/vision/scenes.mp4 are 8 frames)."""
    import av

    with av.open(str(src)) as i:
        v = i.streams.video[0]
        fps, n = v.average_rate, v.frames
        o = av.open(str(dst), "w", format="mp4")
        ov = o.add_stream_from_template(v)
        a = o.add_stream("aac", rate=rate, layout="mono")
        packets = []
        for p in i.demux(v):
            if p.size:
                p.stream = ov
                packets.append(p)
        t = np.arange(int(n / fps * rate)) / rate
        scene = (t * float(fps) // per_scene).astype(int)
        x = (0.5 * np.sin(2 * np.pi * (300.0 + 150.0 * scene) * t)).astype(np.float32)[None]
        for s in range(0, x.shape[1], 1024):
            f = av.AudioFrame.from_ndarray(np.ascontiguousarray(x[:, s:s + 1024]), format="fltp", layout="mono")
            f.sample_rate, f.pts = rate, s
            packets += a.encode(f)
        packets += a.encode(None)
        for p in packets:
            o.mux(p)
        o.close()


def scene_tones(path, per_scene: int, fps: float, scenes: int) -> list[float]:
    """The dominant frequency of the decoded sound under each run of ``per_scene`` frames
    (the middle of the run, away from the cuts)."""
    t0, x, rate = pcm(path)
    out = []
    for k in range(scenes):
        a = int((k * per_scene / fps + 0.04 - t0) * rate)
        b = int(((k + 1) * per_scene / fps - 0.04 - t0) * rate)
        out.append(dominant(x[a:b], rate))
    return out
