"""What a job will take before it runs (``excamera plan``): the real job — the ExCamera encode's
FSMs (``coordinator.excamera_job``) or a pipeline's planner and scheduler — replayed on simulated
workers (``coordinator.simulate``) that take the time the measured cost model says.

The cost model (``pipeline/costmodel.json``, package data, written by ``make bench``: ``bench/plan_bench.py
--measure``) holds each operation's seconds per frame at the size it was measured, scaled here by
pixel count; and the bytes per frame of what each stores. Everything else is an assumption, set
below with its source, and listed by ``assumptions()`` (``excamera plan`` prints them).

Two ways the input reaches the workers are modelled:

* ``client``: what ``excamera encode`` and ``excamera pipeline run`` do today on one machine: the
  client decodes (encode) or cuts (pipeline) the whole input and puts every chunk in storage
  before the job starts; at Lambda scale it also uploads the raw chunks over its own link;
* ``ranged`` (issue 21's data path): workers read their own byte range of the compressed input
  and decode it (a decode task per chunk, modelled inside the chunk's first command), and the
  stitch joins chunks by multipart copy without reading them. The client reads only the index.

The encode's operations are modelled by name (their storage traffic too). One the job gains that
this module does not know is timed by the cost model's entry of that name, per frame of its chunk
(or of the chunks a list argument names), CPU only; one the cost model lacks too is a one-line
error naming it. A model measured before an operation existed times it by the operations it
replaces (``STANDS_IN``: ``vp8-rebase-batch`` by ``vp8-rebase`` + ``vp8-upload-chunk``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from fractions import Fraction

from coordinator.cost import prices
from coordinator.engine import SendCommand
from coordinator.simulate import Fleet, Simulation, Work, held_by_state
from foundation.errors import ExcameraError
from storage import ObjectRef


class PlanError(ExcameraError):
    """A job that cannot be planned (bad shape, a stage the cost model has not measured)."""


# -- assumptions (each printed by ``assumptions``) -----------------------------------------------

#: Lambda: new execution environments per function name per 10 s (AWS, Lambda scaling behaviour,
#: since Nov 2023); the account's concurrency quota is taken to allow the fleet.
LAMBDA_SCALE_PER_10S = 1000
#: Lambda: MB of configured memory per vCPU (AWS: 1,769 MB is one vCPU's worth).
VCPU_MB = 1769
#: Lambda: a cold start, invocation to the worker's first command: the platform's start of a
#: container image (not measured here; AWS quotes about 1 s for images with cached layers) plus
#: the process's own start measured by bench/lambda_cold_start_bench.py (0.21 s: README).
LAMBDA_COLD_START_S = 1.0 + 0.21
#: A Lambda vCPU's speed against one core of the machine the cost model was measured on (unmeasured:
#: taken as equal).
LAMBDA_CORE_SPEED = 1.0
#: Per-worker network bandwidth to S3 and the rendezvous (bytes/s; published measurements of
#: Lambda put it at 50-100 MB/s).
LAMBDA_BANDWIDTH = 75e6
#: S3 request latency (first byte), GET and PUT, within a region.
S3_GET_S, S3_PUT_S = 0.03, 0.05
#: S3 request rates per key prefix (AWS: 3,500 PUT/COPY/POST/DELETE and 5,500 GET/HEAD a second;
#: S3 splits a busy prefix over minutes, longer than these jobs).
S3_PUT_PER_S, S3_GET_PER_S = 3500, 5500
#: Coordinator <-> worker, one way, within a region (the coordinator on EC2 beside the workers).
LAMBDA_DISPATCH_S = 0.002
#: Stragglers: a worker is slow with this probability (a noisy host) by this factor; others vary
#: uniformly within +-jitter.
STRAGGLER_P, STRAGGLER_X, JITTER = 0.01, 3.0, 0.1
#: The stitch on S3 (``ranged``): links read and parts copied (UploadPartCopy, parts >= 5 MiB)
#: this many at a time, each copy this long.
STITCH_CONCURRENCY, PART_BYTES, PART_COPY_S = 64, 5 << 20, 0.2
#: ``client`` at Lambda scale: the client's upload bandwidth (bytes/s).
CLIENT_UPLOAD = 125e6
#: ``ranged``: the client reads the container's index (seconds).
INDEX_S = 1.0


def assumptions(backend: str, memory_mb: int, functions: int = 1) -> list[str]:
    if backend != "lambda":
        return ["local worker processes on this machine; operation times as measured here (cost "
                "model), the workers sharing its cores (k computing at once each run at min(1, cores / k)); "
                "a worker's start and the client's time around the job as measured by real runs"]
    p = prices()
    vcpu = memory_mb / VCPU_MB
    return [
        f"scaling: {LAMBDA_SCALE_PER_10S:,} new execution environments per 10 s per function name "
        f"(x{functions} function name(s)); the account's concurrency quota allows the fleet",
        f"cold start {LAMBDA_COLD_START_S:.2f} s (1.0 s platform start of an image, assumed; 0.21 s "
        f"process start, measured); billed from invocation to exit",
        f"{memory_mb} MB = {vcpu:.2f} vCPU (1,769 MB per vCPU); one-threaded operations run at "
        f"min(1, vCPU) x {LAMBDA_CORE_SPEED:g} of a core here",
        f"${p['lambda_gb_second']:.10f} per GB-s, ${p['lambda_request'] * 1e6:.2f} per million requests "
        f"(us-east-1, x86; coordinator/cost.py)",
        f"S3: {S3_GET_S * 1000:.0f} ms GET / {S3_PUT_S * 1000:.0f} ms PUT latency; {S3_PUT_PER_S:,} PUT and "
        f"{S3_GET_PER_S:,} GET a second per key prefix (a prefix: the key up to its last '/')",
        f"{LAMBDA_BANDWIDTH / 1e6:.0f} MB/s per worker to S3 and the rendezvous; coordinator one-way "
        f"latency {LAMBDA_DISPATCH_S * 1000:.0f} ms",
        f"stragglers: {STRAGGLER_P:.0%} of workers {STRAGGLER_X:g}x slower, the rest within "
        f"+-{JITTER:.0%}; the engine's speculation re-issues them",
    ]


# -- the cost model ------------------------------------------------------------------------------

def default_costmodel_path() -> str:
    """``EXCAMERA_COSTMODEL``, else the model shipped beside this module (package data, so an
    installed wheel has it; ``make bench`` rewrites it)."""
    return os.environ.get("EXCAMERA_COSTMODEL") or os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                                "costmodel.json")


#: Operations a model measured before they existed is timed by: the sum of these, per frame
#: (``vp8-rebase-batch`` does per chunk what ``vp8-rebase`` and ``vp8-upload-chunk`` did).
STANDS_IN = {"vp8-rebase-batch": ("vp8-rebase", "vp8-upload-chunk")}


@dataclass
class CostModel:
    doc: dict
    path: str

    @classmethod
    def load(cls, path: str | None = None) -> "CostModel":
        path = path or default_costmodel_path()
        try:
            with open(path) as f:
                doc = json.load(f)
        except FileNotFoundError:
            raise PlanError(f"{path}: no cost model (make bench writes it: python bench/plan_bench.py "
                            f"--measure)") from None
        except (OSError, ValueError) as e:
            raise PlanError(f"{path}: {e}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("ops"), dict):
            raise PlanError(f"{path}: not a cost model (no ops)")
        return cls(doc, path)

    @property
    def pixels(self) -> int:
        return self.doc["width"] * self.doc["height"]

    def seconds(self, op: str, frames: float, pixels: int, local: bool = False) -> float:
        """``op`` over ``frames`` frames of ``pixels``: as measured in one process on one core, or
        (``local``) as measured inside a real run's workers on this machine, where there is one."""
        table = self.doc["ops"]
        if local and op in self.doc.get("local", {}).get("ops", {}):
            table = self.doc["local"]["ops"]
        entry = table.get(op)
        if entry is None and op in STANDS_IN:   # a model measured before the operation existed
            return sum(self.seconds(o, frames, pixels, local) for o in STANDS_IN[op])
        if entry is None:
            known = ", ".join(sorted(self.doc["ops"]))
            raise PlanError(f"the cost model has no time for {op} (it has: {known}); measure it in "
                            f"bench/plan_bench.py")
        return entry["s_per_frame"] * frames * pixels / self.pixels

    def bytes(self, kind: str, frames: float, pixels: int) -> int:
        return int(self.doc["bytes_per_frame"][kind] * frames * pixels / self.pixels)

    def local(self, key: str, default: float) -> float:
        v = self.doc.get("local", {}).get(key)
        return default if v is None else float(v)


@dataclass(frozen=True)
class Shape:
    """The input: its length, picture size and frame rate."""

    frames: int
    width: int
    height: int
    fps: tuple[int, int]

    @classmethod
    def of(cls, duration_s: float, width: int, height: int, fps: float = 30.0) -> "Shape":
        if duration_s <= 0 or width <= 0 or height <= 0 or fps <= 0:
            raise PlanError(f"duration {duration_s:g} s, size {width}x{height} and {fps:g} fps must be positive")
        rate = Fraction(fps).limit_denominator(1001)
        return cls(max(1, round(duration_s * fps)), width, height, (rate.numerator, rate.denominator))

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def seconds(self) -> float:
        return self.frames * self.fps[1] / self.fps[0]


def probe(path: str):
    """``(Shape, VideoIndex)`` of a video (a path or a source reference), from its container's
    index (``media.index``: key frames and frame count, no decoding)."""
    from foundation.errors import one_line
    from media.index import read_index
    from media.source import open_source

    try:
        with open_source(path) as f:
            index = read_index(f)
    except (OSError, ValueError) as e:
        raise PlanError(f"{path}: {one_line(e)}") from None
    return Shape(index.frames, index.width, index.height, tuple(index.rate)), index


# -- fleets --------------------------------------------------------------------------------------

def lambda_fleet(memory_mb: int, functions: int = 1, state_bytes: int = 0) -> Fleet:
    p = prices()
    return Fleet(kind="lambda", start_s=LAMBDA_COLD_START_S, scale_per_10s=LAMBDA_SCALE_PER_10S,
                 functions=functions, speed=min(1.0, memory_mb / VCPU_MB) * LAMBDA_CORE_SPEED,
                 dispatch_s=LAMBDA_DISPATCH_S, bandwidth_Bps=LAMBDA_BANDWIDTH, get_s=S3_GET_S, put_s=S3_PUT_S,
                 get_per_s=S3_GET_PER_S, put_per_s=S3_PUT_PER_S, straggler_p=STRAGGLER_P,
                 straggler_x=STRAGGLER_X, jitter=JITTER, memory_mb=memory_mb,
                 gb_second_usd=p["lambda_gb_second"], request_usd=p["lambda_request"], state_bytes=state_bytes)


def local_fleet(model: CostModel, workers: int, state_bytes: int = 0) -> Fleet:
    """Worker processes on this machine: they share its cores (``cores``: as many as it has, or as
    many as the calibration found free of other load: ``bench/plan_bench.py``), each operation
    taking its time as measured alone when it has a core to itself."""
    cores = model.local("cores", float(os.cpu_count() or 1))
    return Fleet(kind="local", start_s=model.local("worker_start_s", 1.0), cores=cores,
                 dispatch_s=model.local("dispatch_s", 0.003), bandwidth_Bps=1e9, state_bytes=state_bytes)


# -- the ExCamera encode -------------------------------------------------------------------------

class _EncodeWork:
    """The time and storage traffic of each command of the ExCamera job (``worker.decode_ops``,
    ``worker.codec_ops``)."""

    def __init__(self, model: CostModel, shape: Shape, settings, mode: str, fleet: Fleet):
        from media.excamera_encode import chunk_ranges

        self.m, self.shape, self.settings, self.mode = model, shape, settings, mode
        self.fleet, self.local = fleet, fleet.kind == "local"
        self.ranges = chunk_ranges(shape.frames, settings)

    def _s(self, op: str, frames: float) -> float:
        return self.m.seconds(op, frames, self.shape.pixels, self.local)

    def __call__(self, cmd: SendCommand) -> Work:
        m, px, op, a = self.m, self.shape.pixels, cmd.operation, cmd.args
        if op == "vp8-stitch":
            return self._stitch()
        if op in ("vp8-stitch-links", "vp8-assemble", "vp8-join"):
            return self._join(op, a)
        if op == "decode-range":   # fetch its byte range, decode from the key frame, store raw chunks
            f = int(a["stop"]) - max(0, int(a["key_frame"]))
            n = self.settings.chunk_frames
            return Work(self._s(op, f), [(f"source/{a['start']}", m.bytes("compressed_input", f, px))],
                        [(k, m.bytes("raw", n, px)) for k in a["keys"]])
        if op == "vp8-rebase-batch":
            return self._rebase_batch(cmd.task_id, a)
        i = self._chunk(cmd.task_id)
        if i is None:        # not a chunk's task (the job's shape changed): its listed chunks' frames
            lists = [v for v in a.values() if isinstance(v, list)]
            return self._other(op, self.settings.chunk_frames * max([1] + [len(v) for v in lists]))
        lo, hi = self.ranges[i]
        f = hi - lo
        raw = (a.get("raw", ""), m.bytes("raw", f, px))
        if op == "vp8-first-pass":
            w = self._codec(op, f)
            w.gets, w.puts = [raw], [(a["output"], m.bytes("pass", f, px))]
            return w
        if op == "vp8-dump-state":
            return Work(self._s(op, f), [], [(a["output"], self._state())])
        # (the raw chunk is read once an attempt, by its first pass: ``worker.codec_ops._raw``)
        if op in ("vp8-encode-given-state", "vp8-rebase"):
            if i % self.settings.batch_chunks == 0:
                return Work(0.0)         # a batch's first chunk keeps its first pass: nothing to do
            w = self._codec(op, f)
            if a.get("output"):          # the given-state frame stored for the batch's rebase
                w.puts = [(a["output"], m.bytes("chunk", 2, px))]
            return w
        if op == "vp8-upload-chunk":
            return Work(self._s(op, f), [], [(a["key"], m.bytes("chunk", f, px)), (a["link"], 300)])
        return self._other(op, f)

    def _rebase_batch(self, task_id: str, a: dict) -> Work:
        """A batch's serial rebase in one worker (``worker.codec_ops.rebase_batch``): each later
        chunk decodes its first pass and is coded again (``vp8-rebase-batch``'s measured seconds
        per rebased frame); the first chunk keeps its first pass. Its reads are prefetched
        (``REBASE_PREFETCH`` at a time) while it computes: only the first chunk's wait, and any
        excess of the rest's transfer over the computing, add to the time; each chunk and its
        link are stored in turn."""
        from worker.codec_ops import REBASE_PREFETCH

        m, px, n = self.m, self.shape.pixels, len(a["passes"])
        b = int(task_id.rpartition("-")[2]) if task_id.rpartition("-")[2].isdigit() else 0
        lo = b * self.settings.batch_chunks
        frames = [hi - lo_ for lo_, hi in self.ranges[lo:lo + n]] or [self.settings.chunk_frames] * n
        w = self._codec("vp8-rebase-batch", sum(frames[1:]))
        state = self._state()
        first = [(a["passes"][0], m.bytes("pass", frames[0], px)), (a["states"][0], state)]
        rest = sum(m.bytes("raw", f, px) + m.bytes("pass", f, px) + state + 2000 for f in frames[1:])
        f = self.fleet
        io = rest / f.bandwidth_Bps + 4 * max(0, n - 1) * f.get_s / max(1, REBASE_PREFETCH)
        w.wait_s = max(0.0, io - w.cpu_s / f.speed)   # what the prefetch cannot hide
        w.gets = first
        w.puts = [p for j, fr in enumerate(frames) for p in ((a["outs"][j], m.bytes("chunk", fr, px)),
                                                              (a["links"][j], 300))]
        return w

    def _chunk(self, task_id: str) -> int | None:
        """The chunk a task is for (``chunk-00012``), or None."""
        name, _, n = task_id.rpartition("-")
        return int(n) if name == "chunk" and n.isdigit() and int(n) < len(self.ranges) else None

    def _codec(self, op: str, frames: float) -> Work:
        """A codec operation: the first one a worker process runs also loads the compiled codec
        (measured as ``codec_warmup_s``; none where the model has no figure)."""
        warm = (self.m.doc.get("local", {}) if self.local else self.m.doc).get("codec_warmup_s")
        return Work(self._s(op, frames), warm=("codec", float(warm)) if warm else None)

    def _other(self, op: str, frames: float) -> Work:
        """An operation this model does not know by name (the job's shape changed): the fallback
        (see the module docstring) is the cost model's own entry for that name, per frame of the
        task's chunk (its CPU time only: no storage traffic is modelled for it). A name the cost
        model lacks too is an error that says how to measure it."""
        if op not in self.m.doc["ops"] and op not in self.m.doc.get("local", {}).get("ops", {}) \
                and op not in STANDS_IN:
            raise PlanError(f"the ExCamera job has an operation {op!r} that the cost model {self.m.path} "
                            f"has no time for; add it to bench/plan_bench.py's measurements (make bench "
                            f"rewrites the model) or give --costmodel a model that has it")
        return self._codec(op, frames) if op.startswith("vp8-") else Work(self._s(op, frames))

    def _join(self, op: str, a: dict) -> Work:
        """The output joined without a funnel (``worker.assemble_ops``): the stitch reads every
        chunk's link (``STITCH_CONCURRENCY`` at a time) and lays out the parts; each assemble task
        reads its share of the chunks and stores one part (S3: an UploadPart of the multipart
        upload); the join completes it (one request)."""
        m, px, n = self.m, self.shape.pixels, len(self.ranges)
        remote = self.mode == "ranged" and not self.local
        if op == "vp8-stitch-links":
            w = Work(0.0, [], [("out/layout.json", 64 * n)])
            if remote:
                w.wait_s = math.ceil(n / STITCH_CONCURRENCY) * S3_GET_S
            else:
                w.gets = [(f"out/link-{i}", 300) for i in range(n)]
            return w
        if op == "vp8-assemble":
            of, index = int(a["of"]), int(a["index"])
            mine = len(range(index, n, of))
            size = m.bytes("chunk", mine * self.settings.chunk_frames, px)
            w = Work(0.0, [], [(f"out/parts/{index}", size)])
            if remote:   # its chunks read STITCH_CONCURRENCY at a time, bytes over its link
                w.wait_s = math.ceil(mine / STITCH_CONCURRENCY) * S3_GET_S + size / LAMBDA_BANDWIDTH
            else:
                w.gets = [(f"out/chunk-{index}-{j}", size // max(1, mine)) for j in range(mine)]
            return w
        return Work(wait_s=S3_PUT_S + PART_COPY_S if remote else 0.0)   # vp8-join: one completing request

    def _state(self) -> int:
        return int(self.m.doc["state_bytes"] * self.shape.pixels / self.m.pixels)

    def _stitch(self) -> Work:
        m, px, n = self.m, self.shape.pixels, len(self.ranges)
        total = m.bytes("chunk", self.shape.frames, px)
        if self.mode == "ranged":
            parts = max(1, math.ceil(total / PART_BYTES))
            w = Work(self._s("vp8-stitch", self.shape.frames))
            w.wait_s = math.ceil(n / STITCH_CONCURRENCY) * S3_GET_S + math.ceil(parts / STITCH_CONCURRENCY) * PART_COPY_S
            return w
        return Work(self._s("vp8-stitch", self.shape.frames), [("out/all", total)], [("output.ivf", total)])


#: Without an input to read the index of: a key frame every this many seconds (a common
#: streaming encoder setting).
GOP_S = 2.0


def assumed_index(shape: Shape):
    """An input of ``shape`` with a key frame every ``GOP_S`` seconds (no input to read it from)."""
    from media.index import KeyFrame, VideoIndex

    gop = max(1, round(GOP_S * shape.fps[0] / shape.fps[1]))
    return VideoIndex("pyav", shape.frames, shape.width, shape.height, shape.fps,
                      tuple(KeyFrame(f, f, 0) for f in range(0, shape.frames, gop)), True)


def source_plan(shape: Shape, settings, index=None):
    """The decode ranges the encode's job gets (``media.index.plan_ranges``) for ``index`` (read
    from the input), or for an input of ``shape`` with a key frame every ``GOP_S`` seconds."""
    from coordinator.excamera_job import SourcePlan
    from media.index import plan_ranges

    if index is None:
        index = assumed_index(shape)
    return SourcePlan("plan:input", "", index, tuple(plan_ranges(index, settings.chunk_frames,
                                                                settings.chunk_frames)))


def plan_encode(model: CostModel, shape: Shape, settings, *, workers: int, fleet: Fleet,
                mode: str = "ranged", index=None, seed: int = 1) -> dict:
    """``excamera encode``'s job as it is built today: decode tasks by range of the input's key
    frames, then the chunks' FSMs and the stitch."""
    from coordinator.excamera_job import encode_job

    if shape.frames < settings.chunk_frames:
        raise PlanError(f"{shape.frames} frames: fewer than one chunk of {settings.chunk_frames}")
    fleet.state_bytes = int(model.doc["state_bytes"] * shape.pixels / model.pixels)
    from coordinator.excamera_job import JoinPlan

    # As ``excamera encode`` builds it: the output joined without a funnel (on Lambda, into an
    # S3 multipart upload: ``-o s3://``; locally, streamed to the file as the batches end).
    join = JoinPlan("s3://plan/output.ivf", "plan") if fleet.kind == "lambda" else JoinPlan(streamed=True)
    job = encode_job(shape.frames, shape.width, shape.height, settings, source=source_plan(shape, settings, index),
                     join=join, rate=shape.fps)
    work = _EncodeWork(model, shape, settings, mode, fleet)
    sim = Simulation(fleet, work, seed=seed, step_s=_step(shape))
    r = sim.run(job, workers=workers)
    client = _client_s(model, shape, fleet, "ranged", "spool_s_per_frame", "raw")
    return _summary(r, client, fleet, workers, settings.chunk_frames, settings.batch_chunks, 0, mode)


# -- pipelines -----------------------------------------------------------------------------------

class _StageWork:
    """The time, traffic and output items of each ``pipeline-stage`` command."""

    def __init__(self, model: CostModel, shape: Shape, mode: str):
        self.m, self.shape, self.mode = model, shape, mode
        self.planner = None      # set once made (it needs the simulation's clock)
        self.local = False

    def __call__(self, cmd: SendCommand) -> Work:
        from pipeline.stage import get_stage

        a = cmd.args
        stage = get_stage(a["stage"])
        inputs = json.loads(a["inputs"])
        px = self.shape.pixels
        gets, frames, fps = [], 0, (self.shape.fps[0], self.shape.fps[1])
        for port, ds in inputs.items():
            n = 0
            for d in ds:
                part = (d["b"] - d["a"]) / max(1, d["count"])
                gets.append((d["key"], int(d["size"] * part)))
                n += d["b"] - d["a"]
            frames = max(frames, n)
        from pipeline.delivery import Part

        _, batch = self.planner.tasks[cmd.task_id]
        starts = [x.item.start + x.a if isinstance(x, Part) else x.start for xs in batch.inputs.values() for x in xs]
        cpu = self.m.seconds(f"stage:{stage.name}", frames, px, self.local)
        if a.get("steal"):
            cpu *= 0.55          # a work-stealing pair: each attempt does about half, and a unit more
        outputs, items, puts = {}, [], []
        begin = min(starts, default=0)
        for j, (port, kind) in enumerate(sorted(stage.outputs.items())):
            key = f"{a['prefix']}.{port}.0"
            size = {"frames": self.m.bytes("frames", frames, px),
                    "chunks": self.m.bytes("encoded", frames, px)}.get(kind, 1000)
            name = f"o{j}"
            outputs[name] = ObjectRef(key, hashlib.sha256(key.encode()).hexdigest(), size)
            puts.append((key, size))
            items.append({"ref": name, "port": port, "start": int(begin), "count": frames, "fps": list(fps),
                          "meta": {}})
        outputs["items"] = json.dumps(items)
        return Work(cpu, gets, puts, outputs)


def plan_pipeline(model: CostModel, shape: Shape, spec_path: str, *, workers: int, fleet: Fleet,
                  scheduler=None, deadline: float | None = None, frames_per_chunk: int | None = None,
                  mode: str = "client", index=None, seed: int = 1) -> dict:
    """A pipeline's job: its sources cut as ``excamera pipeline run`` cuts them (at the key frames
    of ``index``, else of ``assumed_index``: ``pipeline.source_refs.plan_cuts``), its real planner
    and scheduler. ``mode``: ``client`` (the client cuts the input) or ``ranged`` (each first
    stage's worker reads its range)."""
    from coordinator.fsm import Job
    from pipeline.source_refs import plan_cuts
    from pipeline.delivery import Item
    from pipeline.planner import PipelinePlanner
    from pipeline.schedulers import make_scheduler
    from pipeline.spec import SpecError, load

    try:
        spec = load(spec_path)
        sched_value = scheduler if scheduler is not None else spec.scheduler
        if isinstance(sched_value, str) and sched_value == "streaming":
            if deadline is None:
                raise PlanError("--scheduler streaming needs --deadline S")
            sched_value = {"name": "streaming", "deadline": deadline}
        sched = make_scheduler(sched_value)
    except SpecError as e:
        raise PlanError(str(e)) from None
    sched.workers = workers
    if deadline is None:
        deadline = getattr(sched, "deadline", None)
    work = _StageWork(model, shape, mode)
    work.local = fleet.kind == "local"
    sim = Simulation(fleet, work, seed=seed, step_s=_step(shape))
    planner = work.planner = PipelinePlanner(spec, scheduler=sched, clock=lambda: sim.now)
    arrivals: list[tuple[float, object]] = []
    planner.on_output = lambda sink, items: arrivals.extend((sim.now, i) for i in items)
    per = frames_per_chunk or max(1, round(shape.fps[0] / shape.fps[1]))
    px = shape.pixels
    for name, ports in spec.inputs.items():
        for port, kind in ports.items():
            if kind != "chunks":
                raise PlanError(f"{name}:{port}: plan models sources of compressed chunks only, not {kind}")
            items = []
            cuts = plan_cuts(index if index is not None and index.indexed else assumed_index(shape), per)
            for i, (s, stop) in enumerate(cuts):
                n = stop - s
                key = f"in/{name}/{port}/{i:06d}"
                items.append(Item(key, hashlib.sha256(key.encode()).hexdigest(), model.bytes("compressed_input", n, px),
                                  "chunks", i, s, n, shape.fps, {}, f"{name}:{port}"))
            planner.add_input(name, port, items)
    first = planner.start()
    job = Job("pipeline", planner.fsms(), tuple(first))
    r = sim.run(job, workers=workers, planner=planner)
    late = 0
    if deadline is not None:
        for t, item in arrivals:
            due = deadline + item.start * shape.fps[1] / shape.fps[0]
            late += t > due + 1e-6
    client = _client_s(model, shape, fleet, mode, "cut_s_per_frame", "compressed_input", "pipeline_client_fixed_s")
    out = _summary(r, client, fleet, workers, per, None, late, mode)
    out.update(scheduler=sched.name, deadline_s=deadline, pieces=len(arrivals))
    return out


# -- shared --------------------------------------------------------------------------------------

def _step(shape: Shape) -> float:
    """The engine's step grid: finer for small jobs (the validation), coarser for an hour of video."""
    return 0.002 if shape.frames <= 2000 else 0.05


def _client_s(model: CostModel, shape: Shape, fleet: Fleet, mode: str, per_frame: str, kind: str,
              fixed_key: str = "client_fixed_s") -> float:
    """The client's time around the job: a fixed part (measured: start, index, output written)
    and its share of the input."""
    fixed = model.local(fixed_key, 1.0)
    if mode == "ranged":   # the index only; a remote one over the network (locally it is in ``fixed``)
        return fixed + (INDEX_S if fleet.kind == "lambda" else 0.0)
    s = fixed + model.doc["client"][per_frame] * shape.frames * shape.pixels / model.pixels
    if fleet.kind == "lambda":       # today's funnel: every chunk goes up through the client's link
        s += model.bytes(kind, shape.frames, shape.pixels) / CLIENT_UPLOAD
    return s


def _summary(r, client_s: float, fleet: Fleet, workers: int, chunk_frames, batch_chunks, late: int,
             mode: str) -> dict:
    if r.status != "succeeded":
        raise PlanError(f"the simulated job {r.status}: {r.error}")
    return {"wall_s": round(client_s + r.wall_s, 3), "job_s": round(r.wall_s, 3), "client_s": round(client_s, 3),
            "cost_usd": round(r.cost_usd, 4), "worker_seconds": round(r.worker_seconds, 1),
            "busy_seconds": round(r.busy_seconds, 1), "peak_workers": r.peak_workers,
            "late_pieces": late, "chunk_frames": chunk_frames, "batch_chunks": batch_chunks,
            "workers": workers, "backend": fleet.kind, "memory_mb": fleet.memory_mb or None,
            "invocations": r.invocations, "input": mode, "s3_requests": {"GET": r.gets, "PUT": r.puts},
            "peak_requests_per_prefix_s": r.peak_prefix_rate, "throttled_s": round(r.throttled_s, 2),
            "last_worker_joined_s": round(r.last_join_s, 2), "held_by_state_s": held_by_state(r)}
