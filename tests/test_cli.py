"""The ``excamera`` command line, run as ``python -m excamera`` in a child process.

Contract: exit 0 on success; on bad input exit 1 with exactly one stderr line starting
``excamera: error:``, no traceback, and no output file left behind; usage errors exit 2.
"""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

from codec.ivf import IvfWriter, read_ivf
from codec.y4m import read_y4m
from common import (CLIPS_DIR, DEMO_IVF, INVALID_STREAMS, ROOT, VP8_DIR, WEBP_IVF_DIR, md5_path,
                    parse_md5, parse_md5_line, parse_res, run_cli, stem, subprocess_env)

V001 = VP8_DIR / "vp80-00-comprehensive-001.ivf"
V018 = VP8_DIR / "vp80-00-comprehensive-018.ivf"  # frame 0 hidden
V1439 = VP8_DIR / "vp80-05-sharpness-1439.ivf"  # frame 1 hidden
WHOLE_MD5 = dict(reversed(l.split()) for l in (VP8_DIR / "vpxdec_whole_stream_md5.txt").read_text().splitlines())


def expected_lines(vector) -> list[str]:
    return [str(l) for l in parse_md5(md5_path(vector))]


def assert_one_error_line(proc, *fragments):
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("excamera: error: "), lines[0]
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


# -- help and usage ---------------------------------------------------------------------------

def test_help_works_and_imports_nothing_heavy():
    proc = run_cli("--help", timeout=60)    # (a hang-catcher; how fast it is belongs in a bench)
    assert proc.returncode == 0 and b"decode" in proc.stdout
    code = ("import sys, excamera.cli as c; c.build_parser(); "
            "heavy = {'numpy', 'numba', 'codec'} & set(sys.modules); assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, env=subprocess_env(), cwd=ROOT)


@pytest.mark.parametrize("args", [
    [], ["decode"], ["frobnicate"], ["decode", "x.ivf", "--frames", "-1"],
    ["decode", "x.ivf", "--frames", "many"], ["decode", "x.ivf", "-o", "x.mp4"],
    ["decode", "x.ivf", "-o", "-", "--frame-md5"], ["decode", "x.ivf", "--bogus"],
])
def test_usage_errors_exit_2(args):
    proc = run_cli(*args)
    assert proc.returncode == 2, proc.stderr
    assert "usage:" in proc.stderr and "Traceback" not in proc.stderr


def test_keyboard_interrupt_exits_130_quietly_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    import codec.ivf
    from excamera import cli
    from excamera.commands import decode

    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(decode, "_make_decoder", lambda state_in: object())
    monkeypatch.setattr(codec.ivf.IvfReader, "read_frame", interrupted)
    out = tmp_path / "out.y4m"
    assert cli.main(["decode", str(V001), "-o", str(out)]) == 130
    assert os.listdir(tmp_path) == [] and capsys.readouterr().err == ""


# -- decoding ---------------------------------------------------------------------------------

@pytest.mark.parametrize("vector", [V001, V018, V1439, WEBP_IVF_DIR / "blue-purple-pink.ivf", DEMO_IVF],
                         ids=stem)
def test_frame_md5_equals_the_md5_file(vector):
    proc = run_cli("decode", vector, "--frame-md5")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode().splitlines() == expected_lines(vector)
    assert proc.stderr == ""


def test_output_y4m(tmp_path):
    out = tmp_path / "out.y4m"
    proc = run_cli("decode", V018, "-o", out)
    assert proc.returncode == 0 and proc.stdout == b"", proc.stderr
    ivf_header, _ = read_ivf(V018)
    header, images = read_y4m(out)
    assert header.rate == (ivf_header.rate, ivf_header.scale)
    assert [im.md5() for im in images] == [l.md5 for l in parse_md5(md5_path(V018))]
    assert os.listdir(tmp_path) == ["out.y4m"]


@pytest.mark.parametrize("vector", [V001, V1439], ids=stem)
def test_output_i420_file_and_stdout(vector, tmp_path):
    out = tmp_path / "out.i420"
    proc = run_cli("decode", vector, "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert hashlib.md5(out.read_bytes()).hexdigest() == WHOLE_MD5[vector.name]
    proc = run_cli("decode", vector, "-o", "-")
    assert proc.returncode == 0, proc.stderr
    assert hashlib.md5(proc.stdout).hexdigest() == WHOLE_MD5[vector.name]


def test_summary_without_outputs():
    proc = run_cli("decode", V018)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout.decode()
    assert "29 frames (28 shown)" in text and "176x144" in text and WHOLE_MD5[V018.name] in text


def test_frames_limit():
    proc = run_cli("decode", V001, "--frame-md5", "--frames", "5")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode().splitlines() == expected_lines(V001)[:5]


def write_tail(vector, k, directory):
    """Frames k.. of ``vector`` as an IVF of the same name in ``directory``."""
    header, frames = read_ivf(vector)
    path = directory / vector.name
    with IvfWriter(path, header) as w:
        for f in frames[k:]:
            w.write(f.data, f.pts)
    return path


@pytest.mark.parametrize("vector, k", [(V001, 1), (V001, 15), (V018, 1), (V1439, 2), (DEMO_IVF, 17),
                                       (DEMO_IVF, 33), (DEMO_IVF, 50)], ids=lambda x: str(x) if isinstance(x, int) else stem(x))
def test_state_out_then_state_in_equals_whole_decode(vector, k, tmp_path):
    state = tmp_path / "state.bin"
    head = run_cli("decode", vector, "--frame-md5", "--frames", k, "--state-out", state)
    assert head.returncode == 0, head.stderr
    (tmp_path / "tail").mkdir()
    tail_ivf = write_tail(vector, k, tmp_path / "tail")
    tail = run_cli("decode", tail_ivf, "--frame-md5", "--state-in", state)
    assert tail.returncode == 0, tail.stderr
    # The tail file numbers its frames from 1 again; shift them back to the whole stream's.
    shifted = []
    for line in tail.stdout.decode().splitlines():
        l = parse_md5_line(line)
        shifted.append(f"{l.md5}  {stem(vector)}-{l.width}x{l.height}-{l.number + k:04d}.i420")
    assert head.stdout.decode().splitlines() + shifted == expected_lines(vector)


# -- bad input: exit 1, one line, nothing left behind -------------------------------------------

def _bytes_of(vector):
    return vector.read_bytes()


def _forge_size(width, height):
    def build(tmp):
        data = bytearray(_bytes_of(V001))
        assert data[44 + 3:44 + 6] == b"\x9d\x01\x2a"
        data[44 + 6:44 + 10] = struct.pack("<HH", width, height)
        return bytes(data)
    return build


def _interframe_first(tmp):
    header, frames = read_ivf(V001)
    path = tmp / "inter.ivf"
    with IvfWriter(path, header) as w:
        for f in frames[1:]:
            w.write(f.data)
    return path.read_bytes()


def _patch_frame_size(size):
    def build(tmp):
        data = bytearray(_bytes_of(V001))
        _, frames = read_ivf(V001)
        data[frames[3].offset:frames[3].offset + 4] = struct.pack("<I", size)
        return bytes(data)
    return build


def _truncated_frame(tmp):
    data = _bytes_of(V001)
    _, frames = read_ivf(V001)
    return data[:frames[-1].offset + 12 + len(frames[-1].data) // 2]


def _wrong_fourcc(tmp):
    data = bytearray(_bytes_of(V001))
    data[8:12] = b"VP90"
    return bytes(data)


_FRAME3 = read_ivf(V001)[1][3].offset
_LAST = read_ivf(V001)[1][-1]

BAD_INPUTS = {
    "empty": (lambda tmp: b"", ["truncated IVF header"]),
    "random-bytes": (lambda tmp: np.random.default_rng(7).integers(0, 256, 1000, np.uint8).tobytes(),
                     ["not an IVF file"]),
    "y4m-not-ivf": (lambda tmp: (CLIPS_DIR / "RTn23_80x44p15_15f.y4m").read_bytes(), ["not an IVF file"]),
    "wrong-fourcc": (_wrong_fourcc, ["unsupported codec fourcc b'VP90'"]),
    "truncated-header": (lambda tmp: _bytes_of(V001)[:20], ["truncated IVF header: 20 of 32 bytes"]),
    "truncated-frame": (_truncated_frame, [f"frame {_LAST.index} (offset {_LAST.offset})", "claims"]),
    "frame-beyond-file": (_patch_frame_size(10_000_000), [f"frame 3 (offset {_FRAME3})", "claims 10000000 bytes"]),
    "absurd-frame-size": (_patch_frame_size(0xFFFFFFF0), [f"frame 3 (offset {_FRAME3})", "absurd IVF frame size"]),
    "keyframe-0x0": (_forge_size(0, 0), ["frame 0 (offset 32)"]),
    "keyframe-16383x16383": (_forge_size(16383, 16383), ["frame 0 (offset 32)"]),
    "interframe-first": (_interframe_first, ["frame 0 (offset 32)"]),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_and_leaves_nothing(case, tmp_path):
    build, fragments = BAD_INPUTS[case]
    data = build(tmp_path)
    for p in tmp_path.iterdir():
        p.unlink()
    src = tmp_path / "in.ivf"
    src.write_bytes(data)
    for output in ("out.y4m", "out.i420"):
        proc = run_cli("decode", "in.ivf", "-o", output, "--state-out", "out.state", cwd=tmp_path,
                       timeout=120)
        assert_one_error_line(proc, "excamera: error: in.ivf", *fragments)
        assert os.listdir(tmp_path) == ["in.ivf"]
    proc = run_cli("decode", "in.ivf", "--frame-md5", cwd=tmp_path, timeout=120)
    assert_one_error_line(proc, *fragments)


def test_missing_input_and_unwritable_output(tmp_path):
    assert_one_error_line(run_cli("decode", tmp_path / "nope.ivf"), "nope.ivf: No such file or directory")
    proc = run_cli("decode", V001, "-o", tmp_path / "no" / "such" / "dir.y4m")
    assert_one_error_line(proc, "dir.y4m: No such file or directory")


def test_corrupt_state_file(tmp_path):
    state = tmp_path / "bad.state"
    state.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, np.uint8).tobytes())
    proc = run_cli("decode", V001, "--state-in", state, "-o", tmp_path / "out.y4m")
    assert_one_error_line(proc, f"excamera: error: {state}: ")
    assert os.listdir(tmp_path) == ["bad.state"]
    state.write_bytes(b"")
    assert_one_error_line(run_cli("decode", V001, "--state-in", state), f"{state}: ")


def test_state_from_a_stream_of_another_size(tmp_path):
    state = tmp_path / "cif.state"  # 352x288, applied to 176x144 interframes
    assert run_cli("decode", DEMO_IVF, "--frames", 3, "--state-out", state).returncode == 0
    (tmp_path / "tail").mkdir()
    tail = write_tail(V001, 1, tmp_path / "tail")
    proc = run_cli("decode", tail, "--state-in", state, "-o", tmp_path / "out.i420",
                   "--state-out", tmp_path / "s2")
    assert_one_error_line(proc)
    assert sorted(os.listdir(tmp_path)) == ["cif.state", "tail"]


@pytest.mark.parametrize("stream", INVALID_STREAMS, ids=stem)
def test_invalid_streams_fail_with_one_line(stream, tmp_path):
    proc = run_cli("decode", stream, "-o", tmp_path / "out.y4m", timeout=120)
    assert_one_error_line(proc, f"{stream}: frame ")
    first_corrupt = parse_res(stream.with_name(stream.name + ".res")).index(7)
    frame_no = int(proc.stderr.split(": frame ")[1].split()[0])
    assert frame_no <= first_corrupt
    assert os.listdir(tmp_path) == []
