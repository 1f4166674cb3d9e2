"""The coordinator as a service: its life from start to a drained stop (docs/design/service.md).

``run(start, drain_s=..., metrics=...)`` starts the coordinator (``start()``: recovery first,
then the port, then the health service says ``SERVING``), serves ``/metrics`` if asked, and
tells systemd it is ready (``sd_notify``, for a ``Type=notify`` unit). On SIGTERM or SIGINT it
drains: ``NOT_SERVING`` and no new job at once, the running jobs get up to ``drain_s`` to end
(a second signal cuts the drain short), then it stops, leaving what still runs to the journal,
which resumes it at the next start. The process then exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket

log = logging.getLogger("excamera.coordinator")

DEFAULT_DRAIN_S = 30.0


def sd_notify(state: str) -> bool:
    """Send ``state`` (e.g. ``READY=1``) to the service manager over ``$NOTIFY_SOCKET`` (a
    datagram socket; ``@name`` is in the abstract namespace); False when there is none (not run
    by systemd) or it cannot be reached: a notification is never worth failing for."""
    where = os.environ.get("NOTIFY_SOCKET", "")
    if not where or where[0] not in "/@":
        return False
    if where[0] == "@":
        where = "\0" + where[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(where)
            s.sendall(state.encode())
    except OSError as e:
        log.warning("coordinator: cannot notify the service manager at $NOTIFY_SOCKET: %s", e)
        return False
    return True


async def serve(start, *, drain_s: float = DEFAULT_DRAIN_S, metrics: tuple[str, int] | None = None,
                on_metrics=None) -> int:
    """Start the coordinator (``await start()``), serve until SIGTERM or SIGINT, drain, stop.
    ``metrics``: (host, port) for ``/metrics`` (an ``OSError`` binding it stops the coordinator
    and is raised); ``on_metrics(server)`` is told its address. Returns how many jobs were left
    running to the journal."""
    from coordinator.metrics import MetricsServer

    signalled = asyncio.Event()
    cut_short = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if signalled.is_set():
            cut_short.set()   # a second signal: stop draining
        signalled.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    c = await start()
    server = None
    try:
        if metrics is not None:
            server = MetricsServer(c, *metrics)
            if on_metrics is not None:
                on_metrics(server)
    except OSError:
        await c.stop()
        raise
    try:
        sd_notify(f"READY=1\nSTATUS=serving on {c.address}\nMAINPID={os.getpid()}")
        await signalled.wait()
        sd_notify(f"STOPPING=1\nSTATUS=draining (up to {drain_s:g} s)")
        drain = asyncio.ensure_future(c.drain(drain_s))
        cut = asyncio.ensure_future(cut_short.wait())
        await asyncio.wait({drain, cut}, return_when=asyncio.FIRST_COMPLETED)
        cut.cancel()
        if not drain.done():
            log.info("coordinator: a second signal: the drain is cut short")
            drain.cancel()
        left = drain.result() if drain.done() and not drain.cancelled() else \
            sum(1 for j in c.engine.jobs.values() if j.status == "running")
        await c.stop()
        log.info("coordinator: stopped; %d job(s) left to the journal", left if c.journal is not None else 0)
        return left
    finally:
        if server is not None:
            server.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
