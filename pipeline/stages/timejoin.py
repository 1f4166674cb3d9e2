"""Two streams of pictures paired by presentation time, as ffmpeg's framesync pairs the inputs
of a two-input filter (``blend``, ``overlay``, ``hstack``) with its defaults.

The ``pair`` delivery function (``pipeline.delivery``) hands a task one run of the first input's
frames and the second input's frames that were showing during it, or, once the first input has
ended, the first input's last frame and a run of the second's later frames. ``align`` turns
that into two batches of equal length, frame ``k`` of one to be combined with frame ``k`` of
the other:

* each frame of the first input at time ``t`` meets the second input's latest frame at or
  before ``t`` (its last frame once it has ended: framesync's ``eof_action=repeat``);
* each frame of the second input after the first input's last frame meets that last frame
  (framesync goes on with the longer input: ``shortest=0``).

The output is numbered at the first input's frame rate: a frame of the first input keeps its
number; the tail continues from the first input's last number. Times are exact fractions, as
framesync's common time base is for these rates. With ``scale``, second-input pictures of
another size are scaled to the first input's with ffmpeg's ``scale`` filter (bicubic, its
default), as a filter graph joining two sizes must say itself.
"""

from __future__ import annotations

import bisect
from fractions import Fraction

import numpy as np

from pipeline.values import FrameBatch


def _numbered(values: list[FrameBatch]) -> tuple[list[int], FrameBatch]:
    """The frame numbers of ``values`` (sorted; gaps where frames were dropped upstream) and
    all their pictures as one batch, in that order."""
    values = sorted(values, key=lambda v: v.start)
    numbers = [v.start + i for v in values for i in range(v.count)]
    first = values[0]
    if len(values) == 1:
        return numbers, first
    planes = [np.concatenate([getattr(v, p) for v in values]) for p in "yuv"]
    return numbers, FrameBatch(*planes, first.start, first.fps, dict(first.meta))


def _floor(x: Fraction) -> int:
    return x.numerator // x.denominator


def align(first: list[FrameBatch], second: list[FrameBatch], scale: bool = True
          ) -> tuple[FrameBatch, FrameBatch] | None:
    """The two inputs of a join task as two batches of one length, numbered as the output
    (see the module docstring); None when no frame pairs up."""
    if not first or not second:
        return None
    na, a = _numbered(first)
    nb, b = _numbered(second)
    fa, fb = Fraction(*a.fps), Fraction(*b.fps)
    pick_a: list[int] = []
    pick_b: list[int] = []
    numbers: list[int] = []
    for i, n in enumerate(na):
        # the second input's latest frame at or before this one's time (its last once it ended)
        j = bisect.bisect_right(nb, _floor(Fraction(n) / fa * fb)) - 1
        if j < 0:
            continue                                             # before the second input starts
        pick_a.append(i)
        pick_b.append(j)
        numbers.append(n)
    if not numbers:
        # The tail: the second input's frames after the first input's last (a one-frame run).
        last = na[-1]
        first_after = _floor(Fraction(last) / fa * fb) + 1
        for j, m in enumerate(nb):
            if m >= first_after:
                pick_a.append(len(na) - 1)
                pick_b.append(j)
                numbers.append(last + 1 + m - first_after)
    if not numbers:
        return None
    if any(n != numbers[0] + k for k, n in enumerate(numbers)):
        raise ValueError(f"join: output frames {numbers[0]}..{numbers[-1]} are not consecutive")
    if scale and (b.width, b.height) != (a.width, a.height):
        b = scaled(b, a.width, a.height)
    start = numbers[0]
    ia, ib = np.asarray(pick_a), np.asarray(pick_b)
    out_a = FrameBatch(a.y[ia], a.u[ia], a.v[ia], start, a.fps, dict(a.meta))
    out_b = FrameBatch(b.y[ib], b.u[ib], b.v[ib], start, a.fps, dict(b.meta))
    return out_a, out_b


def scaled(batch: FrameBatch, width: int, height: int) -> FrameBatch:
    """``batch`` scaled to ``width`` x ``height`` by ffmpeg's ``scale`` filter (bicubic)."""
    from pipeline.filtergraph import run_filter
    out = run_filter(f"scale={width}:{height}", [batch])[0]
    return FrameBatch(out.y, out.u, out.v, batch.start, batch.fps, dict(batch.meta))
