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
    """Tasks done per node, one tqdm bar each, on a terminal only (stderr)."""

    def __init__(self, nodes, tty: bool | None = None):
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.bars = {}
        if self.tty:
            from tqdm import tqdm
            width = max(len(n) for n in nodes)
            self.bars = {n: tqdm(total=0, desc=n.ljust(width), unit="task", position=i, leave=True,
                                 file=sys.stderr, dynamic_ncols=True) for i, n in enumerate(nodes)}

    def __call__(self, node: str, done: int, planned: int, finished: bool) -> None:
        bar = self.bars.get(node)
        if bar is not None:
            bar.total = planned
            bar.n = done
            if finished:
                bar.set_postfix_str("finished", refresh=False)
            bar.refresh()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


def cmd_run(args: argparse.Namespace) -> int:
    from excamera.cli import CliError
    from pipeline.run import PipelineError, run_pipeline

    inputs = _pairs("-i", args.inputs)
    outputs = _pairs("-o", args.outputs)
    spec = _spec(args)
    progress = NodeProgress(list(spec.nodes))
    try:
        run_pipeline(spec, inputs, outputs, workers=args.workers, spare=args.spare,
                     coordinator=args.coordinator, certs=args.certs, timeline=args.timeline,
                     stage_modules=tuple(args.stages), on_progress=progress,
                     frames_per_chunk=args.frames_per_chunk)
    except PipelineError as e:
        raise CliError(str(e)) from None
    finally:
        progress.close()
    return 0
