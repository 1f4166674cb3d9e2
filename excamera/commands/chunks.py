"""The chunk commands: ``excamera terminate-chunk`` (a chunk made to exit with one picture in
every reference), ``excamera stitch`` (chunks joined, their states proven to chain) and
``excamera reencode`` (one chunk re-encoded onto a given state, ExCamera's xc-enc -r)."""

from __future__ import annotations

import argparse

from excamera.commands.base import CliError, UsageError, command, describe, load_state, where, write_ivf


def _weight(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"must be 0..1: {v}")
    return v


def register(sub) -> None:
    term = command(
        sub, "terminate-chunk", cmd_terminate_chunk,
        help="rewrite a chunk so it exits with one picture in all references",
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

    stitch = command(
        sub, "stitch", cmd_stitch, help="join chunks into one stream, checking that their states chain",
        description="Decode the chunks in order and write the stream they make. Before each chunk "
                    "its recorded entry digest (IVF bytes 28-31) must equal the digest of the real "
                    "decoder state, or be zero with the chunk starting with a key frame; otherwise "
                    "nothing is written. OUT.ivf takes its size from the first key frame and its "
                    "rate from the first chunk; OUT.webm is muxed through PyAV without re-encoding.")
    stitch.add_argument("chunks", metavar="CHUNK.ivf", nargs="*", help="chunk files, in order")
    stitch.add_argument("-o", "--output", metavar="OUT", required=True, help="OUT.ivf or OUT.webm")

    re = command(
        sub, "reencode", cmd_reencode,
        help="re-encode one chunk onto a given decoder state (encode-given-state + rebase)",
        description="Encode RAW's first frame as an interframe against --state-in, then rebase every later "
                    "frame of --prediction (the chunk's first pass) onto the states that follow.")
    re.add_argument("raw", metavar="RAW.y4m")
    re.add_argument("--prediction", required=True, metavar="PRED.ivf")
    re.add_argument("--prediction-state", metavar="S0", help="state PRED.ivf starts from (default: empty)")
    re.add_argument("--state-in", required=True, metavar="S")
    re.add_argument("-o", "--output", required=True, metavar="OUT.ivf")
    re.add_argument("--state-out", metavar="S2")
    re.add_argument("--kf-q-weight", type=_weight, default=0.75, metavar="W")


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
    state = load_state(args.state_in)
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

    if not args.output.lower().endswith((".ivf", ".webm")):
        raise UsageError(f"-o {args.output}: the output must end in .ivf or .webm")
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
            from media.webm import write_webm

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


def _read_video(path: str):
    from media.video import open_video

    try:
        with open_video(path) as video:
            return list(video), video.rate
    except (OSError, ValueError) as e:
        raise CliError(f"{path}: {describe(e)}") from None


def cmd_reencode(args: argparse.Namespace) -> int:
    from codec.chunks import entry_digest_bytes
    from codec.ivf import AtomicFile, read_ivf
    from codec.reencode import reencode_chunk

    frames, rate = _read_video(args.raw)
    try:
        header, pred = read_ivf(args.prediction)
    except (OSError, ValueError) as e:
        raise CliError(f"{args.prediction}: {describe(e)}") from None
    state_in = load_state(args.state_in)
    pred_state = load_state(args.prediction_state) if args.prediction_state else None
    try:
        out = reencode_chunk(state_in, frames, [f.data for f in pred], pred_state, args.kf_q_weight)
    except ValueError as e:
        raise CliError(f"{args.prediction}: {describe(e)}") from None
    h, w = frames[0].y.shape
    write_ivf(args.output, [o.data for o in out], w, h, rate, entry_digest_bytes(state_in))
    if args.state_out:
        with AtomicFile(args.state_out) as f:
            f.write(out[-1].state.to_bytes())
    return 0
