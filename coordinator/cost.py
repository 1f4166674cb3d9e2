"""What a job cost: Lambda invocations and billed GB-seconds at published prices, or local
CPU-seconds. The prices live here, in one place; ``EXCAMERA_PRICES`` (JSON, e.g.
``{"lambda_gb_second": 0.0000133334}``) overrides any of them.

Lambda bills each invocation's duration (rounded up to 1 ms) times its configured memory. The
coordinator sees each worker's connection, not the sandbox, so the billed duration is estimated
as the time each worker was connected (from its timeline) plus ``INIT_ALLOWANCE_S`` per
invocation for starting and dialling; the figure is an estimate and says so.
"""

from __future__ import annotations

import json
import math
import os

#: Published on-demand prices, US East (N. Virginia), x86, first tier (USD).
PRICES = {
    "lambda_gb_second": 0.0000166667,
    "lambda_request": 0.20 / 1_000_000,
}
#: Seconds billed per invocation beyond its connection (start, imports, TLS handshake).
INIT_ALLOWANCE_S = 0.5


def prices() -> dict:
    """``PRICES`` with any override from ``$EXCAMERA_PRICES`` (a JSON object)."""
    out = dict(PRICES)
    text = os.environ.get("EXCAMERA_PRICES", "").strip()
    if text:
        try:
            extra = json.loads(text)
        except ValueError:
            extra = None
        if not isinstance(extra, dict):
            raise ValueError("EXCAMERA_PRICES: not a JSON object of prices")
        out.update({k: float(v) for k, v in extra.items() if k in PRICES})
    return out


def connected_seconds(timeline: dict) -> list[float]:
    """Each worker's connected time (first to last history entry) from a job's timeline."""
    out = []
    for w in timeline.get("workers", []):
        times = [t for t, _ in w.get("history", [])]
        if times:
            out.append(max(times) - min(times))
    return out


def lambda_cost(invocations: int, durations_s: list[float], memory_mb: int) -> dict:
    """Invocations, billed GB-seconds (estimated) and the estimate in USD."""
    p = prices()
    billed = sum(math.ceil((d + INIT_ALLOWANCE_S) * 1000) / 1000 for d in durations_s)
    # Invocations that never connected (refused duplicates, lost ones) bill at least the allowance.
    billed += max(0, invocations - len(durations_s)) * INIT_ALLOWANCE_S
    gb_s = billed * memory_mb / 1024
    usd = invocations * p["lambda_request"] + gb_s * p["lambda_gb_second"]
    return {"backend": "lambda", "invocations": invocations, "memory_mb": memory_mb,
            "billed_seconds": round(billed, 3), "gb_seconds": round(gb_s, 3),
            "usd_estimate": round(usd, 6), "prices": p}


def local_cost(cpu_seconds: float, processes: int) -> dict:
    return {"backend": "local", "processes": processes, "cpu_seconds": round(cpu_seconds, 3)}


def describe(cost: dict) -> str:
    """One line for stderr."""
    if cost.get("backend") == "lambda":
        return (f"cost: {cost['invocations']} Lambda invocation(s), {cost['gb_seconds']:.1f} GB-s billed "
                f"(estimated, {cost['memory_mb']} MB), about ${cost['usd_estimate']:.4f} at published prices")
    return f"cost: {cost.get('cpu_seconds', 0):.1f} CPU-seconds in {cost.get('processes', 0)} local worker process(es)"
