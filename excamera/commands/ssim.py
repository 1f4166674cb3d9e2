"""``excamera ssim``: SSIM between two videos, picture by picture, as ffmpeg's ssim filter
computes it."""

from __future__ import annotations

import argparse
import sys

from excamera.commands.base import CliError, command, describe, positive_count, where


def register(sub) -> None:
    ssim = command(
        sub, "ssim", cmd_ssim, help="SSIM between two videos, as ffmpeg's ssim filter computes it",
        description="Compare two videos picture by picture: SSIM of Y, U, V and All (planes "
                    "weighted by size), and in dB, -10 log10(1 - SSIM). Inputs: .y4m (8-bit "
                    "4:2:0), .ivf (VP8, decoded here; hidden frames are not pictures), or anything "
                    "ffmpeg reads (through PyAV, converted to yuv420p). Both must have the same "
                    "size and, unless --frames is given, the same number of pictures: a "
                    "difference is an error, not a silent comparison of the common part.")
    ssim.add_argument("a", metavar="A", help="first video (the reference, say)")
    ssim.add_argument("b", metavar="B", help="second video (say, a decoded encode)")
    ssim.add_argument("--per-frame", action="store_true",
                      help="print one line per picture, 'frame <n>: Y .. U .. V .. All ..' "
                           "(n from 0), before the mean")
    ssim.add_argument("--frames", type=positive_count, metavar="N",
                      help="compare only the first N pictures of each (both must have at least N)")


def _opened(path: str):
    from codec.errors import VP8Error
    from media.video import open_video

    try:
        return open_video(path)
    except (VP8Error, OSError) as e:
        raise CliError(f"{where(path)}: {describe(e)}") from None


def _next_picture(video):
    from codec.errors import VP8Error

    try:
        return next(video, None)
    except (VP8Error, OSError) as e:
        raise CliError(f"{where(video.path)}: {describe(e)}") from None


def cmd_ssim(args: argparse.Namespace) -> int:
    from codec.ssim import SsimMean, ssim_planes

    with _opened(args.a) as a, _opened(args.b) as b:
        mean = SsimMean()
        index = 0
        while args.frames is None or index < args.frames:
            pa, pb = _next_picture(a), _next_picture(b)
            if pa is None or pb is None:
                if pa is None and pb is None:
                    break
                _count_mismatch(a if pa is None else b, b if pa is None else a, index, args.frames)
            if (pa.width, pa.height) != (pb.width, pb.height):
                raise CliError(f"frame {index}: {a.path} is {pa.width}x{pa.height} but {b.path} "
                               f"is {pb.width}x{pb.height}; SSIM compares pictures of one size")
            value = ssim_planes(pa, pb)
            mean.add(value)
            if args.per_frame:
                print(f"frame {index}: {_ssim_text(value)}")
            index += 1
        if not mean.count:
            raise CliError(f"{a.path} and {b.path} hold no pictures: nothing to compare")
        print(f"mean of {mean.count} frames: {_ssim_text(mean.mean())}")
        sys.stdout.flush()
    return 0


def _count_mismatch(short, other, count: int, wanted: int | None) -> None:
    """One of the videos ended after ``count`` pictures: always an error (a silent comparison of
    the common part would hide a dropped or duplicated frame)."""
    if wanted is not None:
        raise CliError(f"{short.path} has only {count} frames, fewer than --frames {wanted}")
    hint = f"; --frames {count} compares the first {count}" if count else ""
    raise CliError(f"{short.path} has {count} frames but {other.path} has more{hint}")


def _ssim_text(value) -> str:
    """``Y 0.987654 (19.085 dB)  U ...  V ...  All ...``, dB ``inf`` for identical planes."""
    db = value.db()
    return "  ".join(f"{name} {s:.6f} ({d:.3f} dB)" for name, s, d in zip(("Y", "U", "V", "All"), value, db))
