"""The libvpx first pass does not depend on what the heap held (media.vpxheap).

libvpx (tune=ssim, cpu-used 0) reads 9 bytes past its above-context array. The foreman CIF chunk
of frames 36..41 at cq-level 20 is sensitive to them: with those bytes 5, 8 or 20 libvpx made
three other chunks, and before the fix about one process in thirty made one of them. Here the heap
is dirtied on purpose, by freeing blocks of that allocation's size filled with such bytes right
before the first pass (glibc hands the most recently freed block of a size out first), and the
chunk must stay the one vpxenc makes.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import subprocess
import sys

import pytest

from common import DEMO_IVF, requires_tool, subprocess_env

CHUNK = (36, 42)  # the demo's frames 36..41
CQ = 20
#: libvpx's request for the above-context array at 352x288: 22 entries of 9 bytes, plus
#: vpx_memalign's alignment and address slot.
ABOVE_CONTEXT_BLOCK = 22 * 9 + 23
DIRT = (5, 8, 20)  # byte values that changed the chunk before the fix


def _glibc() -> bool:
    try:
        return sys.platform.startswith("linux") and bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (ValueError, OSError):  # no such name here: not glibc
        return False


needs_glibc = pytest.mark.skipif(not _glibc(), reason="dirtying the heap uses glibc's malloc")


def dirty_heap(fill: int, size: int = ABOVE_CONTEXT_BLOCK, count: int = 32) -> None:
    """Leave ``count`` freed blocks of ``size`` bytes, every usable byte ``fill``, at the head of
    glibc's free lists for that size."""
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    libc.malloc_usable_size.restype, libc.malloc_usable_size.argtypes = ctypes.c_size_t, [ctypes.c_void_p]
    blocks = [libc.malloc(size) for _ in range(count)]
    for block in blocks:
        ctypes.memset(block, fill, libc.malloc_usable_size(block))
    for block in reversed(blocks):
        libc.free(block)


def chunk_frames():
    from media.video import open_video

    with open_video(DEMO_IVF) as video:
        frames = list(video)
        return frames[CHUNK[0]:CHUNK[1]], video.rate


def chunk_digest(fill: int | None = None) -> str:
    """sha1 of the first pass of the sensitive chunk, the heap dirtied with ``fill`` first."""
    from media.firstpass import libvpx_first_pass

    frames, rate = chunk_frames()
    if fill is not None:
        dirty_heap(fill)
    return hashlib.sha1(b"".join(libvpx_first_pass(frames, rate, CQ))).hexdigest()


@pytest.fixture(scope="module")
def clean():
    return chunk_digest()


def test_libvpx_heap_is_zero_filled_here():
    """On Linux (x86-64, AArch64) every loaded libvpx gets zero-filled memory."""
    import av  # noqa: F401  (loads libavcodec and with it libvpx)

    from media.vpxheap import _loaded_libvpx, zero_libvpx_allocations

    if not sys.platform.startswith("linux"):
        pytest.skip("the allocator slots are patched on Linux only")
    assert _loaded_libvpx(), "PyAV loaded no libvpx"
    assert zero_libvpx_allocations()
    assert zero_libvpx_allocations()  # idempotent


@needs_glibc
def test_first_pass_ignores_what_the_heap_held(clean):
    for fill in DIRT:
        assert chunk_digest(fill) == clean, fill


@needs_glibc
@pytest.mark.slow
def test_fresh_processes_make_the_same_chunk(clean):
    """Fresh interpreters (other hash seeds, other dirt) make the same chunk as this process."""
    here = os.path.dirname(os.path.abspath(__file__))
    for seed, fill in zip((0, 1, 2), DIRT):
        env = subprocess_env() | {"PYTHONHASHSEED": str(seed)}
        code = (f"import sys; sys.path.insert(0, {here!r}); import test_firstpass_heap as t; "
                f"print(t.chunk_digest({fill}))")
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == clean, (seed, fill)


@requires_tool("vpxenc")
def test_sensitive_chunk_equals_vpxenc(clean, tmp_path):
    """vpxenc's fresh heap holds zeros past the array: the zero-filled first pass is vpxenc's."""
    from codec.ivf import read_ivf
    from codec.y4m import Y4mWriter
    from media.firstpass import CPU_USED, KEY_FRAME_DISTANCE, MIN_Q, TARGET_KBPS

    frames, rate = chunk_frames()
    y4m, out = tmp_path / "in.y4m", tmp_path / "out.ivf"
    with Y4mWriter(y4m, rate=rate) as w:
        for image in frames:
            w.write(image)
    subprocess.run(["vpxenc", "--codec=vp8", "--ivf", "--good", f"--cpu-used={CPU_USED}", "--end-usage=cq",
                    f"--min-q={MIN_Q}", "--max-q=63", f"--cq-level={CQ}", f"--target-bitrate={TARGET_KBPS}",
                    "--undershoot-pct=100", "--passes=1", "--auto-alt-ref=1",
                    f"--lag-in-frames={len(frames)}", f"--kf-min-dist={KEY_FRAME_DISTANCE}",
                    f"--kf-max-dist={KEY_FRAME_DISTANCE}", "--threads=1", "--tune=ssim", "-q",
                    "-o", str(out), str(y4m)], check=True, capture_output=True, timeout=300)
    assert hashlib.sha1(b"".join(r.data for r in read_ivf(out)[1])).hexdigest() == clean
