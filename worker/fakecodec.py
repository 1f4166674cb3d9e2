"""Deterministic stand-ins for the ExCamera codec operations, for tests and benchmarks.

They have the shape of the real ones (what they read, what they hand on, what they write) but
the "codec work" is hashing, so the runtime's orchestration, state hand-off, stragglers, kill -9
and byte-identical output can be tested before the VP8 encoder exists. The real operations
register under their own names and replace these in the real encode FSM.

Per chunk i (see ``coordinator.shaped``):

* ``fake-first-pass``: encoded_i = sha256("first-pass" | chunk_i), kept in scratch;
* ``fake-dump-state``: state_i = expand(sha256("state" | encoded_i), state_bytes), kept in scratch;
* (``send-state`` / ``receive-state``: state_i goes to chunk i+1, state_{i-1} arrives);
* ``fake-chain-step``: the serial part: wait for final_{i-1} from chunk i-1, then
  out_i = expand(sha256("out" | encoded_i | state_{i-1} | final_{i-1}), len(chunk_i)) and
  final_i = expand(sha256("final" | out_i), state_bytes), sent on to chunk i+1;
* ``upload`` out_i; the stitch task ``concat``\\ s every out_i.

``reference_output`` computes the same result in plain Python.
"""

from __future__ import annotations

import asyncio
import hashlib
import time

from worker.ops import OpContext, OperationError, _scratch, expand, operation


def _h(*parts: bytes) -> bytes:
    h = hashlib.sha256()
    for p in parts:
        h.update(len(p).to_bytes(8, "little"))
        h.update(p)
    return h.digest()


def first_pass(chunk: bytes) -> bytes:
    return _h(b"first-pass", chunk)


def dump_state(encoded: bytes, state_bytes: int) -> bytes:
    return expand(_h(b"state", encoded), state_bytes)


def chain_step(encoded: bytes, prev_state: bytes, prev_final: bytes, chunk_size: int,
               state_bytes: int) -> tuple[bytes, bytes]:
    out = expand(_h(b"out", encoded, prev_state, prev_final), chunk_size)
    return out, expand(_h(b"final", out), state_bytes)


def reference_output(chunks: list[bytes], state_bytes: int) -> bytes:
    """What the ExCamera-shaped job must produce, computed serially in one process."""
    encoded = [first_pass(c) for c in chunks]
    states = [dump_state(e, state_bytes) for e in encoded]
    outs, final = [], b""
    for i, chunk in enumerate(chunks):
        prev_state = states[i - 1] if i else b""
        out, final = chain_step(encoded[i], prev_state, final, len(chunk), state_bytes)
        outs.append(out)
    return b"".join(outs)


@operation("fake-first-pass")
def op_first_pass(ctx: OpContext, *, chunk: str, work_s: float = 0.0) -> dict:
    """Read the raw chunk from storage; keep its 'encoding' (and size) in scratch. ``work_s``
    stands in for the encoder's time."""
    if not 0 <= work_s <= 600:
        raise OperationError(f"fake-first-pass: work_s {work_s} out of range")
    time.sleep(work_s)
    data = ctx.storage.get(chunk)
    ctx.scratch["encoded"] = first_pass(data)
    ctx.scratch["chunk_size"] = len(data).to_bytes(8, "little")
    return {"size": len(data)}


@operation("fake-dump-state")
def op_dump_state(ctx: OpContext, *, state_bytes: int) -> dict:
    """The decoder state at the end of the chunk, into scratch slot 'state'."""
    if not 0 <= state_bytes <= 64 << 20:
        raise OperationError(f"fake-dump-state: state_bytes {state_bytes} out of range")
    ctx.scratch["state"] = dump_state(_scratch(ctx, "encoded"), state_bytes)
    return {"sha256": hashlib.sha256(ctx.scratch["state"]).hexdigest()}


@operation("fake-chain-step")
async def op_chain_step(ctx: OpContext, *, prev: str, next: str, state_bytes: int,
                        timeout_s: float = 0.0, work_s: float = 0.0) -> dict:
    """The serial step: wait for the predecessor's final state (kept at the rendezvous until
    this task is done, so a re-issued attempt gets it again), compute this chunk's output, and
    pass this chunk's final state on."""
    prev_final = b""
    if prev:
        prev_final = await ctx.rendezvous.receive(ctx.task_id, prev, "final",
                                                  timeout_s=timeout_s or ctx.timeout_s, keep=True)
    if not 0 <= work_s <= 600:
        raise OperationError(f"fake-chain-step: work_s {work_s} out of range")
    await asyncio.sleep(work_s)  # the rebase's time
    size = int.from_bytes(_scratch(ctx, "chunk_size"), "little")
    out, final = chain_step(_scratch(ctx, "encoded"), _scratch(ctx, "prev_state"), prev_final,
                            size, state_bytes)
    ctx.scratch["output"] = out
    if next:
        await ctx.rendezvous.send(ctx.task_id, next, "final", final)
    return {"sha256": hashlib.sha256(out).hexdigest()}
