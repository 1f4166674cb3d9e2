"""codec.y4m: reading the clips, round trips, metadata, and every rejection."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codec.errors import ContainerError, UnsupportedError
from codec.image import Image
from codec.y4m import Y4mHeader, Y4mReader, Y4mWriter, read_y4m
from common import CLIPS, CLIPS_DIR

pytestmark = pytest.mark.nojit

CLIP_FACTS = {  # name: (width, height, rate, frames)
    "foreman_qcif_176x144_10f.y4m": (176, 144, (30, 1), 10),
    "RTn23_80x44p15_15f.y4m": (80, 44, (15, 1), 15),
    "park_joy_90p_8_420.y4m": (160, 90, (50, 1), 10),
    "CiscoVT2people_160x96_6fps_5f.y4m": (160, 96, (6, 1), 5),
}


def y4m(header: bytes, *frames: bytes) -> io.BytesIO:
    return io.BytesIO(header + b"".join(b"FRAME\n" + f for f in frames))


def random_image(rng, w, h) -> Image:
    cw, ch = (w + 1) // 2, (h + 1) // 2
    return Image(rng.integers(0, 256, (h, w), np.uint8), rng.integers(0, 256, (ch, cw), np.uint8),
                 rng.integers(0, 256, (ch, cw), np.uint8))


def test_clips_are_all_here():
    assert sorted(p.name for p in CLIPS) == sorted(CLIP_FACTS)


@pytest.mark.parametrize("name", sorted(CLIP_FACTS))
def test_reads_clip(name, tmp_path):
    path = CLIPS_DIR / name
    header, images = read_y4m(path)
    w, h, rate, n = CLIP_FACTS[name]
    assert (header.width, header.height, header.rate, len(images)) == (w, h, rate, n)
    assert header.colorspace == "420jpeg" and header.extension("YSCSS") == "420JPEG"
    assert all((im.width, im.height) == (w, h) for im in images)
    # The payload after the header is exactly what our writer produces (only the header differs).
    out = tmp_path / "copy.y4m"
    with Y4mWriter(out, rate=header.rate) as writer:
        for im in images:
            writer.write(im)
    raw, ours = path.read_bytes(), out.read_bytes()
    assert ours.startswith(f"YUV4MPEG2 W{w} H{h} F{rate[0]}:{rate[1]} Ip A1:1 C420jpeg\n".encode())
    assert ours.split(b"\n", 1)[1] == raw.split(b"\n", 1)[1]
    assert read_y4m(out)[1] == images


def test_frame_offsets():
    data = y4m(b"YUV4MPEG2 W2 H2\n", bytes(6), bytes(6))
    reader = Y4mReader(data)
    reader.read_frame()
    assert reader.frame_offset == 16
    reader.read_frame()
    assert reader.frame_offset == 28
    assert reader.read_frame() is None


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 33), st.integers(1, 33), st.integers(0, 3), st.integers(0, 2**32 - 1))
def test_round_trip_odd_sizes(tmp_path_factory, w, h, n, seed):
    rng = np.random.default_rng(seed)
    images = [random_image(rng, w, h) for _ in range(n)]
    path = tmp_path_factory.mktemp("y4m") / "r.y4m"
    with Y4mWriter(path, w, h, rate=(25, 1)) as writer:
        for im in images:
            writer.write(im)
    header, got = read_y4m(path)
    assert (header.width, header.height, header.rate) == (w, h, (25, 1))
    assert got == images


@pytest.mark.parametrize("tag, colorspace", [
    (b" C420jpeg", "420jpeg"), (b" C420mpeg2", "420mpeg2"), (b" C420paldv", "420paldv"),
    (b" C420", "420"), (b"", None)])
def test_accepts_every_420_colourspace(tag, colorspace):
    header, images = read_y4m(y4m(b"YUV4MPEG2 W4 H2 F25:1 Ip A1:1" + tag + b"\n", bytes(12)))
    assert header.colorspace == colorspace and len(images) == 1


def test_keeps_siting_and_range_metadata():
    header, _ = read_y4m(y4m(b"YUV4MPEG2 W2 H2 F30000:1001 It A128:117 C420mpeg2 "
                             b"XYSCSS=420MPEG2 XCOLORRANGE=FULL\n"))
    assert header.rate == (30000, 1001) and header.interlace == "t" and header.aspect == (128, 117)
    assert header.extension("YSCSS") == "420MPEG2" and header.color_range == "FULL"
    assert read_y4m(y4m(b"YUV4MPEG2 W2 H2 XCOLORRANGE=LIMITED\n"))[0].color_range == "LIMITED"
    assert read_y4m(y4m(b"YUV4MPEG2 W2 H2 XYSCSS=420PALDV\n"))[0].extension("YSCSS") == "420PALDV"


def test_frame_lines_may_carry_parameters():
    _, images = read_y4m(io.BytesIO(b"YUV4MPEG2 W2 H2\nFRAME Ixyz\n" + bytes(6)))
    assert len(images) == 1


@pytest.mark.parametrize("cs", ["444", "422", "411", "420p10", "444p10", "mono", "444alpha", "foo"])
def test_rejects_other_colourspaces(cs):
    with pytest.raises(UnsupportedError) as e:
        read_y4m(y4m(f"YUV4MPEG2 W4 H4 F25:1 C{cs}\n".encode()))
    assert f"unsupported Y4M colourspace C{cs}" in str(e.value)
    assert "4:2:0" in str(e.value)


@pytest.mark.parametrize("data, message", [
    (b"", "empty file: no Y4M header at offset 0"),
    (b"RIFF\x00\x00\x00\x00WEBPVP8 \n", "not a Y4M file"),
    (b"YUV4MPEG2 W4 H4", "truncated Y4M header at offset 0"),
    (b"YUV4MPEG2 W4 H4 " + b"X" * 5000, "Y4M header at offset 0 is longer than 4096 bytes"),
    (b"YUV4MPEG2 W0 H4\n", "Y4M width 0 out of range 1..16384"),
    (b"YUV4MPEG2 W4 H0\n", "Y4M height 0 out of range 1..16384"),
    (b"YUV4MPEG2 W16385 H4\n", "Y4M width 16385 out of range 1..16384"),
    (b"YUV4MPEG2 W4 H99999999\n", "Y4M height 99999999 out of range 1..16384"),
    (b"YUV4MPEG2 W-4 H4\n", "Y4M width -4 out of range"),
    (b"YUV4MPEG2 H4\n", "no W (width) tag"),
    (b"YUV4MPEG2 W4\n", "no H (height) tag"),
    (b"YUV4MPEG2 Wabc H4\n", "bad Y4M header tag 'Wabc' at offset 10"),
    (b"YUV4MPEG2 W4 H4 F30\n", "bad Y4M header tag 'F30' at offset 16"),
    (b"YUV4MPEG2 W4 H4 Q1\n", "bad Y4M header tag 'Q1' at offset 16"),
    (b"YUV4MPEG2 W4 H4 \xff\xfe\n", "garbage in Y4M header at offset 16"),
    (b"YUV4MPEG2 W4 H2\nFRAME\n" + bytes(11), "truncated Y4M frame 0 at offset 16: 11 of 12 bytes"),
    (b"YUV4MPEG2 W4 H2\nFRAME\n" + bytes(12) + b"FRAME\n", "truncated Y4M frame 1 at offset 34: 0 of 12"),
    (b"YUV4MPEG2 W4 H2\nFRAME\n" + bytes(12) + b"FRAM", "truncated Y4M FRAME line at offset 34"),
    (b"YUV4MPEG2 W4 H2\nFRAMX\n" + bytes(12), "expected FRAME at offset 16"),
    (b"YUV4MPEG2 W4 H2\nFRAME\n" + bytes(13) + b"\n", "expected FRAME at offset 34"),
])
def test_rejects_bad_containers(data, message):
    with pytest.raises(ContainerError) as e:
        read_y4m(io.BytesIO(data))
    assert message in str(e.value)


def test_header_round_trip():
    h = Y4mHeader(6, 4, (24000, 1001), "p", (1, 1), "420mpeg2", ("YSCSS=420MPEG2",))
    assert Y4mHeader.parse(h.to_bytes()[:-1]) == h


def test_writer_takes_size_from_first_frame_and_refuses_a_change(tmp_path):
    path = tmp_path / "out.y4m"
    writer = Y4mWriter(path)
    writer.write(Image.blank(4, 2, 7))
    with pytest.raises(UnsupportedError, match="frame 1 is 2x2 but the Y4M stream is 4x2"):
        writer.write(Image.blank(2, 2))
    assert not path.exists()
    writer.abort()
    assert os.listdir(tmp_path) == []


def test_writer_uses_a_temporary_name_until_close(tmp_path):
    path = tmp_path / "out.y4m"
    writer = Y4mWriter(path, 2, 2)
    writer.write(Image.blank(2, 2, 1))
    assert not path.exists() and len(os.listdir(tmp_path)) == 1
    writer.close()
    assert os.listdir(tmp_path) == ["out.y4m"]
    assert path.read_bytes() == b"YUV4MPEG2 W2 H2 F30:1 Ip A1:1 C420jpeg\nFRAME\n" + bytes([1] * 6)


def test_writer_removes_the_temporary_file_on_error(tmp_path):
    with pytest.raises(KeyError):
        with Y4mWriter(tmp_path / "out.y4m", 2, 2) as writer:
            writer.write(Image.blank(2, 2))
            raise KeyError("boom")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("w, h", [(1, 1), (5, 3), (16, 16), (33, 7)])
def test_image_from_i420_is_views_of_the_buffer(w, h, tmp_path):
    """The decoder's images: planes are views of one I420 buffer, which to_i420, i420_buffer, md5
    and the writers use as is."""
    cw, ch = (w + 1) // 2, (h + 1) // 2
    buf = np.random.default_rng(w * 100 + h).integers(0, 256, w * h + 2 * cw * ch).astype(np.uint8)
    image = Image.from_i420(buf, w, h)
    planes = Image(image.y.copy(), image.u.copy(), image.v.copy())  # the gathering path
    assert (image.width, image.height, image.u.shape, image.v.shape) == (w, h, (ch, cw), (ch, cw))
    assert image.to_i420() == planes.to_i420() == buf.tobytes()
    assert bytes(image.i420_buffer()) == buf.tobytes() and image.md5() == planes.md5()
    assert image == planes
    with Y4mWriter(str(tmp_path / "a.y4m"), rate=(30, 1)) as writer:
        writer.write(image)
    assert read_y4m(str(tmp_path / "a.y4m"))[1][0] == planes


def test_image_from_i420_refuses_a_buffer_of_another_size():
    with pytest.raises(ValueError, match="an I420 buffer of 4x4 holds 24 bytes"):
        Image.from_i420(np.zeros(23, np.uint8), 4, 4)
