"""Recovery: what a journalled coordinator held before it died, back in its engine before it serves.

``Coordinator.start`` calls ``recover`` before it binds its port (docs/design/service.md):

* an upload that never became a job (``uploading``): its objects go;
* an ended job: listed again, its results fetchable while they are not fetched (``keep=False``
  removes its objects once they are, as before the restart, and at once for a failed one);
* an unfinished job resumes: its inputs must still be in storage (a job whose inputs are gone
  fails, in one line); each journalled result is checked against storage again (its objects'
  sha256) and kept, the task done as if an attempt had just won; a dynamic job's planner is
  rebuilt from its spec and told of the done tasks in the order they finished, so it plans the
  same tasks again. Every other task starts afresh: the tasks that were running are re-issued.
  A task's state at the rendezvous (a decoder state sent to the next chunk) died with the old
  process, so a done task whose message an unfinished task still needs is run again (and its
  own sender, if that one is done too), not restored.

Workers of the old process hold tokens of the old generation and are refused (``check_worker``).
Each job's submission id is known again (``coordinator.submissions``): a client whose submission
was journalled just before the old process died gets that job when it sends the submission again.
A coordinator whose storage is not the one the journal's unfinished jobs are in is refused
(``JournalError``) before anything is touched: their inputs and results are in that storage only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

import grpc

from coordinator.engine import RECEIVING_OPERATIONS
from coordinator.fsm import FsmError, Job, fill, job_from_proto
from coordinator.journal import ENDED, JobRow, JournalError, decode_outputs
from protos import jobs_pb2 as jpb
from security import tokens
from storage import ObjectRef, StorageError

log = logging.getLogger("excamera.coordinator")


@dataclass(frozen=True)
class Kinds:
    """What the coordinator makes its jobs of (``coordinator.server`` passes its own, which
    imports this module)."""

    handle: type        # JobHandle
    outcome: type       # JobOutcome
    held_ttl_s: float   # how long the rendezvous holds a job's messages


async def recover(c, kinds: Kinds) -> None:
    """Bring back every job ``c.journal`` holds (``c``: a ``coordinator.server.Coordinator``)."""
    foreign = await c._journal_call("foreign_storage", c.storage.url)
    if foreign is not None:
        raise JournalError(storage_refusal(c.journal.directory, c.storage.url, *foreign))
    rows = await c._journal_call("load")
    resumed = 0
    for row in rows:
        storage = c.storage.scoped(f"jobs/{row.job_id}")
        if row.status == "uploading":
            try:
                n = await asyncio.to_thread(storage.delete_prefix)
            except (StorageError, OSError) as e:
                log.error("coordinator: recovery: job %s: removing an unfinished upload: %s", row.job_id, e)
                continue
            await c._journal_call("drop", row.job_id)
            log.info("coordinator: recovery: removed an unfinished upload (%s, %d object(s))", row.job_id, n)
            continue
        try:
            spec = jpb.JobSpec.FromString(row.spec or b"")
            job = job_from_proto(spec)
        except Exception as e:  # noqa: BLE001 - a spec that no longer parses fails its job, not the daemon
            job, spec = Job(row.job_id, (), ()), None
            if row.status not in ENDED:
                await _fail(c, row, f"its spec cannot be read again ({e})")
        if spec is not None:
            c.submissions.claim(spec, row.job_id)
        if row.status in ENDED:
            _restore_ended(c, kinds, row, job)
            continue
        why = await asyncio.to_thread(_missing_input, storage, row.inputs)
        planner = None
        if why is None and spec.pipeline:
            try:
                planner = c.planner_for(spec, job)
            except ValueError as e:
                why = f"its pipeline cannot be planned again: {e}"
        if why is not None:
            await _fail(c, row, why)
            _restore_ended(c, kinds, row, job)
            continue
        await _resume(c, kinds, row, spec, job, planner, storage)
        resumed += 1
    if rows:
        log.info("coordinator: recovery: %d job(s) in the journal, %d resumed (generation %d)",
                 len(rows), resumed, c.generation)
    c.wake()


def storage_refusal(state_dir, url: str, theirs: str, count: int) -> str:
    """The one line refusing a coordinator whose storage is not its unfinished jobs'."""
    return (f"state directory {state_dir}: {count} unfinished job(s) have their objects in {theirs}, not in "
            f"{url}: restart with --storage {theirs} (or move the journal away to abandon them)")


async def _fail(c, row: JobRow, why: str) -> None:
    row.status, row.error = "failed", f"job {row.job_id}: {why}; failed when the coordinator restarted"
    row.results, row.unfetched = [], None if c.keep else set()
    log.error("coordinator: recovery: %s", row.error)
    await c._journal_call("end", row.job_id, row.status, row.error, [], time.time(), row.unfetched)


def _missing_input(storage, inputs: list[ObjectRef]) -> str | None:
    for ref in inputs:
        try:
            if not storage.exists(ref.key):
                return f"its input {ref.key} is gone from storage"
        except (StorageError, OSError) as e:
            return f"its input {ref.key} cannot be read: {e}"
    return None


def _restore_ended(c, kinds: Kinds, row: JobRow, job: Job) -> None:
    """An ended job: listed, watchable (its end), and its unfetched results fetchable."""
    storage = c.storage.scoped(f"jobs/{row.job_id}")
    objects = {"": {r.key: r for r in row.results}} if row.status == "succeeded" else {}
    c.engine.add_ended(row.job_id, job, storage, row.status, row.error, objects)
    key = tokens.job_key(c.secret, row.job_id)
    done = asyncio.get_running_loop().create_future()
    done.set_result(kinds.outcome(row.job_id, row.status, row.error, objects, c.storage.url, f"jobs/{row.job_id}"))
    h = kinds.handle(row.job_id, key, tokens.task_key(key), done)
    end = jpb.JobEvent(job_id=row.job_id, time=row.ended, kind="job", from_state="running",
                       to_state=row.status, detail=row.error)
    for ref in row.results if row.status == "succeeded" else ():
        end.objects.add(key=ref.key, sha256=ref.sha256, size=ref.size)
    h.events.extend([jpb.JobEvent(job_id=row.job_id, time=row.submitted, kind="job", to_state="running",
                                  detail="recovered from the journal"), end])
    c.handles[row.job_id] = h
    if c.keep or row.purged:
        return
    if row.storage and row.storage != c.storage.url:  # its objects are in a storage not ours now
        log.warning("coordinator: recovery: job %s ended with its objects in %s, not in this coordinator's "
                    "storage; they stay there (excamera coordinator gc --storage %s)", row.job_id, row.storage,
                    row.storage)
        return
    h.unfetched = set(row.unfetched or ()) if row.status == "succeeded" else set()
    # Whatever the old process had not removed yet goes now (the unfetched results stay).
    c._spawn(c._remove(row.job_id, keep=set(h.unfetched)))


async def _resume(c, kinds: Kinds, row: JobRow, spec, job: Job, planner, storage) -> None:
    key = tokens.job_key(c.secret, row.job_id)
    task_key = tokens.task_key(key)
    # A rendezvous of its own is new; a shared one may hold the job's messages from before: start clean.
    with contextlib.suppress(grpc.aio.AioRpcError):
        await c.rendezvous_admin.close_job(row.job_id)
    await c.rendezvous_admin.open_job(row.job_id, task_key, **{"ttl_s": kinds.held_ttl_s, **c.rendezvous_limits})
    c.handles[row.job_id] = kinds.handle(row.job_id, key, task_key, asyncio.get_running_loop().create_future())
    c.engine.add_job(row.job_id, job, storage, workers=spec.workers or 1, spare=spec.spare,
                     max_attempts=spec.max_attempts or 3, launcher=c.launcher is not None, planner=planner)
    done = await asyncio.to_thread(_verified, storage, row)
    rerun = resend(job, row.job_id, {tid for tid, _ in done})
    restored = 0
    for task_id, outputs in done:
        if task_id not in rerun and c.engine.restore_done(row.job_id, task_id, outputs):
            restored += 1
    log.info("coordinator: recovery: job %s resumes: %d task(s) done kept, %d run again for the states "
             "the rendezvous held, %d result(s) no longer in storage", row.job_id, restored, len(rerun),
             len(row.done) - len(done))


def _verified(storage, row: JobRow) -> list[tuple[str, dict]]:
    """The journalled results whose objects are still in storage, byte for byte (sha256)."""
    out = []
    for task_id, blob in row.done:
        outputs = decode_outputs(blob)
        why = None
        for state, outs in outputs.items():
            for name, value in outs.items():
                if isinstance(value, ObjectRef) and why is None:
                    why = storage.verify(value)
        if why is None:
            out.append((task_id, outputs))
        else:
            log.warning("coordinator: recovery: job %s: task %s runs again: %s", row.job_id, task_id, why)
    return out


def resend(job: Job, job_id: str, done: set[str]) -> set[str]:
    """The done tasks to run again because an unfinished task receives a message from them
    (``receive-state``'s ``sender``) that only the old rendezvous held; transitively, since a
    task run again receives its own sender's messages again."""
    by_id = {t.task_id: t for t in job.tasks}
    rerun: set[str] = set()
    todo = [tid for tid in by_id if tid not in done]
    while todo:
        task = by_id[todo.pop()]
        for state in job.fsm(task.fsm).states:
            if state.operation not in RECEIVING_OPERATIONS:
                continue
            try:
                args = fill(state.args, {**task.params, "task_id": task.task_id, "job_id": job_id, "attempt": 1})
            except FsmError:  # names another state's output: not a fixed sender
                continue
            sender = args.get("sender")
            if isinstance(sender, str) and sender in done and sender not in rerun and sender in by_id:
                rerun.add(sender)
                todo.append(sender)
    return rerun
