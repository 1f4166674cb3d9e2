"""``excamera bench runtime``: the runtime under load — many workers, a 5-state FSM, relayed
states (``coordinator.bench``)."""

from __future__ import annotations

import argparse
import sys

from excamera.commands.base import CliError, command, positive_count


def register(sub) -> None:
    be = sub.add_parser("bench", help="benchmarks")
    be_sub = be.add_subparsers(dest="action", metavar="WHAT", required=True)
    br = command(be_sub, "runtime", cmd_bench_runtime,
                 help="runtime load: many workers, a 5-state FSM, relayed states",
                 description="Start a coordinator and rendezvous here and N lightweight "
                             "workers (asyncio tasks, each with its own mutual-TLS "
                             "channels) in --processes processes; run a 5-state FSM while "
                             "the rendezvous relays --relay-mb of --state-mb states.")
    br.add_argument("--workers", type=positive_count, default=1000, metavar="N")
    br.add_argument("--relay-mb", type=int, default=1024, metavar="MB")
    br.add_argument("--state-mb", type=float, default=4.0, metavar="MB")
    br.add_argument("--processes", type=positive_count, default=2, metavar="P")
    br.add_argument("--state-dir", metavar="DIR",
                    help="journal the job in DIR as coordinator serve --state-dir does (default: no "
                         "journal), to measure the journal's cost")


def cmd_bench_runtime(args: argparse.Namespace) -> int:
    import asyncio

    from coordinator.bench import bench

    try:
        asyncio.run(bench(args.workers, args.relay_mb, args.state_mb, args.processes, state_dir=args.state_dir))
    except (ValueError, RuntimeError) as e:
        raise CliError(str(e)) from None
    sys.stdout.flush()
    return 0
