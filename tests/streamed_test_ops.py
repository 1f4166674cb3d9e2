"""An operation used only by tests/test_encode_streamed.py (imported by its workers with ``--ops``)."""

import asyncio
import glob
import os
import shutil

from worker.ops import OperationError, operation

#: A generous hang-catcher: the first batch reaches the output in well under a second.
WAIT_S = 120.0


def ivf_records(path: str) -> int:
    """Complete frame records in the IVF file being written at ``path`` (0 if unreadable)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return 0
    count, pos = 0, 32
    while pos + 12 <= len(data):
        pos += 12 + int.from_bytes(data[pos:pos + 4], "little")
        if pos > len(data):
            break
        count += 1
    return count


@operation("test-gate-on-output")
async def gate_on_output(ctx, *, pattern: str, records: int, snapshots: str, fail: bool) -> dict:
    """Hold every rebase task but the first batch's until the temporary output file (``pattern``)
    holds ``records`` complete frame records, keep a copy of it in ``snapshots``, then go on to
    the rebase, or (``fail``) fail the task there."""
    if ctx.task_id == "rebase-00000":
        return {}
    for _ in range(int(WAIT_S / 0.05)):
        for path in glob.glob(pattern):
            if ivf_records(path) >= records:
                os.makedirs(snapshots, exist_ok=True)
                shutil.copyfile(path, os.path.join(snapshots, f"{ctx.task_id}-{ctx.attempt}.ivf"))
                if fail:
                    raise OperationError("failed on purpose after the first batch reached the output")
                return {}
        await asyncio.sleep(0.05)
    raise OperationError(f"no file {pattern} held {records} frames in {WAIT_S} s")
