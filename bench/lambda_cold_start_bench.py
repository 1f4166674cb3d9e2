"""Cold start of a Lambda worker, as close as this machine gets to a fresh sandbox: each run is a
new process (``tests/lambda_runner.py`` via the local Invoke endpoint) with an empty stand-in for
``/tmp``, the image's shipped numba cache (made here by the image's warm-up step,
``awslambda.warmup``, if absent), read-only code, no NUMBA_* variables. It times, for the first
worker of a small ExCamera encode (native first pass, so the first command runs numba kernels),
process start to its first command, and to the end of that command's first task state; and
checks no kernel was compiled in the sandbox. Median of 5, with the compiled kernels
(``codec.aot``: the image builds them for Lambda's CPU; here this machine's module stands in) and
without (``EXCAMERA_AOT=0``: numba and its shipped cache).

    python bench/lambda_cold_start_bench.py [--runs 5]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
CLIP = ROOT / "tests" / "data" / "clips" / "foreman_qcif_176x144_10f.y4m"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_")}
    # A fresh shipped cache, as an image build makes it (a reused one grows with every source
    # change, and copying it into each sandbox's /tmp slows the start).
    with tempfile.TemporaryDirectory(prefix="excamera-shipped-cache-") as shipped:
        return measure(args, env, shipped)


def measure(args, env: dict, shipped: str) -> int:
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "awslambda.warmup"], cwd=ROOT, check=True,
                   env=dict(env, NUMBA_CACHE_DIR=shipped), capture_output=True)
    print(f"image warm-up step (cache {shipped}): {time.monotonic() - t0:.1f} s", file=sys.stderr)

    for k, v in {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                 "AWS_EC2_METADATA_DISABLED": "true"}.items():
        os.environ[k] = v
    from coordinator.api import LaunchedBackend, RunConfig, run_job
    from coordinator.excamera_job import SpooledInput, encode_job
    from awslambda.launcher import LambdaLauncher
    from media.excamera_encode import EncodeSettings
    from media.video import open_video
    from lambda_endpoint import Endpoint

    settings = EncodeSettings(chunk_frames=5, batch_chunks=2, first_pass="native")
    from codec import aot
    if not aot.load():
        print("note: no current compiled kernels here (python -m excamera.aot_build): the first line "
              "measures numba's cache as well", file=sys.stderr)
    results = {}
    for mode, extra in (("compiled kernels (codec.aot, as the image's)", {}),
                        ("numba's shipped cache (EXCAMERA_AOT=0)", {"EXCAMERA_AOT": "0"})):
        to_command, to_state, added, used = [], [], [], set()
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory() as d, Endpoint(
                    {"excamera-worker": {"timeout_s": 300, "memory_mb": 3008}},
                    env={"NUMBA_CACHE_DIR": None, "NUMBA_CPU_NAME": None, "NUMBA_CPU_FEATURES": None,
                         "EXCAMERA_AOT": None, **extra},
                    runner_args=("--shipped-cache", shipped, "--fresh-tmp")) as ep:
                os.environ["AWS_ENDPOINT_URL_LAMBDA"] = ep.url
                with open_video(str(CLIP)) as video:
                    spooled = SpooledInput(video, video.rate, settings, d)
                job = encode_job(spooled.n_frames, spooled.width, spooled.height, settings)
                backend = LaunchedBackend(lambda b: LambdaLauncher(b, "excamera-worker", ["us-east-1"]), "127.0.0.1:0")
                r = run_job(job, RunConfig(backend, workers=1, storage=os.path.join(d, "s"), timeout_s=600),
                            inputs=spooled.pairs())
                ep.runs[0].done.wait(30)
                s = ep.runs[0].summary
                # The worker's first state change after its first command (from the job's timeline).
                first = min(a["history"][1][0] for attempts in r.timeline["tasks"].values() for a in attempts
                            if len(a["history"]) > 1)
                connect = min(w["history"][0][0] for w in r.timeline["workers"])
                to_command.append(s["process_to_handler_s"] + s["first_command_s"])
                to_state.append(s["process_to_handler_s"] + s["first_command_s"] + (first - connect))
                added.append(s["cache_files_added"])
                used.add(s.get("compiled_kernels"))
        print(f"lambda cold start, {mode} (median of {args.runs}): process start to first command "
              f"{statistics.median(to_command):.2f} s, to the end of its first state "
              f"{statistics.median(to_state):.2f} s; kernels compiled in the sandbox: {max(added)}; "
              f"compiled module loaded: {', '.join(map(str, sorted(used, key=str)))} "
              f"(runs: {', '.join(f'{x:.2f}' for x in to_state)})")
        results[mode] = {"to_first_command_s": to_command, "to_first_state_s": to_state}
    print(json.dumps(results), file=sys.stderr)
    record_figures(args, results)
    return 0


def record_figures(args, results: dict) -> None:
    """What was printed, as data (bench/results.json; bench/render.py makes the tables)."""
    from bench.results import record

    rows = [[mode, round(statistics.median(r["to_first_command_s"]), 2),
             round(statistics.median(r["to_first_state_s"]), 2)] for mode, r in results.items()]
    record("lambda-cold-start", {
        "command": "python bench/lambda_cold_start_bench.py",
        "headline": [{"figure": "Lambda worker cold start, to its first state done", "value": f"{rows[0][2]:.2f} s",
                      "against": f"{rows[1][2]:.2f} s on numba's shipped cache", "target": ""}],
        "tables": [{"title": f"A fresh process with an empty /tmp (median of {args.runs}), to the end of its "
                             f"first task state",
                    "columns": ["kernels", "to the first command (s)", "to the end of the first state (s)"],
                    "rows": rows,
                    "note": "Lambda's own start of a container image comes on top and is not measured here."}]},
        title="Lambda cold start")


if __name__ == "__main__":
    sys.exit(main())
