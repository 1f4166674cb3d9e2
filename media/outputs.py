"""Output files people play, with the input's sound (``media.audio``) beside the pictures:

* ``write_vp8_file``: VP8 frames as they are (no re-encode) in ``.webm`` (sound as Opus),
  ``.mkv`` (sound copied) or ``.ivf`` (no sound: IVF holds one video stream).
* ``write_h264``: pictures encoded to H.264 by libx264 through PyAV, with AAC sound, as ``.mp4``
  (``+faststart``: a browser starts playing before it has the whole file) or HLS (``.m3u8``
  with MPEG-TS segments ``NAME-00000.ts``, ... beside it, a key frame opening each segment).

What these take is ``AudioPlan``: which file's sound, placed how (``media.audio.Span``), or none.
Both keep a variable-frame-rate input's times when given them (every format here).
Files are written under temporary names and renamed into place; nothing is left on failure.
Errors are ``codec.errors.ContainerError`` (one line) and ``OSError``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Iterable

from codec.errors import ContainerError

#: Seconds of video per HLS segment (and H.264 key frame interval).
SEGMENT_S = 2
#: libx264's constant-quality level (lower: better); ffmpeg's default is 23.
CRF = 20


def warn_line(line: str) -> None:
    """The default for warnings about the sound: one line on stderr (the video is written)."""
    print(f"excamera: warning: {line}", file=sys.stderr)


@dataclass
class AudioPlan:
    """The sound an output gets: ``source`` (a file, or None: no sound), ``spans`` (how its
    timeline maps to the output's; None: the whole of it from 0), ``warn`` (where one-line
    warnings go)."""
    source: str | None = None
    spans: list | None = None
    warn: Callable[[str], None] = warn_line

    def track(self, target: str):
        """A ``media.audio.AudioTrack`` for a ``target`` container, or None."""
        if not self.source:
            return None
        from media.audio import read_audio
        return read_audio(self.source, target, self.spans, self.warn)

    def warn_if_dropped(self, what: str) -> None:
        """Warn when the source has sound that ``what`` (a format without audio) cannot hold."""
        if self.source and has_audio(self.source):
            self.warn(f"{what} holds no sound: written without it (write .webm or .mkv to keep it)")


NO_AUDIO = AudioPlan()


def _ffmpeg(e: BaseException) -> str:
    return " ".join(str(e).split())


def write_vp8_file(path: str, frames: list[bytes], pts: list[int], keys: list[bool], shown: list[bool],
                   width: int, height: int, rate: tuple[int, int], audio: AudioPlan = NO_AUDIO,
                   time_base: Fraction | None = None) -> None:
    """VP8 ``frames`` (decode order; ``pts`` in frames at ``rate``, or in ticks of ``time_base``
    for a variable-rate input's times, ``codec.ivf.shown_pts``) to ``path`` by its extension
    (``.ivf``: the header's rate/scale then hold ``time_base``, as libvpx and ffmpeg read them)."""
    ext = os.path.splitext(path)[1].lower()
    if ext == ".ivf":
        from codec.ivf import IvfHeader, IvfWriter, ivf_time_base

        audio.warn_if_dropped("an .ivf file")
        num, den = ivf_time_base(time_base) if time_base is not None else rate
        header = IvfHeader(width=width, height=height, rate=num, scale=den, frame_count=len(frames))
        with IvfWriter(path, header) as w:
            for d, t in zip(frames, pts):
                w.write(d, t)
        return
    from media.webm import write_webm

    fmt = "webm" if ext == ".webm" else "matroska"
    track = audio.track(fmt)
    try:
        write_webm(path, frames, pts, keys, shown, width, height, rate, audio=track, format=fmt,
                   time_base=time_base)
    finally:
        if track is not None:
            track.close()


def has_audio(path: str) -> bool:
    """Whether ``path`` (a path or a source reference, ``media.audio.open_container``) is a file
    PyAV opens with an audio stream."""
    try:
        from media.audio import open_container
        with open_container(path) as c:
            return bool(c.streams.audio)
    except Exception:  # noqa: BLE001 - not a file PyAV reads: no sound to lose
        return False


def _even(n: int) -> int:
    return max(2, n - n % 2)


def _h264_packets(av, container, pictures: Iterable, width: int, height: int, rate: tuple[int, int],
                  times=None) -> list:
    """Encode ``pictures`` (``codec.image.Image``, one per frame at ``rate``; with ``times``,
    ``(ticks, time_base)``, at those times instead) with libx264 into a new stream of
    ``container``; its packets. 4:2:0 needs an even size: an odd last row or column is cropped."""
    import numpy as np

    stream = container.add_stream("libx264", rate=Fraction(rate[0], rate[1]))
    w, h = _even(width), _even(height)
    stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
    tb = times[1] if times else Fraction(rate[1], rate[0])
    stream.codec_context.time_base = tb
    stream.codec_context.gop_size = max(1, round(SEGMENT_S * rate[0] / rate[1]))
    stream.options = {"crf": str(CRF), "preset": "veryfast", "sc_threshold": "0"}
    packets = []
    for i, im in enumerate(pictures):
        frame = av.VideoFrame(w, h, "yuv420p")
        for plane, src in zip(frame.planes, (im.y[:h, :w], im.u[:h // 2, :w // 2], im.v[:h // 2, :w // 2])):
            view = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
            view[:, :plane.width] = src
        frame.pts = times[0][i] if times else i
        frame.time_base = tb
        packets += stream.encode(frame)
    packets += stream.encode(None)
    return packets


def _mux_h264(av, c, pictures, width, height, rate, track, times) -> None:
    """``pictures`` encoded (``_h264_packets``) and muxed into the open container ``c`` with the
    sound of ``track`` (or none), in time order; ``c`` closed, whatever happens."""
    from media.audio import mux_in_time_order

    try:
        video = _h264_packets(av, c, pictures, width, height, rate, times)
        sound = track.packets(track.add_to(c)) if track is not None else []
        mux_in_time_order(c, video, sound)
    finally:
        c.close()


def write_h264(path: str, pictures: Iterable, width: int, height: int, rate: tuple[int, int],
               audio: AudioPlan = NO_AUDIO, times=None) -> None:
    """``pictures`` as H.264 (libx264) with AAC sound: ``.mp4``, or HLS for ``.m3u8``; ``times``:
    ``(ticks, time_base)`` of each picture (a variable-rate input's)."""
    import av

    from codec.ivf import AtomicFile

    hls = path.lower().endswith(".m3u8")
    track = audio.track("mpegts" if hls else "mp4")
    try:
        if hls:
            _write_hls(av, path, pictures, width, height, rate, track, times)
            return
        out = AtomicFile(path)
        try:
            # By name: +faststart reopens the file to move the index to the front.
            c = av.open(out.tmp_path, "w", format="mp4", container_options={"movflags": "+faststart"})
            _mux_h264(av, c, pictures, width, height, rate, track, times)
        except av.error.FFmpegError as e:
            out.discard()
            raise ContainerError(f"ffmpeg could not write MP4: {_ffmpeg(e)}") from None
        except BaseException:
            out.discard()
            raise
        out.commit()
    finally:
        if track is not None:
            track.close()


@contextlib.contextmanager
def manifest_beside(path: str):
    """A private directory beside ``path`` for a muxer that writes a manifest and its segments
    (HLS, DASH): yields ``(directory, manifest)``, where the muxer writes. On success the segments
    are moved beside ``path`` first and the manifest last, so no reader sees a manifest naming a
    segment that is not there yet; on any failure nothing is left behind."""
    directory, name = os.path.split(os.path.abspath(path))
    work = tempfile.mkdtemp(prefix=f".{name}.", dir=directory)
    moved: list[str] = []
    try:
        yield work, os.path.join(work, name)
        for f in sorted(os.listdir(work)):
            if f != name:
                os.replace(os.path.join(work, f), os.path.join(directory, f))
                moved.append(os.path.join(directory, f))
        os.replace(os.path.join(work, name), path)
    except BaseException:
        for f in moved:
            with contextlib.suppress(OSError):
                os.unlink(f)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _write_hls(av, path: str, pictures, width, height, rate, track, times=None) -> None:
    """ffmpeg's hls muxer writes the segments and the playlist (``manifest_beside``); ``times``
    as for ``_h264_packets``."""
    stem = os.path.splitext(os.path.basename(path))[0]
    try:
        with manifest_beside(path) as (work, manifest):
            options = {"hls_time": str(SEGMENT_S), "hls_playlist_type": "vod", "hls_list_size": "0",
                       "hls_segment_filename": os.path.join(work, f"{stem}-%05d.ts")}
            c = av.open(manifest, "w", format="hls", container_options=options)
            _mux_h264(av, c, pictures, width, height, rate, track, times)
    except av.error.FFmpegError as e:
        raise ContainerError(f"ffmpeg could not write HLS: {_ffmpeg(e)}") from None
