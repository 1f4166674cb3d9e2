"""The pictures of one range of a video, decoded where the range is read (``docs/design/data-path.md``).

``range_pictures(f, ...)`` takes a ``media.source.RangeFile`` over the input and the range's
start as ``media.index`` planned it, and yields (picture number, ``codec.image.Image``) from
the range's key frame on (Y4M with a fixed stride: from ``start`` itself, nothing before it read);
the caller drops pictures before its own start and stops at its end. Used by the encode's decode
tasks (``worker.decode_ops``) and the pipeline's range chunks (``pipeline.source_refs``).

Errors are ``codec.errors.ContainerError`` in one line, without the source's name (the caller
adds it).
"""

from __future__ import annotations

import io

from codec.errors import ContainerError

KINDS = ("y4m", "pyav", "ivf")


def range_pictures(f, *, kind: str, key_frame: int, key_timestamp: int, key_offset: int, start: int,
                   header_len: int, frame_stride: int):
    """(picture number, ``Image``) from ``key_frame`` (y4m with a stride: from ``start``)."""
    if kind == "y4m":
        from codec.y4m import Y4mReader
        if frame_stride:  # fixed offsets: read the range's pictures, nothing before them
            header = f.read_at(0, header_len)
            f.seek(header_len + start * frame_stride)
            reader = Y4mReader(io.BufferedReader(_Prefixed(header, f), 1 << 20))
            index = start
        else:
            reader, index = Y4mReader(f), 0
        for image in reader:
            yield index, image
            index += 1
        return
    if kind == "ivf":
        from codec.ivf import IvfReader
        from media.video import _open_ivf
        video = _open_ivf(f.name, IvfReader(f, fourcc=None))
        try:
            yield from enumerate(video)
        finally:
            video.close()
        return
    if kind != "pyav":
        raise ContainerError(f"kind {kind!r} is not one of {', '.join(KINDS)}")
    yield from _pyav_pictures(f, key_frame, key_timestamp, key_offset)


def _pyav_pictures(f, key_frame: int, key_timestamp: int, key_offset: int):
    """Pictures from the key frame on. A demuxer's seek may land on an earlier key frame (MP4
    seeks by presentation time; the index holds decode times), so the packets before the key
    frame's are skipped undecoded: found by byte offset, else by decode time."""
    import av

    from media.video import _ffmpeg_message, _frame_to_image
    try:
        container = av.open(f, mode="r")
    except av.error.FFmpegError as e:
        raise ContainerError(f"not a video file ffmpeg can read: {_ffmpeg_message(e)}") from None
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        started = not key_frame
        if key_frame:
            container.seek(key_timestamp, stream=stream, backward=True, any_frame=False)
        index = key_frame
        packets = container.demux(stream)
        while True:
            try:
                packet = next(packets, None)
                if packet is None:
                    return
                if not started:
                    if packet.size == 0:
                        continue
                    at = packet.pos == key_offset if key_offset >= 0 and packet.pos >= 0 else \
                        packet.dts == key_timestamp
                    if not at:
                        if (key_offset >= 0 and packet.pos > key_offset) or (packet.dts or 0) > key_timestamp:
                            raise ContainerError(f"no packet at key frame {key_frame} (offset {key_offset}); "
                                                 "the index cannot be trusted")
                        continue
                    if not packet.is_keyframe:
                        raise ContainerError(f"the packet of picture {key_frame} is no key frame")
                    started = True
                frames = packet.decode()
            except av.error.FFmpegError as e:
                raise ContainerError(f"frame {index}: ffmpeg could not decode it: {_ffmpeg_message(e)}") from None
            for frame in frames:
                yield index, _frame_to_image(frame, index)
                index += 1
    finally:
        container.close()


class _Prefixed(io.RawIOBase):
    """``head`` then ``rest`` from its current position: a Y4M header followed by a range of
    its pictures, read as one file."""

    def __init__(self, head: bytes, rest):
        super().__init__()
        self.head, self.rest = head, rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        if self.head:
            n = min(len(view), len(self.head))
            view[:n] = self.head[:n]
            self.head = self.head[n:]
            return n
        return self.rest.readinto(view)
