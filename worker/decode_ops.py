"""``decode-range``: a worker decodes its own range of the input and writes the raw chunks.

The input is a reference (``media.source``: a path the worker can read, ``s3://``, ``https://``,
or ``job:KEY`` for a compressed file uploaded once into the job's storage); the worker fetches
only the byte ranges its pictures need, pinned to the version the client planned on, so an input
that changes while the job runs fails the task (``docs/design/data-path.md``). It decodes
pictures [start, stop) starting at the key frame at or before ``start`` (``media.index``'s plan:
fewer than one chunk of pictures is decoded and dropped; ``media.range_decode``), and puts every ``chunk_frames``
pictures as one raw chunk object (``media.rawchunk``) at the next of ``keys``, holding one chunk
of pictures at a time. Outputs ``raw0``, ``raw1``, ... are the objects, in order.

Importing this module registers the operation and imports no codec module.
"""

from __future__ import annotations

from worker.ops import OpContext, OperationError, operation

KINDS = ("y4m", "pyav", "ivf")   # media.range_decode's


@operation("decode-range")
def op_decode_range(ctx: OpContext, *, source: str, version: str = "", kind: str, start: int, stop: int,
                    key_frame: int = 0, key_timestamp: int = -1, key_offset: int = -1, chunk_frames: int, keys: list[str],
                    rate_num: int, rate_den: int, width: int = 0, height: int = 0, header_len: int = 0,
                    frame_stride: int = 0) -> dict:
    """Decode pictures [``start``, ``stop``) of ``source`` and put them as raw chunks of
    ``chunk_frames`` at ``keys`` (see the module docstring)."""
    from codec.errors import VP8Error
    from media.range_decode import range_pictures
    from media.rawchunk import chunk_object
    from media.source import SourceError, open_source

    if kind not in KINDS:
        raise OperationError(f"decode-range: kind {kind!r} is not one of {', '.join(KINDS)}")
    if not 0 <= key_frame <= start < stop or chunk_frames < 1:
        raise OperationError(f"decode-range: bad range: key frame {key_frame}, pictures {start}..{stop}")
    if len(keys) != -(-(stop - start) // chunk_frames):
        raise OperationError(f"decode-range: {len(keys)} keys for {stop - start} pictures in chunks of {chunk_frames}")
    rate = (rate_num, rate_den)
    out: dict = {}
    chunk: list = []
    seen = start
    try:
        with open_source(source, version or None, storage=ctx.storage) as f:
            for index, image in range_pictures(f, kind=kind, key_frame=key_frame, key_timestamp=key_timestamp,
                                          key_offset=key_offset,
                                          start=start, header_len=header_len, frame_stride=frame_stride):
                if index < start:
                    continue
                if width and (image.width, image.height) != (width, height):
                    raise OperationError(f"{source}: picture {index} is {image.width}x{image.height}, the first "
                                         f"is {width}x{height}; the size may not change")
                chunk.append(image)
                seen = index + 1
                if len(chunk) == chunk_frames or seen == stop:
                    n = len(out)
                    out[f"raw{n}"] = ctx.storage.put(keys[n], chunk_object(chunk, rate))
                    chunk = []
                if seen == stop:
                    break
    except SourceError as e:
        raise OperationError(str(e)) from None
    except VP8Error as e:
        raise OperationError(f"{source}: {e}") from None
    if seen != stop:
        raise OperationError(f"{source}: the input ended after picture {seen - 1}; its index promised {stop}")
    return out
