"""Bit-exactness: every vector's per-frame MD5s, decoded in process with ``codec.decoder``.

The .md5 files were made by libvpx's vpxdec (tests/data/SOURCES.md); a line is
``<md5>  <stem>-<W>x<H>-<NNNN>.i420`` with NNNN the 1-based number of the IVF frame that showed
the picture, so both the pixels and the size of every shown frame are checked, and hidden frames
must show nothing.
"""

from __future__ import annotations

import pytest

from common import VECTORS, decode_lines, md5_path, parse_md5, vector_params


def test_all_vectors_are_here():
    names = [v.name for v in VECTORS]
    assert len([n for n in names if n.startswith("vp80-0")]) == 62
    assert "vp80-06-smallsize.ivf" in names and len(VECTORS) == 68


@pytest.mark.parametrize("vector", vector_params())
def test_vector_matches_libvpx(vector):
    expected = [str(l) for l in parse_md5(md5_path(vector))]
    got = decode_lines(vector)
    for i, (g, e) in enumerate(zip(got, expected)):
        assert g == e, f"first mismatch at shown frame {i}: got {g!r}, libvpx {e!r}"
    assert len(got) == len(expected), f"{len(got)} shown frames, libvpx shows {len(expected)}"
