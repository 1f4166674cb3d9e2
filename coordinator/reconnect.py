"""A Jobs-service client that rides through a coordinator's restart, and the jobs it submitted.

A journalled coordinator (``coordinator.journal``) that dies and restarts keeps its jobs and
their keys. Its clients (``coordinator.api.submit_remote``, ``excamera jobs``) retry a call that
finds it unavailable, with backoff, for up to ``reconnect_s`` seconds (``RECONNECT_S`` by
default) since the last call that got through; a watch resumes from the restarted coordinator's
events (docs/design/service.md).

The submitter alone holds a job's key (``security.tokens``); ``remember`` writes it to
``$XDG_STATE_HOME/excamera/client/jobs.json`` (readable by the user only) so that ``excamera jobs
fetch|cancel ID`` can serve a job submitted earlier from this account.
"""

from __future__ import annotations

import asyncio
import json
import os
import time

import grpc

#: Seconds a client keeps trying to reach a coordinator that went away (``--reconnect S``).
RECONNECT_S = 120.0
#: Backoff between tries: from the first, doubling to the last.
BACKOFF_S = (0.2, 2.0)
#: Options that make a channel dial again soon after its server comes back (gRPC's own default
#: backoff grows to two minutes).
CHANNEL_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 200), ("grpc.min_reconnect_backoff_ms", 200),
                   ("grpc.max_reconnect_backoff_ms", 2000)]


def retryable(e: BaseException) -> bool:
    """A call that failed because the coordinator is away (not because it said no)."""
    return isinstance(e, grpc.aio.AioRpcError) and e.code() == grpc.StatusCode.UNAVAILABLE


class Backoff:
    """Waits between tries, and when to give up: ``reconnect_s`` after the first failure since
    the last success (``ok()``)."""

    def __init__(self, reconnect_s: float):
        self.reconnect_s = reconnect_s
        self.since: float | None = None
        self.delay = BACKOFF_S[0]

    def ok(self) -> None:
        self.since, self.delay = None, BACKOFF_S[0]

    async def wait(self, error: BaseException) -> None:
        """Sleep before the next try, or raise ``error`` when the time is up."""
        now = time.monotonic()
        if self.since is None:
            self.since = now
        if not retryable(error) or now - self.since + self.delay > self.reconnect_s:
            raise error
        await asyncio.sleep(self.delay)
        self.delay = min(self.delay * 2, BACKOFF_S[1])


async def call(fn, reconnect_s: float):
    """``await fn()``, again while the coordinator is unavailable (for up to ``reconnect_s``)."""
    backoff = Backoff(reconnect_s)
    while True:
        try:
            return await fn()
        except grpc.aio.AioRpcError as e:
            await backoff.wait(e)


async def watch(stub, job_id: str, reconnect_s: float, on_event=None):
    """Follow the job's events to its end, watching again after a restart; returns the last
    ``job`` event (None if the stream ended without one)."""
    from protos import jobs_pb2 as jpb

    backoff, final = Backoff(reconnect_s), None
    while True:
        try:
            async for ev in stub.Watch(jpb.JobRef(job_id=job_id)):
                backoff.ok()
                if on_event is not None:
                    on_event(ev)
                if ev.kind == "job" and ev.to_state != "running":
                    final = ev
            return final
        except grpc.aio.AioRpcError as e:
            await backoff.wait(e)


# -- the submitter's book of job keys --------------------------------------------------------------

def book_path() -> str:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "excamera", "client", "jobs.json")


def _read_book() -> dict:
    try:
        with open(book_path()) as f:
            doc = json.load(f)
        return doc if isinstance(doc, dict) else {}
    except (OSError, ValueError):
        return {}


def remember(job_id: str, job_key: str, address: str) -> None:
    """Note a submitted job's key (best effort: a job runs whether or not it can be noted)."""
    path = book_path()
    book = _read_book()
    book[job_id] = {"key": job_key, "coordinator": address, "submitted": time.time()}
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(book, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError:
        pass


def recall(job_id: str) -> dict | None:
    """What ``remember`` noted of ``job_id`` ({"key", "coordinator", "submitted"}), or None."""
    entry = _read_book().get(job_id)
    return entry if isinstance(entry, dict) and isinstance(entry.get("key"), str) else None
