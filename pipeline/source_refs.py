"""A pipeline source as references: each chunk a range of the input that the first stage's
worker fetches and decodes itself, so no picture passes through the client
(``docs/design/data-path.md``, ``docs/design/pipelines.md``).

``range_chunks(ref, frames_per_chunk)`` reads only the input's index (``media.index``) and gives
``EncodedChunk`` values of container ``"range"``: the body is a small JSON reference (the source,
the version planned on, where decoding starts), ``start`` and ``count`` the chunk's pictures.
The cuts are ``pipeline.media_io.cut_input``'s, computed from the key frames alone (runs of whole
GOPs of at least ``frames_per_chunk`` pictures; stretches whose GOPs are longer than twice that
cut every ``frames_per_chunk``, the last piece taking the remainder; Y4M every
``frames_per_chunk``), so the stages see the same pictures in the same chunks and write the same
bytes as when the client cut the input. As ``media.index`` and the encode's decode tasks do, a
key frame is taken to start a closed GOP (the decode checks it lands on one).

``range_images(chunk)`` is the worker's side: the chunk's pictures, read by range pinned to the
planned version (an input changed since fails the task).

An input with no index (a raw stream, VP8 in IVF, Y4M whose FRAME lines carry parameters) gives
None, and so does a local file that the workers cannot reach: the client then cuts it as before.
"""

from __future__ import annotations

import json

from media.index import KeyFrame, VideoIndex
from pipeline.values import EncodedChunk

CONTAINER = "range"
#: The stages that take a source's chunks through ``pipeline.stages.video.chunk_images``, which
#: decodes a range chunk; a source feeding any other stage (one that may read ``chunk.data``
#: itself) or a sink is cut by the client as before.
RANGE_READERS = frozenset({"decode", "decode_from_chunked_link"})
#: A stretch whose key frames are further apart than this many chunks is cut every chunk
#: (``pipeline.media_io.SPARSE``).
SPARSE = 2


def _per_chunk(frames_per_chunk: int | None, rate: tuple[int, int]) -> int:
    return frames_per_chunk if frames_per_chunk is not None else max(1, round(rate[0] / rate[1]))


def _every(a: int, b: int, n: int, merge: bool = False):
    """[a, b) in pieces of ``n``; ``merge``: the last takes the remainder (up to 2n - 1)."""
    while b - a >= (2 * n if merge else n + 1):
        yield a, a + n
        a += n
    if a < b:
        yield a, b


def plan_cuts(index: VideoIndex, n: int) -> list[tuple[int, int]]:
    """The (start, stop) of each chunk ``cut_input`` makes of an indexed input, from its key frames."""
    if index.kind == "y4m":
        return list(_every(0, index.frames, n))
    starts = [k.frame for k in index.keys]
    gops = list(zip(starts, starts[1:] + [index.frames]))
    if not any(b - a <= SPARSE * n for a, b in gops):
        return list(_every(0, index.frames, n))
    cuts, pending = [], None
    for a, b in gops:
        if b - a > SPARSE * n:
            cuts += _every(a if pending is None else pending, b, n, merge=True)
            pending = None
            continue
        pending = a if pending is None else pending
        if b - pending >= n:
            cuts.append((pending, b))
            pending = None
    if pending is not None:
        cuts.append((pending, index.frames))
    return cuts


def _key_at(index: VideoIndex, start: int) -> KeyFrame:
    """The last key frame at or before picture ``start`` (y4m: the picture itself)."""
    if index.kind == "y4m":
        return KeyFrame(start, -1, index.frame_offset(start))
    return [k for k in index.keys if k.frame <= start][-1]


def reads_ranges(spec, name: str, port: str) -> bool:
    """Whether every consumer of source ``name``'s ``port`` is a stage that decodes range chunks."""
    streams = [s for s in spec.streams if s.src == name and s.src_port == port]
    return bool(streams) and all(s.dst in spec.nodes and spec.nodes[s.dst].stage.name in RANGE_READERS
                                 for s in streams)


def range_chunks(ref: str, frames_per_chunk: int | None, *, reach_local: bool = True):
    """(the chunks of ``ref`` as range references, bytes read to plan them), or (None, why)
    when the client must cut it itself (see the module docstring). Raises
    ``media.source.SourceError`` (naming the source) or a codec error (not naming it)."""
    from media.index import read_index
    from media.source import kind_of, local_path, open_source

    kind = kind_of(ref)
    if kind == "job":
        raise ValueError(f"{ref}: a job: source is read by the job's workers only")
    if kind == "file" and not reach_local:
        return None, "the workers cannot read this machine's files"
    with open_source(ref) as f:
        index = read_index(f)
        version, fetched = f.ranges.version, f.ranges.fetched
    if not index.indexed:
        return None, "no index"
    rate = tuple(index.rate)
    n = _per_chunk(frames_per_chunk, rate)
    where = local_path(ref) if kind == "file" else ref
    out = []
    for a, b in plan_cuts(index, n):
        key = _key_at(index, a)
        body = {"source": where, "version": version, "kind": index.kind, "key_frame": key.frame,
                "key_timestamp": key.timestamp, "key_offset": key.offset, "header_len": index.header_len,
                "frame_stride": index.frame_stride, "width": index.width, "height": index.height}
        out.append(EncodedChunk(json.dumps(body, sort_keys=True).encode(), CONTAINER, a, b - a, rate))
    return out, fetched


def range_images(chunk: EncodedChunk):
    """The pictures of a range chunk, fetched and decoded here (``media.range_decode``).
    ``media.source.SourceError`` or a codec ``VP8Error`` for a source that cannot be read, has
    changed, or does not decode as planned."""
    from codec.errors import ContainerError
    from media.range_decode import range_pictures
    from media.source import open_source

    try:
        ref = json.loads(bytes(chunk.data))
        source, version = str(ref["source"]), str(ref["version"])
        plan = {k: ref[k] for k in ("kind", "key_frame", "key_timestamp", "key_offset", "header_len",
                                     "frame_stride")}
    except (ValueError, KeyError, TypeError) as e:
        raise ContainerError(f"range chunk at frame {chunk.start}: unreadable reference ({e})") from None
    start, stop = chunk.start, chunk.start + chunk.count
    seen = start
    with open_source(source, version or None) as f:
        try:
            for index, image in range_pictures(f, start=start, **plan):
                if index < start:
                    continue
                yield image
                seen = index + 1
                if seen == stop:
                    return
        except ContainerError as e:
            raise ContainerError(f"{source}: {e}") from None
    raise ContainerError(f"{source}: the input ended after picture {seen - 1}; its index promised {stop}")
