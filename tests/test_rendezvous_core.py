"""rendezvous.core: the pairing core, driven directly (no gRPC)."""

import hashlib

import pytest

from security import tokens
from rendezvous.core import (AuthError, ConflictError, FullError, Limits, Message, RendezvousCore,
                             RendezvousError)

KEY = tokens.task_key(tokens.job_key(b"s" * 32, "j"))


def msg(sender="a", recipient="b", tag="state", body=b"xyz"):
    return Message(sender, recipient, tag, len(body), hashlib.sha256(body).hexdigest(), 0, body)


def core(**limits):
    c = RendezvousCore()
    c.open_job("j", KEY, Limits(**limits))
    return c


def test_held_until_taken():
    c = core()
    assert c.take("j", "b", "a", "state", keep=False) is None
    assert c.put("j", msg(), now=0.0)
    assert c.held("j") == (1, 3)
    assert c.take("j", "b", "a", "state", keep=False).body == b"xyz"
    assert c.take("j", "b", "a", "state", keep=False) is None
    assert c.held("j") == (0, 0)


def test_keep_then_release():
    c = core()
    c.put("j", msg(), 0.0)
    c.put("j", msg(tag="final", body=b"f"), 0.0)
    assert c.take("j", "b", "a", "state", keep=True).body == b"xyz"
    assert c.take("j", "b", "a", "state", keep=True).body == b"xyz"  # a re-issued attempt gets it again
    assert c.release("j", "b") == 2
    assert c.held("j") == (0, 0)


def test_ttl_expires_unclaimed():
    c = core(ttl_s=10.0)
    c.put("j", msg(), now=100.0)
    assert c.expire(now=109.0) == []
    gone = c.expire(now=110.5)
    assert [m.recipient for _, m in gone] == ["b"]
    assert c.take("j", "b", "a", "state", keep=False) is None


def test_size_caps():
    c = core(max_held_bytes=10, max_message_bytes=8)
    with pytest.raises(FullError, match="message cap"):
        c.put("j", msg(body=b"123456789"), 0.0)
    c.put("j", msg(body=b"12345678"), 0.0)
    with pytest.raises(FullError, match="cap"):
        c.put("j", msg(sender="c", body=b"123"), 0.0)
    c.take("j", "b", "a", "state", keep=False)
    c.put("j", msg(sender="c", body=b"123"), 0.0)  # room again


def test_duplicate_and_conflict():
    c = core()
    assert c.put("j", msg(), 0.0) is True
    assert c.put("j", msg(), 0.0) is False  # a straggler re-sending the same state
    with pytest.raises(ConflictError, match="first one wins"):
        c.put("j", msg(body=b"other"), 0.0)
    assert c.take("j", "b", "a", "state", keep=False).body == b"xyz"


def test_auth_and_jobs_apart():
    """A caller is authorized as one task of one job, by that task's token under the job's key."""
    c = core()
    other = tokens.task_key(tokens.job_key(b"s" * 32, "k"))
    c.open_job("k", other)
    assert c.authorize("j", "a", tokens.task_token(KEY, "a")) == "a"
    with pytest.raises(AuthError):
        c.authorize("j", "a", tokens.task_token(other, "a"))  # another job's token
    with pytest.raises(AuthError):
        c.authorize("j", "a", tokens.task_token(KEY, "b"))    # another task's token
    with pytest.raises(AuthError):
        c.authorize("j", "", tokens.task_token(KEY, ""))      # no worker named
    with pytest.raises(AuthError):
        c.authorize("nope", "a", tokens.task_token(KEY, "a"))
    c.check_acting("a", "send as", "a")
    with pytest.raises(AuthError, match="may not send as 'b'"):
        c.check_acting("a", "send as", "b")
    c.put("j", msg(), 0.0)
    assert c.take("k", "b", "a", "state", keep=False) is None  # jobs do not see each other
    with pytest.raises(ConflictError):
        c.open_job("j", other)
    with pytest.raises(RendezvousError, match="32 bytes"):
        c.open_job("m", b"short")
    assert c.close_job("j") == 1
    with pytest.raises(AuthError):
        c.authorize("j", "a", tokens.task_token(KEY, "a"))


@pytest.mark.parametrize("field,value", [("sender", ""), ("recipient", "a/b"), ("tag", "x" * 200),
                                         ("sha256", "nothex"), ("compression", 7)])
def test_malformed_headers(field, value):
    c = core()
    m = msg()
    setattr(m, field, value)
    with pytest.raises(RendezvousError):
        c.put("j", m, 0.0)


def test_uncompressed_size_must_match():
    c = core()
    m = msg()
    m.size = 99
    with pytest.raises(RendezvousError, match="wire size"):
        c.put("j", m, 0.0)
