"""A minimal stand-in for the media engineer's ``pipeline.media_io`` (issue 11): Y4M only.

Same signatures as the real module, which replaces this one on merge: ``cut_input`` cuts a
``.y4m`` into chunks of raw Y4M (container ``"y4m"``), ``read_image`` reads the first picture of
a ``.y4m``, ``write_output`` writes ``frames`` (or Y4M ``chunks``) as ``.y4m`` and ``records`` as
``.json``, atomically. Enough for the framework's own tests; nothing more.
"""

from __future__ import annotations

import io
import json
import os
from typing import Iterator

from pipeline.values import EncodedChunk, FrameBatch


def cut_input(path: str, frames_per_chunk: int | None) -> Iterator[EncodedChunk]:
    from codec.y4m import Y4mReader

    with Y4mReader(path) as r:
        rate = r.header.rate
        n = frames_per_chunk or max(1, round(rate[0] / rate[1]))
        header = r.header.to_bytes()
        start, pending = 0, []
        for image in r:
            pending.append(b"FRAME\n" + image.to_i420())
            if len(pending) == n:
                yield EncodedChunk(header + b"".join(pending), "y4m", start, n, rate)
                start, pending = start + n, []
        if pending:
            yield EncodedChunk(header + b"".join(pending), "y4m", start, len(pending), rate)


def read_image(path: str) -> FrameBatch:
    from codec.y4m import Y4mReader

    with Y4mReader(path) as r:
        image = r.read_frame()
        if image is None:
            raise ValueError(f"{path}: no picture")
        return FrameBatch.from_images([image], 0, r.header.rate)


def frames_of(chunk: EncodedChunk) -> FrameBatch:
    """The pictures of a Y4M chunk."""
    from codec.y4m import read_y4m

    if chunk.container != "y4m":
        raise ValueError(f"this stand-in media_io reads only y4m chunks, not {chunk.container}")
    _, images = read_y4m(io.BytesIO(chunk.data))
    return FrameBatch.from_images(images, chunk.start, chunk.fps, chunk.meta)


def check_output(path: str, port_type: str) -> None:
    ext = os.path.splitext(path)[1].lower()
    want = {"frames": ".y4m", "frame": ".y4m", "chunks": ".y4m"}.get(port_type, ".json")
    if ext != want:
        raise ValueError(f"{path}: a {port_type} port is written as {want} here, not {ext or 'no extension'}")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory) or not os.access(directory, os.W_OK):
        raise ValueError(f"{path}: directory {directory} is missing or not writable")


def write_output(path: str, port_type: str, values: list) -> None:
    from codec.ivf import AtomicFile
    from codec.y4m import Y4mWriter

    check_output(path, port_type)
    if port_type in ("records", "scene_list", "frame_list"):
        with AtomicFile(path) as f:
            f.write(json.dumps([r for v in values for r in v.records], sort_keys=True).encode())
        return
    batches = [frames_of(v) if isinstance(v, EncodedChunk) else v for v in values]
    if not batches:
        raise ValueError(f"{path}: no pictures to write")
    with Y4mWriter(path, rate=tuple(batches[0].fps)) as w:
        for b in batches:
            for image in b.images():
                w.write(image)
