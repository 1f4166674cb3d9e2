"""``excamera encode -o s3://BUCKET/KEY``: the output's S3 multipart upload, started by the
client so that the workers' parts have somewhere to go and aborted if the job fails; with
``--workers 0`` the same bytes built here (``worker.assemble_ops``); a variable-frame-rate
input's times handed to the join as one small job input (``docs/design/data-path.md``)."""

from __future__ import annotations

from excamera.commands.base import CliError

__all__ = ["abort", "start_upload", "times_join", "upload_here"]


def times_join(spooled, times) -> dict:
    """The ``JoinPlan`` fields that carry a variable-rate input's ``times`` to the workers: one
    job input (``coordinator.excamera_job.TIMES_KEY``, added to ``spooled``'s) named with its
    digest, and the seconds the pictures last (what the sound spans). None of it at a constant
    rate, or where the times do not count the pictures (the local writer ignores them then)."""
    if times is None or len(times[0]) != spooled.n_frames:
        return {}
    import hashlib
    from fractions import Fraction

    from codec.ivf import tick_of
    from coordinator.excamera_job import TIMES_KEY
    from worker.assemble_ops import times_object

    data = times_object(*times)
    spooled.extra = ((TIMES_KEY, data),)
    end = tick_of(len(times[0]), times[0]) * Fraction(times[1])
    return {"times": f"{TIMES_KEY} {hashlib.sha256(data).hexdigest()} {len(data)}",
            "duration": (end.numerator, end.denominator)}


def start_upload(out: str, args):
    """The multipart upload of ``-o s3://BUCKET/KEY`` (``storage.s3.MultipartOutput``), started
    here so that the workers' parts have somewhere to go; None for a local output."""
    if not out.startswith("s3://"):
        return None
    from storage import StorageError
    from storage.s3 import MultipartOutput

    if not args.no_audio and out.lower().endswith(".ivf"):
        from media.outputs import AudioPlan

        AudioPlan(args.input).warn_if_dropped("an .ivf file")
    try:
        upload = MultipartOutput(out)
        upload.start()
    except StorageError as e:
        raise CliError(f"-o {e}") from None
    # What ``upload_here`` needs to build a .webm / .mkv as the workers would (the same bytes).
    upload.chunk_frames, upload.sound = args.chunk_frames, None if args.no_audio else args.input
    return upload


def abort(upload) -> None:
    """The job failed: the upload dropped (``MultipartOutput.discard``), a failure to do so one
    warning line."""
    from media.outputs import warn_line

    upload.discard(warn=warn_line)


def upload_here(upload, data: list[bytes], w: int, h: int, rate, times=None) -> None:
    """``--workers 0`` to S3: the stream this process holds anyway, in parts of S3's size; a
    .webm / .mkv laid out and built by the functions the workers' tasks run (the same bytes).
    ``times``: a variable-rate input's (``_input_times``), stamped as the workers stamp them."""
    from codec.chunks import frame_tag
    from codec.ivf import IvfHeader, ivf_time_base, restamp
    from storage import StorageError
    from storage.s3 import PART_MIN
    from worker.codec_ops import ivf_bytes

    shown = sum(bool(frame_tag(d).show_frame) for d in data)
    if times is not None and len(times[0]) != shown:
        times = None   # (as the local writer: times that do not count the pictures are not theirs)
    if not upload.url.lower().endswith(".ivf"):
        from media.outputs import warn_line
        from worker.assemble_ops import matroska_here
        from worker.audio_ops import extract
        from worker.ops import OperationError

        container = "webm" if upload.url.lower().endswith(".webm") else "matroska"
        spans = rate
        if times is not None:   # (the rate at which the pictures last as long as their times)
            from fractions import Fraction

            from codec.ivf import tick_of
            from coordinator.excamera_job import span_rate
            spans = span_rate(shown, tick_of(shown, times[0]) * Fraction(times[1]))
        sound = extract(upload.sound, container, shown, spans, warn_line) if upload.sound else None
        try:
            parts, sizes = matroska_here(container, data, w, h, rate, upload.chunk_frames, sound, PART_MIN, times)
            for n, part in enumerate(parts, 1):
                upload.put_part(n, part)
            upload.complete(sizes)
        except OperationError as e:
            raise CliError(f"-o {upload.url}: {e}") from None
        except StorageError as e:
            raise CliError(f"-o {e}") from None
        return

    whole = ivf_bytes(data, w, h, rate)
    if times is not None:   # (its time base in the header, each frame at its time: codec.ivf.shown_pts)
        from codec.errors import ContainerError
        try:
            whole = b"".join(restamp([whole], *times))
        except ContainerError as e:
            raise CliError(f"-o {upload.url}: {e}") from None
    num, den = rate if times is None else ivf_time_base(times[1])
    assert whole[:32] == IvfHeader(width=w, height=h, rate=num, scale=den, frame_count=len(data)).to_bytes()
    sizes = [len(whole[i:i + PART_MIN]) for i in range(0, len(whole), PART_MIN)]
    try:
        for n, start in enumerate(range(0, len(whole), PART_MIN), 1):
            upload.put_part(n, whole[start:start + PART_MIN])
        upload.complete(sizes)
    except StorageError as e:
        raise CliError(f"-o {e}") from None
