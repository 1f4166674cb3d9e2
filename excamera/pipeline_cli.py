"""``excamera pipeline run | check | draw``: Sprocket-style pipelines (DESIGN.md, "Pipelines").

Errors follow the CLI contract: one line ``excamera: error: ...`` and exit 1 for a bad spec, a
missing input, an unwritable output or a failed task (naming node and lineage); 2 for usage.
"""

from __future__ import annotations

import argparse
import sys


def _assignment(flag: str):
    def parse(text: str) -> tuple[str, str]:
        name, eq, path = text.partition("=")
        if not eq or not name or not path:
            raise argparse.ArgumentTypeError(f"{flag} takes NAME=FILE (e.g. {flag} "
                                             f"{'input' if flag == '-i' else 'output'}_0=video.y4m), "
                                             f"not {text!r}")
        return name, path
    return parse


def add_parsers(sub) -> None:
    from excamera import lambda_cli
    from excamera.cli import int_in

    pl = sub.add_parser("pipeline", help="run, check or draw a pipeline (a Sprocket pipespec)",
                        description="Video pipelines described by a JSON pipespec of nodes (stages) and "
                                    "streams, run as many short tasks on the excamera runtime.")
    psub = pl.add_subparsers(dest="pipeline_command", metavar="COMMAND", required=True)

    run = psub.add_parser("run", help="run a pipeline on input files, writing its outputs",
                          description="Run SPEC.json: every input_N source from -i, every output_N sink "
                                      "to -o (written atomically; nothing left on failure).")
    run.add_argument("spec", metavar="SPEC.json")
    run.add_argument("-i", "--input", dest="inputs", action="append", default=[], type=_assignment("-i"),
                     metavar="input_N=FILE", help="a source's file (repeat for each source)")
    run.add_argument("-o", "--output", dest="outputs", action="append", default=[], type=_assignment("-o"),
                     metavar="output_N=FILE", help="a sink's file (repeat for each sink)")
    run.add_argument("--workers", type=int_in(0, 100000), default=None, metavar="N",
                     help="local worker processes (default: one per CPU); 0 runs every task in this process")
    run.add_argument("--spare", type=int_in(0, 100000), default=0, metavar="K",
                     help="K more workers for re-issued and straggling tasks")
    run.add_argument("--coordinator", metavar="HOST:PORT", help="a running coordinator (not supported yet "
                                                                 "for pipelines)")
    run.add_argument("--certs", metavar="DIR", help="with --coordinator")
    run.add_argument("--timeline", metavar="T.json",
                     help="write every worker's state history and the tasks the DAG became "
                          "(excamera timeline T.json -o T.svg; excamera pipeline draw --timeline)")
    run.add_argument("--stages", action="append", default=[], metavar="MODULE",
                     help="import MODULE (here and in every worker) to register more stages")
    run.add_argument("--frames-per-chunk", type=int_in(1, 100000), default=None, metavar="N",
                     help="frames per input chunk (default: one second)")
    run.add_argument("--scheduler", choices=("fifo", "priority", "streaming"), default=None,
                     help="which ready task goes first (default: the pipespec's, else fifo): priority = "
                          "the video's earliest frames first; streaming = just in time for --deadline")
    run.add_argument("--deadline", type=float, default=None, metavar="S",
                     help="with --scheduler streaming: the output plays in real time from S seconds "
                          "after the start")
    run.add_argument("--storage", metavar="DIR|s3://BUCKET/PREFIX",
                     help="where the job's objects live (default: a temporary directory)")
    run.add_argument("--keep", action="store_true", help="keep the job's objects in --storage")
    lambda_cli.add_backend_args(run)
    run.set_defaults(func=cmd_run)

    check = psub.add_parser("check", help="validate a pipespec and print its DAG as text")
    check.add_argument("spec", metavar="SPEC.json")
    check.add_argument("--stages", action="append", default=[], metavar="MODULE")
    check.set_defaults(func=cmd_check)

    draw = psub.add_parser("draw", help="draw a pipespec's DAG (SVG or PNG)")
    draw.add_argument("spec", metavar="SPEC.json")
    draw.add_argument("-o", "--output", required=True, metavar="DAG.svg|DAG.png")
    draw.add_argument("--timeline", metavar="T.json",
                      help="draw the tasks a run became instead (from pipeline run --timeline T.json)")
    draw.add_argument("--stages", action="append", default=[], metavar="MODULE")
    draw.set_defaults(func=cmd_draw)


def _pairs(parser_name: str, pairs: list[tuple[str, str]]) -> dict[str, str]:
    from excamera.cli import CliError

    out: dict[str, str] = {}
    for name, path in pairs:
        if name in out:
            raise CliError(f"{name}: given twice ({parser_name} {name}=...)")
        out[name] = path
    return out


def _spec(args):
    from excamera.cli import CliError
    from pipeline.spec import SpecError, load
    from pipeline.stage import StageError, load_modules

    try:
        load_modules(args.stages)
        return load(args.spec)
    except (SpecError, StageError) as e:
        raise CliError(str(e)) from None


def cmd_check(args: argparse.Namespace) -> int:
    print(_spec(args).describe())
    return 0


def cmd_draw(args: argparse.Namespace) -> int:
    from excamera.cli import CliError
    from pipeline.draw import draw_file

    spec = _spec(args)
    try:
        draw_file(spec, args.output, args.timeline)
    except (ValueError, OSError) as e:
        raise CliError(f"{args.output}: {getattr(e, 'strerror', None) or e}") from None
    return 0


class NodeProgress:
    """Tasks done per node, one bar each on a terminal only (stderr, ``excamera.progress``)."""

    def __init__(self, nodes, tty: bool | None = None):
        from excamera.progress import Progress

        self.progress = Progress({n: 0 for n in nodes}, unit="tasks", enabled=tty)
        self.tty = self.progress.enabled

    def __call__(self, node: str, done: int, planned: int, finished: bool) -> None:
        self.progress.total(node, planned)
        self.progress.set(node, done)
        if finished:
            self.progress.note(node, f"{node} finished")

    def close(self) -> None:
        self.progress.close()


def cmd_run(args: argparse.Namespace) -> int:
    from excamera.cli import CliError
    from pipeline.run import PipelineError, run_pipeline

    inputs = _pairs("-i", args.inputs)
    outputs = _pairs("-o", args.outputs)
    spec = _spec(args)
    progress = NodeProgress(list(spec.nodes))
    from excamera import lambda_cli

    why = lambda_cli.backend_error(args)
    if why is None and args.backend == "lambda" and (args.workers == 0 or args.coordinator):
        why = "--backend lambda runs the job on an embedded coordinator: it needs --workers N (N > 0)"
    if why is None and args.keep and not args.storage:
        why = "--keep needs --storage"
    if why is None and args.deadline is not None and args.scheduler != "streaming":
        why = "--deadline goes with --scheduler streaming"
    if why is not None:
        print(f"excamera pipeline run: error: {why}", file=sys.stderr)
        return 2
    scheduler = None
    if args.scheduler == "streaming":
        scheduler = {"name": "streaming", "deadline": args.deadline}
        if args.deadline is None:
            print("excamera pipeline run: error: --scheduler streaming needs --deadline S", file=sys.stderr)
            return 2
    elif args.scheduler:
        scheduler = args.scheduler
    import logging
    # The embedded coordinator's log lines are not for the terminal: a failure ends in one line below.
    logging.getLogger("excamera").addHandler(logging.NullHandler())
    backend = None
    if args.backend == "lambda":
        backend = dict(launcher_factory=lambda_cli.launcher_factory(args), listen=args.listen,
                       public_address=args.public_address)
    try:
        summary = run_pipeline(spec, inputs, outputs, workers=args.workers, spare=args.spare,
                               coordinator=args.coordinator, certs=args.certs, timeline=args.timeline,
                               stage_modules=tuple(args.stages), on_progress=progress,
                               frames_per_chunk=args.frames_per_chunk, scheduler=scheduler,
                               storage=args.storage, keep=args.keep, backend=backend)
    except PipelineError as e:
        raise CliError(str(e)) from None
    finally:
        progress.close()
    written = ", ".join(f"{outputs[name]} ({n} frames)" for name, n in summary["outputs"].items())
    print(f"excamera: {summary['tasks']} tasks in {summary['seconds']:.1f} s; wrote {written}", file=sys.stderr)
    sched = summary.get("schedule", {})
    if sched.get("scheduler") == "streaming":
        misses = sched["misses"]
        print(f"excamera: streaming at a {sched['deadline_s']:g} s deadline: {len(misses)} of "
              f"{sched['outputs']} output pieces late", file=sys.stderr)
        for m in misses:
            print(f"excamera:   {m['sink']} frame {m['frame']}: due at {m['due_s']:.2f} s, "
                  f"{m['late_s']:.2f} s late", file=sys.stderr)
    return 0
