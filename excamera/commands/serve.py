"""The daemons: ``excamera coordinator serve`` (workers dial in over mutual TLS, jobs come over
the Jobs service) and ``excamera rendezvous serve`` (the relay of decoder states between a job's
workers). Each serves until SIGINT or SIGTERM, then stops gracefully (exit 0)."""

from __future__ import annotations

import argparse
import sys

from excamera.commands.base import (CliError, UsageError, add_backend_options, address, check_backend_options,
                                    check_storage, command, lambda_launcher_factory, load_certs, setup_logging)


def register(sub) -> None:
    co = sub.add_parser("coordinator", help="the coordinator daemon",
                        description="Run the coordinator: workers dial in over mutual TLS and hold "
                                    "one stream each; jobs are submitted over the Jobs service.")
    co_sub = co.add_subparsers(dest="action", metavar="ACTION", required=True)
    serve = command(co_sub, "serve", cmd_coordinator_serve, help="serve until interrupted")
    serve.add_argument("--listen", type=address, required=True, metavar="HOST:PORT")
    serve.add_argument("--certs", required=True, metavar="DIR",
                       help="ca.pem, server.pem, server.key, client.pem, client.key (excamera certs init)")
    serve.add_argument("--storage", default="excamera-storage", metavar="DIR|URL",
                       help="job storage: a directory or s3://BUCKET/PREFIX (AWS configured as for any "
                            "boto3 program) (default: ./excamera-storage)")
    serve.add_argument("--keep", action="store_true",
                       help="keep every job's objects; by default a job's go when it ends (a succeeded "
                            "job's results once fetched)")
    serve.add_argument("--rendezvous", type=address, metavar="HOST:PORT",
                       help="use this rendezvous instead of starting one in-process")
    serve.add_argument("--no-launch", action="store_true",
                       help="do not start local worker processes; workers are started elsewhere")
    serve.add_argument("--state-dir", metavar="DIR|none",
                       help="the journal of every job and verified result: jobs resume after a restart "
                            "(default $XDG_STATE_HOME/excamera, else ~/.local/state/excamera; none: no "
                            "journal, jobs die with the process)")
    serve.add_argument("--drain", type=_seconds, default=30.0, metavar="S",
                       help="on SIGTERM or SIGINT: stop admitting jobs (health NOT_SERVING) and let the "
                            "running ones go on for up to S seconds, then stop; what still runs resumes "
                            "at the next start (default: 30)")
    serve.add_argument("--metrics", type=address, metavar="HOST:PORT",
                       help="serve Prometheus metrics at http://HOST:PORT/metrics")
    serve.add_argument("--log-format", choices=("text", "json"), default="text",
                       help="json: one JSON object per line, with job, task, attempt and worker ids "
                            "(default: text)")
    add_backend_options(serve, listen=False)
    gc = command(co_sub, "gc", cmd_coordinator_gc, help="list (--delete: remove) storage no journalled job owns",
                 description="List the job prefixes (jobs/JOB_ID/) in --storage that no job in the journal "
                             "of --state-dir owns (left by a coordinator without a journal, or by a job "
                             "whose removal failed); --delete removes them. Refused while a coordinator "
                             "serves from the state directory.")
    gc.add_argument("--storage", default="excamera-storage", metavar="DIR|URL",
                    help="as given to coordinator serve (default: ./excamera-storage)")
    gc.add_argument("--state-dir", metavar="DIR", help="as given to coordinator serve (default: as there)")
    gc.add_argument("--delete", action="store_true", help="remove what is listed")

    rv = sub.add_parser("rendezvous", help="the rendezvous relay",
                        description="Relay messages (decoder states) between the workers of a job.")
    rv_sub = rv.add_subparsers(dest="action", metavar="ACTION", required=True)
    rserve = command(rv_sub, "serve", cmd_rendezvous_serve, help="serve until interrupted")
    rserve.add_argument("--listen", type=address, required=True, metavar="HOST:PORT")
    rserve.add_argument("--certs", required=True, metavar="DIR", help="ca.pem, server.pem, server.key")


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


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= value <= 24 * 3600:
        raise argparse.ArgumentTypeError(f"{text} s: must be 0 to 86400")
    return value


def _say(args, text: str) -> None:
    """A line for the operator: on stderr, or as a log record with ``--log-format json`` (where
    every line must be JSON)."""
    if getattr(args, "log_format", "text") == "json":
        import logging

        logging.getLogger("excamera.coordinator").info(text)
    else:
        print(f"excamera coordinator: {text}", file=sys.stderr, flush=True)


def _serve_coordinator(args, bundle, factory, journal) -> int:
    """Serve until SIGTERM or SIGINT, drain (``--drain``), stop; exit 0 (``coordinator.daemon``)."""
    import asyncio

    from coordinator import daemon

    def metrics_up(server):
        _say(args, f"metrics at http://{server.address}/metrics")

    try:
        asyncio.run(daemon.serve(lambda: _start_coordinator(args, bundle, factory, journal),
                                 drain_s=args.drain, metrics=args.metrics and _host_port(args.metrics),
                                 on_metrics=metrics_up))
    except OSError as e:   # the metrics port
        raise CliError(f"--metrics {args.metrics}: {e.strerror or e}") from None
    return 0


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def _lambda_factory(args, bundle):
    """``--backend lambda``: the launcher factory, once ``--public-address`` is known to be a
    name ``server.pem`` carries (Lambda workers check it)."""
    from security import tls

    public_host = args.public_address.rpartition(":")[0]
    if public_host not in tls.server_names(bundle):
        raise CliError(f"--public-address {args.public_address}: {args.certs}/server.pem does not name "
                       f"{public_host}; make the certificates with excamera certs init --host {public_host}")
    return lambda_launcher_factory(args)


def cmd_coordinator_serve(args: argparse.Namespace) -> int:
    from security import tls

    check_backend_options(args)
    if args.backend == "lambda" and args.no_launch:
        raise UsageError("--no-launch and --backend lambda do not go together", show_usage=False)
    lam = args.backend == "lambda"
    # With Lambda workers the coordinator issues each job's client certificate: it needs ca.key.
    bundle = load_certs(args.certs, tls.FILES if lam else tls.FILES[:1] + tls.FILES[2:])
    factory = _lambda_factory(args, bundle) if lam else None
    check_storage(args.storage)  # before serving: a wrong bucket or no credentials fail now
    from coordinator import logging_json

    logging_json.setup(args.log_format)
    journal = _journal(args.state_dir, args)
    _check_journal_storage(journal, args.storage)
    return _serve_coordinator(args, bundle, factory, journal)


def _journal(state_dir: str | None, args=None):
    """The coordinator's journal (``coordinator.journal``), opened and locked; None for ``none``."""
    from coordinator.journal import JournalError, open_state_dir

    try:
        journal = open_state_dir(state_dir)
    except JournalError as e:
        raise CliError(str(e)) from None
    if journal is not None and journal.torn:
        _say(args, f"the journal's last write was torn ({journal.torn} bytes); it was rolled back")
    return journal


def _check_journal_storage(journal, url: str) -> None:
    """Refuse a --storage other than the one the journal's unfinished jobs are in (their inputs
    and verified results are there and nowhere else): one line, before anything is touched."""
    from coordinator.recovery import storage_refusal
    from storage import open_storage

    if journal is None:
        return
    foreign = journal.foreign_storage(open_storage(url).url)
    if foreign is not None:
        journal.close()
        raise CliError(storage_refusal(journal.directory, url, *foreign))


def cmd_coordinator_gc(args: argparse.Namespace) -> int:
    from storage import StorageError, open_storage

    if args.state_dir is not None and args.state_dir.lower() == "none":
        raise CliError("--state-dir none: there is no journal to read")
    journal = _journal(args.state_dir)
    try:
        owned = journal.owners()
    finally:
        journal.close()
    check_storage(args.storage)
    try:
        storage = open_storage(args.storage)
        orphans: dict[str, int] = {}
        for key in storage.list("jobs"):
            parts = key.split("/")
            if len(parts) >= 3 and parts[1] not in owned:
                orphans[parts[1]] = orphans.get(parts[1], 0) + 1
        for job_id, n in sorted(orphans.items()):
            if args.delete:
                storage.delete_prefix(f"jobs/{job_id}")
            print(f"{'removed' if args.delete else 'unowned'}: jobs/{job_id}/ ({n} object(s))")
    except StorageError as e:
        raise CliError(f"--storage {args.storage}: {e}") from None
    if not orphans:
        print("nothing to collect: every job in storage is a journalled job's")
    return 0


async def _start_coordinator(args, bundle, factory, journal=None):
    import tempfile

    from coordinator.launcher import LocalLauncher
    from coordinator.server import Coordinator
    from pipeline.remote import planner_from_json
    from security import tls

    launcher = None
    if factory is not None:
        launcher = factory(bundle)
    elif not args.no_launch:
        certs = tempfile.mkdtemp(prefix="excamera-worker-certs-")
        tls.write(bundle.for_worker(), certs, overwrite=True)
        launcher = LocalLauncher(certs)
    try:
        c = Coordinator(bundle, args.storage, listen=args.listen, rendezvous=args.rendezvous,
                        launcher=launcher, keep=args.keep,
                        public_address=args.public_address if factory is not None else None,
                        planner_factory=planner_from_json,  # clients may submit pipelines
                        journal=journal)
        await c.start()
    except OSError as e:
        raise CliError(f"coordinator: {e.strerror or e}") from None
    _say(args, f"serving on {c.address}, rendezvous {c.rendezvous_address}, "
               f"storage {c.storage.url}{' (kept)' if args.keep else ''}")
    if factory is not None:
        _say(args, f"workers are invocations of {args.function} ({', '.join(launcher.regions)}), "
                   f"dialling {c.public_address} and rendezvous {c.worker_rendezvous}")
    return c


def cmd_rendezvous_serve(args: argparse.Namespace) -> int:
    bundle = load_certs(args.certs, ("ca.pem", "server.pem", "server.key"))
    setup_logging()

    async def start():
        from rendezvous.server import serve

        try:
            server = await serve(args.listen, bundle)
        except OSError as e:
            raise CliError(f"rendezvous: {e}") from None
        print(f"excamera rendezvous: serving on {server.address}", file=sys.stderr, flush=True)
        return server

    return _run_forever(start)
