"""`excamera encode --coordinator HOST:PORT --certs DIR`: the job goes to a running
`excamera coordinator serve` daemon (a subprocess on loopback, certificates from `certs init`),
which launches the workers; the raw chunks stream up, the stitched stream streams back. Same
bytes as `--workers 0`; a foreign CA or no certificate is refused; Ctrl-C cancels the job there
and leaves no output."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from common import CLIPS_DIR, sigint_default
from coordinator_daemon import excamera, free_port as _free_port, one_line_error, wait_listening
from security import tls

ROOT = Path(__file__).resolve().parent.parent
CLIP = CLIPS_DIR / "RTn23_80x44p15_15f.y4m"      # 80x44, 15 frames
# A job that runs for seconds, not the half second CLIP's job takes once workers start quickly.
LONG_CLIP = CLIPS_DIR / "compressed" / "bikes_640x272_100f.mp4"
SETTINGS = ["--chunk-frames", "4", "--batch-chunks", "2", "--cq-level", "28", "--first-pass", "native"]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    """A running coordinator daemon; yields (address, client certs dir, full certs dir)."""
    d = tmp_path_factory.mktemp("daemon")
    certs, client = d / "certs", d / "client"
    assert excamera("certs", "init", certs).returncode == 0
    client.mkdir()
    for name in tls.WORKER_FILES:  # the client needs no server or CA key
        (client / name).write_bytes((certs / name).read_bytes())
    port = _free_port()
    log = open(d / "daemon.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "excamera", "coordinator", "serve", "--listen",
                             f"127.0.0.1:{port}", "--certs", str(certs), "--storage", str(d / "store")],
                            cwd=ROOT, stderr=log, stdout=log)
    wait_listening(proc, port, d / "daemon.log")
    try:
        yield f"127.0.0.1:{port}", client, certs
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        log.close()


def jobs(address, client):
    """The daemon's job list, as a submitter with a client certificate sees it."""
    from protos import jobs_pb2 as jpb
    from protos import jobs_pb2_grpc as jpb_grpc

    bundle = tls.load(client, need=tls.WORKER_FILES)
    with grpc.secure_channel(address, tls.client_credentials(bundle)) as ch:
        return {j.job_id: j for j in jpb_grpc.JobsStub(ch).List(jpb.ListRequest(), timeout=10).jobs}


@pytest.mark.slow
@pytest.mark.parametrize("ext", ["ivf", "webm"])
def test_remote_encode_same_bytes_as_workers_0(daemon, tmp_path, ext):
    address, client, _ = daemon
    zero, remote = tmp_path / f"w0.{ext}", tmp_path / f"remote.{ext}"
    res = excamera("encode", CLIP, "-o", zero, "--workers", 0, *SETTINGS)
    assert res.returncode == 0, res.stderr
    before = set(jobs(address, client))
    res = excamera("encode", CLIP, "-o", remote, "--workers", 2, "--coordinator", address, "--certs", client,
                   *SETTINGS)
    assert res.returncode == 0, res.stderr
    assert f"2 workers of {address}" in res.stderr and "15 frames, 80x44" in res.stderr
    assert remote.read_bytes() == zero.read_bytes()
    (new,) = set(jobs(address, client)) - before
    assert jobs(address, client)[new].status == "succeeded"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([zero.name, remote.name])


def test_remote_encode_refuses_a_foreign_ca_and_no_certificate(daemon, tmp_path):
    address, client, _ = daemon
    out = tmp_path / "o.ivf"
    other = tmp_path / "other"
    assert excamera("certs", "init", other).returncode == 0
    res = excamera("encode", CLIP, "-o", out, "--workers", 2, "--coordinator", address, "--certs", other)
    one_line_error(res, f"--coordinator {address}: unavailable")
    nocert = tmp_path / "nocert"
    nocert.mkdir()
    (nocert / "ca.pem").write_bytes((client / "ca.pem").read_bytes())
    one_line_error(excamera("encode", CLIP, "-o", out, "--workers", 2, "--coordinator", address, "--certs", nocert),
                   "client.pem")
    assert not out.exists() and not list(tmp_path.glob(".o.ivf*"))

    # the daemon itself refuses a caller with no client certificate (the CLI never gets that far)
    async def anonymous():
        from coordinator.api import _submit_parts
        from coordinator.excamera_job import encode_job
        from coordinator.fsm import job_to_proto
        from media.excamera_encode import EncodeSettings
        from protos import jobs_pb2_grpc as jpb_grpc

        creds = grpc.ssl_channel_credentials(root_certificates=(client / "ca.pem").read_bytes())
        async with grpc.aio.secure_channel(address, creds) as ch:
            spec = job_to_proto(encode_job(15, 80, 44, EncodeSettings(4, 2, 28, "native")), workers=1)
            await jpb_grpc.JobsStub(ch).SubmitStream(_submit_parts(spec, {}), timeout=20)

    with pytest.raises(grpc.aio.AioRpcError) as e:
        asyncio.run(anonymous())
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE


def test_remote_encode_usage_errors(tmp_path):
    out = tmp_path / "o.ivf"
    res = excamera("encode", CLIP, "-o", out, "--workers", 2, "--coordinator", "127.0.0.1:1")
    assert res.returncode == 2 and "--coordinator needs --certs" in res.stderr
    res = excamera("encode", CLIP, "-o", out, "--workers", 2, "--certs", tmp_path)
    assert res.returncode == 2 and "--certs goes with --coordinator" in res.stderr
    res = excamera("encode", CLIP, "-o", out, "--workers", 2, "--coordinator", "nowhere", "--certs", tmp_path)
    assert res.returncode == 2 and "HOST:PORT" in res.stderr
    res = excamera("encode", CLIP, "-o", out, "--workers", 0, "--coordinator", "127.0.0.1:1", "--certs", tmp_path)
    assert res.returncode == 2 and "--coordinator needs --workers N" in res.stderr
    assert not out.exists()


def test_remote_encode_bad_input_and_no_daemon(daemon, tmp_path):
    address, client, _ = daemon
    out = tmp_path / "o.ivf"
    res = excamera("encode", CLIP, "-o", out, "--workers", 2, "--coordinator", address, "--certs", client,
                   "--chunk-frames", 16)
    one_line_error(res, "fewer than one chunk of 16")
    res = excamera("encode", CLIP, "-o", out, "--workers", 2, "--coordinator", f"127.0.0.1:{_free_port()}",
                   "--certs", client)
    one_line_error(res, "unavailable")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_ctrl_c_cancels_the_job_and_writes_nothing(daemon, tmp_path):
    address, client, _ = daemon
    out = tmp_path / "o.ivf"
    before = set(jobs(address, client))
    proc = subprocess.Popen([sys.executable, "-m", "excamera", "encode", str(LONG_CLIP), "-o", str(out),
                             "--workers", "2", "--coordinator", address, "--certs", str(client), *SETTINGS],
                            cwd=ROOT, stderr=subprocess.PIPE, text=True, preexec_fn=sigint_default)
    deadline = time.monotonic() + 120
    new = set()
    while not new:
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "the job never reached the daemon"
        new = {j for j, s in jobs(address, client).items() if s.status == "running"} - before
        time.sleep(0.05)
    (job_id,) = new
    time.sleep(0.5)  # the client has the job's reference and is watching its events
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert f"job {job_id} cancelled on the coordinator" in err and "no output written" in err
    assert "Traceback" not in err
    assert jobs(address, client)[job_id].status == "cancelled"
    assert list(tmp_path.iterdir()) == []
