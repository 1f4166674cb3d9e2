"""A pipeline's media at its edges: inputs cut into chunks, images read, outputs written.

* ``cut_input(path, frames_per_chunk)``: consecutive ``EncodedChunk`` values covering the whole
  input. A compressed input PyAV demuxes is cut at its own key frames without re-encoding (each
  chunk its packets remuxed into Matroska, from a key frame to just before a later one, at least
  ``frames_per_chunk`` frames but the last). An H.264 or HEVC input whose key frames are all IDR
  pictures with no leading pictures is remuxed with no decode: the standards guarantee such GOPs
  decode alone as they do in the whole (``_IdrCheck``). Otherwise each chunk is decoded on its
  own and compared, picture for picture, with the same frames of one decode of the whole input; a chunk that differs
  (an open GOP, an edit list) and a stretch whose key frames are more than 2 chunks apart are
  decoded instead and cut into raw Y4M chunks of ``frames_per_chunk`` frames, the last of such a
  stretch taking the remainder (up to twice that less one). Y4M and VP8 IVF inputs, and
  compressed ones whose key frames are all too sparse, are decoded and cut into Y4M chunks of
  ``frames_per_chunk`` frames, the last one shorter. So the chunks' frame counts add up
  to the whole decode's, and decoding them gives exactly its pictures.
* ``frames_of(chunk)``: the pictures of a chunk (the ``decode`` stage's reader).
* ``read_image(path)``: one picture of an image file (PyAV, else Pillow), as yuv420p.
* ``check_output(path, port_type)`` / ``write_output(path, port_type, values)``: the extension
  picks the form. ``.webm``/``.ivf``: one VP8 stream (frames are encoded first with the ``encode``
  stage's defaults, chunks that are not VP8 are decoded and encoded), timestamps from each
  chunk's ``start``/``fps``, key frames flagged. ``.y4m``: the pictures (chunks decoded).
  ``.mpd``: DASH through ffmpeg's dash muxer, WebM segments ``NAME-init-0.webm``,
  ``NAME-0-00001.webm``, ... beside the manifest (the VP8 packets remuxed, not re-encoded).
  ``.json``: the records, in frame order, as one JSON list. Written under temporary names and
  renamed into place: nothing is left behind on failure.

Errors are one line: ``MediaError`` (a ``ValueError``) for input or output that cannot be used,
``OSError`` for the file system.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Iterator
from fractions import Fraction

from codec.errors import ContainerError
from foundation.errors import ExcameraError
from pipeline.values import EncodedChunk, FrameBatch, Records

#: Output extension -> the port types that may be written to it.
FORMS = {".webm": ("chunks", "frames", "frame"), ".ivf": ("chunks", "frames", "frame"),
         ".mkv": ("chunks", "frames", "frame"), ".mp4": ("chunks", "frames", "frame"),
         ".m3u8": ("chunks", "frames", "frame"),
         ".y4m": ("chunks", "frames", "frame"), ".mpd": ("chunks", "frames", "frame"),
         ".json": ("records", "scene_list", "frame_list")}
#: A stretch whose key frames are further apart than this many chunks is decoded and cut.
SPARSE = 2


class MediaError(ExcameraError):
    """An input or output this module cannot use (one line)."""


def _msg(e: BaseException) -> str:
    return " ".join(str(getattr(e, "strerror", None) or e or type(e).__name__).split())


# -- input ----------------------------------------------------------------------------------------

def _y4m_chunk(images: list, start: int, fps: tuple[int, int]) -> EncodedChunk:
    from codec.y4m import FRAME_TAG, Y4mHeader
    header = Y4mHeader(images[0].width, images[0].height, fps, "p", (1, 1), "420jpeg")
    parts = [header.to_bytes()]
    for im in images:
        parts += [FRAME_TAG + b"\n", im.to_i420()]
    return EncodedChunk(b"".join(parts), "y4m", start, len(images), fps)


def _per_chunk(frames_per_chunk: int | None, fps: tuple[int, int]) -> int:
    if frames_per_chunk is None:
        return max(1, round(fps[0] / fps[1]))
    return frames_per_chunk


def cut_input(path: str, frames_per_chunk: int | None) -> Iterator[EncodedChunk]:
    """The input at ``path`` as consecutive chunks (see the module docstring);
    ``frames_per_chunk=None``: one second of frames, rounded."""
    if frames_per_chunk is not None and (not isinstance(frames_per_chunk, int) or frames_per_chunk < 1):
        raise MediaError(f"frames_per_chunk {frames_per_chunk!r} is not a positive integer")
    path = os.fspath(path)
    with open(path, "rb") as f:  # OSError for a missing file, as it is
        magic = f.read(32)
    ext = os.path.splitext(path)[1].lower()
    raw = magic.startswith(b"YUV4MPEG2") or (ext == ".y4m" and not magic.startswith(b"DKIF"))
    vp8_ivf = magic.startswith(b"DKIF") and magic[8:12] == b"VP80"
    if raw or vp8_ivf:
        return _cut_decoded(path, frames_per_chunk)
    return _cut_compressed(path, frames_per_chunk)


def _cut_decoded(path: str, frames_per_chunk: int | None) -> Iterator[EncodedChunk]:
    from codec.errors import VP8Error
    from media.video import open_video
    try:
        video = open_video(path)
    except VP8Error as e:
        raise MediaError(f"{path}: {e}") from None
    with video:
        n = _per_chunk(frames_per_chunk, video.rate)
        start = 0
        try:
            for images in _pieces(video, n):
                yield _y4m_chunk(images, start, video.rate)
                start += len(images)
        except VP8Error as e:
            raise MediaError(f"{path}: {e}") from None
        if start == 0:
            raise MediaError(f"{path}: no picture in the input")


def _pieces(images, n: int, merge: bool = False) -> Iterator[list]:
    """Consecutive lists of ``n`` pictures, the last one shorter; with ``merge`` the last takes
    the remainder instead (up to 2n - 1 pictures), so only a run shorter than ``n`` gives a
    shorter piece."""
    keep = 2 * n if merge else n
    buf: list = []
    for im in images:
        buf.append(im)
        if len(buf) == keep:
            yield buf[:n]
            buf = buf[n:]
    if buf:
        yield buf


def _open(path: str):
    """``path`` opened by PyAV, and its first video stream."""
    import av
    try:
        container = av.open(path)
    except av.error.FFmpegError as e:
        raise MediaError(f"{path}: not a video file ffmpeg can read: {_msg(e)}") from None
    if not container.streams.video:
        container.close()
        raise MediaError(f"{path}: no video stream in the file")
    return container, container.streams.video[0]


def _packets(path: str, container, stream) -> Iterator:
    """The stream's packets with data, in decode order."""
    import av
    try:
        for p in container.demux(stream):
            if p.size:
                yield p
    except av.error.FFmpegError as e:
        raise MediaError(f"{path}: ffmpeg cannot read it: {_msg(e)}") from None


def _gops(packets) -> Iterator[list]:
    """Packets (decode order) grouped at each key frame, one group at a time."""
    gop: list = []
    for p in packets:
        if p.is_keyframe and gop:
            yield gop
            gop = []
        gop.append(p)
    if gop:
        yield gop


def _cut_compressed(path: str, frames_per_chunk: int | None) -> Iterator[EncodedChunk]:
    # First a look at the timestamps and key frames only (no packet kept), then the cut, which
    # holds one run of GOPs at a time.
    container, stream = _open(path)
    try:
        r = stream.average_rate or stream.guessed_rate
        fps = (r.numerator, r.denominator) if r else (30, 1)
        n = _per_chunk(frames_per_chunk, fps)
        pts, lengths, first_key = set(), [], None
        closed = _IdrCheck(stream)
        for p in _packets(path, container, stream):
            if first_key is None:
                first_key = p.is_keyframe
            if p.pts is None or p.pts in pts:
                pts = None
                break
            pts.add(p.pts)
            if p.is_keyframe or not lengths:
                lengths.append(0)
            lengths[-1] += 1
            closed.see(p)
    finally:
        container.close()
    if not (pts and first_key and any(k <= SPARSE * n for k in lengths)):
        # no timestamps to place frames by, or key frames too sparse everywhere
        yield from _cut_decoded(path, n)
        return
    container, stream = _open(path)
    try:
        gops = _gops(_packets(path, container, stream))
        if closed.ok and max(lengths) <= SPARSE * n:
            yield from _remux_closed(stream, fps, n, gops)
        else:
            yield from _Cutter(path, stream, fps, n).run(gops)
    finally:
        container.close()


class _IdrCheck:
    """Whether every GOP of an H.264 or HEVC stream is closed by the standard's own guarantee, so
    that a run of GOPs remuxed alone decodes to exactly the pictures a whole decode gives, with
    no decode to compare: each key packet is an IDR access unit (H.264 8.2.5.1, H.265 8.3.2: an
    IDR picture marks every earlier reference picture unused, so nothing after it in decode
    order refers back), no later packet of its GOP is shown before it (no leading pictures), and
    every packet is one picture (none marked discard, as an edit list does)."""

    def __init__(self, stream):
        ctx = stream.codec_context
        extra = bytes(ctx.extradata or b"")
        # The length of each NAL unit's size prefix (ISO/IEC 14496-15: avcC byte 4, hvcC byte 21).
        self.codec, self.prefix = ctx.name, None
        if self.codec == "h264" and len(extra) > 4 and extra[0] == 1:
            self.prefix = (extra[4] & 3) + 1
        elif self.codec == "hevc" and len(extra) > 21 and extra[0] == 1:
            self.prefix = (extra[21] & 3) + 1
        self.ok = self.prefix is not None
        self.key_pts = None

    def see(self, p) -> None:
        if not self.ok:
            return
        if p.is_discard or p.is_corrupt or (p.is_keyframe and not self._idr(bytes(p))):
            self.ok = False
        elif p.is_keyframe:
            self.key_pts = p.pts
        elif self.key_pts is None or p.pts < self.key_pts:
            self.ok = False

    def _idr(self, data: bytes) -> bool:
        """Every VCL NAL unit of the access unit is an IDR slice (H.264 type 5; H.265 19, 20)."""
        at, vcl, n = 0, 0, self.prefix
        while at + n <= len(data):
            size = int.from_bytes(data[at:at + n], "big")
            if size == 0 or at + n + size > len(data):
                return False
            head = data[at + n]
            if self.codec == "h264":
                kind = head & 0x1F
                if 1 <= kind <= 5:
                    if kind != 5:
                        return False
                    vcl += 1
            else:
                kind = (head >> 1) & 0x3F
                if kind <= 31:
                    if kind not in (19, 20):
                        return False
                    vcl += 1
            at += n + size
        return vcl > 0 and at == len(data)


def _remux_closed(stream, fps: tuple[int, int], n: int, gops) -> Iterator[EncodedChunk]:
    """Runs of closed GOPs (``_IdrCheck``) of at least ``n`` pictures remuxed, one picture per
    packet; the last run takes whatever remains."""
    start, pending = 0, []
    for gop in gops:
        pending += gop
        if len(pending) >= n:
            yield EncodedChunk(_remux(stream, pending), "matroska", start, len(pending), fps)
            start += len(pending)
            pending = []
    if pending:
        yield EncodedChunk(_remux(stream, pending), "matroska", start, len(pending), fps)


class _Cutter:
    """Remuxes runs of GOPs, checked against one decode of the whole input (``reference``)."""

    def __init__(self, path: str, stream, fps: tuple[int, int], n: int):
        self.path, self.stream, self.fps, self.n = path, stream, fps, n
        self.start = 0
        self.reference = self._decode_whole()
        self.peeked = None

    def _decode_whole(self):
        import av

        from media.video import _frame_to_image
        container = av.open(self.path)
        try:
            video = container.streams.video[0]
            video.thread_type = "AUTO"
            for i, frame in enumerate(container.decode(video)):
                yield frame.pts, _frame_to_image(frame, i)
        except av.error.FFmpegError as e:
            raise MediaError(f"{self.path}: frame decode failed: {_msg(e)}") from None
        finally:
            container.close()

    def frames_until(self, last_pts: int | None) -> Iterator:
        """Whole-decode pictures in order while their pts is at most ``last_pts`` (None: all)."""
        while True:
            item = self.peeked if self.peeked is not None else next(self.reference, None)
            self.peeked = None
            if item is None:
                return
            if last_pts is not None and item[0] is not None and item[0] > last_pts:
                self.peeked = item
                return
            yield item[1]

    def run(self, gops) -> Iterator[EncodedChunk]:
        pending: list = []
        for gop in gops:
            if len(gop) > SPARSE * self.n:
                yield from self.decoded(max(p.pts for p in pending + gop))
                pending = []
                continue
            pending += gop
            if len(pending) >= self.n:
                yield from self.remuxed(pending)
                pending = []
        if pending:
            yield from self.remuxed(pending)
        yield from self.decoded(None)  # anything the packets' timestamps did not claim

    def emit_raw(self, images: list) -> EncodedChunk:
        chunk = _y4m_chunk(images, self.start, self.fps)
        self.start += len(images)
        return chunk

    def decoded(self, last_pts: int | None) -> Iterator[EncodedChunk]:
        """Raw chunks of ``n`` pictures (the last up to 2n - 1) until ``last_pts``."""
        for images in _pieces(self.frames_until(last_pts), self.n, merge=True):
            yield self.emit_raw(images)

    def remuxed(self, packets: list) -> Iterator[EncodedChunk]:
        data = _remux(self.stream, packets)
        want = list(self.frames_until(max(p.pts for p in packets)))
        got = _decoded_md5s(data)
        if want and got == [im.md5() for im in want]:
            chunk = EncodedChunk(data, "matroska", self.start, len(want), self.fps)
            self.start += len(want)
            yield chunk
            return
        for images in _pieces(want, self.n, merge=True):  # decodes differently alone: raw instead
            yield self.emit_raw(images)


def _remux(template, packets: list) -> bytes:
    """``packets`` (decode order) into an in-memory Matroska file, no re-encoding."""
    import av
    buf = io.BytesIO()
    out = av.open(buf, "w", format="matroska", container_options={"fflags": "+bitexact"})
    try:
        s = out.add_stream_from_template(template)
        for p in packets:
            q = av.Packet(bytes(p))
            q.stream = s
            q.time_base = p.time_base
            q.pts, q.dts, q.duration = p.pts, p.dts, p.duration
            q.is_keyframe = p.is_keyframe
            out.mux(q)
    finally:
        out.close()
    return buf.getvalue()


def _decoded_md5s(data: bytes) -> list[str] | None:
    """MD5 of each picture a chunk decodes to on its own (None if it does not decode)."""
    import av

    from media.video import _frame_to_image
    try:
        with av.open(io.BytesIO(data)) as c:
            video = c.streams.video[0]
            video.thread_type = "AUTO"
            return [_frame_to_image(f, i).md5() for i, f in enumerate(c.decode(video))]
    except (av.error.FFmpegError, ValueError):
        return None


def frames_of(chunk: EncodedChunk) -> FrameBatch:
    """The pictures of a chunk of any container (``pipeline.stages.video.decode_chunk``)."""
    from pipeline.stages.video import decode_chunk
    return decode_chunk(chunk)


def read_image(path: str) -> FrameBatch:
    """One picture of an image file as a one-frame yuv420p batch (PyAV, else Pillow)."""
    import av

    from media.video import _frame_to_image
    path = os.fspath(path)
    with open(path, "rb"):
        pass  # OSError for a missing file, as it is
    try:
        with av.open(path) as c:
            if c.streams.video:
                for frame in c.decode(c.streams.video[0]):
                    return FrameBatch.from_images([_frame_to_image(frame, 0)], 0, (30, 1))
    except (av.error.FFmpegError, ValueError):
        pass
    try:
        import numpy as np
        from PIL import Image as PILImage
        with PILImage.open(path) as im:
            rgb = np.asarray(im.convert("RGB"))
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        return FrameBatch.from_images([_frame_to_image(frame, 0)], 0, (30, 1))
    except ImportError:
        raise MediaError(f"{path}: ffmpeg cannot read it as an image (and Pillow is not "
                         "installed)") from None
    except Exception as e:  # noqa: BLE001 - Pillow's many error types, as one line
        raise MediaError(f"{path}: not an image file ffmpeg or Pillow can read ({_msg(e)})") from None


# -- output ---------------------------------------------------------------------------------------

def check_output(path: str, port_type: str) -> None:
    """Raise ``MediaError`` unless ``path`` can take ``port_type`` values (by its extension) in
    a directory that exists and is writable."""
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if path.startswith("s3://"):
        # Joined in S3 by the job's workers from the chunks as they are (``pipeline.ivf_join``):
        # anything else needs one process over every picture (a muxer, an encode).
        if port_type != "chunks" or ext != ".ivf":
            raise MediaError(f"{path}: an s3:// output takes a chunks port (VP8 chunks, e.g. an encode "
                             f"stage's) written as .ivf, joined in S3 by the workers; write this "
                             f"{port_type} port as {ext or 'a file'} to a local path")
        from storage import StorageError
        from storage.s3 import parse_object_url
        try:
            parse_object_url(path)
        except StorageError as e:
            raise MediaError(str(e)) from None
        return
    if port_type not in {t for types in FORMS.values() for t in types}:
        raise MediaError(f"{path}: a port of type {port_type!r} cannot be written to a file")
    if ext not in FORMS or port_type not in FORMS[ext]:
        fits = sorted(e for e, types in FORMS.items() if port_type in types)
        raise MediaError(f"{path}: a {port_type} port is written as {', '.join(fits)}, "
                         f"not {ext or 'a file without an extension'}")
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise MediaError(f"{path}: is a directory")
    if not os.path.isdir(directory):
        raise MediaError(f"{path}: directory {directory} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise MediaError(f"{path}: directory {directory} is not writable")


def sound_plan(values: list, sound: str | None, warn=None):
    """The ``media.outputs.AudioPlan`` for an output of ``values`` (sorted by ``start``) with the
    sound of the file ``sound`` (None: no sound). The values play one after another, so a
    pipeline that dropped frames keeps the sound of the frames it kept, and only theirs; a value
    whose ``meta["speed"]`` is not 1 (a stage that changes speed) covers ``count * speed``
    input frames from its ``meta["source_start"]`` (default: its ``start``), its sound played
    that much faster (``media.audio``)."""
    from media.audio import spans_of
    from media.outputs import AudioPlan, warn_line

    if not sound or not values:
        return AudioPlan()
    pieces = [(v.meta.get("source_start", v.start), v.count, v.meta.get("speed", 1))
              if isinstance(v.meta, dict) else (v.start, v.count, 1) for v in values]
    return AudioPlan(sound, spans_of(pieces, tuple(values[0].fps)), warn or warn_line)


def output_times(values: list, times) -> tuple[list[int], Fraction] | None:
    """Each output picture's presentation time for ``values`` (sorted, played one after another)
    from the input's ``times`` (``media.video.frame_times``: ticks per input picture and the
    time base): each picture lasts as long as its input picture did, so an output of every
    input picture keeps the input's times exactly. None: no times (a constant rate), or values
    that do not map to input pictures one to one (a stage that changes speed)."""
    if not times:
        return None
    steps = _steps(times)
    out: list[int] = []
    at = 0
    for v in values:
        got = _value_ticks(v, steps, at)
        if got is None:
            return None
        out += got[0]
        at = got[1]
    return out, Fraction(times[1])


def _steps(times) -> list[int]:
    """How long each input picture lasts, in ticks (the last as long as the one before it)."""
    ticks = times[0]
    steps = [b - a for a, b in zip(ticks, ticks[1:])]
    return steps + steps[-1:]


def _value_ticks(v, steps: list[int], at: int) -> tuple[list[int], int] | None:
    """The times of ``v``'s pictures played from ``at`` (ticks), each lasting as its input picture
    did, and the time after its last; None when ``v`` does not map to input pictures one to one."""
    meta = v.meta if isinstance(v.meta, dict) else {}
    source = meta.get("source_start", v.start)
    if meta.get("speed", 1) != 1 or source < 0 or source + v.count > len(steps):
        return None
    out = []
    for k in range(source, source + v.count):
        out.append(at)
        at += steps[k]
    return out, at


def write_output(path: str, port_type: str, values: list, sound: str | None = None, warn=None,
                 times=None) -> None:
    """Write ``values`` of ``port_type`` (in any order; sorted by ``start``, played one after
    another) to ``path``, with the sound of the file ``sound`` where the format holds sound
    (``.webm``, ``.mkv``, ``.mp4``, ``.m3u8``, ``.mpd``; ``warn``: where a line about sound that
    could not be kept goes). ``times``: a variable-frame-rate input's ``media.video.frame_times``,
    kept in every output of pictures but ``.y4m`` (``output_times``)."""
    path = os.fspath(path)
    check_output(path, port_type)
    values = sorted(values, key=lambda v: v.start)
    if not values:
        raise MediaError(f"{path}: nothing to write (the port carried no value)")
    ext = os.path.splitext(path)[1].lower()
    audio = sound_plan(values, sound, warn) if port_type != "records" else None
    if ext == ".json":
        _write_json(path, values)
    elif ext == ".y4m":
        if audio is not None:
            audio.warn_if_dropped("a .y4m file")
        _write_y4m(path, values)
    elif ext in (".mp4", ".m3u8"):
        _write_h264(path, values, audio, output_times(values, times))
    else:
        from media.outputs import write_vp8_file
        stream = _vp8_stream(path, values)
        kept = output_times(values, times)
        pts, tb = stream.pts, None
        if kept is not None:   # frame numbers to the input's times (hidden frames: the next shown)
            last = len(kept[0]) - 1
            pts, tb = [kept[0][min(p, last)] for p in stream.pts], kept[1]
        if ext == ".mpd":
            _write_dash(path, stream, audio, pts, tb)
        else:
            try:
                write_vp8_file(path, stream.frames, pts, stream.keys, stream.shown, stream.width,
                               stream.height, stream.fps, audio, time_base=tb)
            except ContainerError as e:
                raise MediaError(f"{path}: {e}") from None


def _write_h264(path: str, values: list, audio, times=None) -> None:
    """The pictures encoded by libx264 (``media.outputs.write_h264``), one batch decoded at a time."""
    from codec.errors import VP8Error
    from media.outputs import write_h264

    with tempfile.TemporaryDirectory(prefix="excamera-out-") as tmpdir:
        try:
            batches = _pictures(values, tmpdir)
            first = next(batches)

            def pictures():
                for b in (first, *batches):
                    if (b.width, b.height) != (first.width, first.height):
                        raise MediaError(f"{path}: the value at frame {b.start} is {b.width}x{b.height}, "
                                         f"the first {first.width}x{first.height}")
                    yield from b.images()
            write_h264(path, pictures(), first.width, first.height, tuple(values[0].fps), audio, times)
        except (VP8Error, ContainerError) as e:
            raise MediaError(f"{path}: {e}") from None


def _write_json(path: str, values: list) -> None:
    from codec.ivf import AtomicFile
    records = [r for v in values for r in (v.records if isinstance(v, Records) else [])]
    if any(not isinstance(v, Records) for v in values):
        raise MediaError(f"{path}: only records are written as JSON")
    with AtomicFile(path) as f:
        f.write(json.dumps(records, indent=1, sort_keys=True).encode() + b"\n")


def _pictures(values: list, tmpdir: str) -> Iterator[FrameBatch]:
    from pipeline.stages.video import decode_chunk
    for v in values:
        yield decode_chunk(v, tmpdir) if isinstance(v, EncodedChunk) else v


def _write_y4m(path: str, values: list) -> None:
    from codec.errors import VP8Error
    from codec.y4m import Y4mWriter
    with tempfile.TemporaryDirectory(prefix="excamera-out-") as tmpdir:
        try:
            with Y4mWriter(path, rate=tuple(values[0].fps)) as w:
                for batch in _pictures(values, tmpdir):
                    for im in batch.images():
                        w.write(im)
        except VP8Error as e:
            raise MediaError(f"{path}: {e}") from None


class _Stream:
    """VP8 frames in decode order with pts (in frames), key and shown flags, size and rate."""

    def __init__(self, fps: tuple[int, int]):
        self.fps = fps
        self.frames: list[bytes] = []
        self.pts: list[int] = []
        self.keys: list[bool] = []
        self.shown: list[bool] = []
        self.width = self.height = 0


def _vp8_stream(path: str, values: list) -> _Stream:
    """The values as one VP8 stream: IVF/VP8 chunks as they are, anything else encoded with the
    encode stage's defaults; each chunk's frames placed from its ``start``."""
    from codec.chunks import frame_tag, presentation_times
    from codec.errors import VP8Error
    from pipeline.stages.video import StageInputError, encode_vp8, ivf_frames
    fps = tuple(values[0].fps)
    at = 0                      # where the next value's first frame plays, in frames
    out = _Stream(fps)
    with tempfile.TemporaryDirectory(prefix="excamera-out-") as tmpdir:
        for v in values:
            if tuple(v.fps) != fps:
                raise MediaError(f"{path}: the value at frame {v.start} is at {v.fps[0]}/{v.fps[1]} "
                                 f"fps, the first at {fps[0]}/{fps[1]}")
            try:
                if not (isinstance(v, EncodedChunk) and v.container == "ivf" and v.data[8:12] == b"VP80"):
                    batch = next(_pictures([v], tmpdir))
                    v = encode_vp8(batch)
                frames = ivf_frames(v)
                tags = [frame_tag(d) for d in frames]
            except (StageInputError, VP8Error) as e:
                raise MediaError(f"{path}: {e}") from None
            if not tags or not tags[0].key_frame:
                raise MediaError(f"{path}: the chunk at frame {v.start} does not start with a key frame")
            if not out.frames:
                out.width, out.height = tags[0].width, tags[0].height
            for t in tags:
                if t.key_frame and (t.width, t.height) != (out.width, out.height):
                    raise MediaError(f"{path}: the chunk at frame {v.start} is {t.width}x{t.height}, "
                                     f"the first {out.width}x{out.height}")
            out.frames += frames
            out.pts += [at + p for p in presentation_times(tags)]
            at += v.count
            out.keys += [t.key_frame for t in tags]
            out.shown += [t.show_frame for t in tags]
    return out


def _write_dash(path: str, stream: _Stream, audio=None, pts=None, time_base=None) -> None:
    """DASH: ffmpeg's dash muxer writes WebM segments and the manifest
    (``media.outputs.manifest_beside``). With ``audio`` (a ``media.outputs.AudioPlan``) the sound
    is a second adaptation set, Opus in WebM segments. ``pts`` in ticks of ``time_base``: a
    variable-rate input's times (``output_times``) instead of the stream's frame numbers."""
    import av

    from media.outputs import manifest_beside
    from media.webm import _template, mux_vp8
    stem = os.path.splitext(os.path.basename(path))[0]
    track = audio.track("webm") if audio is not None else None
    try:
        tb = Fraction(stream.fps[1], stream.fps[0])
        first_gop = next((i for i, k in enumerate(stream.keys) if k and i), len(stream.keys))
        seconds = max(float(first_gop * tb), 0.001)
        if time_base is not None:    # the first segment as long as the input's first GOP plays
            tb = Fraction(time_base)
            end = pts[first_gop] if first_gop < len(pts) else pts[-1] + 1
            seconds = max(float(end * tb), 0.001)
        else:
            pts = stream.pts
        options = {"dash_segment_type": "webm", "use_template": "1", "use_timeline": "1",
                   "seg_duration": f"{seconds:.3f}", "init_seg_name": f"{stem}-init-$RepresentationID$.webm",
                   "media_seg_name": f"{stem}-$RepresentationID$-$Number%05d$.webm",
                   "fflags": "+bitexact"}
        if track is not None:
            options["adaptation_sets"] = "id=0,streams=v id=1,streams=a"
        with manifest_beside(path) as (_, manifest), \
                _template(av, stream.frames[0], stream.width, stream.height, stream.fps) as probe:
            c = av.open(manifest, "w", format="dash", container_options=options)
            try:
                mux_vp8(av, c, probe, stream.frames, pts, stream.keys, stream.shown, tb, audio=track)
            finally:
                c.close()
    except av.error.FFmpegError as e:
        raise MediaError(f"{path}: ffmpeg could not write DASH: {_msg(e)}") from None
    finally:
        if track is not None:
            track.close()


class DashWriter:
    """DASH written while the pipeline runs, so a player can start before the run ends: encoded
    VP8 chunks are handed to ``add`` in any order and muxed in frame order as soon as each one
    follows the last; ffmpeg's dash muxer writes each WebM segment beside ``path`` and rewrites the
    manifest (``type="dynamic"``) as it goes. ``close`` writes the final (static) manifest;
    ``abort`` removes everything written. ``first_manifest_s`` is when the manifest first
    appeared (seconds after construction). ``sound``: a file whose sound goes beside the video
    as a second adaptation set (Opus), muxed up to each piece's end as the pieces are.
    ``times``: a variable-frame-rate input's ``media.video.frame_times``, kept as
    ``output_times`` keeps them; a piece they do not fit (a stage that changes speed) raises
    ``MediaError``, and the output is then written whole at the end (``pipeline.live``)."""

    def __init__(self, path: str, clock=None, sound: str | None = None, times=None):
        import time

        self.path = os.path.abspath(path)
        self.directory, self.name = os.path.split(self.path)
        self.stem = os.path.splitext(self.name)[0]
        self.clock = clock or time.monotonic
        self.t0 = self.clock()
        self.pending: dict[int, EncodedChunk] = {}
        self.next: int | None = None
        self.before = set(os.listdir(self.directory))
        self.container = self.probe = self.stream = None
        self.first_manifest_s: float | None = None
        self.frames = 0
        self.sound = sound
        self.audio: list = []           # the sound's packets not yet muxed, in time order
        self.track = None
        self.steps = _steps(times) if times else None
        self.time_base = Fraction(times[1]) if times else None
        self.at = 0                     # with times: where the next piece starts, in ticks

    def add(self, chunk: EncodedChunk) -> None:
        self.pending[chunk.start] = chunk
        if self.next is None:
            self.next = min(self.pending)   # the sink's first piece starts the stream (frame 0)
            if self.next != 0:
                self.next = None
                return
        while self.next in self.pending:
            c = self.pending.pop(self.next)
            self._mux(c)
            self.next = c.start + c.count
        if self.first_manifest_s is None and os.path.exists(self.path):
            self.first_manifest_s = self.clock() - self.t0

    def _mux(self, chunk: EncodedChunk) -> None:
        import av

        from media.webm import _template, mux_vp8
        from pipeline.stages.video import ivf_frames
        from codec.chunks import frame_tag, presentation_times

        frames = ivf_frames(chunk)
        tags = [frame_tag(d) for d in frames]
        if not tags or not tags[0].key_frame:
            raise MediaError(f"{self.path}: the chunk at frame {chunk.start} does not start with a key frame")
        tb = Fraction(chunk.fps[1], chunk.fps[0])
        pts = [chunk.start + p for p in presentation_times(tags)]
        end = chunk.start + chunk.count
        if self.steps is not None:      # the input's times: ticks of its time base
            got = _value_ticks(chunk, self.steps, self.at)
            if got is None:
                raise MediaError(f"{self.path}: the chunk at frame {chunk.start} does not keep the input's times")
            ticks, end = got
            tb, pts = self.time_base, [ticks[p] if p < len(ticks) else end for p in presentation_times(tags)]
        if self.container is None:
            options = {"dash_segment_type": "webm", "use_template": "1", "use_timeline": "1",
                       "seg_duration": f"{max(float((end - pts[0]) * tb), 0.001):.3f}",
                       "init_seg_name": f"{self.stem}-init-$RepresentationID$.webm",
                       "media_seg_name": f"{self.stem}-$RepresentationID$-$Number%05d$.webm",
                       "fflags": "+bitexact"}
            if self.sound:
                from media.outputs import AudioPlan
                self.track = AudioPlan(self.sound).track("webm")
            if self.track is not None:
                options["adaptation_sets"] = "id=0,streams=v id=1,streams=a"
            self._probe_cm = _template(av, frames[0], tags[0].width, tags[0].height, tuple(chunk.fps))
            self.probe = self._probe_cm.__enter__()
            self.container = av.open(self.path, "w", format="dash", container_options=options)
            if self.track is not None:
                self.stream = self.container.add_stream_from_template(self.probe.streams.video[0])
                self.audio = self.track.packets(self.track.add_to(self.container))
        mux_vp8(av, self.container, self.probe, frames, pts, [t.key_frame for t in tags],
                [t.show_frame for t in tags], tb, stream=self.stream)
        self.stream = self.container.streams.video[0]
        self.frames += chunk.count
        self.at = end
        self._mux_sound(end * tb)

    def _mux_sound(self, until) -> None:
        """The sound's packets that start before ``until`` (seconds; None: all of them)."""
        k = 0
        while k < len(self.audio) and (until is None or self.audio[k].pts * self.audio[k].time_base < until):
            self.container.mux(self.audio[k])
            k += 1
        del self.audio[:k]

    def close(self) -> None:
        """Finish: every piece must have been muxed (a gap would be a bug upstream)."""
        if self.pending or self.container is None:
            missing = sorted(self.pending)[:3]
            self.abort()
            raise MediaError(f"{self.path}: pieces never followed on (waiting at frame {self.next}: {missing})")
        self.audio.clear()              # the sound after the last picture is left out
        self.container.close()
        self._probe_cm.__exit__(None, None, None)
        if self.track is not None:
            self.track.close()

    def abort(self) -> None:
        if self.container is not None:
            try:
                self.container.close()
            except Exception:  # noqa: BLE001 - already failing: remove what was written
                pass
            self._probe_cm.__exit__(None, None, None)
            self.container = None
        if self.track is not None:
            self.track.close()
            self.track = None
        for f in set(os.listdir(self.directory)) - self.before:
            if f == self.name or f.startswith(self.stem + "-"):
                try:
                    os.unlink(os.path.join(self.directory, f))
                except OSError:
                    pass
