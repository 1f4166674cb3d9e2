"""A pipeline on the cloud backend, both halves at once and reached only as AWS is: workers are
Lambda invocations (the local Invoke endpoint runs the real handler in fresh processes) and the
job's objects live in S3 (moto's server on loopback). Same bytes as in this process; the bucket
is left empty."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from common import CLIPS_DIR
from lambda_endpoint import Endpoint

ROOT = Path(__file__).resolve().parent.parent
FOREMAN = CLIPS_DIR / "foreman_qcif_176x144_10f.y4m"


def excamera(*args, env):
    return subprocess.run([sys.executable, "-m", "excamera", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=600)


def test_pipeline_on_lambda_and_s3_same_bytes_and_nothing_left(tmp_path, s3_server):
    bucket = s3_server.bucket("cloud-pipeline")
    here, there = tmp_path / "here.ivf", tmp_path / "there.ivf"
    common = ["pipeline", "run", "pipelines/grayscale.json", "-i", f"input_0={FOREMAN}", "--frames-per-chunk", 3]
    env = dict(os.environ, **s3_server.env)
    p = excamera(*common, "-o", f"output_0={here}", "--workers", 0, env=env)
    assert p.returncode == 0, p.stderr
    with Endpoint({"excamera-worker": {"timeout_s": 300, "memory_mb": 2048}}, env=s3_server.env) as ep:
        env["AWS_ENDPOINT_URL_LAMBDA"] = ep.url
        p = excamera(*common, "-o", f"output_0={there}", "--workers", 2, "--backend", "lambda",
                     "--function", "excamera-worker", "--region", "us-east-1", "--public-address", "127.0.0.1:0",
                     "--listen", "127.0.0.1:0", "--storage", f"s3://{bucket}/jobs-here", env=env)
        for run in list(ep.runs):
            run.done.wait(30)
        served = [r.summary for r in ep.runs if r.summary and r.summary.get("commands")]
    assert p.returncode == 0, p.stderr[-3000:]
    assert there.read_bytes() == here.read_bytes()
    assert served, "no Lambda worker ran a task"
    assert s3_server.keys(bucket, "jobs-here/") == []
