"""Sprocket's link sources: a pipeline input given as a link to the video (a file or a URL),
chunked by a stage of the pipeline rather than before it (docs/design/pipelines.md).

=========================== ========================= ==========================================
stage                       ports                     what it does
=========================== ========================= ==========================================
``parallelize_link``        ``video_link`` (link) ->  the video cut into chunks of
                            ``chunked_link`` (chunks) ``framesperchunk`` frames (``"{fps}"``: a
                                                      second), at most ``chunklimit`` of them
``stream_link``             the same                  the same, once the video passes its
                                                      ``filter`` (``"[fps>=24]"``)
``decode_from_chunked_link`` ``chunked_link`` ->      each chunk's pictures (alias
                            ``frames``                ``rek_decode``)
``decode_from_url``         ``video_url`` (link) ->   the whole video's pictures, a second of
                            ``frames``                frames per value
=========================== ========================= ==========================================

A ``link`` value (``Link``) is the video's path or URL, with the frame rate, size and frame
count read from it when the pipeline's source was read (so ``"{fps}"`` options resolve per task).
``-i input_0=PATH|URL`` feeds a link port the file itself. The chunks are
``pipeline.media_io.cut_input``'s: cut at the input's own key frames where they decode alone,
so no chunk needs frames of another and ``overlap`` (accepted, as Sprocket's specs give it) is
not needed for decoding; it is checked, not used.
"""

from __future__ import annotations

import json
import os
import re
import urllib.request
from dataclasses import dataclass, field
from typing import ClassVar

from foundation.errors import ExcameraError
from pipeline.stage import Option, stage
from pipeline.values import BadValue, _header, _place, _split, register_port_type


class LinkError(ExcameraError):
    """A link that cannot be read, or a video that does not pass a stream_link filter."""


@dataclass(eq=False)
class Link:
    """A video by reference: ``url`` (a local path or a URL), its ``fps``, ``width``, ``height``
    and ``frames`` (0 when the container does not say)."""

    MAGIC: ClassVar[bytes] = b"XCLK"

    url: str
    fps: tuple[int, int] = (30, 1)
    width: int = 0
    height: int = 0
    frames: int = 0
    start: int = 0
    meta: dict = field(default_factory=dict)

    @property
    def count(self) -> int:
        return 0          # a link covers no frames itself: what it points at does

    def to_bytes(self) -> bytes:
        head = {"start": self.start, "count": 0, "fps": list(self.fps), "meta": self.meta}
        body = {"url": self.url, "width": self.width, "height": self.height, "frames": self.frames}
        return _header(self.MAGIC, head) + json.dumps(body, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> "Link":
        head, body = _split(cls.MAGIC, data, "link")
        start, _, fps, meta = _place(head, "link")
        try:
            d = json.loads(bytes(body))
            return cls(str(d["url"]), fps, int(d["width"]), int(d["height"]), int(d["frames"]), start, meta)
        except (ValueError, KeyError, TypeError) as e:
            raise BadValue(f"link: unreadable ({e})") from None


register_port_type("link", Link)


def is_url(text: str) -> bool:
    return re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", text) is not None and not text.startswith("file://")


def link_value(path: str) -> Link:
    """The ``Link`` of a pipeline input: a local file (made absolute, for workers elsewhere) or
    a URL, probed for its rate, size and frame count."""
    url = path if is_url(path) else os.path.abspath(path.removeprefix("file://"))
    if is_url(url):
        import av
        try:
            with av.open(url, timeout=30) as c:
                if not c.streams.video:
                    raise LinkError(f"{url}: no video stream")
                s = c.streams.video[0]
                r = s.average_rate or s.guessed_rate
                return Link(url, (r.numerator, r.denominator) if r else (30, 1),
                            s.codec_context.width, s.codec_context.height, s.frames or 0)
        except av.error.FFmpegError as e:
            raise LinkError(f"{url}: ffmpeg cannot read it: {' '.join(str(e).split())}") from None
    from codec.errors import VP8Error
    from media.video import open_video
    try:
        with open_video(url) as v:
            frames = _frame_count(url)
            return Link(url, tuple(v.rate), v.width, v.height, frames)
    except VP8Error as e:
        raise LinkError(f"{url}: {e}") from None


def _frame_count(path: str) -> int:
    """The frame count the container states (0 when it does not)."""
    try:
        import av
        with av.open(path) as c:
            return int(c.streams.video[0].frames or 0) if c.streams.video else 0
    except Exception:  # noqa: BLE001 - a count is a hint; Y4M and IVF do not state one to PyAV
        return 0


def local_copy(link: Link, tmpdir: str) -> str:
    """A local path for the link: the file itself, or the URL fetched into ``tmpdir``."""
    if not is_url(link.url):
        return link.url
    dest = os.path.join(tmpdir, "link" + (os.path.splitext(link.url.split("?")[0])[1] or ".bin"))
    try:
        with urllib.request.urlopen(link.url, timeout=60) as r, open(dest, "wb") as f:
            while True:
                block = r.read(1 << 20)
                if not block:
                    break
                f.write(block)
    except OSError as e:
        raise LinkError(f"{link.url}: cannot fetch it: {e}") from None
    return dest


def _one_link(inputs: dict, port: str) -> Link:
    links = inputs[port]
    if len(links) != 1:
        raise LinkError(f"{port}: expected one link, got {len(links)}")
    return links[0]


def _chunks(ctx, link: Link, config: dict) -> list:
    from pipeline.media_io import MediaError, cut_input
    n, limit, overlap = config["framesperchunk"], config["chunklimit"], config["overlap"]
    if n < 1:
        raise LinkError(f"framesperchunk is {n}; it must be at least 1")
    if limit < 0 or overlap < 0 or overlap >= n:
        raise LinkError(f"chunklimit {limit} must be >= 0 and overlap {overlap} in 0..{n - 1}")
    out = []
    try:
        for chunk in cut_input(local_copy(link, ctx.tmpdir), n):
            out.append(chunk)
            if limit and len(out) == limit:
                break
    except MediaError as e:
        raise LinkError(str(e)) from None
    return out


_CHUNK_OPTIONS = {
    "framesperchunk": Option(int, "{fps}", "frames per chunk (arithmetic on {fps} allowed)"),
    "chunklimit": Option(int, 0, "at most this many chunks, from the start (0: all)"),
    "overlap": Option(int, 0, "frames a chunk repeats of the one before (accepted; our chunks "
                              "decode alone, so none are needed)"),
}


@stage("parallelize_link", inputs={"video_link": "link"}, outputs={"chunked_link": "chunks"},
       options=dict(_CHUNK_OPTIONS))
def parallelize_link(ctx, inputs, config):
    """A link to a video -> its chunks (``media_io.cut_input``), for tasks to decode in parallel."""
    return {"chunked_link": _chunks(ctx, _one_link(inputs, "video_link"), config)}


_CONDITION = re.compile(r"\[\s*(fps|width|height|frames)\s*(>=|<=|==|!=|>|<)\s*([0-9.]+)\s*\]")


def passes(link: Link, text: str) -> bool:
    """Whether the link's video passes a stream_link filter: ``[name op number]`` conditions on
    fps, width, height or frames, all of which must hold (``""``: every video)."""
    import operator
    ops = {">=": operator.ge, "<=": operator.le, "==": operator.eq, "!=": operator.ne,
           ">": operator.gt, "<": operator.lt}
    rest = _CONDITION.sub("", text).strip()
    if rest:
        raise LinkError(f"stream_link filter {text!r}: cannot read {rest!r} (conditions are "
                        f"[fps>=24], [width<=1920], ...)")
    values = {"fps": link.fps[0] / link.fps[1], "width": link.width, "height": link.height,
              "frames": link.frames}
    return all(ops[op](values[name], float(num)) for name, op, num in _CONDITION.findall(text))


@stage("stream_link", inputs={"video_link": "link"}, outputs={"chunked_link": "chunks"},
       options={**_CHUNK_OPTIONS,
                "filter": Option(str, "", "conditions the video must meet, e.g. [fps>=24]")})
def stream_link(ctx, inputs, config):
    """A link to a video -> its chunks, when the video passes ``filter`` (else an error naming
    what it failed)."""
    link = _one_link(inputs, "video_link")
    if not passes(link, config["filter"]):
        raise LinkError(f"{link.url}: {link.fps[0]}/{link.fps[1]} fps {link.width}x{link.height} "
                        f"does not pass the stream_link filter {config['filter']!r}")
    return {"chunked_link": _chunks(ctx, link, config)}


@stage("decode_from_chunked_link", inputs={"chunked_link": "chunks"}, outputs={"frames": "frames"},
       aliases=("rek_decode",))
def decode_from_chunked_link(ctx, inputs, config):
    """Chunks -> their pictures, one batch per chunk (the ``decode`` stage, Sprocket's port)."""
    from pipeline.stages.video import decode_chunk
    return {"frames": [decode_chunk(c, ctx.tmpdir) for c in inputs["chunked_link"]]}


@stage("decode_from_url", inputs={"video_url": "link"}, outputs={"frames": "frames"})
def decode_from_url(ctx, inputs, config):
    """A link to a video -> all its pictures, in values of a second of frames each."""
    from media.video import open_video
    from pipeline.values import FrameBatch
    link = _one_link(inputs, "video_url")
    out, batch, start = [], [], 0
    with open_video(local_copy(link, ctx.tmpdir)) as video:
        rate = tuple(video.rate)
        n = max(1, round(rate[0] / rate[1]))
        for image in video:
            batch.append(image)
            if len(batch) == n:
                out.append(FrameBatch.from_images(batch, start, rate))
                start, batch = start + n, []
    if batch:
        out.append(FrameBatch.from_images(batch, start, rate))
    return {"frames": out}
