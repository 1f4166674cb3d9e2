"""``excamera pipeline run | check | draw``: Sprocket-style pipelines (docs/design/pipelines.md).

Errors follow the CLI contract: one line ``excamera: error: ...`` and exit 1 for a bad spec, a
missing input, an unwritable output or a failed task (naming node and lineage); 2 for usage.
"""

from __future__ import annotations

import argparse
import re
import sys

from excamera.commands.base import (CliError, UsageError, add_run_options, check_backend_options, check_storage,
                                    command, int_in, quiet_runtime_logs, run_config_from)
from excamera.commands.progress import NodeProgress

__all__ = ["register", "NodeProgress"]


def _assignment(flag: str):
    def parse(text: str) -> tuple[str, str]:
        name, eq, path = text.partition("=")
        if not eq and re.fullmatch(r"(input|output)_\d+", text):
            raise argparse.ArgumentTypeError(f"{flag} {text} needs =FILE ({flag} {text}=FILE)")
        if not eq or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            return "", text           # a bare FILE: the pipespec's one source or sink (pipeline.run)
        if not path:
            raise argparse.ArgumentTypeError(f"{flag} takes NAME=FILE (e.g. {flag} "
                                             f"{'input' if flag == '-i' else 'output'}_0=video.y4m), "
                                             f"not {text!r}")
        return name, path
    return parse


class _SchedulerNames:
    """``--scheduler``'s choices, read from the scheduler registry only when argparse needs them
    (a value to check, or this command's help): the registry's module loads numpy."""

    def _names(self) -> tuple[str, ...]:
        from pipeline.schedulers import SCHEDULERS

        return tuple(SCHEDULERS.names())

    def __iter__(self):
        return iter(self._names())

    def __contains__(self, name) -> bool:
        return name in self._names()


def register(sub) -> None:
    pl = sub.add_parser("pipeline", help="run, check or draw a pipeline (a Sprocket pipespec)",
                        description="Video pipelines described by a JSON pipespec of nodes (stages) and "
                                    "streams, run as many short tasks on the excamera runtime.")
    psub = pl.add_subparsers(dest="pipeline_command", metavar="COMMAND", required=True)

    run = command(psub, "run", cmd_run, help="run a pipeline on input files, writing its outputs",
                  description="Run SPEC.json: every input_N source from -i, every output_N sink "
                              "to -o (written atomically; nothing left on failure).")
    run.add_argument("spec", metavar="SPEC.json")
    run.add_argument("-i", "--input", dest="inputs", action="append", default=[], type=_assignment("-i"),
                     metavar="input_N=FILE", help="a source's file (repeat for each source)")
    run.add_argument("-o", "--output", dest="outputs", action="append", default=[], type=_assignment("-o"),
                     metavar="output_N=FILE", help="a sink's file (repeat for each sink); a chunks "
                     "sink may go to s3://BUCKET/KEY.ivf, joined in S3 by the workers")
    run.add_argument("--stages", action="append", default=[], metavar="MODULE",
                     help="import MODULE (here and in every worker) to register more stages")
    run.add_argument("--frames-per-chunk", type=int_in(1, 100000), default=None, metavar="N",
                     help="frames per input chunk (default: one second)")
    run.add_argument("--scheduler", choices=_SchedulerNames(), default=None, metavar="NAME",
                     help="which ready task goes first, one of %(choices)s (default: the pipespec's, "
                          "else fifo): priority = the video's earliest frames first; streaming = just in "
                          "time for --deadline")
    run.add_argument("--deadline", type=float, default=None, metavar="S",
                     help="with --scheduler streaming: the output plays in real time from S seconds "
                          "after the start")
    run.add_argument("--no-audio", action="store_true",
                     help="leave the input's sound out (by default the outputs carry the first video "
                          "input's sound, in step with the frames they keep)")
    add_run_options(run, unit="tasks")

    check = command(psub, "check", cmd_check, help="validate a pipespec and print its DAG as text")
    check.add_argument("spec", metavar="SPEC.json")
    check.add_argument("--stages", action="append", default=[], metavar="MODULE")

    draw = command(psub, "draw", cmd_draw, help="draw a pipespec's DAG (SVG or PNG)")
    draw.add_argument("spec", metavar="SPEC.json")
    draw.add_argument("-o", "--output", required=True, metavar="DAG.svg|DAG.png")
    draw.add_argument("--timeline", metavar="T.json",
                      help="draw the tasks a run became instead (from pipeline run --timeline T.json)")
    draw.add_argument("--stages", action="append", default=[], metavar="MODULE")


def _pairs(parser_name: str, pairs: list[tuple[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, path in pairs:
        if name in out:
            if not name:
                raise CliError(f"{parser_name} FILE without a name is given twice; name them "
                               f"({parser_name} NAME=FILE)")
            raise CliError(f"{name}: given twice ({parser_name} {name}=...)")
        out[name] = path
    return out


def _spec(args):
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
    from pipeline.draw import draw_file

    spec = _spec(args)
    try:
        draw_file(spec, args.output, args.timeline)
    except (ValueError, OSError) as e:
        raise CliError(f"{args.output}: {getattr(e, 'strerror', None) or e}") from None
    return 0


def _check_options(args: argparse.Namespace) -> None:
    """Usage errors (one line, exit 2), then the combinations a run refuses (one line, exit 1)."""
    def usage(message: str) -> UsageError:
        return UsageError(message, show_usage=False)

    check_backend_options(args)
    if args.backend == "lambda" and (args.workers == 0 or args.coordinator):
        raise usage("--backend lambda runs the job on an embedded coordinator: it needs --workers N (N > 0)")
    if args.keep and not args.storage:
        raise usage("--keep needs --storage")
    if args.deadline is not None and args.scheduler != "streaming":
        raise usage("--deadline goes with --scheduler streaming")
    if args.scheduler == "streaming" and args.deadline is None:
        raise usage("--scheduler streaming needs --deadline S")
    if args.coordinator and (args.workers == 0 or not args.certs):
        raise CliError("--coordinator needs --workers N (N > 0) and --certs DIR")
    if args.coordinator and args.timeline:
        raise CliError("--timeline is written by an embedded coordinator; a running one keeps its own")
    if args.coordinator and args.storage:
        raise CliError("a running coordinator has its own storage and workers: leave out --storage and --backend")
    if args.storage and args.workers == 0:
        raise CliError("--storage is for the workers' job (--workers N); --workers 0 runs here")


#: The library's words for what a run option gave, and the flag the user typed.
_SUBJECTS = {"storage": "--storage", "timeline": "--timeline", "coordinator": "--coordinator"}


def _in_flags(message: str) -> str:
    """A ``PipelineError`` about a run option (``storage URL: ...``) as the flag that gave it."""
    subject, _, rest = message.partition(" ")
    return f"{_SUBJECTS[subject]} {rest}" if subject in _SUBJECTS and rest else message


def cmd_run(args: argparse.Namespace) -> int:
    from pipeline.run import PipelineError, name_files, run_pipeline

    inputs = _pairs("-i", args.inputs)
    outputs = _pairs("-o", args.outputs)
    spec = _spec(args)
    try:
        inputs, outputs = name_files(spec, inputs, outputs)
    except PipelineError as e:
        raise CliError(str(e)) from None
    _check_options(args)
    config = run_config_from(args)
    if args.storage:
        check_storage(args.storage)
    scheduler = ({"name": "streaming", "deadline": args.deadline} if args.scheduler == "streaming"
                 else args.scheduler)
    quiet_runtime_logs()
    progress = NodeProgress(list(spec.nodes), sinks=list(outputs))
    try:
        summary = run_pipeline(spec, inputs, outputs, config, stage_modules=tuple(args.stages),
                               on_progress=progress, on_frames=progress.frames,
                               frames_per_chunk=args.frames_per_chunk,
                               scheduler=scheduler, audio=not args.no_audio)
    except PipelineError as e:
        raise CliError(_in_flags(str(e))) from None
    finally:
        progress.close()
    _report(summary, outputs)
    return 0


def _report(summary: dict, outputs: dict[str, str]) -> None:
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

