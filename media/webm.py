"""VP8 frames into a WebM file through PyAV (ffmpeg's Matroska muxer), without re-encoding; the
input's sound beside them when given (``media.audio``).

Hidden frames (alt-refs, ``show_frame = 0``) are muxed as ffmpeg muxes libvpx's: each VP8 frame
is its own block, in decode order; a hidden frame is stamped with the time of the shown frame
after it (libvpx's "previous shown frame + 1") and lasts 0, so the two share a timestamp and the
demuxer hands them to the decoder in file order. ffmpeg and vpxdec decode such a file to the same
pictures as the IVF (``tests/test_chunks.py``).

The stream's codec parameters come from a one-frame IVF of the first key frame opened by PyAV
(``add_stream_from_template``), so no encoder is ever opened. Written under a temporary name and
renamed when complete (``codec.ivf.AtomicFile``).
"""

from __future__ import annotations

import io
import os
from fractions import Fraction

from codec.errors import ContainerError
from codec.ivf import FRAME_HEADER_SIZE, AtomicFile, IvfHeader


def vp8_packets(av, stream, frames, pts, key_frames, shown, time_base) -> list:
    """PyAV packets of ``stream`` for VP8 ``frames`` (decode order): no re-encode; hidden frames
    last no time."""
    packets = []
    for data, t, key, visible in zip(frames, pts, key_frames, shown):
        packet = av.Packet(data)
        packet.stream = stream
        packet.time_base = time_base
        packet.pts = packet.dts = t
        packet.duration = 1 if visible else 0
        packet.is_keyframe = key
        packets.append(packet)
    return packets


def mux_vp8(av, container, probe, frames, pts, key_frames, shown, time_base, stream=None, audio=None) -> None:
    """Mux VP8 ``frames`` into an open PyAV ``container`` (WebM, or DASH's WebM segments) as one
    stream copied from ``probe``'s (``_template``), or into ``stream`` when it was added already
    (a stream muxed piece by piece): no re-encode; hidden frames last no time. ``audio``: a
    ``media.audio.AudioTrack`` muxed beside, interleaved by time."""
    from media.audio import mux_in_time_order

    if stream is None:
        stream = container.add_stream_from_template(probe.streams.video[0])
    sound = []
    if audio is not None:
        sound = audio.packets(audio.add_to(container))
    mux_in_time_order(container, vp8_packets(av, stream, frames, pts, key_frames, shown, time_base), sound)


def write_webm(path: str | os.PathLike, frames: list[bytes], pts: list[int], key_frames: list[bool],
               shown: list[bool], width: int, height: int, rate: tuple[int, int], audio=None,
               format: str = "webm", time_base: Fraction | None = None) -> None:
    """Mux VP8 ``frames`` (decode order) into a WebM file at ``path``.

    ``pts`` are in frames (``1 / rate`` seconds, ``rate`` = (numerator, denominator) frames per
    second), ``key_frames`` / ``shown`` flag each frame; ``frames[0]`` must be a key frame of
    ``width`` x ``height``. ``audio``: a ``media.audio.AudioTrack`` made for ``format``
    (``"webm"``, or ``"matroska"`` for ``.mkv``) muxed beside the video. Raises
    ``ContainerError`` if ffmpeg refuses, ``OSError`` for the path.
    """
    if not frames or not key_frames[0]:
        raise ValueError("a WebM stream starts with a key frame")
    try:
        import av
    except ImportError:
        raise ContainerError("writing WebM needs PyAV (pip install av); write .ivf instead") from None
    time_base = time_base or Fraction(rate[1], rate[0])   # given: pts are a variable-rate input's times
    out = AtomicFile(path)
    try:
        with _template(av, frames[0], width, height, rate) as probe:
            # bitexact: no random segment UID or writing-application string, so the bytes repeat.
            container = av.open(out.file, "w", format=format, container_options={"fflags": "+bitexact"})
            try:
                mux_vp8(av, container, probe, frames, pts, key_frames, shown, time_base, audio=audio)
            finally:
                container.close()
    except av.error.FFmpegError as e:
        out.discard()
        raise ContainerError(f"ffmpeg could not write {format}: {' '.join(str(e).split())}") from None
    except BaseException:
        out.discard()
        raise
    out.commit()


def _template(av, key_frame: bytes, width: int, height: int, rate: tuple[int, int]):
    """A one-frame IVF in memory, opened by PyAV: its stream carries VP8's codec parameters."""
    header = IvfHeader(width=width, height=height, rate=rate[0], scale=rate[1], frame_count=1)
    record = len(key_frame).to_bytes(4, "little") + bytes(FRAME_HEADER_SIZE - 4)
    return av.open(io.BytesIO(header.to_bytes() + record + key_frame), "r", format="ivf")
