"""Launch rate of ``LambdaLauncher``: asynchronous invocations accepted per second by a local
Invoke endpoint (``tests/lambda_endpoint.py``, accepting events without running handlers), reached
through boto3 as AWS is; and how long ``launch()`` holds the coordinator's loop.

    python bench/lambda_launch_bench.py [--workers 1000] [--concurrency 64]
"""

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=64)
    args = ap.parse_args()
    from awslambda.launcher import LambdaLauncher
    from security import tls
    from lambda_endpoint import Endpoint

    for k, v in {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                 "AWS_EC2_METADATA_DISABLED": "true"}.items():
        os.environ[k] = v
    with Endpoint({"excamera-worker": {}}, run=False) as ep:
        os.environ["AWS_ENDPOINT_URL_LAMBDA"] = ep.url
        launcher = LambdaLauncher(tls.generate(), "excamera-worker", ["us-east-1", "us-west-2"],
                                  concurrency=args.concurrency)
        launcher.coordinator = "203.0.113.10:7000"
        launcher.launch("warm", [("w0", "t" * 43)])  # clients and the job certificate: not timed
        while launcher.accepted["warm"] < 1:
            time.sleep(0.01)
        pairs = [(f"w{i}", "t" * 43) for i in range(1, args.workers + 1)]
        t0 = time.monotonic()
        launcher.launch("job", pairs)
        held = time.monotonic() - t0
        while launcher.accepted["job"] + sum(n for _, n in launcher.reap()) < args.workers:
            time.sleep(0.005)
        wall = time.monotonic() - t0
        assert len(ep.events) == args.workers + 1
    print(f"lambda launch: {args.workers} invocations accepted in {wall:.2f} s, {args.workers / wall:.0f}/s "
          f"({args.concurrency} threads, local endpoint); launch() held the loop {held * 1000:.0f} ms")
    from bench.results import record
    record("lambda-launch", {
        "command": f"python bench/lambda_launch_bench.py --workers {args.workers} --concurrency {args.concurrency}",
        "tables": [{"title": f"Asynchronous invocations against a local Invoke endpoint, {args.concurrency} "
                             f"threads over two regions",
                    "columns": ["invocations", "accepted in (s)", "per second", "launch() holds the loop (ms)"],
                    "rows": [[args.workers, round(wall, 2), round(args.workers / wall), round(held * 1000)]]}]},
        title="Lambda launch rate")
    return 0


if __name__ == "__main__":
    sys.exit(main())
