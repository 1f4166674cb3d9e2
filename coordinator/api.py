"""The public Python API of the runtime: run an FSM job and get its verified results.

``run_job(job, RunConfig(workers=N, spare=K), inputs=...)`` starts an embedded coordinator (with
its own rendezvous, an ephemeral CA and N+K local ``excamera worker`` processes), runs the job,
and returns a ``JobResult`` whose objects were re-verified against storage; it raises
``JobFailed`` otherwise. One function per way to run: ``run_job_async`` (embedded) and
``submit_remote`` (a running coordinator); ``run_job`` picks by the configuration's backend. With
``RunConfig(backend=RemoteCoordinator("HOST:PORT", certs=DIR))`` the job goes to a running
coordinator over the Jobs service: the inputs go up as a chunked stream, the job's events
come back as it runs, and its result objects come back as chunked streams, each checked against
its digest; interrupting the caller (Ctrl-C) cancels the job on the coordinator.

``embedded_coordinator(...)`` is the same embedded coordinator as an async context manager, for
callers that submit several jobs or watch the workers (tests kill them).
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from coordinator.config import ConfigError, LaunchedBackend, LocalBackend, RemoteCoordinator, RunConfig
from coordinator.fsm import Job
from storage import ObjectRef, StorageError, object_pairs, open_storage

#: A job's input objects: key -> bytes, or (key, bytes) pairs produced one at a time.
Inputs = Mapping[str, bytes] | Iterable[tuple[str, bytes]] | None


class JobFailed(RuntimeError):
    """The job did not succeed; the message says which task failed and why."""

    def __init__(self, message: str, status: str = "failed", job_id: str = ""):
        super().__init__(message)
        self.status = status
        self.job_id = job_id


@dataclass(frozen=True)
class JobResult:
    job_id: str
    objects: dict[str, dict[str, ObjectRef]]  # task id -> "<state>.<output>" -> verified object
    storage_root: str       # a directory or s3://BUCKET/PREFIX (open_storage)
    storage_prefix: str
    timeline: dict = field(default_factory=dict)
    data: dict[str, bytes] = field(default_factory=dict)  # key -> bytes, fetched from a remote coordinator

    def read(self, task_id: str, name: str | None = None) -> bytes:
        """The bytes of a result object (the only one of ``task_id`` if ``name`` is None),
        checked once more against its digest."""
        if self.data:  # a remote job: its objects were fetched and checked (in objects[""])
            return self.data[_pick(self.objects.get(task_id) or self.objects[""], name, "").key]
        ref = _pick(self.objects[task_id], name, f"task {task_id} has ")
        storage = open_storage(self.storage_root).scoped(self.storage_prefix)
        why = storage.verify(ref)
        if why is not None:
            raise StorageError(why)
        return storage.get(ref.key)


def _pick(refs: dict[str, ObjectRef], name: str | None, whose: str) -> ObjectRef:
    """The result object called ``name``, or the only one when ``name`` is None."""
    if name is not None:
        return refs[name]
    if len(refs) != 1:
        raise KeyError(f"{whose}{len(refs)} result objects; name one of {sorted(refs)}")
    (ref,) = refs.values()
    return ref


@contextlib.asynccontextmanager
async def embedded_coordinator(storage: str, *, backend: LocalBackend | LaunchedBackend = LocalBackend(),
                               ops_modules: tuple[str, ...] = (), launch_workers: bool = True,
                               quiet_workers: bool = True, rendezvous_limits: dict | None = None,
                               speculation=None, journal=None):
    """A started in-process coordinator and rendezvous with an ephemeral CA, its objects in
    ``storage`` (a directory or ``s3://BUCKET/PREFIX``). With a ``LocalBackend`` it listens on
    loopback and a local launcher starts workers that get only the CA certificate and the client
    pair (none with ``launch_workers=False``); with a ``LaunchedBackend``, that backend's launcher
    (e.g. ``LambdaLauncher``, which issues per-job client certificates with the ephemeral CA) and
    workers dialling its ``public_address``."""
    if not storage:
        raise ValueError("embedded_coordinator: give storage (a directory or s3://BUCKET/PREFIX)")
    from coordinator.launcher import LocalLauncher
    from coordinator.server import Coordinator
    from security import tls

    launched = isinstance(backend, LaunchedBackend)
    public_address = backend.public_address if launched else None
    hosts = list(tls.DEFAULT_HOSTS)
    if public_address and public_address.rpartition(":")[0] not in hosts:
        hosts.append(public_address.rpartition(":")[0])
    bundle = tls.generate(hosts)
    with tempfile.TemporaryDirectory(prefix="excamera-certs-") as certs:
        tls.write(bundle.for_worker(), certs, overwrite=True)
        if launched:
            launcher = backend.launcher_factory(bundle)
        else:
            launcher = LocalLauncher(certs, ops_modules=ops_modules, quiet=quiet_workers) if launch_workers else None
        c = Coordinator(bundle, storage, launcher=launcher, rendezvous_limits=rendezvous_limits,
                        speculation=speculation, listen=backend.listen if launched else "127.0.0.1:0",
                        public_address=public_address, journal=journal)
        await c.start()
        try:
            yield c
        finally:
            await c.stop()


async def run_job_async(job: Job, config: RunConfig | None = None, *, inputs: Inputs = None,
                        ops_modules: tuple[str, ...] = (), on_event=None, planner=None,
                        job_id: str | None = None) -> JobResult:
    """``job`` on an embedded coordinator (``config.backend``: local processes or launched
    workers); see ``run_job``."""
    config = config or RunConfig()
    if config.remote:
        raise ConfigError("run_job_async runs an embedded coordinator; submit_remote reaches a running one")
    if config.worker_count < 1:
        raise ConfigError("a job needs one worker at least")
    root = config.storage or tempfile.mkdtemp(prefix="excamera-storage-")
    async with embedded_coordinator(root, backend=config.backend, ops_modules=ops_modules) as c:
        job_id, _ = await c.submit(job, workers=config.worker_count, spare=config.spare,
                                   max_attempts=config.max_attempts, inputs=inputs, timeline=config.timeline,
                                   planner=planner, job_id=job_id)
        pump = None
        if on_event is not None:
            pump = asyncio.create_task(_pump_events(c, job_id, on_event))
        try:
            outcome = await asyncio.wait_for(c.wait(job_id), config.timeout_s)
        except asyncio.TimeoutError:
            c.cancel(job_id)
            raise JobFailed(f"job {job_id}: not finished after {config.timeout_s} s; cancelled", "cancelled",
                            job_id) from None
        finally:
            if pump is not None:
                await asyncio.wait([pump], timeout=1.0)
                pump.cancel()
        tl = c.timeline(job_id)
    if outcome.status != "succeeded":
        raise JobFailed(f"job {job_id} {outcome.status}: {outcome.error}", outcome.status, job_id)
    return JobResult(job_id, outcome.objects, outcome.storage_root, outcome.storage_prefix, tl)


async def _pump_events(c, job_id: str, on_event) -> None:
    """Call ``on_event`` with each of the job's events (``jobs_pb2.JobEvent``, as the Jobs
    service's Watch streams them), from the first, until the job ends. A task's "done" event
    carries its winning attempt's output objects, as the coordinator accepted them
    (``coordinator.server``), so that the caller can read them while the job runs
    (``excamera.commands.encode_output``)."""
    async for ev in c.handles[job_id].follow():
        on_event(ev)


#: gRPC client options for the Jobs service (chunks are 1 MiB; allow headroom).
CLIENT_OPTIONS = [("grpc.max_receive_message_length", 8 << 20), ("grpc.max_send_message_length", 8 << 20)]
UPLOAD_CHUNK = 1 << 20


def _submit_parts(spec, inputs: Inputs):
    """A streamed submission: the spec, then each input in chunks (key, size, sha256 first)."""
    import hashlib

    from protos import jobs_pb2 as jpb

    yield jpb.SubmitPart(spec=spec)
    for key, data in object_pairs(inputs):
        view = memoryview(data)
        yield jpb.SubmitPart(input=jpb.InputChunk(key=key, size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                                                  data=bytes(view[:UPLOAD_CHUNK])))
        for start in range(UPLOAD_CHUNK, len(view), UPLOAD_CHUNK):
            yield jpb.SubmitPart(input=jpb.InputChunk(data=bytes(view[start:start + UPLOAD_CHUNK])))


class _Fetched:
    """One object coming back from the Jobs service's ``Fetch`` in chunks: reassembled, and
    checked against the digest its first chunk names."""

    def __init__(self, job_id: str, key: str, max_bytes: int):
        self.where, self.key, self.max_bytes = f"job {job_id}: result {key}", key, max_bytes
        self.ref, self.parts, self.got = None, [], 0

    def add(self, chunk) -> None:
        if self.ref is None:
            if not chunk.HasField("object"):
                raise StorageError(f"{self.where}: the first chunk does not name it")
            self.ref = chunk.object
            if self.ref.key != self.key or not 0 <= self.ref.size <= self.max_bytes:
                raise StorageError(f"{self.where}: the coordinator sent {self.ref.key!r}, {self.ref.size} bytes")
        self.got += len(chunk.data)
        if self.got > self.ref.size:
            raise StorageError(f"{self.where}: more than the {self.ref.size} bytes announced")
        self.parts.append(chunk.data)

    def data(self) -> bytes:
        import hashlib

        ref = self.ref
        if ref is None:
            raise StorageError(f"{self.where}: nothing came back")
        data = b"".join(self.parts)
        if len(data) != ref.size or hashlib.sha256(data).hexdigest() != ref.sha256:
            raise StorageError(f"{self.where}: {len(data)} bytes that do not match the verified digest "
                               f"(sha256 {ref.sha256[:16]}..., {ref.size} bytes)")
        return data


async def fetch_remote(stub, job_id: str, job_key: str, key: str, max_bytes: int = 1 << 40) -> bytes:
    """One result object of a succeeded remote job (or, while it runs, an object of a task of it
    that is done), reassembled and checked against its digest."""
    from protos import jobs_pb2 as jpb

    got = _Fetched(job_id, key, max_bytes)
    async for chunk in stub.Fetch(jpb.FetchRequest(job_id=job_id, job_key=job_key, key=key)):
        got.add(chunk)
    return got.data()


class RemoteObjects:
    """A running coordinator's objects of one job, read with ``get(key)`` from a thread that is
    not the caller's event loop's (the streamed output's writer, ``excamera.commands.encode_output``)
    over a blocking channel of its own, with the credentials and options of ``submit_remote``:
    each object checked against the digest the coordinator accepted; tried again while the
    coordinator is away, for up to ``remote.reconnect_s`` seconds. ``close()`` when done."""

    #: A hang-catcher per object (1 MiB chunks on a loopback or LAN take well under a second).
    TIMEOUT_S = 600.0

    def __init__(self, remote: RemoteCoordinator, job_id: str, job_key: str):
        self.remote, self.job_id, self.job_key = remote, job_id, job_key
        self._channel = self._stub = None

    def get(self, key: str) -> bytes:
        return self._fetch(key, False)

    def release(self, keys: Iterable[str]) -> None:
        """The succeeded job's results ``keys``, fetched while it ran, are held here: the
        coordinator counts them fetched (with ``keep=False`` its objects go once all are)."""
        for key in keys:
            self._fetch(key, True)

    def _fetch(self, key: str, release: bool) -> bytes:
        import time

        import grpc

        from coordinator import reconnect
        from protos import jobs_pb2 as jpb
        from protos import jobs_pb2_grpc as jpb_grpc
        from security import tls

        if self._channel is None:
            bundle = tls.load(self.remote.certs, need=tls.WORKER_FILES)
            self._channel = grpc.secure_channel(self.remote.address, tls.client_credentials(bundle),
                                                options=CLIENT_OPTIONS + reconnect.CHANNEL_OPTIONS)
            self._stub = jpb_grpc.JobsStub(self._channel)
        request = jpb.FetchRequest(job_id=self.job_id, job_key=self.job_key, key=key, release=release)
        deadline, pause = time.monotonic() + self.remote.reconnect_s, reconnect.BACKOFF_S[0]
        while True:
            got = _Fetched(self.job_id, key, 1 << 40)
            try:
                for chunk in self._stub.Fetch(request, timeout=self.TIMEOUT_S):
                    got.add(chunk)
                return b"" if release else got.data()
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() >= deadline:
                    raise StorageError(f"job {self.job_id}: {key}: {e.code().name.lower()}: "
                                       f"{' '.join((e.details() or '').split()) or 'no detail'}") from None
            time.sleep(pause)
            pause = min(pause * 2, reconnect.BACKOFF_S[1])

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None


async def submit_remote(job: Job, remote: RemoteCoordinator, *, inputs: Inputs = None, workers: int = 4,
                        spare: int = 0, max_attempts: int = 3, on_event=None, on_submitted=None,
                        pipeline: str = "", on_ref=None, fetch: bool = True) -> JobResult:
    """Submit ``job`` to the running coordinator ``remote`` over the Jobs service (inputs
    streamed in chunks), watch it to the end and fetch its result objects. ``on_submitted(job_id)``
    is called once the coordinator has accepted the job; ``pipeline`` makes it a dynamic job
    (``pipeline.remote``). If this coroutine is cancelled (Ctrl-C under ``asyncio.run``) after
    that, the job is cancelled on the coordinator before it returns. While the coordinator is
    away (a restart) every call is tried again for up to ``remote.reconnect_s`` seconds
    (``coordinator.reconnect``); the submission too, from its start, when ``inputs`` can be read
    again (a mapping, or a callable returning the pairs afresh each time it is called). The spec
    carries a submission id made once here, so a submission sent again after the coordinator
    journalled it (and died before replying) is answered with that job, not a second one
    (``coordinator.submissions``). ``on_ref(job_id, job_key)`` is called then too (to read the
    job's objects while it runs: ``RemoteObjects``); with ``fetch=False`` the result objects are
    not fetched (``JobResult.objects`` only: the caller fetches them)."""
    import secrets

    import grpc

    from coordinator import reconnect
    from coordinator.fsm import job_to_proto
    from security import tls
    from protos import jobs_pb2 as jpb
    from protos import jobs_pb2_grpc as jpb_grpc

    bundle = tls.load(remote.certs, need=tls.WORKER_FILES)
    spec = job_to_proto(job, workers=workers, spare=spare, max_attempts=max_attempts)
    spec.pipeline = pipeline  # a dynamic job's planner (pipeline.remote), rebuilt by the coordinator
    spec.submission_id = secrets.token_hex(16)  # the same on every try of this submission
    again = reconnect.RECONNECT_S if isinstance(inputs, Mapping) or callable(inputs) else 0.0
    wait = remote.reconnect_s
    async with grpc.aio.secure_channel(remote.address, tls.client_credentials(bundle),
                                       options=CLIENT_OPTIONS + reconnect.CHANNEL_OPTIONS) as ch:
        stub = jpb_grpc.JobsStub(ch)
        ref = await reconnect.call(lambda: stub.SubmitStream(_submit_parts(
            spec, inputs() if callable(inputs) else inputs)), min(again, wait))
        reconnect.remember(ref.job_id, ref.job_key, remote.address)
        if on_submitted is not None:
            on_submitted(ref.job_id)
        if on_ref is not None:
            on_ref(ref.job_id, ref.job_key)
        try:
            final = await reconnect.watch(stub, ref.job_id, wait, on_event)
            if final is None or final.to_state != "succeeded":
                raise JobFailed(f"job {ref.job_id} {final.to_state if final else 'lost'}: "
                                f"{final.detail if final else 'the watch ended early'}",
                                final.to_state if final else "failed")
            objects = {"": {o.key: ObjectRef(o.key, o.sha256, o.size) for o in final.objects}}
            data = {key: await reconnect.call(lambda key=key: fetch_remote(stub, ref.job_id, ref.job_key, key), wait)
                    for key in (objects[""] if fetch else ())}
        except asyncio.CancelledError:
            try:  # the caller gave up: do not leave the job running on the coordinator
                await asyncio.wait_for(stub.Cancel(jpb.JobRef(job_id=ref.job_id, job_key=ref.job_key)), 10)
            except (grpc.aio.AioRpcError, asyncio.TimeoutError):
                pass
            raise
    return JobResult(ref.job_id, objects, "", f"jobs/{ref.job_id}", data=data)


def run_job(job: Job, config: RunConfig | None = None, *, inputs: Inputs = None,
            ops_modules: tuple[str, ...] = (), on_event=None, planner=None,
            job_id: str | None = None) -> JobResult:
    """Run ``job`` as ``config`` says (``coordinator.config.RunConfig``; the default: one local
    worker process per CPU) and return its verified results (``JobFailed`` otherwise).

    Embedded (a ``LocalBackend`` or ``LaunchedBackend``): a coordinator, a rendezvous and
    ``workers + spare`` workers, with an ephemeral CA; ``inputs`` (a mapping key -> bytes, or an
    iterable of (key, bytes) pairs read one at a time, as a spooled input's) are stored under the
    job's prefix (``jobs/JOB_ID``, ``job_id`` if given) in ``config.storage`` (a new temporary
    directory if None) before it starts, and the results stay there for ``JobResult.read``
    (removing them is the caller's). ``ops_modules`` are imported by every local worker (to
    register operations beyond the built-ins). A ``planner`` (``coordinator.engine.Planner``)
    makes the job dynamic; embedded only (the Jobs service cannot carry one).

    Remote (a ``RemoteCoordinator``): the job goes to that coordinator (its storage is its own).
    ``on_event`` is called with each of the job's events (``jobs_pb2.JobEvent``: task and attempt
    changes, FSM transitions, stragglers, the job's end) as they happen, in either mode.
    """
    config = config or RunConfig()
    if isinstance(config.backend, RemoteCoordinator):
        if planner is not None:
            raise ConfigError("run_job: a dynamic job (planner) cannot go to a remote coordinator yet")
        return asyncio.run(submit_remote(job, config.backend, inputs=inputs, workers=config.worker_count,
                                         spare=config.spare, max_attempts=config.max_attempts,
                                         on_event=on_event))
    return asyncio.run(run_job_async(job, config, inputs=inputs, ops_modules=ops_modules, on_event=on_event,
                                     planner=planner, job_id=job_id))


__all__ = ["ConfigError", "JobFailed", "JobResult", "LaunchedBackend", "LocalBackend", "RemoteCoordinator",
           "RemoteObjects", "RunConfig", "embedded_coordinator", "run_job", "run_job_async", "submit_remote"]
