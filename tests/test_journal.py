"""The coordinator's journal (coordinator.journal): what it keeps across opens, the lock that
refuses a second coordinator, the format it refuses, and a torn last write rolled back whole."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from coordinator.journal import FILE, FORMAT, Journal, JournalError, decode_outputs, encode_outputs
from storage import ObjectRef

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REF = ObjectRef("out/chunk-00000.ivf", "ab" * 32, 1234)


def test_a_job_and_its_results_outlive_the_journal(tmp_path):
    j = Journal(tmp_path / "state")
    assert j.generation == 1 and len(j.secret) == 32
    j.begin("job-a")
    j.accept("job-a", b"spec-a", [ObjectRef("input/x.y4m", "cd" * 32, 10)], 100.0)
    j.record([("job-a", "t2", encode_outputs({"run": {"object": REF, "n": 3}})),
              ("job-a", "t1", encode_outputs({"run": {"text": "one", "flag": True}}))])
    j.begin("job-b")  # an upload that never became a job
    j.close()

    j = Journal(tmp_path / "state")
    try:
        assert j.generation == 2  # every open is a new generation; the secret stays
        a, b = j.load()
        assert (a.job_id, a.status, a.spec, a.submitted) == ("job-a", "running", b"spec-a", 100.0)
        assert a.inputs == [ObjectRef("input/x.y4m", "cd" * 32, 10)]
        assert [tid for tid, _ in a.done] == ["t2", "t1"]  # the order they were done in
        assert decode_outputs(a.done[0][1]) == {"run": {"object": REF, "n": 3}}
        assert decode_outputs(a.done[1][1]) == {"run": {"text": "one", "flag": True}}
        assert (b.job_id, b.status) == ("job-b", "uploading")
        assert j.owners() == {"job-a", "job-b"}
        j.drop("job-b")
        j.end("job-a", "succeeded", "", [REF], 200.0, {REF.key})
        (a,) = j.load()
        assert (a.status, a.results, a.unfetched, a.done, a.purged) == ("succeeded", [REF], {REF.key}, [], False)
        j.fetched("job-a", set())
        j.purged("job-a")
        (a,) = j.load()
        assert a.unfetched == set() and a.purged and j.owners() == set()
        secret = j.secret
    finally:
        j.close()
    j = Journal(tmp_path / "state")
    assert j.secret == secret and j.generation == 3
    j.close()


def test_a_second_coordinator_on_the_same_directory_is_refused(tmp_path):
    j = Journal(tmp_path)
    try:
        with pytest.raises(JournalError, match=rf"in use by another running coordinator \(pid {os.getpid()}\)"):
            Journal(tmp_path)
        # another process, too
        res = subprocess.run([sys.executable, "-c", f"from coordinator.journal import Journal; Journal({str(tmp_path)!r})"],
                             cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert res.returncode == 1 and "in use by another running coordinator" in res.stderr
    finally:
        j.close()
    Journal(tmp_path).close()  # free once the first let go


def test_a_journal_of_a_newer_format_is_refused(tmp_path):
    Journal(tmp_path).close()
    db = sqlite3.connect(tmp_path / FILE)
    db.execute("UPDATE meta SET value=? WHERE key='format'", (str(FORMAT + 1),))
    db.commit()
    db.close()
    with pytest.raises(JournalError, match=f"format {FORMAT + 1} is newer than this excamera's"):
        Journal(tmp_path)
    Journal(tmp_path / "elsewhere").close()  # (the lock went with the refusal: no stale holder)


def test_each_job_records_its_storage_and_a_format_1_journal_is_brought_up(tmp_path):
    j = Journal(tmp_path)
    j.begin("job-up", "/store/a")
    j.accept("job-run", b"spec", [], 1.0, "s3://bucket/a")
    j.accept("job-done", b"spec", [], 1.0, "/store/b")
    j.end("job-done", "succeeded", "", [REF], 2.0, {REF.key})
    assert {r.job_id: r.storage for r in j.load()} == {"job-up": "/store/a", "job-run": "s3://bucket/a",
                                                        "job-done": "/store/b"}
    # the unfinished jobs (an upload, a running job) tie the journal to their storage; an ended one does not
    assert j.foreign_storage("s3://bucket/a") == ("/store/a", 1)
    assert j.foreign_storage("/store/b") == ("/store/a", 1)
    j.drop("job-up")
    assert j.foreign_storage("s3://bucket/a") is None and j.foreign_storage("/store/b") == ("s3://bucket/a", 1)
    j.close()

    # a journal of format 1 (no storage column): opened, it is format 2, its jobs' storage unknown
    old = tmp_path / "old"
    old.mkdir()
    db = sqlite3.connect(old / FILE)
    db.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
        CREATE TABLE jobs (job_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, status TEXT NOT NULL, spec BLOB,
            submitted REAL NOT NULL DEFAULT 0, ended REAL NOT NULL DEFAULT 0, error TEXT NOT NULL DEFAULT '',
            results TEXT NOT NULL DEFAULT '[]', unfetched TEXT, purged INTEGER NOT NULL DEFAULT 0);
        INSERT INTO meta VALUES ('format', '1');
        INSERT INTO jobs (job_id, seq, status, spec) VALUES ('job-old', 1, 'running', x'00');
    """)
    db.close()
    j = Journal(old)
    try:
        (row,) = j.load()
        assert (row.job_id, row.status, row.storage) == ("job-old", "running", "")
        assert j.foreign_storage("/anywhere") is None  # not known: not held against a restart
    finally:
        j.close()
    db = sqlite3.connect(old / FILE)
    assert db.execute("SELECT value FROM meta WHERE key='format'").fetchone() == (str(FORMAT),)
    db.close()


def test_a_directory_that_cannot_be_one_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(JournalError, match="state directory .*file/state: Not a directory"):
        Journal(tmp_path / "file" / "state")
    with pytest.raises(JournalError, match="state directory .*file: not a directory"):
        Journal(tmp_path / "file")


def _writer(directory, transactions: int) -> str:
    """A process that journals ``transactions`` results, one transaction each, then dies without
    closing (as under SIGKILL: the write-ahead log is left as it is)."""
    return textwrap.dedent(f"""
        import os
        from coordinator.journal import Journal, encode_outputs
        j = Journal({str(directory)!r})
        j.accept("job-a", b"spec", [], 1.0)
        for i in range({transactions}):
            j.record([("job-a", f"t{{i}}", encode_outputs({{"run": {{"text": "x" * 3000}}}}))])
        os._exit(0)
    """)


def test_a_torn_last_write_is_rolled_back_whole(tmp_path):
    res = subprocess.run([sys.executable, "-c", _writer(tmp_path, 5)], cwd=ROOT, capture_output=True, timeout=60)
    assert res.returncode == 0, res.stderr
    wal = tmp_path / (FILE + "-wal")
    size = wal.stat().st_size
    assert size > 32
    # Tear the last transaction: cut its last frame in half.
    with open(wal, "r+b") as f:
        f.truncate(size - 2000)
    j = Journal(tmp_path)
    try:
        assert j.torn > 0
        (a,) = j.load()
        # the last transaction (t4) is gone, whole; every earlier one is intact
        assert [tid for tid, _ in a.done] == ["t0", "t1", "t2", "t3"]
        assert all(decode_outputs(blob) == {"run": {"text": "x" * 3000}} for _, blob in a.done)
    finally:
        j.close()


def test_a_damaged_journal_is_refused_in_one_line(tmp_path):
    res = subprocess.run([sys.executable, "-c", _writer(tmp_path, 40)], cwd=ROOT, capture_output=True, timeout=60)
    assert res.returncode == 0, res.stderr
    Journal(tmp_path).close()  # checkpoints the log into the database
    db = tmp_path / FILE
    data = bytearray(db.read_bytes())
    assert len(data) > 8192
    data[4096:] = b"\xff" * (len(data) - 4096)  # every page after the first is garbage
    db.write_bytes(bytes(data))
    with pytest.raises(JournalError) as e:
        Journal(tmp_path)
    assert str(e.value).startswith(f"journal {db}: ") and "\n" not in str(e.value)
