"""The ExCamera[N, x] encode as a runtime job over the real codec operations (``worker.codec_ops``).

One task per chunk of N frames, each running the parallel part of ExCamera's worker FSM (NSDI
2017, section 4; ``coordinator.shaped`` is the paper's whole FSM over stand-ins)::

    first-pass -> dump-state -> send-state -> receive-state -> encode-given-state -> done

then one ``rebase`` task per batch of x chunks, after that batch's chunk tasks, and one ``stitch``
task after every rebase task. Chunk i hands its first-pass exit state to chunk i+1 (tag
``fp-state``) through the rendezvous; a chunk that begins a batch has no predecessor (``prev`` is
empty) and keeps its first pass, key frame first; one that ends a batch has no successor (``next``
is empty). Received states are kept at the rendezvous until the receiving task is done, so a
re-issued attempt (a worker killed, a straggler) receives them again. Each chunk task stores its
first pass, its first-pass exit state and its given-state frame, and ends: the serial part, the
chain of states the chunks really leave along a batch, runs in the batch's rebase task, one worker
walking the chunks in order (``vp8-rebase-batch``), so no chunk worker is held (and, on Lambda,
paid) while the chunks before it are rebased. The rebase task checks every object it reads
against the digest the coordinator accepted from the task that wrote it (``${after}``). Every
operation is deterministic, so re-issued work stores the same bytes, and the stitch checks every
chunk's entry digest against the real decoder state: from the link stored beside each chunk (the
full digests of the states it enters and leaves, which its rebase learned by decoding it), else by
decoding the stream again.

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
from fractions import Fraction

from coordinator.fsm import DONE, FSM, Job, State, Task
from media.rawchunk import chunk_object  # (in media: the decode tasks make the same objects)

#: Storage keys (under the job's prefix).
RAW_KEY = "input/{}.y4m"
PASS_KEY = "pass/{}.ivf"
STATE_KEY = "pass/{}.state"
OUT_KEY = "out/{}.ivf"
LINK_KEY = "out/{}.link"
GIVEN_KEY = "pass/{}.given"
STITCHED_KEY = "output.ivf"

#: Seconds of budget per pixel of a chunk's frames for a working state, on top of a floor that
#: covers a worker's cold start (numba loading its cached kernels): generous, since a state that
#: runs past its timeout gets a duplicate attempt and past four timeouts is abandoned.
SECONDS_PER_PIXEL = 1e-5
MIN_TIMEOUT_S = 60.0

STAGES = ("first-pass", "encode-given-state", "rebase", "stitch")


def chunk_id(i: int) -> str:
    return f"chunk-{i:05d}"


def rebase_id(b: int) -> str:
    """The rebase task of batch ``b``."""
    return f"rebase-{b:05d}"


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
    """The per-chunk FSM; ``work_s`` times out working states, ``wait_s`` the wait for the
    previous chunk's first-pass state (its first pass, and a re-issued predecessor's redo).
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
              {"raw": "${raw}", "speed": "${speed}", "kf_q_weight": "${kf_q_weight}", "output": "${given}",
               "last": True, **checks},
              {"ok": DONE}, work_s),
    ))


def rebase_fsm(work_s: float, checked: bool = False) -> FSM:
    """A batch's serial rebase, in one worker (``worker.codec_ops.rebase_batch``). Every object
    it reads was reported by a task it runs after, so every read is checked; the raw chunks only
    when the job's decode tasks wrote them (``checked``)."""
    return FSM("excamera-encode-rebase", "rebase", (
        State("rebase", "vp8-rebase-batch",
              {"raws": ["${raws}"], "passes": ["${passes}"], "states": ["${states}"], "givens": ["${givens}"],
               "outs": ["${outs}"], "links": ["${links}"], "verified": [DIGESTS_REQUIRED, "${after}"],
               "raw_checked": checked},
              {"ok": DONE}, work_s),
    ))


def _rebase_tasks(n: int, x: int, chunk_frames: int, n_frames: int, writer: dict[int, str]) -> list:
    """One rebase task per batch of ``x`` of the ``n`` chunks, after the batch's chunk tasks
    (and the decode tasks that wrote their raw chunks: their digests check the raw reads)."""
    tasks = []
    for b, lo in enumerate(range(0, n, x)):
        ids = range(lo, min(n, lo + x))
        after = tuple(chunk_id(i) for i in ids) + tuple(dict.fromkeys(writer[i] for i in ids if i in writer))
        tasks.append(Task(rebase_id(b), "excamera-encode-rebase", {
            "raws": [RAW_KEY.format(chunk_id(i)) for i in ids],
            "passes": [PASS_KEY.format(chunk_id(i)) for i in ids],
            "states": [STATE_KEY.format(chunk_id(i)) for i in ids],
            "givens": [GIVEN_KEY.format(chunk_id(i)) for i in ids],
            "outs": [OUT_KEY.format(chunk_id(i)) for i in ids],
            "links": [LINK_KEY.format(chunk_id(i)) for i in ids],
            # (what the engine's speculation scales a slow attempt by)
            "frames": min(n_frames, ids[-1] * chunk_frames + chunk_frames) - lo * chunk_frames},
            after=after))
    return tasks


def stitch_fsm(work_s: float, checked: bool = False) -> FSM:
    checks = {"verified": [DIGESTS_REQUIRED, "${after}"]} if checked else {}
    return FSM("excamera-encode-stitch", "stitch", (
        State("stitch", "vp8-stitch", {"chunks": ["${chunks}"], "links": ["${links}"], "output": "${output}",
                                        "frames": "${frames}", **checks},
              {"ok": DONE}, work_s),
    ))


#: Keys of the joined output's layout and parts (``worker.assemble_ops``), and of the sound
#: beside a WebM / Matroska output's (``worker.audio_ops``).
LAYOUT_KEY = "out/layout.json"
PART_KEY = "out/parts/{:05d}.ivf"
AUDIO_INDEX_KEY = "audio/index.json"
AUDIO_PACKETS_KEY = "audio/packets-{:05d}.bin"
#: A variable-frame-rate input's presentation times (``worker.assemble_ops.times_object``), stored
#: by the client with the job's inputs and read, checked against its digest, by the stitch and
#: assemble tasks.
TIMES_KEY = "input/times.json"
#: Chunks per assemble task planned (the parts are laid out by size once the chunks are done;
#: each assemble task takes every K-th part).
ASSEMBLE_CHUNKS = 16


@dataclass(frozen=True)
class JoinPlan:
    """How the output is joined without a funnel (``worker.assemble_ops``): into the S3
    multipart upload ``upload_id`` of ``destination`` (``s3://BUCKET/KEY``; the caller started it
    and aborts it if the job fails), or, with no destination, as parts in the job's storage that
    the caller writes out in order. ``part_min``: the smallest part but the last (S3's 5 MiB;
    lower only against a server that allows it, in tests). ``streamed``: no destination, and the
    caller writes the output itself from each batch's chunks as its rebase task ends
    (``excamera.commands.encode_output``): no assemble or join task; the stitch, which proves
    the chain and lays the output out, is the job's result. ``container``: ``ivf``, ``webm``
    or ``matroska`` ("": by the destination's extension, .webm or .mkv, else ``ivf``); a WebM or
    Matroska output carries the sound of ``audio`` (a source reference; None: the job's own
    source, when the workers decode it; "": none), read by one ``audio-track`` task
    (``worker.audio_ops``) beside the chunk tasks. ``times``: for a variable-frame-rate input,
    ``"KEY SHA256 SIZE"`` of its times object (``worker.assemble_ops.times_object``, a job input at
    ``TIMES_KEY``):
    the output's frames are stamped with them; ``duration``: the seconds its pictures last then
    (``(num, den)``), which the sound spans. "" / None: a constant rate."""

    destination: str = ""
    upload_id: str = ""
    part_min: int = 5 << 20
    streamed: bool = False
    container: str = ""
    audio: str | None = None
    times: str = ""
    duration: tuple[int, int] | None = None

    @property
    def format(self) -> str:
        if self.container:
            return self.container
        return {".webm": "webm", ".mkv": "matroska"}.get(os.path.splitext(self.destination)[1].lower(), "ivf")


def span_rate(frames: int, duration) -> tuple[int, int]:
    """The rate ``(num, den)`` at which ``frames`` pictures last ``duration`` seconds (a
    Fraction or ``(num, den)``): what the ``audio-track`` task spans for a variable-rate input."""
    r = frames / Fraction(*duration) if isinstance(duration, tuple) else frames / Fraction(duration)
    return r.numerator, r.denominator


def stitch_links_fsm(work_s: float, container: str = "ivf", times: bool = False) -> FSM:
    # (an IVF stitch's parameters as they always were: a Matroska one adds its container and sound,
    # a variable-rate input its times)
    more = {"container": "${container}", "audio": "${audio}"} if container != "ivf" else {}
    if times:
        more["times"] = "${times}"
    return FSM("excamera-encode-stitch", "stitch", (
        State("stitch", "vp8-stitch-links",
              {"chunks": ["${chunks}"], "links": ["${links}"], "frames": "${frames}", "width": "${width}",
               "height": "${height}", "rate_num": "${rate_num}", "rate_den": "${rate_den}",
               "part_min": "${part_min}", "layout": "${layout}", **more,
               "verified": [DIGESTS_REQUIRED, "${after}"]},
              {"ok": DONE}, work_s),
    ))


def audio_fsm(work_s: float) -> FSM:
    return FSM("excamera-audio", "audio", (
        State("audio", "audio-track",
              {"source": "${source}", "target": "${target}", "frames": "${frames}", "rate_num": "${rate_num}",
               "rate_den": "${rate_den}", "packets": "${packets}", "index": "${index}"},
              {"ok": DONE}, work_s),
    ))


def assemble_fsm(work_s: float) -> FSM:
    return FSM("excamera-encode-assemble", "assemble", (
        State("assemble", "vp8-assemble",
              {"layout": "${layout}", "index": "${index}", "of": "${of}", "parts": "${parts}",
               "destination": "${destination}", "upload_id": "${upload_id}",
               "verified": [DIGESTS_REQUIRED, "${after}"]},
              {"ok": DONE}, work_s),
    ))


def join_fsm(work_s: float) -> FSM:
    return FSM("excamera-encode-join", "join", (
        State("join", "vp8-join", {"layout": "${layout}", "destination": "${destination}",
                                   "upload_id": "${upload_id}", "verified": [DIGESTS_REQUIRED, "${after}"]},
              {"ok": DONE}, work_s),
    ))


def audio_task(source: str, join: JoinPlan, n_frames: int, rate) -> Task:
    """The one task that reads the input's sound for a WebM / Matroska output (no ``after``: it
    runs beside the chunk tasks)."""
    return Task("audio", "excamera-audio", {
        "source": source, "target": join.format, "frames": n_frames, "rate_num": int(rate[0]),
        "rate_den": int(rate[1]), "packets": AUDIO_PACKETS_KEY, "index": AUDIO_INDEX_KEY})


def _join_tasks(n: int, n_frames: int, width: int, height: int, rate, join: JoinPlan, after: tuple,
                sound: bool = False) -> list:
    """The stitch (from links), the assemble tasks and the join, after the rebase tasks ``after``
    (and the ``audio`` task, given ``sound``)."""
    k = max(1, -(-n // ASSEMBLE_CHUNKS))
    where = {"destination": join.destination, "upload_id": join.upload_id}
    more = {}
    if join.format != "ivf":
        more = {"container": join.format, "audio": AUDIO_INDEX_KEY if sound else ""}
    if join.times:
        more["times"] = join.times
    tasks = [Task("stitch", "excamera-encode-stitch",
                  {"chunks": [OUT_KEY.format(chunk_id(i)) for i in range(n)],
                   "links": [LINK_KEY.format(chunk_id(i)) for i in range(n)], "frames": n_frames,
                   "width": width, "height": height, "rate_num": int(rate[0]), "rate_den": int(rate[1]),
                   "part_min": int(join.part_min), "layout": LAYOUT_KEY, **more},
                  after=after + (("audio",) if sound else ()))]
    if join.streamed and not join.destination:  # (the caller copies the bytes: see JoinPlan)
        return tasks
    tasks += [Task(f"assemble-{j:05d}", "excamera-encode-assemble",
                   {"layout": LAYOUT_KEY, "index": j, "of": k, "parts": PART_KEY, **where}, after=("stitch",)) for j in range(k)]
    tasks.append(Task("join", "excamera-encode-join", {"layout": LAYOUT_KEY, **where},
                      after=("stitch",) + tuple(f"assemble-{j:05d}" for j in range(k))))
    return tasks


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


def encode_job(n_frames: int, width: int, height: int, settings, source: SourcePlan | None = None,
               join: JoinPlan | None = None, rate: tuple[int, int] = (30, 1)) -> Job:
    """The job for ``n_frames`` raw frames of ``width`` x ``height`` with ``settings``
    (``media.excamera_encode.EncodeSettings``): stored by ``encode_inputs`` beforehand, or, given
    ``source``, decoded by the job's own decode tasks (one per range of ``source.ranges``: an
    input GOP or group of GOPs), each chunk task running after the one that writes its raw chunk
    and checking it against the digest the coordinator accepted. Its result task is ``stitch``,
    whose ``stitch.object`` is the whole stream as IVF; given ``join`` (a ``JoinPlan``), no task
    reads every chunk: the stitch proves the chain from links, assemble tasks build the output's
    parts (an IVF of ``rate`` frames a second) and ``join`` completes it, its result."""
    from media.excamera_encode import chunk_ranges

    if n_frames < settings.chunk_frames:
        raise ValueError(f"the input has {n_frames} frames, fewer than one chunk of {settings.chunk_frames}")
    ranges = chunk_ranges(n_frames, settings)
    n, x = len(ranges), settings.batch_chunks
    work = work_timeout(width, height, settings.chunk_frames)
    # A wait covers a predecessor's first pass, and a predecessor that starts over.
    wait = min(MAX_TIMEOUT_S, work * 4)
    # The stitch proves the chain from the chunks' links, or else decodes the whole stream.
    stitch = work_timeout(width, height, n_frames)
    tasks, writer = [], {}
    fsms = [chunk_fsm(work, wait, checked=source is not None), stitch_fsm(stitch, checked=source is not None),
            rebase_fsm(work_timeout(width, height, settings.chunk_frames * min(x, n) * 2), checked=source is not None)]
    if source is not None:
        tasks, writer = _decode_tasks(source, width, height, settings)
        longest = max(r.stop - r.key.frame for r in source.ranges)
        fsms.append(decode_fsm(work_timeout(width, height, longest)))
    rebase = _rebase_tasks(n, x, settings.chunk_frames, n_frames, writer)
    for i in range(n):
        cid = chunk_id(i)
        tasks.append(Task(cid, "excamera-encode-chunk", {
            "raw": RAW_KEY.format(cid), "pass": PASS_KEY.format(cid), "fp_state": STATE_KEY.format(cid),
            "given": GIVEN_KEY.format(cid) if i % x else "", "first_pass": settings.first_pass,
            "cq_level": settings.cq_level,
            "speed": settings.speed, "kf_q_weight": float(settings.kf_q_weight),
            "prev": chunk_id(i - 1) if i % x else "",
            "next": chunk_id(i + 1) if (i + 1) % x and i + 1 < n else ""},
            after=(writer[i],) if i in writer else ()))
        if (i + 1) % x == 0 or i + 1 == n:
            # Each batch's rebase right after its chunks: ready tasks start in the order added,
            # so a batch's serial walk (the critical path) goes before later batches' chunks.
            tasks.append(rebase[i // x])
    rebases = tuple(t.task_id for t in rebase)
    if join is not None:
        if join.format not in ("ivf", "webm", "matroska"):
            raise ValueError(f"the output's container {join.format!r} is not ivf, webm or matroska")
        # (a link that does not fit: the stream is decoded)
        fsms[1] = stitch_links_fsm(stitch, join.format, bool(join.times))
        fsms += [assemble_fsm(work), join_fsm(work)]
        sound = join.audio if join.audio is not None else (source.ref if source is not None else "")
        sound = sound if join.format != "ivf" else ""
        if sound:  # after the decode tasks, before the chunks': it runs beside the chunk tasks
            fsms.append(audio_fsm(stitch))
            # (a variable-rate input: the rate at which its pictures last its ``duration``, so
            # that the sound spans the times as the local writer's does)
            spans = rate if join.duration is None else span_rate(n_frames, join.duration)
            tasks.insert(sum(t.fsm == "excamera-decode" for t in tasks), audio_task(sound, join, n_frames, spans))
        tasks += _join_tasks(n, n_frames, width, height, rate, join, rebases, bool(sound))
        return Job(f"excamera-encode-{settings.chunk_frames}x{settings.batch_chunks}",
                   tuple(fsms), tuple(tasks), result_tasks=(tasks[-1].task_id,))  # the join (or stitch)
    tasks.append(Task("stitch", "excamera-encode-stitch",
                      {"chunks": [OUT_KEY.format(chunk_id(i)) for i in range(n)],
                       "links": [LINK_KEY.format(chunk_id(i)) for i in range(n)], "output": STITCHED_KEY,
                       "frames": n_frames},
                      after=rebases))
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

    #: More job inputs, (key, bytes) yielded after the rest (a variable-rate input's times).
    extra: tuple = ()

    def pairs(self):
        """(storage key, bytes) of the compressed input where it must go up (nothing otherwise),
        then ``extra``."""
        if self._upload is None:
            yield from self.extra
            return
        key, path = self._upload
        with open(path, "rb") as f:
            data = f.read()
            st = os.fstat(f.fileno())
        if f"{st.st_size}-{st.st_mtime_ns}" != self._version:
            raise self._changed(f"{path}: changed while the job was being planned")
        yield key, data
        yield from self.extra
