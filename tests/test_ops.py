"""worker.ops: the registry's argument and output checks, and the built-in operations."""

import asyncio
import hashlib

import pytest

from storage import LocalStorage, ObjectRef, StorageError
from worker import fakecodec
from worker.ops import DEFAULT, OpContext, OperationError, Registry, UnknownOperation, expand


def ctx(tmp_path, **kw):
    return OpContext("j", "t0", 1, LocalStorage(tmp_path).scoped("jobs/j"), **kw)


def call(name, c, **args):
    return asyncio.run(DEFAULT.call(name, c, args))


def test_registry_checks_arguments(tmp_path):
    c = ctx(tmp_path)
    with pytest.raises(UnknownOperation, match="unknown operation 'rm -rf'"):
        call("rm -rf", c)
    with pytest.raises(OperationError, match="unknown argument\\(s\\) bogus"):
        call("echo", c, text="x", bogus=1)
    with pytest.raises(OperationError, match="missing argument text"):
        call("echo", c)
    with pytest.raises(OperationError, match="argument text must be str, got int"):
        call("echo", c, text=3)
    with pytest.raises(OperationError, match="argument size must be int, got bool"):
        call("make-state", c, into="s", size=True, seed="x")
    with pytest.raises(OperationError, match="keys must be list\\[str\\]"):
        call("concat", c, keys="a", output="o")
    assert call("sleep", c, seconds=0) == {}  # int accepted for float
    assert call("echo", c, text="hi") == {"text": "hi", "outcome": "ok"}


def test_registration_rules():
    r = Registry()

    def positional(ctx, a: int):
        return {}

    def untyped(ctx, *, a):
        return {}

    def bad_type(ctx, *, a: dict):
        return {}

    for fn in (positional, untyped, bad_type):
        with pytest.raises(TypeError):
            r.register("x", fn)

    def ok(ctx, *, a: int, b: list[str] = ()):
        return {"bad": object()}

    r.register("ok", ok)
    with pytest.raises(ValueError, match="already registered"):
        r.register("ok", lambda ctx: None)
    with pytest.raises(OperationError, match="output 'bad' has type object"):
        asyncio.run(r.call("ok", None, {"a": 1}))


def test_storage_ops(tmp_path):
    c = ctx(tmp_path)
    out = call("make-object", c, key="in/a", size=1000, seed="s")
    data = expand(b"s", 1000)
    assert out["object"] == ObjectRef("in/a", hashlib.sha256(data).hexdigest(), 1000)
    assert call("hash-object", c, key="in/a") == {"sha256": hashlib.sha256(data).hexdigest(), "size": 1000}
    c.storage.put("in/b", b"tail")
    out = call("concat", c, keys=["in/a", "in/b"], output="out/ab")
    assert c.storage.get("out/ab") == data + b"tail" and out["object"].size == 1004
    c.scratch["x"] = b"scratch!"
    assert call("upload", c, scratch="x", key="out/x")["object"].size == 8
    with pytest.raises(OperationError, match="no scratch value 'nope'"):
        call("upload", c, scratch="nope", key="out/y")


def test_storage_keys_escaping_the_prefix(tmp_path):
    LocalStorage(tmp_path).put("jobs/other/secret", b"x")
    c = ctx(tmp_path)
    with pytest.raises(StorageError, match="escapes the prefix"):
        call("hash-object", c, key="../other/secret")
    with pytest.raises(StorageError, match="escapes the prefix"):
        call("concat", c, keys=["../other/secret"], output="out/stolen")
    with pytest.raises(StorageError):
        call("make-object", c, key="../../x", size=1, seed="s")


def test_expand_is_deterministic():
    assert expand(b"a", 100) == expand(b"a", 100) != expand(b"b", 100)
    assert len(expand(b"a", 10)) == 10 and expand(b"a", 0) == b""


def test_fake_codec_ops_match_reference(tmp_path):
    """The fake ops, run by hand in chain order, give reference_output."""

    class Relay:  # an in-memory rendezvous
        def __init__(self):
            self.box = {}

        async def send(self, sender, recipient, tag, data, compress="auto"):
            self.box[(sender, recipient, tag)] = data
            return True

        async def receive(self, recipient, sender, tag, timeout_s=0, keep=False):
            return self.box[(sender, recipient, tag)]

    relay = Relay()
    chunks = [b"abc" * 50, b"", b"xyz" * 7]
    names = [f"c{i}" for i in range(3)]
    contexts = []
    for i, chunk in enumerate(chunks):
        c = OpContext("j", names[i], 1, LocalStorage(tmp_path).scoped("jobs/j"), rendezvous=relay)
        c.storage.put(f"in/{i}", chunk)
        call("fake-first-pass", c, chunk=f"in/{i}")
        call("fake-dump-state", c, state_bytes=500)
        call("send-state", c, to=names[i + 1] if i < 2 else "")
        contexts.append(c)
    outs = []
    for i, c in enumerate(contexts):
        call("receive-state", c, sender=names[i - 1] if i else "", into="prev_state")
        call("fake-chain-step", c, prev=names[i - 1] if i else "", next=names[i + 1] if i < 2 else "",
             state_bytes=500)
        outs.append(c.scratch["output"])
    assert b"".join(outs) == fakecodec.reference_output(chunks, 500)
    assert [len(o) for o in outs] == [len(c) for c in chunks]
