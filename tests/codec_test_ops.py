"""Faulty codec operations for tests/test_encode_distributed.py (imported by workers via --ops)."""

from __future__ import annotations

from worker.codec_ops import _raw, _state, ivf_bytes, ivf_frames
from worker.ops import OpContext, _scratch, operation


@operation("test-rebase-onto-given")
def op_rebase_onto_given(ctx: OpContext, *, raw: str) -> dict:
    """A broken rebase: codes the chunk onto the previous chunk's *first-pass* state instead of
    the state it really left (what a worker that skipped the serial step would upload). Its
    entry digest and its link name the state it was coded against, so the stitch must refuse it."""
    from codec.chunks import entry_digest_bytes
    from media.excamera_encode import rebase_chunk
    frames, rate = _raw(ctx, raw)
    prediction = ivf_frames(_scratch(ctx, "pass"), "first pass")
    h, w = frames[0].y.shape
    if not _scratch(ctx, "given_state"):
        ctx.scratch["output"] = _scratch(ctx, "pass")
        ctx.scratch["final"] = _scratch(ctx, "fp_state")
        ctx.scratch["states"] = b" " + _scratch(ctx, "fp_digest")
        return {}
    given = _state(ctx, "given_state")
    out, final = rebase_chunk(given, given, _scratch(ctx, "given_frame"), frames, prediction)
    ctx.scratch["output"] = ivf_bytes(out, w, h, rate, entry_digest_bytes(given))
    ctx.scratch["final"] = final.to_bytes()
    ctx.scratch["states"] = f"{given.digest()} {final.digest()}".encode()
    return {}
