"""``excamera timeline T.json -o T.svg|T.png``: a job's timeline as a per-worker Gantt chart."""

from __future__ import annotations

import argparse

from excamera.commands.base import CliError, command


def register(sub) -> None:
    tl = command(sub, "timeline", cmd_timeline, help="draw a job's timeline as a per-worker Gantt chart",
                 description="Read a timeline JSON (--timeline) and write the chart as SVG or PNG.")
    tl.add_argument("input", metavar="T.json")
    tl.add_argument("-o", "--output", required=True, metavar="T.svg|T.png")


def cmd_timeline(args: argparse.Namespace) -> int:
    from coordinator.timeline import FORMATS, TimelineError, render_file

    if not args.output.lower().endswith(FORMATS):
        raise CliError(f"-o {args.output}: the chart must end in .svg or .png")
    try:
        render_file(args.input, args.output)
    except (TimelineError, OSError) as e:
        raise CliError(f"{args.input}: {getattr(e, 'strerror', None) or e}") from None
    return 0
