"""The ``excamera`` command line: one parser, one subcommand module each in ``excamera.commands``.

Contract (docs/design/cli.md): exit status 0 on success; 1 on a runtime error, bad input
included, with exactly one line on stderr, ``excamera: error: <what and where>``; 2 on a usage
error (argparse's, or a ``UsageError``); 130 on Ctrl-C. Never a traceback for bad input. Output
files are written under a temporary name and renamed only when complete, so a failed run leaves
nothing behind.

Each command module imports only argparse and ``excamera.commands.base`` at module level, and
its heavy modules (numpy, numba, the codec, gRPC) inside its command functions, so
``excamera --help`` is instant.
"""

from __future__ import annotations

import argparse
import atexit
import os
import sys
import threading

from excamera.commands import (bench, certs, chunks, decode, encode, jobs, lambda_, pipeline, plan, serve, ssim,
                               timeline, vp8enc, worker)
from excamera.commands.base import PROG, CliError, UsageError, error, internal

#: The subcommand modules, in the order ``excamera --help`` lists them; each has ``register(sub)``.
COMMANDS = (decode, vp8enc, ssim, chunks, encode, pipeline, plan, serve, jobs, worker, certs, timeline, bench,
            lambda_)


def build_parser() -> argparse.ArgumentParser:
    """The complete parser (the CLI reference in the docs is generated from it)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="VP8 with explicit decoder state, after ExCamera (NSDI 2017).",
        epilog="Errors: one line on stderr, 'excamera: error: <file>: frame <n> (offset <o>): <what>'; "
               "exit 1 on bad input, 2 on a usage error.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # argparse's usage errors: message on stderr, SystemExit(2)
    try:
        return args.func(args)
    except UsageError as e:
        return _usage_error(args.command_parser, e)
    except CliError as e:
        error(str(e))
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader of our stdout went away (e.g. `| head`); nothing more to say.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except OSError:
            pass
        return 1
    except Exception as e:  # noqa: BLE001 - never a traceback; internal() says it is a bug
        error(internal(e))
        return 1


def _usage_error(parser: argparse.ArgumentParser, e: UsageError) -> int:
    """``excamera COMMAND: error: <message>`` on stderr, after the command's usage line unless the
    error says the message alone is enough; exit status 2, as argparse's own usage errors."""
    if e.show_usage:
        parser.print_usage(sys.stderr)
    print(f"{parser.prog}: error: {e}", file=sys.stderr, flush=True)
    return 2


def run() -> None:
    """The ``excamera`` console script: ``main()``, then exit without tearing the interpreter down.

    Tearing down numba's compiled-code objects costs about 0.08 s of CPU, more than some encodes;
    a worker process starts and exits thousands of times. The exit handlers still run and the
    output streams are flushed; only the final garbage collection is skipped. While a thread other
    than the main one is alive, the interpreter's normal exit joins it instead.

    numpy's OpenBLAS is held to one thread unless the environment says otherwise: at numpy's import
    it starts a thread per core, whose spinning cost every process about 0.1 s of CPU (a third of
    a warm start-up), and nothing here multiplies matrices with it."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    code = main()
    if threading.active_count() > 1:
        sys.exit(code)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can reach it
            code = code or 1
    atexit._run_exitfuncs()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
