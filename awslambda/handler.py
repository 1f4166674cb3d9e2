"""The AWS Lambda entry point: ``awslambda.handler.handler(event, context)``.

One invocation is one worker of one job (``awslambda.launcher`` sends the event). The
handler checks the event, loads the kernels the image compiled ahead of time (``codec.aot``, for
``CPU_NAME``: no numba at all) or else points numba's cache at ``/tmp`` (the code directory is
read-only on Lambda; the kernels compiled when the image was built are copied there from
``SHIPPED_CACHE`` on a fresh sandbox), then dials the coordinator over mutual TLS exactly as
``excamera worker`` does (``worker.runtime.run_worker``), with the job's own short-lived client
certificate from the event. It stops taking commands when the time Lambda has left is below the
next state's timeout (capped at ``RESERVE_S``; the coordinator re-issues that task elsewhere) and
returns a short summary. A duplicate or late event (its token spent, or its job over) is refused
by the coordinator: the handler returns at once with ``refused: true``. Nothing runs at import
time.
"""

from __future__ import annotations

import os
import time

from foundation.errors import ExcameraError

#: Where the container image keeps the numba cache compiled at build time (see awslambda.package).
SHIPPED_CACHE = "/opt/excamera/numba-cache"
#: Where numba's cache goes on Lambda when NUMBA_CACHE_DIR is unset (only /tmp is writable).
TMP_CACHE = "/tmp/excamera-numba-cache"
#: Seconds kept in hand beyond a state's timeout before taking its command.
TIME_MARGIN_S = 2.0
#: A state's timeout is an upper bound (stragglers are re-issued past it), and a state that waits
#: for another chunk may be given longer than any function runs (ExCamera's receive waits cover a
#: batch of rebases). So a command is taken when the time left covers its state's timeout or at
#: least this much (the floor of a working state's timeout in an encode job).
RESERVE_S = 60.0
#: The CPU numba compiles for, at image build and in every sandbox: one that every x86-64 Lambda
#: host runs (AVX2), so the kernels compiled on the build machine are the ones found in the cache
#: (numba keys its cache on the CPU name and features).
CPU_NAME = "haswell"
CPU_FEATURES = ("+avx,+avx2,+bmi,+bmi2,+cmov,+cx16,+f16c,+fma,+lzcnt,+movbe,+popcnt,+sse,+sse2,+sse3,"
                "+ssse3,+sse4.1,+sse4.2,+mmx,+fxsr,+pclmul")
FIELDS = ("coordinator", "job_id", "worker_id", "worker_token", "ca_pem", "client_pem", "client_key")


class EventError(ExcameraError):
    """An event this handler cannot serve."""


def check_event(event) -> dict:
    """The event's fields, each a non-empty string; ``EventError`` otherwise."""
    if not isinstance(event, dict):
        raise EventError(f"the event is a {type(event).__name__}, not an object")
    if event.get("excamera") != 1:
        raise EventError("not an excamera worker event (version 1)")
    out = {}
    for name in FIELDS:
        value = event.get(name)
        if not isinstance(value, str) or not value:
            raise EventError(f"the event has no {name}")
        out[name] = value
    host, sep, port = out["coordinator"].rpartition(":")
    if not sep or not host or not port.isdigit():
        raise EventError(f"coordinator {out['coordinator']!r} is not HOST:PORT")
    for name in ("ca_pem", "client_pem", "client_key"):
        if "-----BEGIN" not in out[name]:
            raise EventError(f"{name} is not PEM")
    return out


def pin_cpu_target() -> None:
    """Compile for ``CPU_NAME`` on x86-64 unless told otherwise (before numba is imported)."""
    import platform

    if platform.machine() in ("x86_64", "AMD64") and "NUMBA_CPU_NAME" not in os.environ:
        os.environ["NUMBA_CPU_NAME"] = CPU_NAME
        os.environ.setdefault("NUMBA_CPU_FEATURES", CPU_FEATURES)


def prepare_numba_cache(shipped: str | None = None, target: str | None = None) -> str:
    """Set ``NUMBA_CACHE_DIR`` (to ``target`` when unset) and load the kernels the image compiled
    ahead of time (``codec.aot``, built for ``CPU_NAME``): then numba is not needed at all. Without
    them (a CPU that lacks the features, an image without the module), pin numba's CPU target
    as the image's warm-up did and fill an empty cache directory from ``shipped``. Returns the
    cache directory (kept for kernels the module lacks)."""
    from codec import aot

    shipped = SHIPPED_CACHE if shipped is None else shipped
    compiled = aot.load()
    cache = os.environ.get("NUMBA_CACHE_DIR")
    if not cache:
        cache = os.environ["NUMBA_CACHE_DIR"] = TMP_CACHE if target is None else target
        if not compiled:
            pin_cpu_target()
    if not compiled and os.path.isdir(shipped) and not (os.path.isdir(cache) and os.listdir(cache)):
        import shutil

        shutil.copytree(shipped, cache, dirs_exist_ok=True)
    return cache


def handler(event, context):
    """Serve one job as the worker the event names; returns a summary dict."""
    started = time.monotonic()
    summary = {"worker_id": "", "job_id": "", "refused": False, "commands": 0}
    try:
        fields = check_event(event)
    except EventError as e:
        summary.update(ok=False, reason=f"bad event: {e}", seconds=round(time.monotonic() - started, 3))
        return summary
    summary.update(worker_id=fields["worker_id"], job_id=fields["job_id"])
    prepare_numba_cache()
    from codec import aot

    summary["compiled_kernels"] = aot.CPU  # None: numba's cache
    import asyncio
    import logging
    import socket

    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    logging.basicConfig(level=logging.WARNING)
    from security import tls
    import worker.codec_ops  # noqa: F401 - registers the codec operations (imports no codec yet)
    import worker.fakecodec  # noqa: F401 - registers the fake codec operations
    import pipeline.worker_op  # noqa: F401 - registers pipeline-stage (a pipeline task)
    from worker.runtime import run_worker

    remaining = getattr(context, "get_remaining_time_in_millis", None)

    def can_take(timeout_s: float) -> bool:
        return remaining is None or remaining() / 1000.0 > min(timeout_s, RESERVE_S) + TIME_MARGIN_S

    bundle = tls.Bundle(ca_pem=fields["ca_pem"].encode(), client_pem=fields["client_pem"].encode(),
                        client_key=fields["client_key"].encode())
    request = getattr(context, "aws_request_id", "") or str(os.getpid())
    name = f"lambda:{getattr(context, 'function_name', 'local')}:{request}@{socket.gethostname()}"
    stats: dict = {}
    reason = asyncio.run(run_worker(fields["coordinator"], bundle, fields["job_id"], fields["worker_id"],
                                    fields["worker_token"], name=name, can_take=can_take, stats=stats))
    summary.update(ok=not reason.startswith(("refused", "coordinator gone")), reason=reason,
                   refused=reason.startswith("refused"), commands=stats.get("commands", 0),
                   seconds=round(time.monotonic() - started, 3))
    if "first_command" in stats:  # cold start: handler entry to the first command
        summary["first_command_s"] = round(stats["first_command"] - started, 3)
    return summary
