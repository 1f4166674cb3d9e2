"""The input's sound, carried beside the video the output writers mux (docs/design/data-path.md).

    track = read_audio("movie.mp4", "webm", spans=[Span(0, 4, 0)], warn=print)
    if track is not None:
        stream = track.add_to(container)          # an open PyAV output container
        packets = track.packets(stream)           # to mux, interleaved with the video's
        track.close()

Only the audio stream is read: its packets are demuxed (no video is decoded), so the writer that
calls this reads the input once more for a few kilobytes a second, and no worker carries sound.

What lands in the output:

* **Copied** when the output's container takes the input's codec as it is (WebM: Opus and
  Vorbis; MP4 and MPEG-TS: AAC and MP3; Matroska: anything ffmpeg names): the packets keep their
  bytes, re-stamped. A packet goes with the first span it overlaps (one that straddles the end
  of a span and the start of the next is not repeated), so a cut lands within one packet
  (about 20 ms) of the frame boundary, and the sync is exact.
* **Transcoded** otherwise (WebM gets Opus through libopus, MP4 and MPEG-TS get AAC through
  ffmpeg's encoder), and whenever a span plays at another speed: decoded, resampled, cut to the
  sample, tempo changed with ffmpeg's ``atempo`` (pitch kept), and encoded once.

``spans`` map the input's timeline to the output's: each ``Span(start, end, at, speed)`` plays
the input's seconds ``[start, end)`` (counted from the video's first frame, so a container whose
streams start late lines up) from the output's second ``at``, ``speed`` times as fast. Sound
outside every span is dropped. ``spans=None``: the whole input from 0.

An input without an audio stream gives None, silently. Sound that cannot be carried (no decoder
for its codec, a damaged stream) gives None after ``warn`` is called with one line: the video is
still written. Nothing here raises for the audio's sake.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable

import numpy as np

from foundation.errors import ExcameraError

#: Output container -> codecs copied as they are (None: any codec ffmpeg names).
COPY = {"webm": {"opus", "vorbis"}, "matroska": None, "mp4": {"aac", "mp3"}, "mpegts": {"aac", "mp3"}}
#: Output container -> the encoder used when the input's codec cannot be copied.
ENCODER = {"webm": "libopus", "matroska": "libopus", "mp4": "aac", "mpegts": "aac"}
#: Sample rates each encoder takes; the input's rate is kept when listed, else the first.
RATES = {"libopus": (48000, 24000, 16000, 12000, 8000),
         "aac": (48000, 44100, 96000, 88200, 64000, 32000, 24000, 22050, 16000, 12000, 11025, 8000)}


@dataclass(frozen=True)
class Span:
    """The input's seconds ``[start, end)`` played from the output's second ``at``, ``speed``
    times as fast (so it lasts ``(end - start) / speed`` there)."""
    start: Fraction
    end: Fraction
    at: Fraction
    speed: Fraction = Fraction(1)


def spans_of(pieces, fps: tuple[int, int]) -> list[Span]:
    """Spans for an output made of ``pieces`` ``(first_frame, count, speed)`` of the input (in
    output order, each placed right after the one before), at ``fps`` frames a second; pieces
    that follow on in both timelines are merged."""
    spans: list[Span] = []
    at = Fraction(0)
    for first, count, speed in pieces:
        speed = Fraction(speed)
        start = Fraction(first * fps[1], fps[0])
        length = Fraction(count * fps[1], fps[0])          # in the output
        end = start + length * speed
        last = spans[-1] if spans else None
        if last is not None and last.end == start and last.speed == speed \
                and last.at + (last.end - last.start) / last.speed == at:
            spans[-1] = Span(last.start, end, last.at, speed)
        else:
            spans.append(Span(start, end, at, speed))
        at += length
    return spans


class AudioTrack:
    """Sound ready to mux: ``codec`` (the output's), ``copied`` (the input's packets as they
    are), ``template`` (the PyAV stream whose parameters the output stream takes)."""

    def __init__(self, template, packets: list, time_base: Fraction, copied: bool, owner):
        self.template = template
        self.codec = template.codec_context.name
        self.copied = copied
        self.time_base = time_base
        self._packets = packets        # (bytes, pts, duration) in time_base
        self._owner = owner            # the container template belongs to

    def __len__(self) -> int:
        return len(self._packets)

    def add_to(self, container):
        """A new audio stream of ``container`` with this track's codec parameters."""
        return container.add_stream_from_template(self.template)

    def packets(self, stream) -> list:
        """The packets for ``stream`` (from ``add_to``), in time order."""
        import av

        out = []
        for data, pts, duration in self._packets:
            p = av.Packet(data)
            p.stream = stream
            p.time_base = self.time_base
            p.pts = p.dts = pts
            p.duration = duration
            p.is_keyframe = True
            out.append(p)
        return out

    def close(self) -> None:
        if self._owner is not None:
            self._owner.close()
            self._owner = None


def open_container(ref: str):
    """A PyAV container over ``ref``: a local path, or a source reference (``file://``, ``s3://``,
    ``https://``) read by byte range through ``media.source``, pinned to the version first seen.
    ``job:`` references name an object in a job's storage, which only a worker can read:
    SourceError."""
    import av

    from media.source import SourceError, kind_of, local_path, open_source

    kind = kind_of(ref)
    if kind == "file":
        return av.open(local_path(ref) if ref.startswith("file://") else ref)
    if kind == "job":
        raise SourceError(f"{ref}: a job's object has no sound this process can read")
    return av.open(open_source(ref))


def read_audio(path: str, target: str, spans: list[Span] | None = None,
               warn: Callable[[str], None] | None = None, transcode: bool = False) -> AudioTrack | None:
    """The first audio stream of ``path`` made ready for a ``target`` container (``"webm"``,
    ``"matroska"``, ``"mp4"``, ``"mpegts"``), cut and placed by ``spans`` (see the module
    docstring); None when there is none, or (after ``warn``) none that can be carried.
    ``transcode``: re-encode even a codec the container takes."""
    import av

    warn = warn or (lambda line: None)
    try:
        container = open_container(path)
    except (av.error.FFmpegError, OSError, ValueError):
        return None                     # the video reader says what is wrong with the file
    try:
        if not container.streams.audio:
            container.close()
            return None
        stream = container.streams.audio[0]
        video = container.streams.video[0] if container.streams.video else None
        origin = Fraction(0)
        if video is not None and video.start_time is not None and video.time_base:
            origin = video.start_time * video.time_base
        spans = spans if spans is not None else [Span(Fraction(0), Fraction(10**9), Fraction(0))]
        context = stream.codec_context
        name = context.name if context is not None else "none"
        if name == "none":
            container.close()
            warn(f"the input's sound is in a codec ffmpeg cannot decode or copy ({_codec_tag(stream)}): "
                 f"the output is written without sound")
            return None
        allowed = COPY[target]
        sped = any(s.speed != 1 for s in spans)
        if not transcode and not sped and (allowed is None or name in allowed):
            return _copy(container, stream, origin, spans)
        track = _transcode(container, stream, origin, spans, ENCODER[target], target)
        container.close()
        return track
    except _Unreadable as e:
        container.close()
        warn(f"the input's sound ({name}) could not be read ({e}): the output is written without sound")
        return None
    except BaseException:
        container.close()
        raise


class _Unreadable(ExcameraError):
    """Sound nothing here can decode: the video is written without it (one warning line)."""


def _codec_tag(stream) -> str:
    tag = getattr(stream, "codec_tag", "") or ""
    return f"codec tag {tag!r}" if tag.strip("\0") else "not one ffmpeg knows"


def _place(t: Fraction, duration: Fraction, spans: list[Span]) -> Fraction | None:
    """Where a packet of the input's seconds ``[t, t + duration)`` lands in the output: in the
    first span it overlaps (None: none), so one that straddles a span's start (an encoder's
    priming packet before 0) is kept."""
    for s in spans:
        if t < s.end and t + duration > s.start:
            return s.at + (t - s.start) / s.speed
    return None


def _copy(container, stream, origin: Fraction, spans: list[Span]) -> AudioTrack:
    import av

    tb = stream.time_base
    packets = []
    last = None
    try:
        for p in container.demux(stream):
            if p.pts is None or not p.size:
                continue
            at = _place(p.pts * tb - origin, (p.duration or 0) * tb, spans)
            if at is None:
                continue
            pts = round(at / tb)
            if last is not None and pts <= last:   # two spans met inside one packet
                continue
            last = pts
            packets.append((bytes(p), pts, p.duration or 0))
    except av.error.FFmpegError as e:
        raise _Unreadable(" ".join(str(e).split())) from None
    return AudioTrack(stream, packets, tb, True, container)


def _transcode(container, stream, origin: Fraction, spans: list[Span], encoder: str,
               target: str) -> AudioTrack | None:
    """Decode, cut to the sample and place by ``spans``, tempo-change, encode into an in-memory
    container, and hand back its stream and packets."""
    import av

    ctx = stream.codec_context
    channels = min(2, max(1, ctx.channels or 1))
    layout = "stereo" if channels == 2 else "mono"
    rate = ctx.sample_rate if ctx.sample_rate in RATES[encoder] else RATES[encoder][0]
    resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
    # The output's samples, per span, cut from the decoded (resampled) stream.
    pieces: list[list[np.ndarray]] = [[] for _ in spans]
    clock = None                                  # the next resampled sample's time, in samples
    try:
        for frame in container.decode(stream):
            if clock is None:
                t0 = frame.pts * frame.time_base if frame.pts is not None else Fraction(0)
                clock = round((t0 - origin) * rate)
            for out in resampler.resample(frame):
                clock = _cut(out.to_ndarray(), clock, spans, rate, pieces)
        for out in resampler.resample(None):
            clock = _cut(out.to_ndarray(), clock if clock is not None else 0, spans, rate, pieces)
    except (av.error.FFmpegError, ValueError) as e:
        raise _Unreadable(" ".join(str(e).split())) from None
    total_at = None
    buf = io.BytesIO()
    fmt = "matroska" if target != "webm" else "webm"
    out = av.open(buf, "w", format=fmt, container_options={"fflags": "+bitexact"})
    try:
        s = out.add_stream(encoder, rate=rate, layout=layout)
        if encoder == "aac":
            s.codec_context.bit_rate = 128000
        else:
            s.codec_context.bit_rate = 96000
        for span, parts in zip(spans, pieces):
            if not parts:
                continue
            samples = np.concatenate(parts, axis=1)
            if span.speed != 1:
                samples = _tempo(samples, rate, layout, span.speed)
            start = round(span.at * rate)
            if total_at is not None and start < total_at:   # rounding: never overlap
                samples = samples[:, total_at - start:]
                start = total_at
            for i in range(0, samples.shape[1], 4800):
                f = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, i:i + 4800]),
                                               format="fltp", layout=layout)
                f.sample_rate = rate
                f.pts = start + i
                f.time_base = Fraction(1, rate)
                for p in s.encode(f):
                    out.mux(p)
            total_at = start + samples.shape[1]
        for p in s.encode(None):
            out.mux(p)
    finally:
        out.close()
    if total_at is None:
        return None
    buf.seek(0)
    reread = av.open(buf)
    rs = reread.streams.audio[0]
    packets = [(bytes(p), p.pts, p.duration or 0) for p in reread.demux(rs) if p.size and p.pts is not None]
    return AudioTrack(rs, packets, rs.time_base, False, reread)


def _cut(samples, clock: int, spans: list[Span], rate: int, pieces: list) -> int:
    """File the resampled ``samples`` (channels x n, starting at sample ``clock`` of the input's
    timeline) under the spans they fall in; the clock after them."""
    n = samples.shape[1]
    for k, s in enumerate(spans):
        a, b = round(s.start * rate), round(s.end * rate)
        lo, hi = max(a, clock), min(b, clock + n)
        if lo < hi:
            if not pieces[k] and lo > a:          # the span starts before the sound does
                pieces[k].append(np.zeros((samples.shape[0], lo - a), samples.dtype))
            pieces[k].append(samples[:, lo - clock:hi - clock])
    return clock + n


def _tempo(samples, rate: int, layout: str, speed: Fraction):
    """``samples`` played ``speed`` times as fast with ffmpeg's ``atempo`` (pitch kept; chained,
    as one atempo takes 0.5 to 100)."""
    import av

    graph = av.filter.Graph()
    src = graph.add_abuffer(format="fltp", sample_rate=rate, layout=layout, time_base=Fraction(1, rate))
    nodes = [src]
    factor = float(speed)
    steps = []
    while factor < 0.5:
        steps.append(0.5)
        factor /= 0.5
    steps.append(factor)
    for f in steps:
        nodes.append(graph.add("atempo", f"{f:.6f}"))
    # atempo may hand back packed samples; the rest of this module works on planar ones.
    nodes.append(graph.add("aformat", f"sample_fmts=fltp:channel_layouts={layout}"))
    sink = graph.add("abuffersink")
    nodes.append(sink)
    for a, b in zip(nodes, nodes[1:]):
        a.link_to(b)
    graph.configure()
    out = []
    for i in range(0, samples.shape[1], 4800):
        f = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, i:i + 4800]), format="fltp", layout=layout)
        f.sample_rate = rate
        f.pts = i
        f.time_base = Fraction(1, rate)
        graph.push(f)
        out += _drain(graph)
    graph.push(None)
    out += _drain(graph)
    if not out:
        return samples[:, :0]
    return np.concatenate(out, axis=1)


def _drain(graph) -> list:
    import av

    got = []
    while True:
        try:
            got.append(graph.pull().to_ndarray())
        except (av.error.BlockingIOError, av.error.EOFError):
            return got


def mux_in_time_order(container, *packet_lists) -> None:
    """Mux every packet of ``packet_lists`` (each one stream's, in decode order) into
    ``container`` in order of decode time across the streams (stable), as a player reads them."""
    tagged = []
    for k, packets in enumerate(packet_lists):
        for i, p in enumerate(packets):
            t = (p.dts if p.dts is not None else p.pts) * p.time_base
            tagged.append((t, k, i, p))
    tagged.sort(key=lambda x: x[:3])
    for *_, p in tagged:
        container.mux(p)
