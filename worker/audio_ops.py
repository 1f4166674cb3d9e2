"""The input's sound for an output joined in pieces (``worker.assemble_ops``,
``docs/design/data-path.md``): ``audio-track``, one task that runs beside the chunk encodes.

It reads the input's audio stream only (by range when the input is a URL:
``media.audio.open_container``), makes it what the container takes (``media.audio.read_audio``:
Opus for WebM, transcoded unless it is Opus already; for Matroska a codec copied where this
writer knows its track parameters, else Opus), cut to the video's duration, and writes small
objects: the packets' bytes, in objects of about ``PACKET_OBJECT_BYTES``, and an index (the
track's parameters, and each packet's time and duration in ms and size). The stitch reads the
index only; each assemble task reads the packets of its clusters.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile

from worker.ops import OpContext, OperationError, operation

#: Packets per object of the track (about 80 s of Opus at 96 kbit/s).
PACKET_OBJECT_BYTES = 1 << 20
#: ffmpeg codec name -> Matroska CodecID, for codecs copied into Matroska as they are (their
#: CodecPrivate is ffmpeg's extradata unchanged). Anything else is transcoded to Opus.
COPIED_IDS = {"opus": "A_OPUS", "aac": "A_AAC", "mp3": "A_MPEG/L3", "ac3": "A_AC3", "eac3": "A_EAC3"}
#: Opus: SeekPreRoll 80 ms (the WebM guidelines; RFC 7845 section 4.6).
OPUS_PREROLL_NS = 80_000_000


def _opus_delay_ns(head: bytes) -> int:
    """CodecDelay from OpusHead's pre-skip (RFC 7845 section 5.1: samples at 48 kHz)."""
    if len(head) < 12 or head[:8] != b"OpusHead":
        return 0
    return int.from_bytes(head[10:12], "little") * 1_000_000_000 // 48000


def extract(ref: str, target: str, frames: int, rate: tuple[int, int], warn=None):
    """The sound of ``ref`` for a ``target`` (``"webm"``, ``"matroska"``) output of ``frames``
    pictures at ``rate``: (params, packets), params a ``media.matroska.AudioParams`` and packets
    (block time in ms, duration in ms, bytes) in order; None when there is no sound to carry."""
    from media.audio import read_audio, spans_of
    from media.matroska import AudioParams

    spans = spans_of([(0, frames, 1)], rate)
    track = read_audio(ref, target, spans, warn)
    if track is not None and track.codec not in COPIED_IDS:
        track.close()
        track = read_audio(ref, target, spans, warn, transcode=True)
    if track is None:
        return None
    try:
        cc = track.template.codec_context
        private = bytes(cc.extradata or b"")
        if track.codec == "aac" and not private:   # ADTS framing (no AudioSpecificConfig): re-encode
            track.close()
            track = read_audio(ref, target, spans, warn, transcode=True)
            if track is None:
                return None
            cc = track.template.codec_context
            private = bytes(cc.extradata or b"")
        opus = track.codec == "opus"
        params = AudioParams(COPIED_IDS[track.codec], private, float(cc.sample_rate), int(cc.channels or 1),
                             _opus_delay_ns(private) if opus else 0, OPUS_PREROLL_NS if opus else 0)
        # As ffmpeg's muxer stores them: the time plus the codec delay in ms, half rounded up as
        # ffmpeg rounds it (a demuxer takes the same off).
        shift = (params.delay_ns + 500_000) // 1_000_000
        tb = track.time_base
        packets = [(round(pts * tb * 1000) + shift, round(duration * tb * 1000), data)
                   for data, pts, duration in track._packets]
    finally:
        track.close()
    packets = [p for p in packets if p[0] >= 0]
    return (params, packets) if packets else None


def index_doc(params, packets, objects: list) -> dict:
    """The index the stitch and the assemble tasks read: ``objects`` [key, sha256, size, first
    packet] of the packet objects."""
    return {"codec_id": params.codec_id, "private": params.private.hex(), "rate": params.rate,
            "channels": params.channels, "delay_ns": params.delay_ns, "preroll_ns": params.preroll_ns,
            "objects": objects, "packets": [[t, d, len(b)] for t, d, b in packets]}


def params_of(index: dict):
    from media.matroska import AudioParams

    return AudioParams(index["codec_id"], bytes.fromhex(index["private"]), float(index["rate"]),
                       int(index["channels"]), int(index["delay_ns"]), int(index["preroll_ns"]))


def pack(packets) -> list[tuple[int, bytes]]:
    """The packets' bytes grouped into objects of about ``PACKET_OBJECT_BYTES``: (first packet, bytes)."""
    out, start, held = [], 0, []
    for i, (_, _, data) in enumerate(packets):
        if held and sum(map(len, held)) + len(data) > PACKET_OBJECT_BYTES:
            out.append((start, b"".join(held)))
            start, held = i, []
        held.append(data)
    if held:
        out.append((start, b"".join(held)))
    return out


def _readable(ctx: OpContext, source: str, tmp: str) -> str:
    """A reference ``media.audio`` opens: a ``job:`` object (an input uploaded into the job's
    storage) is fetched to a file first."""
    if not source.startswith("job:"):
        return source
    path = os.path.join(tmp, "input" + os.path.splitext(source)[1])
    with open(path, "wb") as f:
        f.write(ctx.storage.get(source[len("job:"):]))
    return path


@operation("audio-track")
def op_audio_track(ctx: OpContext, *, source: str, target: str, frames: int, rate_num: int, rate_den: int,
                   packets: str, index: str) -> dict:
    """The sound of ``source`` for a ``target`` container of ``frames`` pictures: its packets to
    storage keys ``packets`` (formatted with the object's number) and the index to ``index``
    (``{"none": true}`` when there is no sound to carry)."""
    if target not in ("webm", "matroska"):
        raise OperationError(f"audio-track: target {target!r} is not webm or matroska")
    if frames < 1 or rate_num < 1 or rate_den < 1:
        raise OperationError(f"audio-track: {frames} frames at {rate_num}/{rate_den} a second")
    warnings: list[str] = []
    with tempfile.TemporaryDirectory(prefix="excamera-audio-") as tmp:
        found = extract(_readable(ctx, source, tmp), target, frames, (rate_num, rate_den), warnings.append)
    out: dict = {}
    if found is None:
        doc = {"none": True, "warnings": warnings}
    else:
        params, found_packets = found
        objects = []
        for n, (first, data) in enumerate(pack(found_packets)):
            ref = ctx.storage.put(packets.format(n), data)
            out[f"packets{n:05d}"] = ref
            objects.append([ref.key, hashlib.sha256(data).hexdigest(), len(data), first])
        doc = dict(index_doc(params, found_packets, objects), warnings=warnings)
    out["index"] = ctx.storage.put(index, json.dumps(doc, separators=(",", ":")).encode())
    out["packets"] = len(doc.get("packets", ()))
    return out
