"""``excamera encode``: ExCamera[N, x] — chunks encoded in parallel, then rebased in series —
in this process (``--workers 0``), on an embedded coordinator's workers (local processes or AWS
Lambda invocations), or on a running coordinator (``--coordinator``)."""

from __future__ import annotations

import argparse
import os
import sys
import time

from excamera.commands.base import (CliError, UsageError, add_run_options, address, check_backend_options,
                                    check_storage, command, describe, int_in, quiet_runtime_logs,
                                    run_config_from, write_ivf)
from excamera.commands import encode_s3
from excamera.commands.progress import PhaseProgress, StageProgress

__all__ = ["register", "cmd_encode", "write_ivf"]


def register(sub) -> None:
    enc = command(
        sub, "encode", cmd_encode,
        help="encode a video with ExCamera[N, x] (chunks in parallel, rebased in series)",
        description="Encode INPUT (y4m or anything PyAV opens) to VP8 the ExCamera way: chunks of N "
                    "frames encoded independently, each chunk's first frame re-encoded against the "
                    "previous chunk's state and the rest rebased onto it, one key frame every N*x "
                    "frames. --workers N (default: one per CPU) runs the steps on N local worker "
                    "processes through an embedded coordinator and rendezvous, or, with --coordinator, "
                    "on N workers a running coordinator launches; --workers 0 runs every step in this "
                    "process; the same output bytes every way.")
    enc.add_argument("input", metavar="INPUT")
    enc.add_argument("-o", "--output", required=True, metavar="OUT",
                     help="OUT.webm (with the input's sound as Opus), OUT.mkv (its sound copied) or OUT.ivf")
    enc.add_argument("--no-audio", action="store_true", help="leave the input's sound out")
    enc.add_argument("--chunk-frames", type=int_in(1, 100000), default=6, metavar="N")
    enc.add_argument("--batch-chunks", type=int_in(1, 100000), default=16, metavar="X")
    enc.add_argument("--cq-level", type=int_in(0, 63), default=20, metavar="C")
    enc.add_argument("--first-pass", choices=("libvpx", "native"), default="libvpx")
    enc.add_argument("--speed", type=int_in(0, 4), default=1, help="native encoder speed 0..4")
    add_run_options(enc, unit="chunks")


def _usage(message: str) -> UsageError:
    return UsageError(message, show_usage=False)


def _check_options(args: argparse.Namespace) -> None:
    """The run options fit together (``--workers`` resolved); a one-line usage error otherwise."""
    if args.workers == 0:
        for flag, value in (("--spare", args.spare), ("--timeline", args.timeline),
                            ("--coordinator", args.coordinator), ("--storage", args.storage)):
            if value:
                raise _usage(f"{flag} needs --workers N (N > 0): --workers 0 runs in this process")
    if args.coordinator:
        try:
            address(args.coordinator)
        except argparse.ArgumentTypeError as e:
            raise _usage(f"--coordinator: {e}") from None
        if not args.certs:
            raise _usage("--coordinator needs --certs DIR (ca.pem, client.pem, client.key)")
        if args.timeline:
            raise _usage("--timeline is written by an embedded coordinator; a running one keeps its own")
    elif args.certs:
        raise _usage("--certs goes with --coordinator")
    if args.coordinator and args.storage:
        raise _usage("--storage is an embedded coordinator's; a running one has its own")
    if args.keep and not args.storage:
        raise _usage("--keep needs --storage (the default temporary directory always goes)")
    check_backend_options(args)
    if args.backend == "lambda" and (args.workers == 0 or args.coordinator):
        raise _usage("--backend lambda runs the job on an embedded coordinator: it needs --workers N and no "
                     "--coordinator (a running one chooses its own backend)")


def cmd_encode(args: argparse.Namespace) -> int:
    from media.excamera_encode import EncodeSettings

    out = args.output
    if not out.lower().endswith((".ivf", ".webm", ".mkv")):
        raise CliError(f"-o {out}: the output must end in .ivf, .webm or .mkv (the ExCamera encode is VP8; "
                       "excamera pipeline run writes .mp4)")
    # (an s3:// .webm / .mkv is joined in S3 from the workers' pieces, as .ivf is: worker.assemble_ops)
    if args.workers is None:  # the machine's cores, through the embedded runtime
        args.workers = os.cpu_count() or 1
    _check_options(args)
    config = run_config_from(args) if args.workers else None
    if args.storage:  # before reading the video: a wrong bucket or no credentials fail in seconds
        check_storage(args.storage)
    if args.coordinator:  # before reading the video: a bad --certs is the quicker error
        from security import tls

        try:
            tls.load(args.certs, need=tls.WORKER_FILES)
        except tls.CertError as e:
            raise CliError(f"--certs {args.certs}: {e}") from None
    settings = EncodeSettings(args.chunk_frames, args.batch_chunks, args.cq_level, args.first_pass, args.speed)
    times = _input_times(args.input, out)
    started = time.monotonic()
    upload = encode_s3.start_upload(out, args)  # before reading the video: a bucket we cannot write fails at once
    try:
        if config is None:  # one batch of pictures in memory at a time: read as the encode goes
            data, n_frames, w, h, rate = _encode_here(args.input, settings)
            size = sum(map(len, data))
            if upload is not None:
                encode_s3.upload_here(upload, data, w, h, rate, times)
            else:
                _write(out, data, w, h, rate, None if args.no_audio else args.input, times)
        else:
            size, n_frames, w, h, rate = _encode_on_workers(args, settings, config, upload, times)
    except BaseException:
        if upload is not None:
            encode_s3.abort(upload)
        raise
    how = f"{args.workers} worker{'s' * (args.workers != 1)}" if args.workers else "in this process"
    if args.coordinator:
        how += f" of {args.coordinator}"
    print(f"{out}: {n_frames} frames, {w}x{h}, {size} bytes, ExCamera[{settings.chunk_frames},"
          f"{settings.batch_chunks}] at cq-level {settings.cq_level}, {how}, {time.monotonic() - started:.2f} s",
          file=sys.stderr)
    return 0


def _input_times(path: str, out: str):
    """A variable-frame-rate input's presentation times (``media.video.frame_times``), kept in a
    .webm, .mkv or .ivf output, local or joined in S3 by the workers (``encode_s3.times_join``); None at
    a constant rate."""
    from media.video import frame_times

    return frame_times(path) if "://" not in path else None


def _write(out: str, data: list[bytes], w: int, h: int, rate, sound_from: str | None = None,
           times=None) -> None:
    """The stream to ``out`` with the sound of ``sound_from`` (its audio packets only are read;
    see media/audio.py) for as long as the pictures last. ``times``: the input's variable-rate
    presentation times (``_input_times``), one per picture, stamped on the frames instead of
    the constant ``rate`` (``codec.ivf.shown_pts``; an .ivf header then holds their time base)."""
    ivf = not out.lower().endswith((".webm", ".mkv"))
    if not ivf or times is not None:
        from fractions import Fraction

        from codec.chunks import frame_tag, presentation_times
        from codec.ivf import shown_pts, tick_of
        from media.audio import Span, spans_of
        from media.outputs import AudioPlan, write_vp8_file

        tags = [frame_tag(d) for d in data]
        flags = [t.show_frame for t in tags]
        shown = sum(flags)
        pts, time_base = presentation_times(tags), None
        spans = spans_of([(0, shown, 1)], rate)
        if times is not None and len(times[0]) == shown:
            ticks, time_base = times
            pts = shown_pts(flags, ticks)   # a hidden frame at the time of the shown frame after it
            spans = [Span(Fraction(0), tick_of(shown, ticks) * Fraction(time_base), Fraction(0))]
        if not ivf or time_base is not None:
            audio = AudioPlan(sound_from, spans) if sound_from else AudioPlan()
            write_vp8_file(out, data, pts, [t.key_frame for t in tags], flags, w, h, rate, audio,
                           time_base=time_base)
            return
    if sound_from:
        from media.outputs import AudioPlan

        AudioPlan(sound_from).warn_if_dropped("an .ivf file")
    write_ivf(out, data, w, h, rate)


def _encode_here(path: str, settings):
    """``encode_frames`` straight from the video reader (``--workers 0``): (compressed frames,
    pictures read, width, height, rate)."""
    from media.excamera_encode import encode_frames
    from media.index import open_video_at
    from media.source import SourceError

    try:
        with open_video_at(path) as video:  # a URL is read by range, as workers read it
            from media.video import check_vp8_size
            check_vp8_size(video.width, video.height)
            progress = PhaseProgress(chunk_frames=settings.chunk_frames, total_frames=video.frame_count_hint)
            try:
                data = encode_frames(video, settings, video.rate, progress, total_frames=video.frame_count_hint)
            finally:
                progress.finish()
            return data, video.frames_read, video.width, video.height, video.rate
    except SourceError as e:
        raise CliError(str(e)) from None
    except (OSError, ValueError) as e:
        raise CliError(f"{path}: {describe(e)}") from None


def _encode_on_workers(args, settings, config, upload=None, times=None):
    """The job over the input planned by range (``_plan_input``); its output joined without a
    funnel (``coordinator.excamera_job.JoinPlan``): into ``upload`` (``-o s3://``) by the
    workers; a local file written here as the batches' rebase tasks end
    (``excamera.commands.encode_output``), read from the embedded coordinator's storage or
    fetched from a running coordinator's Jobs service. (bytes of frames, frames, width, height,
    rate)."""
    from coordinator.excamera_job import JoinPlan
    from excamera.commands.encode_output import Delivery, StreamedOutput, rebase_batches

    spooled = _plan_input(args, settings, config)
    w, h, rate = spooled.width, spooled.height, spooled.rate
    sound = None if args.no_audio else args.input
    streamed = upload is None
    join = JoinPlan(upload.url, upload.upload_id, audio="" if args.no_audio else None,
                    **encode_s3.times_join(spooled, times)) if upload is not None \
        else JoinPlan(streamed=streamed)

    def parts(parts, joined_bytes: int) -> int:  # (-o s3://: the join completed the upload; nothing to read)
        head = upload.client.head_object(Bucket=upload.bucket, Key=upload.key)  # (completed by the join)
        size = int(head["ContentLength"])  # (a .webm / .mkv: the whole file's)
        return size - 32 - 12 * spooled.n_frames if upload.url.lower().endswith(".ivf") else size

    def stream(job):
        return StreamedOutput(args.output, rebase_batches(job), w, h, rate, spooled.n_frames, sound, times)

    deliver = Delivery(parts, stream if streamed else None)
    try:
        if config.remote:
            size = _encode_remote(spooled, settings, args, config, join, deliver)
        else:
            size = _encode_embedded(spooled, settings, args, config, join, deliver)
    except ValueError as e:
        raise CliError(f"{args.input}: {describe(e)}") from None
    return size, spooled.n_frames, w, h, rate


def _plan_input(args, settings, config):
    """The input as a reference the job's decode tasks read by range (``SourceInput``), planned
    from its index alone. Local worker processes read a local file where it lies; a running
    coordinator's or Lambda workers get it uploaded once, compressed."""
    from coordinator.excamera_job import SourceInput
    from media.source import SourceError

    reach_local = not config.remote and getattr(args, "backend", "local") != "lambda"
    try:
        source = SourceInput(args.input, settings, reach_local=reach_local)
    except SourceError as e:
        raise CliError(str(e)) from None
    except (OSError, ValueError) as e:
        raise CliError(f"{args.input}: {describe(e)}") from None
    if source.note:
        print(f"excamera: note: {source.note}", file=sys.stderr)
    from media.video import check_vp8_size, input_pixel_format, note_conversion
    try:
        check_vp8_size(source.width, source.height)
    except ValueError as e:
        raise CliError(f"{args.input}: {describe(e)}") from None
    note_conversion(args.input, input_pixel_format(args.input))
    return source


def _encode_embedded(spooled, settings, args, config, join, deliver) -> int:
    """ExCamera[N, x] over ``spooled`` (a ``SpooledInput``) as a runtime job
    (``coordinator.excamera_job``) on an embedded coordinator; the stitched stream's frames. Its
    objects go to a temporary directory, or to ``--storage`` under ``jobs/JOB_ID``, removed when
    it ends, however it ends (success, failure, Ctrl-C), unless ``--keep``."""
    import dataclasses
    import tempfile

    from coordinator.excamera_job import encode_job
    from coordinator.server import Coordinator

    job = encode_job(spooled.n_frames, spooled.width, spooled.height, settings, source=spooled.plan, join=join,
                     rate=spooled.rate)
    progress = _stage_progress(job, spooled.n_frames, settings)
    quiet_runtime_logs()
    if not config.storage:
        with tempfile.TemporaryDirectory(prefix="excamera-encode-") as storage:
            return _run_embedded(job, spooled, progress, args, dataclasses.replace(config, storage=storage),
                                 deliver=deliver)
    job_id = Coordinator.new_job_id()
    try:
        return _run_embedded(job, spooled, progress, args, config, job_id, deliver)
    finally:
        _remove_or_keep(config.storage, job_id, config.keep)


def _stage_progress(job, n_frames: int, settings) -> StageProgress:
    """Frames through each stage of ``job`` (chunks of N frames; the last one's real count)."""
    from media.excamera_encode import chunk_ranges

    frames = [b - a for a, b in chunk_ranges(n_frames, settings)]
    assert len(frames) == sum(t.fsm == "excamera-encode-chunk" for t in job.tasks)
    return StageProgress(len(frames), frames=frames, batch_chunks=settings.batch_chunks)


def _joined(result) -> tuple[list[str], int]:
    """The names of the join's part objects in order, and the joined output's size."""
    refs = result.objects.get("join") or result.objects.get("", {})
    names = sorted(n for n, ref in refs.items() if ref.key.startswith("out/parts/"))
    return names, sum(refs[n].size for n in names)


def _run_embedded(job, spooled, progress, args, config, job_id: str | None = None, deliver=None) -> int:
    """``job`` on the embedded coordinator; its output delivered (``encode_output.Delivery``):
    streamed while it runs, each batch's chunks as its rebase task ends (read in another thread:
    the events come on the coordinator's loop), renamed into place once the stitch has proved
    the chain; or its joined parts after it."""
    from coordinator.api import JobFailed, run_job
    from coordinator.server import Coordinator
    from storage import StorageError, open_storage

    job_id = job_id or Coordinator.new_job_id()  # (where its objects lie: read while it runs)
    try:  # (the temporary file beside the output: a directory that is not there fails now)
        stream = deliver.stream(job) if deliver.stream is not None else None
    except OSError as e:
        raise CliError(f"-o {args.output}: {describe(e)}") from None

    def on_event(ev) -> None:
        progress(ev)
        if stream is not None:
            stream.on_event(ev)

    try:
        if stream is not None:
            stream.start(open_storage(config.storage).scoped(f"jobs/{job_id}"))
        result = run_job(job, config, inputs=spooled.pairs(), ops_modules=("worker.codec_ops",),
                         on_event=on_event, job_id=job_id)
        progress.finish()
        _report_cost(result)
        _report_audio_warnings(job, config, job_id)
        if stream is not None:
            try:
                return stream.finish(result.read("stitch"))
            except StorageError as e:
                if args.storage:
                    raise
                raise CliError(f"-o {args.output}: {e}") from None
            except (OSError, ValueError) as e:  # (a full disk; ffmpeg's refusal, ContainerError)
                raise CliError(f"-o {args.output}: {describe(e)}") from None
        names, size = _joined(result)
        # One part read (and checked against its digest) at a time, as the file is written.
        return deliver.parts((result.read("join", n) for n in names), size)
    except JobFailed as e:
        raise CliError(f"{args.input}: {e}") from None
    except StorageError as e:
        if not args.storage:
            raise
        raise CliError(f"--storage {args.storage}: {e}") from None
    finally:
        if stream is not None:
            stream.discard()  # (nothing once finished: the file is in place)
        progress.finish()


def _report_audio_warnings(job, config, job_id: str) -> None:
    """The audio task's one-line warnings (a sound nothing can decode: the video is written
    without it), read from its small index in the job's storage and said here, once."""
    if not any(t.task_id == "audio" for t in job.tasks):
        return
    import json

    from coordinator.excamera_job import AUDIO_INDEX_KEY
    from media.outputs import warn_line
    from storage import StorageError, open_storage

    try:
        doc = json.loads(open_storage(config.storage).scoped(f"jobs/{job_id}").get(AUDIO_INDEX_KEY))
    except (StorageError, ValueError):
        return   # (the join checked what it used; a warning lost is not worth failing the job)
    for line in doc.get("warnings", ()):
        warn_line(line)


def _remove_or_keep(url: str, job_id: str, keep: bool) -> None:
    where = f"{url.rstrip('/')}/jobs/{job_id}"
    if keep:
        print(f"excamera: kept the job's objects in {where}", file=sys.stderr)
        return
    from storage import StorageError, open_storage

    try:
        open_storage(url).delete_prefix(f"jobs/{job_id}")
    except StorageError as e:
        print(f"excamera: warning: could not remove {where}: {e}", file=sys.stderr)


def _report_cost(result) -> None:
    """The job's cost on stderr (Lambda: invocations, GB-seconds, dollars; local: CPU-seconds)."""
    if "cost" in result.timeline:
        from coordinator.cost import describe as cost_line

        print(cost_line(result.timeline["cost"]), file=sys.stderr)


def _encode_remote(spooled, settings, args, config, join, deliver) -> int:
    """ExCamera[N, x] over ``spooled`` on a running coordinator (``--coordinator``): the job and
    its raw chunks go up over the Jobs service in a chunked stream, one chunk read at a time, the
    coordinator launches the workers, and the job's events drive the progress bars. A local
    output is written as it runs (``encode_output.StreamedOutput``): each batch's chunks, which
    the rebase task's "done" event names with their accepted digests, are fetched from the Jobs
    service (``coordinator.api.RemoteObjects``: a blocking channel of its own, used by the
    writer's thread) while later batches are rebased, and the file is renamed into place from the
    stitch's layout once the job has succeeded. The rebase tasks are results of the job too, so
    that the coordinator keeps the chunks the writer has not fetched yet when the job ends
    (``keep=False`` removes the rest), and those it fetched while the job ran are released
    after (or are there for ``excamera jobs fetch`` if this client went away). Ctrl-C cancels
    the job there and leaves no output."""
    import asyncio
    import dataclasses
    import hashlib

    # gRPC's C core logs failed handshakes on stderr itself; the error below says it in one line.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    import grpc

    from coordinator.api import JobFailed, RemoteObjects, submit_remote
    from coordinator.excamera_job import LAYOUT_KEY, encode_job
    from excamera.commands.encode_output import rebase_batches
    from security import tls
    from storage import StorageError

    job = encode_job(spooled.n_frames, spooled.width, spooled.height, settings, source=spooled.plan, join=join,
                     rate=spooled.rate)
    progress = _stage_progress(job, spooled.n_frames, settings)
    submitted: list[str] = []
    where = f"--coordinator {args.coordinator}"
    stream, readers = None, []
    if deliver.stream is not None:
        job = dataclasses.replace(job, result_tasks=tuple(t for t, _ in rebase_batches(job)) + job.result_tasks)
        try:  # (the temporary file beside the output: a directory that is not there fails now)
            stream = deliver.stream(job)
        except OSError as e:
            raise CliError(f"-o {args.output}: {describe(e)}") from None

    def on_ref(job_id: str, job_key: str) -> None:
        if stream is not None:
            readers.append(RemoteObjects(config.backend, job_id, job_key))
            stream.start(readers[-1])

    def on_event(ev) -> None:
        progress(ev)
        if stream is not None:
            stream.on_event(ev)

    try:
        try:
            # inputs=pairs, not pairs(): re-read from the file if the submission must be sent again
            result = asyncio.run(submit_remote(job, config.backend, inputs=spooled.pairs,
                                               workers=config.worker_count, spare=config.spare,
                                               on_event=on_event, on_submitted=submitted.append, on_ref=on_ref,
                                               fetch=stream is None))
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
        if stream is None:
            names, size = _joined(result)
            return deliver.parts((result.data[result.objects[""][n].key] for n in names), size)
        try:
            ref = result.objects[""].get(LAYOUT_KEY)
            if ref is None:
                raise StorageError(f"job {result.job_id}: no {LAYOUT_KEY} among its results")
            layout = readers[0].get(LAYOUT_KEY)
            if len(layout) != ref.size or hashlib.sha256(layout).hexdigest() != ref.sha256:
                raise StorageError(f"job {result.job_id}: {LAYOUT_KEY}: not the object its end announced")
            size = stream.finish(layout)
        except StorageError as e:
            raise CliError(f"{where}: {e}") from None
        except (OSError, ValueError) as e:  # (a full disk; ffmpeg's refusal, ContainerError)
            raise CliError(f"-o {args.output}: {describe(e)}") from None
        try:  # the chunks fetched while it ran are held: the coordinator may let them all go now
            readers[0].release(key for key, *_ in stream.written)
        except StorageError as e:
            print(f"excamera: warning: {where}: {e} (the job's objects stay there until fetched)",
                  file=sys.stderr)
        return size
    finally:
        if stream is not None:
            stream.discard()  # (nothing once finished: the file is in place)
        for reader in readers:
            reader.close()
