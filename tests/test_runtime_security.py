"""Mutual TLS, per-worker and per-task tokens, and bad input, against a real in-process
coordinator and rendezvous on loopback (workers run in-process as asyncio tasks)."""

import asyncio
import hashlib
import logging
import zlib

import grpc
import pytest

from coordinator.api import embedded_coordinator
from coordinator.fsm import DONE, FSM, Job, State, Task
from security import tls, tokens
from protos import coordinator_pb2 as cpb
from protos import coordinator_pb2_grpc as cpb_grpc
from protos import rendezvous_pb2 as rpb
from protos import rendezvous_pb2_grpc as rpb_grpc
from rendezvous.client import MessageError, RendezvousClient, decode
from worker.runtime import run_worker

ECHO_JOB = Job("echo", (FSM("e", "a", (State("a", "echo", {"text": "${task_id}"}, {"ok": DONE}),)),),
               (Task("t0", "e"),))


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def md(job, worker, token):
    return (("x-excamera-job", job), ("x-excamera-worker", worker), ("x-excamera-token", token))


def wmd(c, job):
    """Metadata of a new worker of ``job``, with its own token (as the launcher gives one)."""
    (wid, token), = c.worker_tokens(job, 1)
    return md(job, wid, token)


def tmd(c, job, task="t0"):
    """Metadata of a caller acting as ``task`` at the rendezvous, with that task's token (as a
    command hands it to the worker running the task)."""
    return md(job, task, tokens.task_token(c.handles[job].task_key, task))


async def coordinator_call(address, creds, metadata):
    async with grpc.aio.secure_channel(address, creds) as ch:
        call = cpb_grpc.CoordinatorStub(ch).Work(metadata=metadata, timeout=10)
        await call.write(cpb.WorkerMessage(hello=cpb.Hello(name="test")))
        return await call.read()


async def rendezvous_release(address, creds, metadata, recipient="t0"):
    async with grpc.aio.secure_channel(address, creds) as ch:
        return await rpb_grpc.RendezvousStub(ch).Release(rpb.ReleaseRequest(recipient=recipient),
                                                         metadata=metadata, timeout=10)


def with_servers(tmp_path, body):
    """Run ``await body(coordinator, job_a, key_a, job_b, key_b)`` against a fresh embedded
    coordinator and rendezvous, all on one event loop (grpc.aio wants one loop per process)."""

    async def go():
        async with embedded_coordinator(str(tmp_path), launch_workers=False) as c:
            a = await c.submit(ECHO_JOB, launch=False)
            b = await c.submit(ECHO_JOB, launch=False)
            return await body(c, a[0], a[1], b[0], b[1])

    return run(go())


async def refused(coro):
    """The status code a call that must fail failed with."""
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await coro
    return e.value.code()


def test_right_credentials_work(tmp_path):
    async def body(c, job, key, *_):
        creds = tls.client_credentials(c.bundle.for_worker())
        first = await coordinator_call(c.address, creds, wmd(c, job))
        assert first.WhichOneof("kind") == "welcome" and first.welcome.job_id == job
        assert (await rendezvous_release(c.rendezvous_address, creds, tmd(c, job))).dropped == 0
        # the submitter mints worker tokens from the job key (workers of its own)
        first = await coordinator_call(c.address, creds, md(job, "mine-1", tokens.worker_token(key, "mine-1")))
        assert first.WhichOneof("kind") == "welcome"

    with_servers(tmp_path, body)


def test_no_client_certificate_refused(tmp_path):
    async def body(c, job, *_):
        creds = grpc.ssl_channel_credentials(root_certificates=c.bundle.ca_pem)
        assert await refused(coordinator_call(c.address, creds, wmd(c, job))) == grpc.StatusCode.UNAVAILABLE
        assert await refused(rendezvous_release(c.rendezvous_address, creds, tmd(c, job))) == grpc.StatusCode.UNAVAILABLE

    with_servers(tmp_path, body)


def test_other_cas_certificate_refused(tmp_path):
    async def body(c, job, *_):
        other = tls.generate()
        creds = grpc.ssl_channel_credentials(root_certificates=c.bundle.ca_pem, private_key=other.client_key,
                                             certificate_chain=other.client_pem)
        assert await refused(coordinator_call(c.address, creds, wmd(c, job))) == grpc.StatusCode.UNAVAILABLE
        assert await refused(rendezvous_release(c.rendezvous_address, creds, tmd(c, job))) == grpc.StatusCode.UNAVAILABLE

    with_servers(tmp_path, body)


def test_insecure_channel_refused(tmp_path):
    async def body(c, job, *_):
        async def go():
            async with grpc.aio.insecure_channel(c.address) as ch:
                call = cpb_grpc.CoordinatorStub(ch).Work(metadata=wmd(c, job), timeout=5)
                await call.write(cpb.WorkerMessage(hello=cpb.Hello(name="x")))
                return await call.read()

        assert await refused(go()) == grpc.StatusCode.UNAVAILABLE

    with_servers(tmp_path, body)


def test_other_jobs_token_refused(tmp_path, caplog):
    async def body(c, job_a, key_a, job_b, key_b):
        creds = tls.client_credentials(c.bundle.for_worker())
        (wid_b, tok_b), = c.worker_tokens(job_b, 1)
        task_b = tokens.task_token(c.handles[job_b].task_key, "t0")
        for job, wid, token in ((job_a, wid_b, tok_b), (job_a, "w1", "x"), ("no-such-job", wid_b, tok_b),
                                (job_a, wid_b, key_a), (job_a, "", tok_b)):
            assert await refused(coordinator_call(c.address, creds, md(job, wid, token))) == grpc.StatusCode.PERMISSION_DENIED
        for job, task, token in ((job_a, "t0", task_b), (job_a, "t0", "x"), ("no-such-job", "t0", task_b),
                                 (job_a, "t0", key_a), (job_a, "t0", tok_b)):
            assert await refused(rendezvous_release(c.rendezvous_address, creds, md(job, task, token))) \
                == grpc.StatusCode.PERMISSION_DENIED

    with caplog.at_level(logging.WARNING):
        with_servers(tmp_path, body)
    assert "coordinator: refused a worker" in caplog.text and "rendezvous: refused Release" in caplog.text


def test_worker_token_is_for_one_worker_and_one_connection(tmp_path, caplog):
    """A worker can connect only as the worker id its token was issued for, and only once."""
    async def body(c, job, *_):
        creds = tls.client_credentials(c.bundle.for_worker())
        (wa, ta), (wb, tb) = c.worker_tokens(job, 2)
        # worker b presenting a's id with its own token: refused
        assert await refused(coordinator_call(c.address, creds, md(job, wa, tb))) == grpc.StatusCode.PERMISSION_DENIED
        async with grpc.aio.secure_channel(c.address, creds) as ch:
            call = cpb_grpc.CoordinatorStub(ch).Work(metadata=md(job, wa, ta), timeout=10)
            await call.write(cpb.WorkerMessage(hello=cpb.Hello(name="a")))
            assert (await call.read()).welcome.worker_id == wa  # the coordinator's name is the token's id
            # a second stream as a, with a's own token, while a is connected: refused
            assert await refused(coordinator_call(c.address, creds, md(job, wa, ta))) == grpc.StatusCode.ALREADY_EXISTS
            await call.done_writing()
        await asyncio.sleep(0.3)
        # ... and after a has gone too: a token is good for one connection
        assert await refused(coordinator_call(c.address, creds, md(job, wa, ta))) == grpc.StatusCode.ALREADY_EXISTS

    with caplog.at_level(logging.WARNING):
        with_servers(tmp_path, body)
    assert "has connected already" in caplog.text


def test_result_from_a_token_not_bound_to_the_tasks_worker_refused(tmp_path, caplog):
    """Worker b (its own valid token) answers the command worker a was given: the coordinator
    refuses it and the task waits for a, whose result then completes the job."""
    async def body(c, *_):
        job, _ = await c.submit(ECHO_JOB, launch=False)
        creds = tls.client_credentials(c.bundle.for_worker())
        async with grpc.aio.secure_channel(c.address, creds) as ch_a, \
                grpc.aio.secure_channel(c.address, creds) as ch_b:
            a = cpb_grpc.CoordinatorStub(ch_a).Work(metadata=wmd(c, job), timeout=20)
            await a.write(cpb.WorkerMessage(hello=cpb.Hello(name="a")))
            await a.read()                      # welcome
            cmd = (await a.read()).command      # the only task goes to a
            assert cmd.task_id == "t0" and cmd.task_token == tokens.task_token(c.handles[job].task_key, "t0")
            b = cpb_grpc.CoordinatorStub(ch_b).Work(metadata=wmd(c, job), timeout=20)
            await b.write(cpb.WorkerMessage(hello=cpb.Hello(name="b")))
            await b.read()                      # welcome
            forged = cpb.Result(seq=cmd.seq, task_id=cmd.task_id, ok=True)
            forged.outputs["text"].str_value = "forged"
            await b.write(cpb.WorkerMessage(result=forged))
            for _ in range(100):
                if c.engine.rejected:
                    break
                await asyncio.sleep(0.05)
            assert c.engine.jobs[job].tasks["t0"].status == "running"  # nothing moved
            good = cpb.Result(seq=cmd.seq, task_id=cmd.task_id, ok=True)
            good.outputs["text"].str_value = "t0"
            await a.write(cpb.WorkerMessage(result=good))
            out = await asyncio.wait_for(c.wait(job), 10)
            for call in (a, b):
                await call.done_writing()
        assert out.status == "succeeded"
        assert c.engine.jobs[job].tasks["t0"].winner.outputs["a"] == {"text": "t0"}
        assert any("result for a task not given" in r for r in c.engine.rejected)

    with caplog.at_level(logging.ERROR, logger="excamera.coordinator"):
        with_servers(tmp_path, body)


def test_rendezvous_worker_acts_only_as_its_task(tmp_path, caplog):
    """With t0's token a worker sends as t0 and reads t0's mailbox, and nothing else."""
    async def body(c, job, *_):
        creds = tls.client_credentials(c.bundle.for_worker())
        tkey = c.handles[job].task_key
        async with grpc.aio.secure_channel(c.rendezvous_address, creds) as ch:
            t0 = RendezvousClient(ch, job, "t0", tokens.task_token(tkey, "t0"))
            t1 = RendezvousClient(ch, job, "t1", tokens.task_token(tkey, "t1"))
            assert await t1.send("t1", "t0", "state", b"for t0") is True
            # t0 sending as t1 (a forged sender), reading t1's mailbox, releasing it: refused
            for call in (t0.send("t1", "t2", "state", b"forged"), t0.receive("t1", "t0", "x", timeout_s=1),
                         t0.release("t1")):
                assert await refused(call) == grpc.StatusCode.PERMISSION_DENIED
            # a token for t1 presented as t0: refused
            liar = RendezvousClient(ch, job, "t0", tokens.task_token(tkey, "t1"))
            assert await refused(liar.receive("t0", "t1", "state", timeout_s=1)) == grpc.StatusCode.PERMISSION_DENIED
            assert await t0.receive("t0", "t1", "state", timeout_s=5) == b"for t0"

    with caplog.at_level(logging.WARNING, logger="excamera.rendezvous"):
        with_servers(tmp_path, body)
    for what in ("may not send as 't1'", "may not receive messages for 't1'", "may not release messages for 't1'"):
        assert what in caplog.text


def test_only_the_coordinator_opens_jobs(tmp_path):
    async def body(c, *_):
        async with grpc.aio.secure_channel(c.rendezvous_address, tls.client_credentials(c.bundle)) as ch:
            stub = rpb_grpc.RendezvousStub(ch)
            assert await refused(stub.OpenJob(rpb.OpenJobRequest(job_id="evil", task_key=bytes(32)))) \
                == grpc.StatusCode.PERMISSION_DENIED
            assert await refused(stub.CloseJob(rpb.CloseJobRequest(job_id="evil"))) == grpc.StatusCode.PERMISSION_DENIED

    with_servers(tmp_path, body)


def test_workers_get_no_private_server_key():
    b = tls.generate()
    w = b.for_worker()
    assert w.server_key == b"" and w.ca_key == b"" and w.client_key == b.client_key


async def _send_raw(address, creds, metadata, envelopes):
    async with grpc.aio.secure_channel(address, creds) as ch:
        return await rpb_grpc.RendezvousStub(ch).Send(iter(envelopes), metadata=metadata, timeout=10)


def header(size, wire=None, sha=None, **kw):
    return rpb.Header(sender="a", recipient="b", tag="state", size=size,
                      wire_size=size if wire is None else wire, sha256=sha or "0" * 64, **kw)


def test_malformed_and_oversized_messages_refused(tmp_path, caplog):
    cases = [
        ([rpb.Envelope(chunk=b"x")], grpc.StatusCode.INVALID_ARGUMENT, "no header"),
        ([rpb.Envelope(header=header(3), chunk=b"toolong")], grpc.StatusCode.INVALID_ARGUMENT, "more bytes"),
        ([rpb.Envelope(header=header(9), chunk=b"short")], grpc.StatusCode.INVALID_ARGUMENT, "5 bytes arrived"),
        ([rpb.Envelope(header=header(1, sha="zz"), chunk=b"x")], grpc.StatusCode.INVALID_ARGUMENT, "sha256"),
        ([rpb.Envelope(header=header(1 << 40), chunk=b"")], grpc.StatusCode.RESOURCE_EXHAUSTED, "message cap"),
        # one gRPC message over the server's limit: refused by gRPC itself
        ([rpb.Envelope(header=header(3 << 20), chunk=b"x" * (2 << 20))], grpc.StatusCode.RESOURCE_EXHAUSTED, ""),
    ]

    async def body(c, job, *_):
        creds = tls.client_credentials(c.bundle.for_worker())
        m = tmd(c, job, "a")
        for envs, code, text in cases:
            caplog.clear()
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await _send_raw(c.rendezvous_address, creds, m, envs)
            assert e.value.code() == code, (text, e.value)
            if text:
                assert text in e.value.details() and text in caplog.text

        async def garbage():  # not a protobuf at all
            async with grpc.aio.secure_channel(c.rendezvous_address, creds) as ch:
                call = ch.unary_unary("/excamera.rendezvous.Rendezvous/Release",
                                      request_serializer=lambda b: b, response_deserializer=lambda b: b)
                return await call(b"\xff\xff\xff\xff garbage", metadata=m, timeout=10)

        assert await refused(garbage()) != grpc.StatusCode.OK
        # ... and the rendezvous still serves
        assert (await rendezvous_release(c.rendezvous_address, creds, m, "a")).dropped == 0

    with caplog.at_level(logging.WARNING, logger="excamera.rendezvous"):
        with_servers(tmp_path, body)


def test_receiver_checks_what_arrives():
    body = b"state" * 100
    h = rpb.Header(sender="a", recipient="b", tag="t", size=len(body), compression=rpb.ZLIB,
                   sha256=hashlib.sha256(body).hexdigest())
    assert decode(h, zlib.compress(body)) == body
    with pytest.raises(MessageError, match="corrupt zlib"):
        decode(h, b"not zlib")
    with pytest.raises(MessageError, match="more"):
        decode(h, zlib.compress(body + b"bomb" * 1000))
    h2 = rpb.Header(sender="a", recipient="b", tag="t", size=len(body), sha256="0" * 64)
    with pytest.raises(MessageError, match="sha256"):
        decode(h2, body)


def test_relay_round_trip_compressed_and_keep(tmp_path):
    state = b"\x00" * (3 << 20) + bytes(range(256)) * 4096  # 4 MiB, compressible, several chunks

    async def body(c, job, *_):
        creds = tls.client_credentials(c.bundle.for_worker())
        async with grpc.aio.secure_channel(c.rendezvous_address, creds) as ch:
            tkey = c.handles[job].task_key
            r = RendezvousClient(ch, job, "t1", tokens.task_token(tkey, "t1"))
            s = RendezvousClient(ch, job, "t0", tokens.task_token(tkey, "t0"))
            waiting = asyncio.ensure_future(r.receive("t1", "t0", "state", timeout_s=10, keep=True))
            await asyncio.sleep(0.1)  # the receiver is waiting before the sender sends
            assert await s.send("t0", "t1", "state", state) is True
            assert await s.send("t0", "t1", "state", state) is False  # duplicate dropped
            assert await waiting == state
            assert await r.receive("t1", "t0", "state", timeout_s=1) == state  # kept, now taken
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await r.receive("t1", "t0", "state", timeout_s=0.2)
            assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert c._rendezvous_server.servicer.relayed_bytes < len(state) // 4  # it went compressed

    with_servers(tmp_path, body)


async def _run_with_workers(c, job, workers=1):
    """Submit ``job``, run in-process workers until it ends; the outcome."""
    job_id, _ = await c.submit(job, launch=False)
    bundle = c.bundle.for_worker()
    ws = [asyncio.ensure_future(run_worker(c.address, bundle, job_id, wid, token))
          for wid, token in c.worker_tokens(job_id, workers)]
    out = await c.wait(job_id)
    await asyncio.gather(*ws)
    return out


def test_unknown_operation_fails_the_job_clearly(tmp_path):
    job = Job("bad", (FSM("f", "a", (State("a", "no-such-op", {}, {"ok": DONE}),)),), (Task("t0", "f"),))

    async def body(c, *_):
        out = await _run_with_workers(c, job)
        assert out.status == "failed" and "unknown operation 'no-such-op'" in out.error

    with_servers(tmp_path, body)


def test_storage_key_escaping_prefix_fails_the_task(tmp_path):
    job = Job("esc", (FSM("f", "a", (State("a", "hash-object", {"key": "../other/secret"}, {"ok": DONE}),)),),
              (Task("t0", "f"),))

    async def body(c, *_):
        c.storage.put("jobs/other/secret", b"secret")
        out = await _run_with_workers(c, job)
        assert out.status == "failed" and "escapes the prefix" in out.error

    with_servers(tmp_path, body)


def test_hello_first_and_results_for_tasks_not_given(tmp_path, caplog):
    async def body(c, job, *_):
        creds = tls.client_credentials(c.bundle.for_worker())

        async def no_hello():
            async with grpc.aio.secure_channel(c.address, creds) as ch:
                call = cpb_grpc.CoordinatorStub(ch).Work(metadata=wmd(c, job), timeout=10)
                await call.write(cpb.WorkerMessage(result=cpb.Result(seq=1)))
                return await call.read()

        assert await refused(no_hello()) == grpc.StatusCode.INVALID_ARGUMENT

        async with grpc.aio.secure_channel(c.address, creds) as ch:
            call = cpb_grpc.CoordinatorStub(ch).Work(metadata=wmd(c, job), timeout=10)
            await call.write(cpb.WorkerMessage(hello=cpb.Hello(name="liar")))
            await call.read()  # welcome
            cmd = (await call.read()).command  # its task
            await call.write(cpb.WorkerMessage(result=cpb.Result(seq=cmd.seq + 100, task_id=cmd.task_id, ok=True)))
            bad = cpb.Result(seq=cmd.seq, task_id=cmd.task_id, ok=True)
            bad.outputs["x"].SetInParent()  # a Value with nothing in it
            await call.write(cpb.WorkerMessage(result=bad))
            for _ in range(100):
                if len(c.engine.rejected) >= 2:
                    break
                await asyncio.sleep(0.05)
            await call.done_writing()
        assert any("result for a task not given" in r for r in c.engine.rejected)
        assert any("malformed result" in r for r in c.engine.rejected)

    with caplog.at_level(logging.ERROR, logger="excamera.coordinator"):
        with_servers(tmp_path, body)
    assert "result for a task not given" in caplog.text
