"""Faulty codec operations for tests/test_encode_distributed.py (imported by workers via --ops)."""

from __future__ import annotations

from worker.codec_ops import rebase_batch
from worker.ops import OpContext, operation


@operation("test-rebase-onto-given")
def op_rebase_onto_given(ctx: OpContext, *, raws: list[str], passes: list[str], states: list[str],
                         givens: list[str], outs: list[str], links: list[str], verified: list[str],
                         raw_checked: bool = False) -> dict:
    """A broken batch rebase: codes each chunk onto the previous chunk's *first-pass* state
    instead of the state it really left (what a walk that skipped the serial step would store).
    Its entry digests and links name the states it coded against, so the stitch must refuse it."""
    return rebase_batch(ctx, raws=raws, passes=passes, states=states, givens=givens, outs=outs, links=links,
                        verified=verified, raw_checked=raw_checked, onto=lambda state_in, given: given)
