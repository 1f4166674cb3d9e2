"""``RunConfig``: how and where a job runs, in one frozen, typed value.

A job (an FSM ``Job`` or a pipeline) says *what* runs; its ``RunConfig`` says *how*: on which
backend (local worker processes, workers another launcher starts such as AWS Lambda invocations,
or a running coordinator), with how many workers, where its objects live, and what is written
beside the result. The command line builds one from its flags (``excamera.commands.base``); the
Python API takes one (``coordinator.api.run_job``, ``pipeline.run.run_pipeline``). A combination
that cannot run is refused when the value is made (``ConfigError``), in words about the
configuration, not about any command-line flag (docs/design/engine.md).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from foundation.errors import ExcameraError


class ConfigError(ExcameraError):
    """A run configuration that cannot run (one line)."""


@dataclass(frozen=True)
class LocalBackend:
    """Worker processes on this machine (``excamera worker``, started by ``LocalLauncher``)."""


@dataclass(frozen=True)
class LaunchedBackend:
    """Workers another launcher starts, dialling back to ``public_address`` while the embedded
    coordinator listens on ``listen``: ``launcher_factory(bundle)`` makes the launcher from the
    run's certificate bundle (``awslambda.backend.lambda_backend`` makes one for AWS Lambda)."""

    launcher_factory: Callable[[Any], Any]
    public_address: str
    listen: str = "127.0.0.1:0"
    name: str = "lambda"

    def __post_init__(self) -> None:
        if not self.public_address:
            raise ConfigError("launched workers need a public address to dial (HOST:PORT)")


@dataclass(frozen=True)
class RemoteCoordinator:
    """A running coordinator at ``address`` (HOST:PORT), reached with the client certificates in
    ``certs`` (ca.pem, client.pem, client.key); it has its own storage and chooses its workers.
    ``reconnect_s``: how long the client keeps trying to reach it while it is away (a restart of
    a journalled coordinator keeps the job: the client watches it again and fetches its result)."""

    address: str
    certs: str
    reconnect_s: float = 120.0

    def __post_init__(self) -> None:
        if not self.certs:
            raise ConfigError("a remote coordinator needs a certificate directory (ca.pem, client.pem, "
                              "client.key)")


Backend = LocalBackend | LaunchedBackend | RemoteCoordinator


@dataclass(frozen=True)
class RunConfig:
    """How a job runs.

    ``workers``: None is one per CPU; 0 runs a pipeline in this process (an FSM job needs one at
    least). ``spare``: more workers for re-issued and straggling tasks. ``storage``: a directory
    or ``s3://BUCKET/PREFIX`` for the job's objects (under ``jobs/JOB_ID``); None is a temporary
    directory. ``keep``: leave the job's objects in ``storage`` when a pipeline ends (an FSM job's
    results are always left for ``JobResult.read``; removing them is the caller's). ``timeline``:
    a JSON file for every worker's state history. ``max_attempts`` per task; ``timeout_s`` for
    the whole job (None: no limit)."""

    backend: Backend = LocalBackend()
    workers: int | None = None
    spare: int = 0
    storage: str | None = None
    keep: bool = False
    timeline: str | None = None
    max_attempts: int = 3
    timeout_s: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.backend, (LocalBackend, LaunchedBackend, RemoteCoordinator)):
            raise ConfigError(f"backend {self.backend!r} is not a LocalBackend, LaunchedBackend or "
                              f"RemoteCoordinator")
        if (self.workers is not None and self.workers < 0) or self.spare < 0:
            raise ConfigError(f"workers {self.workers} and spare {self.spare} must be 0 or more")
        if self.max_attempts < 1:
            raise ConfigError(f"max_attempts {self.max_attempts} must be 1 or more")
        if self.keep and not self.storage:
            raise ConfigError("keep applies to a given storage (a temporary one always goes)")
        if self.workers == 0:
            if self.storage:
                raise ConfigError("a storage is for the workers' job; with no workers the job runs here")
            if not isinstance(self.backend, LocalBackend):
                raise ConfigError("with no workers the job runs in this process: no backend starts any")
        if isinstance(self.backend, RemoteCoordinator):
            if self.timeline:
                raise ConfigError("a timeline is written by an embedded coordinator; a running one keeps "
                                  "its own")
            if self.storage:
                raise ConfigError("a running coordinator has its own storage")

    @property
    def worker_count(self) -> int:
        """``workers``, with None resolved to one per CPU."""
        return (os.cpu_count() or 1) if self.workers is None else self.workers

    @property
    def remote(self) -> bool:
        return isinstance(self.backend, RemoteCoordinator)
