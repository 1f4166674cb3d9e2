"""``excamera worker``: one or more workers in this process (started by a launcher), dialling the
coordinator and taking tasks of one job until told to stop. Tokens come in the environment, never
on the command line where every user could read them."""

from __future__ import annotations

import argparse
import os

from excamera.commands.base import CliError, address, command, load_certs, positive_count, setup_logging

TOKEN_ENV = "EXCAMERA_WORKER_TOKENS"


def register(sub) -> None:
    wk = command(sub, "worker", cmd_worker, help="a worker (started by a launcher)",
                 description=f"Dial the coordinator, take tasks of job ID until told to stop. "
                             f"The worker's id and token are read from ${TOKEN_ENV} as ID=TOKEN; "
                             f"several, comma-separated, run that many lightweight workers in "
                             f"this process.")
    wk.add_argument("--coordinator", type=address, required=True, metavar="HOST:PORT")
    wk.add_argument("--certs", required=True, metavar="DIR", help="ca.pem, client.pem, client.key")
    wk.add_argument("--job", required=True, metavar="ID")
    wk.add_argument("--count", type=positive_count, metavar="N",
                    help="check that $EXCAMERA_WORKER_TOKENS names N workers (default: as many as it names)")
    wk.add_argument("--ops", action="append", default=[], metavar="MODULE",
                    help="import MODULE to register more operations (repeatable)")


def _tokens(count: int | None) -> list[tuple[str, str]]:
    from security.tokens import TokenError, parse_worker_tokens

    try:
        pairs = parse_worker_tokens(os.environ.get(TOKEN_ENV, ""))
    except TokenError as e:
        raise CliError(f"worker: {TOKEN_ENV}: {e}") from None
    if not pairs:
        raise CliError(f"worker: no worker token: set {TOKEN_ENV}=ID=TOKEN")
    if count is not None and count != len(pairs):
        raise CliError(f"worker: --count {count} but {TOKEN_ENV} names {len(pairs)} worker(s)")
    return pairs


def _register_operations(modules: list[str]) -> None:
    import importlib

    import pipeline.worker_op  # noqa: F401 - registers pipeline-stage (a pipeline task)
    import worker.codec_ops  # noqa: F401 - registers the real codec operations (imports no codec yet)
    import worker.fakecodec  # noqa: F401 - registers the fake codec operations
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise CliError(f"worker: --ops {module}: {e}") from None


def cmd_worker(args: argparse.Namespace) -> int:
    import asyncio

    from security import tls

    pairs = _tokens(args.count)
    bundle = load_certs(args.certs, tls.WORKER_FILES)
    setup_logging("WARNING")
    _register_operations(args.ops)
    from worker.runtime import run_workers

    reasons = asyncio.run(run_workers(pairs, args.coordinator, bundle, args.job))
    refused = [r for r in reasons if r.startswith("refused")]
    if refused:
        raise CliError(f"worker: {refused[0]}")
    return 0
