"""ExCamera's first pass: one chunk of raw pictures encoded by libvpx (through PyAV) as a key frame
followed by interframes.

ExCamera runs vpxenc on every chunk in parallel (``--good --cpu-used=0 --end-usage=cq
--min-q=0 --max-q=63 --cq-level=C --auto-alt-ref=1 --tune=ssim --threads=1``, no key frame but
the first). Here ``min-q`` is 4 (``MIN_Q``) and ``cpu-used`` 1 (``CPU_USED``).

``min-q`` 4: libvpx's constant-quality mode boosts each chunk's key frame to quantizer 0 (on 720p
270 KB of a chunk's 290 KB), and encode-given-state codes the frame that replaces it at a
quantizer blended 0.75 toward that key frame's, so every sixth frame of the stream was coded at
quantizer 6 or so. A floor of 4 makes those frames cheaper for little quality: on bigbuckbunny
720p ExCamera[6,16] spends 10.3% fewer bits at equal SSIM (BD-rate over SSIM at cq-levels
16/24/32/40, ``bench/excamera_bench.py``). Against serial two-pass vpxenc at ``min-q`` 0 that is
+12.9% instead of +19.5% (``min-q`` 6: +12.7%, 8: +15.6%; carphone QCIF +55.5%, bikes 640x272
+20.7%, foreman CIF +19.7%, against +57.2%, +27.1% and +26.0% last measured at 0); but the floor
helps vpxenc too (4.6% on 720p), and against vpxenc given the same floor, as the benches now run
it, ExCamera[6,16] is at +19.2%: the gap is unchanged. Independent chunks gain more from it than
rebased ones: ExCamera[6,16] against [6,1] is -61.5% on 720p (-67.4% at 0) and -10.6% to -25.1%
on the small clips (about -36% at 0).

``cpu-used`` 1: libvpx spends about 16% less time on a chunk
and the final stream, after encode-given-state and rebase, is as good (BD-rate over SSIM against
the same job with ``cpu-used`` 0 at cq-levels 16/24/32/40: bigbuckbunny 720p -0.1%, bikes 640x272
-0.25%, foreman CIF +0.48%, carphone QCIF +0.30%; mean +0.1%).
Faster settings cost compression, because the rebase keeps the first pass's modes and motion
vectors: ``cpu-used`` 2 +4.4 points of BD-rate against two-pass vpxenc, 3 +8.2, 4 +19.6, and no
``tune=ssim`` +1.8 (same clip). Here libvpx is reached through PyAV's ``libvpx`` encoder, i.e. ffmpeg's libvpxenc
wrapper, which maps its options onto libvpx's as follows:

====================================  ===========================================================
libvpx setting                        how it is set here
====================================  ===========================================================
deadline ``VPX_DL_GOOD_QUALITY``      ``deadline=good``; libvpx uses "good" only while a frame
                                      lasts less than the deadline (1 s), hence ``fps > 1``
``cpu-used`` 1                        ``cpu-used=1``
``end-usage=cq``, ``cq-level``        ``crf=cq_level`` together with a bit rate (ffmpeg picks CQ
                                      for VP8 when both are set)
``min-q`` 4, ``max-q`` 63             ``qmin=4`` (``MIN_Q``), ``qmax=63``
``target-bitrate``                    ``TARGET_KBPS`` (4294959 kbit/s): as good as unlimited, so
                                      the quantizer is the CQ level's and key/golden frames get
                                      libvpx's CQ boost (down to q 0); ``undershoot-pct=100``
``auto-alt-ref=1``, ``lag-in-frames``  ``auto-alt-ref=1``, ``lag-in-frames=min(frames, 25)``
``tune=ssim``                         ``tune=ssim``
``kf-min-dist = kf-max-dist`` large   ``g = keyint_min = KEY_FRAME_DISTANCE``: equal values turn
                                      libvpx's automatic (scene-cut) key frames off
``threads`` 1, one token partition    ``threads=1``; ffmpeg leaves token partitions at 1
====================================  ===========================================================

What PyAV cannot pin (stated, and checked where it can be):

* **Two passes.** ffmpeg's second pass reads the first pass's statistics from
  ``AVCodecContext.stats_in``, which PyAV does not expose, so this is libvpx's *one-pass* mode.
  libvpx's VP8 encoder only places alt-ref frames from its two-pass code, so in one pass
  ``auto-alt-ref`` is accepted but never fires: these chunks have no hidden frames. (vpxenc's
  two-pass mode does not place one in a 6-frame chunk either.) Hidden frames, if a libvpx ever
  produced them, are returned like any other frame, in decode order.
* **Rate-control buffer sizes** (vpxenc ``--buf-sz`` and friends): ffmpeg derives them from
  ``bufsize`` / ``rc_init_occupancy`` in bits, which overflow at this bit rate; libvpx's defaults
  (6 s / 4 s / 5 s) stay. With the bit rate unlimited they never bind.

``libvpx_first_pass`` is deterministic (same pictures, same bytes, in every process): in "good"
mode with one thread libvpx does not adapt its speed to the clock as realtime mode does; with
``tune=ssim`` (found at ``cpu-used=0``) libvpx reads 9 bytes past one of its own heap blocks, which
``media.vpxheap`` makes zeros, as in vpxenc's fresh heap (before, about one process in thirty
made a different chunk); and the bytes past each plane's width in PyAV's padded frame buffers are
filled by repeating the last column rather than left as whatever the allocator held. The result
is equal, byte for byte, to vpxenc's with the flags above (``tests/test_chunks.py`` checks it
where vpxenc is installed).
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from codec.image import Image
from foundation.errors import ExcameraError

#: libvpx's largest look-ahead (``MAX_LAG_BUFFERS``).
MAX_LAG = 25
#: Target bit rate in kbit/s: the largest whose bits per second fit libvpx's 32-bit arithmetic.
TARGET_KBPS = 4294959
#: Key-frame distance for both libvpx bounds; equal bounds disable automatic key frames.
KEY_FRAME_DISTANCE = 1 << 20
#: libvpx's speed/quality trade-off in "good" mode (0 slowest; see the module docstring for why
#: 1) and its tuning metric.
CPU_USED = 1
TUNE = "ssim"
#: The lowest quantizer libvpx may choose (see the module docstring for why not 0).
MIN_Q = 4


class FirstPassError(ExcameraError, RuntimeError):
    """libvpx returned something other than one key frame followed by the chunk's interframes."""


def libvpx_first_pass(frames: list[Image], fps: tuple[int, int], cq_level: int) -> list[bytes]:
    """Encode ``frames`` as one chunk with libvpx (ExCamera's settings, see the module docstring):
    a key frame, then interframes; returns the raw VP8 frames in decode order (hidden alt-ref
    frames included, were libvpx to make any).

    ``fps`` is (numerator, denominator) frames per second and must exceed 1; ``cq_level`` is
    libvpx's 0..63. All pictures must have the first one's size. The frames' tags are checked
    before they are returned: they must show exactly ``len(frames)`` pictures and hold no key frame
    but the first (``FirstPassError`` otherwise). They are not decoded here: the caller decodes
    them once (``media.excamera_encode.first_pass_chunk``, whose ``terminate_chunk`` raises for a frame
    that does not decode), rather than twice."""
    _check_arguments(frames, fps, cq_level)
    try:
        import av
    except ImportError:
        raise FirstPassError("the libvpx first pass needs PyAV (pip install av)") from None
    _zero_libvpx_heap()
    width, height = frames[0].width, frames[0].height
    rate = Fraction(fps[0], fps[1])
    ctx = av.codec.CodecContext.create("libvpx", "w")
    ctx.width, ctx.height = width, height
    ctx.pix_fmt = "yuv420p"
    ctx.time_base = 1 / rate
    ctx.framerate = rate
    ctx.thread_count = 1
    ctx.bit_rate = TARGET_KBPS * 1000
    ctx.options = {
        "deadline": "good", "cpu-used": str(CPU_USED),
        "crf": str(cq_level), "qmin": str(MIN_Q), "qmax": "63", "undershoot-pct": "100",
        "auto-alt-ref": "1", "lag-in-frames": str(min(len(frames), MAX_LAG)),
        **({"tune": TUNE} if TUNE else {}),
        "g": str(KEY_FRAME_DISTANCE), "keyint_min": str(KEY_FRAME_DISTANCE),
    }
    out: list[bytes] = []
    try:
        ctx.open()
        for index, image in enumerate(frames):
            out += [bytes(p) for p in ctx.encode(_av_frame(av, image, index, ctx.time_base))]
        out += [bytes(p) for p in ctx.encode(None)]
    except av.error.FFmpegError as e:
        raise FirstPassError(f"libvpx failed: {' '.join(str(e).split())}") from None
    _check_chunk(out, len(frames))
    return out


_warned = False


def _zero_libvpx_heap() -> None:
    """libvpx's allocations zero-filled (``media.vpxheap``); warn once where that cannot be."""
    global _warned
    from media.vpxheap import zero_libvpx_allocations
    if not zero_libvpx_allocations() and not _warned:
        _warned = True
        import warnings
        warnings.warn("libvpx's heap could not be zero-filled on this platform: the libvpx first pass "
                      "may differ from process to process (use --first-pass native for identical runs)",
                      RuntimeWarning, stacklevel=3)


def _check_arguments(frames, fps, cq_level) -> None:
    if not frames:
        raise ValueError("libvpx_first_pass: no frames to encode")
    if not (isinstance(cq_level, int) and 0 <= cq_level <= 63):
        raise ValueError(f"cq_level must be an integer 0..63, not {cq_level!r}")
    num, den = fps
    if not (isinstance(num, int) and isinstance(den, int) and num > 0 and den > 0):
        raise ValueError(f"fps must be two positive integers, not {fps!r}")
    if num <= den:
        raise ValueError(f"fps {num}/{den} is 1 frame/s or less: libvpx would leave its 'good' "
                         "mode for realtime (a frame must last less than its 1 s deadline)")
    size = (frames[0].width, frames[0].height)
    for i, image in enumerate(frames):
        if (image.width, image.height) != size:
            raise ValueError(f"frame {i} is {image.width}x{image.height} but frame 0 is "
                             f"{size[0]}x{size[1]}; a chunk has one size")


def _av_frame(av, image: Image, index: int, time_base):
    """``image`` as a PyAV yuv420p frame with pts ``index``. PyAV's planes are padded to an
    aligned line size; libvpx copies only the picture (random padding leaves the output as it
    is), but the padding repeats each row's last pixel anyway, so that nothing could depend on
    whatever the allocator left there."""
    frame = av.VideoFrame(image.width, image.height, "yuv420p")
    for plane, pixels in zip(frame.planes, (image.y, image.u, image.v)):
        rows = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
        rows[:, :plane.width] = pixels
        rows[:, plane.width:] = pixels[:, -1:]
    frame.pts = index
    frame.time_base = time_base
    return frame


def _check_chunk(data: list[bytes], expected_shown: int) -> None:
    """From the frame tags (section 9.1): one key frame, first, and ``expected_shown`` shown
    pictures."""
    from codec.chunks import frame_tag
    from codec.errors import VP8Error

    shown = 0
    for i, frame in enumerate(data):
        try:
            tag = frame_tag(frame)
        except VP8Error as e:
            raise FirstPassError(f"libvpx's frame {i} does not decode: {e}") from None
        if tag.key_frame != (i == 0):
            raise FirstPassError(f"libvpx made frame {i} a {'key' if tag.key_frame else 'inter'}frame; a "
                                 "chunk has one key frame, first")
        shown += tag.show_frame
    if shown != expected_shown:
        raise FirstPassError(f"libvpx's {len(data)} frames show {shown} pictures, not the "
                             f"{expected_shown} given")
