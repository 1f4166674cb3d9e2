"""``excamera plan``: a job's wall time, cost and fleet predicted before it runs
(``pipeline.forecast``: the real engine and schedulers replayed on a simulated clock)."""

from __future__ import annotations

import argparse
import json
import re
import sys

from excamera.commands.base import CliError, UsageError, at_least, command, seconds

EPILOG = """\
How: the real job (the ExCamera encode's FSMs with its decode tasks, or the pipeline's planner and
scheduler) runs on the coordinator's real engine with simulated workers on a simulated clock; each
operation takes the seconds per frame measured by `make bench` (pipeline/costmodel.json: in one
process for Lambda, inside a real --workers 2 run for local), scaled by pixel count.
Lambda assumptions (pipeline/forecast.py): 1,000 new execution environments per 10 s per
function name (--functions multiplies it); cold start 1.21 s (1.0 s platform, assumed; 0.21 s
process, measured); 1,769 MB per vCPU, one-threaded operations at min(1, vCPU) of a core here;
$0.0000166667 per GB-s and $0.20 per million requests (EXCAMERA_PRICES overrides); S3 30 ms GET /
50 ms PUT, 3,500 PUT and 5,500 GET a second per key prefix; 75 MB/s per worker; 1% of workers 3x
slower (stragglers), the rest within 10%; the stitch joins chunks by multipart copy. Without an
INPUT, a key frame every 2 s is assumed.
"""


def _size(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)x(\d+)", text)
    if not m or int(m[1]) < 16 or int(m[2]) < 16:
        raise argparse.ArgumentTypeError(f"not a WxH size of 16x16 or more: {text!r}")
    return int(m[1]), int(m[2])


def _fps(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a frame rate: {text!r}") from None
    if not 0 < v <= 1000:
        raise argparse.ArgumentTypeError(f"must be in (0, 1000]: {text}")
    return v


def register(sub) -> None:
    p = command(sub, "plan", cmd_plan, help="predict a job's wall time, cost and fleet before running it",
                description="Predict `excamera encode` (default) or `excamera pipeline run --pipeline "
                            "SPEC.json` on INPUT (its container index read without decoding: frames, size, frame rate) or on "
                            "--duration S --size WxH [--fps F].",
                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", nargs="?", metavar="INPUT")
    p.add_argument("--duration", type=seconds, metavar="S", help="seconds of video (without INPUT)")
    p.add_argument("--size", type=_size, metavar="WxH", help="picture size (without INPUT)")
    p.add_argument("--fps", type=_fps, default=None, metavar="F", help="frame rate (without INPUT; default 30)")
    p.add_argument("--pipeline", metavar="SPEC.json", help="plan this pipeline instead of the ExCamera encode")
    p.add_argument("--workers", type=at_least(1), default=2, metavar="N")
    p.add_argument("--backend", choices=("local", "lambda"), default="local")
    p.add_argument("--memory", type=at_least(128), default=3008, metavar="MB", help="Lambda memory (default 3008)")
    p.add_argument("--functions", type=at_least(1), default=1, metavar="K",
                   help="Lambda function names launched from (each scales on its own)")
    p.add_argument("--scheduler", choices=("fifo", "priority", "streaming"), default=None)
    p.add_argument("--deadline", type=seconds, default=None, metavar="S",
                   help="the streaming scheduler's deadline; late pieces are counted against it")
    p.add_argument("--chunk-frames", type=at_least(1), default=6, metavar="N")
    p.add_argument("--batch-chunks", type=at_least(1), default=16, metavar="X")
    p.add_argument("--frames-per-chunk", type=at_least(1), default=None, metavar="N",
                   help="a pipeline source's pieces (default: one second)")
    p.add_argument("--costmodel", metavar="FILE", help="default: the one shipped, pipeline/costmodel.json (make bench measures it)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def cmd_plan(args: argparse.Namespace) -> int:
    if args.input and (args.duration is not None or args.size is not None or args.fps is not None):
        raise UsageError("give INPUT or --duration/--size/--fps, not both")
    if not args.input and (args.duration is None or args.size is None):
        raise UsageError("give INPUT, or --duration S and --size WxH")
    if args.scheduler and not args.pipeline:
        raise UsageError("--scheduler is for --pipeline")
    from pipeline.forecast import (CostModel, PlanError, Shape, assumptions, lambda_fleet, local_fleet,
                                   plan_encode, plan_pipeline, probe)

    try:
        model = CostModel.load(args.costmodel)
        index = None
        if args.input:
            shape, index = probe(args.input)
        else:
            shape = Shape.of(args.duration, args.size[0], args.size[1], args.fps or 30.0)
        if args.backend == "lambda":
            fleet = lambda_fleet(args.memory, args.functions)
        else:
            fleet = local_fleet(model, args.workers)
        if args.pipeline:
            # As ``excamera pipeline run`` reads an indexed input: by range, in the workers.
            r = plan_pipeline(model, shape, args.pipeline, workers=args.workers, fleet=fleet,
                              scheduler=args.scheduler, deadline=args.deadline,
                              frames_per_chunk=args.frames_per_chunk, index=index,
                              mode="ranged" if index is None or index.indexed else "client")
        else:
            from media.excamera_encode import EncodeSettings

            r = plan_encode(model, shape, EncodeSettings(args.chunk_frames, args.batch_chunks),
                            workers=args.workers, fleet=fleet, index=index)
            if args.deadline is not None:
                r["late_pieces"] = int(r["wall_s"] > args.deadline)
    except PlanError as e:
        raise CliError(str(e)) from None
    r.update(frames=shape.frames, size=f"{shape.width}x{shape.height}", fps=list(shape.fps),
             assumptions=assumptions(args.backend, args.memory, args.functions), costmodel=model.path)
    if args.json:
        print(json.dumps(r))
        return 0
    what = f"pipeline {args.pipeline} ({r.get('scheduler')})" if args.pipeline else \
        f"ExCamera[{args.chunk_frames},{args.batch_chunks}] encode"
    print(f"{what}: {shape.frames:,} frames of {shape.width}x{shape.height} on {args.workers:,} "
          f"{args.backend} workers")
    print(f"  wall {r['wall_s']:,.1f} s (job {r['job_s']:,.1f} s, client {r['client_s']:,.1f} s); "
          f"{r['worker_seconds']:,.0f} worker-s held, {r['busy_seconds']:,.0f} busy; "
          f"at most {r['peak_workers']:,} workers at once; {r['late_pieces']} late piece(s)")
    if args.backend == "lambda":
        print(f"  cost ${r['cost_usd']:,.2f} ({r['invocations']:,} invocations, {args.memory} MB); "
              f"S3 {r['s3_requests']['GET']:,} GET, {r['s3_requests']['PUT']:,} PUT, at most "
              f"{r['peak_requests_per_prefix_s']['PUT']:.0f} PUT/s on one prefix")
    held = list(r["held_by_state_s"].items())[:6]
    print("  worker-s held, by state: " + ", ".join(f"{k} {v:,.0f}" for k, v in held))
    print("assumed:", file=sys.stdout)
    for a in r["assumptions"]:
        print(f"  - {a}")
    return 0
