"""DecoderState as a value: split decoding across processes, validation, equality and digest.

For every vector and K in {1, n//2, n-1}: decode frames 0..K-1 here, serialize the state, and in
a fresh process (one per vector, all its K at once, via ``state_helper.py``) restore it and decode
frames K..n-1. The shown frames must equal libvpx's (.md5 file) exactly, as for a whole decode.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from codec.errors import StateError
from codec.ivf import read_ivf
from common import (DEMO_IVF, VECTORS, ROOT, md5_path, parse_md5, subprocess_env, vector_params)

V001 = VECTORS[0]
HELPER = ROOT / "tests" / "state_helper.py"


def split_points(n: int) -> list[int]:
    return sorted({k for k in (1, n // 2, n - 1) if 0 < k < n})


def decode_prefix(vector, k):
    from codec.decoder import Decoder

    decoder = Decoder()
    _, frames = read_ivf(vector)
    for f in frames[:k]:
        decoder.decode(f.data)
    return decoder.state


# One-frame streams (the WebP key frames, segmentation-01..04) have no split point: left out.
MULTI_FRAME = [v for v in VECTORS + [DEMO_IVF] if len(read_ivf(v)[1]) > 1]


@pytest.mark.parametrize("vector", vector_params(MULTI_FRAME))
def test_split_decode_in_a_fresh_process_equals_whole_decode(vector, tmp_path):
    _, frames = read_ivf(vector)
    ks = split_points(len(frames))
    args = []
    for k in ks:
        path = tmp_path / f"state-{k}.bin"
        path.write_bytes(decode_prefix(vector, k).to_bytes())
        args += [str(k), str(path)]
    proc = subprocess.run([sys.executable, str(HELPER), str(vector), *args], capture_output=True,
                          text=True, env=subprocess_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    expected = parse_md5(md5_path(vector))
    for k in ks:
        assert result[str(k)] == [str(l) for l in expected if l.number > k], f"split at K={k}"


@pytest.fixture(scope="module")
def states():
    """States after 1, 2 and 15 frames of vector 001, and its serialized mid state."""
    return {k: decode_prefix(V001, k) for k in (1, 2, 15)}


def test_round_trip_equality_and_digest(states):
    from codec.state import DecoderState

    for k, s in states.items():
        copy = DecoderState.from_bytes(s.to_bytes())
        assert copy == s and copy.digest() == s.digest()
        assert isinstance(s.digest(), str) and 0 < len(s.digest()) <= 64
        assert copy.to_bytes() == s.to_bytes()
    assert states[1] != states[2] and states[2] != states[15]
    assert len({s.digest() for s in states.values()}) == 3
    assert decode_prefix(V001, 2) == states[2]  # deterministic
    assert decode_prefix(DEMO_IVF, 2) != states[2]


def test_from_bytes_rejects_truncation(states):
    from codec.state import DecoderState

    raw = states[15].to_bytes()
    for n in sorted({0, 1, 4, 8, len(raw) // 2, len(raw) - 1}):
        with pytest.raises(StateError):
            DecoderState.from_bytes(raw[:n])
    with pytest.raises(StateError):
        DecoderState.from_bytes(raw + b"\x00")


def test_from_bytes_rejects_bit_flips(states):
    from codec.state import DecoderState

    raw = states[15].to_bytes()
    positions = sorted({0, 1, 2, 3, 4, 5, 6, 7, len(raw) // 3, len(raw) // 2, len(raw) - 2, len(raw) - 1}
                       | set(range(0, len(raw), max(1, len(raw) // 40))))
    for pos in positions:
        for bit in (0, 7):
            bad = bytearray(raw)
            bad[pos] ^= 1 << bit
            with pytest.raises(StateError):
                DecoderState.from_bytes(bytes(bad))


def test_from_bytes_rejects_other_versions_and_garbage(states):
    """The format's version sits in its first bytes; any other value there must be refused."""
    from codec.state import DecoderState

    raw = states[1].to_bytes()
    for pos in range(8):
        for delta in (1, 255):
            bad = bytearray(raw)
            bad[pos] = (bad[pos] + delta) & 0xFF
            with pytest.raises(StateError):
                DecoderState.from_bytes(bytes(bad))
    for garbage in (b"", b"\x00" * 64, bytes(range(256)) * 4):
        with pytest.raises(StateError):
            DecoderState.from_bytes(garbage)


def test_version_1_zlib_states_are_still_read_and_a_lying_zstd_frame_is_refused(states):
    """Version 2 is zstd; a version 1 (zlib) state written before still reads. A version 2 body
    with valid checksums whose frame holds more or fewer bytes than the header implies is
    refused with one message, not inflated."""
    import zlib

    import zstandard

    from codec.state import _HEADER, MAGIC, ZLIB_VERSION, DecoderState

    def framed(version, payload, body):
        return _HEADER.pack(MAGIC, version, zlib.crc32(payload), zlib.crc32(body)) + body

    for s in states.values():
        payload = s._payload
        old = framed(ZLIB_VERSION, payload, zlib.compress(payload, 1))
        assert DecoderState.from_bytes(old) == s
        assert DecoderState.from_bytes(s.to_bytes()) == s and s.to_bytes()[4:6] == b"\x02\x00"
    payload = states[15]._payload
    for lying in (payload + b"\x00" * 1000, payload[:-1]):
        body = zstandard.ZstdCompressor(level=1).compress(lying)
        with pytest.raises(StateError, match="payload is not the .* bytes its header implies"):
            DecoderState.from_bytes(framed(2, lying, body))
    no_size = zstandard.ZstdCompressor(level=1, write_content_size=False).compress(payload)
    with pytest.raises(StateError, match="payload is not"):
        DecoderState.from_bytes(framed(2, payload, no_size))


def test_key_frame_after_a_state_whose_digest_was_taken(states):
    """Bug: coding_state rebuilt the state from its __dict__, which holds the cached digest
    payload once digest() ran, so the next key frame raised TypeError."""
    from codec.decoder import decode_frame
    from codec.state import DecoderState

    _, frames = read_ivf(V001)
    s = states[2]
    s.digest()
    assert decode_frame(s, frames[0].data)[0] == decode_frame(DecoderState(), frames[0].data)[0]
