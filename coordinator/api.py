"""The public Python API of the runtime: run an FSM job and get its verified results.

``run_job(job, inputs=..., workers=N, spare=K)`` starts an embedded coordinator (with its own
rendezvous, an ephemeral CA and N+K local ``excamera worker`` processes), runs the job, and
returns a ``JobResult`` whose objects were re-verified against storage; it raises ``JobFailed``
otherwise. With ``coordinator="HOST:PORT"`` and ``certs=DIR`` it submits to a running
coordinator over the Jobs service instead.

``embedded_coordinator(...)`` is the same embedded coordinator as an async context manager, for
callers that submit several jobs or watch the workers (tests kill them).
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from dataclasses import dataclass, field

from coordinator.fsm import Job
from excamera.storage import LocalStorage, ObjectRef, StorageError


class JobFailed(RuntimeError):
    """The job did not succeed; the message says which task failed and why."""

    def __init__(self, message: str, status: str = "failed"):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class JobResult:
    job_id: str
    objects: dict[str, dict[str, ObjectRef]]  # task id -> "<state>.<output>" -> verified object
    storage_root: str
    storage_prefix: str
    timeline: dict = field(default_factory=dict)

    def read(self, task_id: str, name: str | None = None) -> bytes:
        """The bytes of a result object (the only one of ``task_id`` if ``name`` is None),
        checked once more against its digest."""
        refs = self.objects[task_id]
        if name is None:
            if len(refs) != 1:
                raise KeyError(f"task {task_id} has {len(refs)} result objects; name one of {sorted(refs)}")
            (ref,) = refs.values()
        else:
            ref = refs[name]
        storage = LocalStorage(self.storage_root).scoped(self.storage_prefix)
        why = storage.verify(ref)
        if why is not None:
            raise StorageError(why)
        return storage.get(ref.key)


@contextlib.asynccontextmanager
async def embedded_coordinator(storage_dir: str, *, ops_modules: tuple[str, ...] = (),
                               launch_workers: bool = True, quiet_workers: bool = True,
                               rendezvous_limits: dict | None = None):
    """A started in-process coordinator and rendezvous on loopback with an ephemeral CA, and a
    local launcher whose workers get only the CA certificate and the client pair."""
    from coordinator.launcher import LocalLauncher
    from coordinator.server import Coordinator
    from excamera import tls

    bundle = tls.generate()
    with tempfile.TemporaryDirectory(prefix="excamera-certs-") as certs:
        tls.write(bundle.for_worker(), certs, overwrite=True)
        launcher = LocalLauncher(certs, ops_modules=ops_modules, quiet=quiet_workers) if launch_workers else None
        c = Coordinator(bundle, storage_dir, launcher=launcher, rendezvous_limits=rendezvous_limits)
        await c.start()
        try:
            yield c
        finally:
            await c.stop()


async def run_job_async(job: Job, *, inputs: dict[str, bytes] | None = None, workers: int = 4,
                        spare: int = 0, max_attempts: int = 3, storage_dir: str | None = None,
                        timeline: str | None = None, ops_modules: tuple[str, ...] = (),
                        timeout_s: float | None = None, on_event=None) -> JobResult:
    storage_dir = storage_dir or tempfile.mkdtemp(prefix="excamera-storage-")
    async with embedded_coordinator(storage_dir, ops_modules=ops_modules) as c:
        job_id, _ = await c.submit(job, workers=workers, spare=spare, max_attempts=max_attempts,
                                   inputs=inputs, timeline=timeline)
        pump = None
        if on_event is not None:
            pump = asyncio.create_task(_pump_events(c, job_id, on_event))
        try:
            outcome = await asyncio.wait_for(c.wait(job_id), timeout_s)
        except asyncio.TimeoutError:
            c.cancel(job_id)
            raise JobFailed(f"job {job_id}: not finished after {timeout_s} s; cancelled", "cancelled") from None
        finally:
            if pump is not None:
                await asyncio.wait([pump], timeout=1.0)
                pump.cancel()
        tl = c.engine.timeline(job_id)
    if outcome.status != "succeeded":
        raise JobFailed(f"job {job_id} {outcome.status}: {outcome.error}", outcome.status)
    return JobResult(job_id, outcome.objects, outcome.storage_root, outcome.storage_prefix, tl)


async def _pump_events(c, job_id: str, on_event) -> None:
    """Call ``on_event`` with each of the job's events (``jobs_pb2.JobEvent``, as the Jobs
    service's Watch streams them), from the first, until the job ends."""
    h = c.handles[job_id]
    q: asyncio.Queue = asyncio.Queue()
    for ev in h.events:
        q.put_nowait(ev)
    if h.done.done():
        q.put_nowait(None)
    else:
        h.watchers.append(q)
    try:
        while (ev := await q.get()) is not None:
            on_event(ev)
    finally:
        if q in h.watchers:
            h.watchers.remove(q)


async def submit_remote(job: Job, coordinator: str, certs: str, *, inputs=None, workers: int = 4,
                        spare: int = 0, max_attempts: int = 3, on_event=None) -> JobResult:
    """Submit ``job`` to a running coordinator over the Jobs service and watch it to the end."""
    import grpc

    from coordinator.fsm import job_to_proto
    from excamera import tls
    from protos import jobs_pb2 as jpb
    from protos import jobs_pb2_grpc as jpb_grpc

    bundle = tls.load(certs, need=tls.WORKER_FILES)
    spec = job_to_proto(job, workers=workers, spare=spare, max_attempts=max_attempts, inputs=inputs)
    async with grpc.aio.secure_channel(coordinator, tls.client_credentials(bundle)) as ch:
        stub = jpb_grpc.JobsStub(ch)
        ref = await stub.Submit(spec)
        final = None
        async for ev in stub.Watch(jpb.JobRef(job_id=ref.job_id)):
            if on_event is not None:
                on_event(ev)
            if ev.kind == "job" and ev.to_state != "running":
                final = ev
    if final is None or final.to_state != "succeeded":
        raise JobFailed(f"job {ref.job_id} {final.to_state if final else 'lost'}: "
                        f"{final.detail if final else 'the watch ended early'}")
    objects = {"": {o.key: ObjectRef(o.key, o.sha256, o.size) for o in final.objects}}
    return JobResult(ref.job_id, objects, "", f"jobs/{ref.job_id}")


def run_job(job: Job, *, inputs: dict[str, bytes] | None = None, workers: int = 4, spare: int = 0,
            max_attempts: int = 3, storage_dir: str | None = None, timeline: str | None = None,
            ops_modules: tuple[str, ...] = (), timeout_s: float | None = None,
            coordinator: str | None = None, certs: str | None = None, on_event=None) -> JobResult:
    """Run ``job`` to the end and return its verified results (``JobFailed`` otherwise).

    Embedded (default): a coordinator, a rendezvous and ``workers + spare`` local worker
    processes, all on loopback with an ephemeral CA; ``inputs`` (key -> bytes) are stored under
    the job's prefix in ``storage_dir`` (a new temporary directory if None) before it starts;
    ``timeline`` writes every worker's state history as JSON. ``ops_modules`` are imported by
    every worker (to register operations beyond the built-ins). With ``coordinator`` and
    ``certs``, the job goes to that coordinator instead (its storage is the coordinator's).
    ``on_event`` is called with each of the job's events (``jobs_pb2.JobEvent``: task and attempt
    changes, FSM transitions, stragglers, the job's end) as they happen, in either mode.
    """
    if coordinator:
        if not certs:
            raise ValueError("run_job: a remote coordinator needs certs (a directory with ca.pem, "
                             "client.pem, client.key)")
        return asyncio.run(submit_remote(job, coordinator, certs, inputs=inputs, workers=workers,
                                         spare=spare, max_attempts=max_attempts, on_event=on_event))
    return asyncio.run(run_job_async(job, inputs=inputs, workers=workers, spare=spare,
                                     max_attempts=max_attempts, storage_dir=storage_dir,
                                     timeline=timeline, ops_modules=ops_modules, timeout_s=timeout_s,
                                     on_event=on_event))


__all__ = ["JobFailed", "JobResult", "embedded_coordinator", "run_job", "run_job_async",
           "submit_remote"]
