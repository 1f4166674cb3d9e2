"""The ExCamera output joined without a funnel (``coordinator.excamera_job``, ``docs/design/data-path.md``).

No process reads every chunk back to write the output. After the chunk tasks:

* ``vp8-stitch-links`` (one task) proves the chain from the chunks' links alone
  (``codec.chunks.ChunkLink``: every link's hash is the digest the coordinator accepted for its
  chunk, the first chunk enters from the empty state, every other's entry is the exit before it)
  and lays the output out: where each chunk's frames land (their decode-order index, the IVF pts),
  and the *parts*, runs of whole chunks of at least ``part_min`` bytes (the last any size), the
  first opening with the 32-byte IVF file header. Where a link is missing or does not fit, it
  reads and decodes the chunks to prove the chain instead (``codec.chunks.stitch_chunks``), as
  the one-object stitch does. The layout is one small object.
* ``vp8-assemble`` (several tasks) each build their parts: the chunks' frame records, pts
  rewritten to the global index, each chunk checked against the digest in the layout. A part
  goes straight into the output's S3 multipart upload (``UploadPart``: each byte crosses once,
  from the worker that assembled it) or, with no S3 destination, into the job's storage.
* ``vp8-join`` (one task) ends it: with S3 it checks that the upload holds exactly the parts
  laid out, of their sizes, and completes it (nothing is visible at the key before); otherwise
  it reports the parts as the job's result, which the client writes out in order.

The bytes are those of the one-object stitch, which the client wrote out as IVF with the input's
size and rate: header, then every frame with its decode-order index as pts.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from concurrent.futures import ThreadPoolExecutor

from storage import ObjectRef, StorageError
from worker.ops import OpContext, OperationError, get_verified, operation

_RECORD = struct.Struct("<IQ")
_IVF_HEADER = 32
#: Links read at once by the stitch (small objects: the time is the requests' latency).
LINK_READERS = 8


def _accepted(verified: list[str]) -> dict[str, tuple[str, int]]:
    out = {}
    for line in verified:
        key, sha, size = (line.split(" ") + ["", ""])[:3]
        if size.isdigit():
            out[key] = (sha, int(size))
    return out


def _read_link(ctx: OpContext, key: str):
    from codec.chunks import ChunkLink
    try:
        return ChunkLink.from_bytes(ctx.storage.get(key))
    except StorageError:
        return None


def _counts_from_links(chunks, links, accepted) -> list[tuple[str, int, int, int]] | None:
    """(sha256, size, frames, shown) of each chunk from links that prove the chain; None where
    one is missing or does not fit."""
    out, previous_exit = [], None
    for index, (key, link) in enumerate(zip(chunks, links)):
        if link is None or min(link.size, link.frames, link.shown) < 0 or link.frames == 0:
            return None
        if accepted.get(key) != (link.sha256, link.size):
            return None
        if link.entry and (index == 0 or link.entry != previous_exit):
            return None
        out.append((link.sha256, link.size, link.frames, link.shown))
        previous_exit = link.exit
    return out


def _counts_by_decoding(ctx: OpContext, chunks, verified) -> list[tuple[str, int, int, int]]:
    """The same from the chunks' bytes, the chain proved by decoding it (``stitch_chunks``)."""
    from codec.chunks import frame_tag, read_chunk, stitch_chunks
    with tempfile.TemporaryDirectory(prefix="excamera-stitch-") as tmp:
        paths, shas = [], []
        for i, key in enumerate(chunks):
            data = get_verified(ctx, key, verified)
            paths.append(os.path.join(tmp, f"{i:06d}-{os.path.basename(key)}"))
            with open(paths[-1], "wb") as f:
                f.write(data)
            shas.append((hashlib.sha256(data).hexdigest(), len(data)))
        try:
            stitch_chunks(paths)
            counts = []
            for (sha, size), path in zip(shas, paths):
                frames = read_chunk(path).frames
                counts.append((sha, size, len(frames), sum(frame_tag(d).show_frame for d in frames)))
        except ValueError as e:
            raise OperationError(f"vp8-stitch: {str(e).replace(tmp + os.sep, '')}") from None
    return counts


def plan_parts(sizes: list[int], part_min: int, max_parts: int = 10000) -> list[tuple[int, int]]:
    """Runs ``[a, b)`` of chunks whose pieces (a chunk's bytes less its file header; the first
    run also carries the output's header) reach ``part_min`` bytes each, the last any size; the
    minimum raised so that there are at most ``max_parts``."""
    total = _IVF_HEADER + sum(s - _IVF_HEADER for s in sizes)
    part_min = max(part_min, -(-total // max_parts))
    groups, start, held = [], 0, _IVF_HEADER
    for i, size in enumerate(sizes):
        held += size - _IVF_HEADER
        if held >= part_min:
            groups.append((start, i + 1))
            start, held = i + 1, 0
    if start < len(sizes):
        groups.append((start, len(sizes)))
    return groups


@operation("vp8-stitch-links")
def op_stitch_links(ctx: OpContext, *, chunks: list[str], links: list[str], frames: int, width: int,
                    height: int, rate_num: int, rate_den: int, part_min: int, layout: str,
                    verified: list[str] = ()) -> dict:
    """Prove the chain of ``chunks`` from ``links`` (reading no chunk where they fit) and write
    the output's layout to ``layout``: the chunks must show ``frames`` pictures."""
    from codec.ivf import IvfHeader
    if not chunks or len(links) != len(chunks):
        raise OperationError(f"vp8-stitch: {len(links)} links for {len(chunks)} chunks")
    if part_min < 1:
        raise OperationError(f"vp8-stitch: part_min {part_min} must be positive")
    accepted = _accepted(verified)
    with ThreadPoolExecutor(LINK_READERS) as pool:
        found = list(pool.map(lambda k: _read_link(ctx, k), links))
    counts = _counts_from_links(chunks, found, accepted)
    decoded = counts is None
    if decoded:
        counts = _counts_by_decoding(ctx, chunks, verified)
    shown = sum(c[3] for c in counts)
    if shown != frames:
        raise OperationError(f"vp8-stitch: the chunks show {shown} frames, the input has {frames}")
    firsts, at = [], 0
    for c in counts:
        firsts.append(at)
        at += c[2]
    header = IvfHeader(width=width, height=height, rate=rate_num, scale=rate_den, frame_count=at).to_bytes()
    groups = plan_parts([c[1] for c in counts], part_min)
    sizes = [(_IVF_HEADER if g == 0 else 0) + sum(counts[i][1] - _IVF_HEADER for i in range(a, b))
             for g, (a, b) in enumerate(groups)]
    doc = {"header": header.hex(), "groups": groups, "sizes": sizes,
           "chunks": [[key, c[0], c[1], first, c[2]] for key, c, first in zip(chunks, counts, firsts)]}
    ref = ctx.storage.put(layout, json.dumps(doc, separators=(",", ":")).encode())
    return {"object": ref, "frames": at, "parts": len(groups), "bytes": sum(sizes), "decoded": decoded,
            "digest": found[-1].exit if not decoded else ""}


def _layout(ctx: OpContext, key: str, verified: list[str]) -> dict:
    try:
        return json.loads(get_verified(ctx, key, verified))
    except ValueError as e:
        raise OperationError(f"{key}: not a layout: {e}") from None


def assemble_part(ctx: OpContext, doc: dict, g: int) -> bytes:
    """Part ``g`` of the layout ``doc``: its chunks' frame records with global pts (and the file
    header first in part 0), each chunk checked against the digest the layout carries."""
    import io

    from codec.ivf import read_ivf
    a, b = doc["groups"][g]
    out = [bytes.fromhex(doc["header"])] if g == 0 else []
    for key, sha, size, first, frames in doc["chunks"][a:b]:
        data = get_verified(ctx, key, [f"{key} {sha} {size}"])
        try:
            _, records = read_ivf(io.BytesIO(data))
        except ValueError as e:
            raise OperationError(f"{key}: {e}") from None
        if len(records) != frames:
            raise OperationError(f"{key}: {len(records)} frames, the layout says {frames}")
        out += [_RECORD.pack(len(r.data), first + j) + r.data for j, r in enumerate(records)]
    part = b"".join(out)
    if len(part) != doc["sizes"][g]:
        raise OperationError(f"part {g}: {len(part)} bytes, the layout says {doc['sizes'][g]}")
    return part


@operation("vp8-assemble")
def op_assemble(ctx: OpContext, *, layout: str, index: int, of: int, parts: str, destination: str = "",
                upload_id: str = "", verified: list[str] = ()) -> dict:
    """Parts ``index``, ``index + of``, ... of the layout: into the S3 multipart upload
    ``upload_id`` of ``destination`` (``s3://BUCKET/KEY``), or, with none, to storage keys
    ``parts`` formatted with the part number."""
    doc = _layout(ctx, layout, verified)
    out: dict = {"parts": 0}
    upload = None
    if destination:
        from storage.s3 import MultipartOutput
        upload = MultipartOutput(destination, upload_id)
    for g in range(index, len(doc["groups"]), max(1, of)):
        data = assemble_part(ctx, doc, g)
        try:
            if upload is not None:
                upload.put_part(g + 1, data)
            else:
                out[f"part{g:05d}"] = ctx.storage.put(parts.format(g), data)
        except StorageError as e:
            raise OperationError(str(e)) from None
        out["parts"] += 1
    return out


@operation("vp8-join")
def op_join(ctx: OpContext, *, layout: str, destination: str = "", upload_id: str = "",
            verified: list[str] = ()) -> dict:
    """The parts made one output: the S3 upload completed once it holds exactly the parts laid
    out (sizes checked); without a destination, the parts (as the assemble tasks reported them and
    the coordinator accepted them) reported again as this task's result, in order."""
    doc = _layout(ctx, layout, verified)
    if destination:
        from storage.s3 import MultipartOutput
        try:
            MultipartOutput(destination, upload_id).complete(doc["sizes"])
        except StorageError as e:
            raise OperationError(str(e)) from None
        return {"parts": len(doc["sizes"]), "bytes": sum(doc["sizes"])}
    accepted = _accepted(verified)
    out: dict = {"parts": len(doc["sizes"]), "bytes": sum(doc["sizes"])}
    parts = sorted(k for k in accepted if k != layout)
    if [accepted[k][1] for k in parts] != doc["sizes"]:
        raise OperationError(f"vp8-join: the parts reported ({len(parts)}) are not the {len(doc['sizes'])} laid out")
    for g, key in enumerate(parts):
        out[f"part{g:05d}"] = ObjectRef(key, *accepted[key])
    return out
