"""The ExCamera[N, x] encode as a runtime job over the real codec operations (``worker.codec_ops``).

One task per chunk of N frames, each running the worker FSM of ExCamera (NSDI 2017, section 4;
``coordinator.shaped`` is the same shape over stand-ins)::

    first-pass -> dump-state -> send-state -> receive-state -> encode-given-state
               -> receive-final -> rebase -> send-final -> upload -> done

then one ``stitch`` task after every chunk. Chunk i hands its first-pass exit state to chunk i+1
(tag ``fp-state``) and, after its rebase, the state it really leaves (tag ``final``), both through
the rendezvous; the serial part is the chain of ``final`` states along a batch of x chunks. A chunk
that begins a batch has no predecessor (``prev`` is empty) and keeps its first pass, key frame
first; one that ends a batch has no successor (``next`` is empty). Received states are kept at the
rendezvous until the receiving task is done, so a re-issued attempt (a worker killed, a straggler)
receives them again; every operation is deterministic, so re-issued work sends and uploads the
same bytes, and the stitch checks every chunk's entry digest against the real decoder state:
from the link each chunk's upload leaves beside it (the full digests of the states it enters and
leaves, which its rebase learned by decoding it), else by decoding the stream again.

``encode_job`` builds the job. Its raw chunk objects (one Y4M each) come either from the job's own
decode tasks (``SourcePlan``: one per input GOP or group of GOPs, each reading its byte range of
the input where it lies and decoding from the key frame at or before its first chunk,
``worker.decode_ops``; ``docs/design/data-path.md``), or from the caller: ``encode_inputs`` (in
memory) or ``SpooledInput`` (one chunk of pictures held at a time; objects in memory up to a
budget, then through files).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from coordinator.fsm import DONE, FSM, Job, State, Task
from media.rawchunk import chunk_object  # (in media: the decode tasks make the same objects)

#: Storage keys (under the job's prefix).
RAW_KEY = "input/{}.y4m"
PASS_KEY = "pass/{}.ivf"
STATE_KEY = "pass/{}.state"
OUT_KEY = "out/{}.ivf"
LINK_KEY = "out/{}.link"
STITCHED_KEY = "output.ivf"

#: Seconds of budget per pixel of a chunk's frames for a working state, on top of a floor that
#: covers a worker's cold start (numba loading its cached kernels): generous, since a state that
#: runs past its timeout gets a duplicate attempt and past four timeouts is abandoned.
SECONDS_PER_PIXEL = 1e-5
MIN_TIMEOUT_S = 60.0

STAGES = ("first-pass", "encode-given-state", "rebase", "upload", "stitch")


def chunk_id(i: int) -> str:
    return f"chunk-{i:05d}"


#: The longest timeout an FSM state may have (``coordinator.fsm``).
MAX_TIMEOUT_S = 24 * 3600.0


def work_timeout(width: int, height: int, frames: int) -> float:
    """The timeout of a working state over ``frames`` frames of this size."""
    return min(MAX_TIMEOUT_S, MIN_TIMEOUT_S + SECONDS_PER_PIXEL * width * height * frames)


#: First of a checked read's ``verified`` lines: a key no object has, so the list is never empty.
#: ``worker.ops.get_verified`` checks nothing given an empty list (inputs the client stored);
#: with this line, a task whose ``${after}`` lost its digests (a coordinator that restarted and
#: recovered the tasks before it without them) fails its read instead of skipping the check.
DIGESTS_REQUIRED = "*digests-required*"


def chunk_fsm(work_s: float, wait_s: float, checked: bool = False) -> FSM:
    """The per-chunk FSM; ``work_s`` times out working states, ``wait_s`` the waits for a state
    from the previous chunk (up to a batch of rebases, and a re-issued predecessor's redo).
    ``checked``: the raw chunks come from decode tasks, and each read checks them against the
    digests the coordinator accepted (``${after}``, ``worker.ops.get_verified``)."""
    checks = {"verified": [DIGESTS_REQUIRED, "${after}"]} if checked else {}
    return FSM("excamera-encode-chunk", "first-pass", (
        State("first-pass", "vp8-first-pass",
              {"raw": "${raw}", "output": "${pass}", "first_pass": "${first_pass}",
               "cq_level": "${cq_level}", "speed": "${speed}", **checks},
              {"ok": "dump-state"}, work_s),
        State("dump-state", "vp8-dump-state", {"output": "${fp_state}"}, {"ok": "send-state"}, work_s),
        # States are compressed already (``DecoderState.to_bytes``): sent as they are, with no
        # trial compression of a sample by the rendezvous client.
        State("send-state", "send-state", {"to": "${next}", "tag": "fp-state", "scratch": "fp_state",
                                           "compress": "no"},
              {"ok": "receive-state"}, work_s),
        State("receive-state", "receive-state",
              {"sender": "${prev}", "tag": "fp-state", "into": "given_state", "keep": True},
              {"ok": "encode-given-state"}, wait_s),
        State("encode-given-state", "vp8-encode-given-state",
              {"raw": "${raw}", "speed": "${speed}", "kf_q_weight": "${kf_q_weight}", **checks},
              {"ok": "receive-final"}, work_s),
        State("receive-final", "receive-state",
              {"sender": "${prev}", "tag": "final", "into": "state_in", "keep": True},
              {"ok": "rebase"}, wait_s),
        State("rebase", "vp8-rebase", {"raw": "${raw}", **checks}, {"ok": "send-final"}, work_s),
        State("send-final", "send-state", {"to": "${next}", "tag": "final", "scratch": "final", "compress": "no"},
              {"ok": "upload"}, work_s),
        State("upload", "vp8-upload-chunk", {"key": "${out}", "link": "${link}"}, {"ok": DONE}, work_s),
    ))


def stitch_fsm(work_s: float, checked: bool = False) -> FSM:
    checks = {"verified": [DIGESTS_REQUIRED, "${after}"]} if checked else {}
    return FSM("excamera-encode-stitch", "stitch", (
        State("stitch", "vp8-stitch", {"chunks": ["${chunks}"], "links": ["${links}"], "output": "${output}",
                                        "frames": "${frames}", **checks},
              {"ok": DONE}, work_s),
    ))


@dataclass(frozen=True)
class SourcePlan:
    """Where the raw chunks come from when workers decode the input themselves: the source
    reference they read (``media.source``), the version the client planned on, its index
    (``media.index.VideoIndex``) and the decode ranges cut from it (``media.index.plan_ranges``)."""

    ref: str
    version: str
    index: object
    ranges: tuple


def decode_fsm(work_s: float) -> FSM:
    return FSM("excamera-decode", "decode", (
        State("decode", "decode-range",
              {"source": "${source}", "version": "${version}", "kind": "${kind}", "start": "${start}",
               "stop": "${stop}", "key_frame": "${key_frame}", "key_timestamp": "${key_timestamp}",
               "key_offset": "${key_offset}", "chunk_frames": "${chunk_frames}", "keys": ["${keys}"],
               "rate_num": "${rate_num}", "rate_den": "${rate_den}", "width": "${width}", "height": "${height}",
               "header_len": "${header_len}", "frame_stride": "${frame_stride}"},
              {"ok": DONE}, work_s),
    ))


def decode_id(i: int) -> str:
    return f"decode-{i:05d}"


def _decode_tasks(source: SourcePlan, width: int, height: int, settings) -> tuple[list, dict[int, str]]:
    """The decode tasks, and which one writes each chunk."""
    index, n = source.index, settings.chunk_frames
    tasks, writer = [], {}
    for i, r in enumerate(source.ranges):
        chunks = range(r.start // n, -(-r.stop // n))
        for c in chunks:
            writer[c] = decode_id(i)
        tasks.append(Task(decode_id(i), "excamera-decode", {
            "source": source.ref, "version": source.version, "kind": index.kind, "start": r.start, "stop": r.stop,
            "key_frame": r.key.frame, "key_timestamp": r.key.timestamp, "key_offset": r.key.offset,
            "chunk_frames": n, "keys": [RAW_KEY.format(chunk_id(c)) for c in chunks],
            "rate_num": int(index.rate[0]), "rate_den": int(index.rate[1]), "width": width, "height": height,
            "header_len": index.header_len, "frame_stride": index.frame_stride}))
    return tasks, writer


def encode_job(n_frames: int, width: int, height: int, settings, source: SourcePlan | None = None) -> Job:
    """The job for ``n_frames`` raw frames of ``width`` x ``height`` with ``settings``
    (``media.excamera_encode.EncodeSettings``): stored by ``encode_inputs`` beforehand, or, given
    ``source``, decoded by the job's own decode tasks (one per range of ``source.ranges``: an
    input GOP or group of GOPs), each chunk task running after the one that writes its raw chunk
    and checking it against the digest the coordinator accepted. Its result task is ``stitch``,
    whose ``stitch.object`` is the whole stream as IVF."""
    from media.excamera_encode import chunk_ranges

    if n_frames < settings.chunk_frames:
        raise ValueError(f"the input has {n_frames} frames, fewer than one chunk of {settings.chunk_frames}")
    ranges = chunk_ranges(n_frames, settings)
    n, x = len(ranges), settings.batch_chunks
    work = work_timeout(width, height, settings.chunk_frames)
    # A wait covers the rebases ahead of this chunk in its batch, and a predecessor that starts over.
    wait = min(MAX_TIMEOUT_S, work * (min(x, n) + 4))
    # The stitch proves the chain from the chunks' links, or else decodes the whole stream.
    stitch = work_timeout(width, height, n_frames)
    tasks, writer = [], {}
    fsms = [chunk_fsm(work, wait, checked=source is not None), stitch_fsm(stitch, checked=source is not None)]
    if source is not None:
        tasks, writer = _decode_tasks(source, width, height, settings)
        longest = max(r.stop - r.key.frame for r in source.ranges)
        fsms.append(decode_fsm(work_timeout(width, height, longest)))
    for i in range(n):
        cid = chunk_id(i)
        tasks.append(Task(cid, "excamera-encode-chunk", {
            "raw": RAW_KEY.format(cid), "pass": PASS_KEY.format(cid), "fp_state": STATE_KEY.format(cid),
            "out": OUT_KEY.format(cid), "link": LINK_KEY.format(cid), "first_pass": settings.first_pass, "cq_level": settings.cq_level,
            "speed": settings.speed, "kf_q_weight": float(settings.kf_q_weight),
            "prev": chunk_id(i - 1) if i % x else "",
            "next": chunk_id(i + 1) if (i + 1) % x and i + 1 < n else ""},
            after=(writer[i],) if i in writer else ()))
    tasks.append(Task("stitch", "excamera-encode-stitch",
                      {"chunks": [OUT_KEY.format(chunk_id(i)) for i in range(n)],
                       "links": [LINK_KEY.format(chunk_id(i)) for i in range(n)], "output": STITCHED_KEY,
                       "frames": n_frames},
                      after=tuple(chunk_id(i) for i in range(n))))
    return Job(f"excamera-encode-{settings.chunk_frames}x{settings.batch_chunks}",
               tuple(fsms), tuple(tasks), result_tasks=("stitch",))


def encode_inputs(frames: list, rate: tuple[int, int], settings) -> dict[str, bytes]:
    """The raw chunk objects the job reads, all in memory (``SpooledInput`` holds one at a time)."""
    from media.excamera_encode import chunk_ranges

    return {RAW_KEY.format(chunk_id(i)): chunk_object(frames[a:b], rate)
            for i, (a, b) in enumerate(chunk_ranges(len(frames), settings))}


class SpooledInput:
    """A video's raw chunk objects, read from ``pictures`` one chunk at a time: the job needs the
    frame count before it starts, and a long video does not fit in memory. Chunks stay in memory
    while they total at most ``memory_budget`` bytes (a 720p clip of 132 frames is 182 MB: writing
    it to files and reading it back cost about 0.5 s before the job could start); past that,
    every chunk goes to a file in ``directory``. ``pairs()`` then yields each object once (key,
    bytes), dropping it (deleting its file) as it goes, for ``run_job``'s or ``submit_remote``'s
    ``inputs``.

    ``progress(chunks spooled)`` follows the reading. ValueError when a picture's size differs
    from the first's (one Y4M header serves a chunk, and VP8 codes one size a stream)."""

    MEMORY_BUDGET = 512 << 20

    def __init__(self, pictures, rate: tuple[int, int], settings, directory: str, progress=None,
                 memory_budget: int = MEMORY_BUDGET):
        self.rate, self.directory = tuple(rate), directory
        self.n_frames = 0
        self.width = self.height = 0
        self.memory_budget = memory_budget
        self.held = 0                         # bytes of the chunks in memory
        self.chunks: list[str | bytes] = []   # each chunk's object, or the path of its file
        chunk: list = []
        for image in pictures:
            h, w = image.y.shape
            if not self.n_frames:
                self.width, self.height = w, h
            elif (w, h) != (self.width, self.height):
                raise ValueError(f"frame {self.n_frames} is {w}x{h}, the first is {self.width}x{self.height}; "
                                 "the size may not change")
            chunk.append(image)
            self.n_frames += 1
            if len(chunk) == settings.chunk_frames:
                self._add(chunk)
                chunk = []
                if progress is not None:
                    progress(len(self.chunks))
        if chunk:
            self._add(chunk)

    def _add(self, chunk: list) -> None:
        data = chunk_object(chunk, self.rate)
        if self.held + len(data) <= self.memory_budget:
            self.held += len(data)
            self.chunks.append(data)
            return
        for i, held in enumerate(self.chunks):  # over budget: everything to files from here
            if isinstance(held, bytes):
                self.chunks[i] = self._write(i, held)
        self.held = 0
        self.memory_budget = -1
        self.chunks.append(self._write(len(self.chunks), data))

    def _write(self, index: int, data: bytes) -> str:
        path = os.path.join(self.directory, f"{index:06d}.y4m")
        with open(path, "wb") as f:
            f.write(data)
        return path

    def pairs(self):
        """(storage key, bytes) of each raw chunk object in order, each dropped once read."""
        for i, held in enumerate(self.chunks):
            self.chunks[i] = ""
            if isinstance(held, bytes):
                data = held
            else:
                with open(held, "rb") as f:
                    data = f.read()
                os.unlink(held)
            yield RAW_KEY.format(chunk_id(i)), data


#: Where a compressed input the workers cannot reach is uploaded, once, in the job's storage.
SOURCE_KEY = "source/input{}"


class SourceInput:
    """An input the job's decode tasks read by range (``SourcePlan``), planned from its index
    alone (``media.index``: no picture is decoded here). ``ref`` is a path, ``file://``,
    ``s3://`` or ``https://`` URL. ``reach_local``: the workers can read this machine's files (local
    worker processes), so a local file is read where it lies; otherwise a local file goes up
    once, compressed, into the job's storage (``pairs()``), and the workers read it there.
    ``note``: one line to show (an input with no index, which one worker decodes whole), or None.
    ``fetched``: the bytes of the input read here to plan. ``n_frames``, ``width``, ``height``,
    ``rate`` and ``pairs()`` as ``SpooledInput`` has them; ``plan`` for ``encode_job``.
    Raises ``media.source.SourceError`` (naming the input) or a codec ``ContainerError`` /
    ``UnsupportedError`` (not naming it)."""

    def __init__(self, ref: str, settings, *, reach_local: bool):
        from media.index import plan_ranges, read_index
        from media.source import SourceChanged, kind_of, local_path, open_source

        kind = kind_of(ref)
        with open_source(ref) as f:
            index = read_index(f)
            version, self.fetched = f.ranges.version, f.ranges.fetched
        self.n_frames, self.width, self.height, self.rate = index.frames, index.width, index.height, tuple(index.rate)
        self.note = None
        if not index.indexed:
            why = {"ivf": "VP8 in IVF has no index", "y4m": "its FRAME lines carry parameters"}.get(
                index.kind, "a raw stream or a container without an index")
            self.note = f"{ref}: no index ({why}): one worker decodes it all"
        self._upload: tuple[str, str] | None = None
        worker_ref = ref
        if kind == "file":
            path = local_path(ref)
            if reach_local:
                worker_ref = path
            else:
                key = SOURCE_KEY.format(os.path.splitext(path)[1].lower() if
                                        os.path.splitext(path)[1][1:].isalnum() else "")
                self._upload = (key, path)
                worker_ref, version = f"job:{key}", ""
        self._changed = SourceChanged
        self._version = f.ranges.version
        group = settings.chunk_frames * (settings.batch_chunks if index.kind == "y4m" else 1)
        self.plan = SourcePlan(worker_ref, version, index,
                               tuple(plan_ranges(index, settings.chunk_frames, group)))

    @property
    def upload_bytes(self) -> int:
        return os.path.getsize(self._upload[1]) if self._upload else 0

    def pairs(self):
        """(storage key, bytes) of the compressed input where it must go up; nothing otherwise."""
        if self._upload is None:
            return
        key, path = self._upload
        with open(path, "rb") as f:
            data = f.read()
            st = os.fstat(f.fileno())
        if f"{st.st_size}-{st.st_mtime_ns}" != self._version:
            raise self._changed(f"{path}: changed while the job was being planned")
        yield key, data
