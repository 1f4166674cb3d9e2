"""A journalled coordinator survives its own death: `excamera coordinator serve --state-dir DIR`
is killed with SIGKILL at several moments of an encode and of a pipeline submitted with
`--coordinator`, restarted with the same flags, and the client rides through: the output is
byte-identical to an undisturbed run and the storage is empty once the result is fetched. Also:
the journal's bad states (locked, newer format, unwritable) refuse the daemon in one line, and
`excamera coordinator gc` finds storage no journalled job owns."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from common import CLIPS_DIR
from coordinator_daemon import ROOT, Daemon, certs, excamera, free_port, one_line_error  # noqa: F401 (a fixture)

CLIP = CLIPS_DIR / "RTn23_80x44p15_15f.y4m"      # 80x44, 15 frames: 4 chunks and a stitch
SETTINGS = ["--chunk-frames", "4", "--batch-chunks", "4", "--cq-level", "28", "--first-pass", "native"]
FOREMAN = CLIPS_DIR / "foreman_qcif_176x144_10f.y4m"
PIPELINE = ["pipeline", "run", "pipelines/grayscale.json", "-i", f"input_0={FOREMAN}", "--frames-per-chunk", "3"]


def _kill_at(d: Daemon, client: subprocess.Popen, done: int) -> bool:
    """Kill the daemon once its running job has ``done`` verified results journalled (0: once the
    job is accepted); False if the job ended (or the client did) first."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        running = d.journal("SELECT job_id FROM jobs WHERE status='running'")
        if running:
            (n,), = d.journal(f"SELECT COUNT(*) FROM results WHERE job_id='{running[0][0]}'")
            if n >= done:
                d.kill()
                return True
        if client.poll() is not None or d.journal("SELECT 1 FROM jobs WHERE status IN ('succeeded', 'failed')"):
            return False
        time.sleep(0.02)
    raise AssertionError("the job never got there")


def _restart_run(tmp_path, certs, command: list, done: list[int]) -> tuple[subprocess.CompletedProcess, Daemon]:
    """Run ``command`` (a client of the daemon) while the daemon is killed at each of ``done``
    and started again; returns the client's result."""
    all_certs, client_certs = certs
    d = Daemon(tmp_path, all_certs)
    d.start()
    try:
        client = subprocess.Popen([sys.executable, "-m", "excamera", *map(str, command), "--coordinator", d.address,
                                   "--certs", str(client_certs), "--reconnect", "60"],
                                  cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        kills = 0
        for n in done:
            if _kill_at(d, client, n):
                kills += 1
                d.start()
        out, err = client.communicate(timeout=240)
        res = subprocess.CompletedProcess(client.args, client.returncode, out, err)
        assert kills, "the job ended before any kill: nothing was tested"
        # Once the result is fetched, the job's objects go (asynchronously).
        deadline = time.monotonic() + 30
        while d.stored() and time.monotonic() < deadline:
            time.sleep(0.1)
        d.stop()
    finally:
        d.reap()
    return res, d


@pytest.mark.slow
# (tasks: a decode, 4 chunks, the batch's rebase, the stitch, ...: 5 done is the rebase in flight)
@pytest.mark.parametrize("done", [[0], [5], [1, 3]], ids=["accepted", "mid-rebase", "twice"])
def test_an_encode_rides_through_sigkill_of_the_coordinator(tmp_path, certs, done):
    ref = tmp_path / "ref.ivf"
    res = excamera("encode", CLIP, "-o", ref, "--workers", 0, *SETTINGS)
    assert res.returncode == 0, res.stderr
    out = tmp_path / "out.ivf"
    res, d = _restart_run(tmp_path, certs, ["encode", CLIP, "-o", out, "--workers", 2, *SETTINGS], done)
    assert res.returncode == 0, res.stderr + d.log()
    assert out.read_bytes() == ref.read_bytes()
    assert d.stored() == []
    log = d.log()
    assert "resumes" in log, log
    assert d.journal("SELECT status, purged FROM jobs") == [("succeeded", 1)]


@pytest.mark.slow
@pytest.mark.parametrize("done", [[1], [3]])
def test_a_pipeline_rides_through_sigkill_of_the_coordinator(tmp_path, certs, done):
    here = tmp_path / "here.ivf"
    res = excamera(*PIPELINE, "-o", f"output_0={here}", "--workers", 0)
    assert res.returncode == 0, res.stderr
    there = tmp_path / "there.ivf"
    res, d = _restart_run(tmp_path, certs, [*PIPELINE, "-o", f"output_0={there}", "--workers", 2], done)
    assert res.returncode == 0, res.stderr + d.log()
    assert there.read_bytes() == here.read_bytes()
    assert d.stored() == []
    assert "resumes" in d.log()


def _self_kill_run(tmp_path, certs, command: list, die_at: str) -> tuple[subprocess.CompletedProcess, Daemon]:
    """Run ``command`` (a client of the daemon) against a daemon that SIGKILLs itself at
    ``die_at`` (``coordinator.submissions.die_at``), started again once it is dead."""
    all_certs, client_certs = certs
    d = Daemon(tmp_path, all_certs)
    d.start(die_at=die_at)
    try:
        client = subprocess.Popen([sys.executable, "-m", "excamera", *map(str, command), "--coordinator", d.address,
                                   "--certs", str(client_certs), "--reconnect", "60"],
                                  cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert d.procs[-1].wait(timeout=120) == -signal.SIGKILL, d.log()
        d.start()
        out, err = client.communicate(timeout=240)
        res = subprocess.CompletedProcess(client.args, client.returncode, out, err)
        deadline = time.monotonic() + 30
        while d.stored() and time.monotonic() < deadline:
            time.sleep(0.1)
        d.stop()
    finally:
        d.reap()
    return res, d


@pytest.mark.slow
def test_an_encode_rides_through_sigkill_with_the_stitch_in_flight(tmp_path, certs):
    """The coordinator dies as it sends the stitch's command (a moment too short to hit by
    watching the journal from outside): the restarted one re-issues the stitch; same bytes."""
    ref = tmp_path / "ref.ivf"
    assert excamera("encode", CLIP, "-o", ref, "--workers", 0, *SETTINGS).returncode == 0
    out = tmp_path / "out.ivf"
    res, d = _self_kill_run(tmp_path, certs, ["encode", CLIP, "-o", out, "--workers", 2, *SETTINGS],
                            "command:stitch")
    assert res.returncode == 0, res.stderr + d.log()
    assert out.read_bytes() == ref.read_bytes()
    assert "resumes" in d.log(), d.log()
    assert d.journal("SELECT status, purged FROM jobs") == [("succeeded", 1)]
    assert d.stored() == []


@pytest.mark.slow
def test_a_submission_sent_again_after_it_was_journalled_is_one_job(tmp_path, certs):
    """The coordinator dies after journalling the job, before its reply: the client sends the
    same submission again to the restarted one and gets that job, not a second."""
    ref = tmp_path / "ref.ivf"
    assert excamera("encode", CLIP, "-o", ref, "--workers", 0, *SETTINGS).returncode == 0
    out = tmp_path / "out.ivf"
    res, d = _self_kill_run(tmp_path, certs, ["encode", CLIP, "-o", out, "--workers", 2, *SETTINGS], "accepted")
    assert res.returncode == 0, res.stderr + d.log()
    assert out.read_bytes() == ref.read_bytes()
    assert d.journal("SELECT status, purged FROM jobs") == [("succeeded", 1)]
    assert "its submission came again" in d.log() and "resumes" in d.log(), d.log()
    assert d.stored() == []


@pytest.mark.slow
@pytest.mark.parametrize("what", ["encode", "pipeline"])
def test_a_client_sends_its_inputs_again_after_a_kill_mid_upload(tmp_path, certs, what):
    """SIGKILL as the first input chunk arrives: the restarted coordinator removes the partial
    upload, the client re-reads its input (the encode's file, the pipeline's spooled sources) and
    submits again from the start; one job, byte-identical output, empty storage."""
    here, there = tmp_path / "here.ivf", tmp_path / "there.ivf"
    if what == "encode":
        local = ["encode", CLIP, "-o", here, *SETTINGS]
        remote = ["encode", CLIP, "-o", there, "--workers", 2, *SETTINGS]
    else:
        local, remote = [*PIPELINE, "-o", f"output_0={here}"], [*PIPELINE, "-o", f"output_0={there}", "--workers", 2]
    res = excamera(*local, "--workers", 0)
    assert res.returncode == 0, res.stderr
    res, d = _self_kill_run(tmp_path, certs, remote, "upload")
    assert res.returncode == 0, res.stderr + d.log()
    assert there.read_bytes() == here.read_bytes()
    assert "removed an unfinished upload" in d.log(), d.log()
    assert d.journal("SELECT status, purged FROM jobs") == [("succeeded", 1)]
    assert d.stored() == []


def test_a_restart_with_another_storage_is_refused_while_a_job_is_unfinished(tmp_path, certs):
    from coordinator.journal import Journal

    all_certs, _ = certs
    state, store, other = tmp_path / "state", tmp_path / "store", tmp_path / "other"
    j = Journal(state)
    j.accept("job-old", b"", [], 1.0, str(store.resolve()))
    j.begin("job-upload", str(store.resolve()))
    j.close()
    serve = ["coordinator", "serve", "--listen", f"127.0.0.1:{free_port()}", "--certs", all_certs,
             "--state-dir", state]
    one_line_error(excamera(*serve, "--storage", other),
                   f"state directory {state}: 2 unfinished job(s) have their objects in {store.resolve()}, "
                   f"not in {other}: restart with --storage {store.resolve()}")
    # An ended job's storage does not hold a restart back.
    j = Journal(state)
    j.end("job-old", "failed", "x", [], 2.0, set())
    j.drop("job-upload")
    assert j.foreign_storage(str(other.resolve())) is None
    j.close()


def test_the_state_directory_refuses_in_one_line(tmp_path, certs):
    all_certs, _ = certs
    d = Daemon(tmp_path, all_certs)
    d.start()
    try:
        serve = ["coordinator", "serve", "--listen", f"127.0.0.1:{free_port()}", "--certs", all_certs,
                 "--storage", tmp_path / "store"]
        one_line_error(excamera(*serve, "--state-dir", d.state),
                       f"state directory {d.state}: in use by another running coordinator (pid {d.procs[0].pid})")
        one_line_error(excamera("coordinator", "gc", "--state-dir", d.state), "in use by another running coordinator")
    finally:
        d.stop()
        d.reap()
    db = sqlite3.connect(d.state / "journal.sqlite")
    db.execute("UPDATE meta SET value='99' WHERE key='format'")
    db.commit()
    db.close()
    one_line_error(excamera(*serve, "--state-dir", d.state), "format 99 is newer than this excamera's")
    (tmp_path / "file").write_text("")
    one_line_error(excamera(*serve, "--state-dir", tmp_path / "file"), "file: not a directory")
    # unwritable: for root, a file system that takes no new files (sysfs); else a read-only directory
    if os.geteuid() == 0:
        one_line_error(excamera(*serve, "--state-dir", "/sys/excamera-state"),
                       "state directory /sys/excamera-state: Operation not permitted")
    else:
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o555)
        one_line_error(excamera(*serve, "--state-dir", ro / "state"), f"state directory {ro / 'state'}: Permission denied")


def test_gc_lists_and_removes_storage_no_journalled_job_owns(tmp_path):
    from coordinator.journal import Journal

    store, state = tmp_path / "store", tmp_path / "state"
    for job, key in (("job-mine", "input/a"), ("job-stray", "input/a"), ("job-stray", "out/b")):
        (store / "jobs" / job / key).parent.mkdir(parents=True, exist_ok=True)
        (store / "jobs" / job / key).write_bytes(b"x")
    j = Journal(state)
    j.accept("job-mine", b"", [], 1.0)
    j.close()
    res = excamera("coordinator", "gc", "--storage", store, "--state-dir", state)
    assert res.returncode == 0 and res.stdout.splitlines() == ["unowned: jobs/job-stray/ (2 object(s))"], res
    assert (store / "jobs" / "job-stray").exists()
    res = excamera("coordinator", "gc", "--storage", store, "--state-dir", state, "--delete")
    assert res.returncode == 0 and "removed: jobs/job-stray/" in res.stdout, res
    assert not (store / "jobs" / "job-stray").exists() and (store / "jobs" / "job-mine" / "input" / "a").exists()
    res = excamera("coordinator", "gc", "--storage", store, "--state-dir", state)
    assert res.returncode == 0 and "nothing to collect" in res.stdout


def test_a_submission_id_stands_for_one_spec():
    from coordinator.submissions import SubmissionError, Submissions
    from protos import jobs_pb2 as jpb

    subs = Submissions()
    spec = jpb.JobSpec(name="a", workers=2, submission_id="ab" * 16)
    assert subs.find(spec) is None and subs.find(jpb.JobSpec(name="a")) is None
    subs.claim(spec, "job-1")
    assert subs.find(jpb.JobSpec.FromString(spec.SerializeToString())) == "job-1"
    with pytest.raises(SubmissionError, match="already used for job job-1, with another spec") as e:
        subs.find(jpb.JobSpec(name="a", workers=3, submission_id="ab" * 16))
    assert e.value.code == "ALREADY_EXISTS"
    with pytest.raises(SubmissionError, match="over the 128 taken"):
        subs.find(jpb.JobSpec(submission_id="x" * 129))
    subs.release(spec, "job-2")  # not its job: kept
    assert subs.find(spec) == "job-1"
    subs.release(spec, "job-1")
    assert subs.find(spec) is None
