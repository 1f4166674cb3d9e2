"""The runtime's subcommands: certs init, timeline, worker and server errors, standalone daemons."""

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def excamera(*args, env=None, timeout=60):
    return subprocess.run([sys.executable, "-m", "excamera", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=timeout)


def one_line_error(p, text):
    assert p.returncode == 1, p
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("excamera: error: ") and text in lines[0], p.stderr


def test_help_lists_runtime_commands_and_is_cheap():
    p = excamera("--help")
    for cmd in ("coordinator", "rendezvous", "worker", "certs", "timeline", "bench"):
        assert cmd in p.stdout
    code = ("import sys, excamera.cli; excamera.cli.build_parser(); "
            "print(sorted(m for m in ('grpc', 'numpy', 'numba', 'cryptography') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_certs_init(tmp_path):
    d = tmp_path / "certs"
    p = excamera("certs", "init", str(d), "--host", "coord.example")
    assert p.returncode == 0, p.stderr
    names = sorted(os.listdir(d))
    assert names == sorted(["ca.pem", "ca.key", "server.pem", "server.key", "client.pem", "client.key"])
    for key in ("ca.key", "server.key", "client.key"):
        assert stat.S_IMODE((d / key).stat().st_mode) == 0o600
    from cryptography import x509

    cert = x509.load_pem_x509_certificate((d / "server.pem").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "coord.example" in sans.get_values_for_type(x509.DNSName)
    one_line_error(excamera("certs", "init", str(d)), "already exist")
    assert excamera("certs", "init", str(d), "--force").returncode == 0


def test_timeline_command(tmp_path):
    tl = {"job": "j", "name": "n", "status": "succeeded", "duration": 2.0,
          "workers": [{"worker": "w1", "name": "h:1", "history": [[0, "idle"], [0.5, "t0:first-pass"],
                                                                    [1.5, "idle"]]}], "tasks": {}}
    src, dst = tmp_path / "t.json", tmp_path / "t.svg"
    src.write_text(json.dumps(tl))
    assert excamera("timeline", str(src), "-o", str(dst)).returncode == 0
    svg = dst.read_text()
    assert svg.startswith("<svg") and "first-pass" in svg and svg.count("<rect") == 2  # bar + legend
    assert dst.stat().st_mode & 0o044 == 0o044  # readable as any output file (umask 022)
    # PNG: the same chart drawn, at the SVG's size, with the bar's color where the bar is.
    from PIL import Image

    from coordinator.timeline import layout
    png = tmp_path / "t.png"
    assert excamera("timeline", str(src), "-o", str(png)).returncode == 0
    width, height, items = layout(tl)
    (bar,) = [i for i in items if i[0] == "rect" and i[6]]
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size == (width, height)
        x, y, w, h, color = bar[1], bar[2], bar[3], bar[4], bar[5]
        assert image.convert("RGB").getpixel((int(x + w / 2), int(y + h / 2))) == tuple(
            int(color[k:k + 2], 16) for k in (1, 3, 5))
        assert image.convert("RGB").getpixel((2, height - 2)) == (255, 255, 255)
    one_line_error(excamera("timeline", str(src), "-o", str(tmp_path / "t.jpg")), "must end in .svg or .png")
    src.write_text("{not json")
    one_line_error(excamera("timeline", str(src), "-o", str(tmp_path / "u.svg")), "not JSON")
    src.write_text(json.dumps({"workers": 3}))
    one_line_error(excamera("timeline", str(src), "-o", str(tmp_path / "u.svg")), "not a timeline")
    assert not (tmp_path / "u.svg").exists() and not list(tmp_path.glob(".timeline*"))


def test_a_pipeline_timeline_is_colored_by_node():
    """A pipeline's tasks all have the one state "run": the chart colors and names them by node."""
    from coordinator.timeline import layout
    tl = {"job": "j", "name": "pipeline", "status": "succeeded", "duration": 3.0,
          "workers": [{"worker": "w1", "name": "h:1", "history": [
              [0, "idle"], [0.1, "decode.000000-aa:run"], [1.0, "encode.000000-bb:run"], [2.9, "idle"]]}],
          "tasks": {}}
    _, _, items = layout(tl)
    bars = [i for i in items if i[0] == "rect" and i[6]]
    legend = [i[3] for i in items if i[0] == "text" and i[3] in ("decode", "encode", "run") and i[5] == 11]
    assert len({b[5] for b in bars}) == 2 and sorted(legend) == ["decode", "encode"]
    assert [i[3] for i in items if i[0] == "text" and i[5] == 10] == ["decode", "encode"]  # on the bars


def test_worker_errors(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "EXCAMERA_WORKER_TOKENS"}
    one_line_error(excamera("worker", "--coordinator", "127.0.0.1:1", "--certs", str(tmp_path), "--job", "j",
                            env=env), "no worker token")
    env["EXCAMERA_WORKER_TOKENS"] = "w1"
    one_line_error(excamera("worker", "--coordinator", "127.0.0.1:1", "--certs", str(tmp_path), "--job", "j",
                            env=env), "not ID=TOKEN")
    env["EXCAMERA_WORKER_TOKENS"] = "w1=t,w2=u"
    one_line_error(excamera("worker", "--coordinator", "127.0.0.1:1", "--certs", str(tmp_path), "--job", "j",
                            "--count", "3", env=env), "names 2 worker(s)")
    one_line_error(excamera("worker", "--coordinator", "127.0.0.1:1", "--certs", str(tmp_path), "--job", "j",
                            env=env), "ca.pem")
    p = excamera("worker", "--coordinator", "nope", "--certs", str(tmp_path), "--job", "j", env=env)
    assert p.returncode == 2 and "HOST:PORT" in p.stderr


def test_coordinator_serve_needs_certs(tmp_path):
    one_line_error(excamera("coordinator", "serve", "--listen", "127.0.0.1:0", "--certs", str(tmp_path)),
                   "ca.pem")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_listening(proc, port, what):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{what} exited: {proc.stderr.read()}"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"{what} did not listen on {port}")


@pytest.mark.slow
def test_standalone_rendezvous_and_coordinator(tmp_path):
    """`excamera rendezvous serve` and `excamera coordinator serve --rendezvous`, a job submitted
    over the Jobs service, then SIGTERM: both exit 0. (--keep: the result stays in the store to be
    read here; test_encode_s3 checks that without it a fetched job's objects go.)"""
    from coordinator.api import RemoteCoordinator, RunConfig, run_job
    from coordinator.shaped import shaped_inputs, shaped_job
    from worker.fakecodec import reference_output

    certs = tmp_path / "certs"
    assert excamera("certs", "init", str(certs)).returncode == 0
    client = tmp_path / "client"
    client.mkdir()
    for name in ("ca.pem", "client.pem", "client.key"):
        (client / name).write_bytes((certs / name).read_bytes())
    rport, cport = _free_port(), _free_port()
    base = [sys.executable, "-m", "excamera"]
    rdv = subprocess.Popen(base + ["rendezvous", "serve", "--listen", f"127.0.0.1:{rport}", "--certs", str(certs)],
                           cwd=ROOT, stderr=subprocess.PIPE, text=True)
    coord = subprocess.Popen(base + ["coordinator", "serve", "--listen", f"127.0.0.1:{cport}", "--certs",
                                     str(certs), "--storage", str(tmp_path / "store"), "--keep", "--rendezvous",
                                     f"127.0.0.1:{rport}"], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        _wait_listening(rdv, rport, "rendezvous")
        _wait_listening(coord, cport, "coordinator")
        chunks = [b"a" * 500, b"b" * 700, b"c" * 300]
        r = run_job(shaped_job(3, state_bytes=5000),
                    RunConfig(RemoteCoordinator(f"127.0.0.1:{cport}", str(client)), workers=2),
                    inputs=shaped_inputs(chunks))
        (ref,) = r.objects[""].values()
        data = (tmp_path / "store" / r.storage_prefix / ref.key).read_bytes()
        assert data == reference_output(chunks, 5000)
    finally:
        for p in (coord, rdv):
            p.send_signal(signal.SIGTERM)
        codes = [p.wait(timeout=30) for p in (coord, rdv)]
    assert codes == [0, 0]
