"""The coordinator daemon: gRPC services around the ``Engine``, and its loop.

``Coordinator`` owns the engine, the job storage, a rendezvous (its own, in-process on another
port, unless given the address of one) and a launcher. ``await Coordinator.start()`` binds the
``Coordinator`` service (one bidirectional stream per worker) and the ``Jobs`` service on one
port (0 picks a free one) with mutual TLS. Its loop wakes on every observation (or every 100 ms
for timeouts), lets the engine observe and decide, then carries out the actions: commands and
shutdowns down the workers' streams, launches, mailbox releases, job ends, events to watchers.

Identity within a job (``security.tokens``): each job has a key derived from the coordinator's
secret, told only to the submitter. Every worker the coordinator launches gets its own worker id
and worker token, good for one connection; every command carries its task's rendezvous token.
The Jobs service takes inputs of any size as a chunked stream (``SubmitStream``) and returns a
succeeded job's result objects as chunked streams (``Fetch``, which, like ``Cancel``, needs the
job's key). A task's "done" event carries the output objects the coordinator accepted from it,
and while the job runs ``Fetch`` serves those too, so that a client can copy a job's output as
it is made (``docs/design/data-path.md``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import secrets
import time
from dataclasses import dataclass, field

import grpc

from coordinator import engine as eng
from coordinator import metrics
from coordinator.fsm import FsmError, Job, job_from_proto
from coordinator.health import Health
from coordinator.launcher import Launcher
from coordinator.submissions import SubmissionError, Submissions, die_at
from foundation.errors import ExcameraError
from security import tls, tokens
from storage import ObjectRef, Storage, StorageError, check_key, object_pairs, open_storage
from protos import common_pb2
from protos import coordinator_pb2 as cpb
from protos import coordinator_pb2_grpc as cpb_grpc
from protos import jobs_pb2 as jpb
from protos import jobs_pb2_grpc as jpb_grpc
from protos import values

log = logging.getLogger("excamera.coordinator")

JOB_METADATA = "x-excamera-job"
WORKER_METADATA = "x-excamera-worker"
TOKEN_METADATA = "x-excamera-token"
MAX_MESSAGE = 8 << 20
#: Chunks of streamed inputs and fetched results (well under MAX_MESSAGE).
DATA_CHUNK = 1 << 20
#: Default caps on a streamed submission's inputs: all of a job's together, and each one.
MAX_INPUT_BYTES = 16 << 30
MAX_INPUT_OBJECT_BYTES = 2 << 30
#: How long the rendezvous holds a job's messages (states) at most. The coordinator releases each
#: task's mailbox when the task is done, and the whole job when it ends, so this only frees what a
#: coordinator that died left behind: it outlasts any job, because a chunk re-issued after its
#: predecessor's state expired would wait for it in vain (the rendezvous's own default is 600 s,
#: and in an ExCamera job on a large fleet a chunk can wait that long for the serial rebase).
HELD_TTL_S = 7 * 24 * 3600.0
#: Liveness of a worker (docs/design/engine.md): the server pings every connection idle for
#: ``KEEPALIVE_S`` and drops it when no answer comes within ``KEEPALIVE_TIMEOUT_S``, which ends the
#: worker's stream, so the engine sees the worker lost and re-issues its task at once. The pings
#: are answered by gRPC's C core outside Python: a worker busy in a kernel that holds the GIL still
#: answers; a frozen one (SIGSTOP, a dead machine) does not. (Both ping limits must be set: gRPC
#: stops pinging a stream that sends no data after two pings, and without ``ping_timeout_ms`` an
#: unanswered ping is waited on for a minute.)
#: Why a draining coordinator refuses a submission (gRPC UNAVAILABLE: retry elsewhere or later).
DRAINING = "the coordinator is shutting down (draining its running jobs); submit again once it restarts"
KEEPALIVE_S = 2.0
KEEPALIVE_TIMEOUT_S = 3.0
SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.keepalive_time_ms", int(KEEPALIVE_S * 1000)),
    ("grpc.keepalive_timeout_ms", int(KEEPALIVE_TIMEOUT_S * 1000)),
    ("grpc.http2.ping_timeout_ms", int(KEEPALIVE_TIMEOUT_S * 1000)),
    ("grpc.http2.max_pings_without_data", 0),
    # workers ping too (worker.runtime, every few seconds): well above this, never a strike
    ("grpc.http2.min_ping_interval_without_data_ms", 1_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.max_concurrent_streams", 10_000),
]


#: Journal calls that write nothing (the rest are durable writes, timed into the journal metric).
_JOURNAL_READS = ("close", "load", "foreign_storage")

class InputError(ExcameraError):
    """A streamed submission that is malformed; ``code`` is the gRPC status name to answer."""

    code = "INVALID_ARGUMENT"


@dataclass
class JobHandle:
    job_id: str
    job_key: str
    task_key: bytes
    done: asyncio.Future
    events: list = field(default_factory=list)
    watchers: list = field(default_factory=list)
    timeline_path: str | None = None
    releases: set = field(default_factory=set)
    connected: set = field(default_factory=set)   # worker ids that have opened their stream
    unfetched: set | None = None  # keep=False: results of the ended job not fetched yet
    accepted: dict = field(default_factory=dict)  # key -> (task id, ObjectRef): done tasks' outputs

    async def follow(self):
        """The job's events (``jobs_pb2.JobEvent``), from the first, until the job ends."""
        q: asyncio.Queue = asyncio.Queue()
        for ev in self.events:
            q.put_nowait(ev)
        if self.done.done():
            q.put_nowait(None)
        else:
            self.watchers.append(q)
        try:
            while (ev := await q.get()) is not None:
                yield ev
        finally:
            if q in self.watchers:
                self.watchers.remove(q)


@dataclass(frozen=True)
class JobOutcome:
    job_id: str
    status: str
    error: str
    objects: dict[str, dict[str, ObjectRef]]
    storage_root: str
    storage_prefix: str


class Coordinator:
    """One coordinator: ``await start()``, ``submit``, ``wait``, ``cancel``, ``await stop()``."""

    def __init__(self, bundle: tls.Bundle, storage_root: "str | Storage", *, listen: str = "127.0.0.1:0",
                 rendezvous: str | None = None, launcher: Launcher | None = None, rendezvous_limits: dict | None = None,
                 max_input_bytes: int = MAX_INPUT_BYTES, max_input_object_bytes: int = MAX_INPUT_OBJECT_BYTES,
                 keep: bool = True, speculation: eng.Speculation | None = None,
                 public_address: str | None = None, planner_factory=None, journal=None):
        """``storage_root``: a directory, ``s3://BUCKET/PREFIX`` (``open_storage``) or a Storage;
        workers are told its URL. ``keep=False`` removes each job's objects once nobody can use
        them: a failed or cancelled job's when it ends, a succeeded job's inputs and intermediates
        when it ends and its results once each has been fetched (or when the coordinator stops).
        ``speculation`` tunes speculative execution (``coordinator.engine.Speculation``);
        ``public_address`` is where workers elsewhere (cloud functions) dial.
        ``planner_factory(json) -> (planner, first tasks)`` lets clients submit dynamic jobs
        (pipelines: ``pipeline.remote.planner_from_json``). A ``journal``
        (``coordinator.journal.Journal``, opened and locked) makes jobs durable: ``start``
        recovers what it holds before serving (``coordinator.recovery``)."""
        self.bundle = bundle
        self.journal = journal
        # Journalled: job keys outlive a restart; worker tokens carry the generation, so that the
        # workers of an earlier process are refused.
        self.secret = journal.secret if journal is not None else tokens.new_secret()
        self.generation = journal.generation if journal is not None else 0
        # One thread for the journal: its fsyncs never stall the loop, and its writes keep their order.
        self._journal_thread = None
        self.max_input_bytes = max_input_bytes
        self.max_input_object_bytes = max_input_object_bytes
        self._next_worker = 1
        self.storage = storage_root if isinstance(storage_root, Storage) else open_storage(storage_root)
        self.keep = keep
        self.planner_factory = planner_factory
        self.listen = listen
        self.rendezvous_address = rendezvous
        # Where workers elsewhere (cloud functions) dial; port 0 means the port bound here.
        self.public_address = public_address
        self.worker_rendezvous = ""
        self.launcher = launcher
        self.rendezvous_limits = rendezvous_limits or {}
        self.engine = eng.Engine(speculation=speculation)
        self.handles: dict[str, JobHandle] = {}
        self.submissions = Submissions()  # a submission sent again is its job (coordinator.submissions)
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
        # grpc.health.v1 on this port: SERVING once recovered and bound, NOT_SERVING from drain()
        self.health = Health()
        self.draining = False

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
        if self.journal is not None:  # recover before serving: every journalled job is known first
            from coordinator.recovery import Kinds, recover

            self.engine.done_log = []
            await recover(self, Kinds(JobHandle, JobOutcome, HELD_TTL_S))
        server = grpc.aio.server(options=SERVER_OPTIONS)
        await self.health.add_to(server)
        cpb_grpc.add_CoordinatorServicer_to_server(_CoordinatorServicer(self), server)
        jpb_grpc.add_JobsServicer_to_server(_JobsServicer(self), server)
        self.port = server.add_secure_port(self.listen, tls.server_credentials(self.bundle))
        if self.port == 0:
            raise OSError(f"coordinator: cannot bind {self.listen}")
        await server.start()
        self._server = server
        host = self.listen.rsplit(":", 1)[0]
        self.address = f"{'127.0.0.1' if host in ('0.0.0.0', '[::]', '') else host}:{self.port}"
        self.worker_rendezvous = self.rendezvous_address
        if self.public_address:
            phost, _, pport = self.public_address.rpartition(":")
            if pport in ("", "0"):
                self.public_address = f"{phost}:{self.port}"
            if self._rendezvous_server is not None:  # in-process: reached at the public host too
                self.worker_rendezvous = f"{phost}:{self._rendezvous_server.port}"
        if self.launcher is not None:
            self.launcher.coordinator = self.public_address or self.address
        self._loop_task = asyncio.create_task(self._loop())
        log.info("coordinator: serving on %s, rendezvous %s", self.address, self.rendezvous_address)
        await self.health.serving()   # (recovered above, before the port was bound)
        return self

    async def drain(self, seconds: float) -> int:
        """SIGTERM: ``NOT_SERVING`` and no new job admitted (``DRAINING``) at once; the running
        jobs go on for up to ``seconds``. Returns how many are still running; ``stop()`` then
        leaves them to the journal, which resumes them at the next start (without one they are
        cancelled). docs/design/service.md."""
        self.draining = True
        await self.health.draining()
        running = [j for j in self.engine.jobs.values() if j.status == "running"]
        log.info("coordinator: draining: %d job(s) running; up to %g s for them to end", len(running), seconds)
        deadline = time.monotonic() + seconds
        while running and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            running = [j for j in running if j.status == "running"]
        for job in running:
            log.info("coordinator: draining: job %s still running after %g s; %s", job.job_id, seconds,
                     "it resumes at the next start" if self.journal is not None else "cancelled (no journal)",
                     extra={"job": job.job_id})
        return len(running)

    async def stop(self, grace: float = 2.0) -> None:
        self._stopping = True
        for job in self.engine.jobs.values():
            if job.status == "running" and self.journal is None:  # journalled: resumes at the next start
                self.engine.observe_cancel(job.job_id)
        if self._loop_task is not None:
            self._wake.set()
            await asyncio.sleep(0)
            actions = self.engine.step()
            await self._journal_done()
            for action in actions:
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
        # A removal under way ends with its "purged" record (the workers are gone: it does not
        # wait for them); cut short, the next start would only purge the same prefix again.
        removing = [t for t in self._background if t.get_name().startswith("remove ")]
        if removing:
            await asyncio.wait(removing, timeout=grace)
        for t in list(self._background):
            t.cancel()
        if self._rdv_channel is not None:
            await self._rdv_channel.close()
        if self._rendezvous_server is not None:
            await self._rendezvous_server.stop(grace)
        if self.journal is not None:  # the jobs resume, and results are fetched, after a restart
            await self._journal_call("close")
            self._journal_thread.shutdown(wait=True)
        elif not self.keep:  # nobody can fetch a result after this: leave nothing behind
            for job_id in self.handles:
                await self._remove(job_id)

    # -- jobs -----------------------------------------------------------------------------------

    async def submit(self, job: Job, *, workers: int = 1, spare: int = 0, max_attempts: int = 3,
                     inputs=None, job_id: str | None = None, launch: bool = True, timeline: str | None = None,
                     rendezvous_limits: dict | None = None, planner=None, spec=None,
                     stored: list | None = None) -> tuple[str, str]:
        """Register ``job``, store its ``inputs`` (a mapping, or (key, bytes) pairs taken one at a
        time) under its prefix, open it at the rendezvous and let the engine start it. Returns
        (job id, job key): the key lets its holder cancel the job, fetch its results and mint worker
        tokens (``worker_tokens``) for workers of its own. A ``planner`` makes the job dynamic
        (``coordinator.engine.Planner``). Journalled, it returns once the job is durable: its
        ``spec`` (the ``JobSpec`` submitted; made from ``job`` if None: a planner is then not
        rebuilt at recovery) and its inputs' references (those stored here, and ``stored``, those
        a streamed submission stored already)."""
        job_id = job_id or self.new_job_id()
        if job_id in self.handles:
            raise FsmError(f"job {job_id}: already exists")
        key = tokens.job_key(self.secret, job_id)
        prefix = f"jobs/{check_key(job_id)}"
        storage = self.storage.scoped(prefix)
        try:
            if self.journal is not None and inputs:  # a crash mid-upload: its objects go at the next start
                await self._journal_call("begin", job_id, self.storage.url)
            refs = await _store_inputs(storage, inputs)
            self.submissions.claim(spec, job_id)
            if self.journal is not None:
                if spec is None:
                    from coordinator.fsm import job_to_proto

                    spec = job_to_proto(job, workers=workers, spare=spare, max_attempts=max_attempts)
                await self._journal_call("accept", job_id, spec.SerializeToString(), list(stored or ()) + refs,
                                         time.time(), self.storage.url)
                die_at("accepted")  # tests only: durable, but the submitter never hears of it
        except BaseException:  # a job that never started leaves nothing behind
            self.submissions.release(spec, job_id)
            try:
                await asyncio.to_thread(storage.delete_prefix)
            except (StorageError, OSError) as e:
                log.error("coordinator: job %s: removing its partial inputs: %s", job_id, e)
            await self._journal_quietly("drop", job_id)
            raise
        limits = {"ttl_s": HELD_TTL_S, **self.rendezvous_limits, **(rendezvous_limits or {})}
        task_key = tokens.task_key(key)
        await self.rendezvous_admin.open_job(job_id, task_key, **limits)
        handle = JobHandle(job_id, key, task_key, asyncio.get_running_loop().create_future(),
                           timeline_path=timeline)
        self.handles[job_id] = handle
        self.engine.add_job(job_id, job, storage, workers=workers, spare=spare,
                            max_attempts=max_attempts, launcher=launch and self.launcher is not None,
                            planner=planner)
        self._wake.set()
        return job_id, key

    @staticmethod
    def new_job_id() -> str:
        return f"job-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"

    def worker_tokens(self, job_id: str, count: int) -> list[tuple[str, str]]:
        """``count`` new (worker id, worker token) pairs for ``job_id``: ids unique in this
        coordinator, each token good for one connection as that id."""
        key = self.handles[job_id].job_key
        out = []
        for _ in range(count):
            wid = f"w{self._next_worker}"
            self._next_worker += 1
            out.append((wid, tokens.worker_token(key, wid, self.generation)))
        return out

    async def wait(self, job_id: str) -> JobOutcome:
        return await asyncio.shield(self.handles[job_id].done)

    def cancel(self, job_id: str) -> bool:
        job = self.engine.jobs.get(job_id)
        if job is None or job.status != "running":
            return False
        self.engine.observe_cancel(job_id)
        self._wake.set()
        return True

    def check_worker(self, job_id: str, worker_id: str, token: str) -> str | None:
        """Why worker ``worker_id`` of ``job_id`` presenting ``token`` may not connect, or None."""
        h = self.handles.get(job_id)
        if h is None or not worker_id or not tokens.same(tokens.worker_token(h.job_key, worker_id, self.generation),
                                                         token):
            return (f"job {job_id!r}: unknown job, or not a token for worker {worker_id!r}"
                    + (f" of generation {self.generation} (a worker of an earlier coordinator process "
                       f"holds one of an earlier generation)" if self.generation > 1 else ""))
        if worker_id in h.connected or worker_id in self.engine.workers:
            return f"job {job_id!r}: worker {worker_id!r} has connected already (a token is good for one connection)"
        job = self.engine.jobs.get(job_id)
        if job is not None and job.status != "running":  # a late (cloud) invocation: nothing to do
            return f"job {job_id!r} is {job.status}; worker {worker_id!r} is not needed"
        return None

    def timeline(self, job_id: str) -> dict:
        """The engine's timeline of the job, with its cost where the launcher can tell it."""
        tl = self.engine.timeline(job_id)
        if self.launcher is not None:
            try:
                cost = self.launcher.cost(job_id, tl)
            except Exception as e:  # noqa: BLE001 - a report must not fail the job
                log.warning("coordinator: job %s: cost: %s", job_id, e)
            else:
                if cost is not None:
                    tl["cost"] = cost
        return tl

    def planner_for(self, spec, job: Job):
        """The planner of a submitted dynamic job (``JobSpec.pipeline``), made by the
        ``planner_factory`` this coordinator was given; its first tasks must be the job's."""
        if not spec.pipeline:
            return None
        if self.planner_factory is None:
            raise InputError("this coordinator runs no pipelines (it was started without a planner factory)")
        try:
            planner, first = self.planner_factory(spec.pipeline)
        except ValueError as e:
            raise InputError(f"pipeline: {e}") from None
        if sorted(t.task_id for t in first) != sorted(t.task_id for t in job.tasks):
            raise InputError("pipeline: its planner's first tasks are not the job's")
        return planner

    def check_job_key(self, job_id: str, key: str) -> JobHandle | None:
        h = self.handles.get(job_id)
        return h if h is not None and tokens.same(h.job_key, key) else None

    # -- the journal ----------------------------------------------------------------------------

    def _journal_submit(self, method: str, *args) -> asyncio.Future:
        """``journal.<method>(*args)``, queued now in the journal's own thread (which runs the
        calls in the order queued)."""
        if self._journal_thread is None:
            from concurrent.futures import ThreadPoolExecutor

            self._journal_thread = ThreadPoolExecutor(1, thread_name_prefix="excamera-journal")
        fn = getattr(self.journal, method)
        if method not in _JOURNAL_READS:     # the others are durable writes: their latency is a metric
            return asyncio.get_running_loop().run_in_executor(
                self._journal_thread, lambda: metrics.journal_write(fn, *args))
        return asyncio.get_running_loop().run_in_executor(self._journal_thread, lambda: fn(*args))

    async def _journal_call(self, method: str, *args):
        return await self._journal_submit(method, *args)

    async def _journal_done(self) -> None:
        """Journal the tasks the engine's last step found done (verified), in one transaction,
        without waiting for it: the loop goes on while it is written, and the journal's thread
        keeps the order (a job's end, written after, waits for it). A result lost to a crash
        before it is written only runs again."""
        done = self.engine.done_log
        if not done:
            return
        self.engine.done_log = []

        def written(f: asyncio.Future) -> None:
            if not f.cancelled() and f.exception() is not None:
                log.error("coordinator: journal: recording %d result(s): %s", len(done), f.exception())

        self._journal_submit("record", done).add_done_callback(written)

    async def _journal_quietly(self, method: str, *args) -> None:
        if self.journal is None:
            return
        try:
            await self._journal_call(method, *args)
        except Exception as e:  # noqa: BLE001 - the job goes on; a restart may redo some of it
            log.error("coordinator: journal: %s %s: %s", method, args[0] if args else "", e)

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
                actions = self.engine.step()
                await self._journal_done()  # one transaction a step: results durable before acting on them
                for action in actions:
                    await self._do(action)
                if self.launcher is not None:
                    for job_id, count in self.launcher.reap():
                        self.engine.observe_launch_failed(job_id, count)
                    for job_id, why in self.launcher.errors():
                        self.engine.observe_fail(job_id, why)
                        self._wake.set()
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
            h = self.handles[self.engine.workers[action.worker_id].job_id]
            cmd = cpb.Command(seq=action.seq, task_id=action.task_id, attempt=action.attempt,
                              state=action.state, operation=action.operation,
                              timeout_s=action.timeout_s,
                              task_token=tokens.task_token(h.task_key, action.task_id))
            values.to_map(action.args, cmd.args)
            q.put_nowait(cpb.CoordinatorMessage(command=cmd))
            die_at(f"command:{action.task_id}")  # tests only: a coordinator lost with this task in flight
        elif isinstance(action, eng.StopWorker):
            q = self.outboxes.get(action.worker_id)
            if q is not None:
                q.put_nowait(cpb.CoordinatorMessage(shutdown=cpb.Shutdown(reason=action.reason)))
        elif isinstance(action, eng.Launch):
            if self.launcher is not None and not self._stopping:
                self.launcher.launch(action.job_id, self.worker_tokens(action.job_id, action.count))
        elif isinstance(action, eng.ReleaseMailbox):
            h = self.handles[action.job_id]
            h.releases.add(self._spawn(self._release(action.job_id, action.task_id)))
        elif isinstance(action, eng.Event):
            metrics.event(action)
            self._publish(action)
        elif isinstance(action, eng.JobEnded):
            h = self.handles[action.job_id]
            tl = self.timeline(action.job_id) if h.timeline_path or self.launcher is not None else None
            if tl is not None and "cost" in tl:
                from coordinator.cost import describe

                log.info("coordinator: job %s: %s", action.job_id, describe(tl["cost"]))
            if h.timeline_path:
                try:
                    write_timeline(h.timeline_path, tl)
                except OSError as e:
                    log.error("coordinator: timeline %s: %s", h.timeline_path, e)
            self._spawn(self._close_rendezvous(action.job_id))
            results = set() if action.status != "succeeded" else \
                {ref.key for refs in action.objects.values() for ref in refs.values()}
            if self.journal is not None:  # durable before any of its objects go
                await self._journal_quietly(
                    "end", action.job_id, action.status, action.error,
                    [ref for refs in action.objects.values() for ref in refs.values()], time.time(),
                    None if self.keep else results)
            if not h.done.done():
                h.done.set_result(JobOutcome(action.job_id, action.status, action.error,
                                             action.objects, self.storage.url,
                                             f"jobs/{action.job_id}"))
            if not self.keep:
                h.unfetched = set(results)
                self._spawn(self._remove(action.job_id, keep=results), name=f"remove {action.job_id}")
            for q in h.watchers:
                q.put_nowait(None)

    def _spawn(self, coro, name: str | None = None) -> asyncio.Task:
        t = asyncio.create_task(coro, name=name)
        self._background.add(t)
        t.add_done_callback(self._background.discard)
        return t

    async def _remove(self, job_id: str, keep: set[str] = frozenset(), settle_s: float = 30.0) -> None:
        """Delete the job's objects but ``keep`` (in a thread: S3 calls block), once the job's
        workers have hung up (up to ``settle_s``): a worker told to stop mid-operation may still
        be writing."""
        deadline = time.monotonic() + settle_s
        while not self._stopping and time.monotonic() < deadline and any(
                getattr(self.engine.workers.get(wid), "job_id", None) == job_id for wid in self.outboxes):
            await asyncio.sleep(0.1)
        storage = self.storage.scoped(f"jobs/{job_id}")

        def remove():
            if not keep:
                return storage.delete_prefix()
            gone = [k for k in storage.list() if k not in keep]
            for k in gone:
                storage.delete(k)
            return len(gone)

        try:
            n = await asyncio.to_thread(remove)
            log.info("coordinator: job %s: removed %d object(s)%s", job_id, n,
                     f", kept {len(keep)} result(s) until fetched" if keep else "")
        except (StorageError, OSError) as e:
            log.error("coordinator: job %s: removing its objects: %s", job_id, e)
        else:
            if not keep:
                await self._journal_quietly("purged", job_id)

    def fetched(self, job_id: str, key: str) -> None:
        """A result went out whole (or its caller released it); once every result has, the job's
        objects go (``keep=False``)."""
        h = self.handles.get(job_id)
        if self.keep or h is None or h.unfetched is None or key not in h.unfetched:
            return
        h.unfetched.discard(key)
        if self.journal is not None:
            self._spawn(self._journal_quietly("fetched", job_id, set(h.unfetched)))
        if not h.unfetched:
            self._spawn(self._remove(job_id), name=f"remove {job_id}")

    async def _release(self, job_id: str, task_id: str) -> None:
        from protos import rendezvous_pb2 as rpb
        from protos import rendezvous_pb2_grpc as rpb_grpc

        token = tokens.task_token(self.handles[job_id].task_key, task_id)
        try:
            await rpb_grpc.RendezvousStub(self._rdv_channel).Release(
                rpb.ReleaseRequest(recipient=task_id),
                metadata=((JOB_METADATA, job_id), (WORKER_METADATA, task_id), (TOKEN_METADATA, token)))
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
        elif ev.kind == "task" and ev.to_state == "done":
            # Its winning attempt's output objects as accepted (one message for every watcher,
            # embedded or over Watch); Fetch serves them while the job runs.
            task = self.engine.jobs[ev.job_id].tasks.get(ev.task_id)
            for outputs in (task.winner.outputs.values() if task is not None and task.winner else ()):
                for ref in outputs.values():
                    if isinstance(ref, ObjectRef):
                        msg.objects.add(key=ref.key, sha256=ref.sha256, size=ref.size)
                        h.accepted[ref.key] = (ev.task_id, ref)
        h.events.append(msg)
        for q in h.watchers:
            q.put_nowait(msg)


class _CoordinatorServicer(cpb_grpc.CoordinatorServicer):
    def __init__(self, coordinator: Coordinator):
        self.c = coordinator

    async def Work(self, request_iterator, context):
        c = self.c
        md = dict(context.invocation_metadata() or ())
        job_id, worker_id, token = (md.get(JOB_METADATA, ""), md.get(WORKER_METADATA, ""),
                                    md.get(TOKEN_METADATA, ""))
        why = c.check_worker(job_id, worker_id, token)
        if why is not None:
            log.warning("coordinator: refused a worker: %s", why, extra={"job": job_id, "worker": worker_id})
            code = grpc.StatusCode.ALREADY_EXISTS if "connected already" in why else grpc.StatusCode.PERMISSION_DENIED
            # Take its hello first: aborting while the worker is still sending it can reach the
            # worker as a bare INTERNAL error instead of this reason.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(context.read(), 5.0)
            await context.abort(code, why)
        handle = c.handles[job_id]
        handle.connected.add(worker_id)  # before any await: a second stream with this id is refused
        if c.launcher is not None:
            c.launcher.note_connected(job_id, worker_id)
        first = await context.read()
        if first is grpc.aio.EOF or first.WhichOneof("kind") != "hello":
            log.warning("coordinator: job %s: worker %s opened without hello; refused", job_id, worker_id)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message must be hello")
        hello = first.hello
        c.engine.observe_connect(job_id, f"{hello.name} (pid {hello.pid})", worker_id)
        outq: asyncio.Queue = asyncio.Queue()
        c.outboxes[worker_id] = outq
        c.wake()
        await context.write(cpb.CoordinatorMessage(welcome=cpb.Welcome(
            worker_id=worker_id, job_id=job_id, storage_root=c.storage.url,
            storage_prefix=f"jobs/{job_id}", rendezvous=c.worker_rendezvous or c.rendezvous_address)))
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
                metrics.result(c.engine, worker_id, r.seq, r.elapsed_s)
                c.engine.observe_result(worker_id, eng.Result(r.seq, r.task_id, r.ok, r.error, outputs))
                c.wake()
        except (asyncio.CancelledError, grpc.aio.AioRpcError, grpc.RpcError):
            pass
        except Exception:  # noqa: BLE001 - a malformed stream ends this worker, not the daemon
            log.exception("coordinator: worker %s: stream error", worker_id)
        finally:
            outq.put_nowait(None)


class _Upload:
    """The inputs of a streamed submission as they arrive: each input whole, sized and hashed
    before it is stored; caps on each input and on all of them."""

    def __init__(self, storage, max_total: int, max_object: int, already: int = 0):
        self.storage, self.max_total, self.max_object = storage, max_total, max_object
        self.total = already
        self.seen: set[str] = set()
        self.key = ""
        self.size = self.got = 0
        self.sha256 = ""
        self.hasher = None
        self.parts: list[bytes] = []
        self.stored: list[ObjectRef] = []

    def add(self, chunk) -> None:
        if chunk.key:
            self.finish()
            try:
                check_key(chunk.key)
            except StorageError as e:
                raise InputError(f"input {chunk.key!r}: {e}") from None
            if chunk.key in self.seen:
                raise InputError(f"input {chunk.key}: sent twice")
            if not (0 <= chunk.size <= self.max_object):
                err = InputError(f"input {chunk.key}: {chunk.size} bytes, over the {self.max_object}-byte "
                                 f"cap on one input (or negative)")
                err.code = "RESOURCE_EXHAUSTED"
                raise err
            if self.total + chunk.size > self.max_total:
                err = InputError(f"input {chunk.key}: the job's inputs would pass the {self.max_total}-byte cap")
                err.code = "RESOURCE_EXHAUSTED"
                raise err
            if len(chunk.sha256) != 64 or any(ch not in "0123456789abcdef" for ch in chunk.sha256):
                raise InputError(f"input {chunk.key}: sha256 must be 64 lowercase hex digits")
            self.seen.add(chunk.key)
            self.key, self.size, self.sha256, self.got = chunk.key, chunk.size, chunk.sha256, 0
            self.total += chunk.size
            self.hasher, self.parts = hashlib.sha256(), []
        elif not self.key:
            raise InputError("an input chunk with no key before it (name the input in its first chunk)")
        elif chunk.size or chunk.sha256:
            raise InputError(f"input {self.key}: size and sha256 go only in its first chunk")
        self.got += len(chunk.data)
        if self.got > self.size:
            raise InputError(f"input {self.key}: more than the {self.size} bytes declared")
        self.hasher.update(chunk.data)
        self.parts.append(chunk.data)

    def finish(self) -> None:
        if not self.key:
            return
        if self.got != self.size:
            raise InputError(f"input {self.key}: {self.got} bytes arrived, {self.size} declared")
        if self.hasher.hexdigest() != self.sha256:
            raise InputError(f"input {self.key}: sha256 does not match the bytes that arrived")
        self.storage.put(self.key, b"".join(self.parts))
        self.stored.append(ObjectRef(self.key, self.sha256, self.size))
        self.key, self.parts = "", []


class _JobsServicer(jpb_grpc.JobsServicer):
    def __init__(self, coordinator: Coordinator):
        self.c = coordinator

    async def Submit(self, request, context):
        if self.c.draining:
            await context.abort(grpc.StatusCode.UNAVAILABLE, DRAINING)
        try:
            known = self.c.submissions.find(request)
            if known is not None:  # sent again (the reply was lost): the job it already is
                return jpb.JobRef(job_id=known, job_key=tokens.job_key(self.c.secret, known))
            job = job_from_proto(request)
            for key in request.inputs:
                check_key(key)
            planner = self.c.planner_for(request, job)
            job_id, key = await self.c.submit(
                job, workers=request.workers or 1, spare=request.spare,
                max_attempts=request.max_attempts or 3, inputs=dict(request.inputs), planner=planner,
                spec=request)
        except (FsmError, StorageError, InputError, SubmissionError) as e:
            log.warning("coordinator: refused a job: %s", e)
            await context.abort(getattr(grpc.StatusCode, getattr(e, "code", "INVALID_ARGUMENT")), str(e))
        return jpb.JobRef(job_id=job_id, job_key=key)

    async def SubmitStream(self, request_iterator, context):
        """The spec, then the inputs in chunks, stored under the job's prefix as each one ends;
        the job starts once all are whole. Anything wrong: nothing of it stays in storage."""
        c = self.c
        if c.draining:
            await context.abort(grpc.StatusCode.UNAVAILABLE, DRAINING)
        job_id, upload, submitted = c.new_job_id(), None, False
        storage = c.storage.scoped(f"jobs/{job_id}")
        try:
            try:
                spec = job = None
                async for part in request_iterator:
                    kind = part.WhichOneof("kind")
                    if spec is None:
                        if kind != "spec":
                            raise InputError("the first part of a streamed submission must be the job spec")
                        spec = part.spec
                        known = c.submissions.find(spec)
                        if known is not None:  # sent again (the reply was lost): the job it already is
                            submitted = True  # (nothing of this stream was stored)
                            log.info("coordinator: job %s: its submission came again; answered with it", known)
                            return jpb.JobRef(job_id=known, job_key=tokens.job_key(c.secret, known))
                        job = job_from_proto(spec)
                        planner = c.planner_for(spec, job)
                        if c.journal is not None:  # a crash mid-upload: its objects go at the next start
                            await c._journal_call("begin", job_id, c.storage.url)
                        upload = _Upload(storage, c.max_input_bytes, c.max_input_object_bytes)
                        for key, data in spec.inputs.items():  # small inline inputs count too
                            upload.add(jpb.InputChunk(key=key, size=len(data),
                                                      sha256=hashlib.sha256(data).hexdigest(), data=data))
                    elif kind != "input":
                        raise InputError("a second job spec in one submission")
                    else:
                        die_at("upload")  # tests only: a coordinator lost mid-upload
                        upload.add(part.input)
                if spec is None:
                    raise InputError("an empty submission (no job spec)")
                upload.finish()
                job_id, key = await c.submit(job, workers=spec.workers or 1, spare=spec.spare,
                                             max_attempts=spec.max_attempts or 3, job_id=job_id, planner=planner,
                                             spec=spec, stored=upload.stored)
                submitted = True

                def orphaned(ctx, job_id=job_id):
                    # The client went away before it got the job's reference (Ctrl-C as the
                    # submission ended): nobody can watch, fetch or cancel the job; cancel it.
                    if ctx.cancelled() and c.cancel(job_id):
                        log.info("coordinator: job %s: its submitter went away; cancelled", job_id)

                context.add_done_callback(orphaned)
            except (FsmError, StorageError, InputError, SubmissionError) as e:
                log.warning("coordinator: refused a job: %s", e)
                await context.abort(getattr(grpc.StatusCode, getattr(e, "code", "INVALID_ARGUMENT")), str(e))
        finally:
            if not submitted:  # refused, or the client went away mid-upload
                for k in storage.list():
                    storage.delete(k)
                await c._journal_quietly("drop", job_id)
        return jpb.JobRef(job_id=job_id, job_key=key)

    async def Watch(self, request, context):
        h = self.c.handles.get(request.job_id)
        if h is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no job {request.job_id!r}")
        async for ev in h.follow():
            yield ev

    async def _owned(self, request, context) -> JobHandle:
        if request.job_id not in self.c.handles:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no job {request.job_id!r}")
        h = self.c.check_job_key(request.job_id, request.job_key)
        if h is None:
            log.warning("coordinator: refused a call on job %s: wrong job key", request.job_id)
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"job {request.job_id!r}: wrong job key")
        return h

    async def Cancel(self, request, context):
        await self._owned(request, context)
        return jpb.CancelReply(cancelled=self.c.cancel(request.job_id))

    async def Fetch(self, request, context):
        """A succeeded job's result object, or while the job runs an object a done task of it
        produced (as its "done" event announced it), re-verified, in chunks."""
        h = await self._owned(request, context)
        job = self.c.engine.jobs[request.job_id]
        if job.status == "running":
            task_id, ref = h.accepted.get(request.key, ("", None))
            task = job.tasks.get(task_id)
            if ref is None or task is None or task.status != "done":
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                    f"job {request.job_id} is running; only a succeeded job's results, or "
                                    f"the objects of its tasks that are done, can be fetched")
        elif job.status != "succeeded":
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                f"job {request.job_id} is {job.status}; only a succeeded job's results can be fetched")
        else:
            refs = {ref.key: ref for objs in job.objects.values() for ref in objs.values()}
            ref = refs.get(request.key)
        if ref is None:
            await context.abort(grpc.StatusCode.NOT_FOUND,
                                f"job {request.job_id}: {request.key!r} is not one of its results "
                                f"({', '.join(sorted(refs)) or 'none'})")
        if request.release:  # (the caller has its bytes: they may go once the rest are fetched)
            if job.status != "succeeded":
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                    f"job {request.job_id} is {job.status}; only a succeeded job's results "
                                    f"can be released")
            yield jpb.DataChunk(object=common_pb2.ObjectRef(key=ref.key, sha256=ref.sha256, size=ref.size))
            self.c.fetched(request.job_id, ref.key)
            return
        try:
            data = job.storage.get(ref.key)
        except (StorageError, OSError) as e:
            data, why = b"", str(e)
        else:
            why = None if hashlib.sha256(data).hexdigest() == ref.sha256 and len(data) == ref.size \
                else "its bytes no longer match the verified digest"
        if why is not None:
            log.error("coordinator: job %s: result %s: %s", request.job_id, ref.key, why)
            await context.abort(grpc.StatusCode.DATA_LOSS, f"job {request.job_id}: result {ref.key}: {why}")
        view = memoryview(data)
        first = common_pb2.ObjectRef(key=ref.key, sha256=ref.sha256, size=ref.size)
        yield jpb.DataChunk(object=first, data=bytes(view[:DATA_CHUNK]))
        for start in range(DATA_CHUNK, len(view), DATA_CHUNK):
            yield jpb.DataChunk(data=bytes(view[start:start + DATA_CHUNK]))
        self.c.fetched(request.job_id, ref.key)

    async def List(self, request, context):
        out = jpb.JobList()
        for job in self.c.engine.jobs.values():
            out.jobs.add(job_id=job.job_id, name=job.job.name, status=job.status,
                         tasks=len(job.tasks),
                         done=sum(1 for t in job.tasks.values() if t.status == "done"))
        return out


#: Inputs stored at once by ``submit`` (each held in memory until stored).
INPUT_PUTS_IN_FLIGHT = 8


async def _store_inputs(storage, inputs) -> list[ObjectRef]:
    """Put the inputs (taken one at a time from ``inputs``), several at once, in threads: a put
    may be a network round trip (S3), and the loop serves other jobs meanwhile. Returns the
    stored objects' references."""
    pending: set[asyncio.Future] = set()
    refs: list[ObjectRef] = []
    try:
        for k, data in object_pairs(inputs):
            if len(pending) >= INPUT_PUTS_IN_FLIGHT:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for f in done:
                    refs.append(f.result())
            pending.add(asyncio.ensure_future(asyncio.to_thread(storage.put, k, data)))
    finally:
        if pending:  # let every put in flight end before raising (nothing half-done left behind)
            done, _ = await asyncio.wait(pending)
    for f in pending:
        refs.append(f.result())
    return refs


def write_timeline(path: str, timeline: dict) -> None:
    """Write the timeline JSON under a temporary name, then rename."""
    from codec.ivf import AtomicFile

    with AtomicFile(path) as out:
        out.write(json.dumps(timeline, indent=1).encode())
