"""Open any input video as a stream of I420 pictures: the input side of ``excamera ssim`` and of
the encoders.

    with open_video("clip.mp4") as video:
        print(video.width, video.height, video.rate)    # rate: (numerator, denominator) fps
        for image in video:                             # codec.image.Image, one per shown frame
            ...

Three readers, picked by the file's first bytes (then by its extension, so a damaged ``.y4m`` or
``.ivf`` gets that format's own error rather than ffmpeg's guess):

* ``YUV4MPEG2`` (``.y4m``): ``codec.y4m``; 8-bit 4:2:0 only, samples as stored (a full-range
  ``XCOLORRANGE=FULL`` clip is not converted). Another colourspace raises ``UnsupportedError``.
* ``DKIF`` with fourcc ``VP80`` (``.ivf``): our own VP8 decoder, ``codec.decoder``; one picture per
  *shown* frame (hidden alt-ref frames update the decoder and yield nothing).
* anything else, including IVF files of other codecs: PyAV (ffmpeg's libraries), imported only
  here and only then. The first video stream is decoded; ``yuv420p`` and ``yuvj420p`` frames are
  taken as they are, every other pixel format (4:2:2, 4:4:4, 10-bit, RGB) is converted to
  ``yuv420p`` by ffmpeg's swscale, with one ``excamera: note:`` line on stderr per input file.
  A phone video's rotation (its display matrix) is applied as ffmpeg applies it by default
  (autorotate: 90 and 270 degrees transpose the picture, so ``width`` and ``height`` swap).

VP8 codes sizes up to 16383x16383 (RFC 6386 section 9.1: 14 bits each); ``check_vp8_size``
says so in one line for a larger input. ``frame_times`` gives a variable-frame-rate input's
presentation times, which the pipeline's writers keep.

Frames are read one at a time, never the whole video. Errors are ``codec.errors`` exceptions with
a one-line message that says where (``frame <n>``, counting pictures from 0, and the byte offset
where the format has one) but not the file name, which the caller adds: ``ContainerError`` for
unreadable or damaged input, ``UnsupportedError`` for valid input we do not handle, and the VP8
decoder's ``CorruptFrameError``. Nothing of PyAV escapes: its errors are turned into those.
``OSError`` (missing file, no permission) is raised as it is.
"""

from __future__ import annotations

import os
from typing import Callable, Iterator

import numpy as np

from codec.errors import ContainerError, UnsupportedError, VP8Error
from codec.image import Image

#: Pixel formats whose samples are taken as they are (8-bit 4:2:0, limited or full range).
NATIVE_PIXEL_FORMATS = ("yuv420p", "yuvj420p")
#: Frame rate reported when the container does not say (the Y4M default).
DEFAULT_RATE = (30, 1)
#: The largest width and height a VP8 frame header holds (RFC 6386 section 9.1: 14 bits).
VP8_MAX_SIZE = 16383

_noted: set[str] = set()   # files whose conversion this process has noted (one line per file)


def check_vp8_size(width: int, height: int) -> None:
    """``UnsupportedError`` (one line) unless VP8 can code a ``width`` x ``height`` picture."""
    if not (1 <= width <= VP8_MAX_SIZE and 1 <= height <= VP8_MAX_SIZE):
        raise UnsupportedError(f"the video is {width}x{height}; VP8 codes at most "
                               f"{VP8_MAX_SIZE}x{VP8_MAX_SIZE} (RFC 6386 section 9.1)")


def note_conversion(path: str, pixel_format: str | None) -> None:
    """One ``excamera: note:`` line on stderr, once per file in this process, when its pictures
    (``pixel_format``, ffmpeg's name) are converted to 8-bit 4:2:0."""
    import sys

    if not pixel_format or pixel_format in NATIVE_PIXEL_FORMATS:
        return
    key = os.path.abspath(path)
    if key not in _noted:
        _noted.add(key)
        print(f"excamera: note: {path}: its pictures are {pixel_format}; converted to 8-bit "
              "4:2:0 (yuv420p), the only format VP8 codes", file=sys.stderr)


def input_pixel_format(path: str) -> str | None:
    """ffmpeg's name for the pixel format of ``path``'s first video stream (None: not a file
    PyAV reads, or no video stream). Y4M and VP8 IVF files are 8-bit 4:2:0 here."""
    try:
        with open(path, "rb") as f:
            magic = f.read(12)
        if magic.startswith(b"YUV4MPEG2") or (magic.startswith(b"DKIF") and magic[8:12] == b"VP80"):
            return None
        import av
        with av.open(path) as c:
            if not c.streams.video or c.streams.video[0].codec_context is None:
                return None
            fmt = c.streams.video[0].codec_context.format
            return fmt.name if fmt is not None else None
    except Exception:  # noqa: BLE001 - whoever reads it next reports what is wrong
        return None


def quarter_turns(frame) -> int:
    """How many quarter turns clockwise ffmpeg's autorotate turns this PyAV frame (0..3), from
    its display matrix (``frame.rotation`` is counterclockwise degrees)."""
    try:
        degrees = frame.rotation
    except Exception:  # noqa: BLE001 - no display matrix
        return 0
    return round(-(degrees or 0) / 90) % 4


def first_picture_turns(f) -> int:
    """``quarter_turns`` of the first picture of ``f`` (a path or a seekable file PyAV opens);
    0 when it has none. Used where sizes are planned without decoding (``media.index``)."""
    import av
    try:
        with av.open(f) as c:
            for frame in c.decode(c.streams.video[0]):
                return quarter_turns(frame)
    except Exception:  # noqa: BLE001 - the decode proper reports a damaged file
        return 0
    return 0


def frame_times(path: str):
    """The presentation times of ``path``'s pictures, in picture order: ``(times, time_base)``,
    ``times`` in ticks of ``time_base`` counted from the first picture; None when the input
    plays at a constant rate (every step the same), has no timestamps, or is Y4M/IVF.
    Only packet headers are read (no decoding)."""
    try:
        with open(path, "rb") as f:
            magic = f.read(12)
        if magic.startswith(b"YUV4MPEG2"):
            return None
        if magic.startswith(b"DKIF"):  # its header holds the time base, each record a pts
            from codec.ivf import read_timing
            _, times, time_base = read_timing(path)
            return (times, time_base) if times else None
        import av
        with av.open(path) as c:
            stream = c.streams.video[0]
            pts = [p.pts for p in c.demux(stream) if p.size]
            time_base = stream.time_base
    except Exception:  # noqa: BLE001 - no timestamps to keep; the reader reports the rest
        return None
    if len(pts) < 3 or None in pts or len(set(pts)) != len(pts) or time_base is None:
        return None
    pts.sort()
    steps = {b - a for a, b in zip(pts, pts[1:])}
    if max(steps) - min(steps) <= 1:  # constant rate (a tick of rounding aside)
        return None
    return [t - pts[0] for t in pts], time_base


class VideoReader:
    """An open video: ``width``, ``height`` (of the first picture), ``rate`` as ``(num, den)``
    frames per second, ``kind`` (``"y4m"``, ``"ivf"`` or ``"pyav"``), ``path``; iterate for
    ``Image`` pictures. ``frames_read`` counts the pictures returned so far. ``frame_count_hint``
    is the number of pictures the file claims or its size implies (for progress reports; it may be
    wrong for a damaged file), None when unknown. Use as a context manager, or call ``close()``."""

    def __init__(self, path: str, kind: str, width: int, height: int, rate: tuple[int, int],
                 frames: Iterator[Image], close: Callable[[], None],
                 frame_count_hint: int | None = None):
        self.path = path
        self.frame_count_hint = frame_count_hint
        self.kind = kind
        self.width = width
        self.height = height
        self.rate = rate
        self.frames_read = 0
        self._frames = frames
        self._close = close
        self._closed = False

    @property
    def fps(self) -> float:
        """Frames per second as a float (0.0 when the file gives a rate of 0)."""
        num, den = self.rate
        return num / den if den else 0.0

    def __iter__(self) -> "VideoReader":
        return self

    def __next__(self) -> Image:
        image = next(self._frames)
        self.frames_read += 1
        return image

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            close_frames = getattr(self._frames, "close", None)  # a generator: end it first
            if close_frames is not None:
                close_frames()
            self._close()

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_video(path: str | os.PathLike, notes: bool = True) -> VideoReader:
    """Open ``path`` for reading pictures (see the module docstring for the formats); ``notes``:
    say on stderr when the pictures are converted (off for a pipeline's chunk files)."""
    path = os.fspath(path)
    with open(path, "rb") as f:  # OSError for a missing file or a directory, before any guessing
        magic = f.read(9)
    ext = os.path.splitext(path)[1].lower()
    if magic.startswith(b"YUV4MPEG2") or (ext == ".y4m" and not magic.startswith(b"DKIF")):
        return _open_y4m(path)
    if magic.startswith(b"DKIF") or ext == ".ivf":
        from codec.ivf import IvfReader, VP8_FOURCC

        reader = IvfReader(path, fourcc=None)  # ContainerError for a bad header
        if reader.header.fourcc == VP8_FOURCC:
            return _open_ivf(path, reader)
        reader.close()
    return _open_pyav(path, notes)


# -- Y4M ------------------------------------------------------------------------------------------

def _open_y4m(path: str) -> VideoReader:
    from codec.y4m import Y4mReader

    reader = Y4mReader(path)
    header = reader.header
    # Frames of a plain "FRAME\n" line each; rounded, as the header we re-serialize may differ
    # from the file's by a few bytes.
    try:
        payload = os.path.getsize(path) - len(header.to_bytes())
        hint = round(max(0, payload) / (len(b"FRAME\n") + header.frame_size))
    except OSError:
        hint = None
    return VideoReader(path, "y4m", header.width, header.height, header.rate, iter(reader),
                       reader.close, hint)


# -- IVF through our VP8 decoder ------------------------------------------------------------------

def _open_ivf(path: str, reader) -> VideoReader:
    from codec.decoder import Decoder

    decoder = Decoder()

    def frames() -> Iterator[Image]:
        shown = 0
        while True:
            index, offset = reader.position
            try:
                frame = reader.read_frame()
                if frame is None:
                    return
                image = decoder.decode(frame.data)
            except VP8Error as e:
                raise type(e)(f"frame {index} (offset {offset}): {e}") from None
            if image is not None:
                shown += 1
                yield image

    stream = frames()
    try:
        first = next(stream, None)  # the size of the first picture, not the header's claim
    except BaseException:
        reader.close()
        raise
    header = reader.header
    width, height = (first.width, first.height) if first else (header.width, header.height)

    def chained() -> Iterator[Image]:
        if first is not None:
            yield first
            yield from stream

    # The header's count includes hidden frames (which show no picture) and streaming writers
    # leave it at 0: a hint only. The rate from the records' pts (a variable-rate file's header
    # holds a time base, not a rate: ``codec.ivf.shown_timing``).
    from codec.ivf import read_timing
    try:
        rate = read_timing(path)[0]
    except (OSError, ContainerError):
        rate = header.frame_rate
    return VideoReader(path, "ivf", width, height, rate, chained(), reader.close,
                       header.frame_count or None)


# -- everything else through PyAV -----------------------------------------------------------------

def _ffmpeg_message(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())


def _open_pyav(path: str, notes: bool = False) -> VideoReader:
    try:
        import av
    except ImportError:
        raise UnsupportedError("reading this format needs PyAV (pip install av); .y4m and VP8 "
                               ".ivf files are read without it") from None
    try:
        container = av.open(path, mode="r")
    except av.error.FFmpegError as e:
        raise ContainerError(f"not a video file ffmpeg can read: {_ffmpeg_message(e)}") from None
    try:
        streams = container.streams.video
        if not streams:
            raise ContainerError("no video stream in the file")
        stream = streams[0]
        context = stream.codec_context
        if context is None:
            raise ContainerError("ffmpeg cannot decode the video stream (unknown codec, or a "
                                 "damaged or truncated file)")
        stream.thread_type = "AUTO"
        width, height = context.width, context.height
        hint = stream.frames or None  # 0 when the container does not say
        rate_fraction = stream.average_rate or stream.guessed_rate
    except VP8Error:
        container.close()
        raise
    except Exception as e:  # noqa: BLE001 - whatever PyAV raises on a damaged file
        container.close()
        raise ContainerError(f"ffmpeg cannot read the video stream: {_ffmpeg_message(e)}") from None
    rate = (rate_fraction.numerator, rate_fraction.denominator) if rate_fraction else DEFAULT_RATE

    def frames() -> Iterator[Image]:
        decoded = container.decode(stream)
        index = 0
        while True:
            try:
                frame = next(decoded, None)
            except Exception as e:  # noqa: BLE001 - PyAV's errors become ours, in one line
                raise ContainerError(f"frame {index}: ffmpeg could not decode it: "
                                     f"{_ffmpeg_message(e)}") from None
            if frame is None:
                return
            yield _frame_to_image(frame, index)
            index += 1

    if notes and context.format is not None:
        note_conversion(path, context.format.name)
    stream_frames = frames()
    # The first picture's size, rotated as shown (its display matrix); a decode error is raised
    # where the pictures are read, as for any other frame.
    try:
        first, failed = next(stream_frames, None), None
    except VP8Error as e:
        first, failed = None, e
    if first is not None:
        width, height = first.width, first.height
    rest = stream_frames

    def chained() -> Iterator[Image]:
        if failed is not None:
            raise failed
        if first is not None:
            yield first
            yield from rest
    stream_frames = chained()
    return VideoReader(path, "pyav", width, height, rate, stream_frames, container.close, hint)


def _frame_to_image(frame, index: int) -> Image:
    """One PyAV ``VideoFrame`` as an ``Image`` (copied out of ffmpeg's padded buffers)."""
    try:
        if frame.format.name not in NATIVE_PIXEL_FORMATS:
            frame = frame.reformat(format="yuv420p")
        planes = []
        for plane in frame.planes[:3]:
            rows, stride, width = plane.height, plane.line_size, plane.width
            buf = np.frombuffer(plane, np.uint8)[:rows * stride]
            planes.append(buf.reshape(rows, stride)[:, :width].copy())
    except Exception as e:  # noqa: BLE001 - e.g. swscale refusing a format
        raise UnsupportedError(f"frame {index}: cannot convert ffmpeg's {frame.format.name} "
                               f"picture to yuv420p: {_ffmpeg_message(e)}") from None
    turns = quarter_turns(frame)
    if turns:  # autorotate, per plane: ffmpeg's transpose=clock (1), hflip+vflip (2), cclock (3)
        planes = [np.ascontiguousarray(np.rot90(p, -turns)) for p in planes]
    image = Image(*planes)
    cw, ch = (image.width + 1) // 2, (image.height + 1) // 2
    if image.u.shape != (ch, cw) or image.v.shape != (ch, cw):
        raise UnsupportedError(f"frame {index}: ffmpeg gave chroma planes of {image.u.shape} for "
                               f"a {image.width}x{image.height} picture")
    return image
