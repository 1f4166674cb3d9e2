"""The coordinator daemon: gRPC services around the ``Engine``, and its loop.

``Coordinator`` owns the engine, the job storage, a rendezvous (its own, in-process on another
port, unless given the address of one) and a launcher. ``await Coordinator.start()`` binds the
``Coordinator`` service (one bidirectional stream per worker) and the ``Jobs`` service on one
port (0 picks a free one) with mutual TLS. Its loop wakes on every observation (or every 100 ms
for timeouts), lets the engine observe and decide, then carries out the actions: commands and
shutdowns down the workers' streams, launches, mailbox releases, job ends, events to watchers.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import secrets
import tempfile
import time
from dataclasses import dataclass, field

import grpc

from coordinator import engine as eng
from coordinator.fsm import FsmError, Job, job_from_proto
from excamera import tls
from excamera.storage import LocalStorage, ObjectRef, StorageError, check_key
from protos import coordinator_pb2 as cpb
from protos import coordinator_pb2_grpc as cpb_grpc
from protos import jobs_pb2 as jpb
from protos import jobs_pb2_grpc as jpb_grpc
from protos import values

log = logging.getLogger("excamera.coordinator")

JOB_METADATA = "x-excamera-job"
TOKEN_METADATA = "x-excamera-token"
MAX_MESSAGE = 8 << 20
SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.max_concurrent_streams", 10_000),
]


@dataclass
class JobHandle:
    job_id: str
    token: str
    done: asyncio.Future
    events: list = field(default_factory=list)
    watchers: list = field(default_factory=list)
    timeline_path: str | None = None
    releases: set = field(default_factory=set)


@dataclass(frozen=True)
class JobOutcome:
    job_id: str
    status: str
    error: str
    objects: dict[str, dict[str, ObjectRef]]
    storage_root: str
    storage_prefix: str


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Coordinator:
    """One coordinator: ``await start()``, ``submit``, ``wait``, ``cancel``, ``await stop()``."""

    def __init__(self, bundle: tls.Bundle, storage_root: str, *, listen: str = "127.0.0.1:0",
                 rendezvous: str | None = None, launcher=None, rendezvous_limits: dict | None = None):
        self.bundle = bundle
        self.storage = LocalStorage(storage_root)
        self.listen = listen
        self.rendezvous_address = rendezvous
        self.launcher = launcher
        self.rendezvous_limits = rendezvous_limits or {}
        self.engine = eng.Engine()
        self.handles: dict[str, JobHandle] = {}
        self.outboxes: dict[str, asyncio.Queue] = {}
        self.port = 0
        self.address = ""
        self._server = None
        self._rendezvous_server = None
        self._rdv_channel = None
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task | None = None
        self._background: set[asyncio.Task] = set()
        self._stopping = False

    # -- life -----------------------------------------------------------------------------------

    async def start(self) -> "Coordinator":
        from rendezvous.client import CHANNEL_OPTIONS, RendezvousAdmin

        if self.rendezvous_address is None:
            from rendezvous.server import serve as serve_rendezvous

            host = self.listen.rsplit(":", 1)[0]
            self._rendezvous_server = await serve_rendezvous(f"{host}:0", self.bundle)
            self.rendezvous_address = self._rendezvous_server.address
        # The coordinator presents the server certificate to the rendezvous: only it may open jobs.
        self._rdv_channel = grpc.aio.secure_channel(
            self.rendezvous_address, tls.client_credentials(self.bundle, as_server=True),
            options=CHANNEL_OPTIONS)
        self.rendezvous_admin = RendezvousAdmin(self._rdv_channel)
        server = grpc.aio.server(options=SERVER_OPTIONS)
        cpb_grpc.add_CoordinatorServicer_to_server(_CoordinatorServicer(self), server)
        jpb_grpc.add_JobsServicer_to_server(_JobsServicer(self), server)
        self.port = server.add_secure_port(self.listen, tls.server_credentials(self.bundle))
        if self.port == 0:
            raise OSError(f"coordinator: cannot bind {self.listen}")
        await server.start()
        self._server = server
        host = self.listen.rsplit(":", 1)[0]
        self.address = f"{'127.0.0.1' if host in ('0.0.0.0', '[::]', '') else host}:{self.port}"
        if self.launcher is not None:
            self.launcher.coordinator = self.address
        self._loop_task = asyncio.create_task(self._loop())
        log.info("coordinator: serving on %s, rendezvous %s", self.address, self.rendezvous_address)
        return self

    async def stop(self, grace: float = 2.0) -> None:
        self._stopping = True
        for job in self.engine.jobs.values():
            if job.status == "running":
                self.engine.observe_cancel(job.job_id)
        if self._loop_task is not None:
            self._wake.set()
            await asyncio.sleep(0)
            for action in self.engine.step():
                await self._do(action)
            self._loop_task.cancel()
            # (asyncio.wait_for in Python 3.11 may swallow a cancel; _stopping ends the loop too)
            try:
                await asyncio.wait_for(self._loop_task, 5.0)
            except (asyncio.CancelledError, asyncio.TimeoutError):
                pass
        for q in self.outboxes.values():
            q.put_nowait(None)
        if self._server is not None:
            await self._server.stop(grace)
        if self.launcher is not None:
            await self.launcher.stop()
        for t in list(self._background):
            t.cancel()
        if self._rdv_channel is not None:
            await self._rdv_channel.close()
        if self._rendezvous_server is not None:
            await self._rendezvous_server.stop(grace)

    # -- jobs -----------------------------------------------------------------------------------

    async def submit(self, job: Job, *, workers: int = 1, spare: int = 0, max_attempts: int = 3,
                     inputs: dict[str, bytes] | None = None, job_id: str | None = None,
                     launch: bool = True, timeline: str | None = None,
                     rendezvous_limits: dict | None = None) -> tuple[str, str]:
        """Register ``job``, store its ``inputs`` under its prefix, open it at the rendezvous and
        let the engine start it. Returns (job id, worker token)."""
        job_id = job_id or f"job-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
        if job_id in self.handles:
            raise FsmError(f"job {job_id}: already exists")
        token = secrets.token_urlsafe(24)
        prefix = f"jobs/{check_key(job_id)}"
        storage = self.storage.scoped(prefix)
        for key, data in (inputs or {}).items():
            storage.put(key, data)
        limits = dict(self.rendezvous_limits, **(rendezvous_limits or {}))
        await self.rendezvous_admin.open_job(job_id, token, **limits)
        handle = JobHandle(job_id, token, asyncio.get_running_loop().create_future(),
                           timeline_path=timeline)
        self.handles[job_id] = handle
        self.engine.add_job(job_id, job, storage, workers=workers, spare=spare,
                            max_attempts=max_attempts, launcher=launch and self.launcher is not None)
        self._wake.set()
        return job_id, token

    async def wait(self, job_id: str) -> JobOutcome:
        return await asyncio.shield(self.handles[job_id].done)

    def cancel(self, job_id: str) -> bool:
        job = self.engine.jobs.get(job_id)
        if job is None or job.status != "running":
            return False
        self.engine.observe_cancel(job_id)
        self._wake.set()
        return True

    def check_token(self, job_id: str, token: str) -> bool:
        h = self.handles.get(job_id)
        return h is not None and hmac.compare_digest(_digest(h.token), _digest(token or ""))

    # -- the loop -------------------------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    async def _loop(self) -> None:
        while not self._stopping:
            try:
                await asyncio.wait_for(self._wake.wait(), 0.1)
            except asyncio.TimeoutError:
                pass
            # Let observations that arrive together be handled in one step: each step scans
            # the jobs' tasks, so with a thousand workers one step per result would dominate.
            await asyncio.sleep(0.002)
            self._wake.clear()
            try:
                for action in self.engine.step():
                    await self._do(action)
                if self.launcher is not None:
                    for job_id, count in self.launcher.reap():
                        self.engine.observe_launch_failed(job_id, count)
            except Exception:  # noqa: BLE001 - a bug must not silently stop every job
                log.exception("coordinator: internal error in the loop")
                for h in self.handles.values():
                    if not h.done.done():
                        h.done.set_exception(RuntimeError("coordinator internal error; see the log"))
                raise

    async def _do(self, action) -> None:
        if isinstance(action, eng.SendCommand):
            q = self.outboxes.get(action.worker_id)
            if q is None:  # gone already; the engine will hear of it
                return
            cmd = cpb.Command(seq=action.seq, task_id=action.task_id, attempt=action.attempt,
                              state=action.state, operation=action.operation,
                              timeout_s=action.timeout_s)
            values.to_map(action.args, cmd.args)
            q.put_nowait(cpb.CoordinatorMessage(command=cmd))
        elif isinstance(action, eng.StopWorker):
            q = self.outboxes.get(action.worker_id)
            if q is not None:
                q.put_nowait(cpb.CoordinatorMessage(shutdown=cpb.Shutdown(reason=action.reason)))
        elif isinstance(action, eng.Launch):
            if self.launcher is not None and not self._stopping:
                self.launcher.launch(action.job_id, self.handles[action.job_id].token, action.count)
        elif isinstance(action, eng.ReleaseMailbox):
            h = self.handles[action.job_id]
            h.releases.add(self._spawn(self._release(action.job_id, action.task_id)))
        elif isinstance(action, eng.Event):
            self._publish(action)
        elif isinstance(action, eng.JobEnded):
            h = self.handles[action.job_id]
            if h.timeline_path:
                try:
                    write_timeline(h.timeline_path, self.engine.timeline(action.job_id))
                except OSError as e:
                    log.error("coordinator: timeline %s: %s", h.timeline_path, e)
            self._spawn(self._close_rendezvous(action.job_id))
            if not h.done.done():
                h.done.set_result(JobOutcome(action.job_id, action.status, action.error,
                                             action.objects, str(self.storage.root),
                                             f"jobs/{action.job_id}"))
            for q in h.watchers:
                q.put_nowait(None)

    def _spawn(self, coro) -> asyncio.Task:
        t = asyncio.create_task(coro)
        self._background.add(t)
        t.add_done_callback(self._background.discard)
        return t

    async def _release(self, job_id: str, task_id: str) -> None:
        from protos import rendezvous_pb2 as rpb
        from protos import rendezvous_pb2_grpc as rpb_grpc

        try:
            await rpb_grpc.RendezvousStub(self._rdv_channel).Release(
                rpb.ReleaseRequest(recipient=task_id),
                metadata=((JOB_METADATA, job_id), (TOKEN_METADATA, self.handles[job_id].token)))
        except grpc.aio.AioRpcError as e:
            log.warning("coordinator: job %s: releasing %s's mailbox: %s", job_id, task_id, e.details())

    async def _close_rendezvous(self, job_id: str) -> None:
        pending = [t for t in self.handles[job_id].releases if not t.done()]
        if pending:  # close after the releases, which would otherwise find the job gone
            await asyncio.gather(*pending, return_exceptions=True)
        try:
            await self.rendezvous_admin.close_job(job_id)
        except grpc.aio.AioRpcError as e:
            log.warning("coordinator: job %s: closing it at the rendezvous: %s", job_id, e.details())

    def _publish(self, ev: eng.Event) -> None:
        h = self.handles.get(ev.job_id)
        if h is None:
            return
        msg = jpb.JobEvent(job_id=ev.job_id, time=ev.time, kind=ev.kind, task_id=ev.task_id,
                           worker_id=ev.worker_id, from_state=ev.from_state, to_state=ev.to_state,
                           detail=ev.detail)
        if ev.kind == "job" and ev.to_state == "succeeded":
            for refs in self.engine.jobs[ev.job_id].objects.values():
                for ref in refs.values():
                    msg.objects.add(key=ref.key, sha256=ref.sha256, size=ref.size)
        h.events.append(msg)
        for q in h.watchers:
            q.put_nowait(msg)


class _CoordinatorServicer(cpb_grpc.CoordinatorServicer):
    def __init__(self, coordinator: Coordinator):
        self.c = coordinator

    async def Work(self, request_iterator, context):
        c = self.c
        md = dict(context.invocation_metadata() or ())
        job_id, token = md.get(JOB_METADATA, ""), md.get(TOKEN_METADATA, "")
        if not c.check_token(job_id, token):
            log.warning("coordinator: refused a worker: job %r unknown or wrong token", job_id)
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"job {job_id!r}: unknown job or wrong token")
        first = await context.read()
        if first is grpc.aio.EOF or first.WhichOneof("kind") != "hello":
            log.warning("coordinator: job %s: a worker opened without hello; refused", job_id)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message must be hello")
        hello = first.hello
        worker_id = c.engine.observe_connect(job_id, f"{hello.name} (pid {hello.pid})")
        outq: asyncio.Queue = asyncio.Queue()
        c.outboxes[worker_id] = outq
        c.wake()
        await context.write(cpb.CoordinatorMessage(welcome=cpb.Welcome(
            worker_id=worker_id, job_id=job_id, storage_root=str(c.storage.root),
            storage_prefix=f"jobs/{job_id}", rendezvous=c.rendezvous_address)))
        reader = asyncio.create_task(self._read(worker_id, context, outq))
        try:
            while True:
                msg = await outq.get()
                if msg is None:
                    break
                await context.write(msg)
                if msg.WhichOneof("kind") == "shutdown":
                    # Let the worker hang up first; do not wait forever for it.
                    try:
                        await asyncio.wait_for(asyncio.shield(reader), 5.0)
                    except asyncio.TimeoutError:
                        pass
                    break
        finally:
            reader.cancel()
            c.outboxes.pop(worker_id, None)
            c.engine.observe_disconnect(worker_id)
            c.wake()

    async def _read(self, worker_id: str, context, outq: asyncio.Queue) -> None:
        c = self.c
        try:
            while True:
                msg = await context.read()
                if msg is grpc.aio.EOF:
                    break
                if msg.WhichOneof("kind") != "result":
                    c.engine._reject(worker_id, f"unexpected {msg.WhichOneof('kind')} message")
                    continue
                r = msg.result
                try:
                    outputs = values.from_map(r.outputs)
                except ValueError as e:
                    c.engine._reject(worker_id, f"malformed result for seq {r.seq}: {e}")
                    continue
                c.engine.observe_result(worker_id, eng.Result(r.seq, r.task_id, r.ok, r.error, outputs))
                c.wake()
        except (asyncio.CancelledError, grpc.aio.AioRpcError, grpc.RpcError):
            pass
        except Exception:  # noqa: BLE001 - a malformed stream ends this worker, not the daemon
            log.exception("coordinator: worker %s: stream error", worker_id)
        finally:
            outq.put_nowait(None)


class _JobsServicer(jpb_grpc.JobsServicer):
    def __init__(self, coordinator: Coordinator):
        self.c = coordinator

    async def Submit(self, request, context):
        try:
            job = job_from_proto(request)
            for key in request.inputs:
                check_key(key)
            job_id, token = await self.c.submit(
                job, workers=request.workers or 1, spare=request.spare,
                max_attempts=request.max_attempts or 3, inputs=dict(request.inputs))
        except (FsmError, StorageError) as e:
            log.warning("coordinator: refused a job: %s", e)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        return jpb.JobRef(job_id=job_id, token=token)

    async def Watch(self, request, context):
        h = self.c.handles.get(request.job_id)
        if h is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no job {request.job_id!r}")
        q: asyncio.Queue = asyncio.Queue()
        for ev in h.events:
            q.put_nowait(ev)
        if h.done.done():
            q.put_nowait(None)
        else:
            h.watchers.append(q)
        try:
            while True:
                ev = await q.get()
                if ev is None:
                    return
                yield ev
        finally:
            if q in h.watchers:
                h.watchers.remove(q)

    async def Cancel(self, request, context):
        if request.job_id not in self.c.handles:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no job {request.job_id!r}")
        return jpb.CancelReply(cancelled=self.c.cancel(request.job_id))

    async def List(self, request, context):
        out = jpb.JobList()
        for job in self.c.engine.jobs.values():
            out.jobs.add(job_id=job.job_id, name=job.job.name, status=job.status,
                         tasks=len(job.tasks),
                         done=sum(1 for t in job.tasks.values() if t.status == "done"))
        return out


def write_timeline(path: str, timeline: dict) -> None:
    """Write the timeline JSON under a temporary name, then rename."""
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".timeline.", suffix=".tmp", dir=d)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(timeline, f, indent=1)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
