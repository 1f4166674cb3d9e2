"""A coordinator daemon for tests: `excamera coordinator serve --state-dir DIR` started, killed
and restarted at will, with its journal and storage to look at; the CLI run as a user would."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from security import tls

ROOT = Path(__file__).resolve().parent.parent


def excamera(*args, **kw):
    return subprocess.run([sys.executable, "-m", "excamera", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=300, **kw)


def one_line_error(res, text):
    assert res.returncode == 1, res
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("excamera: error: ") and text in lines[0], res.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("certs")
    assert excamera("certs", "init", d / "all").returncode == 0
    (d / "client").mkdir()
    for name in tls.WORKER_FILES:
        (d / "client" / name).write_bytes((d / "all" / name).read_bytes())
    return d / "all", d / "client"


def wait_listening(proc: subprocess.Popen, port: int, log_path: Path, timeout_s: float = 60) -> None:
    """Until the daemon ``proc`` accepts connections on ``port`` (its log, ``log_path``, in the
    failure if it dies first)."""
    deadline = time.monotonic() + timeout_s
    while True:
        assert proc.poll() is None, log_path.read_text()
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        assert time.monotonic() < deadline, "the daemon did not listen"
        time.sleep(0.05)


class Daemon:
    """`excamera coordinator serve` with a state directory, started and killed at will (each
    start in a session of its own, so that a killed one's workers can be found and reaped)."""

    def __init__(self, tmp: Path, certs: Path):
        self.tmp, self.certs = tmp, certs
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.state, self.store = tmp / "state", tmp / "store"
        self.procs: list[subprocess.Popen] = []
        self.logs: list[Path] = []

    def start(self, die_at: str | None = None) -> None:
        """Start it (``die_at``: it kills itself at that moment, ``coordinator.submissions.die_at``)."""
        log_path = self.tmp / f"daemon{len(self.logs)}.log"
        self.logs.append(log_path)
        env = {k: v for k, v in os.environ.items() if k != "EXCAMERA_TEST_DIE_AT"}
        if die_at is not None:
            env["EXCAMERA_TEST_DIE_AT"] = die_at
        with open(log_path, "w") as log:
            proc = subprocess.Popen([sys.executable, "-m", "excamera", "coordinator", "serve", "--listen",
                                     self.address, "--certs", str(self.certs), "--storage", str(self.store),
                                     "--state-dir", str(self.state)],
                                    cwd=ROOT, stderr=log, stdout=log, start_new_session=True, env=env)
        self.procs.append(proc)
        wait_listening(proc, self.port, log_path)

    def kill(self) -> None:
        proc = self.procs[-1]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)

    def stop(self) -> None:
        proc = self.procs[-1]
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0, self.logs[-1].read_text()

    def reap(self) -> None:
        for proc in self.procs:  # whatever a killed daemon's workers left running
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            if proc.poll() is None:
                proc.wait(timeout=30)

    def journal(self, sql: str) -> list[tuple]:
        db = sqlite3.connect(self.state / "journal.sqlite", timeout=10)
        try:
            return db.execute(sql).fetchall()
        except sqlite3.OperationalError:  # not made yet
            return []
        finally:
            db.close()

    def stored(self) -> list[str]:
        return sorted(str(p.relative_to(self.store)) for p in self.store.rglob("*") if p.is_file()) \
            if self.store.exists() else []

    def log(self) -> str:
        return "".join(p.read_text() for p in self.logs)
