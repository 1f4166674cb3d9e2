"""``excamera coordinator serve`` as a service (docs/design/service.md): the gRPC health service
through a real health client, systemd's readiness notification, Prometheus metrics parsed by
prometheus_client's own parser, JSON log lines, and a drain on SIGTERM (NOT_SERVING, new jobs
refused with UNAVAILABLE, the running job left to the journal, exit 0). Time bounds are only
hang-catchers."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from coordinator.fsm import DONE, FSM, Job, State, Task, job_to_proto
from coordinator.server import DRAINING
from protos import jobs_pb2 as jpb
from protos import jobs_pb2_grpc as jpb_grpc
from security import tls

ROOT = Path(__file__).resolve().parent.parent
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Daemon:
    """``excamera coordinator serve`` in a process, its stderr read line by line in a thread,
    with a notification socket standing in for systemd's."""

    def __init__(self, tmp: Path, certs: Path, *extra: str):
        self.notify_path = tmp / f"notify-{time.monotonic_ns()}.sock"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(self.notify_path))
        self.notify.settimeout(60)          # a hang-catcher
        env = dict(os.environ, NOTIFY_SOCKET=str(self.notify_path),
                   PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "excamera", "coordinator", "serve", "--listen", "127.0.0.1:0",
             "--certs", str(certs), "--storage", str(tmp / "storage"), "--state-dir", str(tmp / "state"),
             "--metrics", "127.0.0.1:0", "--log-format", "json", *extra],
            stderr=subprocess.PIPE, text=True, env=env, cwd=str(tmp))
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def notified(self) -> str:
        return self.notify.recv(4096).decode()

    def said(self, prefix: str, timeout: float = 60.0) -> str:
        """The first logged message starting with ``prefix`` (waiting for it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                with_msg = json.loads(line).get("message", "")
                if with_msg.startswith(prefix):
                    return with_msg
            assert self.proc.poll() is None, "\n".join(self.lines)
            time.sleep(0.05)
        raise AssertionError(f"no {prefix!r} in:\n" + "\n".join(self.lines))

    def stop(self, signalled: bool = False) -> int:
        """SIGTERM (unless ``signalled`` already: a second one cuts the drain short), and the
        exit status."""
        if self.proc.poll() is None and not signalled:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(120)
        finally:
            self._reader.join(10)
            self.notify.close()


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("certs")
    tls.write(tls.generate(list(tls.DEFAULT_HOSTS)), str(d), overwrite=True)
    return d


def channel(certs: Path, address: str) -> grpc.Channel:
    bundle = tls.load(str(certs), need=tls.WORKER_FILES)
    return grpc.secure_channel(address, tls.client_credentials(bundle))


def health(ch, service: str = "") -> int:
    return health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status


def job_of(name: str, operation: str, args: dict, n: int) -> Job:
    fsm = FSM("f", "work", (State("work", operation, args, {"ok": DONE}, timeout_s=600),))
    return Job(name, (fsm,), tuple(Task(f"t{i}", "f", {}) for i in range(n)))


def wait_for(jobs, job_id: str, status: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listed = {j.job_id: j for j in jobs.List(jpb.ListRequest(), timeout=10).jobs}
        if listed.get(job_id) is not None and listed[job_id].status == status:
            return
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} not {status}: {listed.get(job_id)}")


def metrics(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.status == 200
        text = r.read().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def sample(families: dict, family: str, name: str, **labels) -> float:
    return sum(s.value for s in families[family].samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


@pytest.mark.slow
def test_health_metrics_logs_and_a_drain_on_sigterm(tmp_path, certs):
    d = Daemon(tmp_path, certs, "--drain", "3")
    try:
        # Ready: systemd is told once the coordinator recovered and bound its port, and the
        # health service says SERVING (overall and per service).
        assert d.notified().startswith("READY=1")
        address = d.said("serving on ").split()[2].rstrip(",")
        url = d.said("metrics at ").split()[-1]
        ch = channel(certs, address)
        assert health(ch) == SERVING
        assert health(ch, "excamera.jobs.Jobs") == SERVING
        assert health(ch, "excamera.coordinator.Coordinator") == SERVING
        jobs = jpb_grpc.JobsStub(ch)

        # A job that runs to the end: counted by state, its tasks timed per operation.
        ref = jobs.Submit(job_to_proto(job_of("echoes", "echo", {"text": "hi"}, 3), workers=2), timeout=30)
        wait_for(jobs, ref.job_id, "succeeded")
        m = metrics(url)
        assert m["excamera_jobs"].type == "counter"
        assert sample(m, "excamera_jobs", "excamera_jobs_total", state="running") >= 1
        assert sample(m, "excamera_jobs", "excamera_jobs_total", state="succeeded") >= 1
        assert sample(m, "excamera_tasks", "excamera_tasks_total", state="done") >= 3
        assert m["excamera_task_duration_seconds"].type == "histogram"
        assert sample(m, "excamera_task_duration_seconds", "excamera_task_duration_seconds_count",
                      operation="echo") == 3
        assert m["excamera_workers_connected"].type == "gauge"
        assert m["excamera_coordinator_serving"].samples[0].value == 1
        for family in ("excamera_relayed_bytes", "excamera_lambda_invocations", "excamera_lambda_throttles",
                       "excamera_journal_write_seconds", "excamera_workers_lost", "excamera_speculations"):
            assert family in m, sorted(m)
        # the journal wrote the job (accepted, results, end): its latency is observed
        assert sample(m, "excamera_journal_write_seconds", "excamera_journal_write_seconds_count") >= 2
        # no series per job: a daemon's metrics must not grow with every job
        labels = {k for f in m.values() for s in f.samples for k in s.labels}
        assert not labels & {"job", "job_id", "task", "task_id", "worker", "worker_id"}, labels

        # A job still running at SIGTERM (its one task sleeps far longer than the drain).
        sleeper = jobs.Submit(job_to_proto(job_of("sleeper", "sleep", {"seconds": 300.0}, 1), workers=1), timeout=30)
        deadline = time.monotonic() + 60
        while sample(metrics(url), "excamera_tasks", "excamera_tasks_total", state="running") < 4:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        d.proc.send_signal(signal.SIGTERM)
        assert d.notified().startswith("STOPPING=1")
        deadline = time.monotonic() + 10
        while health(ch) != NOT_SERVING:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert d.proc.poll() is None                 # still draining: the job runs on meanwhile
        with pytest.raises(grpc.RpcError) as refused:
            jobs.Submit(job_to_proto(job_of("late", "echo", {"text": "x"}, 1), workers=1), timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE and refused.value.details() == DRAINING
        ch.close()
        assert d.stop(signalled=True) == 0
    finally:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()
    # Every line of the log is one JSON object; those about a job carry its id.
    records = [json.loads(line) for line in d.lines]
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    assert any(r.get("job") == ref.job_id and "succeeded" in r["message"] for r in records)
    assert any(r.get("job") == sleeper.job_id and "resumes at the next start" in r["message"] for r in records), records

    # The running job was left to the journal: the next start knows it and runs it on.
    d2 = Daemon(tmp_path, certs, "--drain", "0")
    try:
        assert d2.notified().startswith("READY=1")
        ch = channel(certs, d2.said("serving on ").split()[2].rstrip(","))
        assert health(ch) == SERVING
        wait_for(jpb_grpc.JobsStub(ch), sleeper.job_id, "running")
        ch.close()
        assert d2.stop() == 0
    finally:
        if d2.proc.poll() is None:
            d2.proc.kill()
            d2.proc.wait()


def test_a_metrics_port_in_use_is_one_line(tmp_path, certs):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        p = subprocess.run([sys.executable, "-m", "excamera", "coordinator", "serve", "--listen", "127.0.0.1:0",
                            "--certs", str(certs), "--storage", str(tmp_path / "s"), "--state-dir", "none",
                            "--no-launch", "--metrics", f"127.0.0.1:{port}"],
                           capture_output=True, text=True, timeout=120, cwd=str(tmp_path),
                           env=dict(os.environ, NOTIFY_SOCKET=""))
    assert p.returncode == 1
    errors = [line for line in p.stderr.splitlines() if "error" in line]
    assert errors == [errors[0]] and errors[0].startswith(f"excamera: error: --metrics 127.0.0.1:{port}: "), p.stderr
    assert "Traceback" not in p.stderr


def test_sd_notify_speaks_the_protocol(tmp_path, monkeypatch):
    """A datagram to $NOTIFY_SOCKET (a path, or @name in the abstract namespace); without one,
    nothing (not under systemd)."""
    from coordinator.daemon import sd_notify

    for where, bind in ((str(tmp_path / "n.sock"), str(tmp_path / "n.sock")),
                        ("@excamera-test-" + str(os.getpid()), "\0excamera-test-" + str(os.getpid()))):
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.bind(bind)
            s.settimeout(10)
            monkeypatch.setenv("NOTIFY_SOCKET", where)
            assert sd_notify("READY=1\nSTATUS=x")
            assert s.recv(100) == b"READY=1\nSTATUS=x"
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert sd_notify("READY=1") is False


def test_json_log_lines_carry_the_ids(tmp_path):
    import io
    import logging

    from coordinator.logging_json import ids, setup

    out = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup("json", stream=out)
        logging.getLogger("excamera.coordinator").warning("lost %s", "w3",
                                                          extra=ids(job="j1", task="t2", attempt=1, worker="w3"))
        logging.getLogger("excamera.coordinator").info("plain")
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
    first, second = [json.loads(line) for line in out.getvalue().splitlines()]
    assert first["message"] == "lost w3" and first["level"] == "WARNING"
    assert (first["job"], first["task"], first["attempt"], first["worker"]) == ("j1", "t2", 1, "w3")
    assert second["message"] == "plain" and "job" not in second


def test_the_systemd_unit_waits_for_ready_and_outlasts_the_drain():
    """deploy/excamera-coordinator.service: Type=notify, restarted on failure, its stop timeout
    above the drain it passes (the default: 30 s)."""
    import configparser

    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read(ROOT / "deploy" / "excamera-coordinator.service")
    service = unit["Service"]
    assert service["Type"] == "notify" and service["Restart"] == "on-failure"
    assert service["KillMode"] == "mixed"
    words = service["ExecStart"].replace("\\\n", " ").split()
    assert words[1:3] == ["coordinator", "serve"] and "--state-dir" in words
    drain = float(words[words.index("--drain") + 1]) if "--drain" in words else 30.0
    assert float(service["TimeoutStopSec"]) > drain + 10
