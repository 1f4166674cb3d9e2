"""The standard gRPC health service (``grpc.health.v1``) on the coordinator's port.

A load balancer, ``grpc_health_probe`` or systemd's watchdog asks ``Check`` (or ``Watch``es) the
overall status (service ``""``) or one of the coordinator's own services. The coordinator says
``NOT_SERVING`` from the moment its port is bound until it is ready to take work (its journal
recovered: docs/design/service.md), ``SERVING`` from then on, and ``NOT_SERVING`` again, for
good, as soon as it starts to drain (SIGTERM): a balancer stops sending it new jobs while the
running ones finish.

The port is the coordinator's mutual-TLS port, so a checker presents a client certificate of the
deployment's CA like any client.
"""

from __future__ import annotations

from grpc_health.v1 import health, health_pb2, health_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
#: The coordinator's services, each reported besides the overall status ("").
SERVICES = ("", "excamera.coordinator.Coordinator", "excamera.jobs.Jobs")


class Health:
    """The health servicer of one coordinator: ``add_to(server)``, then ``await serving()``
    once ready and ``await draining()`` when it stops admitting work."""

    def __init__(self) -> None:
        self.servicer = health.aio.HealthServicer()
        self.status = NOT_SERVING
        self.drained = False

    async def add_to(self, server) -> None:
        """Register the service on a ``grpc.aio`` server (before it starts); every service is
        ``NOT_SERVING`` until ``serving()`` (the servicer itself would start ``SERVING``)."""
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, server)
        for name in SERVICES:
            await self.servicer.set(name, NOT_SERVING)

    async def serving(self) -> None:
        """Ready: recovery is done and jobs are admitted."""
        if self.status == SERVING or self.drained:
            return
        self.status = SERVING
        for name in SERVICES:
            await self.servicer.set(name, SERVING)

    async def draining(self) -> None:
        """``NOT_SERVING`` for good: the coordinator is draining or stopping."""
        self.status, self.drained = NOT_SERVING, True
        await self.servicer.enter_graceful_shutdown()

    @property
    def is_serving(self) -> bool:
        return self.status == SERVING
