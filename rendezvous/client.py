"""Client side of the rendezvous: send and receive whole messages over chunked streams.

``RendezvousClient(channel, job_id, worker, token)`` is what a worker holds while it runs task
``worker`` (the token comes with the task's commands); ``send`` compresses when it
pays (``compress="auto"`` tries the first 256 KiB), splits the body into 1 MiB chunks and streams
them; ``receive`` reassembles, decompresses with a bound (no zip bombs) and checks the sha256.
``RendezvousAdmin(channel)`` is the coordinator's: it opens and closes jobs.
"""

from __future__ import annotations

import hashlib
import zlib

import grpc

from foundation.errors import ExcameraError
from protos import rendezvous_pb2 as pb
from protos import rendezvous_pb2_grpc as pb_grpc
from rendezvous.server import CHUNK_BYTES, JOB_METADATA, MAX_GRPC_MESSAGE, TOKEN_METADATA, WORKER_METADATA

CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE),
    ("grpc.max_send_message_length", MAX_GRPC_MESSAGE),
    ("grpc.keepalive_time_ms", 20_000),
]


class MessageError(ExcameraError):
    """A received message that does not match its header (size, digest, compression)."""


def encode(data: bytes, compress: str | bool = "auto") -> tuple[int, bytes]:
    """(compression, wire bytes). ``auto`` compresses only when a 256 KiB sample shrinks by a
    tenth or more: decoder states are often already compressed, and zlib on noise is slow."""
    if compress == "auto":
        sample = data[:256 << 10]
        compress = len(sample) > 1024 and len(zlib.compress(sample, 1)) < 0.9 * len(sample)
    if compress:
        return pb.ZLIB, zlib.compress(data, 1)
    return pb.NONE, data


def decode(header: pb.Header, body: bytes) -> bytes:
    """The uncompressed, verified body of a received message."""
    where = f"message {header.sender}->{header.recipient} [{header.tag}]"
    if header.compression == pb.ZLIB:
        d = zlib.decompressobj()
        try:
            data = d.decompress(body, header.size + 1)
        except zlib.error as e:
            raise MessageError(f"{where}: corrupt zlib data: {e}") from None
        if d.unconsumed_tail or not d.eof:
            raise MessageError(f"{where}: decompresses to more (or other) than the {header.size} bytes declared")
    elif header.compression == pb.NONE:
        data = body
    else:
        raise MessageError(f"{where}: unknown compression {header.compression}")
    if len(data) != header.size:
        raise MessageError(f"{where}: {len(data)} bytes, {header.size} declared")
    if hashlib.sha256(data).hexdigest() != header.sha256:
        raise MessageError(f"{where}: sha256 does not match the header")
    return data


class RendezvousClient:
    """A worker's view of the rendezvous as one logical worker (task) of one job, by its token."""

    def __init__(self, channel: grpc.aio.Channel, job_id: str, worker: str, token: str):
        self.stub = pb_grpc.RendezvousStub(channel)
        self.worker = worker
        self.metadata = ((JOB_METADATA, job_id), (WORKER_METADATA, worker), (TOKEN_METADATA, token))

    async def send(self, sender: str, recipient: str, tag: str, data: bytes,
                   compress: str | bool = "auto") -> bool:
        """Hand ``data`` to ``recipient``; False when an identical message was already held."""
        compression, wire = encode(data, compress)
        header = pb.Header(sender=sender, recipient=recipient, tag=tag, size=len(data),
                           wire_size=len(wire), compression=compression,
                           sha256=hashlib.sha256(data).hexdigest())

        def envelopes():
            view = memoryview(wire)
            yield pb.Envelope(header=header, chunk=bytes(view[:CHUNK_BYTES]))
            for start in range(CHUNK_BYTES, len(view), CHUNK_BYTES):
                yield pb.Envelope(chunk=bytes(view[start:start + CHUNK_BYTES]))

        reply = await self.stub.Send(envelopes(), metadata=self.metadata)
        return not reply.duplicate

    async def receive(self, recipient: str, sender: str, tag: str, timeout_s: float = 60.0,
                      keep: bool = False) -> bytes:
        """Wait up to ``timeout_s`` for the message ``sender`` -> ``recipient`` tagged ``tag``."""
        header = None
        parts = []
        call = self.stub.Receive(pb.ReceiveRequest(recipient=recipient, sender=sender, tag=tag,
                                                   timeout_s=timeout_s, keep=keep),
                                 metadata=self.metadata, timeout=timeout_s + 30)
        async for env in call:
            if header is None:
                header = env.header
            parts.append(env.chunk)
        if header is None:
            raise MessageError(f"message {sender}->{recipient} [{tag}]: empty reply")
        return decode(header, b"".join(parts))

    async def release(self, recipient: str) -> int:
        reply = await self.stub.Release(pb.ReleaseRequest(recipient=recipient), metadata=self.metadata)
        return reply.dropped


class RendezvousAdmin:
    """The coordinator's admin calls; the channel must present the server certificate."""

    def __init__(self, channel: grpc.aio.Channel):
        self.stub = pb_grpc.RendezvousStub(channel)

    async def open_job(self, job_id: str, task_key: bytes, *, max_held_bytes: int = 0,
                       max_message_bytes: int = 0, ttl_s: float = 0.0) -> None:
        await self.stub.OpenJob(pb.OpenJobRequest(job_id=job_id, task_key=task_key,
                                                  max_held_bytes=max_held_bytes,
                                                  max_message_bytes=max_message_bytes, ttl_s=ttl_s))

    async def close_job(self, job_id: str) -> None:
        await self.stub.CloseJob(pb.CloseJobRequest(job_id=job_id))
