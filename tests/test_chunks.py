"""ExCamera's chunk operations: the libvpx first pass (media.firstpass), entry digests,
terminate-chunk and stitch (codec.chunks, media.webm), their CLI faces, and state dumps taken
after any frame of a chunk.

Streams with hidden frames: vp80-00-comprehensive-018 (frame 0, a hidden key frame) and
vp80-05-sharpness-1439 (frame 1). Multi-chunk chains are made by cutting one stream into pieces,
each recording the digest of the state the pieces before it leave; stitching them must give the
stream back.
"""

from __future__ import annotations

import dataclasses
import hashlib
from fractions import Fraction
import subprocess

import numpy as np
import pytest

from codec.chunks import (NO_ENTRY_STATE, check_entry, entry_digest_bytes, frame_tag, presentation_times,
                          read_chunk, stitch, stitch_chunks, terminate_chunk, write_chunk,
                          write_stitched_ivf)
from codec.decoder import decode_frame
from codec.errors import ContainerError, CorruptFrameError, StateError
from codec.image import Image
from codec.ivf import IvfHeader, IvfWriter, read_ivf
from codec.state import DecoderState
from codec.y4m import Y4mWriter
from common import CLIPS_DIR, VP8_DIR, requires_tool, run_cli

V018 = VP8_DIR / "vp80-00-comprehensive-018.ivf"    # 29 frames, frame 0 a hidden key frame
V1439 = VP8_DIR / "vp80-05-sharpness-1439.ivf"      # 16 frames, frame 1 hidden
FOREMAN = CLIPS_DIR / "foreman_qcif_176x144_10f.y4m"
RTN = CLIPS_DIR / "RTn23_80x44p15_15f.y4m"


# -- helpers ----------------------------------------------------------------------------------------

def clip(path, n=None) -> tuple[list[Image], tuple[int, int]]:
    from media.video import open_video

    with open_video(path) as video:
        images = [im for _, im in zip(range(n or 10 ** 9), video)]
        return images, video.rate


def frames_of(path) -> list[bytes]:
    return [f.data for f in read_ivf(path)[1]]


def decode_all(frames, state=None) -> tuple[list[str], DecoderState]:
    """md5 of each shown picture, and the state after the last frame."""
    state = state if state is not None else DecoderState()
    md5s = []
    for data in frames:
        state, image = decode_frame(state, data)
        if image is not None:
            md5s.append(image.md5())
    return md5s, state


def states_along(frames, state=None) -> list[DecoderState]:
    """The state before each frame and after the last: len(frames) + 1 states."""
    states = [state if state is not None else DecoderState()]
    for data in frames:
        states.append(decode_frame(states[-1], data)[0])
    return states


def cut(frames, bounds, directory, rate=(30, 1), name="chunk") -> list:
    """Chunk files of ``frames[a:b]`` for consecutive (a, b), each recording the state before it."""
    states = states_along(frames)
    paths = []
    for k, (a, b) in enumerate(bounds):
        path = directory / f"{name}{k}.ivf"
        write_chunk(path, dict(rate=rate[0], scale=rate[1]), frames[a:b], states[a])
        paths.append(path)
    return paths


def raw_images(data: bytes, width: int, height: int) -> list[str]:
    """md5 of each I420 picture in a raw stream of pictures of one size."""
    size = width * height + 2 * ((width + 1) // 2) * ((height + 1) // 2)
    assert len(data) % size == 0
    return [hashlib.md5(data[i:i + size]).hexdigest() for i in range(0, len(data), size)]


def vpxdec_md5s(path, width, height) -> list[str]:
    """vpxdec's pictures of ``path`` (IVF or WebM), one md5 each; vpxdec must say nothing."""
    proc = subprocess.run(["vpxdec", "--i420", "-o", "-", str(path)], capture_output=True, timeout=300)
    assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr
    return raw_images(proc.stdout, width, height)


def ffmpeg_md5s(path, width, height) -> list[str]:
    """ffmpeg's pictures of ``path`` (raw yuv420p, no frame-rate conversion); no warnings."""
    proc = subprocess.run(["ffmpeg", "-v", "warning", "-nostdin", "-i", str(path), "-f", "rawvideo",
                           "-pix_fmt", "yuv420p", "-fps_mode", "passthrough", "-"],
                          capture_output=True, timeout=300)
    assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr
    return raw_images(proc.stdout, width, height)


def assert_one_error_line(proc, *fragments):
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("excamera: error: "), lines[0]
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def leftovers(directory) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.fixture(scope="module")
def foreman():
    images, rate = clip(FOREMAN)
    return images, rate


@pytest.fixture(scope="module")
def first_pass(foreman):
    """libvpx's chunk of all 10 foreman frames at cq-level 30."""
    from media.firstpass import libvpx_first_pass

    images, rate = foreman
    return libvpx_first_pass(images, rate, 30)


# -- 1. the libvpx first pass ---------------------------------------------------------------------

def test_first_pass_is_one_key_frame_then_interframes(foreman, first_pass):
    images, _ = foreman
    tags = [frame_tag(f) for f in first_pass]
    assert [t.key_frame for t in tags] == [True] + [False] * (len(first_pass) - 1)
    assert (tags[0].width, tags[0].height) == (176, 144)
    md5s, _ = decode_all(first_pass)
    assert len(md5s) == len(images)


def test_first_pass_is_deterministic(foreman, first_pass):
    from media.firstpass import libvpx_first_pass

    images, rate = foreman
    assert libvpx_first_pass(images, rate, 30) == first_pass
    assert libvpx_first_pass(images, rate, 31) != first_pass


def test_first_pass_decodes_as_ffmpeg_decodes_it(first_pass):
    """Our decoder against ffmpeg's VP8 decoder (bit-exact with libvpx), through PyAV."""
    import av

    ctx = av.codec.CodecContext.create("vp8", "r")
    theirs = []
    for data in first_pass:
        for frame in ctx.decode(av.Packet(data)):
            theirs.append(_av_md5(frame))
    for frame in ctx.decode(None):
        theirs.append(_av_md5(frame))
    assert decode_all(first_pass)[0] == theirs


def _av_md5(frame) -> str:
    h = hashlib.md5()
    for plane in frame.planes:
        rows = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
        h.update(np.ascontiguousarray(rows[:, :plane.width]).tobytes())
    return h.hexdigest()


def test_first_pass_quality_follows_cq_level():
    from codec.bitstream import parse_frame
    from media.firstpass import libvpx_first_pass

    images, rate = clip(RTN, 6)
    quantizers = {}
    for cq in (10, 50):
        frames = libvpx_first_pass(images, rate, cq)
        state, qs = DecoderState(), []
        for data in frames:
            qs.append(parse_frame(state, data).header.quant.y_ac)
            state = decode_frame(state, data)[0]
        quantizers[cq] = (qs, sum(map(len, frames)))
    (q10, size10), (q50, size50) = quantizers[10], quantizers[50]
    assert all(b > a for a, b in zip(q10[1:], q50[1:])) and size50 < size10


def test_first_pass_odd_size_and_padding_do_not_matter():
    """79x43: PyAV pads the planes; the output must not depend on what the padding held."""
    from media.firstpass import libvpx_first_pass

    images, rate = clip(RTN, 5)
    odd = [Image(im.y[:43, :79].copy(), im.u[:22, :40].copy(), im.v[:22, :40].copy()) for im in images]
    a = libvpx_first_pass(odd, rate, 20)
    assert a == libvpx_first_pass(odd, rate, 20)
    assert frame_tag(a[0]).width == 79 and frame_tag(a[0]).height == 43
    assert len(decode_all(a)[0]) == 5


def test_first_pass_padding_is_filled(foreman):
    """The bytes past each plane's width repeat the row's last pixel (nothing left to chance)."""
    import av

    from media.firstpass import _av_frame

    image = foreman[0][0]
    small = Image(image.y[:, :170].copy(), image.u[:, :85].copy(), image.v[:, :85].copy())
    frame = _av_frame(av, small, 0, Fraction(1, 30))
    for plane, pixels in zip(frame.planes, (image.y[:, :170], image.u[:, :85], image.v[:, :85])):
        rows = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
        assert plane.line_size > plane.width
        assert np.array_equal(rows[:, :plane.width], pixels)
        assert (rows[:, plane.width:] == pixels[:, -1:]).all()


@requires_tool("vpxenc")
def test_first_pass_equals_vpxenc_with_excameras_flags(foreman, first_pass, tmp_path):
    """The settings land in libvpx as documented: vpxenc with the same flags makes the same bytes
    (PyAV's libvpx and the system's may differ in version; they agree on 1.12 vs 1.16)."""
    from media.firstpass import CPU_USED, KEY_FRAME_DISTANCE, MIN_Q, TARGET_KBPS

    images, rate = foreman
    y4m = tmp_path / "in.y4m"
    with Y4mWriter(y4m, rate=rate) as w:
        for im in images:
            w.write(im)
    out = tmp_path / "vpxenc.ivf"
    subprocess.run(["vpxenc", "--codec=vp8", "--ivf", "--good", f"--cpu-used={CPU_USED}", "--end-usage=cq",
                    f"--min-q={MIN_Q}", "--max-q=63", "--cq-level=30", f"--target-bitrate={TARGET_KBPS}",
                    "--undershoot-pct=100", "--passes=1", "--auto-alt-ref=1",
                    f"--lag-in-frames={len(images)}", f"--kf-min-dist={KEY_FRAME_DISTANCE}",
                    f"--kf-max-dist={KEY_FRAME_DISTANCE}", "--threads=1", "--tune=ssim", "-q",
                    "-o", str(out), str(y4m)], check=True, capture_output=True, timeout=300)
    assert frames_of(out) == first_pass


@pytest.mark.parametrize("frames, fps, cq, message", [
    ([], (30, 1), 30, "no frames"),
    (None, (30, 1), 64, "cq_level"),
    (None, (30, 1), -1, "cq_level"),
    (None, (30, 1), 30.0, "cq_level"),
    (None, (1, 1), 30, "1 frame/s or less"),
    (None, (0, 1), 30, "fps"),
])
def test_first_pass_rejects_bad_arguments(frames, fps, cq, message, foreman):
    from media.firstpass import libvpx_first_pass

    with pytest.raises(ValueError, match=message):
        libvpx_first_pass(foreman[0][:3] if frames is None else frames, fps, cq)


def test_first_pass_rejects_mixed_sizes(foreman):
    from media.firstpass import libvpx_first_pass

    with pytest.raises(ValueError, match="frame 2 is 16x16"):
        libvpx_first_pass(foreman[0][:2] + [Image.blank(16, 16)], (30, 1), 30)


# -- 5. a state dumped after any frame of a chunk continues bit-exactly ---------------------------

@pytest.mark.parametrize("source", ["first_pass", "V1439"])
def test_state_dump_after_every_frame_continues_bit_exactly(source, first_pass):
    frames = first_pass if source == "first_pass" else frames_of(V1439)
    whole, final = decode_all(frames)
    states = states_along(frames)
    for k in range(1, len(frames)):
        restored = DecoderState.from_bytes(states[k].to_bytes())
        assert restored == states[k] and restored.digest() == states[k].digest()
        head, _ = decode_all(frames[:k])
        tail, end = decode_all(frames[k:], restored)
        assert head + tail == whole, f"split after frame {k}"
        assert end == final


def test_state_dump_through_the_cli_after_each_frame(first_pass, tmp_path):
    src = tmp_path / "chunk.ivf"
    write_chunk(src, {}, first_pass, None)
    whole = run_cli("decode", src, "--frame-md5")
    assert whole.returncode == 0, whole.stderr
    expected = [l.split()[0] for l in whole.stdout.decode().splitlines()]
    for k in (1, 4, len(first_pass) - 1):
        state = tmp_path / f"s{k}"
        head = run_cli("decode", src, "--frame-md5", "--frames", k, "--state-out", state)
        tail_ivf = tmp_path / f"tail{k}.ivf"
        write_chunk(tail_ivf, {}, first_pass[k:], DecoderState.from_bytes(state.read_bytes()))
        tail = run_cli("decode", tail_ivf, "--frame-md5", "--state-in", state)
        assert head.returncode == tail.returncode == 0, head.stderr + tail.stderr
        got = [l.split()[0] for l in (head.stdout + tail.stdout).decode().splitlines()]
        assert got == expected, f"split after frame {k}"


# -- 3. entry digests and chunk files -------------------------------------------------------------

def test_entry_digest_bytes(first_pass):
    assert entry_digest_bytes(None) == NO_ENTRY_STATE == bytes(4)
    assert entry_digest_bytes(DecoderState()) == NO_ENTRY_STATE
    states = states_along(first_pass[:3])[1:]
    digests = [entry_digest_bytes(s) for s in states]
    assert digests == [bytes.fromhex(s.digest())[:4] for s in states]
    assert len(set(digests)) == 3 and NO_ENTRY_STATE not in digests


def test_write_chunk_records_the_entry_state(first_pass, tmp_path):
    states = states_along(first_pass)
    a, b = tmp_path / "a.ivf", tmp_path / "b.ivf"
    header = write_chunk(a, dict(rate=30000, scale=1001), first_pass[:4], None)
    assert header.frame_count == 4 and header.user == NO_ENTRY_STATE
    write_chunk(b, dict(rate=30000, scale=1001), first_pass[4:], states[4])
    for path, frames, user in ((a, first_pass[:4], NO_ENTRY_STATE), (b, first_pass[4:], entry_digest_bytes(states[4]))):
        chunk = read_chunk(path)
        assert chunk.frames == frames
        assert chunk.header == IvfHeader(width=176, height=144, rate=30000, scale=1001,
                                         frame_count=len(frames), user=user)
    raw = b.read_bytes()
    assert raw[28:32] == bytes.fromhex(states[4].digest())[:4]


def test_write_chunk_refuses_what_nothing_could_decode(first_pass, tmp_path):
    with pytest.raises(ValueError, match="must start with a key frame"):
        write_chunk(tmp_path / "x.ivf", {}, first_pass[1:], None)
    with pytest.raises(ValueError, match="at least one frame"):
        write_chunk(tmp_path / "x.ivf", {}, [], None)
    with pytest.raises(ValueError, match="user"):
        write_chunk(tmp_path / "x.ivf", dict(user=b"abcd"), first_pass, None)
    assert leftovers(tmp_path) == []


# -- 2. terminate-chunk ---------------------------------------------------------------------------

def assert_terminated(state: DecoderState):
    assert state.last is state.golden is state.altref
    assert state == DecoderState.from_bytes(state.to_bytes())


def test_terminate_first_pass_chunk(first_pass):
    before_md5, before = decode_all(first_pass)
    assert before.golden is not before.last  # libvpx left the key frame in golden
    frames, exit_state = terminate_chunk(None, first_pass)
    assert len(frames) == len(first_pass) and frames[:-1] == first_pass[:-1]
    assert frames[-1] != first_pass[-1]
    md5s, state = decode_all(frames)
    assert md5s == before_md5
    assert state == exit_state
    assert_terminated(exit_state)
    # the pictures in last are the same as the original chunk's last
    assert all(np.array_equal(a, b) for a, b in zip(exit_state.last.interior(), before.last.interior()))
    # and terminating again changes nothing
    again, again_state = terminate_chunk(None, frames)
    assert again == frames and again_state == exit_state


def test_terminate_a_chunk_that_starts_mid_stream(first_pass):
    states = states_along(first_pass)
    frames, exit_state = terminate_chunk(states[3], first_pass[3:7])
    assert decode_all(frames, states[3])[0] == decode_all(first_pass[3:7], states[3])[0]
    assert_terminated(exit_state)
    assert exit_state.last is not None and exit_state != states[7]


@pytest.mark.parametrize("stop", [1, 2, 3, 8, 16])
def test_terminate_chunks_with_hidden_frames(stop):
    """1439 frame 1 is hidden: chunks that end on it drop it and terminate on frame 0."""
    frames = frames_of(V1439)[:stop]
    hidden = [not frame_tag(f).show_frame for f in frames]
    out, exit_state = terminate_chunk(None, frames)
    expected_len = stop - 1 if hidden[-1] else stop
    assert len(out) == expected_len
    assert decode_all(out)[0] == decode_all(frames)[0]
    assert_terminated(exit_state)


def test_terminate_on_a_hidden_key_frame_stream():
    frames = frames_of(V018)[:5]  # frame 0 hidden key frame
    out, exit_state = terminate_chunk(None, frames)
    assert decode_all(out)[0] == decode_all(frames)[0]
    assert_terminated(exit_state)
    with pytest.raises(CorruptFrameError, match="all hidden"):
        terminate_chunk(None, frames[:1])


def test_terminate_reports_bad_frames(first_pass):
    with pytest.raises(ValueError, match="no frames"):
        terminate_chunk(None, [])
    with pytest.raises(CorruptFrameError, match="^frame 2: "):
        terminate_chunk(None, first_pass[:2] + [b"\x01"])
    with pytest.raises(CorruptFrameError, match="^frame 0: "):
        terminate_chunk(None, first_pass[1:3])  # an interframe with nothing before it


@requires_tool("vpxdec")
def test_terminated_chunk_decodes_in_vpxdec(first_pass, tmp_path):
    frames, _ = terminate_chunk(None, frames_of(V1439))
    path = tmp_path / "t.ivf"
    write_chunk(path, {}, frames, None)
    assert vpxdec_md5s(path, 352, 288) == decode_all(frames)[0]


def test_cli_terminate_chunk(first_pass, tmp_path):
    states = states_along(first_pass)
    chunk = tmp_path / "c1.ivf"
    write_chunk(chunk, dict(rate=15, scale=1), first_pass[5:], states[5])
    s0 = tmp_path / "s0"
    s0.write_bytes(states[5].to_bytes())
    out, s = tmp_path / "t.ivf", tmp_path / "s"
    proc = run_cli("terminate-chunk", chunk, "-o", out, "--state-in", s0, "--state-out", s)
    assert proc.returncode == 0, proc.stderr
    frames, exit_state = terminate_chunk(states[5], first_pass[5:])
    assert exit_state.digest() in proc.stdout.decode()
    got = read_chunk(out)
    assert got.frames == frames
    assert got.header == dataclasses.replace(read_chunk(chunk).header, frame_count=len(frames))
    assert DecoderState.from_bytes(s.read_bytes()) == exit_state


def test_cli_terminate_chunk_from_a_key_frame(first_pass, tmp_path):
    chunk, out = tmp_path / "c0.ivf", tmp_path / "t.ivf"
    write_chunk(chunk, {}, first_pass[:5], None)
    proc = run_cli("terminate-chunk", chunk, "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert read_chunk(out).frames == terminate_chunk(None, first_pass[:5])[0]


def test_cli_terminate_chunk_bad_input(first_pass, tmp_path):
    states = states_along(first_pass)
    chunk = tmp_path / "c1.ivf"
    write_chunk(chunk, {}, first_pass[5:], states[5])
    wrong = tmp_path / "wrong.state"
    wrong.write_bytes(states[4].to_bytes())
    out = tmp_path / "out"
    out.mkdir()
    cases = [
        (["--state-in", wrong], ["c1.ivf", "expects to start from decoder state",
                                 entry_digest_bytes(states[5]).hex(), entry_digest_bytes(states[4]).hex()]),
        ([], ["c1.ivf", "the empty state"]),  # no --state-in: the empty state
        (["--state-in", tmp_path / "missing.state"], ["missing.state"]),
    ]
    for extra, fragments in cases:
        proc = run_cli("terminate-chunk", chunk, "-o", out / "t.ivf", "--state-out", out / "s", *extra)
        assert_one_error_line(proc, *fragments)
        assert leftovers(out) == []
    # an interframe chunk that records no entry state
    bare = tmp_path / "bare.ivf"
    with IvfWriter(bare, IvfHeader(width=176, height=144)) as w:
        for f in first_pass[5:]:
            w.write(f)
    assert_one_error_line(run_cli("terminate-chunk", bare, "-o", out / "t.ivf"), "bare.ivf",
                          "starts with an interframe")
    # a corrupt frame: named by file, frame and offset
    broken = tmp_path / "broken.ivf"
    write_chunk(broken, {}, first_pass[:2] + [first_pass[2][:3]], None)
    assert_one_error_line(run_cli("terminate-chunk", broken, "-o", out / "t.ivf"),
                          "broken.ivf: frame 2 (offset ")
    assert_one_error_line(run_cli("terminate-chunk", chunk, "-o", tmp_path / "nodir" / "t.ivf",
                                  "--state-in", tmp_path / "missing"), "missing")
    s0 = tmp_path / "s0"
    s0.write_bytes(states[5].to_bytes())
    assert_one_error_line(run_cli("terminate-chunk", chunk, "-o", tmp_path / "nodir" / "t.ivf",
                                  "--state-in", s0), "nodir")
    assert leftovers(out) == [] and not (tmp_path / "nodir").exists()


# -- 4. stitch ------------------------------------------------------------------------------------

def test_stitch_gives_back_the_stream_it_was_cut_from(first_pass, tmp_path):
    paths = cut(first_pass, [(0, 4), (4, 7), (7, 10)], tmp_path, rate=(30000, 1001))
    stitched = stitch_chunks(paths)
    assert stitched.frames == first_pass == stitch(paths)
    assert (stitched.width, stitched.height, stitched.rate, stitched.scale) == (176, 144, 30000, 1001)
    assert stitched.pts == list(range(10))
    assert stitched.state == states_along(first_pass)[-1]
    out = tmp_path / "out.ivf"
    write_stitched_ivf(out, stitched)
    header, records = read_ivf(out)
    assert header == IvfHeader(width=176, height=144, rate=30000, scale=1001, frame_count=10)
    assert [r.data for r in records] == first_pass and [r.pts for r in records] == list(range(10))


@pytest.mark.parametrize("vector, bounds", [
    (V1439, [(0, 2), (2, 9), (9, 16)]),     # chunk 0 ends on the hidden frame
    (V1439, [(0, 1), (1, 3), (3, 16)]),     # chunk 1 starts with it
    (V018, [(0, 1), (1, 10), (10, 29)]),    # chunk 0 is the hidden key frame alone
])
def test_stitch_with_hidden_frames(vector, bounds, tmp_path):
    frames = frames_of(vector)
    header = read_ivf(vector)[0]
    paths = cut(frames, bounds, tmp_path, rate=(header.rate, header.scale))
    stitched = stitch_chunks(paths)
    assert stitched.frames == frames
    tags = [frame_tag(f) for f in frames]
    shown = [t.show_frame for t in tags]
    # a hidden frame shares the pts of the shown frame after it; shown frames count up
    assert [p for p, s in zip(stitched.pts, shown) if s] == list(range(sum(shown)))
    for i, s in enumerate(shown):
        if not s:
            assert stitched.pts[i] == stitched.pts[i + 1]


def test_presentation_times():
    from codec.header import FrameTag

    def tag(show):
        return FrameTag(False, 0, show, 0)
    assert presentation_times([tag(s) for s in (1, 0, 1, 1, 0, 0, 1, 0)]) == [0, 1, 1, 2, 3, 3, 3, 4]


@requires_tool("vpxdec")
@requires_tool("ffmpeg")
@pytest.mark.parametrize("vector, bounds", [
    (V1439, [(0, 2), (2, 9), (9, 16)]),
    (V018, [(0, 1), (1, 10), (10, 29)]),
    ("first_pass", [(0, 5), (5, 10)]),
])
def test_stitched_ivf_and_webm_decode_alike_everywhere(vector, bounds, first_pass, tmp_path):
    if vector == "first_pass":
        frames, rate = first_pass, (30, 1)
    else:
        frames = frames_of(vector)
        h = read_ivf(vector)[0]
        rate = (h.rate, h.scale)
    paths = cut(frames, bounds, tmp_path, rate=rate)
    ivf, webm = tmp_path / "s.ivf", tmp_path / "s.webm"
    for out in (ivf, webm):
        proc = run_cli("stitch", *paths, "-o", out)
        assert proc.returncode == 0 and not proc.stderr, proc.stderr
    ours = decode_all(frames)[0]
    w, h = frame_tag(frames[0]).width, frame_tag(frames[0]).height
    assert vpxdec_md5s(ivf, w, h) == ours
    assert vpxdec_md5s(webm, w, h) == ours
    assert ffmpeg_md5s(ivf, w, h) == ours
    assert ffmpeg_md5s(webm, w, h) == ours
    # and the WebM's packets are our frames, in order, hidden ones included
    import av

    with av.open(str(webm)) as container:
        packets = [bytes(p) for p in container.demux(video=0) if p.size]
    assert packets == frames


def test_webm_timestamps_follow_libvpx(tmp_path):
    """A hidden frame shares the timestamp of the shown frame after it, and lasts 0."""
    import av

    frames = frames_of(V1439)
    paths = cut(frames, [(0, 16)], tmp_path, rate=(30, 1))
    webm = tmp_path / "s.webm"
    assert run_cli("stitch", *paths, "-o", webm).returncode == 0
    with av.open(str(webm)) as container:
        packets = [(p.pts, p.time_base) for p in container.demux(video=0) if p.size]
    ms = [float(pts * tb * 1000) for pts, tb in packets]
    assert len(ms) == 16 and ms[1] == ms[2]  # frame 1 is hidden
    shown = ms[:1] + ms[2:]
    assert all(b > a for a, b in zip(shown, shown[1:]))
    assert abs(shown[-1] - 14 * 1000 / 30) <= 1 and abs(ms[1] - 1000 / 30) <= 1


def test_stitch_refuses_chunks_that_do_not_chain(first_pass, tmp_path):
    paths = cut(first_pass, [(0, 4), (4, 7), (7, 10)], tmp_path)
    states = states_along(first_pass)
    # terminating chunk 0 changes its exit state: chunk 1 no longer fits after it
    terminated = tmp_path / "t0.ivf"
    write_chunk(terminated, {}, terminate_chunk(None, first_pass[:4])[0], None)
    _, exit_t = terminate_chunk(None, first_pass[:4])
    with pytest.raises(StateError) as e:
        stitch([terminated, paths[1], paths[2]])
    msg = str(e.value)
    assert "chunk1.ivf: chunk 1" in msg and entry_digest_bytes(states[4]).hex() in msg
    assert entry_digest_bytes(exit_t).hex() in msg
    with pytest.raises(StateError, match="chunk2.ivf: chunk 1"):
        stitch([paths[0], paths[2]])
    with pytest.raises(StateError, match="chunk1.ivf: chunk 0 expects .* the empty state"):
        stitch([paths[1], paths[2]])
    with pytest.raises(ValueError, match="no chunks"):
        stitch([])


def test_a_key_frame_decodes_alike_after_any_state(first_pass):
    """Why a chunk starting with a key frame may follow anything: the state after a key frame
    does not depend on the state before it, even with segmentation on and no map coded."""
    from codec.bitstream import new_frame, new_frame_header, write_frame
    from codec.header import FrameTag, Segmentation

    tag = FrameTag(True, 0, True, 0, 32, 32)
    state = DecoderState()
    seg = Segmentation(True, True, True, False, (0, 8, 16, 24), (0, 0, 0, 0), (128, 128, 128))
    f = new_frame(state, new_frame_header(state, tag, 40, segmentation=seg))
    f.segment_map[:] = [[1, 2], [3, 0]]
    first = write_frame(state, f)
    seg2 = Segmentation(True, False, True, False, (0, 8, 16, 24), (0, 0, 0, 0), (255, 255, 255))
    second = write_frame(state, new_frame(state, new_frame_header(state, tag, 40, segmentation=seg2)))
    after_first = decode_frame(DecoderState(), first)[0]
    assert after_first.segment_map.any()
    fresh = decode_frame(DecoderState(), second)[0]
    assert decode_frame(after_first, second)[0] == fresh
    for s in states_along(first_pass)[1::3]:
        assert decode_frame(s, first_pass[0])[0] == decode_frame(DecoderState(), first_pass[0])[0]


def test_stitch_names_the_damaged_chunk(first_pass, tmp_path):
    paths = cut(first_pass, [(0, 4), (4, 10)], tmp_path)
    raw = paths[1].read_bytes()
    paths[1].write_bytes(raw[:-5])  # the last frame record is cut short
    with pytest.raises(ContainerError, match="chunk1.ivf: .*claims"):
        stitch(paths)
    # a frame whose bytes are garbage
    bad = list(first_pass[4:])
    bad[2] = bad[2][:3]  # the tag alone: its first partition runs past the end
    write_chunk(paths[1], {}, bad, states_along(first_pass)[4])
    with pytest.raises(CorruptFrameError, match=r"chunk1.ivf: frame 2 \(offset \d+\)"):
        stitch(paths)
    empty = tmp_path / "empty.ivf"
    with IvfWriter(empty, IvfHeader()):
        pass
    with pytest.raises(ContainerError, match="empty.ivf: the chunk holds no frames"):
        stitch([paths[0], empty])


def test_stitch_refuses_mixed_frame_rates(first_pass, tmp_path):
    a = cut(first_pass, [(0, 4)], tmp_path, rate=(30, 1), name="a")[0]
    b = cut(first_pass, [(0, 4), (4, 10)], tmp_path, rate=(25, 1), name="b")[1]
    with pytest.raises(ContainerError, match="b1.ivf: chunk 1 has a frame rate of 25/1 .* 30/1"):
        stitch([a, b])


def test_check_entry_accepts_the_recorded_state(first_pass, tmp_path):
    paths = cut(first_pass, [(0, 4), (4, 10)], tmp_path)
    states = states_along(first_pass)
    check_entry(read_chunk(paths[1]), states[4])
    check_entry(read_chunk(paths[0]), DecoderState())
    check_entry(read_chunk(paths[0]), states[7])  # a key-frame chunk may follow anything
    with pytest.raises(StateError):
        check_entry(read_chunk(paths[1]), states[5])


def test_cli_stitch_bad_input_is_one_line_and_writes_nothing(first_pass, tmp_path):
    paths = cut(first_pass, [(0, 4), (4, 7), (7, 10)], tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    states = states_along(first_pass)
    bare = tmp_path / "bare.ivf"
    with IvfWriter(bare, IvfHeader(width=176, height=144)) as w:
        for f in first_pass[4:7]:
            w.write(f)
    garbage = tmp_path / "garbage.ivf"
    garbage.write_bytes(b"RIFF" + bytes(60))
    cases = [
        ([paths[0], paths[2]], ["chunk2.ivf: chunk 1 expects to start from decoder state",
                                entry_digest_bytes(states[7]).hex(), entry_digest_bytes(states[4]).hex()]),
        ([paths[1]], ["chunk1.ivf: chunk 0", "the empty state"]),
        ([paths[0], bare], ["bare.ivf: chunk 1 records no entry state", "interframe"]),
        ([paths[0], garbage], ["garbage.ivf", "not an IVF file"]),
        ([paths[0], tmp_path / "missing.ivf"], ["missing.ivf", "No such file"]),
        ([], ["no chunks"]),
    ]
    for ext in ("ivf", "webm"):
        for chunks, fragments in cases:
            proc = run_cli("stitch", *chunks, "-o", out / f"s.{ext}")
            assert_one_error_line(proc, *fragments)
            assert leftovers(out) == []
        proc = run_cli("stitch", *paths, "-o", tmp_path / "nodir" / f"s.{ext}")
        assert_one_error_line(proc, "nodir", "No such file")
        assert not (tmp_path / "nodir").exists()
    usage = run_cli("stitch", *paths, "-o", out / "s.mp4")
    assert usage.returncode == 2 and "must end in .ivf or .webm" in usage.stderr
    assert leftovers(out) == []


def test_cli_stitch_reports_what_it_wrote(first_pass, tmp_path):
    paths = cut(first_pass, [(0, 5), (5, 10)], tmp_path)
    proc = run_cli("stitch", *paths, "-o", tmp_path / "s.ivf")
    assert proc.returncode == 0, proc.stderr
    assert "10 frames (10 shown) from 2 chunks, 176x144" in proc.stdout.decode()
    assert states_along(first_pass)[-1].digest() in proc.stdout.decode()
    assert frames_of(tmp_path / "s.ivf") == first_pass


def test_terminated_chunks_chain_when_recorded_against_the_terminated_state(first_pass, tmp_path):
    """The ExCamera flow in miniature: chunk 0 terminated, chunk 1 recorded against the exit
    state it leaves (here chunk 1's frames are the originals, so only its first frame's pictures
    could differ; stitch checks digests, not pictures)."""
    t0, exit0 = terminate_chunk(None, first_pass[:5])
    a, b = tmp_path / "a.ivf", tmp_path / "b.ivf"
    write_chunk(a, {}, t0, None)
    write_chunk(b, {}, first_pass[5:], exit0)
    stitched = stitch_chunks([a, b])
    assert stitched.frames == t0 + first_pass[5:]
    assert stitched.state == decode_all(t0 + first_pass[5:])[1]


def test_cli_help_lists_the_chunk_commands():
    proc = run_cli("--help")
    assert b"terminate-chunk" in proc.stdout and b"stitch" in proc.stdout
