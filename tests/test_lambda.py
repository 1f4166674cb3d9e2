"""Workers on AWS Lambda, against a local Invoke endpoint (``tests/lambda_endpoint.py``) reached
through boto3 and ``AWS_ENDPOINT_URL_LAMBDA`` exactly as AWS is: every handler is the real one,
run with the real event in a fresh process."""

import asyncio
import json
import socket
import time
from pathlib import Path

import pytest

from coordinator.api import JobFailed, LaunchedBackend, RemoteCoordinator, RunConfig, embedded_coordinator, run_job
from awslambda.launcher import LambdaLauncher, LaunchError, make_event
from coordinator.shaped import shaped_inputs, shaped_job
from security import tls
from common import prepare_numba_cache_in_child as prepare_in_child
from lambda_endpoint import Endpoint
from worker.fakecodec import reference_output

FUNCTION = "excamera-worker"


def chunks_for(n, seed=0):
    import random

    rng = random.Random(seed)
    return [rng.randbytes(rng.randrange(100, 3000)) for _ in range(n)]


@pytest.fixture(autouse=True)
def _numba_env(monkeypatch):
    """An in-process handler points numba at /tmp and a pinned CPU (as in a sandbox): undo that
    after each test, or every later subprocess would compile every kernel again for that target."""
    import os

    for k in ("NUMBA_CACHE_DIR", "NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES"):
        if k in os.environ:
            monkeypatch.setenv(k, os.environ[k])
        else:  # (delenv of an absent key records nothing to undo: set it first, so undo removes it)
            monkeypatch.setenv(k, "")
            monkeypatch.delenv(k)


@pytest.fixture
def aws(monkeypatch):
    """Dummy credentials, no instance metadata: what boto3 needs to sign requests."""
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                 "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return monkeypatch


def lambda_factory(function=FUNCTION, regions=("us-east-1", "us-west-2"), **kw):
    made = []

    def factory(bundle):
        made.append(LambdaLauncher(bundle, function, regions, memory_mb=1024, timeout_s=60, **kw))
        return made[-1]

    return factory, made


def run_lambda_job(tmp_path, ep, chunks, *, workers=2, public="127.0.0.1:0", timeout_s=120, work_s=0.0,
                   **kw):
    factory, made = lambda_factory(**kw)
    t0 = time.monotonic()
    try:
        r = run_job(shaped_job(len(chunks), state_bytes=20_000, work_s=work_s),
                    RunConfig(LaunchedBackend(factory, public), workers=workers, storage=str(tmp_path / "s"),
                              timeout_s=timeout_s),
                    inputs=shaped_inputs(chunks))
    finally:
        elapsed = time.monotonic() - t0
    return r, made[0], elapsed


# -- certificates and events ----------------------------------------------------------------------

def test_issued_client_cert_is_short_lived_signed_by_the_ca_and_needs_the_ca_key():
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

    bundle = tls.generate()
    pem, key = tls.issue_client(bundle, 600, label="job-1")
    cert = x509.load_pem_x509_certificate(pem)
    ca = x509.load_pem_x509_certificate(bundle.ca_pem)
    ca.public_key().verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
    life = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert 600 <= life.total_seconds() <= 600 + 301
    assert "job-1" in cert.subject.rfc4514_string() and tls.CLIENT_CN in cert.subject.rfc4514_string()
    with pytest.raises(tls.CertError, match="CA key"):
        tls.issue_client(bundle.for_worker(), 600)
    with pytest.raises(LaunchError, match="CA key"):
        LambdaLauncher(bundle.for_worker(), FUNCTION)


def test_event_carries_only_the_job_client_key_never_the_server_or_ca_key():
    bundle = tls.generate()
    pem, key = tls.issue_client(bundle, 600, label="job-1")
    payload = make_event(coordinator="203.0.113.5:7000", job_id="job-1", worker_id="w1", worker_token="t" * 43,
                         ca_pem=bundle.ca_pem, client_pem=pem, client_key=key)
    event = json.loads(payload)
    assert set(event) == {"excamera", "coordinator", "job_id", "worker_id", "worker_token", "ca_pem",
                          "client_pem", "client_key"}
    assert payload.count(b"PRIVATE KEY-----") == 2  # BEGIN and END of the one job client key
    assert event["client_key"].encode() == key
    for secret in (bundle.server_key, bundle.ca_key, bundle.client_key):
        body = b"".join(secret.splitlines()[1:-1])  # the base64 body, however it is wrapped
        flat = payload.replace(b"\\n", b"")
        # (every P-256 PKCS#8 key starts with the same 36 characters; the private scalar follows)
        assert body not in flat and body[36:76] not in flat
    with pytest.raises(LaunchError, match="over Lambda's 262144-byte limit"):
        make_event(coordinator="h:1", job_id="j", worker_id="w", worker_token="t" * 300_000,
                   ca_pem=bundle.ca_pem, client_pem=pem, client_key=key)


def test_handler_refuses_bad_events_without_dialling():
    from awslambda.handler import handler

    for event, why in (([], "not an object"), ({"excamera": 2}, "version 1"),
                       ({"excamera": 1, "coordinator": "h:1"}, "no job_id")):
        out = handler(event, None)
        assert out["ok"] is False and why in out["reason"]


def test_without_compiled_kernels_numba_s_cache_goes_to_tmp_filled_from_the_shipped_one(tmp_path):
    shipped = tmp_path / "shipped"
    (shipped / "codec").mkdir(parents=True)
    (shipped / "codec" / "k.nbi").write_bytes(b"index")
    target = tmp_path / "tmp-cache"
    got = prepare_in_child(shipped, target, EXCAMERA_AOT="0")
    assert got["cache"] == str(target) and got["compiled"] is None
    assert (target / "codec" / "k.nbi").read_bytes() == b"index"
    import platform

    if platform.machine() == "x86_64":  # the target the image's warm-up compiled for
        assert got["cpu_name"] == "haswell" and "+avx2" in got["features"]
    # An explicit NUMBA_CACHE_DIR is kept.
    got = prepare_in_child(shipped, target, EXCAMERA_AOT="0", NUMBA_CACHE_DIR=str(tmp_path / "mine"))
    assert got["cache"] == str(tmp_path / "mine") and got["cpu_name"] is None


def test_handler_with_too_little_time_left_takes_no_command_and_the_task_goes_elsewhere(tmp_path):
    """In-process: a handler whose context has 1 s left hangs up on its first command; a local
    worker then runs the whole job, byte-identical."""
    from awslambda.handler import handler

    class Ctx:
        aws_request_id = "r-1"
        function_name = FUNCTION

        def get_remaining_time_in_millis(self):
            return 1000

    chunks = chunks_for(2, 5)

    async def go():
        async with embedded_coordinator(str(tmp_path)) as c:
            job_id, _ = await c.submit(shaped_job(2, state_bytes=1000), inputs=shaped_inputs(chunks), workers=1,
                                       launch=False)
            (wid, token), = c.worker_tokens(job_id, 1)
            pem, key = tls.issue_client(c.bundle, 120, label=job_id)
            event = json.loads(make_event(coordinator=c.address, job_id=job_id, worker_id=wid, worker_token=token,
                                          ca_pem=c.bundle.ca_pem, client_pem=pem, client_key=key))
            summary = await asyncio.to_thread(handler, event, Ctx())
            # Now a generous local worker takes over.
            c.engine.jobs[job_id].launcher = True
            c.wake()
            outcome = await asyncio.wait_for(c.wait(job_id), 60)
            return summary, outcome, c.engine.jobs[job_id]

    summary, outcome, rec = asyncio.run(go())
    assert summary["reason"].startswith("out of time") and summary["commands"] == 0 and not summary["refused"]
    assert outcome.status == "succeeded", outcome.error
    assert any(a.status == "lost" for t in rec.tasks.values() for a in t.attempts)
    ref = outcome.objects["stitch"]["stitch.object"]
    assert (Path(outcome.storage_root) / outcome.storage_prefix / ref.key).read_bytes() == \
        reference_output(chunks, 1000)


# -- whole jobs through the local Invoke endpoint ------------------------------------------------

def test_whole_job_on_lambda_equals_local_workers_and_reports_its_cost(tmp_path, aws):
    chunks = chunks_for(4, 1)
    local = run_job(shaped_job(4, state_bytes=20_000), RunConfig(workers=2, storage=str(tmp_path / "local"),
                                                                 timeout_s=120), inputs=shaped_inputs(chunks))
    with Endpoint({FUNCTION: {"timeout_s": 60, "memory_mb": 1024}}) as ep:
        aws.setenv("AWS_ENDPOINT_URL_LAMBDA", ep.url)
        r, launcher, _ = run_lambda_job(tmp_path, ep, chunks, work_s=0.3)
        deadline = time.monotonic() + 20
        while ep.pids() and time.monotonic() < deadline:
            time.sleep(0.1)
        runs = list(ep.runs)
    assert r.read("stitch") == local.read("stitch") == reference_output(chunks, 20_000)
    assert sum(launcher.accepted.values()) == len(runs) >= 2
    # Every event: this job's own client certificate, the CA certificate, no other key.
    bundle_keys = {run.event for run in runs}
    assert len(bundle_keys) == len(runs)
    for run in runs:
        ev = json.loads(run.event)
        assert ev["job_id"] == r.job_id and ev["coordinator"].startswith("127.0.0.1:")
        assert run.event.count(b"PRIVATE KEY-----") == 2
        assert run.summary is not None, run.stderr
        # A worker the job no longer needed may come up after the embedded coordinator ended.
        assert run.summary["ok"] or run.summary["commands"] == 0, run.summary
    assert sum(1 for run in runs if run.summary["commands"]) >= 2  # late binding over both workers
    assert sum(run.summary["commands"] for run in runs) >= 4 * 6 + 1
    cost = r.timeline["cost"]
    assert cost["backend"] == "lambda" and cost["invocations"] == len(runs) and cost["gb_seconds"] > 0
    assert cost["usd_estimate"] > 0


def test_duplicated_events_are_refused_and_exit_at_once(tmp_path, aws):
    chunks = chunks_for(3, 2)
    with Endpoint({FUNCTION: {"timeout_s": 60}}, deliver=2) as ep:
        aws.setenv("AWS_ENDPOINT_URL_LAMBDA", ep.url)
        r, launcher, _ = run_lambda_job(tmp_path, ep, chunks, work_s=0.5)
        for run in list(ep.runs):
            run.done.wait(20)
        runs = list(ep.runs)
    assert r.read("stitch") == reference_output(chunks, 20_000)
    by_worker = {}
    for run in runs:
        by_worker.setdefault(json.loads(run.event)["worker_id"], []).append(run.summary)
    assert all(len(s) == 2 for s in by_worker.values())
    refused_pairs = 0
    for pair in by_worker.values():
        # Never two connections with one token: at most one of the two deliveries worked.
        assert sum(1 for s in pair if s["commands"] > 0) <= 1
        refused = [s for s in pair if s["refused"]]
        for s in refused:
            assert s["commands"] == 0 and s["ok"] is False and s["seconds"] < 45   # (a hang-catcher)
            assert "connected already" in s["reason"] or "is succeeded" in s["reason"]
        if refused:
            assert len(refused) == 1
            refused_pairs += 1
        else:  # a worker the job never needed: both deliveries came after the coordinator ended
            assert all(s["reason"].startswith("coordinator gone") for s in pair), pair
    assert refused_pairs >= 1


def test_a_handler_killed_mid_task_is_replaced_and_the_job_finishes_identically(tmp_path, aws):
    import os
    import signal

    chunks = chunks_for(4, 3)
    killed = []
    with Endpoint({FUNCTION: {"timeout_s": 60}}) as ep:
        aws.setenv("AWS_ENDPOINT_URL_LAMBDA", ep.url)

        def killer():
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not killed:
                # Kill a handler once some handler has connected and the job is under way.
                if len(ep.runs) >= 2 and ep.pids():
                    time.sleep(1.5)
                    pid = ep.pids()[0]
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                time.sleep(0.05)

        import threading

        t = threading.Thread(target=killer)
        t.start()
        r, launcher, _ = run_lambda_job(tmp_path, ep, chunks, work_s=0.4)
        t.join()
        runs = list(ep.runs)
    assert killed, "nothing was killed"
    assert r.read("stitch") == reference_output(chunks, 20_000)
    assert len(runs) >= 3  # a replacement was invoked
    lost = [a for attempts in r.timeline["tasks"].values() for a in attempts if a["status"] == "lost"]
    assert lost, "the kill did not interrupt a task"


def test_throttled_invocations_are_retried_and_the_job_completes(tmp_path, aws):
    chunks = chunks_for(3, 4)
    with Endpoint({FUNCTION: {"timeout_s": 60}}, throttle_first=8) as ep:
        aws.setenv("AWS_ENDPOINT_URL_LAMBDA", ep.url)
        r, launcher, _ = run_lambda_job(tmp_path, ep, chunks, workers=2)
        throttled = ep.throttled
    assert r.read("stitch") == reference_output(chunks, 20_000)
    assert throttled == 8 and sum(launcher.accepted.values()) >= 2


def test_a_function_that_does_not_exist_fails_the_job_at_once(tmp_path, aws):
    with Endpoint({FUNCTION: {}}) as ep:
        aws.setenv("AWS_ENDPOINT_URL_LAMBDA", ep.url)
        t0 = time.monotonic()
        with pytest.raises(JobFailed, match="lambda function nope in us-east-1: ResourceNotFoundException"):
            run_lambda_job(tmp_path, ep, chunks_for(2), function="nope", regions=("us-east-1",))
        assert time.monotonic() - t0 < 90   # a hang-catcher (under the job's 120 s timeout)
        assert not ep.runs


def test_an_unreachable_public_address_fails_within_the_connect_deadline_naming_it(tmp_path, aws):
    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    with Endpoint({FUNCTION: {"timeout_s": 30}}) as ep:
        aws.setenv("AWS_ENDPOINT_URL_LAMBDA", ep.url)
        t0 = time.monotonic()
        with pytest.raises(JobFailed, match=f"can the function reach --public-address {dead}"):
            run_lambda_job(tmp_path, ep, chunks_for(2), public=dead, connect_deadline_s=4.0)
        assert time.monotonic() - t0 < 90   # a hang-catcher (under the job's 120 s timeout)
        for run in list(ep.runs):
            run.done.wait(20)
        assert ep.runs and all(r.summary and not r.summary["ok"] and "coordinator gone" in r.summary["reason"]
                               for r in ep.runs), [(r.summary, r.stderr[-300:]) for r in ep.runs]


# -- the command line ----------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
CLIP = str(ROOT / "tests" / "data" / "clips" / "foreman_qcif_176x144_10f.y4m")
SHIPPED = "/tmp/excamera-shipped-cache"  # kept between runs: numba recompiles only what changed


def excamera(*args, env=None, timeout=300):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "excamera", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=timeout)


def one_line_error(p, text):
    assert p.returncode == 1, (p.returncode, p.stderr[-2000:])
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("excamera: error: ") and text in lines[0], p.stderr


@pytest.fixture(scope="module")
def shipped_cache():
    """What the image's warm-up step ships: the kernels compiled into a cache directory."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, NUMBA_CACHE_DIR=SHIPPED)
    env.pop("NUMBA_CPU_NAME", None)
    env.pop("NUMBA_CPU_FEATURES", None)
    subprocess.run([sys.executable, "-m", "awslambda.warmup"], env=env, cwd=ROOT, check=True, timeout=900,
                   capture_output=True)
    return SHIPPED


@pytest.mark.slow
def test_encode_on_lambda_same_bytes_as_in_process_no_compile_in_sandboxes(tmp_path, aws, shipped_cache):
    import os

    ref, out, tl = tmp_path / "ref.ivf", tmp_path / "lambda.ivf", tmp_path / "t.json"
    p = excamera("encode", CLIP, "-o", ref, "--chunk-frames", 2, "--workers", 0)
    assert p.returncode == 0, p.stderr
    with Endpoint({FUNCTION: {"timeout_s": 300, "memory_mb": 2048}},
                  env={"NUMBA_CACHE_DIR": None, "NUMBA_CPU_NAME": None, "NUMBA_CPU_FEATURES": None},
                  runner_args=("--shipped-cache", shipped_cache, "--fresh-tmp")) as ep:
        env = dict(os.environ, AWS_ENDPOINT_URL_LAMBDA=ep.url)
        p = excamera("encode", CLIP, "-o", out, "--chunk-frames", 2, "--workers", 2, "--backend", "lambda",
                     "--function", FUNCTION, "--region", "us-east-1,eu-west-1", "--public-address", "127.0.0.1:0",
                     "--listen", "127.0.0.1:0", "--memory", 2048, "--timeline", tl, env=env, timeout=600)
        for run in list(ep.runs):
            run.done.wait(30)
        runs = list(ep.runs)
    assert p.returncode == 0, (p.stderr[-2000:], "\n".join(json.dumps(r.summary) + r.stderr[-1000:] for r in runs[:4]))
    assert out.read_bytes() == ref.read_bytes()
    assert "cost: " in p.stderr and "Lambda invocation" in p.stderr
    cost = json.loads(tl.read_text())["cost"]
    assert cost["invocations"] == len(runs) and cost["memory_mb"] == 2048
    served = [r.summary for r in runs if r.summary and r.summary["commands"]]
    assert len(served) >= 1
    from codec import aot

    for s in served:  # the sandboxes found every kernel in the shipped cache, or compiled ones
        assert s["cache_files_added"] == 0, s.get("cache_added")
        # where this process loaded a compiled module, the handler (same tree) loaded it too
        assert s["compiled_kernels"] == aot.CPU, s
    cold = sorted(s["first_command_s"] + s["process_to_handler_s"] for s in served)
    print(f"\ncold start (process start to first command): {cold}")


def test_cli_backend_usage_and_errors(tmp_path, aws):
    out = tmp_path / "o.ivf"
    p = excamera("encode", CLIP, "-o", out, "--workers", 1, "--backend", "lambda")
    assert p.returncode == 2 and "--backend lambda needs --function" in p.stderr
    p = excamera("encode", CLIP, "-o", out, "--workers", 1, "--backend", "lambda", "--function", "f")
    assert p.returncode == 2 and "--public-address" in p.stderr
    p = excamera("encode", CLIP, "-o", out, "--workers", 1, "--function", "f")
    assert p.returncode == 2 and "--function goes with --backend lambda" in p.stderr
    with Endpoint({FUNCTION: {}}) as ep:
        import os

        env = dict(os.environ, AWS_ENDPOINT_URL_LAMBDA=ep.url)
        t0 = time.monotonic()
        p = excamera("encode", CLIP, "-o", out, "--workers", 1, "--chunk-frames", 5, "--backend", "lambda",
                     "--function", "nope", "--region", "us-east-1", "--public-address", "127.0.0.1:0",
                     "--listen", "127.0.0.1:0", env=env)
        assert time.monotonic() - t0 < 150   # a hang-catcher
        one_line_error(p, "lambda function nope in us-east-1: ResourceNotFoundException")
        assert not out.exists() and not ep.runs
    certs = tmp_path / "certs"
    assert excamera("certs", "init", certs).returncode == 0
    p = excamera("coordinator", "serve", "--listen", "127.0.0.1:0", "--certs", certs, "--backend", "lambda",
                 "--function", "f", "--region", "us-east-1", "--public-address", "203.0.113.7:7000")
    one_line_error(p, "server.pem does not name 203.0.113.7")


def test_lambda_deploy_against_motos_lambda_api(tmp_path, aws):
    """Create, then update, against moto's Lambda API on loopback (no docker: image functions are
    created and read back). moto keeps EphemeralStorage and an existing event-invoke config as
    first set on update, so those are checked after create only."""
    import os

    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        url = f"http://{host}:{port}"
        role = boto3.client("iam", endpoint_url=url).create_role(
            RoleName="excamera-worker", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        env = dict(os.environ, AWS_ENDPOINT_URL_LAMBDA=url)
        image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/excamera-worker:1"
        p = excamera("lambda", "deploy", "--function", FUNCTION, "--role", role, "--image", image, "--memory", 2048,
                     "--timeout", 300, "--ephemeral-mb", 4096, "--max-event-age", 90, "--region", "us-east-1", env=env)
        assert p.returncode == 0 and "created" in p.stderr, p.stderr
        lam = boto3.client("lambda", endpoint_url=url, region_name="us-east-1")
        conf = lam.get_function(FunctionName=FUNCTION)["Configuration"]
        assert (conf["PackageType"], conf["MemorySize"], conf["Timeout"], conf["EphemeralStorage"]["Size"],
                conf["State"]) == ("Image", 2048, 300, 4096, "Active")
        inv = lam.get_function_event_invoke_config(FunctionName=FUNCTION)
        assert (inv["MaximumRetryAttempts"], inv["MaximumEventAgeInSeconds"]) == (0, 90)
        p = excamera("lambda", "deploy", "--function", FUNCTION, "--role", role, "--image", image[:-1] + "2",
                     "--memory", 4096, "--timeout", 600, "--region", "us-east-1", env=env)
        assert p.returncode == 0 and "updated" in p.stderr, p.stderr
        got = lam.get_function(FunctionName=FUNCTION)
        assert (got["Configuration"]["MemorySize"], got["Configuration"]["Timeout"]) == (4096, 600)
        assert got["Code"]["ImageUri"].endswith(":2")
        p = excamera("lambda", "deploy", "--function", "bad", "--role", "not-an-arn", "--image", image,
                     "--region", "us-east-1", env=env)
        one_line_error(p, "lambda deploy bad: ")
    finally:
        server.stop()


def test_lambda_package_writes_a_build_context(tmp_path):
    out = tmp_path / "ctx"
    p = excamera("lambda", "package", "-o", out)
    assert p.returncode == 0, p.stderr
    docker = (out / "Dockerfile").read_text()
    assert docker.startswith("# The excamera worker") and "FROM public.ecr.aws/lambda/python:3.12" in docker
    assert "python -m awslambda.warmup" in docker and "/opt/excamera/numba-cache" in docker
    assert "python -m excamera.aot_build --cpu haswell" in docker  # codec.aot.PORTABLE's
    assert 'CMD ["awslambda.handler.handler"]' in docker
    reqs = (out / "requirements.txt").read_text().split()
    names = {r.split("==")[0] for r in reqs}
    assert all("==" in r for r in reqs) and {"numba", "numpy", "av", "grpcio", "boto3"} <= names
    assert not names & {"pytest", "moto", "flask"}
    (wheel,) = list((out / "wheels").iterdir())
    import zipfile

    members = zipfile.ZipFile(wheel).namelist()
    assert "awslambda/handler.py" in members and "awslambda/launcher.py" in members
    assert {"storage/s3.py", "security/tls.py", "media/video.py"} <= set(members)
    assert not any(m.startswith("tests/") or m.endswith((".nbi", ".nbc")) for m in members)
    p = excamera("lambda", "package", "-o", out)
    one_line_error(p, "not empty")


def test_local_jobs_report_cpu_seconds(tmp_path):
    chunks = chunks_for(3, 9)
    r = run_job(shaped_job(3, state_bytes=20_000, work_s=0.2), RunConfig(workers=2, storage=str(tmp_path),
                                                                         timeout_s=120), inputs=shaped_inputs(chunks))
    cost = r.timeline["cost"]
    assert cost["backend"] == "local" and cost["processes"] >= 1 and cost["cpu_seconds"] > 0
    from coordinator.cost import describe

    assert describe(cost).startswith("cost: ") and "CPU-seconds" in describe(cost)


def test_prices_are_overridable(monkeypatch):
    from coordinator.cost import lambda_cost

    base = lambda_cost(10, [1.0] * 10, 1024)
    assert base["invocations"] == 10 and base["gb_seconds"] == pytest.approx(15.0)
    monkeypatch.setenv("EXCAMERA_PRICES", json.dumps({"lambda_gb_second": 1.0, "lambda_request": 0.0}))
    assert lambda_cost(10, [1.0] * 10, 1024)["usd_estimate"] == pytest.approx(15.0)


def test_launch_returns_at_once_and_every_event_is_accepted(aws):
    """1000 workers: launch() hands them to a thread (the coordinator's loop is not held): it
    returns while the endpoint is not yet answering (its socket listens, nothing accepts), so no
    invocation can have been made; once it answers, every invocation is accepted (the endpoint
    keeps the events and runs no handler)."""
    ep = Endpoint({FUNCTION: {}}, run=False)
    aws.setenv("AWS_ENDPOINT_URL_LAMBDA", ep.url)
    launcher = LambdaLauncher(tls.generate(), FUNCTION, ["us-east-1", "us-west-2"], concurrency=32)
    launcher.coordinator = "203.0.113.10:7000"
    t0 = time.monotonic()
    launcher.launch("job-a", [(f"w{i}", "t" * 43) for i in range(1000)])
    # (generous: waiting on even one invocation would take its 10 s connect timeout, or longer)
    assert time.monotonic() - t0 < 5
    assert launcher.accepted["job-a"] == 0 and ep.accepted == 0
    with ep:
        deadline = time.monotonic() + 120
        while launcher.accepted["job-a"] < 1000 and time.monotonic() < deadline:
            time.sleep(0.02)
        asyncio.run(launcher.stop())
    assert launcher.accepted["job-a"] == 1000 and launcher.reap() == [] and launcher.errors() == []
    ids = sorted(json.loads(e)["worker_id"] for e in ep.events)
    assert ids == sorted(f"w{i}" for i in range(1000))  # each worker once
    assert len({json.loads(e)["client_pem"] for e in ep.events}) == 1  # one certificate for the job


def test_coordinator_serve_with_lambda_workers(tmp_path, aws):
    """`excamera coordinator serve --backend lambda`: a job submitted over the Jobs service runs on
    handler processes started by the local endpoint; SIGTERM, exit 0."""
    import os
    import signal
    import subprocess
    import sys

    from coordinator.api import run_job

    certs, client = tmp_path / "certs", tmp_path / "client"
    assert excamera("certs", "init", certs).returncode == 0
    client.mkdir()
    for name in ("ca.pem", "client.pem", "client.key"):
        (client / name).write_bytes((certs / name).read_bytes())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    chunks = chunks_for(3, 11)
    with Endpoint({FUNCTION: {"timeout_s": 60}}) as ep:
        env = dict(os.environ, AWS_ENDPOINT_URL_LAMBDA=ep.url)
        coord = subprocess.Popen([sys.executable, "-m", "excamera", "coordinator", "serve", "--listen",
                                  f"127.0.0.1:{port}", "--certs", str(certs), "--storage", str(tmp_path / "store"),
                                  "--keep", "--backend", "lambda", "--function", FUNCTION, "--region", "us-east-1",
                                  "--public-address", f"127.0.0.1:{port}"],
                                 cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 30
            while True:
                assert coord.poll() is None, coord.stderr.read()
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        break
                assert time.monotonic() < deadline
                time.sleep(0.1)
            r = run_job(shaped_job(3, state_bytes=5000, work_s=0.3),
                        RunConfig(RemoteCoordinator(f"127.0.0.1:{port}", str(client)), workers=2),
                        inputs=shaped_inputs(chunks))
            (ref,) = r.objects[""].values()
            assert (tmp_path / "store" / r.storage_prefix / ref.key).read_bytes() == reference_output(chunks, 5000)
            assert any(run.summary and run.summary["commands"] for run in ep.runs if run.done.wait(20))
        finally:
            coord.send_signal(signal.SIGTERM)
            code = coord.wait(timeout=30)
    assert code == 0
    assert "Lambda invocation(s)" in coord.stderr.read()  # the job's cost, in the daemon's log


def test_no_credentials_fails_the_job_in_one_line(tmp_path, aws):
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        aws.delenv(k, raising=False)
    aws.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    aws.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with Endpoint({FUNCTION: {}}) as ep:
        aws.setenv("AWS_ENDPOINT_URL_LAMBDA", ep.url)
        t0 = time.monotonic()
        with pytest.raises(JobFailed, match="no AWS credentials found"):
            run_lambda_job(tmp_path, ep, chunks_for(2))
        assert time.monotonic() - t0 < 90 and not ep.runs   # a hang-catcher (under the job's 120 s timeout)


def test_a_late_event_for_a_finished_job_is_refused_at_once(tmp_path):
    """An invocation that arrives after its job ended (an unspent token) is refused; the handler
    returns at once, having run nothing."""
    from awslambda.handler import handler

    chunks = chunks_for(2, 6)

    async def go():
        async with embedded_coordinator(str(tmp_path)) as c:
            job_id, _ = await c.submit(shaped_job(2, state_bytes=1000), inputs=shaped_inputs(chunks), workers=1)
            outcome = await asyncio.wait_for(c.wait(job_id), 60)
            (wid, token), = c.worker_tokens(job_id, 1)  # a token nobody has used
            pem, key = tls.issue_client(c.bundle, 120, label=job_id)
            event = json.loads(make_event(coordinator=c.address, job_id=job_id, worker_id=wid, worker_token=token,
                                          ca_pem=c.bundle.ca_pem, client_pem=pem, client_key=key))
            t0 = time.monotonic()
            summary = await asyncio.to_thread(handler, event, None)
            return outcome, summary, time.monotonic() - t0

    outcome, summary, took = asyncio.run(go())
    assert outcome.status == "succeeded"
    assert summary["refused"] and summary["commands"] == 0 and "is succeeded" in summary["reason"], summary
    assert took < 45   # a hang-catcher


def test_an_expired_job_certificate_is_refused_in_the_handshake(tmp_path):
    from awslambda.handler import handler

    async def go():
        async with embedded_coordinator(str(tmp_path), launch_workers=False) as c:
            job_id, _ = await c.submit(shaped_job(1, state_bytes=100), inputs=shaped_inputs([b"x"]), workers=1,
                                       launch=False)
            (wid, token), = c.worker_tokens(job_id, 1)
            pem, key = tls.issue_client(c.bundle, 1, label=job_id)
            await asyncio.sleep(2.5)
            event = json.loads(make_event(coordinator=c.address, job_id=job_id, worker_id=wid, worker_token=token,
                                          ca_pem=c.bundle.ca_pem, client_pem=pem, client_key=key))
            summary = await asyncio.to_thread(handler, event, None)
            return summary, wid in c.handles[job_id].connected

    summary, connected = asyncio.run(go())
    assert not summary["ok"] and summary["commands"] == 0 and not connected, summary
    assert summary["reason"].startswith("coordinator gone: UNAVAILABLE"), summary  # the TLS handshake failed


def test_cli_unreachable_public_address_is_one_line_within_seconds(tmp_path, aws):
    """Workers that cannot dial --public-address: the job fails once --connect-deadline passes
    with no worker connected, in one line naming the address; no output."""
    import os

    out = tmp_path / "o.ivf"
    with Endpoint({FUNCTION: {"timeout_s": 60}}) as ep:
        env = dict(os.environ, AWS_ENDPOINT_URL_LAMBDA=ep.url)
        t0 = time.monotonic()
        p = excamera("encode", CLIP, "-o", out, "--workers", 1, "--chunk-frames", 5, "--backend", "lambda",
                     "--function", FUNCTION, "--region", "us-east-1", "--public-address", "127.0.0.1:1",
                     "--listen", "127.0.0.1:0", "--connect-deadline", 4, env=env, timeout=120)
        elapsed = time.monotonic() - t0
        for run in list(ep.runs):
            run.done.wait(30)
    one_line_error(p, "--public-address 127.0.0.1:1")
    assert elapsed < 90 and not out.exists(), elapsed   # (a hang-catcher: the deadline is 4 s)
