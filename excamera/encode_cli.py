"""``excamera encode`` (ExCamera[N, x]) and ``excamera reencode`` (one chunk, xc-enc -r)."""

from __future__ import annotations

import argparse
import os
import sys
import time


def _weight(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"must be 0..1: {v}")
    return v


def add_parsers(sub) -> None:
    from excamera.cli import int_in
    enc = sub.add_parser(
        "encode", help="encode a video with ExCamera[N, x] (chunks in parallel, rebased in series)",
        description="Encode INPUT (y4m or anything PyAV opens) to VP8 the ExCamera way: chunks of N "
                    "frames encoded independently, each chunk's first frame re-encoded against the "
                    "previous chunk's state and the rest rebased onto it, one key frame every N*x "
                    "frames. --workers N (default: one per CPU) runs the steps on N local worker "
                    "processes through an embedded coordinator and rendezvous, or, with --coordinator, "
                    "on N workers a running coordinator launches; --workers 0 runs every step in this "
                    "process; the same output bytes every way.")
    enc.add_argument("input", metavar="INPUT")
    enc.add_argument("-o", "--output", required=True, metavar="OUT", help="OUT.ivf or OUT.webm")
    enc.add_argument("--workers", type=int_in(0, 100000), default=None, metavar="N",
                     help="N > 0: run the job on the distributed runtime (an embedded coordinator and "
                          "rendezvous, N local worker processes; default: one per CPU); 0: run every "
                          "step in this process")
    enc.add_argument("--spare", type=int_in(0, 100000), default=0, metavar="K",
                     help="K more workers for re-issued and straggling chunks (with --workers N)")
    enc.add_argument("--timeline", metavar="T.json",
                     help="write every worker's state history (with --workers N; "
                          "excamera timeline T.json -o T.svg draws it)")
    enc.add_argument("--coordinator", metavar="HOST:PORT",
                     help="submit the job to a running `excamera coordinator serve` (with --workers N "
                          "and --certs): the raw chunks stream up, the stitched stream comes back")
    enc.add_argument("--certs", metavar="DIR", help="with --coordinator: ca.pem, client.pem, client.key "
                                                   "(from excamera certs init)")
    enc.add_argument("--storage", metavar="URL",
                     help="with --workers N: the job's objects go to s3://BUCKET/PREFIX (AWS configured "
                          "as for any boto3 program: profile, AWS_REGION, AWS_ENDPOINT_URL_S3, ...) or a "
                          "directory, under jobs/JOB_ID/, removed when the job ends (default: a temporary "
                          "directory)")
    enc.add_argument("--keep", action="store_true",
                     help="with --storage: leave the job's objects there when it ends")
    enc.add_argument("--chunk-frames", type=int_in(1, 100000), default=6, metavar="N")
    enc.add_argument("--batch-chunks", type=int_in(1, 100000), default=16, metavar="X")
    enc.add_argument("--cq-level", type=int_in(0, 63), default=20, metavar="C")
    enc.add_argument("--first-pass", choices=("libvpx", "native"), default="libvpx")
    enc.add_argument("--speed", type=int_in(0, 4), default=1, help="native encoder speed 0..4")
    from excamera.lambda_cli import add_backend_args
    add_backend_args(enc)
    enc.set_defaults(func=cmd_encode)

    re = sub.add_parser(
        "reencode", help="re-encode one chunk onto a given decoder state (encode-given-state + rebase)",
        description="Encode RAW's first frame as an interframe against --state-in, then rebase every later "
                    "frame of --prediction (the chunk's first pass) onto the states that follow.")
    re.add_argument("raw", metavar="RAW.y4m")
    re.add_argument("--prediction", required=True, metavar="PRED.ivf")
    re.add_argument("--prediction-state", metavar="S0", help="state PRED.ivf starts from (default: empty)")
    re.add_argument("--state-in", required=True, metavar="S")
    re.add_argument("-o", "--output", required=True, metavar="OUT.ivf")
    re.add_argument("--state-out", metavar="S2")
    re.add_argument("--kf-q-weight", type=_weight, default=0.75, metavar="W")
    re.set_defaults(func=cmd_reencode)


class _StageProgress:
    """Chunks done per stage of a distributed encode, one bar each on a terminal (stderr,
    ``excamera.progress``); fed the job's events (``jobs_pb2.JobEvent``). A chunk counts once per
    stage however many attempts it took."""

    LABELS = {"first-pass": "first pass", "encode-given-state": "given state", "rebase": "rebase",
              "upload": "upload", "stitch": "stitch"}

    def __init__(self, n_chunks: int, tty: bool | None = None):
        from excamera.progress import Progress

        self.progress = Progress({label: (1 if stage == "stitch" else n_chunks)
                                  for stage, label in self.LABELS.items()}, unit="chunks", enabled=tty)
        self.done: dict[str, set] = {stage: set() for stage in self.LABELS}
        self.lost = 0

    def __call__(self, ev) -> None:
        if ev.kind == "transition" and ev.from_state in self.done:
            self.done[ev.from_state].add(ev.task_id)
            self.progress.set(self.LABELS[ev.from_state], len(self.done[ev.from_state]))
        elif ev.kind == "attempt" and ev.detail != "attempt 1":
            self.lost += 1
            self.progress.note("lost", f"{self.lost} re-issued")

    def line(self) -> str:
        return self.progress.line()

    def finish(self) -> None:
        self.progress.close()


class _Progress:
    """Chunks done per stage (reading, first pass, ...) as bars on a terminal (stderr); silent
    otherwise. The total may be unknown (None: a video that does not say how many pictures it
    holds) or an estimate."""

    def __init__(self):
        self.bars = None
        self.stage = ""

    def __call__(self, stage: str, done: int, total: int | None) -> None:
        from excamera.progress import Progress

        if stage != self.stage:
            self.finish()
            self.stage = stage
            self.bars = Progress({stage: total if total and done <= total else None}, unit="chunks")
        self.bars.set(stage, done)

    def finish(self) -> None:
        if self.bars is not None:
            self.bars.close()
            self.bars = None


def _read_video(path: str):
    from excamera.cli import CliError, describe
    from excamera.video import open_video
    try:
        with open_video(path) as video:
            frames = list(video)
            return frames, video.rate
    except (OSError, ValueError) as e:
        raise CliError(f"{path}: {describe(e)}") from None


def _spool(path: str, settings, directory: str):
    """The video's raw chunk objects written to ``directory`` (``SpooledInput``), with progress."""
    from coordinator.excamera_job import SpooledInput
    from excamera.cli import CliError, describe
    from excamera.video import open_video
    try:
        with open_video(path) as video:
            progress = _Progress()
            hint = video.frame_count_hint
            total = -(-hint // settings.chunk_frames) if hint else None
            try:
                spooled = SpooledInput(video, video.rate, settings, directory,
                                       lambda done: progress("reading", done, total))
            finally:
                progress.finish()
    except (OSError, ValueError) as e:
        raise CliError(f"{path}: {describe(e)}") from None
    if not spooled.n_frames:
        raise CliError(f"{path}: no frames")
    return spooled


def _encode_here(path: str, settings):
    """``encode_frames`` straight from the video reader (``--workers 0``): (compressed frames,
    pictures read, width, height, rate)."""
    from excamera.cli import CliError, describe
    from excamera.encode import encode_frames
    from excamera.video import open_video
    try:
        with open_video(path) as video:
            progress = _Progress()
            try:
                data = encode_frames(video, settings, video.rate, progress, total_frames=video.frame_count_hint)
            finally:
                progress.finish()
            return data, video.frames_read, video.width, video.height, video.rate
    except (OSError, ValueError) as e:
        raise CliError(f"{path}: {describe(e)}") from None


def _load_state(path: str):
    from codec.state import DecoderState
    from excamera.cli import CliError, describe
    try:
        with open(path, "rb") as f:
            return DecoderState.from_bytes(f.read())
    except (OSError, ValueError) as e:
        raise CliError(f"{path}: {describe(e)}") from None


def write_ivf(path: str, frames: list[bytes], width: int, height: int, rate: tuple[int, int], user: bytes = bytes(4)):
    from codec.ivf import IvfHeader, IvfWriter
    with IvfWriter(path, IvfHeader(width=width, height=height, rate=rate[0], scale=rate[1],
                                   frame_count=len(frames), user=user)) as w:
        for i, d in enumerate(frames):
            w.write(d, i)


def cmd_encode(args: argparse.Namespace) -> int:
    from excamera.cli import CliError, describe
    from excamera.encode import EncodeSettings
    out = args.output
    if not out.lower().endswith((".ivf", ".webm")):
        raise CliError(f"-o {out}: the output must end in .ivf or .webm")
    if args.workers is None:  # the machine's cores, through the embedded runtime
        args.workers = os.cpu_count() or 1
    if args.workers == 0:
        for flag, value in (("--spare", args.spare), ("--timeline", args.timeline),
                            ("--coordinator", args.coordinator), ("--storage", args.storage)):
            if value:
                return _usage(f"{flag} needs --workers N (N > 0): --workers 0 runs in this process")
    if args.coordinator:
        from excamera.runtime_cli import _address
        try:
            _address(args.coordinator)
        except argparse.ArgumentTypeError as e:
            return _usage(f"--coordinator: {e}")
        if not args.certs:
            return _usage("--coordinator needs --certs DIR (ca.pem, client.pem, client.key)")
        if args.timeline:
            return _usage("--timeline is written by an embedded coordinator; a running one keeps its own")
    elif args.certs:
        return _usage("--certs goes with --coordinator")
    if args.coordinator and args.storage:
        return _usage("--storage is an embedded coordinator's; a running one has its own")
    if args.keep and not args.storage:
        return _usage("--keep needs --storage (the default temporary directory always goes)")
    from excamera.lambda_cli import backend_error
    why = backend_error(args)
    if why is None and args.backend == "lambda" and (args.workers == 0 or args.coordinator):
        why = ("--backend lambda runs the job on an embedded coordinator: it needs --workers N and no "
               "--coordinator (a running one chooses its own backend)")
    if why is not None:
        return _usage(why)
    if args.storage:  # before reading the video: a wrong bucket or no credentials fail in seconds
        from excamera.storage import StorageError, open_storage
        try:
            open_storage(args.storage).check()
        except StorageError as e:
            raise CliError(f"--storage {args.storage}: {str(e).removeprefix(args.storage + ': ')}") from None
    if args.coordinator:  # before reading the video: a bad --certs is the quicker error
        from excamera import tls
        try:
            tls.load(args.certs, need=tls.WORKER_FILES)
        except tls.CertError as e:
            raise CliError(f"--certs {args.certs}: {e}") from None
    settings = EncodeSettings(args.chunk_frames, args.batch_chunks, args.cq_level, args.first_pass, args.speed)
    started = time.monotonic()
    if args.workers == 0:
        # One batch of pictures in memory at a time: read as the encode goes.
        data, n_frames, w, h, rate = _encode_here(args.input, settings)
    else:
        import tempfile
        # One chunk of pictures in memory at a time: the raw chunks go to files first (the job
        # needs the frame count), then into the job's storage or up to the coordinator.
        with tempfile.TemporaryDirectory(prefix="excamera-input-") as spool_dir:
            spooled = _spool(args.input, settings, spool_dir)
            n_frames, w, h, rate = spooled.n_frames, spooled.width, spooled.height, spooled.rate
            try:
                if args.coordinator:
                    data = _encode_remote(spooled, settings, args)
                else:
                    data = _encode_distributed(spooled, settings, args)
            except ValueError as e:
                raise CliError(f"{args.input}: {describe(e)}") from None
    if out.lower().endswith(".webm"):
        from codec.chunks import frame_tag, presentation_times
        from excamera.webm import write_webm
        tags = [frame_tag(d) for d in data]
        write_webm(out, data, presentation_times(tags), [t.key_frame for t in tags], [t.show_frame for t in tags],
                   w, h, rate)
    else:
        write_ivf(out, data, w, h, rate)
    how = f"{args.workers} worker{'s' * (args.workers != 1)}" if args.workers else "in this process"
    if args.coordinator:
        how += f" of {args.coordinator}"
    print(f"{out}: {n_frames} frames, {w}x{h}, {sum(map(len, data))} bytes, ExCamera[{settings.chunk_frames},"
          f"{settings.batch_chunks}] at cq-level {settings.cq_level}, {how}, {time.monotonic() - started:.2f} s",
          file=sys.stderr)
    return 0


def _usage(message: str) -> int:
    print(f"excamera encode: error: {message}", file=sys.stderr)
    return 2


def _encode_distributed(spooled, settings, args) -> list[bytes]:
    """ExCamera[N, x] over ``spooled`` (a ``SpooledInput``) as a runtime job
    (``coordinator.excamera_job``) on an embedded coordinator with ``args.workers`` (+
    ``args.spare``) local worker processes; the stitched stream's frames."""
    import tempfile

    from coordinator.api import JobFailed, run_job
    from coordinator.excamera_job import encode_job
    from excamera.cli import CliError
    from worker.codec_ops import ivf_frames

    job = encode_job(spooled.n_frames, spooled.width, spooled.height, settings)
    inputs = spooled.pairs()
    progress = _StageProgress(len(job.tasks) - 1)
    import logging
    # The embedded coordinator's log lines are not for the terminal: the error below says it in one line.
    logging.getLogger("excamera").addHandler(logging.NullHandler())
    backend = {}
    if args.backend == "lambda":
        from excamera.lambda_cli import launcher_factory
        backend = dict(launcher_factory=launcher_factory(args), listen=args.listen,
                       public_address=args.public_address)
    if args.storage:
        return _encode_in(args.storage, job, inputs, progress, args, backend)
    with tempfile.TemporaryDirectory(prefix="excamera-encode-") as storage:
        try:
            result = run_job(job, inputs=inputs, workers=args.workers, spare=args.spare, storage_dir=storage,
                             timeline=args.timeline, ops_modules=("worker.codec_ops",), on_event=progress,
                             **backend)
        except JobFailed as e:
            progress.finish()
            raise CliError(f"{args.input}: {e}") from None
        progress.finish()
        _report_cost(result)
        return ivf_frames(result.read("stitch"), "the stitched stream")


def _report_cost(result) -> None:
    """The job's cost on stderr (Lambda: invocations, GB-seconds, dollars; local: CPU-seconds)."""
    if "cost" in result.timeline:
        from coordinator.cost import describe
        print(describe(result.timeline["cost"]), file=sys.stderr)


def _encode_in(url: str, job, inputs, progress, args, backend: dict) -> list[bytes]:
    """The embedded job with its objects in ``--storage`` under ``jobs/JOB_ID``: removed when
    it ends, however it ends (success, failure, Ctrl-C), unless ``--keep``."""
    from coordinator.api import JobFailed, run_job
    from coordinator.server import Coordinator
    from excamera.cli import CliError
    from excamera.storage import StorageError, open_storage
    from worker.codec_ops import ivf_frames

    job_id = Coordinator.new_job_id()
    try:
        try:
            result = run_job(job, inputs=inputs, workers=args.workers, spare=args.spare, storage=url,
                             job_id=job_id, timeline=args.timeline, ops_modules=("worker.codec_ops",),
                             on_event=progress, **backend)
            progress.finish()
            _report_cost(result)
            return ivf_frames(result.read("stitch"), "the stitched stream")
        except JobFailed as e:
            raise CliError(f"{args.input}: {e}") from None
        except StorageError as e:
            raise CliError(f"--storage {url}: {e}") from None
        finally:
            progress.finish()
    finally:
        where = f"{url.rstrip('/')}/jobs/{job_id}"
        if args.keep:
            print(f"excamera: kept the job's objects in {where}", file=sys.stderr)
        else:
            try:
                open_storage(url).delete_prefix(f"jobs/{job_id}")
            except StorageError as e:
                print(f"excamera: warning: could not remove {where}: {e}", file=sys.stderr)


def _encode_remote(spooled, settings, args) -> list[bytes]:
    """ExCamera[N, x] over ``spooled`` on a running coordinator (``--coordinator``): the job and
    its raw chunks go up over the Jobs service in a chunked stream, one chunk read at a time, the
    coordinator launches ``args.workers`` (+ ``args.spare``) workers, the job's events drive the progress bar, and the stitched stream
    comes back in chunks, checked against its verified digest. Ctrl-C cancels the job there."""
    import asyncio
    import os

    # gRPC's C core logs failed handshakes on stderr itself; the error below says it in one line.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    import grpc

    from coordinator.api import JobFailed, submit_remote
    from coordinator.excamera_job import STITCHED_KEY, encode_job
    from excamera import tls
    from excamera.cli import CliError
    from excamera.storage import StorageError
    from worker.codec_ops import ivf_frames

    job = encode_job(spooled.n_frames, spooled.width, spooled.height, settings)
    inputs = spooled.pairs()
    progress = _StageProgress(len(job.tasks) - 1)
    submitted: list[str] = []
    where = f"--coordinator {args.coordinator}"
    try:
        result = asyncio.run(submit_remote(job, args.coordinator, args.certs, inputs=inputs, workers=args.workers,
                                           spare=args.spare, on_event=progress, on_submitted=submitted.append))
    except KeyboardInterrupt:
        progress.finish()
        what = f"job {submitted[0]} cancelled on the coordinator" if submitted else "nothing was submitted"
        print(f"excamera: interrupted: {what}; no output written", file=sys.stderr)
        raise
    except JobFailed as e:
        progress.finish()
        raise CliError(f"{args.input}: {e}") from None
    except tls.CertError as e:
        raise CliError(f"--certs {args.certs}: {e}") from None
    except grpc.aio.AioRpcError as e:
        progress.finish()
        detail = " ".join((e.details() or "").split()) or "no detail"
        if e.code() == grpc.StatusCode.UNAVAILABLE:
            detail += " (is it running, and do --certs come from its CA?)"
        raise CliError(f"{where}: {e.code().name.lower()}: {detail}") from None
    except StorageError as e:
        raise CliError(f"{where}: {e}") from None
    progress.finish()
    return ivf_frames(result.read("", STITCHED_KEY), "the stitched stream")


def cmd_reencode(args: argparse.Namespace) -> int:
    from codec.ivf import AtomicFile, read_ivf
    from codec.reencode import reencode_chunk
    from excamera.cli import CliError, describe
    frames, rate = _read_video(args.raw)
    try:
        header, pred = read_ivf(args.prediction)
    except (OSError, ValueError) as e:
        raise CliError(f"{args.prediction}: {describe(e)}") from None
    state_in = _load_state(args.state_in)
    pred_state = _load_state(args.prediction_state) if args.prediction_state else None
    try:
        out = reencode_chunk(state_in, frames, [f.data for f in pred], pred_state, args.kf_q_weight)
    except ValueError as e:
        raise CliError(f"{args.prediction}: {describe(e)}") from None
    from codec.chunks import entry_digest_bytes
    h, w = frames[0].y.shape
    write_ivf(args.output, [o.data for o in out], w, h, rate, entry_digest_bytes(state_in))
    if args.state_out:
        with AtomicFile(args.state_out) as f:
            f.write(out[-1].state.to_bytes())
    return 0
