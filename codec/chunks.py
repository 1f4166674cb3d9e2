"""ExCamera's chunk operations: entry-state digests in IVF headers, terminate-chunk and stitch.

A *chunk* is an IVF file of a few VP8 frames that one worker made. It is coded against some
decoder state (the previous chunk's exit state, or the empty state when it starts with a key
frame), and it records which: IVF header bytes 28-31 (``IvfHeader.user``) hold the first 4 bytes
of that state's ``DecoderState.digest()``, and all zeros mean "starts with a key frame from the
empty state" (``entry_digest_bytes``, ``write_chunk``).

``terminate_chunk`` rewrites a chunk's last shown frame so that it refreshes all three references
(RFC 6386 section 9.7): the chunk then exits with last = golden = altref, a state the next worker
can code against without knowing which of the chunk's pictures sat in which reference.

``stitch`` decodes chunks in order, checks that each one's recorded entry digest is the state the
chunks before it really leave, and returns the frames of the one stream they make. It refuses an
inconsistent stream rather than writing one that decodes to the wrong pictures.
``stitch_linked`` reaches the same verdict without decoding where the worker that made each chunk
also recorded what it knew (``ChunkLink``): that worker decoded its chunk to learn the state it
leaves, so decoding the stream again to check the chain would do that work twice. Where any link
is missing or does not fit its chunk, it answers None and the caller decodes.

Errors are ``codec.errors`` exceptions whose message names the chunk file and, where there is one,
the frame (``<path>: frame <i> (offset <o>): <what>``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .bitstream import ParsedFrame, parse_frame, write_frame
from .decoder import decode_frame
from .errors import ContainerError, CorruptFrameError, StateError, UnsupportedError, VP8Error
from .header import FrameTag
from .ivf import IvfHeader, IvfWriter, read_ivf
from .state import DecoderState

#: ``IvfHeader.user`` of a chunk that starts with a key frame from the empty state.
NO_ENTRY_STATE = bytes(4)


def entry_digest_bytes(state: DecoderState | None) -> bytes:
    """The 4 bytes a chunk coded against ``state`` records in its IVF header: the start of
    ``bytes.fromhex(state.digest())``, or ``NO_ENTRY_STATE`` for None or the empty state (no key
    frame decoded yet)."""
    if state is None or not state.has_keyframe:
        return NO_ENTRY_STATE
    return bytes.fromhex(state.digest())[:4]


def digest_text(user: bytes) -> str:
    """An entry digest as people read it: 8 hex digits, or ``the empty state``."""
    return "the empty state" if user == NO_ENTRY_STATE else user.hex()


def frame_tag(data: bytes) -> FrameTag:
    """Section 9.1: the frame tag (and key-frame size) of one compressed frame."""
    return FrameTag.read(np.frombuffer(data, np.uint8))


@dataclass(frozen=True)
class Chunk:
    """A chunk file as read: its IVF header, frames and the file offset of each frame record."""

    path: str
    header: IvfHeader
    frames: list
    offsets: list

    @property
    def entry_digest(self) -> bytes:
        return self.header.user

    def where(self, index: int) -> str:
        return f"{self.path}: frame {index} (offset {self.offsets[index]})"


def read_chunk(path: str | os.PathLike) -> Chunk:
    """Read a chunk file; ``ContainerError`` (prefixed with the path) for a bad or empty IVF."""
    path = os.fspath(path)
    try:
        header, records = read_ivf(path)
    except VP8Error as e:
        raise type(e)(f"{path}: {e}") from None
    if not records:
        raise ContainerError(f"{path}: the chunk holds no frames")
    return Chunk(path, header, [r.data for r in records], [r.offset for r in records])


def write_chunk(path: str | os.PathLike, header_fields: dict, frames: list[bytes],
                entry_state: DecoderState | None) -> IvfHeader:
    """Write ``frames`` as a chunk IVF coded against ``entry_state`` (None: the empty state).

    ``header_fields`` are ``IvfHeader`` fields (``rate``, ``scale``, ``width``, ``height``...);
    ``user`` is set to ``entry_digest_bytes(entry_state)`` and ``frame_count`` to the frames
    written. Width and height default to the first key frame's size, else the entry state's.
    The file is written under a temporary name and renamed when complete. Returns the header.
    Raises ``ValueError`` for an empty chunk, or one that starts from the empty state with an
    interframe (nothing could decode it)."""
    if not frames:
        raise ValueError("a chunk needs at least one frame")
    if "user" in header_fields or "frame_count" in header_fields:
        raise ValueError("write_chunk sets the header's user and frame_count fields itself")
    user = entry_digest_bytes(entry_state)
    first = frame_tag(frames[0])
    if user == NO_ENTRY_STATE and not first.key_frame:
        raise ValueError("a chunk coded against the empty state must start with a key frame")
    fields = dict(header_fields)
    if "width" not in fields and "height" not in fields:
        key = next((t for t in map(frame_tag, frames) if t.key_frame), None)
        size = (key.width, key.height) if key else (entry_state.width, entry_state.height)
        fields["width"], fields["height"] = size
    header = IvfHeader(**fields, user=user)
    with IvfWriter(path, header) as writer:
        for data in frames:
            writer.write(data)
    return dataclasses.replace(header, frame_count=len(frames))


def _frame_error(exc: VP8Error, where: str) -> VP8Error:
    return type(exc)(f"{where}: {exc}")


def terminate_chunk(state_in: DecoderState | None, frames: list[bytes], *,
                    where: Callable[[int], str] | None = None,
                    states: list[DecoderState] | None = None) -> tuple[list[bytes], DecoderState]:
    """Make the chunk exit with one picture in all three references (section 9.7).

    The last *shown* frame is rewritten to refresh last, golden and altref, with no copies
    (``References.refresh_* = True``, ``copy_to_* = 0``): parsed against the state before it
    (``bitstream.parse_frame``), its header changed, coded again (``bitstream.write_frame``). A
    frame's refresh flags only say where its picture goes afterwards, so it decodes to the same
    picture and every shown picture of the chunk is unchanged. A frame that already does so (a key
    frame, say) is kept byte for byte.

    Hidden frames after the last shown frame are dropped: they show nothing in this chunk and only
    prepare references for frames after it, which the rewritten frame replaces anyway. A chunk
    that shows no frame at all is refused (``CorruptFrameError``).

    Returns the new frame list and the decoder state after it (``last is golden is altref``).
    ``state_in`` is the state the chunk is coded against (None: the empty state). Errors name the
    frame as ``where(i)`` does (default ``frame <i>``). A ``states`` list gets the decoder state
    before each returned frame appended (the chunk is decoded once here; callers that need its
    states need not decode it again)."""
    if not frames:
        raise ValueError("terminate_chunk: the chunk holds no frames")
    state = state_in if state_in is not None else DecoderState()
    where = where or (lambda i: f"frame {i}")
    tags = []
    for i, data in enumerate(frames):
        try:
            tags.append(frame_tag(data))
        except VP8Error as e:
            raise _frame_error(e, where(i)) from None
    shown = [i for i, t in enumerate(tags) if t.show_frame]
    if not shown:
        raise CorruptFrameError(f"the chunk's {len(frames)} frames are all hidden: no shown frame "
                                "to terminate it with")
    last = shown[-1]
    before = states if states is not None else []
    for i in range(last):
        before.append(state)
        try:
            state = decode_frame(state, frames[i])[0]
        except VP8Error as e:
            raise _frame_error(e, where(i)) from None
    before.append(state)
    try:
        new = _refresh_all(state, frames[last])
        exit_state = decode_frame(state, new)[0]
    except VP8Error as e:
        raise _frame_error(e, where(last)) from None
    return list(frames[:last]) + [new], exit_state


def _refresh_all(state: DecoderState, data: bytes) -> bytes:
    """``data`` coded again against ``state`` with every reference refreshed by its picture."""
    parsed = parse_frame(state, data)
    hdr = parsed.header
    if hdr.tag.key_frame:
        return data  # a key frame refreshes all three (section 9.7)
    refs = dataclasses.replace(hdr.refs, refresh_last=True, refresh_golden=True, refresh_altref=True,
                               copy_to_golden=0, copy_to_altref=0)
    if refs == hdr.refs:
        return data
    frame = ParsedFrame(dataclasses.replace(hdr, refs=refs), parsed.modes, parsed.segment_map,
                        parsed.coeffs, parsed.eobs)
    try:
        return write_frame(state, frame)
    except ValueError as e:  # the frame parsed but cannot be coded again as it stands
        raise UnsupportedError(f"cannot write the frame again with new reference flags: {e}") from None


# -- stitch ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Stitched:
    """The stream ``stitch_chunks`` makes: frames in decode order with their presentation times
    (in frames, ``1 / frame rate``), the size of the first key frame, the first chunk's rate and
    scale (IVF header fields: rate / scale frames per second), and the final decoder state."""

    frames: list
    pts: list
    width: int
    height: int
    rate: int
    scale: int
    key_frames: list        # True where the frame is a key frame
    shown: list             # True where the frame is shown (show_frame)
    state: DecoderState | None  # the final decoder state (None from ``stitch_linked``)
    digest: str = ""        # its ``DecoderState.digest()``

    def ivf_header(self) -> IvfHeader:
        return IvfHeader(width=self.width, height=self.height, rate=self.rate, scale=self.scale,
                         frame_count=len(self.frames))


def check_entry(chunk: Chunk, state: DecoderState, index: int = 0) -> None:
    """Raise ``StateError`` unless ``chunk`` may start where ``state`` leaves off.

    A chunk recording a digest must record ``entry_digest_bytes(state)``. A chunk recording
    ``NO_ENTRY_STATE`` must start with a key frame, which may follow any state: a key frame resets
    everything it depends on (probabilities, segmentation and its map, loop-filter deltas; RFC
    6386 sections 9.3, 9.6, 9.11) and replaces all three references."""
    recorded = chunk.entry_digest
    actual = entry_digest_bytes(state)
    name = f"{chunk.path}: chunk {index}"
    if recorded != NO_ENTRY_STATE:
        if recorded != actual:
            raise StateError(f"{name} expects to start from decoder state {recorded.hex()} but the "
                             f"state before it is {digest_text(actual)}")
        return
    try:
        tag = frame_tag(chunk.frames[0])
    except VP8Error as e:
        raise _frame_error(e, chunk.where(0)) from None
    if not tag.key_frame:
        raise StateError(f"{name} records no entry state (digest 00000000) but starts with an "
                         f"interframe, which depends on one")


def presentation_times(tags: list[FrameTag]) -> list[int]:
    """Each frame's pts in frames: the number of shown frames before it. A shown frame gets its
    own position; a hidden frame (an altref) that of the shown frame after it, as libvpx stamps
    it (previous shown frame + 1) and as ffmpeg muxes it."""
    pts, shown = [], 0
    for t in tags:
        pts.append(shown)
        shown += bool(t.show_frame)
    return pts


def stitch_chunks(chunks: list[str | os.PathLike]) -> Stitched:
    """Decode ``chunks`` in order from the empty state, checking each one's entry digest against
    the real state before it (``check_entry``), and return the stream they make.

    Raises ``ValueError`` for an empty list, ``StateError`` for chunks that do not chain,
    ``ContainerError`` / ``CorruptFrameError`` (with path and frame) for a damaged chunk or
    chunks of different frame rates."""
    if not chunks:
        raise ValueError("no chunks to stitch")
    state = DecoderState()
    frames, tags = [], []
    first: Chunk | None = None
    for index, path in enumerate(chunks):
        chunk = read_chunk(path)
        if first is None:
            first = chunk
        elif chunk.header.frame_rate != first.header.frame_rate:
            raise ContainerError(f"{chunk.path}: chunk {index} has a frame rate of "
                                 f"{'/'.join(map(str, chunk.header.frame_rate))} but the first chunk "
                                 f"has {'/'.join(map(str, first.header.frame_rate))}")
        check_entry(chunk, state, index)
        for i, data in enumerate(chunk.frames):
            try:
                tag = frame_tag(data)
                state = decode_frame(state, data)[0]
            except VP8Error as e:
                raise _frame_error(e, chunk.where(i)) from None
            frames.append(data)
            tags.append(tag)
    key = next(t for t in tags if t.key_frame)  # the first chunk starts with one (check_entry)
    rate, scale = first.header.frame_rate
    return Stitched(frames, presentation_times(tags), key.width, key.height, rate, scale,
                    [t.key_frame for t in tags], [t.show_frame for t in tags], state, state.digest())


@dataclass(frozen=True)
class ChunkLink:
    """What the worker that made a chunk recorded beside it: the SHA-256 of the chunk file's bytes
    (hex), and the full ``DecoderState.digest()`` of the state it was coded against ("" for the
    empty state: it starts with a key frame) and of the state decoding it from there leaves."""

    sha256: str
    entry: str
    exit: str
    # The chunk file's size, frames and shown frames (-1: not recorded), so that a join can lay
    # the chunks out from links alone (``worker.assemble_ops``).
    size: int = -1
    frames: int = -1
    shown: int = -1

    def to_bytes(self) -> bytes:
        d = {"sha256": self.sha256, "entry": self.entry, "exit": self.exit}
        d.update({k: v for k, v in (("size", self.size), ("frames", self.frames), ("shown", self.shown)) if v >= 0})
        return json.dumps(d).encode()

    @staticmethod
    def from_bytes(data: bytes) -> ChunkLink | None:
        """The link in ``data``, or None where it is not one."""
        try:
            d = json.loads(data)
            link = ChunkLink(d["sha256"], d["entry"], d["exit"], d.get("size", -1), d.get("frames", -1),
                             d.get("shown", -1))
        except (ValueError, KeyError, TypeError, AttributeError):
            return None
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (link.size, link.frames, link.shown)):
            return None
        return link if all(isinstance(v, str) for v in (link.sha256, link.entry, link.exit)) else None


def stitch_linked(chunks: list[str | os.PathLike], links: list[ChunkLink | None]) -> Stitched | None:
    """``stitch_chunks``' stream, proved from the chunks' links instead of by decoding: each chunk
    file's bytes must hash to its link's ``sha256``; its header's entry digest must be the start
    of its link's ``entry``; a chunk whose entry is the empty state must start with a key frame,
    and any other's ``entry`` must equal the previous chunk's ``exit`` in full (the first chunk's
    must be empty); every frame tag must parse. Only frame tags are read.

    None where that cannot be proved (a link missing, or one that does not fit): the caller then
    decodes (``stitch_chunks``), which finds what is wrong or that nothing is. Raises what
    ``stitch_chunks`` raises for an empty list, a damaged file or mixed frame rates."""
    if not chunks:
        raise ValueError("no chunks to stitch")
    if len(links) != len(chunks) or any(link is None for link in links):
        return None
    frames, tags = [], []
    first: Chunk | None = None
    previous_exit = None
    for index, (path, link) in enumerate(zip(chunks, links)):
        with open(path, "rb") as f:
            if hashlib.sha256(f.read()).hexdigest() != link.sha256:
                return None
        chunk = read_chunk(path)
        if first is None:
            first = chunk
        elif chunk.header.frame_rate != first.header.frame_rate:
            return None
        recorded = chunk.entry_digest
        if link.entry:
            if index == 0 or link.entry != previous_exit or link.entry[:8] != recorded.hex():
                return None
        elif recorded != NO_ENTRY_STATE:
            return None
        try:
            chunk_tags = [frame_tag(data) for data in chunk.frames]
        except VP8Error:
            return None
        if not link.entry and not chunk_tags[0].key_frame:
            return None
        frames += chunk.frames
        tags += chunk_tags
        previous_exit = link.exit
    key = tags[0]
    rate, scale = first.header.frame_rate
    return Stitched(frames, presentation_times(tags), key.width, key.height, rate, scale,
                    [t.key_frame for t in tags], [t.show_frame for t in tags], None, previous_exit)


def stitch(chunks: list[str | os.PathLike]) -> list[bytes]:
    """The frames of the stream ``chunks`` make, in decode order (see ``stitch_chunks``)."""
    return stitch_chunks(chunks).frames


def write_stitched_ivf(path: str | os.PathLike, stitched: Stitched) -> None:
    """Write a stitched stream as IVF (pts in frames; written under a temporary name)."""
    with IvfWriter(path, stitched.ivf_header()) as writer:
        for data, pts in zip(stitched.frames, stitched.pts):
            writer.write(data, pts)

