"""``run_pipeline``: a pipespec, input files and output files in; the outputs written, atomically.

DESIGN.md, "Pipelines". Everything a user can get wrong is checked before anything runs (the
spec, each input readable, each output writable), each as one ``PipelineError`` line. The
sources are read into items (``chunks`` ports: ``media_io.cut_input``; ``frame``:
``media_io.read_image``; ``frames``: batches of pictures read here), the ``PipelinePlanner``
plans the tasks, and:

* ``workers=0`` runs every task in this process, in the scheduler's order, through the same
  ``run_stage`` a worker calls (same objects, same bytes);
* ``workers=N`` runs the job on the embedded coordinator with N (+ ``spare``) local worker
  processes (``coordinator.api.run_job``): late binding, every object re-verified, lost work
  re-issued; the task ids and object keys depend on the data only, so the output is identical.

Each sink's items, in frame order, go to ``media_io.write_output`` (``.mpd`` outputs are written
while the job runs: ``pipeline.live``). With ``coordinator`` the job and its planner go to a
running coordinator instead (``pipeline.remote``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping
from typing import Any, Callable

from pipeline.spec import Spec, SpecError


class PipelineError(ValueError):
    """A pipeline that cannot run or did not finish: one line saying what and where."""


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


def _line(e: BaseException) -> str:
    text = (e.strerror if isinstance(e, OSError) and e.strerror else str(e)) or type(e).__name__
    return " ".join(text.split())


def _frame_batches(path: str, frames_per_chunk: int | None):
    """The pictures of ``path`` (anything ``excamera.video`` opens) in batches."""
    from excamera.video import open_video
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


def _source_values(name: str, path: str, port_type: str, frames_per_chunk: int | None):
    from pipeline import media_io

    if port_type == "chunks":
        return media_io.cut_input(path, frames_per_chunk)
    if port_type == "frame":
        return iter([media_io.read_image(path)])
    if port_type == "frames":
        return _frame_batches(path, frames_per_chunk)
    raise PipelineError(f"{name}: a source cannot feed a {port_type} port (chunks, frames or frame)")


def _read_sources(spec: Spec, inputs: Mapping[str, str], frames_per_chunk: int | None, put) -> dict:
    """Every source's items, its objects handed to ``put(key, data)``: (name, port) -> items."""
    from pipeline.delivery import Item

    out = {}
    for name, ports in spec.inputs.items():
        for port, port_type in ports.items():
            items = []
            try:
                for i, v in enumerate(_source_values(name, inputs[name], port_type, frames_per_chunk)):
                    data = v.to_bytes()
                    key = f"in/{name}/{port}/{i:06d}"
                    put(key, data)
                    items.append(Item(key, hashlib.sha256(data).hexdigest(), len(data), port_type, i,
                                      v.start, v.count, tuple(v.fps), dict(v.meta), f"{name}:{port}"))
            except PipelineError:
                raise
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
    """Run every task in this process (``--workers 0``); returns how many ran."""
    from coordinator.engine import PlanError
    from pipeline.planner import ARGS
    from pipeline.worker_op import run_stage
    from worker.ops import OperationError

    queue = [_Ready(t) for t in first_tasks]
    ran = 0
    while queue:
        # One worker here: a streaming scheduler holding everything back does not make it wait.
        ordered = (planner.order(queue, time.monotonic()) if len(queue) > 1 else queue) or queue
        task = ordered[0].spec
        queue = [r for r in queue if r.spec is not task]
        try:
            outputs = run_stage(storage, task_id=task.task_id, **{a: task.params[a] for a in ARGS if a != "steal"})
        except (OperationError, OSError, ValueError) as e:
            # In this process a task is not retried: a deterministic stage fails the same way again.
            raise PipelineError(f"task {task.task_id} failed: {_line(e)}") from None
        ran += 1
        try:
            queue.extend(_Ready(t) for t in planner.on_done(task.task_id, {"run": outputs}))
        except PlanError as e:
            raise PipelineError(str(e)) from None
    if not planner.complete():
        raise PipelineError("the planner stopped before every node finished (a delivery function "
                            "holds items back)")
    return ran


def run_pipeline(spec, inputs: Mapping[str, str], outputs: Mapping[str, str], *,
                 workers: int | None = None, spare: int = 0, coordinator: str | None = None,
                 certs: str | None = None, timeline: str | None = None, stage_modules=(),
                 on_progress: Callable[[str, int, int, bool], None] | None = None,
                 frames_per_chunk: int | None = None, max_attempts: int = 3,
                 storage_dir: str | None = None, timeout_s: float | None = None,
                 scheduler=None, storage: str | None = None, keep: bool = False,
                 backend: dict | None = None) -> dict[str, Any]:
    """Run the pipeline ``spec`` (a path, a parsed JSON object or a ``Spec``) on ``inputs``
    (source name -> file) and write ``outputs`` (sink name -> file). ``workers=None`` uses one
    worker per CPU; 0 runs in this process. ``on_progress(node, done, planned, finished)`` is
    called as tasks are planned and done. ``scheduler`` (a name or ``{"name": "streaming",
    "deadline": S}``, ``pipeline.schedulers``) overrides the pipespec's. ``storage`` puts the
    job's objects in a directory or ``s3://BUCKET/PREFIX`` (removed at the end unless ``keep``);
    ``backend`` is passed to ``run_job`` (``launcher_factory``, ``listen``, ``public_address``:
    Lambda workers). Returns a summary (tasks per node, seconds, the scheduler's report).
    ``PipelineError`` (one line) for anything wrong."""
    from coordinator.api import JobFailed, run_job
    from coordinator.engine import PlanError
    from coordinator.fsm import Job
    from coordinator.server import Coordinator
    from excamera.storage import LocalStorage, StorageError, open_storage
    from pipeline.live import LiveDash
    from pipeline.planner import PipelinePlanner
    from pipeline.schedulers import make_scheduler
    from pipeline.stage import StageError, load_modules
    from pipeline.values import decode

    t0 = time.monotonic()
    stage_modules = tuple(stage_modules)
    try:
        load_modules(stage_modules)
        doc = _spec_doc(spec) if coordinator else None
        spec = _load_spec(spec)
    except (SpecError, StageError) as e:
        raise PipelineError(str(e)) from None
    if workers is None:
        workers = os.cpu_count() or 1
    if workers < 0 or spare < 0:
        raise PipelineError(f"workers {workers} and spare {spare} must be 0 or more")
    if coordinator and (workers == 0 or not certs):
        raise PipelineError("--coordinator needs --workers N (N > 0) and --certs DIR")
    if coordinator and timeline:
        raise PipelineError("--timeline is written by an embedded coordinator; a running one keeps its own")
    if coordinator and (storage or backend):
        raise PipelineError("a running coordinator has its own storage and workers: leave out --storage "
                            "and --backend")
    _check_files(spec, inputs, outputs)
    try:
        sched = make_scheduler(scheduler if scheduler is not None else spec.scheduler)
        sched.workers = max(1, workers if workers is not None else (os.cpu_count() or 1))
        planner = PipelinePlanner(spec, on_progress=on_progress, scheduler=sched)
    except SpecError as e:
        raise PipelineError(str(e)) from None
    if storage and workers == 0:
        raise PipelineError("--storage is for the workers' job (--workers N); --workers 0 runs here")
    if storage:
        try:
            open_storage(storage).check()
        except StorageError as e:
            raise PipelineError(f"--storage {storage}: {_line(e)}") from None

    root = storage_dir or tempfile.mkdtemp(prefix="excamera-pipeline-")
    streamed: dict[str, float] = {}
    try:
        if workers == 0:
            here = LocalStorage(root).scoped("jobs/local")
            sources = _read_sources(spec, inputs, frames_per_chunk, here.put)
        else:
            spool = os.path.join(root, "spool")
            os.makedirs(spool, exist_ok=True)
            keys = []

            def put(key, data):
                with open(os.path.join(spool, key.replace("/", "__")), "wb") as f:
                    f.write(data)
                keys.append(key)

            sources = _read_sources(spec, inputs, frames_per_chunk, put)
        for (name, port), items in sources.items():
            planner.add_input(name, port, items)
        try:
            first = planner.start()
        except PlanError as e:
            raise PipelineError(str(e)) from None
        if not first:
            raise PipelineError("the pipeline planned no task for its inputs")
        if workers == 0:
            ran = run_here(planner, first, here)
        elif coordinator:
            from pipeline.remote import planner_json, run_remote

            text = planner_json(doc, sources, scheduler if scheduler is not None else spec.scheduler,
                                stage_modules)
            ran, frames_out = run_remote(spec, planner, first, text, pairs(spool, keys), outputs, coordinator,
                                         certs, workers, spare, max_attempts)
        else:
            job = Job("pipeline", planner.fsms(), tuple(first))
            job_id = Coordinator.new_job_id()
            where = storage or os.path.join(root, "store")
            live = LiveDash(spec, outputs, planner, where, job_id)
            try:
                with _worker_path(stage_modules), live:
                    result = run_job(job, inputs=pairs(spool, keys), workers=workers, spare=spare,
                                     max_attempts=max_attempts, storage=where, job_id=job_id,
                                     timeline=timeline, timeout_s=timeout_s, planner=planner,
                                     ops_modules=("pipeline.worker_op", *stage_modules), **(backend or {}))
            except JobFailed as e:
                _drop(storage, job_id, keep)
                raise PipelineError(_line(e)) from None
            except BaseException:
                _drop(storage, job_id, keep)
                raise
            job_storage = open_storage(result.storage_root).scoped(result.storage_prefix)
            ran = len(planner.tasks)
            streamed = live.finish()
        try:
            if not coordinator:
                rest = {n: p for n, p in outputs.items() if not (workers and n in streamed)}
                write_outputs(spec, rest, _stored_values(spec, planner, here if workers == 0 else job_storage,
                                                         decode))
        finally:
            if workers and not coordinator:
                _drop(storage, job_id, keep)
        if timeline:
            _add_to_timeline(timeline, planner, time.monotonic() - t0)
    finally:
        if storage_dir is None:
            shutil.rmtree(root, ignore_errors=True)
    return {"tasks": ran, "nodes": planner.progress(), "seconds": round(time.monotonic() - t0, 3),
            "outputs": frames_out if coordinator else {name: sum(i.count for i in planner.sink_items(name))
                                                       for name in outputs},
            "schedule": planner.scheduler.report(),
            "streamed": {n: round(s, 3) for n, s in streamed.items()}}


def pairs(spool: str, keys: list[str]):
    """The spooled source objects, (key, bytes) one at a time, each file removed once read."""
    for key in keys:
        path = os.path.join(spool, key.replace("/", "__"))
        with open(path, "rb") as f:
            data = f.read()
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
        from excamera.storage import StorageError, open_storage
        try:
            open_storage(storage).delete_prefix(f"jobs/{job_id}")
        except StorageError as e:
            print(f"excamera: warning: could not remove {storage}/jobs/{job_id}: {_line(e)}", file=sys.stderr)


def write_outputs(spec, outputs, values_of) -> None:
    """Each sink's values (``values_of(name)``, in frame order) to its file; on any failure none
    of the outputs is left behind."""
    from excamera.storage import StorageError
    from pipeline import media_io
    from pipeline.values import BadValue

    written = []
    try:
        for name, path in outputs.items():
            values = values_of(name)
            if not values:
                raise PipelineError(f"{name}: the pipeline produced nothing for this output")
            try:
                media_io.write_output(path, spec.outputs[name].port_type, values)
            except (ValueError, OSError) as e:
                raise PipelineError(f"{name}: {_line(e)}") from None
            written.append(path)
    except (BadValue, StorageError) as e:
        _remove(written)
        raise PipelineError(_line(e)) from None
    except BaseException:
        _remove(written)
        raise


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
        raise PipelineError(f"--timeline {path}: {_line(e)}") from None


def _remove(paths) -> None:
    for p in paths:
        with contextlib.suppress(OSError):
            os.unlink(p)
