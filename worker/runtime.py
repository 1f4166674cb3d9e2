"""The worker: dial the coordinator, hold one bidirectional stream, run the commands it sends.

A worker starts generic (it knows its job, its worker id and that id's token, nothing else) and
takes whatever task the coordinator gives it: late binding. It answers every command with a typed
result, runs operations in-process from a ``Registry``, reads and writes through the job's storage
prefix and reaches other workers through the rendezvous, acting there as the command's task with
the task token the command brings (and as no other task). It exits when told (``Shutdown``) or when the
coordinator is gone (the stream ends).

``run_worker`` is a coroutine, so one process can hold many lightweight workers (the load
benchmark runs hundreds per process), each with its own mutual-TLS channels.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time

import grpc

from security import tls
from storage.speculative import SpeculativeStorage
from storage import StorageError, open_storage
from protos import coordinator_pb2 as pb
from protos import coordinator_pb2_grpc as pb_grpc
from protos import values
from worker.ops import DEFAULT, OpContext, OperationError, Registry

log = logging.getLogger("excamera.worker")

JOB_METADATA = "x-excamera-job"
WORKER_METADATA = "x-excamera-worker"
TOKEN_METADATA = "x-excamera-token"
#: Seconds a stopping worker waits for its writes under way before it hangs up.
STOP_WRITES_S = 10.0
#: The worker's side of liveness: it pings the coordinator (a frozen or vanished coordinator ends
#: the stream, and the worker exits) at most every 5 s while idle on the wire, with no limit on
#: pings without data; the coordinator pings every worker more often (coordinator.server), and
#: accepts these (its minimum interval is 1 s).
CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 5_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.http2.ping_timeout_ms", 5_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", 8 << 20),
    ("grpc.max_send_message_length", 8 << 20),
    # One real connection per worker, even when many workers share a process.
    ("grpc.use_local_subchannel_pool", 1),
]


def _one_line(exc: BaseException) -> str:
    """The error line a failed command's result carries. Unlike ``foundation.errors.one_line`` it
    keeps an OSError's errno and file name, gives a gRPC error its status name, and names the
    class of an exception no operation meant to raise (a bug, to be told apart from bad input)."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, grpc.aio.AioRpcError):
        text = f"{exc.code().name}: {exc.details()}"
    elif not isinstance(exc, (OperationError, ValueError, OSError)):
        text = f"{type(exc).__name__}: {text}"
    return " ".join(text.split())[:2000]


async def run_worker(coordinator: str, bundle: tls.Bundle, job_id: str, worker_id: str, token: str, *,
                     registry: Registry = DEFAULT, name: str | None = None,
                     can_take=None, stats: dict | None = None) -> str:
    """Serve one job as worker ``worker_id`` (``token`` is its worker token) until told to stop
    or the coordinator goes away; returns why it ended. ``can_take(timeout_s)``, if given, is
    asked before each command (with the command's state timeout): when it says no, the worker
    hangs up without running it (a cloud function about to reach its own time limit), and the
    coordinator re-issues the task elsewhere. ``stats`` (a dict), if given, counts the commands
    run under ``"commands"`` and notes when the first one came (``time.monotonic()``) under
    ``"first_command"``.

    The steps: open the stream and say hello (``_hello``), open the job's storage and the
    rendezvous the welcome names, then run commands as they come (``_Session.serve``)."""
    metadata = ((JOB_METADATA, job_id), (WORKER_METADATA, worker_id), (TOKEN_METADATA, token))
    creds = tls.client_credentials(bundle)
    name = name or f"{socket.gethostname()}:{os.getpid()}"
    async with grpc.aio.secure_channel(coordinator, creds, options=CHANNEL_OPTIONS) as channel:
        call = pb_grpc.CoordinatorStub(channel).Work(metadata=metadata)
        session = _Session(call, job_id, name, registry, can_take, stats)
        try:
            welcome = await _hello(call, name, registry)
            if welcome is None:
                return "refused: no welcome"
            try:
                session.storage = await _job_storage(welcome)
            except StorageError as e:
                return f"refused: storage: {e}"
            session.open_rendezvous(welcome.rendezvous, creds)
            return await session.serve()
        except grpc.aio.AioRpcError as e:
            if e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
                return f"coordinator gone: {e.code().name}"
            return f"refused: {e.code().name}: {e.details()}"
        finally:
            await session.close()


async def _hello(call, name: str, registry: Registry):
    """Say who this worker is and what it can run; the coordinator's ``Welcome``, or None when it
    answers anything else."""
    await call.write(pb.WorkerMessage(hello=pb.Hello(name=name, pid=os.getpid(),
                                                     operations=registry.names())))
    first = await call.read()
    if first is grpc.aio.EOF or first.WhichOneof("kind") != "welcome":
        return None
    return first.welcome


async def _job_storage(welcome) -> SpeculativeStorage:
    """The job's storage: a directory, or s3://BUCKET/PREFIX (boto3's own chain finds the
    credentials; making its client takes most of a second, so it is made off the loop), confined
    to the job's prefix. StorageError when it cannot be opened."""
    opened = await asyncio.to_thread(open_storage, welcome.storage_root)
    return SpeculativeStorage(opened.scoped(welcome.storage_prefix))


class _Session:
    """One worker's stream after the welcome: one command at a time, each run as a task so the
    stream is read (a ``Shutdown``, a command refused while busy) while it runs."""

    def __init__(self, call, job_id: str, name: str, registry: Registry, can_take, stats: dict | None):
        self.call, self.job_id, self.name, self.registry = call, job_id, name, registry
        self.can_take, self.stats = can_take, stats
        self.storage = None
        self.rdv_channel = None
        self.write_lock = asyncio.Lock()
        self.scratch_owner: tuple[str, int] | None = None
        self.scratch: dict[str, bytes] = {}
        self.running: asyncio.Task | None = None
        self.busy = asyncio.Event()  # set while a command runs

    def open_rendezvous(self, address: str, creds) -> None:
        if address:
            from rendezvous.client import CHANNEL_OPTIONS as RDV_OPTIONS
            self.rdv_channel = grpc.aio.secure_channel(
                address, creds, options=RDV_OPTIONS + [("grpc.use_local_subchannel_pool", 1)])

    async def serve(self) -> str:
        """Read the stream until it ends or says to stop; why it ended."""
        while True:
            msg = await self.call.read()
            if msg is grpc.aio.EOF:
                return "coordinator closed the stream"
            kind = msg.WhichOneof("kind")
            if kind == "shutdown":
                return f"shutdown: {msg.shutdown.reason}"
            if kind != "command":
                log.warning("worker %s: unexpected %s message ignored", self.name, kind)
                continue
            why = await self.take(msg.command)
            if why:
                return why

    async def take(self, cmd: pb.Command) -> str | None:
        """Start ``cmd``, or refuse it while another runs; a reason to hang up when there is no
        time left to run it."""
        timeout_s = cmd.timeout_s or 60.0
        if self.can_take is not None and not self.busy.is_set() and not self.can_take(timeout_s):
            return f"out of time: not enough left for {cmd.operation} ({timeout_s:g} s)"
        if self.busy.is_set():
            log.warning("worker %s: command %d while busy; refused", self.name, cmd.seq)
            await self.send(pb.Result(seq=cmd.seq, task_id=cmd.task_id, ok=False, error="worker busy"))
            return None
        ctx = self.context(cmd)
        self.busy.set()
        if self.stats is not None:
            self.stats["commands"] = self.stats.get("commands", 0) + 1
            self.stats.setdefault("first_command", time.monotonic())
        self.running = asyncio.create_task(self.execute(cmd, ctx))
        return None

    def context(self, cmd: pb.Command) -> OpContext:
        """The command's ``OpContext``: scratch kept across one task attempt's commands, and at
        the rendezvous it acts as its task, with the task's token."""
        if self.scratch_owner != (cmd.task_id, cmd.attempt):  # a new task attempt: fresh scratch
            self.scratch_owner, self.scratch = (cmd.task_id, cmd.attempt), {}
        rendezvous = None
        if self.rdv_channel is not None:
            from rendezvous.client import RendezvousClient
            rendezvous = RendezvousClient(self.rdv_channel, self.job_id, cmd.task_id, cmd.task_token)
        return OpContext(job_id=self.job_id, task_id=cmd.task_id, attempt=cmd.attempt,
                         storage=self.storage, rendezvous=rendezvous, scratch=self.scratch,
                         timeout_s=cmd.timeout_s or 60.0)

    async def execute(self, cmd: pb.Command, ctx: OpContext) -> None:
        """Run the operation; every failure becomes a result."""
        start = time.monotonic()
        result = pb.Result(seq=cmd.seq, task_id=cmd.task_id)
        try:
            args = values.from_map(cmd.args)
            outputs = await self.registry.call(cmd.operation, ctx, args)
            values.to_map(outputs, result.outputs)
            result.ok = True
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - every failure becomes a result
            result.ok = False
            result.error = f"{cmd.operation}: {_one_line(e)}"
        result.elapsed_s = time.monotonic() - start
        self.busy.clear()  # before the write: the next command may arrive right after it
        await self.send(result)

    async def send(self, result: pb.Result) -> None:
        async with self.write_lock:
            await self.call.write(pb.WorkerMessage(result=result))

    async def close(self) -> None:
        if self.running is not None and not self.running.done():
            self.running.cancel()   # (its operation's thread runs on: its writes are stopped below)
        if self.storage is not None and not await asyncio.to_thread(self.storage.stop, STOP_WRITES_S):
            log.warning("worker %s: a write was still under way after %g s", self.name, STOP_WRITES_S)
        if self.rdv_channel is not None:
            await self.rdv_channel.close()


async def run_workers(workers: list[tuple[str, str]], coordinator: str, bundle: tls.Bundle, job_id: str, *,
                      registry: Registry = DEFAULT, name: str | None = None) -> list[str]:
    """One lightweight worker per (worker id, token) in ``workers``, in this process, concurrently."""
    base = name or f"{socket.gethostname()}:{os.getpid()}"
    return await asyncio.gather(*(run_worker(coordinator, bundle, job_id, wid, token, registry=registry,
                                             name=f"{base}/{i}") for i, (wid, token) in enumerate(workers)))
