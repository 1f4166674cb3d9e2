"""The raw chunk object an ExCamera chunk task reads: its N pictures as one Y4M (C420jpeg, the
input's frame rate). Made where the pictures are decoded (``worker.decode_ops``) or, in one
process, by ``coordinator.excamera_job``; the same pictures always give the same bytes."""

from __future__ import annotations


def chunk_object(frames: list, rate: tuple[int, int]) -> bytes:
    """One raw chunk object: ``frames`` (``codec.image.Image``) as one Y4M."""
    from codec.y4m import FRAME_TAG, Y4mHeader

    h, w = frames[0].y.shape
    header = Y4mHeader(w, h, tuple(rate), "p", (1, 1), "420jpeg").to_bytes()
    return header + b"".join(FRAME_TAG + b"\n" + f.to_i420() for f in frames)
