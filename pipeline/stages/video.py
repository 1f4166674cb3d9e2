"""The video stages: decode, filters (ffmpeg filter strings run in process), blend, encode.

Sprocket's stage names are ours (``decode``, ``grayscale``, ``video_filter``, ``duplicate_filter``,
``merge_filter``, ``blend``), and ``encode_to_dash`` is an alias of ``encode``. Every stage is
deterministic: the same inputs give the same bytes, in any process.

A stage that gets several values on a port (a delivery function may hand over more than one)
joins them in order into one run of pictures; filters see one task's pictures at a time, so a
filter that carries state from frame to frame (``tmix``, ``deflicker``) restarts at each task.
"""

from __future__ import annotations

import os
import struct
import tempfile
from collections.abc import Iterator
from fractions import Fraction

import numpy as np

from codec.image import Image
from foundation.errors import ExcameraError
from pipeline.stage import Option, StageContext, stage
from pipeline.values import EncodedChunk, FrameBatch

#: EncodedChunk.container -> the file extension its reader wants.
EXTENSIONS = {"ivf": ".ivf", "y4m": ".y4m", "matroska": ".mkv", "webm": ".webm", "nut": ".nut",
              "mp4": ".mp4"}


class StageInputError(ExcameraError):
    """Input a stage cannot use (one line, naming what is wrong)."""


# -- helpers shared with pipeline.media_io --------------------------------------------------------

def join(batches: list[FrameBatch], what: str = "frames") -> FrameBatch:
    """Several batches of one size as one, numbered from the first."""
    if not batches:
        raise StageInputError(f"no {what} given")
    if len(batches) == 1:
        return batches[0]
    first = batches[0]
    for b in batches[1:]:
        if (b.width, b.height) != (first.width, first.height):
            raise StageInputError(f"{what}: a {b.width}x{b.height} batch after a "
                                  f"{first.width}x{first.height} one")
    cat = [np.concatenate([getattr(b, p) for b in batches]) for p in ("y", "u", "v")]
    return FrameBatch(*cat, first.start, first.fps, dict(first.meta))


def chunk_images(chunk: EncodedChunk, tmpdir: str | None = None) -> Iterator[Image]:
    """The pictures of ``chunk`` one at a time (``media.video.open_video`` on a temporary file
    of the chunk's container); ``check_images`` checks them once all are read."""
    from codec.errors import VP8Error
    from media.video import open_video

    if chunk.container == "range":  # a reference: this worker fetches and decodes the range itself
        from media.source import SourceError
        from pipeline.source_refs import range_images
        try:
            yield from range_images(chunk)
        except (SourceError, VP8Error) as e:
            raise StageInputError(f"chunk at frame {chunk.start}: {e}") from None
        return
    ext = EXTENSIONS.get(chunk.container, ".bin")
    fd, path = tempfile.mkstemp(suffix=ext, dir=tmpdir or None)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(chunk.data)
        try:
            with open_video(path, notes=False) as video:  # the run noted the input once
                yield from video
        except VP8Error as e:  # ContainerError, UnsupportedError, CorruptFrameError
            raise StageInputError(f"chunk at frame {chunk.start} ({chunk.container}): {e}") from None
    finally:
        os.unlink(path)


def check_images(chunk: EncodedChunk, images: list[Image]) -> None:
    """``images`` are all of ``chunk``'s pictures: as many as it says, of one size."""
    if not images:
        raise StageInputError(f"chunk at frame {chunk.start} ({chunk.container}) holds no picture")
    if chunk.count and len(images) != chunk.count:
        raise StageInputError(f"chunk at frame {chunk.start} ({chunk.container}) says "
                              f"{chunk.count} frames but decodes to {len(images)}")
    sizes = {(im.width, im.height) for im in images}
    if len(sizes) > 1:
        raise StageInputError(f"chunk at frame {chunk.start} changes picture size ({sorted(sizes)})")


def decode_chunk(chunk: EncodedChunk, tmpdir: str | None = None) -> FrameBatch:
    """The pictures of ``chunk``, numbered from its ``start``."""
    images = list(chunk_images(chunk, tmpdir))
    check_images(chunk, images)
    return FrameBatch.from_images(images, chunk.start, chunk.fps, chunk.meta)


def ivf_bytes(frames: list[bytes], pts: list[int], width: int, height: int,
              fps: tuple[int, int]) -> bytes:
    """VP8 ``frames`` as an IVF file in memory (time base ``1/fps``)."""
    from codec.ivf import IvfHeader
    header = IvfHeader(width=width, height=height, rate=fps[0], scale=fps[1], frame_count=len(frames))
    parts = [header.to_bytes()]
    for data, t in zip(frames, pts):
        parts += [struct.pack("<IQ", len(data), t), data]
    return b"".join(parts)


def ivf_frames(chunk: EncodedChunk) -> list[bytes]:
    """The VP8 frames of an IVF chunk, in decode order."""
    import io

    from codec.errors import VP8Error
    from codec.ivf import read_ivf
    try:
        return [f.data for f in read_ivf(io.BytesIO(chunk.data))[1]]
    except VP8Error as e:
        raise StageInputError(f"chunk at frame {chunk.start}: {e}") from None


def _tags(frames: list[bytes]):
    from codec.chunks import frame_tag
    return [frame_tag(d) for d in frames]


#: libvpx's speed ("cpu-used") by default: ffmpeg's default for libvpx.
DEFAULT_SPEED = 1


def encode_vp8(batch: FrameBatch, cq_level: int = 20, encoder: str = "libvpx",
               speed: int = DEFAULT_SPEED) -> EncodedChunk:
    """``batch`` as one VP8 chunk (IVF): a key frame, then interframes.

    ``libvpx``: libvpx through PyAV in constant-quality mode at ``cq_level`` (``crf`` with an
    unlimited bit rate, as ``media.firstpass``; ffmpeg's quantizer range), deadline "good",
    ``cpu-used=speed``, one thread, no look-ahead, no automatic key frames: deterministic. ``native``: our encoder at the
    quantizer ``media.excamera_encode.native_quantizer(cq_level)``, ``speed`` 0..4."""
    if not 0 <= cq_level <= 63:
        raise StageInputError(f"cq_level {cq_level} is outside 0..63")
    images = batch.images()
    if encoder == "native":
        from codec.encoder import Encoder, EncoderConfig
        from media.excamera_encode import native_quantizer
        if not 0 <= speed <= 4:
            raise StageInputError(f"speed {speed} is outside 0..4 for the native encoder")
        enc = Encoder(EncoderConfig(quantizer=native_quantizer(cq_level), speed=speed,
                                    keyframe_interval=1 << 30))
        frames = [enc.encode(im).data for im in images]
    elif encoder == "libvpx":
        frames = _libvpx(images, batch.fps, cq_level, speed)
    else:
        raise StageInputError(f"encoder {encoder!r} is neither libvpx nor native")
    tags = _tags(frames)
    if not tags[0].key_frame or any(t.key_frame for t in tags[1:]) or \
            sum(t.show_frame for t in tags) != batch.count:
        raise StageInputError(f"the {encoder} encoder did not make one key frame then "
                              f"{batch.count - 1} interframes")
    from codec.chunks import presentation_times
    data = ivf_bytes(frames, presentation_times(tags), batch.width, batch.height, batch.fps)
    return EncodedChunk(data, "ivf", batch.start, batch.count, batch.fps, dict(batch.meta))


def _libvpx(images: list[Image], fps: tuple[int, int], cq_level: int, speed: int) -> list[bytes]:
    import av

    from media.firstpass import (
        KEY_FRAME_DISTANCE,
        TARGET_KBPS,
        _av_frame,
        _zero_libvpx_heap,
    )
    if not -16 <= speed <= 16:
        raise StageInputError(f"speed {speed} is outside -16..16 for libvpx")
    _zero_libvpx_heap()
    # libvpx leaves "good" for realtime (clock-dependent) when a frame lasts 1 s or more; the
    # rate only paces rate control, which an unlimited bit rate never binds.
    rate = Fraction(*fps) if fps[0] > fps[1] else Fraction(30)
    ctx = av.codec.CodecContext.create("libvpx", "w")
    ctx.width, ctx.height = images[0].width, images[0].height
    ctx.pix_fmt = "yuv420p"
    ctx.time_base = 1 / rate
    ctx.framerate = rate
    ctx.thread_count = 1
    ctx.bit_rate = TARGET_KBPS * 1000
    # qmin/qmax are ffmpeg's defaults (2..31, widened to take cq_level), as `ffmpeg -c:v libvpx -crf C -b:v <large>` encodes: with
    # 0..63 libvpx's key-frame boost reaches q 0 and a chunk grows by half for +0.001 SSIM.
    ctx.options = {"deadline": "good", "cpu-used": str(speed), "crf": str(cq_level),
                   "qmin": str(min(2, cq_level)), "qmax": str(max(31, cq_level)),
                   "lag-in-frames": "0", "auto-alt-ref": "0",
                   "g": str(KEY_FRAME_DISTANCE), "keyint_min": str(KEY_FRAME_DISTANCE)}
    out: list[bytes] = []
    try:
        ctx.open()
        for i, im in enumerate(images):
            out += [bytes(p) for p in ctx.encode(_av_frame(av, im, i, ctx.time_base))]
        out += [bytes(p) for p in ctx.encode(None)]
    except av.error.FFmpegError as e:
        raise StageInputError(f"libvpx failed: {' '.join(str(e).split())}") from None
    return out


# -- the stages -----------------------------------------------------------------------------------

@stage("decode", inputs={"chunks": "chunks"}, outputs={"frames": "frames"}, steal="decode",
       aliases=("C_F_stealwork_decode",))
def decode(ctx: StageContext, inputs: dict, config: dict) -> dict:
    """Encoded chunks (any container ``media.video`` opens) -> their pictures, one batch per
    chunk, numbered from the chunk's ``start``."""
    return {"frames": [decode_chunk(c, ctx.tmpdir) for c in inputs["chunks"]]}


def grayscale_batch(b: FrameBatch) -> FrameBatch:
    """``hue=s=0``: luma kept, both chroma planes 128 (ffmpeg's hue filter at saturation 0 maps
    every chroma sample to 128 and leaves luma alone; the tests compare with ffmpeg)."""
    grey = np.full_like(b.u, 128)
    return FrameBatch(b.y, grey, grey.copy(), b.start, b.fps, dict(b.meta))


@stage("grayscale", inputs={"frames": "frames"}, outputs={"frames": "frames"}, steal="frames")
def grayscale(ctx: StageContext, inputs: dict, config: dict) -> dict:
    """Pictures without colour, equal to ``ffmpeg -vf hue=s=0 -pix_fmt yuv420p``."""
    return {"frames": [grayscale_batch(b) for b in inputs["frames"]]}


@stage("video_filter", inputs={"frames": "frames"}, outputs={"frames": "frames"},
       options={"video_filter": Option(str, "null", "an ffmpeg filter string (-vf syntax), e.g. "
                                       "'crop=iw/2:ih:0:0,hflip'; run in process through PyAV "
                                       "(Sprocket's name for it)"),
                "filter": Option(str, "", "the same, by its older name here (either, not both)")})
def video_filter(ctx: StageContext, inputs: dict, config: dict) -> dict:
    """Any ffmpeg filtergraph with one input, on each task's pictures (``pipeline.filtergraph``);
    the graph's first output is the stage's. Without one, ``null``: the pictures as they are."""
    from pipeline.filtergraph import FilterGraph
    graph = FilterGraph(filter_text(config), 1)
    out = graph.run([join(inputs["frames"])])[0]
    return {"frames": [out] if out is not None else []}


def filter_text(config: dict) -> str:
    """The filter of a stage that takes it as ``video_filter`` (Sprocket) or ``filter``."""
    given = config.get("filter") or ""
    if given and config.get("video_filter", "null") != "null":
        raise StageInputError("give the filter as video_filter or as filter, not both")
    return given or config.get("video_filter") or "null"


@stage("duplicate_filter", inputs={"frames": "frames"},
       outputs={"frames_0": "frames", "frames_1": "frames"}, steal="frames",
       options={"video_filter": Option(str, "null", "an ffmpeg filter (-vf syntax) applied before "
                                       "the copy; it must map each picture on its own")})
def duplicate_filter(ctx: StageContext, inputs: dict, config: dict) -> dict:
    """The pictures, through ``video_filter`` (default ``null``), on two ports (Sprocket's
    branch point)."""
    frames = list(inputs["frames"])
    if config["video_filter"] != "null":
        from pipeline.filtergraph import FilterGraph
        graph = FilterGraph(config["video_filter"], 1)
        frames = [f for f in (graph.run([b])[0] for b in frames) if f is not None]
    return {"frames_0": list(frames), "frames_1": list(frames)}


@stage("merge_filter", inputs={"frames_0": "frames", "frames_1": "frames"},
       outputs={"frames": "frames"}, delivery="pair",
       options={"filter_complex": Option(str, "hstack", "an ffmpeg filtergraph with two inputs "
                                         "([0] = frames_0, [1] = frames_1; unlabelled inputs take "
                                         "them in order), e.g. hstack"),
                "video_filter": Option(str, "", "the same, by Sprocket's name (either, not both)")})
def merge_filter(ctx: StageContext, inputs: dict, config: dict) -> dict:
    """Two streams of pictures through one two-input ffmpeg filtergraph (Sprocket's merge),
    their frames paired by presentation time (``pipeline.stages.timejoin``); frames_1 is
    scaled to frames_0's size first when the two differ."""
    text = config["video_filter"] or config["filter_complex"]
    if config["video_filter"] and config["filter_complex"] != "hstack":
        raise StageInputError("give the filtergraph as filter_complex or as video_filter, not both")
    return {"frames": join_through(text, inputs, scale=True)}


def join_through(text: str, inputs: dict, scale: bool) -> list[FrameBatch]:
    """frames_0 and frames_1 paired by time, through the two-input filtergraph ``text``."""
    from pipeline.filtergraph import FilterGraph
    from pipeline.stages.timejoin import align
    graph = FilterGraph(text, 2)
    pair = align(inputs["frames_0"], inputs["frames_1"], scale)
    if pair is None:
        return []
    out = graph.run(list(pair))[0]
    return [out] if out is not None else []


def blend_batches(a: FrameBatch, b: FrameBatch) -> FrameBatch:
    """The average of two runs of pictures, ``(A + B) >> 1`` per sample on every plane: exactly
    ffmpeg's ``blend=all_mode=average`` (its C and SIMD versions both truncate)."""
    if (a.width, a.height) != (b.width, b.height):
        raise StageInputError(f"blend: frames_0 is {a.width}x{a.height} but frames_1 is "
                              f"{b.width}x{b.height}")
    if a.count != b.count:
        raise StageInputError(f"blend: frames_0 has {a.count} frames (from {a.start}) but "
                              f"frames_1 has {b.count} (from {b.start})")
    planes = [((pa.astype(np.uint16) + pb) >> 1).astype(np.uint8)
              for pa, pb in ((a.y, b.y), (a.u, b.u), (a.v, b.v))]
    return FrameBatch(*planes, a.start, a.fps, dict(a.meta))


@stage("blend", inputs={"frames_0": "frames", "frames_1": "frames"},
       outputs={"frames": "frames"}, delivery="pair")
def blend(ctx: StageContext, inputs: dict, config: dict) -> dict:
    """The average of two streams of pictures, equal to ffmpeg's
    ``[1]scale=W:H[b];[0][b]blend=all_mode=average`` (W x H: frames_0's size; the scale only
    when the sizes differ): frames paired by presentation time as ffmpeg's framesync pairs
    them (``pipeline.stages.timejoin``), so inputs of other rates and lengths blend."""
    from pipeline.stages.timejoin import align
    pair = align(inputs["frames_0"], inputs["frames_1"], scale=True)
    return {"frames": [blend_batches(*pair)] if pair is not None else []}


@stage("encode", inputs={"frames": "frames"}, outputs={"chunks": "chunks"},
       aliases=("encode_to_dash",),
       options={"cq_level": Option(int, 20, "constant quality, libvpx's 0..63 scale"),
                "encoder": Option(str, "libvpx", "libvpx (through PyAV) or native (ours)",
                                  ("libvpx", "native")),
                "speed": Option(int, DEFAULT_SPEED, "libvpx's cpu-used (-16..16), or the native "
                                "encoder's speed (0..4)")})
def encode(ctx: StageContext, inputs: dict, config: dict) -> dict:
    """Pictures -> VP8 chunks (IVF), one per batch, each starting with a key frame."""
    return {"chunks": [encode_vp8(b, config["cq_level"], config["encoder"], config["speed"])
                       for b in inputs["frames"]]}


@stage("excamera_encode", inputs={"frames": "frames"}, outputs={"chunks": "chunks"},
       delivery="serialized_frames",
       delivery_defaults={"frames_per_chunk": lambda o: o["chunk_frames"] * o["batch_chunks"]},
       options={"chunk_frames": Option(int, 6, "N: frames per ExCamera chunk"),
                "batch_chunks": Option(int, 16, "x: chunks per key frame"),
                "cq_level": Option(int, 20, "constant quality, libvpx's 0..63 scale"),
                "first_pass": Option(str, "libvpx", "libvpx or native", ("libvpx", "native"))})
def excamera_encode(ctx: StageContext, inputs: dict, config: dict) -> dict:
    """Pictures -> one ExCamera[N, x] stream per task (``media.excamera_encode.encode_frames``).

    Its delivery function (``serialized_frames``) regroups the pictures in frame order into
    groups of its ``frames_per_chunk`` option, which defaults to N·x (``chunk_frames`` ×
    ``batch_chunks``, 96 for 6 × 16), so each task's chunk starts with a key frame and the
    pipeline's output keeps one key frame every N·x frames, the rest coded by ExCamera's
    encode-given-state and rebase. Any number of frames works: fewer than N become one shorter chunk, more than N·x
    begin a new key frame every N·x."""
    from codec.chunks import presentation_times
    from media.excamera_encode import EncodeSettings, encode_frames
    b = join(inputs["frames"])
    try:
        settings = EncodeSettings(min(config["chunk_frames"], b.count), config["batch_chunks"],
                                  config["cq_level"], config["first_pass"])
    except ValueError as e:
        raise StageInputError(f"excamera_encode: {e}") from None
    frames = encode_frames(b.images(), settings, b.fps)
    tags = _tags(frames)
    data = ivf_bytes(frames, presentation_times(tags), b.width, b.height, b.fps)
    return {"chunks": [EncodedChunk(data, "ivf", b.start, b.count, b.fps, dict(b.meta))]}
