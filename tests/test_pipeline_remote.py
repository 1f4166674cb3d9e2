"""`excamera pipeline run --coordinator HOST:PORT --certs DIR`: the pipeline goes to a running
`excamera coordinator serve` daemon, which rebuilds its planner (pipeline.remote) and plans the
tasks as results come in; the sink objects stream back. Same bytes as `--workers 0`."""

from __future__ import annotations

import json

import pytest

from common import CLIPS_DIR
from test_encode_remote import daemon, excamera, one_line_error  # noqa: F401 - the daemon fixture

FOREMAN = CLIPS_DIR / "foreman_qcif_176x144_10f.y4m"


@pytest.mark.slow
def test_remote_pipeline_same_bytes_as_workers_0(daemon, tmp_path):  # noqa: F811
    address, client, _ = daemon
    here, there = tmp_path / "here.ivf", tmp_path / "there.ivf"
    common = ["pipeline", "run", "pipelines/grayscale.json", "-i", f"input_0={FOREMAN}", "--frames-per-chunk", 3]
    res = excamera(*common, "-o", f"output_0={here}", "--workers", 0)
    assert res.returncode == 0, res.stderr
    res = excamera(*common, "-o", f"output_0={there}", "--workers", 2, "--coordinator", address, "--certs", client)
    assert res.returncode == 0, res.stderr
    assert there.read_bytes() == here.read_bytes()
    assert "wrote" in res.stderr and "(10 frames)" in res.stderr


def test_remote_pipeline_errors(daemon, tmp_path):  # noqa: F811
    address, client, _ = daemon
    out = tmp_path / "o.ivf"
    common = ["pipeline", "run", "pipelines/grayscale.json", "-i", f"input_0={FOREMAN}", "-o", f"output_0={out}"]
    one_line_error(excamera(*common, "--coordinator", address), "--certs")
    one_line_error(excamera(*common, "--coordinator", address, "--certs", client, "--timeline", tmp_path / "t.json"),
                   "--timeline")
    # A stage that fails on the coordinator's workers: one line naming the node, nothing written.
    spec = json.loads(open("pipelines/grayscale.json").read())
    spec["nodes"][0]["config"] = {}
    spec["nodes"][1] = {"name": "grayscale", "stage": "video_filter", "config": {"filter": "nosuchfilter"}}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(spec))
    res = excamera("pipeline", "run", bad, "-i", f"input_0={FOREMAN}", "-o", f"output_0={out}", "--workers", 2,
                   "--coordinator", address, "--certs", client)
    one_line_error(res, "grayscale")
    assert not out.exists()
