"""Workers as AWS Lambda invocations: ``LambdaLauncher``, the cloud sibling of ``LocalLauncher``.

Each worker is one asynchronous invocation (``InvocationType="Event"``) of a function whose
handler is ``awslambda.handler.handler``. The event carries only what that worker needs
(``make_event``): the coordinator's public address, the job id, the worker's id and token, the
deployment's CA certificate, and a client certificate and key issued for this job alone and valid
for the function's timeout plus a margin. The CA key signs those certificates here and never
leaves the coordinator; no server key is ever in an event.

``launch`` returns at once: invocations run on a thread pool (one boto3 client per region, its
connection pool sized to the pool, the ``standard`` retry mode), spread round-robin over the
regions, with exponential backoff on throttling (``TooManyRequestsException``, HTTP 429) until
``throttle_deadline_s``. The coordinator's loop learns outcomes through ``reap()`` (invocations
that finally failed: the engine re-plans them) and ``errors()`` (jobs that cannot get workers at
all: the function does not exist, access is denied, an event is too large, or no worker has
connected within ``connect_deadline_s`` of the first accepted invocation: the function cannot
reach the public address). boto3 is imported on first use.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import threading
import time
from collections import Counter

from coordinator import metrics
from coordinator.launcher import LAUNCHERS, BaseLauncher
from foundation.errors import ExcameraError

log = logging.getLogger("excamera.coordinator")

#: Lambda's limit on an asynchronous invocation's payload (bytes), as this launcher enforces it.
MAX_EVENT_BYTES = 256 * 1024
EVENT_VERSION = 1
#: Error codes Lambda answers when invocations are throttled.
THROTTLE_CODES = {"TooManyRequestsException", "ThrottlingException", "Throttling",
                  "RequestLimitExceeded", "EC2ThrottledException"}
#: Errors no retry can fix: the job cannot get workers from this function.
FATAL_CODES = {"ResourceNotFoundException", "AccessDeniedException", "AccessDenied",
               "UnrecognizedClientException", "InvalidSignatureException",
               "InvalidRequestContentException", "RequestTooLargeException",
               "InvalidParameterValueException", "KMSAccessDeniedException",
               "ExpiredTokenException", "InvalidClientTokenId"}


class LaunchError(ExcameraError):
    """An event that cannot be sent (too large, missing a field)."""


def make_event(*, coordinator: str, job_id: str, worker_id: str, worker_token: str, ca_pem: bytes,
               client_pem: bytes, client_key: bytes) -> bytes:
    """One worker's event as the JSON bytes sent to Lambda; refuses one over ``MAX_EVENT_BYTES``."""
    event = {"excamera": EVENT_VERSION, "coordinator": coordinator, "job_id": job_id,
             "worker_id": worker_id, "worker_token": worker_token, "ca_pem": ca_pem.decode(),
             "client_pem": client_pem.decode(), "client_key": client_key.decode()}
    payload = json.dumps(event, separators=(",", ":")).encode()
    if len(payload) > MAX_EVENT_BYTES:
        raise LaunchError(f"worker {worker_id}'s event is {len(payload)} bytes, over Lambda's "
                          f"{MAX_EVENT_BYTES}-byte limit for an asynchronous invocation")
    return payload


@LAUNCHERS.register("lambda")
class LambdaLauncher(BaseLauncher):
    """Workers as asynchronous invocations of ``function`` in ``regions`` (round-robin); a
    ``coordinator.launcher.Launcher``."""

    def __init__(self, bundle, function: str, regions: tuple[str, ...] | list[str] = ("us-east-1",), *,
                 memory_mb: int = 3008, timeout_s: float = 900.0, concurrency: int = 64,
                 cert_margin_s: float = 300.0, connect_deadline_s: float = 60.0,
                 throttle_deadline_s: float = 120.0):
        if not bundle.ca_key:
            raise LaunchError("the Lambda launcher needs the CA key (ca.key) to issue each job's "
                              "client certificate")
        if not regions:
            raise LaunchError("no region given")
        self.bundle = bundle
        self.function = function
        self.regions = list(regions)
        self.memory_mb = memory_mb
        self.timeout_s = timeout_s
        self.concurrency = concurrency
        self.cert_margin_s = cert_margin_s
        self.connect_deadline_s = connect_deadline_s
        self.throttle_deadline_s = throttle_deadline_s
        self.coordinator = ""          # the public address workers dial; set by the coordinator
        self._lock = threading.Lock()
        self._clients: dict[str, object] = {}
        self._pool = None
        self._next_region = 0
        self._certs: dict[str, tuple[bytes, bytes, float]] = {}   # job id -> (pem, key, expiry)
        self._failed: Counter = Counter()           # job id -> failed invocations not yet reaped
        self._fatal: dict[str, str] = {}            # job id -> why it cannot get workers
        self._fatal_told: set[str] = set()
        self._first_accept: dict[str, float] = {}
        self._connected: set[str] = set()           # job ids with at least one worker connected
        self.accepted: Counter = Counter()          # job id -> accepted invocations
        self.throttled = 0                          # throttling answers seen (retried)
        self._closing = False

    # -- the launcher interface -----------------------------------------------------------------

    def launch(self, job_id: str, workers: list[tuple[str, str]]) -> None:
        """Invoke the function once per (worker id, worker token); returns without waiting."""
        if self._closing:
            return
        if job_id in self._fatal:
            with self._lock:
                self._failed[job_id] += len(workers)
            return
        try:
            pem, key = self._job_cert(job_id)
        except ValueError as e:
            self._fail_job(job_id, str(e))
            with self._lock:
                self._failed[job_id] += len(workers)
            return
        # Hand the list to a thread that feeds the pool: the coordinator's loop goes on at once.
        threading.Thread(target=self._dispatch, args=(job_id, list(workers), pem, key), daemon=True,
                         name="lambda-dispatch").start()
        log.info("coordinator: job %s: invoking %s for %d worker(s) in %s", job_id, self.function,
                 len(workers), ",".join(self.regions))

    def reap(self) -> list[tuple[str, int]]:
        """Invocations that finally failed since the last call, as (job id, count)."""
        with self._lock:
            out, self._failed = list(self._failed.items()), Counter()
        return out

    def errors(self) -> list[tuple[str, str]]:
        """Jobs that cannot get workers from this function, each once, as (job id, why)."""
        now = time.monotonic()
        with self._lock:
            for job_id, first in self._first_accept.items():
                if (job_id not in self._connected and job_id not in self._fatal
                        and now - first > self.connect_deadline_s):
                    self._fatal[job_id] = (
                        f"no Lambda worker connected within {self.connect_deadline_s:g} s of "
                        f"{self.accepted[job_id]} accepted invocation(s) of {self.function}: can the "
                        f"function reach --public-address {self.coordinator} (and the rendezvous)?")
            out = [(j, why) for j, why in self._fatal.items() if j not in self._fatal_told]
            self._fatal_told.update(j for j, _ in out)
        return out

    def note_connected(self, job_id: str, worker_id: str) -> None:
        """The coordinator accepted a worker of ``job_id`` (so the function reaches it)."""
        self._connected.add(job_id)

    def pids(self, job_id: str | None = None) -> list[int]:
        return []  # no local processes

    async def stop(self, grace: float = 5.0) -> None:
        """Stop invoking; wait (in a thread) for invocations already under way."""
        self._closing = True
        if self._pool is not None:
            await asyncio.to_thread(self._pool.shutdown, wait=True, cancel_futures=True)
            self._pool = None

    # -- reports --------------------------------------------------------------------------------

    def cost(self, job_id: str, timeline: dict) -> dict:
        """The job's Lambda cost from its accepted invocations and its workers' connected time."""
        from coordinator.cost import connected_seconds, lambda_cost

        return lambda_cost(self.accepted[job_id], connected_seconds(timeline), self.memory_mb)

    # -- inside -----------------------------------------------------------------------------------

    def _job_cert(self, job_id: str) -> tuple[bytes, bytes]:
        """This job's client pair, re-issued when it would expire before a new invocation ends."""
        from security import tls

        now = time.time()
        held = self._certs.get(job_id)
        if held is None or held[2] - now < self.timeout_s + 60:
            lifetime = self.timeout_s + self.cert_margin_s
            pem, key = tls.issue_client(self.bundle, lifetime, label=job_id)
            held = self._certs[job_id] = (pem, key, now + lifetime)
        return held[0], held[1]

    def _executor(self):
        with self._lock:
            return self._executor_locked()

    def _executor_locked(self):
        if self._closing:
            raise RuntimeError("the launcher is stopping")
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="lambda-invoke")
        return self._pool

    def _client(self, region: str):
        with self._lock:
            client = self._clients.get(region)
            if client is None:
                from botocore.config import Config

                from storage.s3 import boto3_session

                config = Config(max_pool_connections=self.concurrency, retries={"mode": "standard"},
                                connect_timeout=10, read_timeout=30)
                client = self._clients[region] = boto3_session().client(
                    "lambda", region_name=region, config=config)
            return client

    def _fail_job(self, job_id: str, why: str) -> None:
        with self._lock:
            if job_id not in self._fatal:
                log.error("coordinator: job %s: %s", job_id, why)
                self._fatal[job_id] = why

    def _dispatch(self, job_id: str, workers: list[tuple[str, str]], pem: bytes, key: bytes) -> None:
        try:
            pool = self._executor()
        except RuntimeError:
            return
        for wid, token in workers:
            with self._lock:
                region = self.regions[self._next_region % len(self.regions)]
                self._next_region += 1
            try:
                pool.submit(self._invoke, region, job_id, dict(
                    coordinator=self.coordinator, job_id=job_id, worker_id=wid, worker_token=token,
                    ca_pem=self.bundle.ca_pem, client_pem=pem, client_key=key))
            except RuntimeError:  # the pool was shut down (the coordinator is stopping)
                with self._lock:
                    self._failed[job_id] += 1

    def _invoke(self, region: str, job_id: str, fields: dict) -> None:
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        try:
            payload = make_event(**fields)
        except LaunchError as e:
            self._fail_job(job_id, str(e))
            with self._lock:
                self._failed[job_id] += 1
            return
        delay, deadline = 0.05, time.monotonic() + self.throttle_deadline_s
        while not self._closing:
            if job_id in self._fatal:
                break
            try:
                self._client(region).invoke(FunctionName=self.function, InvocationType="Event",
                                            Payload=payload)
            except ClientError as e:
                err = e.response.get("Error", {})
                code = err.get("Code", "")
                status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
                if code in THROTTLE_CODES or status == 429:
                    with self._lock:
                        self.throttled += 1
                    metrics.LAMBDA_THROTTLES.inc()
                    if time.monotonic() + delay < deadline:
                        time.sleep(delay * random.uniform(0.5, 1.0))
                        delay = min(delay * 2, 5.0)
                        continue
                    log.warning("coordinator: job %s: %s in %s still throttled after %g s",
                                job_id, self.function, region, self.throttle_deadline_s)
                elif code in FATAL_CODES or status in (400, 401, 403, 404, 413):
                    self._fail_job(job_id, f"lambda function {self.function} in {region}: {code or status}: "
                                           f"{' '.join((err.get('Message') or '').split())}")
                else:
                    log.warning("coordinator: job %s: invoking %s in %s: %s", job_id, self.function,
                                region, code or status)
            except NoCredentialsError:
                self._fail_job(job_id, f"lambda function {self.function}: no AWS credentials found "
                                       f"(configure a profile, AWS_ACCESS_KEY_ID/..., or an instance role)")
            except BotoCoreError as e:
                log.warning("coordinator: job %s: invoking %s in %s: %s", job_id, self.function, region, e)
            except Exception as e:  # noqa: BLE001 - one invocation's failure is reported, not raised
                log.warning("coordinator: job %s: invoking %s in %s: %s: %s", job_id, self.function,
                            region, type(e).__name__, e)
            else:
                with self._lock:
                    self.accepted[job_id] += 1
                    self._first_accept.setdefault(job_id, time.monotonic())
                metrics.LAMBDA_INVOCATIONS.labels("accepted").inc()
                return
            break
        with self._lock:
            self._failed[job_id] += 1
        metrics.LAMBDA_INVOCATIONS.labels("failed").inc()


def parse_regions(text: str) -> list[str]:
    """``R1,R2`` as a list of region names (no empties)."""
    regions = [r.strip() for r in text.split(",") if r.strip()]
    if not regions:
        raise ValueError(f"no region in {text!r}")
    return regions


__all__ = ["LambdaLauncher", "LaunchError", "MAX_EVENT_BYTES", "make_event", "parse_regions"]
