"""The coordinator's Prometheus metrics, served at ``--metrics HOST:PORT`` ``/metrics``.

Counters and histograms live in this module's registry and are fed as things happen: the
engine's events (``event``: jobs and tasks entering each state, attempts, speculation, workers
lost), each worker result (``result``: seconds per operation), the Lambda launcher (invocations,
throttling) and the journal (``JOURNAL_WRITE_SECONDS``, observed by whoever writes it). Gauges
(workers connected, jobs running, whether it serves) and the bytes the in-process rendezvous
relayed are read from the coordinator when scraped. No metric has a per-job label: a
long-lived daemon's series must not grow with every job (docs/design/service.md).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.process_collector import ProcessCollector

REGISTRY = CollectorRegistry()

JOBS = Counter("excamera_jobs", "Jobs entering each state (running: accepted or recovered)",
               ["state"], registry=REGISTRY)
TASKS = Counter("excamera_tasks", "Tasks entering each state", ["state"], registry=REGISTRY)
ATTEMPTS = Counter("excamera_task_attempts", "Task attempts started (first runs, re-issues, duplicates)",
                   registry=REGISTRY)
SPECULATIONS = Counter("excamera_speculations", "Duplicates asked for a running attempt, by why: "
                       "slow (against what its task should cost) or timeout (past its state's timeout)",
                       ["reason"], registry=REGISTRY)
WORKERS_LOST = Counter("excamera_workers_lost", "Workers whose stream broke mid-task (killed, frozen: "
                       "transport keepalive unanswered, network)", registry=REGISTRY)
TASK_SECONDS = Histogram("excamera_task_duration_seconds", "Seconds a worker spent in one operation "
                         "(one FSM state of a task), by operation (pipeline stages as pipeline-stage:NAME)",
                         ["operation"], registry=REGISTRY,
                         buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60, 150, 300, 900))
LAMBDA_INVOCATIONS = Counter("excamera_lambda_invocations", "Asynchronous Lambda invocations, by result "
                             "(accepted, failed)", ["result"], registry=REGISTRY)
LAMBDA_THROTTLES = Counter("excamera_lambda_throttles", "Lambda invocations answered with throttling "
                           "(each retried with backoff)", registry=REGISTRY)
#: The journal's writer observes each durable write (commit included) here, in seconds.
JOURNAL_WRITE_SECONDS = Histogram("excamera_journal_write_seconds", "Seconds per durable journal write "
                                  "(SQLite commit, synchronous=FULL)", registry=REGISTRY,
                                  buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                           0.05, 0.1, 0.25, 1.0))

_SPECULATE = {"speculate": "slow", "straggler": "timeout"}


def journal_write(fn, *args):
    """``fn(*args)``, a durable journal write, timed into ``JOURNAL_WRITE_SECONDS``."""
    with JOURNAL_WRITE_SECONDS.time():
        return fn(*args)


def event(ev) -> None:
    """Count one engine event (``coordinator.engine.Event``)."""
    kind = ev.kind
    if kind == "task":
        TASKS.labels(ev.to_state).inc()
    elif kind == "job":
        JOBS.labels(ev.to_state).inc()
    elif kind == "attempt":
        ATTEMPTS.inc()
    elif kind in _SPECULATE:
        SPECULATIONS.labels(_SPECULATE[kind]).inc()
    elif kind == "lost":
        WORKERS_LOST.inc()


def result(engine, worker_id: str, seq: int, seconds: float) -> None:
    """A worker's result for command ``seq`` arrived, the operation having taken ``seconds`` on
    the worker: observed under the operation of the state its attempt is in (before the engine
    moves it on)."""
    w = engine.workers.get(worker_id)
    a = getattr(w, "attempt", None)
    if a is None or a.seq != seq or seconds < 0:
        return
    job = engine.jobs.get(w.job_id)
    if job is None:
        return
    try:
        op = job.job.fsm(a.task.spec.fsm).state(a.state).operation
    except Exception:  # noqa: BLE001 - a metric must never break a result
        return
    stage = a.task.spec.params.get("stage") if op == "pipeline-stage" else None
    TASK_SECONDS.labels(f"{op}:{stage}" if isinstance(stage, str) else op).observe(seconds)


class _Shared:
    """This module's counters and histograms, inside a coordinator's own registry."""

    def collect(self):
        yield from REGISTRY.collect()


class _Live:
    """What is read from the coordinator at each scrape (from the HTTP server's thread: only
    lengths and whole-list copies, which CPython makes atomically)."""

    def __init__(self, coordinator) -> None:
        self.c = coordinator

    def collect(self):
        c = self.c
        yield GaugeMetricFamily("excamera_workers_connected", "Workers holding a stream to the coordinator",
                                value=len(c.outboxes))
        jobs = list(c.engine.jobs.values())
        yield GaugeMetricFamily("excamera_jobs_running", "Jobs running now",
                                value=sum(1 for j in jobs if j.status == "running"))
        health = getattr(c, "health", None)
        yield GaugeMetricFamily("excamera_coordinator_serving", "1 while the health service says SERVING",
                                value=1 if health is not None and health.is_serving else 0)
        yield GaugeMetricFamily("excamera_coordinator_draining", "1 once the coordinator drains (SIGTERM)",
                                value=1 if getattr(c, "draining", False) else 0)
        rdv = getattr(c, "_rendezvous_server", None)
        servicer = getattr(rdv, "servicer", None)
        relayed = CounterMetricFamily("excamera_relayed_bytes", "Bytes of messages (decoder states) the "
                                      "in-process rendezvous relayed between workers")
        relayed.add_metric([], getattr(servicer, "relayed_bytes", 0))
        yield relayed


class MetricsServer:
    """``/metrics`` over HTTP for one coordinator (prometheus_client's server, in a thread)."""

    def __init__(self, coordinator, host: str, port: int) -> None:
        from prometheus_client import start_http_server

        self.registry = CollectorRegistry()
        self.registry.register(_Shared())
        self.registry.register(_Live(coordinator))
        ProcessCollector(registry=self.registry)
        self._httpd, self._thread = start_http_server(port, addr=host, registry=self.registry)
        self.port = self._httpd.server_port
        self.address = f"{host}:{self.port}"

    def text(self) -> str:
        from prometheus_client import generate_latest

        return generate_latest(self.registry).decode()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
