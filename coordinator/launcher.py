"""Launchers start generic workers for a job; the coordinator gives them tasks once they connect.

``LocalLauncher`` (the default) starts ``excamera worker --coordinator HOST:PORT --certs DIR
--job ID`` processes on this machine, so each shows up as ``excamera worker ...`` in the process
table. Each process gets its own worker id and worker token (``security.tokens``) in the
environment (``EXCAMERA_WORKER_TOKENS=ID=TOKEN``), not on the command line where every user could
read it; ``DIR`` holds only the CA certificate and the client pair.

What a launcher is, the coordinator reads from ``Launcher`` (a ``typing.Protocol``); a launcher
extends ``BaseLauncher``, which gives the optional parts (failed launches, jobs that cannot get
workers, connection notes, cost, local pids) harmless defaults, so the coordinator calls every
method without probing for it. ``LAUNCHERS`` names the kinds: ``local`` here, and ``lambda``
(``awslambda.launcher.LambdaLauncher``) once that module is imported.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
from typing import Protocol, runtime_checkable

from foundation.registry import Registry

log = logging.getLogger("excamera.coordinator")

TOKEN_ENV = "EXCAMERA_WORKER_TOKENS"


def worker_command() -> list[str]:
    """How to run ``excamera``: the console script beside this Python if installed, else -m."""
    script = os.path.join(os.path.dirname(sys.executable), "excamera")
    if os.path.exists(script):
        return [sys.executable, script]
    return [sys.executable, "-m", "excamera"]


@runtime_checkable
class Launcher(Protocol):
    """What the coordinator asks of a launcher. It sets ``coordinator`` (the address workers
    dial) once its port is bound, then calls ``launch`` as the engine asks for workers, ``reap``
    and ``errors`` every loop step, ``note_connected`` as each worker connects, ``cost`` when a
    job ends, and ``stop`` when it stops."""

    coordinator: str

    def launch(self, job_id: str, workers: list[tuple[str, str]]) -> None:
        """Start one worker per (worker id, worker token), without waiting for them."""

    def reap(self) -> list[tuple[str, int]]:
        """Launches that finally failed since the last call, as (job id, count)."""

    def errors(self) -> list[tuple[str, str]]:
        """Jobs that cannot get workers at all, each once, as (job id, why): they fail."""

    def note_connected(self, job_id: str, worker_id: str) -> None:
        """The coordinator accepted a worker of ``job_id``."""

    def cost(self, job_id: str, timeline: dict) -> dict | None:
        """What the job's workers cost (``coordinator.cost``), or None where it cannot tell."""

    def pids(self, job_id: str | None = None) -> list[int]:
        """The live local worker processes (of ``job_id``)."""

    async def stop(self, grace: float = 5.0) -> None:
        """Stop launching and end the workers still running, waiting ``grace`` seconds first."""


class BaseLauncher:
    """The base a launcher extends: ``launch`` it must give; the rest default to "nothing to
    say" (no failures, no cost, no local processes)."""

    coordinator: str = ""

    def launch(self, job_id: str, workers: list[tuple[str, str]]) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot launch workers")

    def reap(self) -> list[tuple[str, int]]:
        return []

    def errors(self) -> list[tuple[str, str]]:
        return []

    def note_connected(self, job_id: str, worker_id: str) -> None:
        return None

    def cost(self, job_id: str, timeline: dict) -> dict | None:
        return None

    def pids(self, job_id: str | None = None) -> list[int]:
        return []

    async def stop(self, grace: float = 5.0) -> None:
        return None


#: Launcher classes by kind (``local``; ``lambda`` registers from ``awslambda.launcher``).
LAUNCHERS: Registry[type[BaseLauncher]] = Registry("launcher")


@LAUNCHERS.register("local")
class LocalLauncher(BaseLauncher):
    """Worker processes on this machine."""

    def __init__(self, certs_dir: str, *, ops_modules: tuple[str, ...] = (), cwd: str | None = None,
                 quiet: bool = True):
        self.certs_dir = certs_dir
        self.ops_modules = tuple(ops_modules)
        self.cwd = cwd
        self.quiet = quiet
        self.coordinator = ""            # set by the coordinator when it has bound its port
        self.procs: dict[int, tuple[str, subprocess.Popen, float]] = {}
        self.connected_pids: set[int] = set()
        self.cpu: dict[int, tuple[str, float]] = {}   # pid -> (job id, CPU-seconds seen)
        self._sampled = 0.0

    def launch(self, job_id: str, workers: list[tuple[str, str]]) -> None:
        """One process per (worker id, worker token) in ``workers``."""
        from security.tokens import format_worker_tokens

        cmd = worker_command() + ["worker", "--coordinator", self.coordinator, "--certs",
                                  self.certs_dir, "--job", job_id]
        for m in self.ops_modules:
            cmd += ["--ops", m]
        base = dict(os.environ)
        # Workers import the project from wherever this process does.
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        base["PYTHONPATH"] = os.pathsep.join(p for p in (root, base.get("PYTHONPATH", "")) if p)
        for pair in workers:
            env = dict(base, **{TOKEN_ENV: format_worker_tokens([pair])})
            p = subprocess.Popen(cmd, env=env, cwd=self.cwd, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL if self.quiet else None)
            self.procs[p.pid] = (job_id, p, time.monotonic())
        log.info("coordinator: job %s: launched %d worker process(es)", job_id, len(workers))

    def reap(self) -> list[tuple[str, int]]:
        """Collect exited workers; reports none as failed. (The engine notices lost connections
        itself; a worker that dies before connecting is covered by the launch deadline.)"""
        sample = time.monotonic() - self._sampled > 1.0  # CPU time: once a second is plenty
        if sample:
            self._sampled = time.monotonic()
        for pid, (job_id, p, _) in list(self.procs.items()):
            if p.poll() is not None:
                del self.procs[pid]
            elif sample:
                self._sample(pid, job_id)
        return []

    def _sample(self, pid: int, job_id: str) -> None:
        """Note a live worker's CPU time so far (user + system, from /proc where there is one)."""
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            self.cpu[pid] = (job_id, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))
        except (OSError, ValueError, IndexError):
            pass

    def cost(self, job_id: str, timeline: dict) -> dict:
        """CPU-seconds of the job's worker processes, as last seen (sampled as the loop runs)."""
        from coordinator.cost import local_cost

        for pid, (j, p, _) in list(self.procs.items()):
            if j == job_id and p.poll() is None:
                self._sample(pid, j)
        seen = [cpu for j, cpu in self.cpu.values() if j == job_id]
        return local_cost(sum(seen), len(seen))

    def pids(self, job_id: str | None = None) -> list[int]:
        return [pid for pid, (j, p, _) in self.procs.items()
                if p.poll() is None and (job_id is None or j == job_id)]

    async def stop(self, grace: float = 5.0) -> None:
        """Wait for workers to exit after their shutdown; terminate stragglers, then kill. A worker
        frozen by a signal (stopped: it can neither exit nor handle SIGTERM) is killed at once."""
        deadline = time.monotonic() + grace
        while self.pids() and time.monotonic() < deadline:
            for pid in self.pids():
                if _stopped(pid):
                    self.procs[pid][1].kill()
            await asyncio.sleep(0.05)
        for _, p, _ in self.procs.values():
            if p.poll() is None:
                p.terminate()
        deadline = time.monotonic() + 2.0
        while self.pids() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for _, p, _ in self.procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
        self.procs.clear()


def _stopped(pid: int) -> bool:
    """Whether process ``pid`` is stopped (SIGSTOP, a debugger): state T or t in /proc."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] in (b"T", b"t")
    except (OSError, IndexError):
        return False
