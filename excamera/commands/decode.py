"""``excamera decode``: an IVF file of VP8 frames decoded bit-exactly like libvpx, to Y4M or raw
I420, per-frame md5s, or a one-line summary; decoder states in and out (``--state-in/-out``)."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field

from excamera.commands.base import CliError, UsageError, command, describe, frame_count, internal, where


def register(sub) -> None:
    dec = command(
        sub, "decode", cmd_decode, help="decode an IVF file of VP8 frames",
        description="Decode INPUT.ivf bit-exactly like libvpx. Without -o or --frame-md5, print a "
                    "summary (frames, size, md5 of all output). Frames are numbered from 0, offsets "
                    "are byte offsets of the frame record in the file.")
    dec.add_argument("input", metavar="INPUT.ivf", help="IVF file with fourcc VP80")
    dec.add_argument("-o", "--output", metavar="OUT",
                     help="OUT.y4m (Y4M, frame rate from the IVF header), OUT.i420 or OUT.yuv "
                          "(raw I420 planes), or - (raw I420 on standard output)")
    dec.add_argument("--frame-md5", action="store_true",
                     help="print '<md5>  <stem>-<W>x<H>-<NNNN>.i420' per shown frame, the format "
                          "of the conformance .md5 files (NNNN: 1-based IVF frame number)")
    dec.add_argument("--frames", type=frame_count, metavar="N",
                     help="stop after N IVF frames (hidden frames count)")
    dec.add_argument("--state-in", metavar="FILE",
                     help="start from this decoder state (from an earlier --state-out) instead of "
                          "an empty decoder")
    dec.add_argument("--state-out", metavar="FILE",
                     help="write the decoder state after the last decoded frame")


def _check_usage(args: argparse.Namespace) -> None:
    out = args.output
    if out is not None and out != "-" and not out.lower().endswith((".y4m", ".i420", ".yuv")):
        raise UsageError(f"-o {out}: the output must end in .y4m, .i420 or .yuv, or be -")
    if out == "-" and args.frame_md5:
        raise UsageError("--frame-md5 and -o - both write to standard output; use one")


@dataclass
class _Tally:
    """What the summary line says: frames decoded and shown, the sizes seen, md5 of all output."""

    decoded: int = 0
    shown: int = 0
    sizes: list[str] = field(default_factory=list)
    whole: object = None

    def __post_init__(self):
        import hashlib

        self.whole = hashlib.md5()


def cmd_decode(args: argparse.Namespace) -> int:
    import time

    from codec.errors import VP8Error
    from codec.ivf import IvfReader

    _check_usage(args)
    try:
        reader = IvfReader(args.input)
    except (VP8Error, OSError) as e:
        raise CliError(f"{where(args.input)}: {describe(e)}") from None
    outputs: list = []  # everything to commit on success / discard on failure, in order
    tally = _Tally()
    try:
        decoder = _make_decoder(args.state_in)
        sink = _open_output(args.output, reader.header.frame_rate)
        if sink is not None:
            outputs.append(sink)
        start = time.perf_counter()
        _decode_frames(args, reader, decoder, sink, tally)
        elapsed = time.perf_counter() - start
        if args.state_out:
            outputs.append(_write_state(args.state_out, decoder.state))
        _commit(outputs)
        sys.stdout.flush()
    except BaseException:
        for out in outputs:
            out.discard()
        raise
    finally:
        reader.close()
    if args.output is None and not args.frame_md5:
        rate = f", {tally.decoded / elapsed:.1f} frames/s" if elapsed > 0 and tally.decoded else ""
        print(f"{args.input}: {tally.decoded} frames ({tally.shown} shown), "
              f"{' -> '.join(tally.sizes) or 'no picture'}{rate}, md5 {tally.whole.hexdigest()}")
    return 0


def _decode_frames(args, reader, decoder, sink, tally: _Tally) -> None:
    """Read and decode frame after frame (up to ``--frames``), each shown picture to its outputs."""
    from codec.errors import VP8Error

    path = args.input
    while args.frames is None or tally.decoded < args.frames:
        index, offset = reader.position
        try:
            frame = reader.read_frame()
        except (VP8Error, OSError) as e:
            raise CliError(f"{where(path, index, offset)}: {describe(e)}") from None
        if frame is None:
            break
        if tally.decoded == 0 and args.state_in:
            _check_state_fits(decoder.state, args.state_in, path, reader.header, frame.data)
        try:
            image = decoder.decode(frame.data)
        except (VP8Error, OSError) as e:
            raise CliError(f"{where(path, index, offset)}: {describe(e)}") from None
        except Exception as e:  # noqa: BLE001 - a decoder bug must still be one line
            raise CliError(f"{where(path, index, offset)}: {internal(e)}") from None
        tally.decoded += 1
        if image is not None:  # show_frame=0 (e.g. an altref) updates references, shows nothing
            _emit(args, image, index, offset, sink, tally)


def _emit(args, image, index: int, offset: int, sink, tally: _Tally) -> None:
    """One shown picture: its md5 line, to the sink, into the summary's md5."""
    from codec.errors import VP8Error

    tally.shown += 1
    size = f"{image.width}x{image.height}"
    if not tally.sizes or tally.sizes[-1] != size:
        tally.sizes.append(size)
    try:
        if args.frame_md5:
            # NNNN is the 1-based number of the IVF frame that showed this picture, as vpxdec's
            # "%4" writes it: a hidden frame leaves a gap (see the .md5 files of
            # vp80-00-comprehensive-018 and vp80-05-sharpness-1439).
            print(f"{image.md5()}  {_stem(args.input)}-{size}-{index + 1:04d}.i420")
        if sink is not None:
            sink.write(image)
        if args.output is None and not args.frame_md5:
            tally.whole.update(image.i420_buffer())
    except VP8Error as e:
        raise CliError(f"{where(args.output, index, offset)}: {describe(e)}") from None
    except BrokenPipeError:
        raise
    except OSError as e:
        raise CliError(f"{where(args.output or '<stdout>')}: {describe(e)}") from None


def _stem(path: str) -> str:
    stem = os.path.basename(path)
    return stem[:-4] if stem.lower().endswith(".ivf") else stem


def _write_state(path: str, state):
    """The decoder state after the last frame, written (not yet committed) to ``path``."""
    from codec.ivf import AtomicFile

    if state is None:
        raise CliError(f"{where(path)}: no frame was decoded, so there is no state to write")
    try:
        out = AtomicFile(path)
    except OSError as e:
        raise CliError(f"{where(path)}: {describe(e)}") from None
    try:
        out.write(state.to_bytes())
    except OSError as e:
        out.discard()
        raise CliError(f"{where(path)}: {describe(e)}") from None
    return out


def _commit(outputs: list) -> None:
    for out in outputs:
        try:
            out.commit()
        except OSError as e:
            raise CliError(f"{where(getattr(out, 'path', '<stdout>'))}: {describe(e)}") from None


def _make_decoder(state_in: str | None):
    from codec.decoder import Decoder
    from excamera.commands.base import load_state

    return Decoder() if state_in is None else Decoder(load_state(state_in))


def _check_state_fits(state, state_path: str, path: str, header, data: bytes) -> None:
    """An interframe carries no size: a state for another frame size would decode garbage, so
    compare the state's size (when it has one) with the IVF header's before the first frame."""
    width, height = getattr(state, "width", None), getattr(state, "height", None)
    is_interframe = bool(data) and data[0] & 1
    if (is_interframe and isinstance(width, int) and isinstance(height, int)
            and header.width and header.height and (width, height) != (header.width, header.height)):
        raise CliError(f"{where(state_path)}: the decoder state is for {width}x{height} frames but "
                       f"{path} is {header.width}x{header.height}")


class _Stdout:
    """Raw bytes to standard output; commit/discard are no-ops (it cannot be taken back)."""

    path = "<stdout>"

    def write(self, data: bytes) -> None:
        sys.stdout.buffer.write(data)

    def commit(self) -> None:
        sys.stdout.buffer.flush()

    def discard(self) -> None:
        pass


class _Y4mSink:
    def __init__(self, path: str, rate: tuple[int, int]):
        from codec.y4m import Y4mWriter

        self.path = path
        self.writer = Y4mWriter(path, rate=rate)

    def write(self, image) -> None:
        self.writer.write(image)

    def commit(self) -> None:
        self.writer.close()

    def discard(self) -> None:
        self.writer.abort()


class _RawSink:
    def __init__(self, target):
        self.target = target
        self.path = getattr(target, "path", "<stdout>")

    def write(self, image) -> None:
        self.target.write(image.i420_buffer())

    def commit(self) -> None:
        self.target.commit()

    def discard(self) -> None:
        self.target.discard()


def _open_output(output: str | None, rate: tuple[int, int]):
    from codec.ivf import AtomicFile

    if output is None:
        return None
    try:
        if output == "-":
            return _RawSink(_Stdout())
        if output.lower().endswith(".y4m"):
            return _Y4mSink(output, rate)
        return _RawSink(AtomicFile(output))
    except OSError as e:
        raise CliError(f"{where(output)}: {describe(e)}") from None
