"""The rendezvous's pairing core: plain Python, no I/O, no gRPC; tests drive it directly.

Workers of one job send each other messages addressed by logical worker id (the task id). A
message is held in the recipient's mailbox under the key (sender, tag) until the recipient takes
it (or, with ``keep``, until it is released), its time-to-live runs out, or the job closes. The
bytes held for a job at once are capped, and so is each message. What is held is the message as
sent (possibly compressed); the receiver checks the digest after decompressing.

Each caller acts as one logical worker of its job (a task id), proven by that task's token
(``security.tokens``: an HMAC under the job's task key, which the coordinator gives the
rendezvous when it opens the job): it may send only as that worker and receive or release only
that worker's messages.

The first message for a key wins: a second identical one (a straggler re-sending the same state)
is dropped as a duplicate, a second different one is refused as a conflict, because in this
runtime re-issued work must produce identical bytes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from foundation.errors import ExcameraError
from security import tokens

DEFAULT_MAX_HELD_BYTES = 2 << 30      # 2 GiB held per job at once
DEFAULT_MAX_MESSAGE_BYTES = 256 << 20  # 256 MiB per message
DEFAULT_TTL_S = 600.0
_NAME = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class RendezvousError(ExcameraError):
    """A refused request; ``code`` is the gRPC status name the servicer maps it to."""

    code = "INVALID_ARGUMENT"


class AuthError(RendezvousError):
    code = "PERMISSION_DENIED"


class FullError(RendezvousError):
    code = "RESOURCE_EXHAUSTED"


class ConflictError(RendezvousError):
    code = "ALREADY_EXISTS"


@dataclass(frozen=True)
class Limits:
    max_held_bytes: int = DEFAULT_MAX_HELD_BYTES
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    ttl_s: float = DEFAULT_TTL_S


@dataclass
class Message:
    sender: str
    recipient: str
    tag: str
    size: int          # uncompressed bytes
    sha256: str        # of the uncompressed bytes
    compression: int   # rendezvous.proto Compression
    body: bytes        # as sent
    expires: float = 0.0


@dataclass
class _Job:
    task_key: bytes
    limits: Limits
    held_bytes: int = 0
    # recipient -> (sender, tag) -> Message
    mailboxes: dict[str, dict[tuple[str, str], Message]] = field(default_factory=dict)


def check_name(what: str, value: str) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise RendezvousError(f"{what} {value!r}: must be 1-128 characters of [A-Za-z0-9._:-]")
    return value


class RendezvousCore:
    """Mailboxes per job. Every method takes the current time where time matters."""

    def __init__(self) -> None:
        self._jobs: dict[str, _Job] = {}

    # -- jobs (admin) ---------------------------------------------------------------------------

    def open_job(self, job_id: str, task_key: bytes, limits: Limits = Limits()) -> None:
        check_name("job", job_id)
        if not isinstance(task_key, bytes) or len(task_key) != 32:
            raise RendezvousError(f"job {job_id}: task_key must be 32 bytes")
        if limits.max_held_bytes <= 0 or limits.max_message_bytes <= 0 or limits.ttl_s <= 0:
            raise RendezvousError(f"job {job_id}: limits must be positive: {limits}")
        old = self._jobs.get(job_id)
        if old is not None and old.task_key != task_key:
            raise ConflictError(f"job {job_id}: already open with another key")
        if old is None:
            self._jobs[job_id] = _Job(task_key, limits)

    def close_job(self, job_id: str) -> int:
        """Forget the job and drop what it held; returns the number of messages dropped."""
        job = self._jobs.pop(job_id, None)
        return 0 if job is None else sum(len(m) for m in job.mailboxes.values())

    def authorize(self, job_id: str, worker: str, token: str) -> str:
        """Return ``worker`` if ``job_id`` is open and ``token`` is that worker's (task's) token in
        it; raise AuthError otherwise."""
        job = self._jobs.get(job_id)
        if job is None or not worker or not _NAME.fullmatch(worker) or \
                not tokens.same(tokens.task_token(job.task_key, worker), token):
            raise AuthError(f"job {job_id!r}: unknown job, or not a token for worker {worker!r}")
        return worker

    @staticmethod
    def check_acting(worker: str, what: str, name: str) -> None:
        """Raise AuthError unless the caller (authorized as ``worker``) is ``name``: a worker
        sends only as itself and reads only its own mailbox."""
        if name != worker:
            raise AuthError(f"worker {worker!r} may not {what} {name!r}")

    def limits(self, job_id: str) -> Limits:
        return self._job(job_id).limits

    def _job(self, job_id: str) -> _Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise AuthError(f"job {job_id!r}: not open")
        return job

    # -- messages -------------------------------------------------------------------------------

    def check_header(self, job_id: str, sender: str, recipient: str, tag: str, size: int,
                     wire_size: int, sha256: str, compression: int) -> None:
        """Refuse a message before its body arrives: names, sizes, digest form, room left."""
        job = self._job(job_id)
        check_name("sender", sender)
        check_name("recipient", recipient)
        check_name("tag", tag)
        if not _SHA256.fullmatch(sha256 or ""):
            raise RendezvousError(f"message {sender}->{recipient} [{tag}]: sha256 must be 64 lowercase hex digits")
        if compression not in (0, 1):
            raise RendezvousError(f"message {sender}->{recipient} [{tag}]: unknown compression {compression}")
        cap = job.limits.max_message_bytes
        if not (0 <= size <= cap and 0 <= wire_size <= cap):
            raise FullError(f"message {sender}->{recipient} [{tag}]: {max(size, wire_size)} bytes, "
                            f"over the {cap}-byte message cap (or negative)")
        if compression == 0 and wire_size != size:
            raise RendezvousError(f"message {sender}->{recipient} [{tag}]: uncompressed but wire size "
                                  f"{wire_size} != size {size}")
        if job.held_bytes + wire_size > job.limits.max_held_bytes:
            raise FullError(f"job {job_id}: holding {job.held_bytes} bytes; {wire_size} more would pass "
                            f"the {job.limits.max_held_bytes}-byte cap")

    def put(self, job_id: str, msg: Message, now: float) -> bool:
        """Hold ``msg``; False when an identical message was already held (dropped as duplicate)."""
        self.check_header(job_id, msg.sender, msg.recipient, msg.tag, msg.size, len(msg.body),
                          msg.sha256, msg.compression)
        job = self._job(job_id)
        box = job.mailboxes.setdefault(msg.recipient, {})
        old = box.get((msg.sender, msg.tag))
        if old is not None:
            if old.sha256 == msg.sha256 and old.size == msg.size:
                return False
            raise ConflictError(f"message {msg.sender}->{msg.recipient} [{msg.tag}]: a different message "
                                f"(sha256 {old.sha256[:16]}...) is already held; the first one wins")
        msg.expires = now + job.limits.ttl_s
        box[(msg.sender, msg.tag)] = msg
        job.held_bytes += len(msg.body)
        return True

    def take(self, job_id: str, recipient: str, sender: str, tag: str, *, keep: bool) -> Message | None:
        """The held message for (recipient, sender, tag), removed unless ``keep``; None if none."""
        job = self._job(job_id)
        box = job.mailboxes.get(recipient)
        if not box:
            return None
        msg = box.get((sender, tag))
        if msg is not None and not keep:
            self._drop(job, recipient, (sender, tag))
        return msg

    def release(self, job_id: str, recipient: str) -> int:
        """Drop everything held for ``recipient``; returns how many messages."""
        job = self._job(job_id)
        box = job.mailboxes.get(recipient) or {}
        keys = list(box)
        for key in keys:
            self._drop(job, recipient, key)
        return len(keys)

    def expire(self, now: float) -> list[tuple[str, Message]]:
        """Drop messages whose time-to-live has passed; returns (job, message) for each."""
        gone = []
        for job_id, job in self._jobs.items():
            for recipient, box in list(job.mailboxes.items()):
                for key, msg in list(box.items()):
                    if msg.expires <= now:
                        self._drop(job, recipient, key)
                        gone.append((job_id, msg))
        return gone

    def held(self, job_id: str) -> tuple[int, int]:
        """(messages, bytes) held for the job."""
        job = self._job(job_id)
        return sum(len(b) for b in job.mailboxes.values()), job.held_bytes

    @staticmethod
    def _drop(job: _Job, recipient: str, key: tuple[str, str]) -> None:
        box = job.mailboxes[recipient]
        msg = box.pop(key)
        job.held_bytes -= len(msg.body)
        if not box:
            del job.mailboxes[recipient]
