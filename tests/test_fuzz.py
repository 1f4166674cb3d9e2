"""Hypothesis mutates valid conformance streams; the decoder must fail cleanly, fast, or decode.

Every frame of a mutated stream either decodes (an ``Image``, or ``None`` for a hidden frame) or
raises ``VP8Error``; any other exception is a bug, and so is a stream that takes seconds. After an
error the same ``Decoder`` goes on with the next frame, as a player would. The CLI gets a handful of
mutated files too: exit 0 or 1, on 1 exactly one ``excamera: error:`` line, never a traceback.

numba does not check bounds unless ``NUMBA_BOUNDSCHECK=1``; run this file in that lane as well to
turn an out-of-range index in a kernel into an ``IndexError`` (a failure here) instead of silence.
"""

from __future__ import annotations

import random
import struct
import time
from functools import lru_cache

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from codec.errors import VP8Error
from codec.image import Image
from codec.ivf import IvfHeader, read_ivf
from common import VP8_DIR, run_cli

STREAMS = {  # stem: how many leading frames to use
    "vp80-00-comprehensive-001": 6,
    "vp80-00-comprehensive-004": 6,
    "vp80-00-comprehensive-007": 6,
    "vp80-03-segmentation-1401": 4,
    "vp80-05-sharpness-1428": 3,
}
STREAM_SECONDS = 120.0


@lru_cache(maxsize=None)
def frames_of(stem: str) -> tuple[bytes, ...]:
    _, frames = read_ivf(VP8_DIR / f"{stem}.ivf")
    return tuple(f.data for f in frames[:STREAMS[stem]])


# ---------------------------------------------------------------------------------------------
# Mutations: each a small tuple, applied in order to a list of frames (bytes)

offsets = st.one_of(st.integers(0, 12), st.integers(0, 1 << 20))  # header bytes, or anywhere


def mutations():
    frame = st.integers(0, 7)
    return st.one_of(
        st.tuples(st.just("flip"), frame, offsets, st.integers(0, 7)),
        st.tuples(st.just("byte"), frame, offsets, st.integers(0, 255)),
        st.tuples(st.just("truncate"), frame, st.one_of(st.integers(0, 12), st.floats(0, 1))),
        st.tuples(st.just("zeros"), frame, offsets, st.integers(1, 64), st.sampled_from([0x00, 0xFF])),
        st.tuples(st.just("duplicate"), frame),
        st.tuples(st.just("drop"), frame),
        st.tuples(st.just("swap"), frame, frame),
        st.tuples(st.just("size"),
                  st.one_of(st.integers(1, 400), st.sampled_from([1, 2, 15, 17, 16383, 4096])),
                  st.one_of(st.integers(1, 400), st.sampled_from([1, 2, 15, 17, 16383, 4096])),
                  st.integers(0, 3)),
    )


def apply(frames: list[bytes], muts) -> list[bytes]:
    frames = list(frames)
    for m in muts:
        if not frames:
            break
        kind, i = m[0], m[1] % len(frames) if m[0] != "size" else 0
        f = bytearray(frames[i])
        if kind == "flip" and f:
            f[m[2] % len(f)] ^= 1 << m[3]
        elif kind == "byte" and f:
            f[m[2] % len(f)] = m[3]
        elif kind == "truncate":
            n = m[2] if isinstance(m[2], int) else int(len(f) * m[2])
            del f[n:]
        elif kind == "zeros" and f:
            start = m[2] % len(f)
            f[start:start + m[3]] = bytes([m[4]]) * len(f[start:start + m[3]])
        elif kind == "duplicate":
            frames.insert(i, frames[i])
            continue
        elif kind == "drop":
            del frames[i]
            continue
        elif kind == "swap":
            j = m[2] % len(frames)
            frames[i], frames[j] = frames[j], frames[i]
            continue
        elif kind == "size" and len(f) >= 10:
            # Section 9.2: 14-bit width and height, 2-bit scale each, after the start code.
            _, w, h, scale = m
            f[6:10] = struct.pack("<HH", w | (scale << 14), h | ((3 - scale) << 14))
        frames[i] = bytes(f)
    return frames


@lru_cache(maxsize=None)
def _warm_up() -> None:
    """Decode each stream once, untimed: numba compiles (or loads) the kernels on first use."""
    from codec.decoder import Decoder

    for stem in STREAMS:
        decoder = Decoder()
        for data in frames_of(stem):
            decoder.decode(data)


def decode_all(frames: list[bytes]) -> list[str]:
    """Decode every frame on one Decoder; return 'ok'/'hidden'/'error' per frame."""
    from codec.decoder import Decoder

    _warm_up()
    decoder = Decoder()
    outcome = []
    start = time.perf_counter()
    for data in frames:
        try:
            image = decoder.decode(data)
        except VP8Error as e:
            assert str(e), "a VP8Error must say what went wrong"
            outcome.append("error")
        else:
            assert image is None or isinstance(image, Image)
            if image is not None:
                assert image.width == decoder.state.width and image.height == decoder.state.height
            outcome.append("hidden" if image is None else "ok")
    elapsed = time.perf_counter() - start
    assert elapsed < STREAM_SECONDS, f"{len(frames)} frames took {elapsed:.1f} s"
    return outcome


def test_unmutated_streams_decode():
    for stem in STREAMS:
        assert "error" not in decode_all(list(frames_of(stem))), stem


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(stem=st.sampled_from(sorted(STREAMS)), muts=st.lists(mutations(), min_size=1, max_size=4))
def test_mutated_streams_fail_cleanly(stem, muts):
    decode_all(apply(frames_of(stem), muts))


@pytest.mark.parametrize("size", [(16383, 16383), (16383, 1), (1, 16383), (4096, 4096)],
                         ids=lambda s: f"{s[0]}x{s[1]}")
def test_forged_huge_key_frame_is_refused_fast(size):
    """A small key frame claiming a huge picture runs out of first-partition data: an error, fast."""
    frames = apply(frames_of("vp80-00-comprehensive-001"), [("size", *size, 0)])
    assert decode_all(frames[:2]) == ["error", "error"]


# ---------------------------------------------------------------------------------------------
# The same through the command line


def write_ivf(path, frames: list[bytes], width=176, height=144) -> None:
    with open(path, "wb") as f:
        f.write(IvfHeader(width=width, height=height, frame_count=len(frames)).to_bytes())
        for pts, data in enumerate(frames):
            f.write(struct.pack("<IQ", len(data), pts) + data)


def _random_mutations(rng: random.Random, n: int):
    """Plain-random draws of the same mutation kinds (the CLI cases are fixed, not shrunk)."""
    out = []
    for _ in range(n):
        kind = rng.choice(["flip", "byte", "truncate", "zeros", "duplicate", "drop", "size"])
        i = rng.randrange(8)
        if kind == "flip":
            out.append((kind, i, rng.randrange(1 << 12), rng.randrange(8)))
        elif kind == "byte":
            out.append((kind, i, rng.randrange(1 << 12), rng.randrange(256)))
        elif kind == "truncate":
            out.append((kind, i, rng.random()))
        elif kind == "zeros":
            out.append((kind, i, rng.randrange(1 << 12), rng.randrange(1, 64), 0))
        elif kind == "size":
            out.append((kind, rng.randrange(1, 400), rng.randrange(1, 400), 0))
        else:
            out.append((kind, i))
    return out


CLI_CASES = ["seed0", "seed1", "seed2", "seed3", "forged-size", "bad-frame-length"]


@pytest.mark.parametrize("case", CLI_CASES)
def test_cli_on_mutated_files(tmp_path, case):
    stem = "vp80-00-comprehensive-007"
    frames = list(frames_of(stem))
    path = tmp_path / f"{case}.ivf"
    if case.startswith("seed"):
        rng = random.Random(int(case[4:]))
        write_ivf(path, apply(frames, _random_mutations(rng, 3)))
    elif case == "forged-size":
        write_ivf(path, apply(frames, [("size", 16383, 16383, 0)]))
    else:  # an IVF frame record claiming more bytes than the file has
        write_ivf(path, frames)
        raw = bytearray(path.read_bytes())
        second = 32 + 12 + len(frames[0])
        raw[second:second + 4] = struct.pack("<I", len(frames[1]) + 1000)
        path.write_bytes(bytes(raw))
    proc = run_cli("decode", path, "--frame-md5", timeout=60)
    assert "Traceback" not in proc.stderr
    assert proc.returncode in (0, 1), proc.stderr
    if proc.returncode == 1:
        lines = proc.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("excamera: error: "), proc.stderr
        assert "internal error" not in lines[0], lines[0]
    else:
        assert proc.stderr == ""
    for line in proc.stdout.decode().splitlines():
        md5, name = line.split("  ")
        assert len(md5) == 32 and name.startswith(f"{case}-") and name.endswith(".i420")
    if case in ("forged-size", "bad-frame-length"):
        assert proc.returncode == 1
