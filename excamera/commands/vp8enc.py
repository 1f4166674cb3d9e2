"""``excamera vp8enc``: a video encoded to VP8 (IVF) with excamera's own encoder, frame by frame,
at a constant quantizer or an SSIM target; optionally its reconstruction (Y4M)."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field

from excamera.commands.base import (CliError, UsageError, command, describe, int_in, positive_count,
                                    ssim_target, where)

#: VP8 frame sizes are 14-bit fields (RFC 6386 section 9.1).
VP8_MAX_DIMENSION = 16383


def register(sub) -> None:
    enc = command(
        sub, "vp8enc", cmd_vp8enc, help="encode a video to VP8 (IVF) with the native encoder",
        description="Encode INPUT with excamera's own VP8 encoder. INPUT is a .y4m (8-bit 4:2:0, "
                    "any size), a VP8 .ivf, or anything ffmpeg reads (through PyAV, converted to "
                    "yuv420p). The IVF header takes its size and frame rate from the input. A key "
                    "frame starts the stream and every --keyframe-interval frames.")
    enc.add_argument("input", metavar="INPUT", help="the video to encode")
    enc.add_argument("-o", "--output", metavar="OUT.ivf", required=True,
                     help="the VP8 stream to write (IVF)")
    rate = enc.add_mutually_exclusive_group()
    rate.add_argument("--quantizer", type=int_in(0, 127), metavar="Q",
                      help="constant quantizer index 0..127 for every frame (default 32)")
    rate.add_argument("--ssim", type=ssim_target, metavar="S",
                      help="per frame, the coarsest quantizer whose SSIM (All planes) reaches S, "
                           "0 < S < 1 (about 7 trial encodes per frame)")
    enc.add_argument("--keyframe-interval", type=positive_count, metavar="N", default=128,
                     help="a key frame every N frames (default %(default)s)")
    enc.add_argument("--recon", metavar="R.y4m",
                     help="also write the reconstruction, what any VP8 decoder shows for OUT.ivf")
    enc.add_argument("--speed", type=int_in(0, 4), metavar="0..4", default=1,
                     help="0 slowest and best .. 4 fastest (default %(default)s)")
    enc.add_argument("--frames", type=positive_count, metavar="N",
                     help="encode only the first N pictures")


def _check_usage(args: argparse.Namespace) -> None:
    if not args.output.lower().endswith(".ivf"):
        raise UsageError(f"-o {args.output}: the output must end in .ivf")
    if args.recon is not None and not args.recon.lower().endswith(".y4m"):
        raise UsageError(f"--recon {args.recon}: the reconstruction must end in .y4m")


@dataclass
class _Outputs:
    """The IVF stream and the reconstruction: written as frames come, committed together on
    success; on any failure none is left (one already renamed is removed)."""

    items: list = field(default_factory=list)   # (path, writer)
    committed: list = field(default_factory=list)

    def add(self, path: str, make):
        try:
            writer = make()
        except OSError as e:
            raise CliError(f"{where(path)}: {describe(e)}") from None
        self.items.append((path, writer))
        return writer

    def write(self, datas) -> None:
        for (path, writer), data in zip(self.items, datas):
            try:
                writer.write(data)
            except OSError as e:
                raise CliError(f"{where(path)}: {describe(e)}") from None

    def commit(self) -> None:
        for path, writer in self.items:
            try:
                writer.close()
            except OSError as e:
                raise CliError(f"{where(path)}: {describe(e)}") from None
            self.committed.append(path)

    def abandon(self) -> None:
        for _, writer in self.items:
            writer.abort()
        for path in self.committed:
            try:
                os.unlink(path)
            except OSError:
                pass


@dataclass
class _Stats:
    frames: int = 0
    keys: int = 0
    size: int = 0
    quantizers: list = field(default_factory=list)


def cmd_vp8enc(args: argparse.Namespace) -> int:
    import time

    from codec.errors import VP8Error
    from media.video import open_video

    _check_usage(args)
    try:
        video = open_video(args.input)
    except (VP8Error, OSError) as e:
        raise CliError(f"{where(args.input)}: {describe(e)}") from None
    outputs, progress, stats = _Outputs(), None, _Stats()
    try:
        image = _next_picture(video, args.input)  # its size, not the container's claim, is the stream's
        if image is None:
            raise CliError(f"{where(args.input)}: no pictures in the input: nothing to encode")
        width, height = _check_size(args.input, image)
        rate, scale = _ivf_rate(args.input, video.rate)
        encoder = _open_outputs(args, outputs, width, height, rate, scale)
        progress = _progress(args, video)
        start, cpu_start = time.perf_counter(), time.process_time()
        _encode_all(args, video, image, encoder, outputs, progress, stats)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        outputs.commit()
        progress.set(progress_label(args.input), stats.frames)
        progress.close()
    except BaseException:
        if progress is not None:
            progress.close()
        outputs.abandon()
        raise
    finally:
        video.close()
    _report(args.output, stats, width, height, rate, scale, elapsed, cpu)
    return 0


def _next_picture(video, path: str):
    from codec.errors import VP8Error

    try:
        return next(video, None)
    except (VP8Error, OSError) as e:
        raise CliError(f"{where(path)}: {describe(e)}") from None


def _check_size(path: str, image) -> tuple[int, int]:
    width, height = image.width, image.height
    if not (1 <= width <= VP8_MAX_DIMENSION and 1 <= height <= VP8_MAX_DIMENSION):
        raise CliError(f"{where(path)}: the picture size {width}x{height} is outside what "
                       f"VP8 codes, 1x1..{VP8_MAX_DIMENSION}x{VP8_MAX_DIMENSION}")
    return width, height


def _open_outputs(args, outputs: _Outputs, width: int, height: int, rate: int, scale: int):
    """The encoder, and the IVF stream (and reconstruction) opened for writing."""
    from codec.encoder import Encoder, EncoderConfig
    from codec.ivf import IvfHeader, IvfWriter
    from codec.y4m import Y4mWriter

    config = EncoderConfig(quantizer=32 if args.quantizer is None else args.quantizer, ssim=args.ssim,
                           keyframe_interval=args.keyframe_interval, speed=args.speed)
    encoder = Encoder(config)
    outputs.add(args.output, lambda: IvfWriter(args.output, IvfHeader(width=width, height=height, rate=rate,
                                                                      scale=scale)))
    if args.recon is not None:
        outputs.add(args.recon, lambda: Y4mWriter(args.recon, width, height, (rate, scale)))
    return encoder


def progress_label(path: str) -> str:
    return f"encoding {os.path.basename(path)}"


def _progress(args, video):
    """Frames done of the total (the input's hint, or --frames) on a terminal."""
    from excamera.commands.progress import Progress

    total = video.frame_count_hint
    if args.frames is not None:
        total = args.frames if total is None else min(total, args.frames)
    return Progress({progress_label(args.input): total}, unit="frames")


def _encode_all(args, video, image, encoder, outputs: _Outputs, progress, stats: _Stats) -> None:
    width, height = image.width, image.height
    label = progress_label(args.input)
    while image is not None:
        if (image.width, image.height) != (width, height):
            raise CliError(f"{where(args.input)}: frame {stats.frames} is {image.width}x{image.height} but "
                           f"the video started at {width}x{height}; vp8enc encodes one size")
        encoded = encoder.encode(image)
        outputs.write((encoded.data, encoded.recon))
        stats.frames += 1
        stats.keys += encoded.key_frame
        stats.size += len(encoded.data)
        stats.quantizers.append(encoded.quantizer)
        progress.set(label, stats.frames)
        more = args.frames is None or stats.frames < args.frames
        image = _next_picture(video, args.input) if more else None


def _report(output: str, stats: _Stats, width: int, height: int, rate: int, scale: int,
            elapsed: float, cpu: float) -> None:
    frames, qs = stats.frames, stats.quantizers
    kbps = 8 * stats.size * rate / scale / frames / 1000
    q = (f"quantizer {qs[0]}" if min(qs) == max(qs)
         else f"quantizer {min(qs)}..{max(qs)} (mean {sum(qs) / frames:.1f})")
    speed = (f", encoded in {elapsed:.3f} s ({cpu:.3f} s CPU, {frames / elapsed:.2f} frames/s)"
             if elapsed > 0 else "")
    print(f"{output}: {frames} frames ({stats.keys} key), {width}x{height}, {stats.size} bytes, "
          f"{kbps:.1f} kbit/s at {rate}/{scale} fps, {q}{speed}")
    sys.stdout.flush()


def _ivf_rate(path: str, rate: tuple[int, int]) -> tuple[int, int]:
    """The input's frame rate as the IVF header's (rate, scale): 30/1 when the input leaves it
    unknown (0), an error when it does not fit the header's 32-bit fields."""
    num, den = rate
    if num <= 0 or den <= 0:
        return 30, 1
    if num >= 1 << 32 or den >= 1 << 32:
        raise CliError(f"{where(path)}: the frame rate {num}/{den} does not fit the IVF header "
                       f"(32-bit numerator and denominator)")
    return num, den
