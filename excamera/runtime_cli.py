"""The runtime's subcommands, registered into ``excamera``'s parser by ``register(sub)``::

    excamera coordinator serve --listen HOST:PORT --certs DIR [--storage DIR|s3://BUCKET/PREFIX] [--keep]
                               [--rendezvous HOST:PORT]
                               [--backend lambda --function NAME --region R[,R...] --public-address HOST:PORT]
    excamera rendezvous serve --listen HOST:PORT --certs DIR
    excamera worker --coordinator HOST:PORT --certs DIR --job ID [--ops MODULE]...  (tokens in $EXCAMERA_WORKER_TOKENS)
    excamera certs init DIR [--host NAME]... [--force]
    excamera timeline T.json -o T.svg|T.png
    excamera bench runtime [--workers 1000] [--relay-mb 1024] [--state-mb 4] [--processes 2]

Only argparse is imported here; each command imports the runtime when it runs, so
``excamera --help`` stays instant.
"""

from __future__ import annotations

import argparse
import os
import sys

TOKEN_ENV = "EXCAMERA_WORKER_TOKENS"


def _address(text: str) -> str:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"not HOST:PORT: {text!r}")
    return text


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more: {n}")
    return n


def register(sub) -> None:
    """Add the runtime's subcommands to ``excamera``'s subparsers."""
    co = sub.add_parser("coordinator", help="the coordinator daemon",
                        description="Run the coordinator: workers dial in over mutual TLS and hold "
                                    "one stream each; jobs are submitted over the Jobs service.")
    co_sub = co.add_subparsers(dest="action", metavar="ACTION", required=True)
    serve = co_sub.add_parser("serve", help="serve until interrupted")
    serve.add_argument("--listen", type=_address, required=True, metavar="HOST:PORT")
    serve.add_argument("--certs", required=True, metavar="DIR",
                       help="ca.pem, server.pem, server.key, client.pem, client.key (excamera certs init)")
    serve.add_argument("--storage", default="excamera-storage", metavar="DIR|URL",
                       help="job storage: a directory or s3://BUCKET/PREFIX (AWS configured as for any "
                            "boto3 program) (default: ./excamera-storage)")
    serve.add_argument("--keep", action="store_true",
                       help="keep every job's objects; by default a job's go when it ends (a succeeded "
                            "job's results once fetched)")
    serve.add_argument("--rendezvous", type=_address, metavar="HOST:PORT",
                       help="use this rendezvous instead of starting one in-process")
    serve.add_argument("--no-launch", action="store_true",
                       help="do not start local worker processes; workers are started elsewhere")
    from excamera.lambda_cli import add_backend_args
    add_backend_args(serve, listen=False)
    serve.set_defaults(func=cmd_coordinator_serve)

    rv = sub.add_parser("rendezvous", help="the rendezvous relay",
                        description="Relay messages (decoder states) between the workers of a job.")
    rv_sub = rv.add_subparsers(dest="action", metavar="ACTION", required=True)
    rserve = rv_sub.add_parser("serve", help="serve until interrupted")
    rserve.add_argument("--listen", type=_address, required=True, metavar="HOST:PORT")
    rserve.add_argument("--certs", required=True, metavar="DIR", help="ca.pem, server.pem, server.key")
    rserve.set_defaults(func=cmd_rendezvous_serve)

    wk = sub.add_parser("worker", help="a worker (started by a launcher)",
                        description=f"Dial the coordinator, take tasks of job ID until told to stop. "
                                    f"The worker's id and token are read from ${TOKEN_ENV} as ID=TOKEN; "
                                    f"several, comma-separated, run that many lightweight workers in "
                                    f"this process.")
    wk.add_argument("--coordinator", type=_address, required=True, metavar="HOST:PORT")
    wk.add_argument("--certs", required=True, metavar="DIR", help="ca.pem, client.pem, client.key")
    wk.add_argument("--job", required=True, metavar="ID")
    wk.add_argument("--count", type=_positive, metavar="N",
                    help="check that $EXCAMERA_WORKER_TOKENS names N workers (default: as many as it names)")
    wk.add_argument("--ops", action="append", default=[], metavar="MODULE",
                    help="import MODULE to register more operations (repeatable)")
    wk.set_defaults(func=cmd_worker)

    ce = sub.add_parser("certs", help="make a deployment's certificates")
    ce_sub = ce.add_subparsers(dest="action", metavar="ACTION", required=True)
    init = ce_sub.add_parser("init", help="write a new CA and server/client certificates into DIR",
                             description="Write ca.pem ca.key server.pem server.key client.pem "
                                         "client.key. Give workers only ca.pem client.pem client.key.")
    init.add_argument("dir", metavar="DIR")
    init.add_argument("--host", action="append", default=[], metavar="NAME",
                      help="a name or address clients dial (repeatable; localhost, 127.0.0.1 and ::1 "
                           "are always included)")
    init.add_argument("--force", action="store_true", help="replace existing files")
    init.set_defaults(func=cmd_certs_init)

    tl = sub.add_parser("timeline", help="draw a job's timeline as a per-worker Gantt chart",
                        description="Read a timeline JSON (--timeline) and write the chart as SVG or PNG.")
    tl.add_argument("input", metavar="T.json")
    tl.add_argument("-o", "--output", required=True, metavar="T.svg|T.png")
    tl.set_defaults(func=cmd_timeline)

    be = sub.add_parser("bench", help="benchmarks")
    be_sub = be.add_subparsers(dest="action", metavar="WHAT", required=True)
    br = be_sub.add_parser("runtime", help="runtime load: many workers, a 5-state FSM, relayed states",
                           description="Start a coordinator and rendezvous here and N lightweight "
                                       "workers (asyncio tasks, each with its own mutual-TLS "
                                       "channels) in --processes processes; run a 5-state FSM while "
                                       "the rendezvous relays --relay-mb of --state-mb states.")
    br.add_argument("--workers", type=_positive, default=1000, metavar="N")
    br.add_argument("--relay-mb", type=int, default=1024, metavar="MB")
    br.add_argument("--state-mb", type=float, default=4.0, metavar="MB")
    br.add_argument("--processes", type=_positive, default=2, metavar="P")
    br.set_defaults(func=cmd_bench_runtime)


def _setup_logging(level: str = "INFO") -> None:
    import logging

    logging.basicConfig(level=getattr(logging, level), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")


def _load_certs(directory: str, need: tuple[str, ...]):
    from excamera import tls
    from excamera.cli import CliError

    try:
        return tls.load(directory, need=need)
    except tls.CertError as e:
        raise CliError(str(e)) from None


def _run_forever(coro_factory) -> int:
    """Run a server coroutine until SIGINT/SIGTERM; exit 0 after a graceful stop."""
    import asyncio
    import signal

    async def main():
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        server = await coro_factory()
        await stop.wait()
        await server.stop()

    asyncio.run(main())
    return 0


def cmd_coordinator_serve(args: argparse.Namespace) -> int:
    from excamera import tls
    from excamera.cli import CliError

    from excamera import lambda_cli
    from excamera.storage import StorageError, open_storage

    why = lambda_cli.backend_error(args)
    if why is None and args.backend == "lambda" and args.no_launch:
        why = "--no-launch and --backend lambda do not go together"
    if why is not None:
        print(f"excamera coordinator serve: error: {why}", file=sys.stderr)
        return 2
    lam = args.backend == "lambda"
    # With Lambda workers the coordinator issues each job's client certificate: it needs ca.key.
    bundle = _load_certs(args.certs, tls.FILES if lam else tls.FILES[:1] + tls.FILES[2:])
    if lam:
        public_host = args.public_address.rpartition(":")[0]
        if public_host not in tls.server_names(bundle):
            raise CliError(f"--public-address {args.public_address}: {args.certs}/server.pem does not name "
                           f"{public_host}; make the certificates with excamera certs init --host {public_host}")
        factory = lambda_cli.launcher_factory(args)
    try:  # before serving: a wrong bucket or no credentials fail now, in seconds
        storage = open_storage(args.storage)
        storage.check()
    except StorageError as e:
        raise CliError(f"--storage {args.storage}: {str(e).removeprefix(args.storage + ': ')}") from None
    _setup_logging()

    async def start():
        import tempfile

        from coordinator.launcher import LocalLauncher
        from coordinator.server import Coordinator

        launcher = None
        if lam:
            launcher = factory(bundle)
        elif not args.no_launch:
            certs = tempfile.mkdtemp(prefix="excamera-worker-certs-")
            tls.write(bundle.for_worker(), certs, overwrite=True)
            launcher = LocalLauncher(certs)
        try:
            from pipeline.remote import planner_from_json

            c = Coordinator(bundle, storage, listen=args.listen, rendezvous=args.rendezvous,
                            launcher=launcher, keep=args.keep,
                            public_address=args.public_address if lam else None,
                            planner_factory=planner_from_json)  # clients may submit pipelines
            await c.start()
        except OSError as e:
            raise CliError(f"coordinator: {e.strerror or e}") from None
        print(f"excamera coordinator: serving on {c.address}, rendezvous {c.rendezvous_address}, "
              f"storage {c.storage.url}{' (kept)' if args.keep else ''}", file=sys.stderr, flush=True)
        if lam:
            print(f"excamera coordinator: workers are invocations of {args.function} "
                  f"({', '.join(launcher.regions)}), dialling {c.public_address} and rendezvous "
                  f"{c.worker_rendezvous}", file=sys.stderr, flush=True)
        return c

    return _run_forever(start)


def cmd_rendezvous_serve(args: argparse.Namespace) -> int:
    from excamera.cli import CliError

    bundle = _load_certs(args.certs, ("ca.pem", "server.pem", "server.key"))
    _setup_logging()

    async def start():
        from rendezvous.server import serve

        try:
            server = await serve(args.listen, bundle)
        except OSError as e:
            raise CliError(f"rendezvous: {e}") from None
        print(f"excamera rendezvous: serving on {server.address}", file=sys.stderr, flush=True)
        return server

    return _run_forever(start)


def cmd_worker(args: argparse.Namespace) -> int:
    import asyncio
    import importlib

    from excamera import tls
    from excamera.cli import CliError

    from excamera.tokens import TokenError, parse_worker_tokens

    try:
        pairs = parse_worker_tokens(os.environ.get(TOKEN_ENV, ""))
    except TokenError as e:
        raise CliError(f"worker: {TOKEN_ENV}: {e}") from None
    if not pairs:
        raise CliError(f"worker: no worker token: set {TOKEN_ENV}=ID=TOKEN")
    if args.count is not None and args.count != len(pairs):
        raise CliError(f"worker: --count {args.count} but {TOKEN_ENV} names {len(pairs)} worker(s)")
    bundle = _load_certs(args.certs, tls.WORKER_FILES)
    _setup_logging("WARNING")
    import worker.codec_ops  # noqa: F401 - registers the real codec operations (imports no codec yet)
    import worker.fakecodec  # noqa: F401 - registers the fake codec operations
    import pipeline.worker_op  # noqa: F401 - registers pipeline-stage (a pipeline task)
    for module in args.ops:
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise CliError(f"worker: --ops {module}: {e}") from None
    from worker.runtime import run_workers

    reasons = asyncio.run(run_workers(pairs, args.coordinator, bundle, args.job))
    refused = [r for r in reasons if r.startswith("refused")]
    if refused:
        raise CliError(f"worker: {refused[0]}")
    return 0


def cmd_certs_init(args: argparse.Namespace) -> int:
    from excamera import tls
    from excamera.cli import CliError

    hosts = list(tls.DEFAULT_HOSTS) + [h for h in args.host if h not in tls.DEFAULT_HOSTS]
    try:
        written = tls.write(tls.generate(hosts), args.dir, overwrite=args.force)
    except (tls.CertError, OSError) as e:
        raise CliError(f"{args.dir}: {getattr(e, 'strerror', None) or e}") from None
    print(f"wrote {', '.join(p.name for p in written)} in {args.dir}; give workers only "
          f"ca.pem client.pem client.key")
    return 0


def cmd_timeline(args: argparse.Namespace) -> int:
    from excamera.cli import CliError
    from excamera.timeline import FORMATS, TimelineError, render_file

    if not args.output.lower().endswith(FORMATS):
        raise CliError(f"-o {args.output}: the chart must end in .svg or .png")
    try:
        render_file(args.input, args.output)
    except (TimelineError, OSError) as e:
        raise CliError(f"{args.input}: {getattr(e, 'strerror', None) or e}") from None
    return 0


def cmd_bench_runtime(args: argparse.Namespace) -> int:
    from coordinator.bench import run_bench

    return run_bench(workers=args.workers, relay_mb=args.relay_mb, state_mb=args.state_mb,
                     processes=args.processes)
