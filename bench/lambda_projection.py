"""Projected wall time and cost of an hour of 1080p encoded as ExCamera[6,16] by 1,000 Lambda
workers (issue 13's benchmark), from per-stage times measured here and published Lambda figures,
printed with every assumption.

Measured: a 720p ExCamera[6,16] job (the bundled bigbuckbunny clip) on the embedded runtime with
local workers; from its timeline, each chunk's seconds in first pass (+ state dump), encode-given-
state, and rebase (the serial step), scaled to 1080p by pixel count (2.25x). Projected:

    start    = the launch (a burst of 1,000 sandboxes at once, as AWS allows in most regions) and
               one cold start
    a wave   = as many batches of x chunks as have x workers each (a chunk's task holds its
               worker while it waits for its predecessor's state), taking
               first pass + state dump + encode-given-state + x * rebase + upload
    wall     = start + ceil(batches / floor(workers / x)) * wave
    cost     = workers * wall * memory GB * price per GB-s + invocations * price per request

A local core and a Lambda vCPU are taken to be equally fast (``--speed`` scales it; a 3,008 MB
sandbox has about two vCPUs, one used). Prices are ``coordinator/cost.py``'s defaults.

    python bench/lambda_projection.py [--workers 1000] [--memory 3008] [--speed 1.0] [--cold-start 2.0]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

CLIP = os.path.join(ROOT, "tests", "data", "clips", "compressed", "bigbuckbunny_1280x720_30f.mp4")


def stage_seconds(timeline: dict) -> dict[str, float]:
    """Median seconds per chunk in each working state of the winning attempts."""
    per: dict[str, list[float]] = {}
    for tid, attempts in timeline["tasks"].items():
        if not tid.startswith("chunk-"):
            continue
        for a in attempts:
            if a["status"] != "succeeded":
                continue
            hist = a["history"]
            for (t, state), (t2, _) in zip(hist, hist[1:]):
                per.setdefault(state, []).append(t2 - t)
    return {s: statistics.median(v) for s, v in per.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=1000)
    ap.add_argument("--memory", type=int, default=3008, help="MB per sandbox")
    ap.add_argument("--speed", type=float, default=1.0, help="a Lambda vCPU's speed against a core here")
    ap.add_argument("--cold-start", type=float, default=2.0, help="seconds to a sandbox's first command")
    ap.add_argument("--fps", type=float, default=24.0)
    args = ap.parse_args()

    from coordinator.api import RunConfig, run_job
    from coordinator.cost import prices
    from coordinator.excamera_job import SpooledInput, encode_job
    from media.excamera_encode import EncodeSettings
    from media.video import open_video

    settings = EncodeSettings(6, 16, 20)
    with tempfile.TemporaryDirectory(prefix="excamera-proj-") as work, open_video(CLIP) as video:
        spooled = SpooledInput(video, video.rate, settings, work)
        job = encode_job(spooled.n_frames, spooled.width, spooled.height, settings)
        r = run_job(job, RunConfig(workers=2, storage=os.path.join(work, "s"), timeout_s=900),
                    inputs=spooled.pairs(), ops_modules=("worker.codec_ops",))
    st = stage_seconds(r.timeline)
    scale = 1920 * 1080 / (1280 * 720) / args.speed
    fp = (st.get("first-pass", 0) + st.get("dump-state", 0)) * scale
    egs = st.get("encode-given-state", 0) * scale
    rebase = st.get("rebase", 0) * scale
    upload = st.get("upload", 0) * scale
    frames = 3600 * args.fps
    chunks = math.ceil(frames / settings.chunk_frames)
    batches = math.ceil(chunks / settings.batch_chunks)
    at_once = max(1, args.workers // settings.batch_chunks)
    waves = math.ceil(batches / at_once)
    launch = 1.0 + max(0, args.workers - 1000) / 100.0   # a burst of 1,000, then 100 more a second
    wave = fp + egs + settings.batch_chunks * rebase + upload
    wall = launch + args.cold_start + waves * wave
    p = prices()
    gb_s = args.workers * wall * args.memory / 1024
    usd = gb_s * p["lambda_gb_second"] + args.workers * p["lambda_request"]
    print(f"measured here (720p, ExCamera[6,16], median per 6-frame chunk): first pass + dump "
          f"{st.get('first-pass', 0) + st.get('dump-state', 0):.2f} s, encode-given-state "
          f"{st.get('encode-given-state', 0):.2f} s, rebase {st.get('rebase', 0):.2f} s")
    print(f"assumed: 1080p = 2.25x the pixels of 720p; a Lambda vCPU = {args.speed:g}x a core here; "
          f"{args.fps:g} fps; a burst of 1,000 sandboxes at once; cold start {args.cold_start:g} s; "
          f"{args.memory} MB per sandbox; ${p['lambda_gb_second']:.10f}/GB-s, ${p['lambda_request'] * 1e6:.2f}/M requests")
    print(f"an hour of 1080p: {frames:,.0f} frames, {chunks:,} chunks in {batches:,} batches of "
          f"{settings.batch_chunks}; {args.workers:,} workers run {at_once} batches at once, {waves} waves "
          f"of {wave:.1f} s ({fp + egs:.1f} s parallel, {settings.batch_chunks * rebase:.1f} s serial rebase)")
    print(f"projected wall time {wall:,.0f} s ({launch + args.cold_start:.0f} s start), "
          f"cost ${usd:,.2f} ({gb_s:,.0f} GB-s, {args.workers:,} invocations)")
    from bench.results import record
    record("lambda-projection", {
        "command": "python bench/lambda_projection.py",
        "tables": [
            {"title": "Measured here: 720p, ExCamera[6,16], median seconds per 6-frame chunk",
             "columns": ["first pass + dump (s)", "encode-given-state (s)", "rebase (s)"],
             "rows": [[round(st.get("first-pass", 0) + st.get("dump-state", 0), 2),
                       round(st.get("encode-given-state", 0), 2), round(st.get("rebase", 0), 2)]]},
            {"title": f"Projected: an hour of 1080p at {args.fps:g} fps on {args.workers:,} Lambda workers",
             "columns": ["chunks", "waves", "wall (s)", "GB-seconds", "cost (USD)"],
             "rows": [[chunks, waves, round(wall), round(gb_s), round(usd, 2)]],
             "note": f"Assumed: 1080p = 2.25x the pixels of 720p; a Lambda vCPU = {args.speed:g}x a core here; "
                     f"a burst of 1,000 sandboxes at once; cold start {args.cold_start:g} s; {args.memory} MB "
                     f"per sandbox; published prices (coordinator/cost.py). A projection, not a measurement."}]},
        title="Lambda projection: an hour of 1080p")


if __name__ == "__main__":
    main()
