"""Run ``awslambda.handler.handler`` once, as a Lambda sandbox would, in this fresh process.

``python tests/lambda_runner.py --function NAME --timeout-s S --memory MB --request-id ID``
reads the event (JSON) on stdin, calls the real handler with a Lambda-like context (its
remaining time counts down from the function's timeout) and prints the handler's return value
as one JSON line on stdout. ``tests/lambda_endpoint.py`` starts one per invocation.
"""

import time

STARTED = time.monotonic()  # as early as this process can tell

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402


class Context:
    """The attributes and method of Lambda's context object that a handler may use."""

    def __init__(self, function: str, timeout_s: float, memory_mb: int, request_id: str):
        self.function_name = function
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{function}"
        self.memory_limit_in_mb = str(memory_mb)
        self.aws_request_id = request_id
        self.log_group_name = f"/aws/lambda/{function}"
        self.log_stream_name = request_id
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--function", required=True)
    ap.add_argument("--timeout-s", type=float, default=900.0)
    ap.add_argument("--memory", type=int, default=3008)
    ap.add_argument("--request-id", required=True)
    ap.add_argument("--shipped-cache", help="the image's compiled numba cache (default: the handler's)")
    ap.add_argument("--fresh-tmp", action="store_true",
                    help="a new empty directory stands for this sandbox's /tmp numba cache")
    args = ap.parse_args()
    event = json.loads(sys.stdin.buffer.read() or b"null")
    import awslambda.handler as lh

    if args.shipped_cache:
        lh.SHIPPED_CACHE = args.shipped_cache
    if args.fresh_tmp:
        import tempfile

        lh.TMP_CACHE = tempfile.mkdtemp(prefix="excamera-sandbox-tmp-")
    handler = lh.handler

    entered = time.monotonic()
    out = handler(event, Context(args.function, args.timeout_s, args.memory, args.request_id))
    out["process_to_handler_s"] = round(entered - STARTED, 3)
    if args.fresh_tmp:
        import os
        import shutil

        def files(d):
            return {os.path.relpath(os.path.join(r, n), d) for r, _, f in os.walk(d) for n in f} \
                if os.path.isdir(d) else set()

        # Files numba wrote beyond what the image shipped: kernels it had to compile here.
        added = sorted(files(lh.TMP_CACHE) - files(lh.SHIPPED_CACHE))
        out["cache_files_added"] = len(added)
        if added:
            out["cache_added"] = added[:10]
        shutil.rmtree(lh.TMP_CACHE, ignore_errors=True)
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
