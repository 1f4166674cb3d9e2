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

A WebM / Matroska output (``-o s3://BUCKET/KEY.webm`` or ``.mkv``) is laid out and built the same
way by ``media.matroska``'s pieces (``matroska_layout``, ``matroska_part``): the head and the cues
written by the stitch, one cluster per chunk by the assemble tasks, with the sound the
``audio-track`` task stored (``worker.audio_ops``); ``matroska_here`` builds the same bytes in one
process (``excamera encode --workers 0``).
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
        # (last: whether it opens with a key frame: a chunk entered from the empty state does)
        out.append((link.sha256, link.size, link.frames, link.shown, not link.entry))
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
                counts.append((sha, size, len(frames), sum(frame_tag(d).show_frame for d in frames),
                               bool(frames) and frame_tag(frames[0]).key_frame))
        except ValueError as e:
            raise OperationError(f"vp8-stitch: {str(e).replace(tmp + os.sep, '')}") from None
    return counts


# -- A variable-frame-rate input's times (``times_object``) -----------------------------------------

def times_object(ticks, time_base) -> bytes:
    """The object that carries a variable-rate input's times to the tasks (a job input the client
    stores, ``coordinator.excamera_job.JoinPlan.times``): the time base and the ticks of every
    shown picture (``media.video.frame_times``)."""
    from fractions import Fraction
    tb = Fraction(time_base)
    return json.dumps({"time_base": [tb.numerator, tb.denominator], "ticks": [int(t) for t in ticks]},
                      separators=(",", ":")).encode()


def read_times(data: bytes, key: str, frames: int | None = None):
    """``(ticks, time_base)`` from the times object ``data`` (at ``key``): the ticks of every
    shown picture, increasing; ``frames`` of them when given."""
    from fractions import Fraction
    try:
        doc = json.loads(data)
        num, den = doc["time_base"]
        ticks = doc["ticks"]
        ok = (all(isinstance(x, int) and not isinstance(x, bool) for x in [num, den, *ticks]) and num > 0
              and den > 0 and len(ticks) >= 2 and ticks[0] >= 0 and all(b > a for a, b in zip(ticks, ticks[1:])))
    except (ValueError, KeyError, TypeError) as e:
        raise OperationError(f"{key}: not a times object: {e}") from None
    if not ok:
        raise OperationError(f"{key}: not a times object (a positive time base, increasing ticks)")
    if frames is not None and len(ticks) != frames:
        raise OperationError(f"{key}: {len(ticks)} times for {frames} frames")
    return ticks, Fraction(num, den)


def _ref_line(line: str) -> list:
    """``"KEY SHA256 SIZE"`` as ``[key, sha256, size]`` (a job input's digest in the params)."""
    parts = line.split(" ")
    if len(parts) != 3 or not parts[2].isdigit():
        raise OperationError(f"vp8-stitch: times {line!r} is not 'KEY SHA256 SIZE'")
    return [parts[0], parts[1], int(parts[2])]


def ms_of(tick: int, time_base) -> int:
    """``tick`` of ``time_base`` in milliseconds, rounded to nearest (half up)."""
    return (2 * 1000 * tick * time_base.numerator + time_base.denominator) // (2 * time_base.denominator)


def plan_parts(sizes: list[int], part_min: int, max_parts: int = 10000) -> list[tuple[int, int]]:
    """Runs ``[a, b)`` of chunks whose pieces (a chunk's bytes less its file header; the first
    run also carries the output's header) reach ``part_min`` bytes each, the last any size; the
    minimum raised so that there are at most ``max_parts`` (``group_pieces``)."""
    pieces = [s - _IVF_HEADER for s in sizes]
    if pieces:
        pieces[0] += _IVF_HEADER      # the output's header opens the first part
    return group_pieces(pieces, part_min, max_parts)


# -- WebM / Matroska (``media.matroska``): head, one cluster per chunk, cues -------------------------

MATROSKA = ("webm", "matroska")


def group_pieces(sizes: list[int], part_min: int, max_parts: int = 10000) -> list[tuple[int, int]]:
    """Runs ``[a, b)`` of pieces of ``sizes`` that reach ``part_min`` bytes each, the last any size;
    the minimum raised so that there are at most ``max_parts``."""
    part_min = max(part_min, -(-sum(sizes) // max_parts))
    groups, start, held = [], 0, 0
    for i, size in enumerate(sizes):
        held += size
        if held >= part_min:
            groups.append((start, i + 1))
            start, held = i + 1, 0
    if start < len(sizes):
        groups.append((start, len(sizes)))
    return groups


def _audio_index(data: bytes, key: str) -> dict | None:
    """The ``audio-track`` index in ``data`` with its own digest (``ref``); None for no sound."""
    try:
        doc = json.loads(data)
        if doc.get("none"):
            return None
        packets = [(int(t), int(d), int(n)) for t, d, n in doc["packets"]]
        objects = [(str(k), str(sha), int(size), int(first)) for k, sha, size, first in doc["objects"]]
        from worker.audio_ops import params_of
        params_of(doc)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise OperationError(f"{key}: not an audio index: {e}") from None
    if any(b[0] < a[0] for a, b in zip(packets, packets[1:])):
        raise OperationError(f"{key}: the audio packets are not in time order")
    if not objects or objects[0][3] != 0 or any(b[3] <= a[3] for a, b in zip(objects, objects[1:])) \
            or objects[-1][3] >= len(packets):
        raise OperationError(f"{key}: the packet objects do not cover the packets in order")
    # Where each packet lies: (object, offset in it).
    where, o, offset = [], 0, 0
    for j, (_, _, n) in enumerate(packets):
        if o + 1 < len(objects) and objects[o + 1][3] == j:
            o, offset = o + 1, 0
        where.append((o, offset))
        offset += n
    doc["where"] = where
    doc["ref"] = [key, hashlib.sha256(data).hexdigest(), len(data)]
    return doc


def matroska_layout(container: str, keys: list[str], counts: list, width: int, height: int, rate: tuple[int, int],
                    part_min: int, audio: dict | None, times=None, times_ref: list | None = None) -> dict:
    """The layout of a WebM / Matroska output (``media.matroska``): the head and the cues as bytes,
    one cluster per chunk (``counts``: sha256, IVF size, frames, shown, opens with a key frame),
    each with the audio packets whose time falls in its video's span (the first cluster also takes
    any before it, the last any after), and the parts. Every size from sizes alone: a chunk's
    frames are its IVF's bytes less the file header and the 12-byte frame headers. ``times``:
    a variable-rate input's ``(ticks, time_base)`` (``read_times``), the pictures' times instead
    of ``rate``'s; ``times_ref`` where the assemble tasks read them."""
    import bisect

    from codec.ivf import tick_of
    from media import matroska as mk
    at_ms = _at_ms(rate, times)
    packets = audio["packets"] if audio else []
    starts, shown_before, at = [], [], 0
    for c in counts:
        shown_before.append(at)
        starts.append(at_ms(at))
        at += c[3]
    place = [max(0, bisect.bisect_right(starts, t) - 1) for t, _, _ in packets]
    ranges, p = [], 0
    for i in range(len(counts)):
        q = p
        while q < len(place) and place[q] == i:
            q += 1
        ranges.append((p, q))
        p = q
    clusters = []
    for i, (c, (a, b)) in enumerate(zip(counts, ranges)):
        last = max([at_ms(shown_before[i] + c[3])] + [packets[j][0] for j in range(a, b)])
        if last - starts[i] > mk.MAX_CLUSTER_MS:
            raise OperationError(f"vp8-stitch: chunk {i} spans {last - starts[i]} ms; a Matroska cluster holds "
                                 f"{mk.MAX_CLUSTER_MS} ms (use fewer --chunk-frames)")
        clusters.append(mk.cluster_size(c[1] - _IVF_HEADER - 12 * c[2], c[2], [packets[j][2] for j in range(a, b)]))
    key_clusters = [i for i, c in enumerate(counts) if c[4]]
    cues_bytes = mk.cues_size(len(key_clusters))
    params = None
    if audio:
        from worker.audio_ops import params_of
        params = params_of(audio)
    if times is None:
        frame_ns = (1_000_000_000 * rate[1] + rate[0] // 2) // rate[0]
        duration_ms = 1000 * at * rate[1] / rate[0]
    else:   # (no DefaultDuration at a variable rate; the last picture lasts as the one before it)
        frame_ns, duration_ms = 0, float(1000 * tick_of(at, times[0]) * times[1])
    head, offset = mk.head(container, width, height, frame_ns, duration_ms, params, sum(clusters), cues_bytes)
    positions, pos = [], len(head) - offset
    for size in clusters:
        positions.append(pos)
        pos += size
    cues = mk.cues([(starts[i], positions[i]) for i in key_clusters])
    assert len(cues) == cues_bytes
    sizes = [len(head)] + clusters + ([len(cues)] if cues else [])
    groups = group_pieces(sizes, part_min)
    doc = {"container": container, "head": head.hex(), "cues": cues.hex(), "rate": list(rate), "groups": groups,
           "sizes": [sum(sizes[a:b]) for a, b in groups], "pieces": sizes,
           "audio": audio["ref"] if audio else None,
           "chunks": [[key, c[0], c[1], shown_before[i], c[2], bool(c[4]), starts[i], a, b]
                      for i, (key, c, (a, b)) in enumerate(zip(keys, counts, ranges))]}
    if times_ref is not None:   # (absent at a constant rate: the layout as it always was)
        doc["times"] = list(times_ref)
    return doc


def _at_ms(rate, times):
    """The time in ms of the k-th shown picture: at ``rate``, or ``times`` (``read_times``)."""
    from codec.ivf import tick_of
    from media import matroska as mk
    if times is None:
        return lambda k: mk.ms(k, rate)
    ticks, time_base = times
    return lambda k: ms_of(tick_of(k, ticks), time_base)


def matroska_cluster(doc: dict, i: int, get, index: dict | None, packet_objects: dict, times=None) -> bytes:
    """Cluster ``i`` of the layout: the chunk's frames (read with ``get(key, sha256, size)``,
    checked) at their times (a hidden frame at the time of the shown frame after it, as
    ``codec.chunks.presentation_times``; ``times``: a variable-rate input's, ``read_times``),
    its audio packets beside them, interleaved by time."""
    import io

    from codec.chunks import frame_tag
    from codec.ivf import read_ivf
    from media import matroska as mk
    key, sha, size, shown, frames, opens_key, start, a, b = doc["chunks"][i]
    at_ms = _at_ms(tuple(doc["rate"]), times)
    try:
        _, records = read_ivf(io.BytesIO(get(key, sha, size)))
    except ValueError as e:
        raise OperationError(f"{key}: {e}") from None
    if len(records) != frames:
        raise OperationError(f"{key}: {len(records)} frames, the layout says {frames}")
    video = []
    for r in records:
        try:
            tag = frame_tag(r.data)
        except ValueError as e:
            raise OperationError(f"{key}: {e}") from None
        video.append((mk.VIDEO_TRACK, at_ms(shown), tag.key_frame, r.data))
        shown += bool(tag.show_frame)
    if bool(video and video[0][2]) != bool(opens_key):
        raise OperationError(f"{key}: the layout says it {'opens' if opens_key else 'does not open'} "
                             "with a key frame; it does not")
    sound = []
    if a < b:
        objects, packets = index["objects"], index["packets"]
        for j in range(a, b):
            o, offset = index["where"][j]
            if o not in packet_objects:
                okey, osha, osize, _ = objects[o]
                packet_objects[o] = get(okey, osha, osize)
            data = packet_objects[o][offset:offset + packets[j][2]]
            if len(data) != packets[j][2]:
                raise OperationError(f"{objects[o][0]}: holds no packet {j}")
            sound.append((mk.AUDIO_TRACK, packets[j][0], True, data))
    try:
        return mk.cluster(start, mk.interleave(video, sound))
    except mk.ClusterError as e:
        raise OperationError(f"{key}: {e}") from None


#: The types of a Matroska layout's chunk entry: key, sha256, size, shown before, frames, opens
#: with a key frame, time in ms, first and end audio packet.
_CHUNK_TYPES = (str, str, int, int, int, bool, int, int, int)


def _check_matroska_layout(doc: dict, g: int) -> None:
    """The layout's shape (OperationError, one line): what an assemble task builds from."""
    def ints(v, n=None):
        return isinstance(v, list) and (n is None or len(v) == n) and all(
            isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in v)
    try:
        chunks = doc["chunks"]
        ok = (isinstance(chunks, list) and chunks and all(
            isinstance(c, list) and len(c) == len(_CHUNK_TYPES) and all(
                isinstance(x, t) and (t is bool or not isinstance(x, bool)) for x, t in zip(c, _CHUNK_TYPES))
            for c in chunks)
            and isinstance(doc["groups"], list) and all(ints(x, 2) and x[0] < x[1] for x in doc["groups"])
            and ints(doc["sizes"], len(doc["groups"])) and ints(doc["pieces"])
            and len(doc["pieces"]) in (len(chunks) + 1, len(chunks) + 2) and ints(doc["rate"], 2)
            and min(doc["rate"]) > 0 and isinstance(doc["head"], str) and isinstance(doc["cues"], str)
            and 0 <= g < len(doc["groups"]) and doc["groups"][g][1] <= len(doc["pieces"])
            and all(doc.get(k) is None or (isinstance(doc[k], list) and len(doc[k]) == 3
                                           and ints(doc[k][2:])) for k in ("audio", "times")))
    except (KeyError, TypeError) as e:
        raise OperationError(f"part {g}: not a Matroska layout (no {e})") from None
    if not ok:
        raise OperationError(f"part {g}: not a Matroska layout this task can assemble")


def _once(doc: dict, name: str, load):
    """``load(doc[name])`` (an object's reference in the layout), kept in ``doc``: a task builds
    every K-th part of one layout, and reads what they share once."""
    held = doc.setdefault("_loaded", {})
    if name not in held:
        held[name] = load(doc[name])
    return held[name]


def matroska_part(doc: dict, g: int, get) -> bytes:
    """Part ``g`` of a Matroska layout: its pieces (the head, clusters, the cues), objects read
    with ``get(key, sha256, size)`` (which checks them)."""
    _check_matroska_layout(doc, g)
    try:
        a, b = doc["groups"][g]
        n = len(doc["chunks"])
        index = None
        if doc.get("audio") and any(c[7] < c[8] for c in doc["chunks"][max(0, a - 1):b]):
            index = _once(doc, "audio", lambda ref: _audio_index(get(*ref), ref[0]))
        times = None
        if doc.get("times") and any(1 <= p <= n for p in range(a, b)):
            times = _once(doc, "times", lambda ref: read_times(get(*ref), ref[0]))
        objects: dict = {}
        out = []
        for p in range(a, b):
            if p == 0:
                piece = bytes.fromhex(doc["head"])
            elif p <= n:
                piece = matroska_cluster(doc, p - 1, get, index, objects, times)
            else:
                piece = bytes.fromhex(doc["cues"])
            if len(piece) != doc["pieces"][p]:
                raise OperationError(f"piece {p}: {len(piece)} bytes, the layout says {doc['pieces'][p]}")
            out.append(piece)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
        if isinstance(e, OperationError):
            raise
        raise OperationError(f"part {g}: not a layout this task can assemble ({type(e).__name__}: {e})") from None
    part = b"".join(out)
    if len(part) != doc["sizes"][g]:
        raise OperationError(f"part {g}: {len(part)} bytes, the layout says {doc['sizes'][g]}")
    return part


def matroska_here(container: str, frames: list[bytes], width: int, height: int, rate: tuple[int, int],
                  chunk_frames: int, sound, part_min: int, times=None) -> tuple[list[bytes], list[int]]:
    """The parts of a WebM / Matroska output built in this process (``excamera encode --workers
    0``) by the functions the tasks run, so that the bytes are the same: ``frames`` cut into chunks
    of ``chunk_frames`` shown pictures (as the job's chunks are), ``sound`` the ``(params,
    packets)`` of ``worker.audio_ops.extract`` or None, ``times`` a variable-rate input's
    ``(ticks, time_base)`` or None. (parts, their sizes)."""
    from codec.chunks import frame_tag
    from codec.ivf import IvfHeader
    from worker.audio_ops import index_doc, pack
    objects: dict[str, bytes] = {}
    chunks: list[list] = [[]]
    shown = 0
    for d in frames:
        tag = frame_tag(d)
        chunks[-1].append((d, tag))
        shown += bool(tag.show_frame)
        if tag.show_frame and shown % chunk_frames == 0:
            chunks.append([])
    chunks = [c for c in chunks if c]
    keys, counts = [], []
    for i, c in enumerate(chunks):
        header = IvfHeader(width=width, height=height, rate=rate[0], scale=rate[1], frame_count=len(c)).to_bytes()
        data = header + b"".join(_RECORD.pack(len(d), j) + d for j, (d, _) in enumerate(c))
        keys.append(f"chunk-{i:05d}")
        objects[keys[-1]] = data
        counts.append((hashlib.sha256(data).hexdigest(), len(data), len(c), sum(bool(t.show_frame) for _, t in c),
                       c[0][1].key_frame))
    index = None
    if sound is not None:
        params, packets = sound
        listed = []
        for n, (first, data) in enumerate(pack(packets)):
            objects[f"audio-{n:05d}"] = data
            listed.append([f"audio-{n:05d}", hashlib.sha256(data).hexdigest(), len(data), first])
        data = json.dumps(index_doc(params, packets, listed), separators=(",", ":")).encode()
        objects["audio-index"] = data
        index = _audio_index(data, "audio-index")
    times_ref = None
    if times is not None:
        data = objects["times"] = times_object(*times)
        times_ref = ["times", hashlib.sha256(data).hexdigest(), len(data)]
        times = read_times(data, "times", sum(c[3] for c in counts))
    doc = json.loads(json.dumps(matroska_layout(container, keys, counts, width, height, rate, part_min, index,
                                                times, times_ref)))
    parts = [matroska_part(doc, g, lambda key, sha, size: objects[key]) for g in range(len(doc["groups"]))]
    return parts, doc["sizes"]


@operation("vp8-stitch-links")
def op_stitch_links(ctx: OpContext, *, chunks: list[str], links: list[str], frames: int, width: int,
                    height: int, rate_num: int, rate_den: int, part_min: int, layout: str,
                    container: str = "ivf", audio: str = "", times: str = "", verified: list[str] = ()) -> dict:
    """Prove the chain of ``chunks`` from ``links`` (reading no chunk where they fit) and write
    the output's layout to ``layout``: the chunks must show ``frames`` pictures. ``container``:
    ``ivf``, or ``webm`` / ``matroska`` (``matroska_layout``) with the sound whose index the
    ``audio-track`` task wrote at ``audio`` (``worker.audio_ops``; "" for none). ``times``: a
    variable-rate input's times object, ``"KEY SHA256 SIZE"`` (``times_object``; "" at a constant
    rate): the IVF header then holds its time base, and the assemble tasks stamp each frame
    with its time."""
    from codec.errors import ContainerError
    from codec.ivf import IvfHeader, ivf_time_base
    if container not in ("ivf",) + MATROSKA:
        raise OperationError(f"vp8-stitch: container {container!r} is not ivf, webm or matroska")
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
    ref = _ref_line(times) if times else None
    timing = read_times(get_verified(ctx, ref[0], [times]), ref[0], frames) if ref else None
    if container in MATROSKA:
        index = _audio_index(get_verified(ctx, audio, verified), audio) if audio else None
        doc = matroska_layout(container, chunks, counts, width, height, (rate_num, rate_den), part_min, index,
                              timing, ref)
        ref = ctx.storage.put(layout, json.dumps(doc, separators=(",", ":")).encode())
        return {"object": ref, "frames": sum(c[2] for c in counts), "parts": len(doc["groups"]),
                "bytes": sum(doc["sizes"]), "decoded": decoded, "digest": found[-1].exit if not decoded else ""}
    firsts, at = [], 0
    for c in counts:
        firsts.append(at)
        at += c[2]
    if timing is not None:
        try:
            rate_num, rate_den = ivf_time_base(timing[1])
        except ContainerError as e:
            raise OperationError(f"vp8-stitch: {e}") from None
    header = IvfHeader(width=width, height=height, rate=rate_num, scale=rate_den, frame_count=at).to_bytes()
    groups = plan_parts([c[1] for c in counts], part_min)
    sizes = [(_IVF_HEADER if g == 0 else 0) + sum(counts[i][1] - _IVF_HEADER for i in range(a, b))
             for g, (a, b) in enumerate(groups)]
    doc = {"header": header.hex(), "groups": groups, "sizes": sizes,
           "chunks": [[key, c[0], c[1], first, c[2]] for key, c, first in zip(chunks, counts, firsts)]}
    if ref is not None:   # (the times, and where each chunk's shown pictures start in them)
        doc["times"] = ref
        doc["shown"] = [sum(c[3] for c in counts[:i]) for i in range(len(counts))]
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
    header first in part 0), each chunk checked against the digest the layout carries; for
    Matroska, its pieces (``matroska_part``). A layout with ``times`` (a variable-rate input's):
    each frame's pts is its time (``codec.ivf.shown_pts`` over the whole stream), the chunk's
    shown pictures starting at its ``shown`` index."""
    import io

    from codec.chunks import frame_tag
    from codec.ivf import read_ivf, tick_of
    if doc.get("container") in MATROSKA:
        return matroska_part(doc, g, lambda key, sha, size: get_verified(ctx, key, [f"{key} {sha} {size}"]))
    a, b = doc["groups"][g]
    ticks = None
    if doc.get("times"):
        ticks = _once(doc, "times", lambda ref: read_times(get_verified(ctx, ref[0], [" ".join(map(str, ref))]),
                                                           ref[0]))[0]
    out = [bytes.fromhex(doc["header"])] if g == 0 else []
    for i, (key, sha, size, first, frames, *at) in enumerate(doc["chunks"][a:b], a):  # at: pipeline.ivf_join's
        data = get_verified(ctx, key, [f"{key} {sha} {size}"])
        try:
            _, records = read_ivf(io.BytesIO(data[at[0] if at else 0:]))
        except ValueError as e:
            raise OperationError(f"{key}: {e}") from None
        if len(records) != frames:
            raise OperationError(f"{key}: {len(records)} frames, the layout says {frames}")
        if ticks is None:
            out += [_RECORD.pack(len(r.data), first + j) + r.data for j, r in enumerate(records)]
            continue
        k = doc["shown"][i]
        for r in records:   # (a hidden frame at the time of the shown frame after it)
            out.append(_RECORD.pack(len(r.data), tick_of(k, ticks)) + r.data)
            try:
                k += bool(frame_tag(r.data).show_frame)
            except ValueError as e:
                raise OperationError(f"{key}: {e}") from None
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


# The sound beside a WebM / Matroska output: registered wherever these operations are.
import worker.audio_ops  # noqa: E402,F401
