"""A local ``excamera encode`` output written while the job runs (``docs/design/data-path.md``).

Each batch's rebase task stores that batch's final chunks; when it succeeds, its event carries
the digests the coordinator accepted for them (``coordinator.server``). ``StreamedOutput`` takes
those events, and a thread of its own reads (from the job's storage, or from a running
coordinator's Jobs service: ``coordinator.api.RemoteObjects``) the chunks of the next batch in order (one chunk in
memory at a time), checks each against its accepted digest and appends its frames to the output
under a temporary name (``codec.ivf.AtomicFile``): IVF records with the global decode-order index
as pts, exactly as ``worker.assemble_ops`` lays them out, or packets through ffmpeg's WebM /
Matroska muxer, in the order ``media.webm.write_webm`` muxes them. The file is renamed into place
only in ``finish``, once the job has succeeded: the stitch's layout (the chain proved from the
chunks' links) must name exactly the chunks written, at the places they were written; chunks
whose events came too late are written then, from the layout's digests. A failure, or Ctrl-C,
``discard``s it: nothing is left.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import queue
import struct
import threading
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable

from codec.errors import ContainerError
from codec.ivf import AtomicFile, IvfHeader
from storage import StorageError

_RECORD = struct.Struct("<IQ")
_DONE = object()


@dataclass(frozen=True)
class Delivery:
    """How a job's output reaches ``-o``: ``stream(job)``, a ``StreamedOutput`` written while
    the job runs (a local file, from an embedded or a running coordinator), or None; else
    ``parts(parts, joined_bytes)`` writes the parts a join task made (``-o s3://``) and returns
    the bytes of frames."""

    parts: Callable
    stream: Callable | None = None


def rebase_batches(job) -> list[tuple[str, list[str]]]:
    """(rebase task id, its chunks' storage keys) of each batch of an ExCamera ``job``
    (``coordinator.excamera_job.encode_job``), in output order."""
    rebases = [t for t in job.tasks if t.fsm == "excamera-encode-rebase"]
    return [(t.task_id, list(t.params["outs"])) for t in sorted(rebases, key=lambda t: t.task_id)]


class _IvfSink:
    """Frame records after a header whose frame count is written last: pts the decode-order
    index, or, given ``times`` (a variable-rate input's, ``media.video.frame_times``, one per
    picture), each frame's time in ticks with the header holding their time base, as
    ``media.outputs.write_vp8_file`` writes them (``codec.ivf.shown_pts``)."""

    def __init__(self, out: AtomicFile, width: int, height: int, rate, n_frames: int, times):
        self.out, self.ticks, self.shown = out, None, 0
        num, den = rate
        if times is not None and len(times[0]) == n_frames:
            from codec.ivf import ivf_time_base

            self.ticks = times[0]
            num, den = ivf_time_base(Fraction(times[1]))
        self.header = IvfHeader(width=width, height=height, rate=num, scale=den, frame_count=0)
        out.write(self.header.to_bytes())

    def add(self, frames: list[bytes], first: int) -> None:
        if self.ticks is None:
            pts = range(first, first + len(frames))
        else:
            from codec.ivf import tick_of

            pts = []
            for d in frames:  # a hidden frame at the time of the shown frame after it
                pts.append(tick_of(self.shown, self.ticks))
                self.shown += bool(d[0] & 0x10)  # show_frame, bit 4 of the tag (RFC 6386 9.1): no codec import
        self.out.write(b"".join(_RECORD.pack(len(d), t) + d for d, t in zip(frames, pts)))
        self.out.file.flush()  # (on disk as it comes: what a reader of the growing file sees)

    def close(self, total: int, expected: IvfHeader) -> None:
        """The header with the frame count, checked against the stitch's (``expected``; its
        rate the job's, the time base here where the frames carry times)."""
        import dataclasses

        header = dataclasses.replace(self.header, frame_count=total)
        timed = self.ticks is not None
        if (dataclasses.replace(header, rate=expected.rate, scale=expected.scale) if timed else header) != expected:
            raise StorageError("the output's header is not the one the stitch laid out")
        self.out.file.seek(0)
        self.out.write(header.to_bytes())

    def abandon(self) -> None:
        pass


class _MatroskaSink:
    """VP8 packets into ffmpeg's WebM / Matroska muxer as they come, the sound interleaved in the
    same order as ``media.audio.mux_in_time_order`` puts it (by time, a picture before a sound
    at the same time), so the bytes are those of ``media.webm.write_webm`` over the whole stream."""

    def __init__(self, out: AtomicFile, path: str, width: int, height: int, rate, n_frames: int,
                 sound_from: str | None, times):
        from media.audio import Span, spans_of

        self.out, self.width, self.height, self.rate = out, width, height, tuple(rate)
        self.format = "webm" if path.lower().endswith(".webm") else "matroska"
        self.time_base = Fraction(rate[1], rate[0])
        spans = spans_of([(0, n_frames, 1)], rate)
        self.ticks = None
        if times is not None and len(times[0]) == n_frames:  # (as _write in encode.py has it)
            from codec.ivf import tick_of

            self.ticks, self.time_base = times[0], Fraction(times[1])
            # the sound lasts until the last picture ends (it lasts as the one before it)
            spans = [Span(Fraction(0), tick_of(n_frames, self.ticks) * self.time_base, Fraction(0))]
        self.sound_from, self.spans = sound_from, spans
        self.shown = 0
        self.container = self.probe = self.stream = self.track = None
        self.sound: list = []

    def _open(self, key_frame: bytes) -> None:
        import av

        from media.outputs import AudioPlan
        from media.webm import _template  # (the VP8 codec parameters, as write_webm takes them)

        if not key_frame or key_frame[0] & 1:
            raise ContainerError("a WebM stream starts with a key frame")
        with self._ffmpeg(av):
            self.probe = _template(av, key_frame, self.width, self.height, self.rate)
            # bitexact: no random segment UID or writing-application string, so the bytes repeat.
            self.container = av.open(self.out.file, "w", format=self.format,
                                     container_options={"fflags": "+bitexact"})
            self.stream = self.container.add_stream_from_template(self.probe.streams.video[0])
        if self.sound_from:
            self.track = AudioPlan(self.sound_from, self.spans).track(self.format)
        if self.track is not None:
            packets = self.track.packets(self.track.add_to(self.container))
            timed = [((p.dts if p.dts is not None else p.pts) * p.time_base, p) for p in packets]
            self.sound = sorted(timed, key=lambda tp: tp[0])[::-1]  # (stable) popped from the end

    def add(self, frames: list[bytes], first: int) -> None:
        import av

        from codec.chunks import frame_tag
        from codec.ivf import tick_of
        from media.webm import vp8_packets

        if self.container is None:
            self._open(frames[0])
        tags = [frame_tag(d) for d in frames]
        pts = []
        for t in tags:  # a hidden frame takes the time of the shown frame after it
            pts.append(self.shown if self.ticks is None else tick_of(self.shown, self.ticks))
            self.shown += bool(t.show_frame)

        with self._ffmpeg(av):
            for packet in vp8_packets(av, self.stream, frames, pts, [t.key_frame for t in tags],
                                      [t.show_frame for t in tags], self.time_base):
                at = packet.dts * packet.time_base
                while self.sound and self.sound[-1][0] < at:
                    self.container.mux(self.sound.pop()[1])
                self.container.mux(packet)

    def close(self, total: int, expected: IvfHeader) -> None:
        import av

        with self._ffmpeg(av):
            while self.sound:
                self.container.mux(self.sound.pop()[1])
            self._close()

    @contextlib.contextmanager
    def _ffmpeg(self, av):
        """ffmpeg's refusals as one line (``ContainerError``), as ``media.webm.write_webm`` says them."""
        try:
            yield
        except av.error.FFmpegError as e:
            raise ContainerError(f"ffmpeg could not write {self.format}: {' '.join(str(e).split())}") from None

    def _close(self) -> None:
        try:
            if self.container is not None:
                self.container.close()
        finally:
            self.container = None
            for held in (self.probe, self.track):
                if held is not None:
                    held.close()
            self.probe = self.track = None

    def abandon(self) -> None:
        try:
            self._close()
        except Exception:  # noqa: BLE001 - the file is being discarded anyway
            pass


class StreamedOutput:
    """``path`` written from the chunks of ``batches`` (per rebase task id, in output order, the
    storage keys of its chunks) as their tasks succeed; ``on_event`` takes the job's events
    (from the coordinator's event loop: it only queues), ``start(storage)`` begins the writing
    thread over the job's objects (``storage``: anything with ``get(key)``, scoped to the job),
    ``finish(layout)`` completes
    the file from the stitch's layout and renames it into place, ``discard()`` removes it."""

    def __init__(self, path: str, batches: list[tuple[str, list[str]]], width: int, height: int, rate,
                 n_frames: int, sound_from: str | None = None, times=None):
        self.path = path
        self.batches = batches
        self._batch_of = {task: b for b, (task, _) in enumerate(batches)}
        self.out = AtomicFile(path)
        try:
            if path.lower().endswith((".webm", ".mkv")):
                self.sink = _MatroskaSink(self.out, path, width, height, rate, n_frames, sound_from, times)
            else:
                if sound_from:
                    from media.outputs import AudioPlan

                    AudioPlan(sound_from).warn_if_dropped("an .ivf file")
                self.sink = _IvfSink(self.out, width, height, rate, n_frames, times)
        except BaseException:
            self.out.discard()
            raise
        self.written: list[tuple[str, str, int, int, int]] = []  # (key, sha256, size, first, frames)
        self.frames = 0        # records written (decode order: the next one's pts)
        self.bytes = 0         # bytes of frames written
        self.storage = None
        self.error: BaseException | None = None
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stop = False

    # -- from the job ------------------------------------------------------------------------

    def on_event(self, ev) -> None:
        """A rebase task that succeeded: its chunks' accepted digests go to the writing thread."""
        if ev.kind == "task" and ev.to_state == "done" and ev.task_id in self._batch_of:
            self._queue.put((self._batch_of[ev.task_id], {o.key: (o.sha256, o.size) for o in ev.objects}))

    def start(self, storage) -> None:
        self.storage = storage
        self._thread = threading.Thread(target=self._run, name="encode-output", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        ready: dict[int, dict] = {}
        try:
            while (item := self._queue.get()) is not _DONE and not self._stop:
                ready[item[0]] = item[1]
                while (b := self._batch_at()) in ready:
                    refs = ready.pop(b)
                    keys = self.batches[b][1]
                    if not all(k in refs for k in keys):  # (an event without them: left to finish)
                        return
                    for key in keys:
                        if self._stop:
                            return
                        self._append(key, *refs[key])
        except BaseException as e:  # noqa: BLE001 - raised again by finish
            self.error = e

    def _batch_at(self) -> int:
        """The batch whose first chunk is the next to write (-1 mid-batch: not reached here)."""
        at = len(self.written)
        for b, (_, keys) in enumerate(self.batches):
            if at == 0:
                return b
            at -= len(keys)
            if at < 0:
                return -1
        return -1

    # -- writing -----------------------------------------------------------------------------

    def _append(self, key: str, sha256: str, size: int) -> None:
        """The chunk at ``key``, checked against its accepted digest, its frames appended."""
        import io

        from codec.ivf import read_ivf

        data = self.storage.get(key)
        if len(data) != size or hashlib.sha256(data).hexdigest() != sha256:
            raise StorageError(f"{key}: {len(data)} bytes that do not match the digest the coordinator "
                               f"accepted (sha256 {sha256[:16]}..., {size} bytes)")
        try:
            _, records = read_ivf(io.BytesIO(data))
        except ValueError as e:
            raise StorageError(f"{key}: {e}") from None
        frames = [r.data for r in records]
        self.sink.add(frames, self.frames)
        self.written.append((key, sha256, size, self.frames, len(frames)))
        self.frames += len(frames)
        self.bytes += sum(map(len, frames))

    def _join(self) -> None:
        if self._thread is not None:
            self._queue.put(_DONE)
            self._thread.join()
            self._thread = None

    def finish(self, layout: bytes) -> int:
        """The rest of the chunks, and the file renamed into place, once the job succeeded:
        ``layout`` is the stitch's (``worker.assemble_ops``; read checked against its digest).
        The bytes of frames written. Raises ``StorageError`` if a chunk does not match."""
        try:
            self._join()
            if self.error is not None:
                raise self.error
            try:
                doc = json.loads(layout)
                chunks = [(k, s, int(n), int(f), int(c)) for k, s, n, f, c, *_ in doc["chunks"]]
                header = IvfHeader.parse(bytes.fromhex(doc["header"]))
            except (ValueError, KeyError, TypeError) as e:
                raise StorageError(f"the stitch's layout: {e}") from None
            if [k for k, *_ in chunks] != [k for _, keys in self.batches for k in keys]:
                raise StorageError("the stitch's layout does not name the job's chunks in order")
            if self.written != chunks[:len(self.written)]:
                raise StorageError("a chunk written is not the one the stitch proved in the chain")
            for key, sha, size, first, frames in chunks[len(self.written):]:
                self._append(key, sha, size)
                if self.written[-1] != (key, sha, size, first, frames):
                    raise StorageError(f"{key}: not at the place the stitch laid out")
            self.sink.close(self.frames, header)
        except BaseException:
            self.discard()
            raise
        self.out.commit()
        return self.bytes

    def discard(self) -> None:
        """Stop writing and remove the temporary file (nothing is left at ``path``)."""
        self._stop = True
        try:
            self._join()
        finally:
            self.sink.abandon()
            self.out.discard()
