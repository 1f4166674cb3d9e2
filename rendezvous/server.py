"""The rendezvous's gRPC shell: a thin ``grpc.aio`` servicer over ``RendezvousCore``.

``serve(address, bundle)`` binds (port 0 picks a free one), starts, and returns a
``RendezvousServer`` with the bound ``port``; ``stop(grace)`` shuts it down. Worker calls carry the
job id, the worker (task id) the caller acts as and that task's token in metadata; the token is
checked against the job's task key, and a caller sends only as that worker and receives or
releases only its messages. The admin calls
(``OpenJob``, ``CloseJob``) are accepted only from a peer presenting the server certificate (the
coordinator). Refusals are logged on ``excamera.rendezvous`` and returned as gRPC status codes.
"""

from __future__ import annotations

import asyncio
import logging
import time

import grpc

from security import tls
from protos import rendezvous_pb2 as pb
from protos import rendezvous_pb2_grpc as pb_grpc
from rendezvous.core import Limits, Message, RendezvousCore, RendezvousError, check_name

log = logging.getLogger("excamera.rendezvous")

CHUNK_BYTES = 1 << 20
JOB_METADATA = "x-excamera-job"
WORKER_METADATA = "x-excamera-worker"
TOKEN_METADATA = "x-excamera-token"
#: gRPC refuses any single message larger than this (a chunk plus room for the header).
MAX_GRPC_MESSAGE = CHUNK_BYTES + (64 << 10)
SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE),
    ("grpc.max_send_message_length", MAX_GRPC_MESSAGE),
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.max_concurrent_streams", 10_000),
]


def call_identity(context) -> tuple[str, str, str]:
    """(job id, worker, token) from a call's metadata ('' where missing)."""
    md = dict(context.invocation_metadata() or ())
    return md.get(JOB_METADATA, ""), md.get(WORKER_METADATA, ""), md.get(TOKEN_METADATA, "")


async def _refuse(context, err: RendezvousError, what: str):
    log.warning("rendezvous: refused %s: %s", what, err)
    await context.abort(getattr(grpc.StatusCode, err.code), str(err))


class RendezvousServicer(pb_grpc.RendezvousServicer):
    def __init__(self, core: RendezvousCore | None = None, clock=time.monotonic):
        self.core = core or RendezvousCore()
        self.clock = clock
        # (job, recipient, sender, tag) -> futures of Receive calls waiting for that message
        self._waiters: dict[tuple[str, str, str, str], list[asyncio.Future]] = {}
        self.relayed_bytes = 0

    def _authorize(self, context) -> tuple[str, str]:
        """(job, worker) of an authorized call; AuthError otherwise."""
        job, worker, token = call_identity(context)
        return job, self.core.authorize(job, worker, token)

    async def Send(self, request_iterator, context):
        job = call_identity(context)[0]
        try:
            job, me = self._authorize(context)
            first = True
            parts: list[bytes] = []
            got = 0
            async for env in request_iterator:
                if first:
                    if not env.HasField("header"):
                        raise RendezvousError("message: the first envelope has no header")
                    h = env.header
                    self.core.check_acting(me, "send as", h.sender)
                    self.core.check_header(job, h.sender, h.recipient, h.tag, h.size, h.wire_size,
                                           h.sha256, h.compression)
                    first = False
                elif env.HasField("header"):
                    raise RendezvousError(f"message {h.sender}->{h.recipient} [{h.tag}]: a second header")
                got += len(env.chunk)
                if got > h.wire_size:
                    raise RendezvousError(f"message {h.sender}->{h.recipient} [{h.tag}]: more bytes "
                                          f"than the {h.wire_size} declared")
                parts.append(env.chunk)
            if first:
                raise RendezvousError("message: empty stream, no header")
            if got != h.wire_size:
                raise RendezvousError(f"message {h.sender}->{h.recipient} [{h.tag}]: {got} bytes "
                                      f"arrived, {h.wire_size} declared")
            msg = Message(h.sender, h.recipient, h.tag, h.size, h.sha256, h.compression, b"".join(parts))
            held = self.core.put(job, msg, self.clock())
        except RendezvousError as e:
            await _refuse(context, e, f"Send for job {job!r}")
            return pb.SendReply()
        if held:
            self.relayed_bytes += len(msg.body)
            self._wake(job, msg)
        else:
            log.info("rendezvous: job %s: duplicate %s->%s [%s] dropped", job, msg.sender,
                     msg.recipient, msg.tag)
        return pb.SendReply(duplicate=not held)

    def _wake(self, job: str, msg: Message) -> None:
        for fut in self._waiters.pop((job, msg.recipient, msg.sender, msg.tag), []):
            if not fut.done():
                fut.set_result(None)

    async def Receive(self, request, context):
        job = call_identity(context)[0]
        try:
            job, me = self._authorize(context)
            self.core.check_acting(me, "receive messages for", request.recipient)
            for what in ("recipient", "sender", "tag"):
                check_name(what, getattr(request, what))
            if not 0 <= request.timeout_s <= 24 * 3600:
                raise RendezvousError(f"receive: timeout_s {request.timeout_s} out of range")
        except RendezvousError as e:
            await _refuse(context, e, f"Receive for job {job!r}")
            return
        key = (job, request.recipient, request.sender, request.tag)
        deadline = self.clock() + request.timeout_s
        while True:
            try:
                msg = self.core.take(job, request.recipient, request.sender, request.tag, keep=request.keep)
            except RendezvousError as e:  # the job closed while we waited
                await _refuse(context, e, f"Receive for job {job!r}")
                return
            if msg is not None:
                break
            left = deadline - self.clock()
            if left <= 0:
                await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED,
                                    f"no message {request.sender}->{request.recipient} [{request.tag}] "
                                    f"within {request.timeout_s:g} s")
                return
            fut = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(key, []).append(fut)
            try:
                await asyncio.wait_for(fut, min(left, 1.0))  # wake now and then to re-check
            except asyncio.TimeoutError:
                pass
            finally:
                waiting = self._waiters.get(key)
                if waiting and fut in waiting:
                    waiting.remove(fut)
                    if not waiting:
                        del self._waiters[key]
        header = pb.Header(sender=msg.sender, recipient=msg.recipient, tag=msg.tag, size=msg.size,
                           wire_size=len(msg.body), compression=msg.compression, sha256=msg.sha256)
        body = memoryview(msg.body)
        yield pb.Envelope(header=header, chunk=bytes(body[:CHUNK_BYTES]))
        for start in range(CHUNK_BYTES, len(body), CHUNK_BYTES):
            yield pb.Envelope(chunk=bytes(body[start:start + CHUNK_BYTES]))

    async def Release(self, request, context):
        job = call_identity(context)[0]
        try:
            job, me = self._authorize(context)
            self.core.check_acting(me, "release messages for", request.recipient)
            return pb.ReleaseReply(dropped=self.core.release(job, request.recipient))
        except RendezvousError as e:
            await _refuse(context, e, f"Release for job {job!r}")

    async def _admin(self, context, what: str) -> bool:
        cn = tls.peer_common_name(context)
        if cn != tls.SERVER_CN:
            err = RendezvousError(f"{what}: only the coordinator may do this (peer is {cn or 'anonymous'!r})")
            err.code = "PERMISSION_DENIED"
            await _refuse(context, err, what)
            return False
        return True

    async def OpenJob(self, request, context):
        if not await self._admin(context, f"OpenJob {request.job_id!r}"):
            return pb.OpenJobReply()
        d = Limits()
        limits = Limits(request.max_held_bytes or d.max_held_bytes,
                        request.max_message_bytes or d.max_message_bytes, request.ttl_s or d.ttl_s)
        try:
            self.core.open_job(request.job_id, request.task_key, limits)
        except RendezvousError as e:
            await _refuse(context, e, "OpenJob")
        return pb.OpenJobReply()

    async def CloseJob(self, request, context):
        if await self._admin(context, f"CloseJob {request.job_id!r}"):
            dropped = self.core.close_job(request.job_id)
            if dropped:
                log.info("rendezvous: job %s closed, %d held messages dropped", request.job_id, dropped)
        return pb.CloseJobReply()

    def expire(self) -> None:
        for job, msg in self.core.expire(self.clock()):
            log.warning("rendezvous: job %s: message %s->%s [%s] expired unclaimed", job, msg.sender,
                        msg.recipient, msg.tag)


class RendezvousServer:
    """A started rendezvous: ``port``, ``address``, ``servicer``; ``await stop(grace)``."""

    def __init__(self, server, port: int, host: str, servicer: RendezvousServicer, expiry: asyncio.Task):
        self.server, self.port, self.servicer, self._expiry = server, port, servicer, expiry
        self.address = f"{host}:{port}"

    async def stop(self, grace: float | None = 1.0) -> None:
        self._expiry.cancel()
        await self.server.stop(grace)


async def serve(address: str, bundle: tls.Bundle, core: RendezvousCore | None = None) -> RendezvousServer:
    """Bind ``address`` (HOST:PORT, port 0 for any) with mutual TLS and start serving."""
    server = grpc.aio.server(options=SERVER_OPTIONS)
    servicer = RendezvousServicer(core)
    pb_grpc.add_RendezvousServicer_to_server(servicer, server)
    port = server.add_secure_port(address, tls.server_credentials(bundle))
    if port == 0:
        raise OSError(f"rendezvous: cannot bind {address}")
    await server.start()

    async def expire_loop():
        while True:
            await asyncio.sleep(1.0)
            servicer.expire()

    host = address.rsplit(":", 1)[0] or "127.0.0.1"
    if host in ("0.0.0.0", "[::]", ""):
        host = "127.0.0.1"
    return RendezvousServer(server, port, host, servicer, asyncio.create_task(expire_loop()))
