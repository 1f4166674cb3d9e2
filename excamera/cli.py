"""The ``excamera`` command line.

Contract (DESIGN.md, "CLI contract"): exit status 0 on success; 1 on a runtime error, bad input
included, with exactly one line on stderr, ``excamera: error: <what and where>``; 2 on a usage
error (argparse); 130 on Ctrl-C. Never a traceback for bad input. Output files are written under a
temporary name and renamed only when complete, so a failed run leaves nothing behind.

Heavy modules (numpy, numba, the codec) are imported inside the command functions, never at
module level, so ``excamera --help`` is instant.
"""

from __future__ import annotations

import argparse
import atexit
import os
import sys
import threading

PROG = "excamera"


class CliError(Exception):
    """A runtime failure, already phrased as the one line to print after ``excamera: error: ``."""


def where(path: str, frame: int | None = None, offset: int | None = None) -> str:
    """``<file>: frame <n> (offset <o>)``, the prefix of every error message."""
    if frame is None:
        return os.fspath(path)
    return f"{path}: frame {frame} (offset {offset})"


def describe(exc: BaseException) -> str:
    """One line for an exception: OSErrors by their strerror, others by their message."""
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())  # one line, whatever the message held


def _frame_count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more: {n}")
    return n


def _positive_count(text: str) -> int:
    n = _frame_count(text)
    if n == 0:
        raise argparse.ArgumentTypeError("must be 1 or more: 0")
    return n


def int_in(lo: int, hi: int):
    """An argparse type: a whole number in lo..hi (a usage error otherwise)."""
    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if not lo <= n <= hi:
            raise argparse.ArgumentTypeError(f"must be in {lo}..{hi}: {n}")
        return n
    return parse


def _ssim_target(text: str) -> float:
    try:
        s = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 < s < 1.0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive): {text}")
    return s


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="VP8 with explicit decoder state, after ExCamera (NSDI 2017).",
        epilog="Errors: one line on stderr, 'excamera: error: <file>: frame <n> (offset <o>): <what>'; "
               "exit 1 on bad input, 2 on a usage error.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    dec = sub.add_parser(
        "decode", help="decode an IVF file of VP8 frames",
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
    dec.add_argument("--frames", type=_frame_count, metavar="N",
                     help="stop after N IVF frames (hidden frames count)")
    dec.add_argument("--state-in", metavar="FILE",
                     help="start from this decoder state (from an earlier --state-out) instead of "
                          "an empty decoder")
    dec.add_argument("--state-out", metavar="FILE",
                     help="write the decoder state after the last decoded frame")
    dec.set_defaults(func=cmd_decode)

    ssim = sub.add_parser(
        "ssim", help="SSIM between two videos, as ffmpeg's ssim filter computes it",
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
    ssim.add_argument("--frames", type=_positive_count, metavar="N",
                      help="compare only the first N pictures of each (both must have at least N)")
    ssim.set_defaults(func=cmd_ssim)
    from excamera import runtime_cli  # argparse only; the runtime loads when a command runs
    runtime_cli.register(sub)
    from excamera import lambda_cli  # argparse only
    lambda_cli.register(sub)

    enc = sub.add_parser(
        "vp8enc", help="encode a video to VP8 (IVF) with the native encoder",
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
    rate.add_argument("--ssim", type=_ssim_target, metavar="S",
                      help="per frame, the coarsest quantizer whose SSIM (All planes) reaches S, "
                           "0 < S < 1 (about 7 trial encodes per frame)")
    enc.add_argument("--keyframe-interval", type=_positive_count, metavar="N", default=128,
                     help="a key frame every N frames (default %(default)s)")
    enc.add_argument("--recon", metavar="R.y4m",
                     help="also write the reconstruction, what any VP8 decoder shows for OUT.ivf")
    enc.add_argument("--speed", type=int_in(0, 4), metavar="0..4", default=1,
                     help="0 slowest and best .. 4 fastest (default %(default)s)")
    enc.add_argument("--frames", type=_positive_count, metavar="N",
                     help="encode only the first N pictures")
    enc.set_defaults(func=cmd_vp8enc)

    term = sub.add_parser(
        "terminate-chunk", help="rewrite a chunk so it exits with one picture in all references",
        description="Rewrite the last shown frame of IN.ivf so that it refreshes the last, golden "
                    "and altref references (no copies): the chunk shows the same pictures and exits "
                    "with last = golden = altref. Hidden frames after the last shown one are "
                    "dropped. The chunk's recorded entry digest (IVF bytes 28-31) must match the "
                    "state it starts from (--state-in, or the empty state); it is kept in OUT.ivf.")
    term.add_argument("input", metavar="IN.ivf", help="chunk IVF file (VP80)")
    term.add_argument("-o", "--output", metavar="OUT.ivf", required=True, help="the rewritten chunk")
    term.add_argument("--state-in", metavar="S0",
                      help="decoder state the chunk is coded against (default: the empty state)")
    term.add_argument("--state-out", metavar="S", help="write the chunk's exit state here")
    term.set_defaults(func=cmd_terminate_chunk)

    stitch = sub.add_parser(
        "stitch", help="join chunks into one stream, checking that their states chain",
        description="Decode the chunks in order and write the stream they make. Before each chunk "
                    "its recorded entry digest (IVF bytes 28-31) must equal the digest of the real "
                    "decoder state, or be zero with the chunk starting with a key frame; otherwise "
                    "nothing is written. OUT.ivf takes its size from the first key frame and its "
                    "rate from the first chunk; OUT.webm is muxed through PyAV without re-encoding.")
    stitch.add_argument("chunks", metavar="CHUNK.ivf", nargs="*", help="chunk files, in order")
    stitch.add_argument("-o", "--output", metavar="OUT", required=True, help="OUT.ivf or OUT.webm")
    stitch.set_defaults(func=cmd_stitch)
    from excamera.encode_cli import add_parsers as add_encode_parsers  # light: argparse only
    add_encode_parsers(sub)
    from excamera.pipeline_cli import add_parsers as add_pipeline_parsers  # light: argparse only
    add_pipeline_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # usage errors: message on stderr, SystemExit(2)
    if args.command == "decode":
        out = args.output
        if out is not None and out != "-" and not out.lower().endswith((".y4m", ".i420", ".yuv")):
            parser.error(f"-o {out}: the output must end in .y4m, .i420 or .yuv, or be -")
        if out == "-" and args.frame_md5:
            parser.error("--frame-md5 and -o - both write to standard output; use one")
    elif args.command == "vp8enc":
        if not args.output.lower().endswith(".ivf"):
            parser.error(f"-o {args.output}: the output must end in .ivf")
        if args.recon is not None and not args.recon.lower().endswith(".y4m"):
            parser.error(f"--recon {args.recon}: the reconstruction must end in .y4m")
    elif args.command == "stitch" and not args.output.lower().endswith((".ivf", ".webm")):
        parser.error(f"-o {args.output}: the output must end in .ivf or .webm")
    try:
        return args.func(args)
    except CliError as e:
        _error(str(e))
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader of our stdout went away (e.g. `| head`); nothing more to say.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except OSError:
            pass
        return 1
    except Exception as e:  # noqa: BLE001 - never a traceback; _internal says it is a bug
        _error(_internal(e))
        return 1


def run() -> None:
    """The ``excamera`` console script: ``main()``, then exit without tearing the interpreter down.

    Tearing down numba's compiled-code objects costs about 0.08 s of CPU, more than some encodes;
    a worker process starts and exits thousands of times. The exit handlers still run and the
    output streams are flushed; only the final garbage collection is skipped. While a thread other
    than the main one is alive, the interpreter's normal exit joins it instead.

    numpy's OpenBLAS is held to one thread unless the environment says otherwise: at numpy's import
    it starts a thread per core, whose spinning cost every process about 0.1 s of CPU (a third of
    a warm start-up), and nothing here multiplies matrices with it."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    code = main()
    if threading.active_count() > 1:
        sys.exit(code)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can reach it
            code = code or 1
    atexit._run_exitfuncs()
    os._exit(code)


def _error(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)


def _internal(exc: BaseException) -> str:
    """An exception that is not an input error is a bug; still one line, unless debugging."""
    if os.environ.get("EXCAMERA_DEBUG"):
        raise exc
    return f"internal error (a bug, please report it): {type(exc).__name__}: {describe(exc)}"


class _Stdout:
    """Raw bytes to standard output; commit/discard are no-ops (it cannot be taken back)."""

    def write(self, data: bytes) -> None:
        sys.stdout.buffer.write(data)

    def commit(self) -> None:
        sys.stdout.buffer.flush()

    def discard(self) -> None:
        pass


def cmd_decode(args: argparse.Namespace) -> int:
    import hashlib
    import time

    from codec.errors import VP8Error
    from codec.ivf import AtomicFile, IvfReader

    path = args.input
    stem = os.path.basename(path)
    if stem.lower().endswith(".ivf"):
        stem = stem[:-4]

    try:
        reader = IvfReader(path)
    except (VP8Error, OSError) as e:
        raise CliError(f"{where(path)}: {describe(e)}") from None

    outputs: list = []  # everything to commit on success / discard on failure, in order
    try:
        decoder = _make_decoder(args.state_in)
        sink = _open_output(args.output, reader.header.frame_rate)
        if sink is not None:
            outputs.append(sink)
        whole = hashlib.md5()
        summary = args.output is None and not args.frame_md5
        decoded = shown = 0
        sizes: list[str] = []
        start = time.perf_counter()

        while args.frames is None or decoded < args.frames:
            index, offset = reader.position
            try:
                frame = reader.read_frame()
            except (VP8Error, OSError) as e:
                raise CliError(f"{where(path, index, offset)}: {describe(e)}") from None
            if frame is None:
                break
            if decoded == 0 and args.state_in:
                _check_state_fits(decoder.state, args.state_in, path, reader.header, frame.data)
            try:
                image = decoder.decode(frame.data)
            except (VP8Error, OSError) as e:
                raise CliError(f"{where(path, index, offset)}: {describe(e)}") from None
            except Exception as e:  # noqa: BLE001 - a decoder bug must still be one line
                raise CliError(f"{where(path, index, offset)}: {_internal(e)}") from None
            decoded += 1
            if image is None:
                continue  # show_frame=0 (e.g. an altref): updates references, shows nothing
            shown += 1
            size = f"{image.width}x{image.height}"
            if not sizes or sizes[-1] != size:
                sizes.append(size)
            try:
                if args.frame_md5:
                    # NNNN is the 1-based number of the IVF frame that showed this picture, as
                    # vpxdec's "%4" writes it: a hidden frame leaves a gap (see the .md5 files
                    # of vp80-00-comprehensive-018 and vp80-05-sharpness-1439).
                    print(f"{image.md5()}  {stem}-{size}-{index + 1:04d}.i420")
                if sink is not None:
                    sink.write(image)
                if summary:
                    whole.update(image.i420_buffer())
            except VP8Error as e:
                raise CliError(f"{where(args.output, index, offset)}: {describe(e)}") from None
            except BrokenPipeError:
                raise
            except OSError as e:
                raise CliError(f"{where(args.output or '<stdout>')}: {describe(e)}") from None
        elapsed = time.perf_counter() - start

        if args.state_out:
            state = decoder.state
            if state is None:
                raise CliError(f"{where(args.state_out)}: no frame was decoded, so there is no "
                               f"state to write")
            try:
                out = AtomicFile(args.state_out)
                outputs.append(out)
                out.write(state.to_bytes())
            except OSError as e:
                raise CliError(f"{where(args.state_out)}: {describe(e)}") from None

        for out in outputs:
            try:
                out.commit()
            except OSError as e:
                raise CliError(f"{where(getattr(out, 'path', '<stdout>'))}: {describe(e)}") from None
        sys.stdout.flush()
    except BaseException:
        for out in outputs:
            out.discard()
        raise
    finally:
        reader.close()

    if summary:
        rate = f", {decoded / elapsed:.1f} frames/s" if elapsed > 0 and decoded else ""
        print(f"{path}: {decoded} frames ({shown} shown), {' -> '.join(sizes) or 'no picture'}"
              f"{rate}, md5 {whole.hexdigest()}")
    return 0


def _make_decoder(state_in: str | None):
    from codec.decoder import Decoder
    from codec.errors import VP8Error

    if state_in is None:
        return Decoder()
    from codec.state import DecoderState

    try:
        with open(state_in, "rb") as f:
            return Decoder(DecoderState.from_bytes(f.read()))
    except (VP8Error, OSError) as e:
        raise CliError(f"{where(state_in)}: {describe(e)}") from None


def _check_state_fits(state, state_path: str, path: str, header, data: bytes) -> None:
    """An interframe carries no size: a state for another frame size would decode garbage, so
    compare the state's size (when it has one) with the IVF header's before the first frame."""
    width, height = getattr(state, "width", None), getattr(state, "height", None)
    is_interframe = bool(data) and data[0] & 1
    if (is_interframe and isinstance(width, int) and isinstance(height, int)
            and header.width and header.height and (width, height) != (header.width, header.height)):
        raise CliError(f"{where(state_path)}: the decoder state is for {width}x{height} frames but "
                       f"{path} is {header.width}x{header.height}")


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


def _load_state(path: str | None):
    """The decoder state saved in ``path`` (``--state-in``), or the empty state for None."""
    from codec.errors import VP8Error
    from codec.state import DecoderState

    if path is None:
        return DecoderState()
    try:
        with open(path, "rb") as f:
            return DecoderState.from_bytes(f.read())
    except (VP8Error, OSError) as e:
        raise CliError(f"{where(path)}: {describe(e)}") from None


def _read_chunk(path: str):
    from codec.chunks import read_chunk
    from codec.errors import VP8Error

    try:
        return read_chunk(path)
    except VP8Error as e:
        raise CliError(describe(e)) from None  # read_chunk names the file
    except OSError as e:
        raise CliError(f"{where(path)}: {describe(e)}") from None


def cmd_terminate_chunk(args: argparse.Namespace) -> int:
    import dataclasses

    from codec.chunks import check_entry, terminate_chunk
    from codec.errors import VP8Error
    from codec.ivf import AtomicFile, IvfWriter

    chunk = _read_chunk(args.input)
    state = _load_state(args.state_in)
    try:
        check_entry(chunk, state)
        frames, exit_state = terminate_chunk(state, chunk.frames, where=chunk.where)
    except VP8Error as e:
        raise CliError(describe(e)) from None

    outputs: list = []  # (path, commit, discard) of each output, committed together at the end
    try:
        try:
            writer = IvfWriter(args.output, dataclasses.replace(chunk.header, frame_count=0))
            outputs.append((args.output, writer.close, writer.abort))
            for data in frames:
                writer.write(data)
        except OSError as e:
            raise CliError(f"{where(args.output)}: {describe(e)}") from None
        if args.state_out:
            try:
                out = AtomicFile(args.state_out)
                outputs.append((args.state_out, out.commit, out.discard))
                out.write(exit_state.to_bytes())
            except OSError as e:
                raise CliError(f"{where(args.state_out)}: {describe(e)}") from None
        for path, commit, _ in outputs:
            try:
                commit()
            except OSError as e:
                raise CliError(f"{where(path)}: {describe(e)}") from None
    except BaseException:
        for _, _, discard in outputs:
            discard()
        raise
    dropped = len(chunk.frames) - len(frames)
    note = f", {dropped} trailing hidden frame{'s' * (dropped != 1)} dropped" if dropped else ""
    print(f"{args.output}: {len(frames)} frames{note}; exit state {exit_state.digest()}")
    return 0


def cmd_stitch(args: argparse.Namespace) -> int:
    from codec.chunks import stitch_chunks, write_stitched_ivf
    from codec.errors import VP8Error

    if not args.chunks:
        raise CliError("stitch: no chunks given; name the chunk files in order")
    try:
        stitched = stitch_chunks(args.chunks)
    except VP8Error as e:
        raise CliError(describe(e)) from None  # the message names the chunk
    except OSError as e:
        raise CliError(f"{where(e.filename or '?')}: {describe(e)}") from None
    try:
        if args.output.lower().endswith(".webm"):
            from excamera.webm import write_webm

            write_webm(args.output, stitched.frames, stitched.pts, stitched.key_frames, stitched.shown,
                       stitched.width, stitched.height, (stitched.rate, stitched.scale))
        else:
            write_stitched_ivf(args.output, stitched)
    except (VP8Error, OSError) as e:
        raise CliError(f"{where(args.output)}: {describe(e)}") from None
    shown = sum(stitched.shown)
    print(f"{args.output}: {len(stitched.frames)} frames ({shown} shown) from {len(args.chunks)} "
          f"chunks, {stitched.width}x{stitched.height}; final state {stitched.digest}")
    return 0


def cmd_ssim(args: argparse.Namespace) -> int:
    from codec.errors import VP8Error
    from codec.ssim import SsimMean, ssim_planes
    from excamera.video import open_video

    def opened(path: str):
        try:
            return open_video(path)
        except (VP8Error, OSError) as e:
            raise CliError(f"{where(path)}: {describe(e)}") from None

    def next_picture(video):
        try:
            return next(video, None)
        except (VP8Error, OSError) as e:
            raise CliError(f"{where(video.path)}: {describe(e)}") from None

    with opened(args.a) as a, opened(args.b) as b:
        mean = SsimMean()
        index = 0
        while args.frames is None or index < args.frames:
            pa, pb = next_picture(a), next_picture(b)
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


class _Progress:
    """``frames done / total, fps`` as a tqdm bar on stderr, only when stderr is a terminal (never
    in a pipe or a log); redrawn at most five times a second."""

    def __init__(self, label: str, total: int | None, enabled: bool | None = None):
        from excamera.progress import Progress

        self.label = label
        self.bars = Progress({label: total}, unit="frames", enabled=enabled)

    def update(self, done: int) -> None:
        self.bars.set(self.label, done)

    def finish(self, done: int) -> None:
        """Leave the final count on its line."""
        self.update(done)
        self.bars.close()

    def clear(self) -> None:
        """Take the bar down (before an error message takes its place)."""
        self.bars.close()


#: VP8 frame sizes are 14-bit fields (RFC 6386 section 9.1).
VP8_MAX_DIMENSION = 16383


def cmd_vp8enc(args: argparse.Namespace) -> int:
    import time

    from codec.encoder import Encoder, EncoderConfig
    from codec.errors import VP8Error
    from codec.ivf import IvfHeader, IvfWriter
    from codec.y4m import Y4mWriter
    from excamera.video import open_video

    path = args.input
    try:
        video = open_video(path)
    except (VP8Error, OSError) as e:
        raise CliError(f"{where(path)}: {describe(e)}") from None

    def next_picture():
        try:
            return next(video, None)
        except (VP8Error, OSError) as e:
            raise CliError(f"{where(path)}: {describe(e)}") from None

    outputs: list = []  # committed together on success, discarded on any failure
    committed: list[str] = []
    progress = None
    try:
        # The first picture's size, not the container's claim, is the stream's size.
        image = next_picture()
        if image is None:
            raise CliError(f"{where(path)}: no pictures in the input: nothing to encode")
        width, height = image.width, image.height
        if not (1 <= width <= VP8_MAX_DIMENSION and 1 <= height <= VP8_MAX_DIMENSION):
            raise CliError(f"{where(path)}: the picture size {width}x{height} is outside what "
                           f"VP8 codes, 1x1..{VP8_MAX_DIMENSION}x{VP8_MAX_DIMENSION}")
        rate, scale = _ivf_rate(path, video.rate)
        config = EncoderConfig(quantizer=32 if args.quantizer is None else args.quantizer,
                               ssim=args.ssim, keyframe_interval=args.keyframe_interval,
                               speed=args.speed)
        encoder = Encoder(config)
        try:
            ivf = IvfWriter(args.output, IvfHeader(width=width, height=height, rate=rate, scale=scale))
        except OSError as e:
            raise CliError(f"{where(args.output)}: {describe(e)}") from None
        outputs.append((args.output, ivf))
        recon = None
        if args.recon is not None:
            try:
                recon = Y4mWriter(args.recon, width, height, (rate, scale))
            except OSError as e:
                raise CliError(f"{where(args.recon)}: {describe(e)}") from None
            outputs.append((args.recon, recon))

        total = video.frame_count_hint
        if args.frames is not None:
            total = args.frames if total is None else min(total, args.frames)
        progress = _Progress(f"encoding {os.path.basename(path)}", total)
        frames = keys = size = 0
        quantizers: list[int] = []
        start, cpu_start = time.perf_counter(), time.process_time()
        while image is not None:
            if (image.width, image.height) != (width, height):
                raise CliError(f"{where(path)}: frame {frames} is {image.width}x{image.height} but "
                               f"the video started at {width}x{height}; vp8enc encodes one size")
            encoded = encoder.encode(image)
            for name, out, data in zip((args.output, args.recon), (ivf, recon),
                                       (encoded.data, encoded.recon)):
                if out is not None:
                    try:
                        out.write(data)
                    except OSError as e:
                        raise CliError(f"{where(name)}: {describe(e)}") from None
            frames += 1
            keys += encoded.key_frame
            size += len(encoded.data)
            quantizers.append(encoded.quantizer)
            progress.update(frames)
            image = next_picture() if args.frames is None or frames < args.frames else None
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start

        for name, out in outputs:
            try:
                out.close()
            except OSError as e:
                raise CliError(f"{where(name)}: {describe(e)}") from None
            committed.append(name)
        progress.finish(frames)
    except BaseException:
        if progress is not None:
            progress.clear()
        for _, out in outputs:
            out.abort()
        for name in committed:  # an output renamed before a later one failed: not half a result
            try:
                os.unlink(name)
            except OSError:
                pass
        raise
    finally:
        video.close()

    kbps = 8 * size * rate / scale / frames / 1000
    q = (f"quantizer {quantizers[0]}" if min(quantizers) == max(quantizers)
         else f"quantizer {min(quantizers)}..{max(quantizers)} (mean {sum(quantizers) / frames:.1f})")
    speed = (f", encoded in {elapsed:.3f} s ({cpu:.3f} s CPU, {frames / elapsed:.2f} frames/s)"
             if elapsed > 0 else "")
    print(f"{args.output}: {frames} frames ({keys} key), {width}x{height}, {size} bytes, "
          f"{kbps:.1f} kbit/s at {rate}/{scale} fps, {q}{speed}")
    sys.stdout.flush()
    return 0


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


if __name__ == "__main__":
    sys.exit(main())
