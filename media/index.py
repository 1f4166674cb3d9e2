"""A video's index, read without decoding: frame count, size, rate and key frames.

``read_index(file)`` takes a seekable binary file (``media.source.RangeFile``, so only the bytes
the container's index needs are fetched) and tells how the input can be cut into ranges that
workers decode on their own (``docs/design/data-path.md``):

* ``y4m``: raw pictures at fixed offsets; every frame starts a range;
* ``pyav`` with an index (MP4/MOV, Matroska with cues, ...): the demuxer's index entries, read
  from the container's header, give each key frame's decode timestamp and byte offset. A key
  frame's picture number is the count of frames before it in decode order (GOPs are closed at
  key frames: nothing after one is shown before it), and the decode task checks that the first
  picture it gets after seeking is a key frame;
* no index (a raw ``.h264`` stream, VP8 in IVF, a container whose index is missing): ``keys`` is
  just frame 0 and ``indexed`` False: one reader decodes it all. The frame count then comes from
  walking the packets (the compressed bytes once, no decoding).

Errors are ``codec.errors.ContainerError`` / ``UnsupportedError`` in one line (no file name;
the caller adds it), as ``media.video`` says them.
"""

from __future__ import annotations

from dataclasses import dataclass

from codec.errors import ContainerError, UnsupportedError


@dataclass(frozen=True)
class KeyFrame:
    frame: int       # picture number (presentation order, from 0)
    timestamp: int   # decode timestamp in the stream's time base (what a seek takes); -1: the start
    offset: int      # byte offset of its packet (-1 when unknown)


@dataclass(frozen=True)
class VideoIndex:
    kind: str                    # "y4m", "pyav" or "ivf"
    frames: int                  # pictures shown
    width: int
    height: int
    rate: tuple[int, int]
    keys: tuple[KeyFrame, ...]   # where a range may start decoding (y4m: empty, every frame may)
    indexed: bool                # False: one reader must decode it all
    header_len: int = 0          # y4m: bytes before the first FRAME line
    frame_stride: int = 0        # y4m: bytes of one FRAME line and picture

    def frame_offset(self, i: int) -> int:
        """y4m: the offset of picture ``i``'s FRAME line."""
        return self.header_len + i * self.frame_stride


def read_index(f) -> VideoIndex:
    """The index of the video in seekable binary file ``f`` (see the module docstring)."""
    f.seek(0)
    magic = f.read(9)
    f.seek(0)
    if magic.startswith(b"YUV4MPEG2"):
        return _y4m_index(f)
    if magic.startswith(b"DKIF"):
        from codec.ivf import VP8_FOURCC, IvfReader
        reader = IvfReader(f, fourcc=None)
        if reader.header.fourcc == VP8_FOURCC:
            return _ivf_index(reader)
        f.seek(0)
    index = _pyav_index(f)
    from dataclasses import replace

    from media.video import first_picture_turns
    f.seek(0)
    if first_picture_turns(f) % 2:  # a rotated phone video: pictures are decoded turned
        index = replace(index, width=index.height, height=index.width)
    return index


def _y4m_index(f) -> VideoIndex:
    from codec.y4m import FRAME_TAG, SUPPORTED_COLORSPACES, Y4mReader

    reader = Y4mReader(f)
    header = reader.header
    if header.colorspace not in SUPPORTED_COLORSPACES:
        raise UnsupportedError(f"Y4M colourspace C{header.colorspace} is not 8-bit 4:2:0")
    header_len = reader._offset  # the header line and its newline
    f.seek(header_len)
    line = f.read(len(FRAME_TAG) + 1)
    size = f.seek(0, 2)
    if size == header_len:
        raise ContainerError("no frames")
    if line != FRAME_TAG + b"\n":
        # FRAME lines with parameters have no fixed stride: read it as one range.
        return VideoIndex("y4m", _count_y4m(f), header.width, header.height, header.rate, (), False, header_len, 0)
    stride = len(line) + header.frame_size
    frames, rest = divmod(size - header_len, stride)
    if rest:
        raise ContainerError(f"truncated Y4M: {rest} bytes after frame {frames - 1} do not make a frame")
    return VideoIndex("y4m", frames, header.width, header.height, header.rate, (), True, header_len, stride)


def _count_y4m(f) -> int:
    from codec.y4m import Y4mReader
    f.seek(0)
    return sum(1 for _ in Y4mReader(f))


def _ivf_index(reader) -> VideoIndex:
    """VP8 in IVF has no index: walk the frame records (headers and frame tags only) to count
    the pictures shown."""
    from codec.chunks import frame_tag
    from codec.ivf import shown_timing

    shown, read, width, height = 0, 0, reader.header.width, reader.header.height
    records = []
    while (frame := reader.read_frame()) is not None:
        try:
            tag = frame_tag(frame.data)
        except ValueError as e:
            raise ContainerError(f"frame {read}: {e}") from None
        read += 1
        shown += tag.show_frame
        records.append((frame.pts, bool(tag.show_frame)))
    if not shown:
        raise ContainerError("no frames")
    rate = shown_timing(records, reader.header)[0]   # a variable-rate file's header holds a time base
    return VideoIndex("ivf", shown, width, height, rate, (KeyFrame(0, -1, -1),), False)


def _pyav_index(f) -> VideoIndex:
    from media.video import DEFAULT_RATE, _ffmpeg_message
    try:
        import av
    except ImportError:
        raise UnsupportedError("reading this format needs PyAV (pip install av)") from None
    try:
        container = av.open(f, mode="r")
    except av.error.FFmpegError as e:
        raise ContainerError(f"not a video file ffmpeg can read: {_ffmpeg_message(e)}") from None
    try:
        if not container.streams.video:
            raise ContainerError("no video stream in the file")
        stream = container.streams.video[0]
        ctx = stream.codec_context
        if ctx is None:
            raise ContainerError("ffmpeg cannot decode the video stream")
        rate_fraction = stream.average_rate or stream.guessed_rate
        rate = (rate_fraction.numerator, rate_fraction.denominator) if rate_fraction else DEFAULT_RATE
        entries = [e for e in stream.index_entries if not e.is_discard]
        keys = tuple(KeyFrame(i, e.timestamp, e.pos) for i, e in enumerate(entries) if e.is_keyframe)
        # An index lists every frame only in some containers (MP4's sample table); Matroska's cues
        # list key frames alone, so an index is taken as the frame list only when the stream's
        # own frame count agrees with it.
        complete = bool(entries) and stream.frames == len(entries)
        if complete and keys and keys[0].frame == 0 and ctx.width and ctx.height:
            return VideoIndex("pyav", len(entries), ctx.width, ctx.height, rate, keys, True)
        # No index: count the packets (no decoding), and have one reader decode it all.
        frames = 0
        try:
            for packet in container.demux(stream):
                frames += packet.size > 0
        except av.error.FFmpegError as e:
            raise ContainerError(f"ffmpeg could not read packet {frames}: {_ffmpeg_message(e)}") from None
        if not frames:
            raise ContainerError("no frames")
        return VideoIndex("pyav", frames, ctx.width, ctx.height, rate, (KeyFrame(0, -1, -1),), False)
    except av.error.FFmpegError as e:
        raise ContainerError(f"ffmpeg cannot read the video stream: {_ffmpeg_message(e)}") from None
    finally:
        container.close()


@dataclass(frozen=True)
class DecodeRange:
    """One decode task: pictures [start, stop) (whole chunks), decoded from key frame ``key``."""

    key: KeyFrame
    start: int
    stop: int


def plan_ranges(index: VideoIndex, chunk_frames: int, group_frames: int) -> list[DecodeRange]:
    """The decode tasks for ``index``'s pictures cut in chunks of ``chunk_frames``: each covers
    whole chunks, and starts at the first chunk boundary at or after a key frame, decoding from
    that key frame (so at most ``chunk_frames - 1`` pictures are decoded twice, never a GOP).
    Neighbouring ranges merge until each holds at least ``group_frames`` pictures (y4m, where
    every picture may start a range, is cut every ``group_frames``). No index: one range."""
    n = index.frames
    if index.kind == "y4m" and index.indexed:
        step = max(chunk_frames, -(-group_frames // chunk_frames) * chunk_frames)
        return [DecodeRange(KeyFrame(a, -1, index.frame_offset(a)), a, min(a + step, n)) for a in range(0, n, step)]
    if not index.indexed:
        return [DecodeRange(index.keys[0] if index.keys else KeyFrame(0, -1, -1), 0, n)]
    starts: dict[int, KeyFrame] = {}
    for key in index.keys:
        boundary = -(-key.frame // chunk_frames) * chunk_frames
        if boundary < n:
            starts[boundary] = key  # the last key frame at or before the boundary
    cuts = sorted(starts)
    out: list[DecodeRange] = []
    for i, a in enumerate(cuts):
        b = cuts[i + 1] if i + 1 < len(cuts) else n
        if out and out[-1].stop - out[-1].start < group_frames:
            out[-1] = DecodeRange(out[-1].key, out[-1].start, b)
        else:
            out.append(DecodeRange(starts[a], a, b))
    return out


def open_video_at(ref: str):
    """A ``media.video.VideoReader`` over any source reference (``media.source``), read by range:
    a local path opens exactly as ``open_video`` opens it; a URL through a ``RangeFile``."""
    from media.source import kind_of, local_path, open_source
    from media.video import VideoReader, _open_ivf, _open_pyav, open_video

    if kind_of(ref) == "file":
        return open_video(local_path(ref))
    f = open_source(ref)
    try:
        magic = f.read(9)
        f.seek(0)
        if magic.startswith(b"YUV4MPEG2"):
            from codec.y4m import Y4mReader
            reader = Y4mReader(f)
            h = reader.header
            return VideoReader(ref, "y4m", h.width, h.height, h.rate, iter(reader), f.close)
        if magic.startswith(b"DKIF"):
            from codec.ivf import VP8_FOURCC, IvfReader
            reader = IvfReader(f, fourcc=None)
            if reader.header.fourcc == VP8_FOURCC:
                video = _open_ivf(ref, reader)
                video._close = f.close
                return video
            f.seek(0)
        video = _open_pyav(f)
        close = video._close
        video._close = lambda: (close(), f.close())
        video.path = ref
        return video
    except BaseException:
        f.close()
        raise
