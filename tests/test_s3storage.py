"""``S3Storage`` against a real S3 server on loopback (moto's server, the ``s3_server`` fixture),
reached through boto3's standard configuration chain (``AWS_ENDPOINT_URL_S3`` and credentials in
the environment) exactly as AWS is: the storage contract, and the pre-flight's one-line errors."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
import time

import pytest

from common import ROOT, subprocess_env
from storage import s3 as s3storage
from storage.s3 import S3Storage, parse_s3_url
from storage import LocalStorage, ObjectRef, PrefixStorage, StorageError, open_storage


_BUCKETS = itertools.count()


@pytest.fixture
def bucket(s3env):
    """A new, empty bucket for each test."""
    return s3env.bucket(f"contract-{next(_BUCKETS)}")


def test_put_get_exists_list_delete(s3env, bucket):
    st = open_storage(f"s3://{bucket}/run/one")
    assert isinstance(st, S3Storage) and st.url == f"s3://{bucket}/run/one"
    st.check()
    ref = st.put("a/b.bin", b"hello")
    assert ref == ObjectRef("a/b.bin", "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824", 5)
    st.put("a/c", b"")
    st.put("ab", b"x")  # "a" as a directory prefix must not match "ab"
    assert st.get("a/b.bin") == b"hello" and st.get("a/c") == b""
    assert st.exists("a/b.bin") and not st.exists("a") and not st.exists("a/nope")
    assert st.list() == ["a/b.bin", "a/c", "ab"] and st.list("a") == ["a/b.bin", "a/c"]
    assert st.list("a/") == ["a/b.bin", "a/c"] and st.list("zz") == []
    # Really under the prefix in the bucket, and nothing else (the probe of check() is gone).
    assert s3env.keys(bucket) == ["run/one/a/b.bin", "run/one/a/c", "run/one/ab"]
    st.delete("a/c")
    st.delete("a/c")  # deleting what is gone is not an error, as locally
    assert st.list() == ["a/b.bin", "ab"]
    assert st.delete_prefix() == 2 and s3env.keys(bucket) == []


def test_missing_keys_one_line_as_local(s3env, bucket, tmp_path):
    """The same StorageError text as LocalStorage, bare and through a job's prefix."""
    for base in (LocalStorage(tmp_path), open_storage(f"s3://{bucket}/p")):
        for st in (base, base.scoped("jobs/j1")):
            with pytest.raises(StorageError) as e:
                st.get("dir/missing.ivf")
            assert str(e.value) == "storage key 'dir/missing.ivf': no such object"
            why = st.verify(ObjectRef("gone", "0" * 64, 3))
            assert why == "storage key 'gone': no such object"


@pytest.mark.parametrize("key", ["../x", "a/../../x", "/abs", "a//b", ".", "a/./b", "a\\b", "a b", "", "é"])
def test_keys_cannot_leave_the_prefix(s3env, bucket, key):
    st = open_storage(f"s3://{bucket}/tenant")
    job = st.scoped("jobs/j1")
    for view in (st, job):
        calls = [lambda: view.get(key), lambda: view.put(key, b"x"), lambda: view.exists(key),
                 lambda: view.delete(key)]
        if not (view is job and key == "/abs"):  # (a job view reads a list prefix's '/' as its own root)
            calls.append(lambda: view.list(key or ".."))
        for call in calls:
            with pytest.raises(StorageError):
                call()
    if key != "/abs":  # (scoped, like list, reads a leading '/' as the view's root)
        with pytest.raises(StorageError):
            st.scoped(key or "..")
    assert s3env.keys(bucket) == []


def test_a_job_view_sees_only_its_prefix(s3env, bucket):
    st = open_storage(f"s3://{bucket}/base")
    st.put("jobs/j1/out.ivf", b"1")
    st.put("jobs/j10/out.ivf", b"10")   # a sibling whose name starts alike
    st.put("secret", b"s")
    outside = S3Storage(bucket, "")     # another tenant of the bucket
    outside.put("base2/x", b"y")
    j1 = st.scoped("jobs/j1")
    assert isinstance(j1, PrefixStorage) and j1.list() == ["out.ivf"] and j1.get("out.ivf") == b"1"
    assert j1.delete_prefix() == 1
    assert s3env.keys(bucket) == ["base/jobs/j10/out.ivf", "base/secret", "base2/x"]
    assert st.list() == ["jobs/j10/out.ivf", "secret"]


def test_large_object_goes_multipart_both_ways(s3env, bucket):
    """Over the threshold (lowered to S3's smallest part, 5 MiB) the put is a multipart upload
    (its ETag says how many parts; three UploadPart requests went out) and the get fetches the
    parts by Range headers (each request is seen as it is sent); the bytes are the same. Under it,
    one plain PUT and GET."""
    st = S3Storage(bucket, "big", multipart_threshold=5 << 20, concurrency=4)
    sent: list[tuple[str, str | None]] = []    # (operation, Range header) of each request sent

    def record(request, event_name, **_):   # event_name: before-send.s3.<operation>
        sent.append((event_name.rsplit(".", 1)[1], request.headers.get("Range")))

    st.client.meta.events.register("before-send.s3.*", record)
    data = os.urandom(12 << 20)
    ref = st.put("blob", data)
    etag = s3env.client().head_object(Bucket=bucket, Key="big/blob")["ETag"].strip('"')
    assert etag.endswith("-3"), etag  # 12 MiB in 5 MiB parts
    assert [op for op, _ in sent].count("UploadPart") == 3
    del sent[:]
    assert st.get("blob") == data
    # After one plain GET (its size, its body dropped), the parts fetched by byte ranges that
    # tile the object ("bytes=a-b", the last maybe open-ended).
    spans = []
    for op, r in sent:
        if op == "GetObject" and r:
            a, _, b = (r.decode() if isinstance(r, bytes) else r).removeprefix("bytes=").partition("-")
            spans.append((int(a), int(b) + 1 if b else len(data)))
    assert sorted(spans) == [(0, 5 << 20), (5 << 20, 10 << 20), (10 << 20, 12 << 20)], sent
    assert st.verify(ref) is None
    del sent[:]
    small = st.put("small", b"x" * 1000)
    etag = s3env.client().head_object(Bucket=bucket, Key="big/small")["ETag"].strip('"')
    assert "-" not in etag and st.verify(small) is None
    assert st.get("small") == b"x" * 1000
    assert ("PutObject", None) in sent and ("GetObject", None) in sent and "UploadPart" not in dict(sent)
    assert not [r for op, r in sent if r], sent


def test_put_is_atomic_for_readers(s3env, bucket):
    """Readers racing a writer that alternates two different objects (one of them multipart)
    only ever see one of the two, whole."""
    st = S3Storage(bucket, "race", multipart_threshold=5 << 20, concurrency=4)
    a, b = b"a" * (1 << 20), os.urandom(6 << 20)
    st.put("obj", a)
    seen, bad, stop = set(), [], threading.Event()

    def reader():
        while not stop.is_set():
            try:
                got = st.get("obj")
            except Exception as e:  # noqa: BLE001 - a reader that dies must fail the test
                bad.append(repr(e))
                return
            if got == a:
                seen.add("a")
            elif got == b:
                seen.add("b")
            else:
                bad.append(len(got))

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for i in range(6):
            st.put("obj", b if i % 2 == 0 else a)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert bad == [] and seen  # (which of the two the readers caught is up to the race)


def test_verify_rehashes_and_detects_a_tampered_object(s3env, bucket):
    st = open_storage(f"s3://{bucket}/v").scoped("jobs/j")
    ref = st.put("chunk.ivf", b"the real bytes")
    assert st.verify(ref) is None
    # Same size, other bytes, written behind the storage's back (any metadata it kept is stale).
    s3env.client().put_object(Bucket=bucket, Key="v/jobs/j/chunk.ivf", Body=b"the fake bytes")
    why = st.verify(ref)
    assert why is not None and why.startswith("storage key 'chunk.ivf': holds 14 bytes with sha256 ")
    assert st.digest("chunk.ivf").sha256 != ref.sha256


def test_delete_prefix_in_batches(s3env, bucket, monkeypatch):
    monkeypatch.setattr(s3storage, "DELETE_BATCH", 3)
    st = open_storage(f"s3://{bucket}/many")
    for i in range(8):
        st.put(f"jobs/j/{i}", b"x")
    st.put("jobs/k/0", b"y")
    assert st.delete_prefix("jobs/j") == 8 and st.list() == ["jobs/k/0"]


def test_open_storage_urls(s3env, bucket, tmp_path):
    assert isinstance(open_storage(str(tmp_path)), LocalStorage)
    assert open_storage(f"file://{tmp_path}").root == tmp_path.resolve()
    assert open_storage(tmp_path).url == str(tmp_path.resolve())
    assert parse_s3_url("s3://my.bucket-1/a/b/") == ("my.bucket-1", "a/b")
    assert parse_s3_url("s3://abc") == ("abc", "")
    assert S3Storage.from_url("s3://abc/").url == "s3://abc"
    for bad, why in [("s3://", "not a valid bucket name"), ("s3://Upper/x", "not a valid bucket name"),
                     ("s3://ab/x", "not a valid bucket name"), ("s3://b_ucket/x", "not a valid bucket name"),
                     ("s3://bucket/../x", "prefix '../x'"), ("s3://bucket/a//b", "prefix 'a//b'"),
                     ("ftp://host/x", "unknown scheme 'ftp'"), ("file://relative", "absolute path"),
                     ("", "empty")]:
        with pytest.raises(StorageError) as e:
            open_storage(bad)
        assert why in str(e.value) and "\n" not in str(e.value)


def _timed_check(url: str) -> tuple[str, float]:
    """check()'s error and its seconds (bounded only as a hang-catcher: no endless retries)."""
    start = time.monotonic()
    with pytest.raises(StorageError) as e:
        open_storage(url).check()
    return str(e.value), time.monotonic() - start


def test_check_no_such_bucket(s3env):
    msg, took = _timed_check("s3://no-such-bucket-here/x")
    assert msg == "s3://no-such-bucket-here/x: no such bucket 'no-such-bucket-here'" and took < 60


def test_check_no_credentials(s3env, bucket, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    msg, took = _timed_check(f"s3://{bucket}/x")
    assert msg.startswith(f"s3://{bucket}/x: no AWS credentials") and took < 60
    assert s3env.keys(bucket) == []


def test_check_unreachable_endpoint(s3env, bucket, monkeypatch):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{port}")
    msg, took = _timed_check(f"s3://{bucket}/x")
    assert msg.startswith(f"s3://{bucket}/x: Could not connect to the endpoint URL") and took < 60, (msg, took)
    assert "\n" not in msg


def test_boto3_only_imported_for_s3():
    """Cold start: the CLI, the coordinator and the worker do not import boto3 for local storage."""
    code = ("import sys, excamera.cli, storage, coordinator.server, worker.runtime, coordinator.api\n"
            "storage.open_storage('.')\n"
            "assert 'boto3' not in sys.modules and 'botocore' not in sys.modules, 'boto3 imported'\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=subprocess_env(), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
