"""Write a shaky copy of a clip, for the stabilisation demo (pipelines/stabilize.json).

    python demo/make_shaky.py IN OUT.ivf|OUT.webm ... [--shift PX] [--seed N]

Each picture is cropped by ``2 * PX`` pixels on each axis, the crop window jumping to a random
place within ``PX`` of the centre every frame (even steps, so the chroma moves with the luma):
a camera shaken by a hand. Each output gets the same pictures as VP8 (PyAV's libvpx, near
lossless), in IVF or WebM by its name: WebM for a browser to play beside the steadied one.
Seeded: the same command writes the same shake.
"""

from __future__ import annotations

import argparse
import sys
from fractions import Fraction

import numpy as np


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="make_shaky.py")
    p.add_argument("input")
    p.add_argument("outputs", nargs="+", metavar="output")
    p.add_argument("--shift", type=int, default=8, help="largest jump from the centre, in pixels")
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args(argv)
    if not 2 <= a.shift <= 64:
        print(f"make_shaky.py: error: --shift {a.shift} must be in 2..64", file=sys.stderr)
        return 1

    import av
    from media.video import open_video

    m = a.shift - a.shift % 2
    rng = np.random.default_rng(a.seed)
    with open_video(a.input) as video:
        rate = tuple(video.rate)
        w, h = video.width - 2 * m, video.height - 2 * m
        outs = [av.open(path, "w") for path in a.outputs]
        streams = []
        for out in outs:
            s = out.add_stream("libvpx", rate=Fraction(*rate))
            s.width, s.height, s.pix_fmt = w, h, "yuv420p"
            s.options = {"crf": "4", "b": "20M", "deadline": "realtime", "cpu-used": "4"}
            streams.append(s)
        for image in video:
            x, y = (m + 2 * rng.integers(-(m // 2), m // 2 + 1, 2)).tolist()
            planes = [image.y[y:y + h, x:x + w],
                      image.u[y // 2:(y + h) // 2, x // 2:(x + w) // 2],
                      image.v[y // 2:(y + h) // 2, x // 2:(x + w) // 2]]
            frame = av.VideoFrame(w, h, "yuv420p")
            for plane, data in zip(frame.planes, planes):
                rows = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)
                rows[:data.shape[0], :data.shape[1]] = data
            for out, s in zip(outs, streams):
                out.mux(s.encode(frame))
        for out, s in zip(outs, streams):
            out.mux(s.encode(None))
            out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
