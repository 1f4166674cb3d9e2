"""The real ExCamera codec operations, registered for workers (``coordinator.excamera_job``).

Each runs one step of ``media.excamera_encode`` for one chunk, over the job's storage and the task
attempt's scratch space (NSDI 2017, section 4; the same steps, in the same order, as
``encode_frames`` runs them in one process, so the output is byte-identical):

* ``vp8-first-pass``: read the chunk's raw frames (a Y4M object), encode them from the empty
  state (libvpx or the native encoder) and terminate the chunk (``codec.chunks.terminate_chunk``);
  the chunk IVF goes to storage and to scratch ``pass``.
* ``vp8-dump-state``: the first pass's exit state, ``DecoderState.to_bytes`` (compressed), into
  scratch ``fp_state`` and storage; the built-in ``send-state`` hands it to the next chunk.
* ``vp8-encode-given-state``: once the previous chunk's first-pass state has arrived (scratch
  ``given_state``, by ``receive-state``), the chunk's first raw frame coded as an interframe
  against it, into scratch ``given_frame`` and, given ``output``, storage (the batch's rebase
  task reads it there). A chunk that begins a batch keeps its key frame.
* ``vp8-rebase-batch``: the serial step for a whole batch, in one worker, after its chunk
  workers are gone: each chunk in turn coded again onto the state the chunk before it really
  left (its raw frames, first pass, given-state frame and the previous chunk's first-pass state
  read from storage and checked against the digests the coordinator accepted), stored with its
  link exactly as ``vp8-rebase`` and ``vp8-upload-chunk`` store one chunk (those two run the step
  a chunk at a time, as ``bench/plan_bench.py`` measures it).
* ``vp8-rebase``: once the state the previous chunk really left has arrived (scratch
  ``state_in``), the chunk coded again onto it; the chunk IVF (recording its entry-state digest)
  into scratch ``output``, its exit state into scratch ``final``.
* ``vp8-upload-chunk``: the chunk IVF to storage, and beside it its link (``codec.chunks.ChunkLink``:
  its hash and the full digests of the states it enters and leaves, known from the rebase, which
  decoded it).
* ``vp8-stitch``: the chunks joined into one IVF object once their chain is proved: from the links
  (``codec.chunks.stitch_linked``, no decoding), else by decoding them in order and checking every
  recorded entry digest against the real decoder state (``codec.chunks.stitch_chunks``); and the
  frame count checked against the job's.

The first pass is decoded once in its chunk task, where it is made
(``media.excamera_encode.FirstPass``): the dump and the encode-given-state of the same attempt
(and ``vp8-rebase`` where it runs in the same process) take its states from a per-process memo
keyed by the chunk's bytes (``_decoded_pass``), and decode it again only when the memo lost it (a re-issued attempt that
reused a stored first pass, or one evicted to bound memory). The batch rebase, in another worker,
decodes each chunk's first pass once more (N frames decoded per chunk on the serial path).

Importing this module registers the operations and imports no codec module: each operation
imports what it needs when it runs, so a worker that never runs one pays nothing for it.
"""

from __future__ import annotations

import collections
import hashlib
import io
import os
import struct
import tempfile
import threading

from storage import ObjectRef, StorageError
from worker.ops import OpContext, OperationError, _scratch, get_verified, operation

_FRAME_RECORD = struct.Struct("<IQ")


def _settings(**fields):
    from media.excamera_encode import EncodeSettings
    try:
        return EncodeSettings(**fields)
    except ValueError as e:
        raise OperationError(str(e)) from None


def _raw(ctx: OpContext, key: str, verified: list[str] = ()):
    """The chunk's raw frames and frame rate from a Y4M object (checked against ``verified``,
    ``worker.ops.get_verified``)."""
    from codec.y4m import Y4mReader
    # Read (and checked) once an attempt: the first pass and encode-given-state read the same
    # chunk, and a second fetch would add its transfer to the chunk's time.
    data = ctx.scratch.get(f"raw:{key}")
    if data is None:
        data = ctx.scratch[f"raw:{key}"] = get_verified(ctx, key, verified)
    with Y4mReader(io.BytesIO(data)) as reader:
        frames = list(reader)
        rate = reader.header.rate
    if not frames:
        raise OperationError(f"{key}: the raw chunk holds no frames")
    return frames, rate


def ivf_bytes(frames: list[bytes], width: int, height: int, rate: tuple[int, int],
              user: bytes = bytes(4)) -> bytes:
    """An IVF file in memory (pts = frame index), as ``codec.ivf.IvfWriter`` writes it."""
    from codec.ivf import IvfHeader
    header = IvfHeader(width=width, height=height, rate=rate[0], scale=rate[1],
                       frame_count=len(frames), user=user)
    return header.to_bytes() + b"".join(_FRAME_RECORD.pack(len(d), i) + d for i, d in enumerate(frames))


def ivf_frames(data: bytes, where: str) -> list[bytes]:
    from codec.ivf import read_ivf
    try:
        _, records = read_ivf(io.BytesIO(data))
    except ValueError as e:
        raise OperationError(f"{where}: {e}") from None
    return [r.data for r in records]


#: Bytes of decoded pictures the first-pass memo may hold per worker process (``_decoded_pass``).
PASS_MEMO_BYTES = 384 << 20
_pass_memo: collections.OrderedDict[bytes, tuple] = collections.OrderedDict()
_pass_memo_lock = threading.Lock()


def _pass_size(fp) -> int:
    """Bytes of the distinct pictures a ``FirstPass``'s states hold."""
    pictures = {id(p): p for st in (*fp.states, fp.exit) for p in (st.last, st.golden, st.altref) if p is not None}
    return sum(p.y.nbytes + p.u.nbytes + p.v.nbytes for p in pictures.values())


def _remember_pass(ivf: bytes, fp) -> None:
    """Keep ``fp`` (``media.excamera_encode.FirstPass``) for the later steps of the attempt whose scratch
    ``pass`` is ``ivf``: the state dump, encode-given-state and rebase then use its states instead
    of decoding the chunk again. Keyed by the IVF's bytes, so a value can only be found by the
    chunk it was decoded from; the oldest entries go when the memo holds over ``PASS_MEMO_BYTES``
    (an entry lost is decoded again, same result)."""
    size = _pass_size(fp)
    with _pass_memo_lock:
        _pass_memo[ivf] = (fp, size)
        total = sum(n for _, n in _pass_memo.values())
        while total > PASS_MEMO_BYTES and len(_pass_memo) > 1:
            _, (_, n) = _pass_memo.popitem(last=False)
            total -= n


def _decoded_pass(ctx: OpContext, *, forget: bool = False):
    """The attempt's first pass (scratch ``pass``) as an ``media.excamera_encode.FirstPass``: from the
    memo when this process made or decoded it, else decoded now (and remembered unless
    ``forget``: the rebase is its last use)."""
    from media.excamera_encode import FirstPass
    ivf = _scratch(ctx, "pass")
    with _pass_memo_lock:
        entry = _pass_memo.pop(ivf, None) if forget else _pass_memo.get(ivf)
    if entry is not None:
        return entry[0]
    try:
        fp = FirstPass.decode(ivf_frames(ivf, "first pass"))
    except ValueError as e:
        raise OperationError(f"task {ctx.task_id}: first pass: {e}") from None
    if not forget:
        _remember_pass(ivf, fp)
    return fp


def _state(ctx: OpContext, slot: str):
    from codec.state import DecoderState
    try:
        return DecoderState.from_bytes(_scratch(ctx, slot))
    except ValueError as e:
        raise OperationError(f"task {ctx.task_id}: scratch {slot}: {e}") from None


@operation("vp8-first-pass")
def op_first_pass(ctx: OpContext, *, raw: str, output: str, first_pass: str = "libvpx",
                  cq_level: int = 20, speed: int = 1, verified: list[str] = ()) -> dict:
    """Step 1: encode the raw chunk ``raw`` from the empty state and terminate it; the chunk IVF
    to storage ``output`` and scratch ``pass``.

    A re-issued attempt (the first one's worker was lost after this step) takes the first pass
    already in ``output`` instead of encoding again: what it hands on must equal what the lost
    attempt handed on, and libvpx's output is not always the same from run to run (see README,
    "Known problems"). Objects are renamed into place whole, so one that exists is complete."""
    from media.excamera_encode import first_pass_chunk
    settings = _settings(cq_level=cq_level, first_pass=first_pass, speed=speed)
    frames, rate = _raw(ctx, raw, verified)
    if ctx.attempt > 1 and ctx.storage.exists(output):
        ivf = ctx.storage.get(output)
        data = ivf_frames(ivf, output)
        if len(data) == len(frames):  # (no hidden frames in a first pass; else encode again)
            ctx.scratch["pass"] = ivf
            return {"object": ObjectRef(output, hashlib.sha256(ivf).hexdigest(), len(ivf)), "frames": len(data),
                    "reused": True}
    try:
        fp = first_pass_chunk(frames, settings, rate)
    except ValueError as e:
        raise OperationError(f"{raw}: first pass: {e}") from None
    h, w = frames[0].y.shape
    ivf = ivf_bytes(fp.frames, w, h, rate)
    ctx.scratch["pass"] = ivf
    _remember_pass(ivf, fp)
    return {"object": ctx.storage.put(output, ivf), "frames": len(fp.frames), "reused": False}


@operation("vp8-dump-state")
def op_dump_state(ctx: OpContext, *, output: str) -> dict:
    """The decoder state after the first pass (from the empty state), compressed, into scratch
    ``fp_state`` and storage ``output``."""
    state = _decoded_pass(ctx).exit
    data = state.to_bytes()
    digest = state.digest()
    ctx.scratch["fp_state"] = data
    ctx.scratch["fp_digest"] = digest.encode()
    return {"object": ctx.storage.put(output, data), "digest": digest}


@operation("vp8-encode-given-state")
def op_encode_given_state(ctx: OpContext, *, raw: str, speed: int = 1, kf_q_weight: float = 0.75,
                          verified: list[str] = (), output: str = "", last: bool = False) -> dict:
    """Step 2: the chunk's first raw frame as an interframe against the previous chunk's
    first-pass exit state (scratch ``given_state``), into scratch ``given_frame`` and, given
    ``output``, storage. With no given state (an empty one: the chunk begins its batch) there is
    nothing to do. ``last``: the attempt's last use of its first pass (the rebase runs
    elsewhere), so its memo entry goes."""
    from media.excamera_encode import given_state_frame
    if not _scratch(ctx, "given_state"):
        ctx.scratch["given_frame"] = b""
        if last:
            with _pass_memo_lock:
                _pass_memo.pop(_scratch(ctx, "pass"), None)
        return {"encoded": False}
    settings = _settings(speed=speed, kf_q_weight=kf_q_weight)
    given = _state(ctx, "given_state")
    frames, _ = _raw(ctx, raw, verified)
    fp = _decoded_pass(ctx, forget=last)
    try:
        data = given_state_frame(given, frames[0], fp.frames, settings, fp.states)
    except ValueError as e:
        raise OperationError(f"{raw}: encode-given-state: {e}") from None
    ctx.scratch["given_frame"] = data
    if output:
        return {"encoded": True, "size": len(data), "object": ctx.storage.put(output, data)}
    return {"encoded": True, "size": len(data)}


def _rebased(state_in, given, given_frame: bytes, frames: list, fp, rate, where: str, onto=None):
    """One chunk coded onto ``state_in`` (``media.excamera_encode.rebase_chunk``): its IVF
    (recording its entry-state digest), the state it leaves, and the digests of both (for its
    link). ``onto``: tests only, the state to code onto instead (a broken rebase)."""
    from codec.chunks import entry_digest_bytes
    from media.excamera_encode import rebase_chunk
    if not given_frame:
        raise OperationError(f"{where}: a state to rebase onto but no given-state frame")
    state_in = state_in if onto is None else onto(state_in, given)
    try:
        out, final = rebase_chunk(state_in, given, given_frame, frames, fp.frames, fp.states)
    except ValueError as e:
        raise OperationError(f"{where}: rebase: {e}") from None
    h, w = frames[0].y.shape
    ivf = ivf_bytes(out, w, h, rate, entry_digest_bytes(state_in))
    return ivf, final, f"{state_in.digest()} {final.digest()}".encode()


def _store_chunk(ctx: OpContext, key: str, link: str, data: bytes, states: bytes) -> ObjectRef:
    """The rebased chunk IVF to ``key`` and beside it at ``link`` what the rebase knows of it
    (``codec.chunks.ChunkLink``; ``states``: "ENTRY EXIT" digests, ENTRY empty for a chunk that
    begins its batch)."""
    from codec.chunks import ChunkLink, frame_tag
    entry, _, exit_ = states.decode().partition(" ")
    frames = ivf_frames(data, key)
    shown = sum(frame_tag(d).show_frame for d in frames)  # (the rebase decoded them: tags parse)
    ref = ctx.storage.put(key, data)
    ctx.storage.put(link, ChunkLink(hashlib.sha256(data).hexdigest(), entry, exit_, len(data), len(frames),
                                    shown).to_bytes())
    return ref


@operation("vp8-rebase")
def op_rebase(ctx: OpContext, *, raw: str, verified: list[str] = ()) -> dict:
    """Step 3 for one chunk: coded onto the state the previous chunk really left (scratch
    ``state_in``; empty when the chunk begins its batch, which keeps its first pass). The chunk
    IVF, recording its entry-state digest, into scratch ``output``; its exit state into scratch
    ``final``."""
    frames, rate = _raw(ctx, raw, verified)
    if not _scratch(ctx, "state_in"):
        if _scratch(ctx, "given_frame"):
            raise OperationError(f"task {ctx.task_id}: a given-state frame but no state to rebase onto")
        with _pass_memo_lock:
            _pass_memo.pop(_scratch(ctx, "pass"), None)
        ctx.scratch["output"] = _scratch(ctx, "pass")
        ctx.scratch["final"] = _scratch(ctx, "fp_state")
        ctx.scratch["states"] = b" " + _scratch(ctx, "fp_digest")
        return {"rebased": False, "frames": len(ivf_frames(ctx.scratch["output"], "first pass"))}
    fp = _decoded_pass(ctx, forget=True)
    ivf, final, states = _rebased(_state(ctx, "state_in"), _state(ctx, "given_state"), _scratch(ctx, "given_frame"),
                                  frames, fp, rate, f"task {ctx.task_id}")
    ctx.scratch["output"] = ivf
    ctx.scratch["final"] = final.to_bytes()
    ctx.scratch["states"] = states
    return {"rebased": True, "frames": len(ivf_frames(ivf, "rebased chunk")), "digest": final.digest()}


@operation("vp8-upload-chunk")
def op_upload_chunk(ctx: OpContext, *, key: str, link: str) -> dict:
    """The rebased chunk (scratch ``output``) to storage ``key``, and beside it at ``link`` its
    ``codec.chunks.ChunkLink`` (from scratch ``states``), which lets the stitch check the chain
    without decoding the stream again."""
    return {"object": _store_chunk(ctx, key, link, _scratch(ctx, "output"), _scratch(ctx, "states"))}


#: Chunks whose inputs a batch rebase fetches ahead of the one it codes (storage reads overlap the
#: serial coding; each 1080p chunk's raw frames are about 19 MB, so only a few are held).
REBASE_PREFETCH = 2


def rebase_batch(ctx: OpContext, *, raws: list[str], passes: list[str], states: list[str], givens: list[str],
                 outs: list[str], links: list[str], verified: list[str], raw_checked: bool, onto=None) -> dict:
    """``vp8-rebase-batch`` (``onto``: tests only, see ``_rebased``)."""
    from concurrent.futures import ThreadPoolExecutor

    from codec.state import DecoderState
    from codec.y4m import Y4mReader
    from media.excamera_encode import FirstPass

    n = len(passes)
    if not n or any(len(v) != n for v in (raws, states, givens, outs, links)):
        raise OperationError(f"vp8-rebase-batch: lists of unequal lengths or empty ({len(raws)} raws, {n} passes, "
                             f"{len(states)} states, {len(givens)} givens, {len(outs)} outs, {len(links)} links)")

    def fetch(j: int) -> tuple:
        """Chunk ``j``'s stored inputs, each checked against what the coordinator accepted."""
        ivf = get_verified(ctx, passes[j], verified)
        if j == 0:   # begins the batch: keeps its first pass and hands on its first-pass state
            return ivf, get_verified(ctx, states[0], verified), None, None
        raw = get_verified(ctx, raws[j], verified if raw_checked else [])
        return ivf, get_verified(ctx, states[j - 1], verified), get_verified(ctx, givens[j], verified), raw

    def state(data: bytes, key: str) -> DecoderState:
        try:
            return DecoderState.from_bytes(data)
        except ValueError as e:
            raise OperationError(f"{key}: {e}") from None

    out: dict = {}
    final = None
    with ThreadPoolExecutor(max_workers=REBASE_PREFETCH, thread_name_prefix="rebase-fetch") as pool:
        ahead = [pool.submit(fetch, j) for j in range(min(n, REBASE_PREFETCH + 1))]
        for j in range(n):
            ivf, state_bytes, given_frame, raw = ahead[j].result()
            ahead[j] = None
            if j + REBASE_PREFETCH + 1 < n:
                ahead.append(pool.submit(fetch, j + REBASE_PREFETCH + 1))
            if j == 0:
                final = state(state_bytes, states[0])
                data, line = ivf, f" {final.digest()}".encode()
            else:
                with Y4mReader(io.BytesIO(raw)) as reader:
                    frames, rate = list(reader), reader.header.rate
                if not frames:
                    raise OperationError(f"{raws[j]}: the raw chunk holds no frames")
                try:
                    fp = FirstPass.decode(ivf_frames(ivf, passes[j]))
                except ValueError as e:
                    raise OperationError(f"{passes[j]}: {e}") from None
                data, final, line = _rebased(final, state(state_bytes, states[j - 1]), given_frame, frames, fp,
                                             rate, raws[j], onto)
            out[f"chunk-{j:05d}"] = _store_chunk(ctx, outs[j], links[j], data, line)
    out["digest"] = final.digest()
    return out


@operation("vp8-rebase-batch")
def op_rebase_batch(ctx: OpContext, *, raws: list[str], passes: list[str], states: list[str], givens: list[str],
                    outs: list[str], links: list[str], verified: list[str], raw_checked: bool = False) -> dict:
    """Step 3 for a batch, in series in this worker: its first chunk keeps its first pass
    (``passes[0]``) and hands on its first-pass state (``states[0]``); each later chunk ``j`` is
    coded onto the state chunk ``j - 1`` really left, from its raw frames ``raws[j]``, its first
    pass, its given-state frame ``givens[j]`` and the state it was coded against,
    ``states[j - 1]``. Each chunk and its link go to ``outs[j]`` and ``links[j]``, as
    ``vp8-rebase`` then ``vp8-upload-chunk`` store them. Every object read is checked against
    ``verified`` (``worker.ops.get_verified``), the raw chunks only when ``raw_checked`` (the
    job's decode tasks wrote them; a client's own uploads have no accepted digest)."""
    return rebase_batch(ctx, raws=raws, passes=passes, states=states, givens=givens, outs=outs, links=links,
                        verified=verified, raw_checked=raw_checked)


def _link(ctx: OpContext, key: str):
    """The chunk link stored at ``key``, or None where there is none (one read, no existence check
    first: on S3 that would be a second request per chunk)."""
    from codec.chunks import ChunkLink
    try:
        return ChunkLink.from_bytes(ctx.storage.get(key))
    except StorageError:
        return None


@operation("vp8-stitch")
def op_stitch(ctx: OpContext, *, chunks: list[str], output: str, frames: int,
              links: list[str] = (), verified: list[str] = ()) -> dict:
    """Join the chunk objects ``chunks`` into one IVF at ``output``: each chunk's recorded entry
    digest must be the state the chunks before it leave, and the stream must show ``frames``
    pictures. Nothing is written otherwise.

    With ``links`` (one object per chunk, ``vp8-upload-chunk``'s) the chain is proved from them
    (``codec.chunks.stitch_linked``), reading frame tags only; where a link is missing or does not
    fit its chunk, the stream is decoded to check it (``stitch_chunks``)."""
    from codec.chunks import stitch_chunks, stitch_linked
    if not chunks:
        raise OperationError("vp8-stitch: no chunks")
    if links and len(links) != len(chunks):
        raise OperationError(f"vp8-stitch: {len(links)} links for {len(chunks)} chunks")
    with tempfile.TemporaryDirectory(prefix="excamera-stitch-") as tmp:
        paths = []
        for i, key in enumerate(chunks):
            path = os.path.join(tmp, f"{i:06d}-{os.path.basename(key)}")
            with open(path, "wb") as f:
                f.write(get_verified(ctx, key, verified))
            paths.append(path)
        found = [_link(ctx, k) for k in links]
        try:
            stitched = (stitch_linked(paths, found) if links else None) or stitch_chunks(paths)
        except ValueError as e:
            raise OperationError(f"vp8-stitch: {str(e).replace(tmp + os.sep, '')}") from None
    shown = sum(stitched.shown)
    if shown != frames:
        raise OperationError(f"vp8-stitch: the chunks show {shown} frames, the input has {frames}")
    data = ivf_bytes(stitched.frames, stitched.width, stitched.height, (stitched.rate, stitched.scale))
    ref: ObjectRef = ctx.storage.put(output, data)
    return {"object": ref, "frames": len(stitched.frames), "digest": stitched.digest,
            "decoded": stitched.state is not None,
            "sha256": hashlib.sha256(data).hexdigest()}


# The decode tasks that feed the chunk tasks their raw chunks: registered wherever these are.
import worker.decode_ops  # noqa: E402,F401
import worker.assemble_ops  # noqa: E402,F401  (the output joined without a funnel)
