"""libvpx's invalid-file streams (tests/data/vp8/invalid), decoded frame by frame.

Each ``.res`` line is the ``vpx_codec_err_t`` libvpx's invalid_file_test expects for one frame:
0 = decodes, 7 = VPX_CODEC_CORRUPT_FRAME. libvpx keeps decoding the next frames after a corrupt
one; our ``Decoder.decode`` raises ``CorruptFrameError`` instead, and the test then goes on with
the next frame on the same ``Decoder``. So: a frame marked 7 must raise ``CorruptFrameError``;
a frame marked 0 must decode while no earlier frame failed; after a failure our decoder may
legitimately refuse later frames too (the stream has already ended with an error at or before
them), but only ever with ``CorruptFrameError`` — any other exception is a bug.
"""

from __future__ import annotations

import pytest

from codec.errors import CorruptFrameError
from codec.ivf import read_ivf
from common import INVALID_STREAMS, parse_res, stem


def test_all_invalid_streams_are_here():
    assert len(INVALID_STREAMS) == 5


@pytest.mark.parametrize("stream", INVALID_STREAMS, ids=stem)
def test_invalid_stream(stream):
    from codec.decoder import Decoder

    expected = parse_res(stream.with_name(stream.name + ".res"))
    _, frames = read_ivf(stream)
    assert len(frames) == len(expected)
    decoder = Decoder()
    failed_at = None
    for frame, code in zip(frames, expected):
        try:
            decoder.decode(frame.data)
        except CorruptFrameError as e:
            assert str(e), "error messages must say what went wrong"
            if code == 0:
                assert failed_at is not None, f"frame {frame.index} is valid but raised: {e}"
            failed_at = frame.index if failed_at is None else failed_at
        else:
            assert code == 0, f"frame {frame.index} should raise CorruptFrameError (libvpx: 7)"
    assert failed_at is not None
