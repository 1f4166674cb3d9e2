#!/usr/bin/env python3
"""``excamera plan``'s cost model, measured; its prediction against a real run; and the fleet
projections of issue 21, each printed with its assumptions.

    python bench/plan_bench.py --measure [--clip C]   # time the real operations, write bench/costmodel.json
    python bench/plan_bench.py --validate [--clip C]  # predicted against measured wall time, --workers 2
    python bench/plan_bench.py --project              # an hour of 1080p30 on 1,000 Lambda workers

``--measure`` runs each ExCamera operation (``worker.codec_ops``) and each stage of the grayscale
pipeline in this process, on real chunks of the clip, through the same functions a worker calls,
and times them; the runtime's own overheads (a local worker's start, a command's round trip, the
client's fixed start) come from one real ``excamera encode --workers 2`` run and its timeline.
With no argument: all three.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

CLIP = os.path.join(ROOT, "tests", "data", "clips", "compressed", "bigbuckbunny_1280x720_30f.mp4")
COSTMODEL = os.path.join(HERE, "costmodel.json")


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# -- the operations, in this process ------------------------------------------------------------

def measure_excamera_ops(clip: str, frames: int | None = None) -> dict:
    """Seconds per frame of each ExCamera operation (medians over the clip's chunks), and the
    sizes of what they store and hand on."""
    from coordinator.excamera_job import RAW_KEY, chunk_id, encode_inputs
    from media.excamera_encode import EncodeSettings
    from media.video import open_video
    from storage import LocalStorage
    from worker import codec_ops  # noqa: F401 - registers the operations
    from worker.ops import DEFAULT, OpContext

    settings = EncodeSettings()
    t0 = time.perf_counter()   # the client's share: decode and cut into raw chunk objects
    with open_video(clip) as video:
        pictures = list(video)[:frames]
        rate = video.rate
    inputs = encode_inputs(pictures, rate, settings)
    spool_s = time.perf_counter() - t0
    h, w = pictures[0].y.shape
    per: dict[str, list[float]] = {}
    sizes: dict[str, list[int]] = {}
    with tempfile.TemporaryDirectory(prefix="excamera-plan-") as d:
        st = LocalStorage(d).scoped("jobs/m")
        for k, v in inputs.items():
            st.put(k, v)
        n = len(inputs)
        ctxs = []

        def run(op: str, ctx, **kw):
            t = time.perf_counter()
            out = DEFAULT.get(op).fn(ctx, **kw)
            per.setdefault(op, []).append(time.perf_counter() - t)
            return out

        for i in range(n):
            cid = chunk_id(i)
            ctx = OpContext("m", cid, 1, st)
            ctxs.append(ctx)
            run("vp8-first-pass", ctx, raw=RAW_KEY.format(cid), output=f"pass/{cid}.ivf",
                first_pass=settings.first_pass, cq_level=settings.cq_level, speed=settings.speed)
            run("vp8-dump-state", ctx, output=f"pass/{cid}.state")
            sizes.setdefault("state", []).append(len(ctx.scratch["fp_state"]))
            sizes.setdefault("pass", []).append(len(ctx.scratch["pass"]))
        for i, ctx in enumerate(ctxs):
            first = i % settings.batch_chunks == 0
            ctx.scratch["given_state"] = b"" if first else ctxs[i - 1].scratch["fp_state"]
            run("vp8-encode-given-state", ctx, raw=RAW_KEY.format(chunk_id(i)), speed=settings.speed,
                kf_q_weight=float(settings.kf_q_weight))
        for i, ctx in enumerate(ctxs):   # the serial walk, in chain order
            first = i % settings.batch_chunks == 0
            ctx.scratch["state_in"] = b"" if first else ctxs[i - 1].scratch["final"]
            run("vp8-rebase", ctx, raw=RAW_KEY.format(chunk_id(i)))
            run("vp8-upload-chunk", ctx, key=f"out/{chunk_id(i)}.ivf", link=f"out/{chunk_id(i)}.link")
            sizes.setdefault("chunk", []).append(len(ctx.scratch["output"]))
        sctx = OpContext("m", "stitch", 1, st)
        t = time.perf_counter()
        DEFAULT.get("vp8-stitch").fn(sctx, chunks=[f"out/{chunk_id(i)}.ivf" for i in range(n)],
                                     links=[f"out/{chunk_id(i)}.link" for i in range(n)], output="output.ivf",
                                     frames=len(pictures))
        stitch_s = time.perf_counter() - t
    nf = settings.chunk_frames
    # Rebase of a batch's first chunk keeps its first pass (no work): the median is over the others.
    ops = {op: {"s_per_frame": statistics.median(v[1:] if op == "vp8-rebase" else v) / nf}
           for op, v in per.items()}
    ops["vp8-stitch"] = {"s_per_frame": stitch_s / len(pictures)}
    raw_frame = w * h * 3 // 2
    return {"width": w, "height": h, "frames": len(pictures), "ops": ops,
            "client_spool_s_per_frame": spool_s / len(pictures),
            "state_bytes": int(statistics.median(sizes["state"])),
            "pass_bytes_per_frame": statistics.median(sizes["pass"]) / nf,
            "chunk_bytes_per_frame": statistics.median(sizes["chunk"]) / nf,
            "raw_bytes_per_frame": raw_frame}


def measure_pipeline_stages(clip: str) -> dict:
    """Seconds per frame of the grayscale pipeline's stages (decode, grayscale, encode), each task
    a one-second piece of the clip as ``excamera pipeline run`` cuts it; and the bytes per frame
    of what each stores."""
    from pipeline import media_io
    from pipeline.stage import get_stage, load_modules
    from pipeline.stages import video  # noqa: F401 - registers the stages
    from pipeline.values import decode as decode_value

    load_modules(())
    t0 = time.perf_counter()
    chunks = list(media_io.cut_input(clip, None))
    cut_s = time.perf_counter() - t0
    frames = sum(c.count for c in chunks)
    from pipeline.stage import StageContext
    times: dict[str, float] = {"decode": 0.0, "grayscale": 0.0, "encode": 0.0}
    size: dict[str, int] = {"chunks": 0, "frames": 0, "out": 0}
    for i, c in enumerate(chunks):
        size["chunks"] += len(c.to_bytes())
        ctx = StageContext("decode", f"t{i}", i, 1)
        t = time.perf_counter()
        fb = get_stage("decode").fn(ctx, {"chunks": [decode_value("chunks", c.to_bytes())]}, {})["frames"]
        blob = [b.to_bytes() for b in fb]
        times["decode"] += time.perf_counter() - t
        size["frames"] += sum(map(len, blob))
        t = time.perf_counter()
        g = get_stage("grayscale").fn(ctx, {"frames": [decode_value("frames", x) for x in blob]}, {})["frames"]
        gblob = [b.to_bytes() for b in g]
        times["grayscale"] += time.perf_counter() - t
        t = time.perf_counter()
        out = get_stage("encode").fn(ctx, {"frames": [decode_value("frames", x) for x in gblob]},
                                     {"cq_level": 20, "encoder": "libvpx", "speed": _default_speed()})["chunks"]
        times["encode"] += time.perf_counter() - t
        size["out"] += sum(len(o.to_bytes()) for o in out)
        ctx.cleanup()
    return {"frames": frames, "client_cut_s_per_frame": cut_s / frames,
            "stages": {k: {"s_per_frame": v / frames} for k, v in times.items()},
            "chunks_bytes_per_frame": size["chunks"] / frames, "frames_bytes_per_frame": size["frames"] / frames,
            "encoded_bytes_per_frame": size["out"] / frames}


def _default_speed() -> int:
    from pipeline.stages.video import DEFAULT_SPEED
    return DEFAULT_SPEED


# -- a real run ----------------------------------------------------------------------------------

def run_cli(args: list[str], timeout: float = 600) -> tuple[float, subprocess.CompletedProcess]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    t = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "excamera", *args], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=timeout)
    return time.monotonic() - t, p


STATE_OPS = {"first-pass": "vp8-first-pass", "dump-state": "vp8-dump-state",
             "encode-given-state": "vp8-encode-given-state", "rebase": "vp8-rebase",
             "upload": "vp8-upload-chunk", "stitch": "vp8-stitch", "decode": "decode-range"}


def _state_times(timeline: dict) -> dict[str, list[float]]:
    """State -> seconds of each winning attempt's stay in it."""
    per: dict[str, list[float]] = {}
    for tid, attempts in timeline["tasks"].items():
        for a in attempts:
            if a["status"] != "succeeded":
                continue
            for (t, state), (t2, _) in zip(a["history"], a["history"][1:]):
                per.setdefault(state, []).append((tid, t2 - t))
    return per


def encode_run_ops(timeline: dict, frames: int, chunk_frames: int = 6, batch_chunks: int = 16) -> dict:
    """Seconds per frame of each ExCamera operation inside a real run's workers (its timeline)."""
    ops = {}
    for state, rows in _state_times(timeline).items():
        op = STATE_OPS.get(state)
        if op is None:
            continue
        if op == "vp8-rebase":   # a batch's first chunk keeps its first pass: no work to time
            rows = [r for r in rows if int(r[0].rsplit("-", 1)[1]) % batch_chunks]
        if not rows:
            continue
        if op in ("vp8-stitch", "decode-range"):
            ops[op] = {"s_per_frame": sum(t for _, t in rows) / frames}
        else:
            ops[op] = {"s_per_frame": statistics.median(t for _, t in rows) / chunk_frames}
    return ops


def pipeline_run_ops(timeline: dict, frames: int) -> dict:
    """Seconds per frame of each stage inside a real pipeline run's workers (a chain pipeline:
    every node sees every frame)."""
    total: dict[str, float] = {}
    stage_of = {"decode": "decode", "grayscale": "grayscale", "encode": "encode"}
    for state, rows in _state_times(timeline).items():
        for tid, t in rows:
            node = tid.split(".", 1)[0]
            if node in stage_of:
                total[stage_of[node]] = total.get(stage_of[node], 0.0) + t
    return {f"stage:{k}": {"s_per_frame": v / frames} for k, v in total.items()}


def run_encode(clip: str, workers: int = 2) -> dict:
    """One real ``excamera encode --workers N``: its wall time and timeline."""
    with tempfile.TemporaryDirectory(prefix="excamera-plan-run-") as d:
        wall, p = run_cli(["encode", clip, "-o", os.path.join(d, "o.ivf"), "--workers", str(workers),
                           "--timeline", os.path.join(d, "t.json")])
        if p.returncode != 0:
            raise SystemExit(f"plan_bench: excamera encode failed: {p.stderr.strip()[-300:]}")
        with open(os.path.join(d, "t.json")) as f:
            return {"wall_s": wall, "timeline": json.load(f)}


def run_grayscale(clip: str, workers: int = 2) -> dict:
    """One real ``excamera pipeline run pipelines/grayscale.json --workers N``."""
    with tempfile.TemporaryDirectory(prefix="excamera-plan-run-") as d:
        wall, p = run_cli(["pipeline", "run", os.path.join(ROOT, "pipelines", "grayscale.json"),
                           "-i", f"input_0={clip}", "-o", f"output_0={os.path.join(d, 'o.mpd')}",
                           "--workers", str(workers), "--timeline", os.path.join(d, "t.json")])
        if p.returncode != 0:
            raise SystemExit(f"plan_bench: excamera pipeline run failed: {p.stderr.strip()[-300:]}")
        with open(os.path.join(d, "t.json")) as f:
            return {"wall_s": wall, "timeline": json.load(f)}


def measure_runtime(clip: str, frames: int, cut_s_per_frame: float) -> dict:
    """The runtime as it runs here, from one real encode and one real grayscale pipeline with
    --workers 2: each operation's time inside the workers (two workers and the client sharing this
    machine's cores), a worker's start (the job's start to its first join), and the client's
    fixed time around the job (wall time less the job's, less its share of the input)."""
    enc = run_encode(clip)
    gray = run_grayscale(clip)
    joins = [w["history"][0][0] for w in enc["timeline"]["workers"] if w["history"]]
    return {"ops": {**encode_run_ops(enc["timeline"], frames), **pipeline_run_ops(gray["timeline"], frames)},
            "worker_start_s": min(joins), "dispatch_s": 0.003,
            "client_fixed_s": enc["wall_s"] - enc["timeline"]["duration"],
            "pipeline_client_fixed_s": gray["wall_s"] - gray["timeline"]["duration"] - cut_s_per_frame * frames,
            "workers": 2, "runs": {"encode_wall_s": round(enc["wall_s"], 3),
                                   "grayscale_wall_s": round(gray["wall_s"], 3)}}


# -- the model -----------------------------------------------------------------------------------

def measure(clip: str) -> dict:
    ex = measure_excamera_ops(clip)
    pl = measure_pipeline_stages(clip)
    model = {
        "about": "excamera plan's cost model: seconds per frame of each operation at the measured "
                 "size (scaled by pixel count for others), measured in one process by "
                 "bench/plan_bench.py --measure; make bench rewrites it",
        "measured": {"date": time.strftime("%Y-%m-%d"), "machine": f"{_cpu()}, {os.cpu_count()} cores "
                     f"(shared), {platform.system()} {platform.release()}", "python": platform.python_version(),
                     "load_average": round(os.getloadavg()[0], 2),
                     "clip": os.path.relpath(clip, ROOT), "frames": ex["frames"]},
        "width": ex["width"], "height": ex["height"],
        # decode-range (the encode's decode tasks) in one process: the decode stage stands in for it
        "ops": {**ex["ops"], **{f"stage:{k}": v for k, v in pl["stages"].items()},
                "decode-range": pl["stages"]["decode"]},
        "bytes_per_frame": {"raw": ex["raw_bytes_per_frame"], "pass": ex["pass_bytes_per_frame"],
                            "chunk": ex["chunk_bytes_per_frame"], "compressed_input": pl["chunks_bytes_per_frame"],
                            "frames": pl["frames_bytes_per_frame"], "encoded": pl["encoded_bytes_per_frame"]},
        "state_bytes": ex["state_bytes"],
        "client": {"spool_s_per_frame": ex["client_spool_s_per_frame"],
                   "cut_s_per_frame": pl["client_cut_s_per_frame"]},
    }
    try:
        model["local"] = measure_runtime(clip, ex["frames"], pl["client_cut_s_per_frame"])
    except SystemExit as e:   # the runtime's figures stay as they were
        print(f"{e}; keeping the runtime overheads of the previous model", file=sys.stderr)
        try:
            with open(COSTMODEL) as f:
                model["local"] = json.load(f).get("local", {})
        except (OSError, ValueError):
            model["local"] = {}
    return model


def validate(clip: str) -> None:
    """``excamera plan``'s prediction beside the measured wall time of the real command, --workers 2."""
    gray = os.path.join(ROOT, "pipelines", "grayscale.json")
    with tempfile.TemporaryDirectory(prefix="excamera-plan-val-") as d:
        for what, extra, real in (
                ("excamera encode", [], ["encode", clip, "-o", os.path.join(d, "o.ivf"), "--workers", "2"]),
                ("grayscale pipeline", ["--pipeline", gray],
                 ["pipeline", "run", gray, "-i", f"input_0={clip}", "-o", f"output_0={os.path.join(d, 'o.mpd')}",
                  "--workers", "2"])):
            _, p = run_cli(["plan", clip, "--workers", "2", "--json", *extra])
            predicted = json.loads(p.stdout)["wall_s"]
            wall, p = run_cli(real)
            print(f"{what}, --workers 2, {os.path.basename(clip)}: predicted {predicted:.1f} s, measured "
                  f"{wall:.1f} s ({predicted / wall:.2f}x; target within 25%; load average "
                  f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")


def project() -> None:
    """An hour of 1080p at 30 fps on 1,000 Lambda workers: the encode, the grayscale pipeline and
    the streaming scheduler at a 60 s deadline against priority, each with its assumptions."""
    from media.excamera_encode import EncodeSettings
    from pipeline.forecast import CostModel, Shape, assumptions, lambda_fleet, plan_encode, plan_pipeline

    model = CostModel.load()
    shape = Shape.of(3600, 1920, 1080, 30)
    gray = os.path.join(ROOT, "pipelines", "grayscale.json")

    def line(what, r, target):
        print(f"  {what}: wall {r['wall_s']:.0f} s, ${r['cost_usd']:.2f}, {r['worker_seconds']:,.0f} worker-s held "
              f"({r['busy_seconds']:,.0f} busy), at most {r['peak_workers']} at once, {r['late_pieces']} late; "
              f"target {target}")

    print("projected: an hour of 1080p30 (108,000 frames) on 1,000 Lambda workers")
    for mem in (1769, 3008):
        for n, x in ((6, 16), (6, 4)):
            r = plan_encode(model, shape, EncodeSettings(n, x), workers=1000, fleet=lambda_fleet(mem))
            line(f"ExCamera[{n},{x}] encode, {mem} MB", r, "<= 120 s, <= $3")
    r = plan_pipeline(model, shape, gray, workers=1000, fleet=lambda_fleet(1769), mode="ranged")
    line("grayscale pipeline, 1769 MB", r, "<= 40 s, <= $1.50")
    pr = plan_pipeline(model, shape, gray, workers=1000, fleet=lambda_fleet(1769), mode="ranged",
                       scheduler="priority", deadline=60)
    st = plan_pipeline(model, shape, gray, workers=1000, fleet=lambda_fleet(1769), mode="ranged",
                       scheduler="streaming", deadline=60)
    line("grayscale, priority (60 s deadline)", pr, "")
    line("grayscale, streaming (60 s deadline)", st, f"no late piece, peak <= {pr['peak_workers'] / 10:.0f}")
    print("assumed:")
    for a in assumptions("lambda", 1769):
        print(f"  - {a}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--measure", action="store_true")
    ap.add_argument("--validate", action="store_true")
    ap.add_argument("--project", action="store_true")
    ap.add_argument("--clip", default=CLIP)
    ap.add_argument("-o", "--output", default=COSTMODEL)
    args = ap.parse_args()
    every = not (args.measure or args.validate or args.project)
    if args.measure or every:
        model = measure(args.clip)
        with open(args.output, "w") as f:
            json.dump(model, f, indent=1)
            f.write("\n")
        print(f"{args.output}: " + ", ".join(f"{k} {v['s_per_frame'] * 1000:.1f} ms/frame"
                                             for k, v in model["ops"].items()))
    if args.validate or every:
        validate(args.clip)
    if args.project or every:
        project()
    return 0


if __name__ == "__main__":
    sys.exit(main())
