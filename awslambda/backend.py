"""Workers as AWS Lambda invocations, as a run configuration's backend.

``lambda_backend(...)`` is the ``coordinator.config.LaunchedBackend`` whose launcher is a
``LambdaLauncher`` (``awslambda.launcher``); ``launcher_factory(...)`` is that launcher's factory
alone, for a coordinator daemon that makes its own certificate bundle (``excamera coordinator
serve --backend lambda``). boto3 loads only when a region must be looked up.
"""

from __future__ import annotations

from coordinator.config import ConfigError, LaunchedBackend

#: Seconds after the first accepted invocation by which some worker must have connected.
CONNECT_DEADLINE_S = 60
#: The function's memory (MB) a cost is computed for, unless told.
MEMORY_MB = 3008


def regions(text: str | None) -> list[str]:
    """``R1,R2`` as region names, or boto3's configured region for None; ``ConfigError`` when
    there is none."""
    if text:
        from awslambda.launcher import parse_regions

        try:
            return parse_regions(text)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    import boto3

    region = boto3.session.Session().region_name
    if not region:
        raise ConfigError("no region: name one, or set AWS_REGION")
    return [region]


def launcher_factory(function: str, chosen: list[str], *, memory_mb: int = MEMORY_MB,
                     connect_deadline_s: float = CONNECT_DEADLINE_S):
    """``factory(bundle) -> LambdaLauncher`` invoking ``function`` in the regions ``chosen``."""
    def factory(bundle):
        from awslambda.launcher import LambdaLauncher

        return LambdaLauncher(bundle, function, chosen, memory_mb=memory_mb,
                              connect_deadline_s=float(connect_deadline_s))

    return factory


def lambda_backend(function: str, chosen: list[str], public_address: str, *, listen: str = "0.0.0.0:0",
                   memory_mb: int = MEMORY_MB, connect_deadline_s: float = CONNECT_DEADLINE_S) -> LaunchedBackend:
    """Workers invoking ``function`` (in ``chosen`` regions, round-robin) that dial
    ``public_address`` while the embedded coordinator listens on ``listen``."""
    return LaunchedBackend(launcher_factory(function, chosen, memory_mb=memory_mb,
                                            connect_deadline_s=connect_deadline_s),
                           public_address, listen, "lambda")
