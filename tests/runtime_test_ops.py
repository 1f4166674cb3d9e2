"""Operations used only by the runtime tests (imported by test workers with ``--ops``)."""

import asyncio

from storage import ObjectRef
from worker.ops import operation


@operation("test-slow-first-attempt")
async def slow_first_attempt(ctx, *, task: str, seconds: float) -> dict:
    """Hang ``seconds`` in the first attempt of ``task`` (a straggler); return at once otherwise."""
    if ctx.task_id == task and ctx.attempt == 1:
        await asyncio.sleep(seconds)
    return {}


@operation("test-lie-object")
def lie_object(ctx, *, key: str) -> dict:
    """Store an object but report a wrong digest for it."""
    ref = ctx.storage.put(key, b"real bytes")
    return {"object": ObjectRef(key, "0" * 64, ref.size)}


@operation("test-ghost-object")
def ghost_object(ctx, *, key: str) -> dict:
    """Report an object that was never stored."""
    return {"object": ObjectRef(key, "0" * 64, 10)}
