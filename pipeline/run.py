"""``run_pipeline``: a pipespec, input files and output files in; the outputs written, atomically.

docs/design/pipelines.md. Everything a user can get wrong is checked before anything runs (the
spec, each input readable, each output writable), each as one ``PipelineError`` line. The
sources are read into items (``chunks`` ports: references to ranges of the input that the first
stage's workers fetch and decode themselves, planned from its index alone,
``pipeline.source_refs``, so no picture passes through here; an input with no index, or a local
file workers elsewhere cannot read, is cut here by ``media_io.cut_input``; ``frame``:
``media_io.read_image``; ``frames``: batches of pictures read here), the ``PipelinePlanner``
plans the tasks, and one function per way to run (``coordinator.config.RunConfig``) takes them:

* ``workers=0`` runs every task in this process, in the scheduler's order, through the same
  ``run_stage`` a worker calls (same objects, same bytes);
* ``workers=N`` runs the job on the embedded coordinator with N (+ ``spare``) local worker
  processes (``coordinator.api.run_job``): late binding, every object re-verified, lost work
  re-issued; the task ids and object keys depend on the data only, so the output is identical.

Each sink's items, in frame order, go to ``media_io.write_output`` (``.mpd`` outputs are written
while the job runs: ``pipeline.live``). With ``coordinator`` the job and its planner go to a
running coordinator instead (a ``RemoteCoordinator`` backend: ``pipeline.remote``). A ``chunks``
sink written to ``s3://BUCKET/KEY.ivf`` is joined by the job's own tasks into a multipart upload
started here (``pipeline.ivf_join``): this process never reads its chunks; on failure the upload
is aborted, and nothing appears at the key.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import sys
import tempfile
import time
from collections.abc import Mapping
from typing import Any, Callable

from coordinator.config import RunConfig
from pipeline.outputs import PipelineError, _line, sound_source, timing_source, write_outputs  # noqa: F401 - API
from pipeline.spec import Spec, SpecError


class _Ready:
    """A task as the scheduler sees it (the engine's TaskRec has the same ``spec``)."""

    __slots__ = ("spec",)

    def __init__(self, spec):
        self.spec = spec


def _load_spec(spec) -> Spec:
    from pipeline import spec as specmod

    if isinstance(spec, Spec):
        return spec
    if isinstance(spec, Mapping):
        return specmod.validate(dict(spec))
    return specmod.load(os.fspath(spec))


def name_files(spec: Spec, inputs: Mapping[str, str], outputs: Mapping[str, str]
               ) -> tuple[dict[str, str], dict[str, str]]:
    """``-i FILE`` / ``-o FILE`` given without a name (key ``""``) named for the pipespec's one
    source or one sink; a pipespec with several needs the names."""
    named = []
    for kind, given, wanted in (("input", inputs, spec.inputs), ("output", outputs, spec.outputs)):
        given = dict(given)
        if "" in given:
            if len(wanted) != 1:
                flag = "-i" if kind == "input" else "-o"
                raise PipelineError(f"{flag} {given['']}: the pipespec has {len(wanted)} {kind}s "
                                    f"({', '.join(wanted)}); name each ({flag} {kind}_N=FILE)")
            (only,) = wanted
            if only in given:
                raise PipelineError(f"{only}: given twice (with and without its name)")
            given[only] = given.pop("")
        named.append(given)
    return named[0], named[1]


def _check_files(spec: Spec, inputs: Mapping[str, str], outputs: Mapping[str, str]) -> None:
    from pipeline import media_io

    for kind, given, wanted in (("input", inputs, spec.inputs), ("output", outputs, spec.outputs)):
        for name in sorted(set(given) - set(wanted)):
            raise PipelineError(f"{name}: the pipespec has no {kind} {name} "
                                f"(it has: {', '.join(wanted) or 'none'})")
        for name in wanted:
            if name not in given:
                flag = "-i" if kind == "input" else "-o"
                raise PipelineError(f"{name}: no file given ({flag} {name}=FILE)")
    for name, path in inputs.items():
        if "://" in path and not path.startswith("file://"):
            if set(spec.inputs[name].values()) <= {"link", "chunks"}:
                continue                  # a URL: read by range where it lies (chunks), or by its stage (link)
            raise PipelineError(f"{name}: {path}: a URL feeds chunks or link ports only; give a local file")
        path = media_io_path(path)
        try:
            with open(path, "rb"):
                pass
        except OSError as e:
            raise PipelineError(f"{name}: {path}: {e.strerror or e}") from None
        if os.path.isdir(path):
            raise PipelineError(f"{name}: {path}: is a directory")
    for name, path in outputs.items():
        try:
            media_io.check_output(path, spec.outputs[name].port_type)
        except (ValueError, OSError) as e:
            raise PipelineError(f"{name}: {_line(e)}") from None


def _frame_batches(path: str, frames_per_chunk: int | None):
    """The pictures of ``path`` (anything ``media.video`` opens) in batches."""
    from media.video import open_video
    from pipeline.values import FrameBatch

    with open_video(path) as video:
        rate = tuple(video.rate) if video.rate[0] > 0 and video.rate[1] > 0 else (30, 1)
        n = frames_per_chunk or max(1, round(rate[0] / rate[1]))
        start, batch = 0, []
        for image in video:
            batch.append(image)
            if len(batch) == n:
                yield FrameBatch.from_images(batch, start, rate)
                start, batch = start + n, []
        if batch:
            yield FrameBatch.from_images(batch, start, rate)


def _source_values(spec: Spec, name: str, port: str, path: str, frames_per_chunk: int | None,
                   reach_local: bool = True):
    from pipeline import media_io

    port_type = spec.inputs[name][port]
    if port_type == "chunks":
        # References to ranges the first stage's workers fetch and decode (no picture passes
        # through here); an input with no index, a local file they cannot reach, or a source
        # feeding a stage that reads chunk bytes itself, is cut here.
        from pipeline.source_refs import range_chunks, reads_ranges
        if reads_ranges(spec, name, port):
            chunks, why = range_chunks(path, frames_per_chunk, reach_local=reach_local)
        else:
            chunks, why = None, f"{port} feeds a stage that reads chunk bytes itself"
        if chunks is not None:
            return iter(chunks)
        if "://" in path and not path.startswith("file://"):
            raise PipelineError(f"{name}: {path}: {why}; the workers cannot decode it by range "
                                "(give a local copy)")
        if why == "no index":  # said once: the workers could not share its decoding
            print(f"excamera: note: {name}: {path}: {why}: this process cuts it into chunks",
                  file=sys.stderr)
        return media_io.cut_input(media_io_path(path), frames_per_chunk)
    if port_type == "frame":
        return iter([media_io.read_image(media_io_path(path))])
    if port_type == "frames":
        return _frame_batches(media_io_path(path), frames_per_chunk)
    if port_type == "link":           # Sprocket's video_link / video_url: the file itself
        from pipeline.stages.links import link_value
        return iter([link_value(path)])
    raise PipelineError(f"{name}: a source cannot feed a {port_type} port (chunks, frames, frame or link)")


def media_io_path(ref: str) -> str:
    """A local source reference (a path or ``file://``) as a path."""
    from media.source import local_path
    return local_path(ref) if ref.startswith("file://") else ref


def _read_sources(spec: Spec, inputs: Mapping[str, str], frames_per_chunk: int | None, put,
                  reach_local: bool = True) -> dict:
    """Every source's items, its objects handed to ``put(key, data)``: (name, port) -> items.
    ``reach_local``: the workers can read this machine's files."""
    from media.source import SourceError
    from pipeline.delivery import Item

    from media.video import input_pixel_format, note_conversion

    out = {}
    for name, ports in spec.inputs.items():
        if any(t in ("chunks", "frames") or p.endswith("link") for p, t in ports.items()):
            note_conversion(inputs[name], input_pixel_format(inputs[name]))  # once, not per chunk
        for port, port_type in ports.items():
            items = []
            try:
                for i, v in enumerate(_source_values(spec, name, port, inputs[name], frames_per_chunk,
                                                      reach_local)):
                    data = v.to_bytes()
                    key = f"in/{name}/{port}/{i:06d}"
                    put(key, data)
                    items.append(Item(key, hashlib.sha256(data).hexdigest(), len(data), port_type, i,
                                      v.start, v.count, tuple(v.fps), dict(v.meta), f"{name}:{port}"))
            except PipelineError:
                raise
            except SourceError as e:   # names the source itself
                raise PipelineError(f"{name}: {_line(e)}") from None
            except (OSError, ValueError, EOFError) as e:
                why = _line(e)
                where = inputs[name] if why.startswith(inputs[name]) else f"{inputs[name]}: {why}"
                raise PipelineError(f"{name}: {where if where != inputs[name] else why}") from None
            if not items:
                raise PipelineError(f"{name}: {inputs[name]}: no pictures")
            out[name, port] = items
    return out


@contextlib.contextmanager
def _worker_path(modules):
    """Workers import the user's stage modules from wherever this process found them."""
    dirs = []
    for m in modules:
        mod = sys.modules.get(m)
        f = getattr(mod, "__file__", None)
        if f:
            d = os.path.dirname(os.path.abspath(f))
            for _ in range(m.count(".")):
                d = os.path.dirname(d)
            dirs.append(d)
    old = os.environ.get("PYTHONPATH")
    if dirs:
        os.environ["PYTHONPATH"] = os.pathsep.join(dirs + ([old] if old else []))
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


def run_here(planner, first_tasks: list, storage) -> int:
    """Run every task in this process (``--workers 0``); returns how many ran. A joined sink's
    tasks (``pipeline.ivf_join``) run through the same operation functions as on a worker."""
    from coordinator.engine import PlanError
    from pipeline import ivf_join
    from pipeline.planner import ARGS
    from pipeline.worker_op import run_stage
    from storage import StorageError
    from worker.ops import OperationError

    fsms = {f.name: f for f in planner.fsms()}
    done: dict[str, dict] = {}
    queue = [_Ready(t) for t in first_tasks]
    ran = 0
    while queue:
        # One worker here: a streaming scheduler holding everything back does not make it wait.
        ordered = (planner.order(queue, time.monotonic()) if len(queue) > 1 else queue) or queue
        task = ordered[0].spec
        queue = [r for r in queue if r.spec is not task]
        try:
            if task.fsm in ivf_join.FSM_NAMES:
                outputs = done[task.task_id] = ivf_join.run_here(fsms[task.fsm], task, done, storage)
            else:
                outputs = {"run": run_stage(storage, task_id=task.task_id,
                                            **{a: task.params[a] for a in ARGS if a != "steal"})}
        except (OperationError, OSError, ValueError, StorageError) as e:
            # In this process a task is not retried: a deterministic stage fails the same way again.
            raise PipelineError(f"task {task.task_id} failed: {_line(e)}") from None
        ran += 1
        try:
            queue.extend(_Ready(t) for t in planner.on_done(task.task_id, outputs))
        except PlanError as e:
            raise PipelineError(str(e)) from None
    if not planner.complete():
        raise PipelineError("the planner stopped before every node finished (a delivery function "
                            "holds items back)")
    return ran


def run_pipeline(spec, inputs: Mapping[str, str], outputs: Mapping[str, str], config: RunConfig | None = None, *,
                 stage_modules=(), on_progress: Callable[[str, int, int, bool], None] | None = None,
                 frames_per_chunk: int | None = None, scheduler=None, audio: bool = True,
                 on_frames: Callable[[str, int], None] | None = None,
                 part_min: int | None = None) -> dict[str, Any]:
    """Run the pipeline ``spec`` (a path, a parsed JSON object or a ``Spec``) on ``inputs``
    (source name -> file) and write ``outputs`` (sink name -> file), as ``config`` says
    (``coordinator.config.RunConfig``; the default: one local worker process per CPU).
    ``config.workers == 0`` runs in this process; a ``RemoteCoordinator`` backend sends the job
    to a running coordinator; otherwise an embedded coordinator runs it. ``on_progress(node,
    done, planned, finished)`` is called as tasks are planned and done; ``on_frames(name,
    frames)`` with each source's frames and each sink's frames so far. ``scheduler`` (a name or
    ``{"name": "streaming", "deadline": S}``, ``pipeline.schedulers``) overrides the pipespec's.
    ``audio``: the outputs carry the first video input's sound (``pipeline.outputs.sound_source``;
    read from its audio packets by this process when writing, no worker carries it).
    ``config.storage`` puts the job's objects in a directory or ``s3://BUCKET/PREFIX`` (removed at
    the end unless ``config.keep``). An output ``s3://BUCKET/KEY.ivf`` of a ``chunks`` sink is
    joined in S3 by the job's tasks (``pipeline.ivf_join``; ``part_min``: the smallest part but
    the last, S3's 5 MiB unless a test's server allows less). Returns a summary (tasks per node,
    seconds, the scheduler's report). ``PipelineError`` (one line) for anything wrong."""
    config = config or RunConfig()
    t0 = time.monotonic()
    stage_modules = tuple(stage_modules)
    spec, doc = _prepare(spec, stage_modules, config.remote)
    inputs, outputs = name_files(spec, inputs, outputs)
    _check_files(spec, inputs, outputs)
    chosen = scheduler if scheduler is not None else spec.scheduler
    planner = _planner(spec, chosen, config.worker_count, on_progress)
    planner.on_frames = on_frames
    if config.storage:
        _check_storage(config.storage)
    sound = sound_source(spec, inputs) if audio else None
    timing = timing_source(spec, inputs)   # a variable-frame-rate input's times are kept
    uploads = _start_uploads(outputs, sound, timing)  # before any input is read: a bad bucket fails now
    try:
        planner.joins = _joins(uploads, part_min)
        ran, frames_out, streamed = _run(spec, planner, inputs, outputs, config, frames_per_chunk, sound,
                                         timing, (doc, chosen, stage_modules), t0)
    except BaseException:
        _drop_uploads(uploads, planner)
        raise
    return {"tasks": ran, "nodes": planner.progress(), "seconds": round(time.monotonic() - t0, 3),
            "outputs": frames_out, "schedule": planner.scheduler.report(),
            "streamed": {n: round(s, 3) for n, s in streamed.items()}}


def _start_uploads(outputs: Mapping[str, str], sound: str | None, timing: str | None = None) -> dict:
    """The multipart upload of each ``s3://`` output (``storage.s3.MultipartOutput``), started
    so that the workers' parts have somewhere to go: sink name -> upload. Such an output holds
    no sound and plays at the sink's constant rate (a line says so where the input had either)."""
    from storage import StorageError
    from storage.s3 import MultipartOutput

    uploads: dict = {}
    for name, url in outputs.items():
        if not url.startswith("s3://"):
            continue
        if not uploads:
            from media.video import frame_times
            if sound:
                from media.outputs import AudioPlan
                AudioPlan(sound).warn_if_dropped("an .ivf file")
            if timing and "://" not in timing and frame_times(timing) is not None:
                print(f"excamera: note: {timing} has a variable frame rate; an s3:// .ivf output is joined "
                      "from the chunks at a constant rate (write a local file to keep its times)", file=sys.stderr)
        try:
            upload = MultipartOutput(url)
            upload.start()
        except StorageError as e:
            _drop_uploads(uploads)
            raise PipelineError(f"{name}: {_line(e)}") from None
        uploads[name] = upload
    return uploads


def _joins(uploads: dict, part_min: int | None) -> dict:
    from coordinator.excamera_job import JoinPlan

    return {name: JoinPlan(u.url, u.upload_id, *([part_min] if part_min else [])) for name, u in uploads.items()}


def _drop_uploads(uploads: dict, planner=None) -> None:
    """The run failed: each upload aborted (its parts dropped), or, where the job's join task
    already completed it, the object deleted (the outputs are all written, or none)."""
    from media.outputs import warn_line

    for name, upload in uploads.items():
        upload.discard(planner is not None and planner.joined(name), warn_line)


def _run(spec, planner, inputs, outputs, config: RunConfig, frames_per_chunk, sound, timing, plan: tuple,
         t0: float):
    """The job run the way ``config`` says; (tasks run, frames per output, seconds streamed)."""
    stage_modules = plan[2]
    with tempfile.TemporaryDirectory(prefix="excamera-pipeline-", ignore_cleanup_errors=True) as root:
        # Local worker processes (and this one) read a local input where it lies.
        reach_local = not config.remote and type(config.backend).__name__ == "LocalBackend"
        read = functools.partial(_read_sources, spec, inputs, frames_per_chunk, reach_local=reach_local)
        if config.workers == 0:
            ran, frames_out, streamed = _pipeline_here(spec, planner, outputs, read, root, sound, timing)
        elif config.remote:
            ran, frames_out, streamed = _pipeline_remote(spec, planner, outputs, read, root, config,
                                                         plan, sound, timing)
        else:
            ran, frames_out, streamed = _pipeline_embedded(spec, planner, outputs, read, root, config,
                                                           stage_modules, sound, timing)
        if config.timeline:
            _add_to_timeline(config.timeline, planner, time.monotonic() - t0)
    return ran, frames_out, streamed


def _prepare(spec, stage_modules: tuple[str, ...], remote: bool) -> tuple[Spec, dict | None]:
    """The stage modules imported and the pipespec validated; its JSON too for a remote run."""
    from pipeline.stage import StageError, load_modules

    try:
        load_modules(stage_modules)
        doc = _spec_doc(spec) if remote else None
        return _load_spec(spec), doc
    except (SpecError, StageError) as e:
        raise PipelineError(str(e)) from None


def _planner(spec: Spec, scheduler, workers: int, on_progress):
    """The planner with its scheduler (the pipespec's unless ``scheduler`` names another)."""
    from pipeline.planner import PipelinePlanner
    from pipeline.schedulers import make_scheduler

    try:
        sched = make_scheduler(scheduler)
        sched.workers = max(1, workers)
        return PipelinePlanner(spec, on_progress=on_progress, scheduler=sched)
    except SpecError as e:
        raise PipelineError(str(e)) from None


def _check_storage(url: str) -> None:
    """A wrong bucket or missing credentials fail now, in seconds, before any input is read."""
    from storage import StorageError, open_storage

    try:
        open_storage(url).check()
    except StorageError as e:
        raise PipelineError(f"storage {url}: {_line(e).removeprefix(url + ': ')}") from None


def _start(planner, sources: dict) -> list:
    """The sources handed to the planner, and the first tasks it plans."""
    from coordinator.engine import PlanError

    for (name, port), items in sources.items():
        planner.add_input(name, port, items)
    try:
        first = planner.start()
    except PlanError as e:
        raise PipelineError(str(e)) from None
    if not first:
        raise PipelineError("the pipeline planned no task for its inputs")
    return first


def _spool(read, root: str, again: bool = False):
    """The sources read into files under ``root`` (their items, and the objects as (key, bytes)
    pairs read back one at a time) for a job's storage or a remote coordinator. ``again``: the
    files stay, and the pairs come from a callable that reads them afresh (a submission to a
    coordinator that restarted mid-upload is sent again from its start)."""
    spool = os.path.join(root, "spool")
    os.makedirs(spool, exist_ok=True)
    keys: list[str] = []

    def put(key, data):
        with open(os.path.join(spool, key.replace("/", "__")), "wb") as f:
            f.write(data)
        keys.append(key)

    return read(put), (functools.partial(pairs, spool, keys, keep=True) if again else pairs(spool, keys))


def _frames_written(planner, outputs) -> dict[str, int]:
    return {name: sum(i.count for i in planner.sink_items(name)) for name in outputs}


def _pipeline_here(spec, planner, outputs, read, root: str, sound: str | None = None,
                   timing: str | None = None):
    """Every task in this process (``workers=0``), its objects in a scratch directory."""
    from pipeline.values import decode
    from storage import LocalStorage

    here = LocalStorage(root).scoped("jobs/local")
    first = _start(planner, read(here.put))
    ran = run_here(planner, first, here)
    rest = {n: p for n, p in outputs.items() if n not in planner.joins}   # (joined in S3 by its tasks)
    write_outputs(spec, rest, _stored_values(spec, planner, here, decode), sound, timing)
    return ran, _frames_written(planner, outputs), {}


def _pipeline_remote(spec, planner, outputs, read, root: str, config: RunConfig, plan: tuple,
                     sound: str | None = None, timing: str | None = None):
    """The job and its planner (``plan``: the pipespec's JSON, the scheduler, the stage modules)
    sent to a running coordinator (``pipeline.remote``)."""
    from pipeline.remote import planner_json, run_remote

    sources, objects = _spool(read, root, again=True)
    first = _start(planner, sources)
    text = planner_json(plan[0], sources, *plan[1:], joins=planner.joins)
    ran, frames_out = run_remote(spec, planner, first, text, objects, outputs, config, sound, timing)
    return ran, frames_out, {}


def _pipeline_embedded(spec, planner, outputs, read, root: str, config: RunConfig, stage_modules,
                       sound: str | None = None, timing: str | None = None):
    """The job on an embedded coordinator (``coordinator.api.run_job``); ``.mpd`` outputs are
    written as it runs (``pipeline.live``), the others from the job's storage at the end."""
    import dataclasses

    from coordinator.api import JobFailed, run_job
    from coordinator.fsm import Job
    from coordinator.server import Coordinator
    from pipeline.live import LiveDash
    from pipeline.values import decode
    from storage import open_storage

    sources, objects = _spool(read, root)
    first = _start(planner, sources)
    job = Job("pipeline", planner.fsms(), tuple(first))
    job_id = Coordinator.new_job_id()
    where = config.storage or os.path.join(root, "store")
    live = LiveDash(spec, outputs, planner, where, job_id, sound, timing)
    try:
        try:
            with _worker_path(stage_modules), live:
                result = run_job(job, dataclasses.replace(config, storage=where), inputs=objects, planner=planner,
                                 job_id=job_id, ops_modules=("pipeline.worker_op", *stage_modules))
        except JobFailed as e:
            raise PipelineError(_line(e)) from None
        streamed = live.finish()
        job_storage = open_storage(result.storage_root).scoped(result.storage_prefix)
        rest = {n: p for n, p in outputs.items() if n not in streamed and n not in planner.joins}
        write_outputs(spec, rest, _stored_values(spec, planner, job_storage, decode), sound, timing)
    finally:
        _drop(config.storage, job_id, config.keep)
    return len(planner.tasks), _frames_written(planner, outputs), streamed


def pairs(spool: str, keys: list[str], keep: bool = False):
    """The spooled source objects, (key, bytes) one at a time, each file removed once read
    (unless ``keep``)."""
    for key in keys:
        path = os.path.join(spool, key.replace("/", "__"))
        with open(path, "rb") as f:
            data = f.read()
        if not keep:
            os.unlink(path)
        yield key, data


def _spec_doc(spec) -> dict:
    """The pipespec as JSON (a remote coordinator rebuilds the planner from it)."""
    import json

    if isinstance(spec, Mapping):
        return dict(spec)
    if isinstance(spec, Spec):
        if spec.doc is None:
            raise PipelineError("a remote coordinator needs the pipespec as JSON; this Spec was not made from it")
        return spec.doc
    try:
        with open(os.fspath(spec)) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise PipelineError(f"{spec}: {_line(e)}") from None


def _drop(storage: str | None, job_id: str, keep: bool) -> None:
    """Remove a job's objects from ``--storage`` (the default temporary directory goes anyway)."""
    if storage and not keep:
        from storage import StorageError, open_storage
        try:
            open_storage(storage).delete_prefix(f"jobs/{job_id}")
        except StorageError as e:
            print(f"excamera: warning: could not remove {storage}/jobs/{job_id}: {_line(e)}", file=sys.stderr)


def _stored_values(spec, planner, storage, decode):
    """``values_of`` for ``write_outputs``: a sink's items read from the job's storage, each
    checked against its digest."""
    def values_of(name: str) -> list:
        values = []
        for item in planner.sink_items(name):
            data = storage.get(item.key)
            if hashlib.sha256(data).hexdigest() != item.sha256:
                raise PipelineError(f"{name}: object {item.key} does not match its digest")
            values.append(decode(spec.outputs[name].port_type, data))
        return values
    return values_of


def _add_to_timeline(path: str, planner, seconds: float) -> None:
    """Add the tasks the DAG became (``planner.physical()``) to the timeline the coordinator
    wrote (or write one, for ``workers=0``), so ``excamera pipeline draw --timeline`` can draw them."""
    import json

    from codec.ivf import AtomicFile

    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, ValueError):
        doc = {"job": "local", "name": "pipeline", "status": "succeeded", "duration": round(seconds, 6),
               "workers": [], "tasks": {}}
    doc["pipeline"] = planner.physical()
    try:
        with AtomicFile(path) as out:
            out.write(json.dumps(doc, indent=1).encode())
    except OSError as e:
        raise PipelineError(f"timeline {path}: {_line(e)}") from None
