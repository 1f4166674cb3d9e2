"""A minimal Matroska / WebM writer for an output made of *pieces* that separate workers write
(``worker.assemble_ops``, ``docs/design/data-path.md``): the ``head``, one ``cluster`` per chunk,
and the ``cues``.

Every size field that depends on the frames is written at a FIXED width (an 8-byte EBML data
size, RFC 8794 section 6.2: ``0x01`` then 7 bytes): the Segment's, each Cluster's and each
SimpleBlock's; positions (SeekPosition, CueClusterPosition) and the Cluster Timestamp are 8-byte
unsigned integers. So the size of every piece follows from sizes alone: a SimpleBlock of an
``n``-byte frame is ``n + BLOCK_OVERHEAD`` bytes, a cluster is ``CLUSTER_HEADER`` plus its
blocks, and the one task that lays the output out knows where each cluster lands without
reading a frame. (The variable-width minimal sizes save a few bytes a frame; they would make
each cluster's size depend on each frame's size.)

Element IDs and meanings: RFC 9559 (Matroska), sections 5.1 (the element tree: Segment,
SeekHead 5.1.1, Info 5.1.2, Cluster 5.1.3, Tracks 5.1.4, Cues 5.1.5) and 10.2 (the SimpleBlock
header: track number vint, int16 timestamp relative to the Cluster's, flags); the EBML header,
RFC 8794 section 11.2. WebM (the DocType ``webm``) is the same with a subset of codecs (VP8,
Opus, Vorbis) and a few rules from the WebM container guidelines
(https://www.webmproject.org/docs/container/): Clusters start with a key frame where possible,
Cues are present for seeking, SimpleBlock is used, and an Opus track carries CodecDelay and
SeekPreRoll.

Times are in milliseconds (TimestampScale 1 ms, as ffmpeg's muxer writes). A block's time is
relative to its Cluster's as an int16 (RFC 9559 section 10.2): a cluster spans at most
``MAX_CLUSTER_MS``; ``ClusterError`` otherwise.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from foundation.errors import ExcameraError

# Element IDs (RFC 8794 section 11.2; RFC 9559 section 5.1).
EBML, EBML_VERSION, EBML_READ_VERSION, EBML_MAX_ID, EBML_MAX_SIZE = 0x1A45DFA3, 0x4286, 0x42F7, 0x42F2, 0x42F3
DOC_TYPE, DOC_TYPE_VERSION, DOC_TYPE_READ_VERSION = 0x4282, 0x4287, 0x4285
SEGMENT, SEEK_HEAD, SEEK, SEEK_ID, SEEK_POSITION = 0x18538067, 0x114D9B74, 0x4DBB, 0x53AB, 0x53AC
INFO, TIMESTAMP_SCALE, DURATION, MUXING_APP, WRITING_APP = 0x1549A966, 0x2AD7B1, 0x4489, 0x4D80, 0x5741
TRACKS, TRACK_ENTRY, TRACK_NUMBER, TRACK_UID, TRACK_TYPE = 0x1654AE6B, 0xAE, 0xD7, 0x73C5, 0x83
FLAG_LACING, CODEC_ID, CODEC_PRIVATE, CODEC_DELAY, SEEK_PRE_ROLL = 0x9C, 0x86, 0x63A2, 0x56AA, 0x56BB
DEFAULT_DURATION, VIDEO, PIXEL_WIDTH, PIXEL_HEIGHT = 0x23E383, 0xE0, 0xB0, 0xBA
AUDIO, SAMPLING_FREQUENCY, CHANNELS, BIT_DEPTH = 0xE1, 0xB5, 0x9F, 0x6264
CLUSTER, CLUSTER_TIMESTAMP, SIMPLE_BLOCK = 0x1F43B675, 0xE7, 0xA3
CUES, CUE_POINT, CUE_TIME, CUE_TRACK_POSITIONS, CUE_TRACK, CUE_CLUSTER_POSITION = \
    0x1C53BB6B, 0xBB, 0xB3, 0xB7, 0xF7, 0xF1

VIDEO_TRACK, AUDIO_TRACK = 1, 2
#: A SimpleBlock less its frame: ID (1) + 8-byte size + track number vint (1) + int16 time + flags.
BLOCK_OVERHEAD = 1 + 8 + 1 + 2 + 1
#: A Cluster less its blocks: ID (4) + 8-byte size + Timestamp (ID, 1-byte size, 8-byte value).
CLUSTER_HEADER = 4 + 8 + 1 + 1 + 8
#: The longest a block may sit after its Cluster's start (an int16 of milliseconds).
MAX_CLUSTER_MS = 32767
WRITING_APP_NAME = "excamera"


class ClusterError(ExcameraError):
    """A cluster that Matroska cannot hold (a block more than ``MAX_CLUSTER_MS`` from its start)."""


def _vint_size(n: int, width: int | None = None) -> bytes:
    """An EBML data size (RFC 8794 section 6.2): the shortest, or ``width`` bytes."""
    if width is None:
        width = 1
        while n >= (1 << (7 * width)) - 1:   # all ones is reserved ("unknown size")
            width += 1
    if not 1 <= width <= 8 or n >= (1 << (7 * width)) - 1:
        raise ValueError(f"EBML size {n} does not fit {width} bytes")
    return ((1 << (7 * width)) | n).to_bytes(width, "big")


def _id(element: int) -> bytes:
    return element.to_bytes((element.bit_length() + 7) // 8, "big")


def element(eid: int, payload: bytes, width: int | None = None) -> bytes:
    return _id(eid) + _vint_size(len(payload), width) + payload


def uint(eid: int, value: int, width: int | None = None) -> bytes:
    return element(eid, value.to_bytes(width or max(1, (value.bit_length() + 7) // 8), "big"))


def _float(eid: int, value: float) -> bytes:
    return element(eid, struct.pack(">d", value))


def _string(eid: int, value: str) -> bytes:
    return element(eid, value.encode())


@dataclass(frozen=True)
class AudioParams:
    """An audio track's parameters (RFC 9559 section 5.1.4.1.28 ff.): the Matroska ``codec_id``
    (``A_OPUS``, ``A_AAC``, ...), ``private`` (CodecPrivate: Opus's OpusHead, AAC's
    AudioSpecificConfig), the sampling ``rate`` and ``channels``; ``delay_ns`` (CodecDelay) and
    ``preroll_ns`` (SeekPreRoll) for Opus."""

    codec_id: str
    private: bytes
    rate: float
    channels: int
    delay_ns: int = 0
    preroll_ns: int = 0


def _video_entry(width: int, height: int, frame_ns: int) -> bytes:
    body = (uint(TRACK_NUMBER, VIDEO_TRACK) + uint(TRACK_UID, VIDEO_TRACK) + uint(TRACK_TYPE, 1)
            + uint(FLAG_LACING, 0) + _string(CODEC_ID, "V_VP8")
            + (uint(DEFAULT_DURATION, frame_ns) if frame_ns > 0 else b"")
            + element(VIDEO, uint(PIXEL_WIDTH, width) + uint(PIXEL_HEIGHT, height)))
    return element(TRACK_ENTRY, body)


def _audio_entry(a: AudioParams) -> bytes:
    body = (uint(TRACK_NUMBER, AUDIO_TRACK) + uint(TRACK_UID, AUDIO_TRACK) + uint(TRACK_TYPE, 2)
            + uint(FLAG_LACING, 0) + _string(CODEC_ID, a.codec_id)
            + (element(CODEC_PRIVATE, a.private) if a.private else b"")
            + (uint(CODEC_DELAY, a.delay_ns) if a.delay_ns else b"")
            + (uint(SEEK_PRE_ROLL, a.preroll_ns) if a.preroll_ns else b"")
            + element(AUDIO, _float(SAMPLING_FREQUENCY, float(a.rate)) + uint(CHANNELS, a.channels)))
    return element(TRACK_ENTRY, body)


def _ebml_header(doc_type: str) -> bytes:
    # DocTypeVersion 4 / read version 2 as ffmpeg writes: SimpleBlock and CodecDelay need them.
    return element(EBML, uint(EBML_VERSION, 1) + uint(EBML_READ_VERSION, 1) + uint(EBML_MAX_ID, 4)
                   + uint(EBML_MAX_SIZE, 8) + _string(DOC_TYPE, doc_type) + uint(DOC_TYPE_VERSION, 4)
                   + uint(DOC_TYPE_READ_VERSION, 2))


def head(doc_type: str, width: int, height: int, frame_ns: int, duration_ms: float,
         audio: AudioParams | None, clusters_bytes: int, cues_bytes: int) -> tuple[bytes, int]:
    """The file's first piece: the EBML header (DocType ``webm`` or ``matroska``) and the
    Segment's header (its size: everything after it) and its SeekHead (to Info, Tracks and the
    Cues, which follow ``clusters_bytes`` of clusters), Info (TimestampScale 1 ms, Duration) and
    Tracks (VP8 ``width`` x ``height``; ``audio`` if any). Returns (bytes, the Segment's data
    offset in the file: positions are counted from there)."""
    info = element(INFO, uint(TIMESTAMP_SCALE, 1_000_000) + _float(DURATION, float(duration_ms))
                   + _string(MUXING_APP, WRITING_APP_NAME) + _string(WRITING_APP, WRITING_APP_NAME))
    tracks = element(TRACKS, _video_entry(width, height, frame_ns) + (_audio_entry(audio) if audio else b""))

    def seek_head(info_at: int, cues_at: int) -> bytes:
        return element(SEEK_HEAD, b"".join(
            element(SEEK, element(SEEK_ID, _id(eid)) + uint(SEEK_POSITION, at, 8))
            for eid, at in ((INFO, info_at), (TRACKS, info_at + len(info)), (CUES, cues_at))))

    first = len(seek_head(0, 0))          # fixed-width positions: the SeekHead's size is known
    body = seek_head(first, first + len(info) + len(tracks) + clusters_bytes) + info + tracks
    segment = _id(SEGMENT) + _vint_size(len(body) + clusters_bytes + cues_bytes, 8)
    ebml = _ebml_header(doc_type)
    return ebml + segment + body, len(ebml) + len(segment)


def cues_size(points: int) -> int:
    """The Cues' size for ``points`` cue points (every value is written at a fixed width)."""
    return len(cues([(0, 0)] * points)) if points else 0


def cues(points: list[tuple[int, int]]) -> bytes:
    """The Cues (RFC 9559 section 5.1.5): a CuePoint per (time in ms, the Cluster's position
    from the Segment's data) of the video track; nothing for no points."""
    if not points:
        return b""
    return element(CUES, b"".join(
        element(CUE_POINT, uint(CUE_TIME, t, 8) + element(
            CUE_TRACK_POSITIONS, uint(CUE_TRACK, VIDEO_TRACK) + uint(CUE_CLUSTER_POSITION, at, 8)))
        for t, at in points))


def cluster_size(frame_bytes: int, frames: int, audio_sizes=()) -> int:
    """A cluster's size from the bytes and count of its video frames and its audio packets' sizes."""
    return CLUSTER_HEADER + frame_bytes + BLOCK_OVERHEAD * frames + sum(BLOCK_OVERHEAD + n for n in audio_sizes)


def simple_block(track: int, relative_ms: int, key: bool, data: bytes) -> bytes:
    """A SimpleBlock (RFC 9559 section 10.2): the frame, no lacing, key-frame flag as given."""
    if not -32768 <= relative_ms <= MAX_CLUSTER_MS:
        raise ClusterError(f"a block {relative_ms} ms from its cluster's start (Matroska holds "
                           f"{MAX_CLUSTER_MS} ms: use shorter chunks)")
    payload = bytes([0x80 | track]) + struct.pack(">hB", relative_ms, 0x80 if key else 0) + data
    return _id(SIMPLE_BLOCK) + _vint_size(len(payload), 8) + payload


def cluster(time_ms: int, blocks) -> bytes:
    """A Cluster at ``time_ms`` of ``blocks`` (track, time in ms, key, data) in the order given."""
    body = uint(CLUSTER_TIMESTAMP, time_ms, 8) + b"".join(
        simple_block(track, t - time_ms, key, data) for track, t, key, data in blocks)
    return _id(CLUSTER) + _vint_size(len(body), 8) + body


def interleave(video, audio) -> list:
    """Video blocks (track, time, key, data) and audio blocks merged by time, video first at a tie
    (as ``media.audio.mux_in_time_order`` muxes them); each list keeps its own order."""
    tagged = [(b[1], 0, i, b) for i, b in enumerate(video)] + [(b[1], 1, i, b) for i, b in enumerate(audio)]
    tagged.sort(key=lambda x: x[:3])
    return [x[3] for x in tagged]


def ms(pts: int, rate: tuple[int, int]) -> int:
    """Frame ``pts`` (frames at ``rate`` frames a second) in milliseconds, rounded to nearest."""
    num, den = rate
    return (2 * 1000 * den * pts + num) // (2 * num)
