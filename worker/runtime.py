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

from excamera import tls
from excamera.speculative_storage import SpeculativeStorage
from excamera.storage import StorageError, open_storage
from protos import coordinator_pb2 as pb
from protos import coordinator_pb2_grpc as pb_grpc
from protos import values
from worker.ops import DEFAULT, OpContext, OperationError, Registry

log = logging.getLogger("excamera.worker")

JOB_METADATA = "x-excamera-job"
WORKER_METADATA = "x-excamera-worker"
TOKEN_METADATA = "x-excamera-token"
CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.max_receive_message_length", 8 << 20),
    ("grpc.max_send_message_length", 8 << 20),
    # One real connection per worker, even when many workers share a process.
    ("grpc.use_local_subchannel_pool", 1),
]


def _one_line(exc: BaseException) -> str:
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
    ``"first_command"``."""
    from rendezvous.client import CHANNEL_OPTIONS as RDV_OPTIONS
    from rendezvous.client import RendezvousClient

    metadata = ((JOB_METADATA, job_id), (WORKER_METADATA, worker_id), (TOKEN_METADATA, token))
    creds = tls.client_credentials(bundle)
    name = name or f"{socket.gethostname()}:{os.getpid()}"
    rdv_channel = None
    async with grpc.aio.secure_channel(coordinator, creds, options=CHANNEL_OPTIONS) as channel:
        call = pb_grpc.CoordinatorStub(channel).Work(metadata=metadata)
        try:
            await call.write(pb.WorkerMessage(hello=pb.Hello(name=name, pid=os.getpid(),
                                                             operations=registry.names())))
            first = await call.read()
            if first is grpc.aio.EOF or first.WhichOneof("kind") != "welcome":
                return "refused: no welcome"
            welcome = first.welcome
            try:  # a directory, or s3://BUCKET/PREFIX (boto3's own chain finds the credentials;
                # making its client takes most of a second, off the loop)
                storage = SpeculativeStorage((await asyncio.to_thread(open_storage, welcome.storage_root))
                                             .scoped(welcome.storage_prefix))
            except StorageError as e:
                return f"refused: storage: {e}"
            if welcome.rendezvous:
                rdv_channel = grpc.aio.secure_channel(welcome.rendezvous, creds,
                                                      options=RDV_OPTIONS + [("grpc.use_local_subchannel_pool", 1)])
            write_lock = asyncio.Lock()
            scratch_owner: tuple[str, int] | None = None
            scratch: dict[str, bytes] = {}
            running: asyncio.Task | None = None
            busy = asyncio.Event()  # set while a command runs

            async def execute(cmd: pb.Command, ctx: OpContext) -> None:
                start = time.monotonic()
                result = pb.Result(seq=cmd.seq, task_id=cmd.task_id)
                try:
                    args = values.from_map(cmd.args)
                    outputs = await registry.call(cmd.operation, ctx, args)
                    values.to_map(outputs, result.outputs)
                    result.ok = True
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # noqa: BLE001 - every failure becomes a result
                    result.ok = False
                    result.error = f"{cmd.operation}: {_one_line(e)}"
                result.elapsed_s = time.monotonic() - start
                busy.clear()  # before the write: the next command may arrive right after it
                async with write_lock:
                    await call.write(pb.WorkerMessage(result=result))

            while True:
                msg = await call.read()
                if msg is grpc.aio.EOF:
                    return "coordinator closed the stream"
                kind = msg.WhichOneof("kind")
                if kind == "shutdown":
                    return f"shutdown: {msg.shutdown.reason}"
                if kind != "command":
                    log.warning("worker %s: unexpected %s message ignored", name, kind)
                    continue
                cmd = msg.command
                if can_take is not None and not busy.is_set() and not can_take(cmd.timeout_s or 60.0):
                    return f"out of time: not enough left for {cmd.operation} ({cmd.timeout_s or 60.0:g} s)"
                if busy.is_set():
                    log.warning("worker %s: command %d while busy; refused", name, cmd.seq)
                    async with write_lock:
                        await call.write(pb.WorkerMessage(result=pb.Result(
                            seq=cmd.seq, task_id=cmd.task_id, ok=False, error="worker busy")))
                    continue
                if scratch_owner != (cmd.task_id, cmd.attempt):  # a new task attempt: fresh scratch
                    scratch_owner, scratch = (cmd.task_id, cmd.attempt), {}
                # At the rendezvous this command acts as its task, with the task's token.
                rendezvous = (RendezvousClient(rdv_channel, job_id, cmd.task_id, cmd.task_token)
                              if rdv_channel is not None else None)
                ctx = OpContext(job_id=job_id, task_id=cmd.task_id, attempt=cmd.attempt,
                                storage=storage, rendezvous=rendezvous, scratch=scratch,
                                timeout_s=cmd.timeout_s or 60.0)
                busy.set()
                if stats is not None:
                    stats["commands"] = stats.get("commands", 0) + 1
                    stats.setdefault("first_command", time.monotonic())
                running = asyncio.create_task(execute(cmd, ctx))
        except grpc.aio.AioRpcError as e:
            if e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
                return f"coordinator gone: {e.code().name}"
            return f"refused: {e.code().name}: {e.details()}"
        finally:
            if 'running' in locals() and running is not None and not running.done():
                running.cancel()
            if rdv_channel is not None:
                await rdv_channel.close()


async def run_workers(workers: list[tuple[str, str]], coordinator: str, bundle: tls.Bundle, job_id: str, *,
                      registry: Registry = DEFAULT, name: str | None = None) -> list[str]:
    """One lightweight worker per (worker id, token) in ``workers``, in this process, concurrently."""
    base = name or f"{socket.gethostname()}:{os.getpid()}"
    return await asyncio.gather(*(run_worker(coordinator, bundle, job_id, wid, token, registry=registry,
                                             name=f"{base}/{i}") for i, (wid, token) in enumerate(workers)))
