"""Per-job keys and per-worker tokens: who may act as whom within a job.

The coordinator holds a random secret. Each job gets a key derived from it; the submitter (and
only the submitter) is told the key, and needs it to cancel the job or fetch its results. From
the job key come two kinds of token, each an HMAC-SHA256 under a key the holder of the token
cannot recover:

* a **worker token** per worker id, ``HMAC(job key, "worker" | id)``: handed to one launched
  worker process, it lets that process open one stream to the coordinator as that worker id and
  no other, so results arrive bound to the worker the task was given to;
* a **task token** per task id, ``HMAC(task key, "task" | id)`` with ``task key = HMAC(job key,
  "rendezvous")``: the coordinator sends it with each command, and it lets the worker running the
  task send messages *as* that task, and receive or release messages *for* that task, at the
  rendezvous. The rendezvous is told only the task key, so it can check task tokens but cannot
  mint worker tokens or recover the job key.

Tokens are URL-safe base64 without padding (43 characters). Comparisons are constant-time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from foundation.errors import ExcameraError


class TokenError(ExcameraError):
    """A malformed key or token."""


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (ValueError, TypeError):
        raise TokenError(f"{what}: not base64") from None
    if len(raw) != 32:
        raise TokenError(f"{what}: {len(raw)} bytes, not 32")
    return raw


def _mac(key: bytes, label: str, name: str) -> bytes:
    return hmac.new(key, f"{label}\0{name}".encode(), hashlib.sha256).digest()


def new_secret() -> bytes:
    """A coordinator's secret: 32 random bytes, written nowhere but a journalled coordinator's
    state directory (``coordinator.journal``: job keys outlive its restarts)."""
    return secrets.token_bytes(32)


def job_key(secret: bytes, job_id: str) -> str:
    """The key of job ``job_id`` under the coordinator's ``secret``."""
    return _b64(_mac(secret, "job", job_id))


def worker_token(key: str, worker_id: str, generation: int = 0) -> str:
    """The token of worker ``worker_id`` of the job with key ``key``, minted by a coordinator of
    ``generation`` (a journalled coordinator's count of its starts: a worker launched before a
    restart holds a token of an earlier generation, which the restarted one refuses)."""
    name = worker_id if generation == 0 else f"{generation}\0{worker_id}"
    return _b64(_mac(_unb64(key, "job key"), "worker", name))


def task_key(key: str) -> bytes:
    """The rendezvous's key for the job with key ``key`` (it checks task tokens with it)."""
    return _mac(_unb64(key, "job key"), "rendezvous", "")


def task_token(tkey: bytes, task_id: str) -> str:
    """The token that lets its holder act as task ``task_id`` at the rendezvous."""
    if len(tkey) != 32:
        raise TokenError(f"task key: {len(tkey)} bytes, not 32")
    return _b64(_mac(tkey, "task", task_id))


def same(expected: str, given: str) -> bool:
    """Constant-time equality of two tokens (False for an empty ``given``)."""
    return bool(given) and hmac.compare_digest(expected.encode(), given.encode())


def parse_worker_tokens(text: str) -> list[tuple[str, str]]:
    """``"ID=TOKEN[,ID=TOKEN...]"`` (how a launcher hands tokens to a worker process) as pairs."""
    pairs = []
    for item in text.replace("\n", ",").split(","):
        item = item.strip()
        if not item:
            continue
        wid, sep, token = item.partition("=")
        if not sep or not wid or not token:
            raise TokenError(f"worker token {item[:20]!r}...: not ID=TOKEN")
        pairs.append((wid, token))
    return pairs


def format_worker_tokens(pairs) -> str:
    return ",".join(f"{w}={t}" for w, t in pairs)
