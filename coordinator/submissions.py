"""Idempotent submission: a submission sent again is the same job, not a second one.

A client that loses its coordinator while it submits cannot tell whether the job was accepted:
the coordinator may have died after journalling the job but before its reply went out. So the
client (``coordinator.api.submit_remote``) puts a random ``submission_id`` in the ``JobSpec`` once
and sends the same spec on every retry; the coordinator maps each submission id to the job it
made of it (the spec is journalled, so the map is rebuilt at recovery) and answers a submission
it has seen with that job's reference (docs/design/service.md). A submission id sent with a
different spec is refused: it is a client's mistake, and answering with another job would hand
out that job's key.

``die_at(moment)`` is a test hook only: with ``EXCAMERA_TEST_DIE_AT=moment`` in its environment
the coordinator SIGKILLs itself at that moment (``upload``: when the first input chunk of a
streamed submission arrives; ``accepted``: right after the job is journalled, before the
reply; ``command:TASK``: as the command of task TASK goes to its worker), so that tests can
kill it at a moment no outside timing can hit reliably.
"""

from __future__ import annotations

import hashlib
import os
import signal

from foundation.errors import ExcameraError

#: The environment variable of ``die_at`` (tests only).
DIE_AT = "EXCAMERA_TEST_DIE_AT"
#: Longest submission id taken (a client sends 32 hex digits).
MAX_ID = 128


class SubmissionError(ExcameraError):
    """A submission id that cannot be used (answered INVALID_ARGUMENT or ALREADY_EXISTS)."""

    code = "INVALID_ARGUMENT"


def digest(spec) -> str:
    """The spec's identity: its deterministic serialization's sha256."""
    return hashlib.sha256(spec.SerializeToString(deterministic=True)).hexdigest()


class Submissions:
    """Submission id -> (job id, spec digest), for the jobs a coordinator holds."""

    def __init__(self):
        self._jobs: dict[str, tuple[str, str]] = {}

    def find(self, spec) -> str | None:
        """The job already made of ``spec``'s submission, or None (no id, or a new one)."""
        sid = spec.submission_id
        if not sid:
            return None
        if len(sid) > MAX_ID:
            raise SubmissionError(f"submission id: {len(sid)} characters, over the {MAX_ID} taken")
        known = self._jobs.get(sid)
        if known is None:
            return None
        if known[1] != digest(spec):
            err = SubmissionError(f"submission id {sid}: already used for job {known[0]}, with another spec")
            err.code = "ALREADY_EXISTS"
            raise err
        return known[0]

    def claim(self, spec, job_id: str) -> None:
        """``job_id`` is made of ``spec`` (before it is journalled: a second copy of the same
        submission arriving meanwhile finds it)."""
        if spec is not None and spec.submission_id:
            self._jobs[spec.submission_id] = (job_id, digest(spec))

    def release(self, spec, job_id: str) -> None:
        """The job never came to be: the submission may be sent again."""
        if spec is not None and self._jobs.get(spec.submission_id, ("",))[0] == job_id:
            del self._jobs[spec.submission_id]


def die_at(moment: str) -> None:
    """Tests only: SIGKILL this process when ``EXCAMERA_TEST_DIE_AT`` names ``moment``."""
    if os.environ.get(DIE_AT) == moment:
        os.kill(os.getpid(), signal.SIGKILL)
