"""What every ``excamera`` subcommand shares, and nothing else: the two errors (``CliError``,
``UsageError``), argparse types, the run options declared once (``add_run_options``,
``add_backend_options``) and the run configuration built from them (``run_config_from``), and
small helpers more than one command needs. It imports no subcommand, so each command module
(``excamera.commands.*``) imports this and never another command.

The contract (docs/design/cli.md): exit status 0 on success; 1 on a runtime error, bad input
included, with exactly one line on stderr, ``excamera: error: <what and where>``; 2 on a usage
error; 130 on Ctrl-C. Never a traceback for bad input. Only argparse and the standard library
load with this module: ``excamera --help`` stays instant.
"""

from __future__ import annotations

import argparse
import os
import sys

from foundation.errors import one_line

PROG = "excamera"

#: One line for an exception (``foundation.errors.one_line``).
describe = one_line


class CliError(Exception):
    """A runtime failure, already phrased as the one line to print after ``excamera: error: ``."""


class UsageError(Exception):
    """A usage error: exit status 2, the message after ``excamera COMMAND: error: ``, preceded by
    the command's usage line as argparse prints it, unless ``show_usage`` is False (a combination
    of run options: the message alone says what to change)."""

    def __init__(self, message: str, *, show_usage: bool = True):
        super().__init__(message)
        self.show_usage = show_usage


def command(sub, name: str, func, **kwargs) -> argparse.ArgumentParser:
    """A subcommand's parser that runs ``func(args)``; a ``UsageError`` it raises is reported
    with this parser's usage line (``excamera.cli.main``)."""
    parser = sub.add_parser(name, **kwargs)
    parser.set_defaults(func=func, command_parser=parser)
    return parser


def where(path: str, frame: int | None = None, offset: int | None = None) -> str:
    """``<file>: frame <n> (offset <o>)``, the prefix of every error message."""
    if frame is None:
        return os.fspath(path)
    return f"{path}: frame {frame} (offset {offset})"


# -- argparse types ---------------------------------------------------------------------------

def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None


def at_least(lo: int):
    """An argparse type: a whole number ``lo`` or more."""
    def parse(text: str) -> int:
        n = _whole(text)
        if n < lo:
            raise argparse.ArgumentTypeError(f"must be {lo} or more: {n}")
        return n
    return parse


frame_count = at_least(0)
positive_count = at_least(1)


def int_in(lo: int, hi: int):
    """An argparse type: a whole number in lo..hi (a usage error otherwise)."""
    def parse(text: str) -> int:
        n = _whole(text)
        if not lo <= n <= hi:
            raise argparse.ArgumentTypeError(f"must be in {lo}..{hi}: {n}")
        return n
    return parse


def ssim_target(text: str) -> float:
    try:
        s = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 < s < 1.0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive): {text}")
    return s


def seconds(text: str) -> float:
    """An argparse type: seconds, 0 or more."""
    try:
        s = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= s < float("inf"):  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds: {text}")
    return s


def address(text: str) -> str:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"not HOST:PORT: {text!r}")
    return text


# -- reporting --------------------------------------------------------------------------------

def error(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)


def internal(exc: BaseException) -> str:
    """An exception that is not an input error is a bug; still one line, unless debugging."""
    if os.environ.get("EXCAMERA_DEBUG"):
        raise exc
    return f"internal error (a bug, please report it): {type(exc).__name__}: {describe(exc)}"


def setup_logging(level: str = "INFO") -> None:
    import logging

    logging.basicConfig(level=getattr(logging, level), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")


def quiet_runtime_logs() -> None:
    """An embedded coordinator's log lines are not for the terminal: a failure ends in one line."""
    import logging

    logging.getLogger("excamera").addHandler(logging.NullHandler())


# -- files ------------------------------------------------------------------------------------

def load_state(path: str | None):
    """The decoder state saved in ``path`` (a ``--state-in``), or the empty state for None."""
    from codec.state import DecoderState

    if path is None:
        return DecoderState()
    try:
        with open(path, "rb") as f:
            return DecoderState.from_bytes(f.read())
    except (OSError, ValueError) as e:  # VP8Error is a ValueError
        raise CliError(f"{where(path)}: {describe(e)}") from None


def write_ivf(path: str, frames: list[bytes], width: int, height: int, rate: tuple[int, int],
              user: bytes = bytes(4)) -> None:
    """``frames`` as an IVF file (``user``: the header's bytes 28-31, a chunk's entry digest)."""
    from codec.ivf import IvfHeader, IvfWriter

    with IvfWriter(path, IvfHeader(width=width, height=height, rate=rate[0], scale=rate[1],
                                   frame_count=len(frames), user=user)) as w:
        for i, d in enumerate(frames):
            w.write(d, i)


def load_certs(directory: str, need: tuple[str, ...]):
    from security import tls

    try:
        return tls.load(directory, need=need)
    except tls.CertError as e:
        raise CliError(str(e)) from None


def check_storage(url: str) -> None:
    """Before any input is read: a wrong bucket or missing credentials fail in seconds."""
    from storage import StorageError, open_storage

    try:
        open_storage(url).check()
    except StorageError as e:
        raise CliError(f"--storage {url}: {str(e).removeprefix(url + ': ')}") from None


# -- the run options, declared once -----------------------------------------------------------

#: Seconds after the first accepted invocation by which some worker must have connected
#: (``awslambda.backend.CONNECT_DEADLINE_S``; repeated so that --help imports nothing).
CONNECT_DEADLINE_S = 60
#: A deployed function's memory, the default for the cost (``awslambda.backend.MEMORY_MB``).
MEMORY_MB = 3008


def add_run_options(p, *, unit: str) -> None:
    """``--workers --spare --coordinator --certs --storage --keep --timeline`` and the backend
    options, on a command that runs a job (``unit``: what the job is made of, "chunks", "tasks")."""
    p.add_argument("--workers", type=int_in(0, 100000), default=None, metavar="N",
                   help="N > 0: run the job on the distributed runtime (an embedded coordinator and "
                        "rendezvous, N local worker processes; default: one per CPU), or with "
                        "--coordinator on N workers a running coordinator launches; 0: run every step "
                        "in this process")
    p.add_argument("--spare", type=int_in(0, 100000), default=0, metavar="K",
                   help=f"K more workers for re-issued and straggling {unit} (with --workers N)")
    p.add_argument("--timeline", metavar="T.json",
                   help="write every worker's state history (excamera timeline T.json -o T.svg draws it)")
    p.add_argument("--coordinator", metavar="HOST:PORT",
                   help="submit the job to a running `excamera coordinator serve` (with --workers N and "
                        "--certs): the inputs stream up, the results come back")
    p.add_argument("--certs", metavar="DIR",
                   help="with --coordinator: ca.pem, client.pem, client.key (from excamera certs init)")
    p.add_argument("--reconnect", type=seconds, default=120.0, metavar="S",
                   help="with --coordinator: while it is away (a restart), keep trying to reach it for "
                        "S seconds, then watch the job again and fetch its result (default %(default)g)")
    p.add_argument("--storage", metavar="DIR|s3://BUCKET/PREFIX",
                   help="with --workers N: the job's objects go to s3://BUCKET/PREFIX (AWS configured as "
                        "for any boto3 program: profile, AWS_REGION, AWS_ENDPOINT_URL_S3, ...) or a "
                        "directory, under jobs/JOB_ID/, removed when the job ends (default: a temporary "
                        "directory)")
    p.add_argument("--keep", action="store_true",
                   help="with --storage: leave the job's objects there when it ends")
    add_backend_options(p)


def add_backend_options(p, *, listen: bool = True) -> None:
    """``--backend`` and its Lambda options, on a command that launches workers."""
    g = p.add_argument_group("workers on AWS Lambda")
    g.add_argument("--backend", choices=("local", "lambda"), default="local",
                   help="where workers run: local processes (default) or AWS Lambda invocations")
    g.add_argument("--function", metavar="NAME", help="with --backend lambda: the deployed worker function")
    g.add_argument("--region", metavar="R[,R...]",
                   help="with --backend lambda: region(s) to invoke in, round-robin (default: boto3's)")
    g.add_argument("--public-address", type=address, metavar="HOST:PORT",
                   help="with --backend lambda: the address workers dial (this machine's public "
                        "address; port 0: the port bound)")
    if listen:
        g.add_argument("--listen", type=address, default="0.0.0.0:0", metavar="HOST:PORT",
                       help="with --backend lambda: where the coordinator listens (default 0.0.0.0:0)")
    g.add_argument("--memory", type=int_in(128, 10240), default=MEMORY_MB, metavar="MB",
                   help=f"with --backend lambda: the function's memory, for the cost (default {MEMORY_MB})")
    g.add_argument("--connect-deadline", type=int_in(1, 900), default=CONNECT_DEADLINE_S, metavar="S",
                   help="with --backend lambda: fail the job when no worker has connected S seconds after "
                        f"the first accepted invocation (a --public-address they cannot reach; default "
                        f"{CONNECT_DEADLINE_S}: a container image's first cold start can take tens of seconds)")


def check_backend_options(args) -> None:
    """The backend options fit together (a one-line ``UsageError`` otherwise)."""
    if args.backend != "lambda":
        for flag in ("function", "region", "public_address"):
            if getattr(args, flag, None):
                raise UsageError(f"--{flag.replace('_', '-')} goes with --backend lambda", show_usage=False)
    elif not args.function:
        raise UsageError("--backend lambda needs --function NAME", show_usage=False)
    elif not args.public_address:
        raise UsageError("--backend lambda needs --public-address HOST:PORT (the address Lambda workers dial)",
                         show_usage=False)


def lambda_launcher_factory(args):
    """``factory(bundle)`` for ``--backend lambda`` (the regions looked up now)."""
    from awslambda.backend import launcher_factory

    return launcher_factory(args.function, _regions(args), memory_mb=args.memory,
                            connect_deadline_s=args.connect_deadline)


def _regions(args) -> list[str]:
    from awslambda.backend import regions
    from coordinator.config import ConfigError

    try:
        return regions(args.region)
    except ConfigError as e:
        if args.region:
            raise CliError(f"--region {args.region}: {e}") from None
        raise CliError("--backend lambda: no region: give --region R or set AWS_REGION") from None


def run_config_from(args):
    """The ``RunConfig`` the run options say (``coordinator.config``), once they have been checked
    (each command says which combinations it refuses, in its own words)."""
    from coordinator.config import ConfigError, LocalBackend, RemoteCoordinator, RunConfig

    try:
        if args.coordinator:
            backend = RemoteCoordinator(args.coordinator, args.certs, getattr(args, "reconnect", 120.0))
        elif args.backend == "lambda":
            from awslambda.backend import lambda_backend

            backend = lambda_backend(args.function, _regions(args), args.public_address, listen=args.listen,
                                     memory_mb=args.memory, connect_deadline_s=args.connect_deadline)
        else:
            backend = LocalBackend()
        return RunConfig(backend=backend, workers=args.workers, spare=args.spare, storage=args.storage,
                         keep=args.keep, timeline=args.timeline)
    except ConfigError as e:  # a combination the command's own checks let through
        raise UsageError(str(e), show_usage=False) from None
