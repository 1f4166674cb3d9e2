"""Compile the numba kernels a worker runs, once, into ``NUMBA_CACHE_DIR``: the container image's
warm-up step (``python -m awslambda.warmup``, run by ``docker build`` with the cache pointed at
``awslambda.handler.SHIPPED_CACHE``), so a fresh Lambda sandbox copies compiled kernels to
``/tmp`` instead of compiling them (about 23 s). It encodes a tiny synthetic clip both ways
(native and libvpx first pass) in this process, and again as a distributed job whose worker runs
here, so the kernels compile with the argument types a worker passes (decoder states read back
from storage are read-only arrays, a type of their own to numba).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time


def tiny_y4m(path: str, width: int = 32, height: int = 32, frames: int = 8) -> None:
    """A small moving gradient as y4m (4:2:0)."""
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{width} H{height} F30:1 Ip A1:1 C420jpeg\n".encode())
        for t in range(frames):
            f.write(b"FRAME\n")
            f.write(bytes(((x * 7 + y * 3 + t * 11) & 0xFF) for y in range(height) for x in range(width)))
            f.write(bytes([128 + t]) * (width * height // 2))


async def _job_here(clip: str, first_pass: str, directory: str) -> None:
    """``excamera encode --workers 1`` with the one worker in this process."""
    import asyncio

    import worker.codec_ops  # noqa: F401 - registers the codec operations
    from coordinator.api import embedded_coordinator
    from coordinator.excamera_job import SpooledInput, encode_job
    from media.excamera_encode import EncodeSettings
    from media.video import open_video
    from worker.runtime import run_workers

    settings = EncodeSettings(chunk_frames=2, batch_chunks=4, first_pass=first_pass)
    with open_video(clip) as video:
        spooled = SpooledInput(video, video.rate, settings, directory, lambda done: None)
    job = encode_job(spooled.n_frames, spooled.width, spooled.height, settings)
    async with embedded_coordinator(os.path.join(directory, "storage"), launch_workers=False) as c:
        job_id, _ = await c.submit(job, inputs=spooled.pairs(), workers=1, launch=False)
        pairs = c.worker_tokens(job_id, 1)
        here = asyncio.create_task(run_workers(pairs, c.address, c.bundle.for_worker(), job_id))
        outcome = await asyncio.wait_for(c.wait(job_id), 1800)
        await asyncio.wait_for(here, 30)
    if outcome.status != "succeeded":
        raise SystemExit(f"warm-up: the {first_pass} job {outcome.status}: {outcome.error}")


def _encode_and_decode_here(clip: str, first_pass: str) -> None:
    """What ``excamera encode --workers 0`` and ``excamera decode`` run, called directly (this
    package sits below the CLI): ExCamera[2, 2] over the clip, then a decode of its frames."""
    from codec.decoder import Decoder
    from media.excamera_encode import EncodeSettings, encode_frames
    from media.video import open_video

    settings = EncodeSettings(chunk_frames=2, batch_chunks=2, first_pass=first_pass)
    with open_video(clip) as video:
        frames = encode_frames(video, settings, video.rate)
    decoder = Decoder()
    for data in frames:
        decoder.decode(data)


def warm_up() -> float:
    """Run the kernels once; returns the seconds it took."""
    import asyncio

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="excamera-warmup-") as d:
        clip = os.path.join(d, "clip.y4m")
        tiny_y4m(clip)
        for first_pass in ("native", "libvpx"):
            _encode_and_decode_here(clip, first_pass)
            spool = os.path.join(d, f"job-{first_pass}")
            os.makedirs(spool)
            asyncio.run(_job_here(clip, first_pass, spool))
    return time.monotonic() - started


if __name__ == "__main__":
    from awslambda.handler import pin_cpu_target

    pin_cpu_target()
    print(f"numba kernels compiled into {os.environ.get('NUMBA_CACHE_DIR', '(numba default)')} "
          f"in {warm_up():.1f} s", file=sys.stderr)
