"""The coordinator's journal: every accepted job and every verified result, durable on disk.

A coordinator started with a state directory (``excamera coordinator serve --state-dir DIR``)
keeps one SQLite database there, ``journal.sqlite``, in WAL mode with ``synchronous=FULL``: a
write is on disk when its transaction commits, and a transaction torn by a crash (a half-written
WAL tail) is rolled back when the database is next opened, never half-applied. What it holds
(docs/design/service.md):

* ``meta``: the format version, the generation (bumped at every open: workers of an earlier
  process present tokens of an earlier generation and are refused) and the coordinator's token
  secret (job keys outlive a restart, so a client can still fetch and cancel its job);
* ``jobs``: one row per job, from the moment its upload starts (``uploading``: what it stored
  goes at the next start if it never became a job) through ``running`` (its ``JobSpec`` and
  input references, written before the submitter is told the job exists) to its end, the result
  objects and which of them are not fetched yet, whether its objects are gone (``purged``), and
  the storage (URL) they are in: a restart with another ``--storage`` is refused while a job of
  the journal's is unfinished there (``foreign_storage``), since its inputs and verified results
  are in that storage and nowhere else;
* ``results``: each task's verified outputs, in the order the tasks finished (a dynamic job's
  planner is replayed in that order at recovery).

A ``flock`` on ``DIR/lock`` refuses a second coordinator on the same directory. Every failure to
open is a ``JournalError`` in one line. The journal is used from one thread at a time (the
coordinator gives it a thread of its own, so an fsync never stalls its loop).
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from coordinator.lifecycle import JobStatus
from foundation.errors import ExcameraError
from protos import coordinator_pb2 as cpb
from protos import values
from security import tokens
from storage import ObjectRef

#: The journal's format; a journal of a newer format is refused (an older binary must not guess).
#: 2 added ``jobs.storage`` (a format-1 journal is brought up to 2 when opened; its jobs' storage
#: is unknown, '').
FORMAT = 2
FILE = "journal.sqlite"
LOCK = "lock"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, status TEXT NOT NULL, spec BLOB,
    submitted REAL NOT NULL DEFAULT 0, ended REAL NOT NULL DEFAULT 0, error TEXT NOT NULL DEFAULT '',
    results TEXT NOT NULL DEFAULT '[]', unfetched TEXT, purged INTEGER NOT NULL DEFAULT 0,
    storage TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS inputs (
    job_id TEXT NOT NULL, key TEXT NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL,
    PRIMARY KEY (job_id, key));
CREATE TABLE IF NOT EXISTS results (
    job_id TEXT NOT NULL, task_id TEXT NOT NULL, seq INTEGER NOT NULL, outputs BLOB NOT NULL,
    PRIMARY KEY (job_id, task_id));
"""

#: Job statuses the journal records (the engine's ``JobStatus``, and ``uploading`` before a job
#: exists); these are the ended ones.
ENDED = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class JournalError(ExcameraError):
    """A state directory or journal the coordinator cannot use (one line)."""


def default_state_dir() -> str:
    """``$XDG_STATE_HOME/excamera``, else ``~/.local/state/excamera``."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "excamera")


def open_state_dir(state_dir: str | None) -> "Journal | None":
    """The journal of ``excamera coordinator serve --state-dir``: in ``state_dir``, else the
    default directory; None for ``none`` (no journal)."""
    if state_dir is not None and state_dir.lower() == "none":
        return None
    return Journal(state_dir or default_state_dir())


# -- values on disk --------------------------------------------------------------------------------

def encode_outputs(outputs: dict[str, dict]) -> bytes:
    """A task's outputs (state -> name -> value) as bytes: one ``Result`` message per state."""
    doc = {}
    for state, outs in outputs.items():
        msg = cpb.Result()
        values.to_map(outs, msg.outputs)
        doc[state] = base64.b64encode(msg.SerializeToString()).decode()
    return json.dumps(doc, sort_keys=True).encode()


def decode_outputs(blob: bytes) -> dict[str, dict]:
    out = {}
    for state, text in json.loads(blob).items():
        msg = cpb.Result.FromString(base64.b64decode(text))
        out[state] = values.from_map(msg.outputs)
    return out


def _refs(refs) -> str:
    return json.dumps([[r.key, r.sha256, r.size] for r in refs])


def _unrefs(text: str | None) -> list[ObjectRef]:
    return [ObjectRef(k, s, int(n)) for k, s, n in json.loads(text or "[]")]


@dataclass
class JobRow:
    """One journalled job, as ``Journal.load`` returns it."""

    job_id: str
    status: str
    spec: bytes | None
    submitted: float
    ended: float
    error: str
    results: list[ObjectRef]              # an ended job's result objects
    unfetched: set[str] | None            # their keys not fetched yet (None: not tracked)
    purged: bool                          # its objects are gone from storage
    storage: str = ""                     # the URL of the storage they are in ('' if not known)
    inputs: list[ObjectRef] = field(default_factory=list)
    done: list[tuple[str, bytes]] = field(default_factory=list)  # (task id, outputs), in order


# -- the journal -----------------------------------------------------------------------------------

class Journal:
    """The journal in ``directory`` (made if missing), opened and locked; ``close()`` unlocks."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        where = str(self.directory)
        if self.directory.exists() and not self.directory.is_dir():
            raise JournalError(f"state directory {where}: not a directory")
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as e:
            raise JournalError(f"state directory {where}: {e.strerror or e}") from None
        if not self.directory.is_dir():
            raise JournalError(f"state directory {where}: not a directory")
        if not os.access(self.directory, os.W_OK | os.X_OK):
            raise JournalError(f"state directory {where}: not writable")
        self._lock = self._take_lock()
        try:
            self.torn = _torn_wal_bytes(self.directory / (FILE + "-wal"))
            self._db = self._open()
        except BaseException:
            self._release()
            raise
        self._seq = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM jobs").fetchone()[0]
        self._result_seq = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM results").fetchone()[0]

    # -- opening ----------------------------------------------------------------------------------

    def _take_lock(self):
        path = self.directory / LOCK
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise JournalError(f"state directory {self.directory}: {e.strerror or e}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 64).decode(errors="replace").strip()
            os.close(fd)
            raise JournalError(f"state directory {self.directory}: in use by another running coordinator"
                               f"{f' (pid {holder})' if holder.isdigit() else ''}") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return fd

    def _release(self) -> None:
        if self._lock is not None:
            os.close(self._lock)  # closing the descriptor drops the flock
            self._lock = None

    def _open(self) -> sqlite3.Connection:
        path = self.directory / FILE
        where = f"journal {path}"
        try:
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise JournalError(f"{where}: cannot use write-ahead logging (journal mode {mode})")
            db.execute("PRAGMA synchronous=FULL")
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise JournalError(f"{where}: damaged ({check}); move it away to start afresh")
            db.execute("BEGIN IMMEDIATE")
            try:
                for stmt in _SCHEMA.strip().split(";"):
                    if stmt.strip():
                        db.execute(stmt)
                row = db.execute("SELECT value FROM meta WHERE key='format'").fetchone()
                if row is None:
                    db.execute("INSERT INTO meta VALUES ('format', ?)", (str(FORMAT),))
                elif int(row[0]) > FORMAT:
                    raise JournalError(f"{where}: format {int(row[0])} is newer than this excamera's "
                                       f"({FORMAT}); run a newer excamera")
                elif int(row[0]) < FORMAT:
                    columns = {r[1] for r in db.execute("PRAGMA table_info(jobs)")}
                    if "storage" not in columns:
                        db.execute("ALTER TABLE jobs ADD COLUMN storage TEXT NOT NULL DEFAULT ''")
                    db.execute("UPDATE meta SET value=? WHERE key='format'", (str(FORMAT),))
                gen = db.execute("SELECT value FROM meta WHERE key='generation'").fetchone()
                self.generation = (int(gen[0]) if gen else 0) + 1
                db.execute("INSERT OR REPLACE INTO meta VALUES ('generation', ?)", (str(self.generation),))
                secret = db.execute("SELECT value FROM meta WHERE key='secret'").fetchone()
                if secret is None:
                    self.secret = tokens.new_secret()
                    db.execute("INSERT INTO meta VALUES ('secret', ?)", (self.secret,))
                else:
                    self.secret = bytes(secret[0])
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return db
        except sqlite3.DatabaseError as e:
            raise JournalError(f"{where}: {' '.join(str(e).split())}") from None
        except OSError as e:
            raise JournalError(f"{where}: {e.strerror or e}") from None

    def close(self) -> None:
        if getattr(self, "_db", None) is not None:
            self._db.close()
            self._db = None
        self._release()

    # -- writes (each one transaction) --------------------------------------------------------------

    def begin(self, job_id: str, storage: str = "") -> None:
        """An upload starts into ``storage`` (a URL): what it stores is this job's (removed at the
        next start if it never became a job)."""
        self._seq += 1
        with _txn(self._db):
            self._db.execute("INSERT INTO jobs (job_id, seq, status, storage) VALUES (?, ?, 'uploading', ?)",
                             (job_id, self._seq, storage))

    def accept(self, job_id: str, spec: bytes, inputs: list[ObjectRef], submitted: float,
               storage: str = "") -> None:
        """The job exists, its objects in ``storage`` (a URL): its spec and input references (one
        transaction, durable on return)."""
        with _txn(self._db):
            if self._db.execute("SELECT 1 FROM jobs WHERE job_id=?", (job_id,)).fetchone() is None:
                self._seq += 1
                self._db.execute("INSERT INTO jobs (job_id, seq, status) VALUES (?, ?, 'uploading')",
                                 (job_id, self._seq))
            self._db.execute("UPDATE jobs SET status='running', spec=?, submitted=?, storage=? WHERE job_id=?",
                             (spec, submitted, storage, job_id))
            self._db.executemany("INSERT OR REPLACE INTO inputs VALUES (?, ?, ?, ?)",
                                 [(job_id, r.key, r.sha256, r.size) for r in inputs])

    def drop(self, job_id: str) -> None:
        """Forget a job that never started (its upload was refused or abandoned)."""
        with _txn(self._db):
            for table in ("jobs", "inputs", "results"):
                self._db.execute(f"DELETE FROM {table} WHERE job_id=?", (job_id,))

    def record(self, done: list[tuple[str, str, "bytes | dict"]]) -> None:
        """Verified results, (job id, task id, outputs or ``encode_outputs`` of them) each, in
        one transaction (encoded here: in the journal's thread, not the coordinator's loop)."""
        rows = []
        for job_id, task_id, blob in done:
            self._result_seq += 1
            rows.append((job_id, task_id, self._result_seq,
                         blob if isinstance(blob, bytes) else encode_outputs(blob)))
        with _txn(self._db):
            self._db.executemany("INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?)", rows)

    def end(self, job_id: str, status: str, error: str, results: list[ObjectRef], ended: float,
            unfetched: set[str] | None) -> None:
        """The job ended; its per-task results are no longer needed."""
        with _txn(self._db):
            self._db.execute("UPDATE jobs SET status=?, error=?, results=?, ended=?, unfetched=? WHERE job_id=?",
                             (status, error, _refs(results), ended,
                              None if unfetched is None else json.dumps(sorted(unfetched)), job_id))
            self._db.execute("DELETE FROM results WHERE job_id=?", (job_id,))

    def fetched(self, job_id: str, unfetched: set[str]) -> None:
        with _txn(self._db):
            self._db.execute("UPDATE jobs SET unfetched=? WHERE job_id=?", (json.dumps(sorted(unfetched)), job_id))

    def purged(self, job_id: str) -> None:
        """The job's objects are gone from storage."""
        with _txn(self._db):
            self._db.execute("UPDATE jobs SET purged=1 WHERE job_id=?", (job_id,))

    # -- reads --------------------------------------------------------------------------------------

    def load(self) -> list[JobRow]:
        """Every journalled job, oldest first, with its inputs and (unfinished) verified results."""
        rows = []
        for (job_id, status, spec, submitted, ended, error, results, unfetched, purged,
             storage) in self._db.execute("SELECT job_id, status, spec, submitted, ended, error, results, "
                                          "unfetched, purged, storage FROM jobs ORDER BY seq"):
            rows.append(JobRow(job_id, status, spec, submitted, ended, error, _unrefs(results),
                               None if unfetched is None else set(json.loads(unfetched)), bool(purged),
                               storage))
        by_id = {r.job_id: r for r in rows}
        for job_id, key, sha, size in self._db.execute("SELECT job_id, key, sha256, size FROM inputs"):
            if job_id in by_id:
                by_id[job_id].inputs.append(ObjectRef(key, sha, size))
        for job_id, task_id, blob in self._db.execute("SELECT job_id, task_id, outputs FROM results ORDER BY seq"):
            if job_id in by_id:
                by_id[job_id].done.append((task_id, bytes(blob)))
        return rows

    def foreign_storage(self, url: str) -> tuple[str, int] | None:
        """(another storage URL, how many jobs) when unfinished jobs (running, or an upload) are
        journalled in a storage other than ``url``; None when every one is in ``url`` (or in a
        storage not recorded: a format-1 journal's)."""
        row = self._db.execute(
            f"SELECT storage, COUNT(*) FROM jobs WHERE status NOT IN ({','.join('?' * len(ENDED))}) "
            "AND storage NOT IN ('', ?) GROUP BY storage ORDER BY MIN(seq) LIMIT 1", (*ENDED, url)).fetchone()
        return None if row is None else (row[0], int(row[1]))

    def owners(self) -> set[str]:
        """The jobs whose objects may still be in storage (``excamera coordinator gc`` keeps them)."""
        return {r[0] for r in self._db.execute("SELECT job_id FROM jobs WHERE purged=0")}


class _txn:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on an exception)."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, kind, exc, tb):
        self.db.execute("ROLLBACK" if kind is not None else "COMMIT")
        return False


def _torn_wal_bytes(path: Path) -> int:
    """Bytes at the end of a write-ahead log that make no whole frame: the tail of a write a crash
    tore (SQLite ignores them when it opens the log: that transaction is rolled back)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            header = f.read(32)
    except OSError:
        return 0
    if size < 32 or len(header) < 32:
        return size
    page = int.from_bytes(header[8:12], "big")
    if page == 1:
        page = 65536
    frame = 24 + page
    return (size - 32) % frame if page >= 512 else 0
