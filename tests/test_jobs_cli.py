"""`excamera jobs list|watch|fetch|cancel` against a real `excamera coordinator serve` process:
a job submitted by `excamera encode --coordinator` whose client went away (a laptop that slept)
is listed, watched to its end and fetched, byte for byte, by its submitter's account; a running
job is cancelled; and bad input (an unknown job, no saved key) is one line and exit status 1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from common import CLIPS_DIR
from coordinator_daemon import ROOT, Daemon, certs, excamera, one_line_error  # noqa: F401 (a fixture)
from worker.codec_ops import ivf_frames

CLIP = CLIPS_DIR / "RTn23_80x44p15_15f.y4m"
LONG_CLIP = CLIPS_DIR / "compressed" / "bikes_640x272_100f.mp4"
SETTINGS = ["--chunk-frames", "4", "--batch-chunks", "4", "--cq-level", "28", "--first-pass", "native"]


def _account(tmp_path, name: str = "xdg") -> dict:
    """The environment of one user account: its own book of job keys ($XDG_STATE_HOME)."""
    return {**os.environ, "XDG_STATE_HOME": str(tmp_path / name)}


def _submitted(d: Daemon, client: subprocess.Popen, env: dict) -> str:
    """The id of the job ``client`` submitted, once its key is in the account's book."""
    book = os.path.join(env["XDG_STATE_HOME"], "excamera", "client", "jobs.json")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with open(book) as f:
                ids = list(json.load(f))
        except (OSError, ValueError):  # not written yet (it is replaced whole, never half-written)
            ids = []
        if ids:
            assert len(ids) == 1, ids
            return ids[0]
        assert client.poll() is None, client.communicate()
        time.sleep(0.05)
    raise AssertionError("the job was never submitted: " + d.log())


def _encode_client(d: Daemon, client_certs, out, env: dict, workers: int, clip=CLIP) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "excamera", "encode", str(clip), "-o", str(out), "--workers",
                             str(workers), *SETTINGS, "--coordinator", d.address, "--certs", str(client_certs)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _status(listing: subprocess.CompletedProcess, job_id: str) -> str:
    assert listing.returncode == 0, listing.stderr
    rows = [line.split() for line in listing.stdout.splitlines() if line.startswith(job_id + " ")]
    assert len(rows) == 1, listing.stdout
    return rows[0][1]


@pytest.mark.slow
def test_a_job_whose_client_went_away_is_listed_watched_and_fetched(tmp_path, certs):
    all_certs, client_certs = certs
    ref = tmp_path / "ref.ivf"
    res = excamera("encode", CLIP, "-o", ref, "--workers", 0, *SETTINGS)
    assert res.returncode == 0, res.stderr
    env = _account(tmp_path)
    d = Daemon(tmp_path, all_certs)
    d.start()
    try:
        cli = ["--coordinator", d.address, "--certs", client_certs]
        client = _encode_client(d, client_certs, tmp_path / "never.ivf", env, workers=2)
        job_id = _submitted(d, client, env)
        client.kill()  # the laptop sleeps: its job runs on without it
        client.communicate()
        assert _status(excamera("jobs", "list", *cli, env=env), job_id) in ("running", "succeeded")

        watch = excamera("jobs", "watch", job_id, *cli, env=env)
        assert watch.returncode == 0, watch.stderr
        lines = watch.stdout.splitlines()
        assert lines[0].startswith("job ") and lines[-1] == "job running -> succeeded", watch.stdout
        assert any(line.startswith("task ") for line in lines), watch.stdout  # the tasks' progress
        assert _status(excamera("jobs", "list", *cli, env=env), job_id) == "succeeded"

        out = tmp_path / "fetched.ivf"
        fetch = excamera("jobs", "fetch", job_id, "-o", out, *cli, env=env)
        assert fetch.returncode == 0, fetch.stderr
        assert fetch.stderr.startswith(f"excamera: job {job_id}: wrote 1 object(s), {out.stat().st_size} bytes")
        # the stitched stream the client would have got: the frames of the encode done here
        assert ivf_frames(out.read_bytes(), "fetched") == ivf_frames(ref.read_bytes(), "ref")
        deadline = time.monotonic() + 30  # fetched: its objects go
        while d.stored() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert d.stored() == []
        one_line_error(excamera("jobs", "fetch", job_id, "-o", tmp_path / "again.ivf", *cli, env=env),
                       f"--coordinator {d.address}: ")
        assert not (tmp_path / "again.ivf").exists()
    finally:
        d.stop()
        d.reap()


@pytest.mark.slow
def test_cancel_ends_a_running_job_and_bad_input_is_one_line(tmp_path, certs):
    all_certs, client_certs = certs
    env = _account(tmp_path)
    d = Daemon(tmp_path, all_certs)
    d.start()
    try:
        cli = ["--coordinator", d.address, "--certs", client_certs]
        # A long job (100 frames of 640x272 on one worker), cancelled as soon as it is submitted.
        client = _encode_client(d, client_certs, tmp_path / "out.ivf", env, workers=1, clip=LONG_CLIP)
        job_id = _submitted(d, client, env)
        deadline = time.monotonic() + 120     # its inputs uploaded: the job runs (a hang-catcher)
        while _status(excamera("jobs", "list", *cli, env=env), job_id) != "running":
            assert time.monotonic() < deadline and client.poll() is None, d.log()
            time.sleep(0.1)
        res = excamera("jobs", "cancel", job_id, *cli, env=env)
        assert res.returncode == 0 and res.stdout == f"job {job_id}: cancelled\n", res
        # another account has no key for it; nobody has one for a job that does not exist
        stranger = _account(tmp_path, "stranger")
        one_line_error(excamera("jobs", "cancel", job_id, *cli, env=stranger), f"job {job_id}: its key is not in")
        one_line_error(excamera("jobs", "fetch", "job-nope", "-o", tmp_path / "x", *cli, env=env),
                       "job job-nope: its key is not in")
        one_line_error(excamera("jobs", "watch", "job-nope", *cli, env=env), "not_found: no job 'job-nope'")
        out, err = client.communicate(timeout=120)
        assert client.returncode == 1 and f"job {job_id} cancelled" in err, err
        assert not (tmp_path / "out.ivf").exists()
        one_line_error(excamera("jobs", "watch", job_id, *cli, env=env), f"job {job_id} cancelled")
        assert _status(excamera("jobs", "list", *cli, env=env), job_id) == "cancelled"
        res = excamera("jobs", "cancel", job_id, *cli, env=env)
        assert res.returncode == 0 and res.stdout == f"job {job_id}: not running (nothing to cancel)\n", res
        one_line_error(excamera("jobs", "fetch", job_id, "-o", tmp_path / "x", *cli, env=env),
                       f"job {job_id} cancelled: nothing to fetch")
        deadline = time.monotonic() + 30  # a cancelled job leaves nothing behind
        while d.stored() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert d.stored() == []
    finally:
        d.stop()
        d.reap()
    # the coordinator is gone: one line once --reconnect runs out
    one_line_error(excamera("jobs", "list", *cli, "--reconnect", "0", env=env), f"--coordinator {d.address}: unavailable")
