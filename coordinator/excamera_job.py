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

``encode_job`` builds the job; ``encode_inputs`` (in memory) or ``SpooledInput`` (one chunk of
pictures held at a time; objects in memory up to a budget, then through files) the raw chunk
objects it reads, one Y4M each.
"""

from __future__ import annotations

import os

from coordinator.fsm import DONE, FSM, Job, State, Task

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


def chunk_fsm(work_s: float, wait_s: float) -> FSM:
    """The per-chunk FSM; ``work_s`` times out working states, ``wait_s`` the waits for a state
    from the previous chunk (up to a batch of rebases, and a re-issued predecessor's redo)."""
    return FSM("excamera-encode-chunk", "first-pass", (
        State("first-pass", "vp8-first-pass",
              {"raw": "${raw}", "output": "${pass}", "first_pass": "${first_pass}",
               "cq_level": "${cq_level}", "speed": "${speed}"}, {"ok": "dump-state"}, work_s),
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
              {"raw": "${raw}", "speed": "${speed}", "kf_q_weight": "${kf_q_weight}"},
              {"ok": "receive-final"}, work_s),
        State("receive-final", "receive-state",
              {"sender": "${prev}", "tag": "final", "into": "state_in", "keep": True},
              {"ok": "rebase"}, wait_s),
        State("rebase", "vp8-rebase", {"raw": "${raw}"}, {"ok": "send-final"}, work_s),
        State("send-final", "send-state", {"to": "${next}", "tag": "final", "scratch": "final", "compress": "no"},
              {"ok": "upload"}, work_s),
        State("upload", "vp8-upload-chunk", {"key": "${out}", "link": "${link}"}, {"ok": DONE}, work_s),
    ))


def stitch_fsm(work_s: float) -> FSM:
    return FSM("excamera-encode-stitch", "stitch", (
        State("stitch", "vp8-stitch", {"chunks": ["${chunks}"], "links": ["${links}"], "output": "${output}",
                                        "frames": "${frames}"},
              {"ok": DONE}, work_s),
    ))


def encode_job(n_frames: int, width: int, height: int, settings) -> Job:
    """The job for ``n_frames`` raw frames of ``width`` x ``height`` stored by ``encode_inputs``
    with ``settings`` (``excamera.encode.EncodeSettings``). Its result task is ``stitch``, whose
    ``stitch.object`` is the whole stream as IVF."""
    from excamera.encode import chunk_ranges

    if n_frames < settings.chunk_frames:
        raise ValueError(f"the input has {n_frames} frames, fewer than one chunk of {settings.chunk_frames}")
    ranges = chunk_ranges(n_frames, settings)
    n, x = len(ranges), settings.batch_chunks
    work = work_timeout(width, height, settings.chunk_frames)
    # A wait covers the rebases ahead of this chunk in its batch, and a predecessor that starts over.
    wait = min(MAX_TIMEOUT_S, work * (min(x, n) + 4))
    # The stitch proves the chain from the chunks' links, or else decodes the whole stream.
    stitch = work_timeout(width, height, n_frames)
    tasks = []
    for i in range(n):
        cid = chunk_id(i)
        tasks.append(Task(cid, "excamera-encode-chunk", {
            "raw": RAW_KEY.format(cid), "pass": PASS_KEY.format(cid), "fp_state": STATE_KEY.format(cid),
            "out": OUT_KEY.format(cid), "link": LINK_KEY.format(cid), "first_pass": settings.first_pass, "cq_level": settings.cq_level,
            "speed": settings.speed, "kf_q_weight": float(settings.kf_q_weight),
            "prev": chunk_id(i - 1) if i % x else "",
            "next": chunk_id(i + 1) if (i + 1) % x and i + 1 < n else ""}))
    tasks.append(Task("stitch", "excamera-encode-stitch",
                      {"chunks": [OUT_KEY.format(chunk_id(i)) for i in range(n)],
                       "links": [LINK_KEY.format(chunk_id(i)) for i in range(n)], "output": STITCHED_KEY,
                       "frames": n_frames},
                      after=tuple(chunk_id(i) for i in range(n))))
    return Job(f"excamera-encode-{settings.chunk_frames}x{settings.batch_chunks}",
               (chunk_fsm(work, wait), stitch_fsm(stitch)), tuple(tasks), result_tasks=("stitch",))


def chunk_object(frames: list, rate: tuple[int, int]) -> bytes:
    """One raw chunk object: its frames as one Y4M (C420jpeg, the input's frame rate)."""
    from codec.y4m import FRAME_TAG, Y4mHeader

    h, w = frames[0].y.shape
    header = Y4mHeader(w, h, tuple(rate), "p", (1, 1), "420jpeg").to_bytes()
    return header + b"".join(FRAME_TAG + b"\n" + f.to_i420() for f in frames)


def encode_inputs(frames: list, rate: tuple[int, int], settings) -> dict[str, bytes]:
    """The raw chunk objects the job reads, all in memory (``SpooledInput`` holds one at a time)."""
    from excamera.encode import chunk_ranges

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
