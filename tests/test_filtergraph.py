"""pipeline.filtergraph: ffmpeg's filtergraph syntax parsed, built with PyAV, and run; outputs
compared picture for picture with the ffmpeg binary's."""

from __future__ import annotations

import pytest
from common import CLIPS_DIR, ffmpeg_yuv, requires_tool

from codec.y4m import read_y4m
from pipeline.filtergraph import (
    FilterGraph,
    FilterGraphError,
    FilterSyntaxError,
    UnknownFilterError,
    parse,
    run_filter,
)
from pipeline.values import FrameBatch

FOREMAN = CLIPS_DIR / "foreman_qcif_176x144_10f.y4m"
CISCO = CLIPS_DIR / "CiscoVT2people_160x96_6fps_5f.y4m"
PARK = CLIPS_DIR / "park_joy_90p_8_420.y4m"
MIRROR = "[0]crop=iw/2:ih:0:0,split[a][b];[b]hflip[c];[a][c]hstack"


def batch(path, start=0) -> FrameBatch:
    header, images = read_y4m(path)
    return FrameBatch.from_images(images, start, header.rate)


def raw(b: FrameBatch) -> bytes:
    return b"".join(im.to_i420() for im in b.images())


# -- parsing --------------------------------------------------------------------------------------

def test_chain_and_arguments():
    (f,) = parse("hue=s=0").filters
    assert (f.name, f.args, f.options) == ("hue", "s=0", (("s", "0"),))
    g = parse("crop=iw/2:ih:0:0, hflip ,scale=w=88:h=72")
    assert [f.name for f in g.filters] == ["crop", "hflip", "scale"]
    assert len(g.chains) == 1
    assert g.filters[0].options == ((None, "iw/2"), (None, "ih"), (None, "0"), (None, "0"))
    assert g.filters[2].options == (("w", "88"), ("h", "72"))


def test_labels_and_chains():
    g = parse(MIRROR)
    assert len(g.chains) == 3
    crop, split, hflip, hstack = g.filters
    assert crop.inputs == ("0",) and split.outputs == ("a", "b")
    assert hflip.inputs == ("b",) and hflip.outputs == ("c",)
    assert hstack.inputs == ("a", "c") and hstack.outputs == ()
    g = parse("[0:v] [1:v] hstack=inputs=2 [v]")
    assert g.filters[0].inputs == ("0:v", "1:v") and g.filters[0].outputs == ("v",)
    assert parse("scale@big=320:240").filters[0].id == "big"


def test_escaping_first_and_second_level():
    # First level (the graph): quotes and backslashes removed, separators inside them kept.
    f = parse(r"drawtext=text='a, b; [c]':x=1\,2").filters[0]
    assert f.args == "text=a, b; [c]:x=1,2"
    # Second level (the filter's options): \: is a literal colon inside one value.
    f = parse(r"drawtext=text='x\:y':fontsize=3").filters[0]
    assert f.args == r"text=x\:y:fontsize=3"
    assert f.options == (("text", "x:y"), ("fontsize", "3"))
    # Unquoted leading/trailing whitespace goes; quoted or escaped whitespace stays, and so
    # does unquoted whitespace before it (av_get_token).
    assert parse(r"x= ' a ' \ ").filters[0].args == " a   "
    assert parse("x= a b ").filters[0].args == "a b"


@pytest.mark.parametrize("text, position, what", [
    ("", 0, "empty filtergraph"),
    ("[a", 0, "unterminated label"),
    ("hue,", 4, "missing filter name"),
    ("hue;", 4, "empty filterchain"),
    ("hue=s='0", 6, "unterminated quote"),
    ("hue]", 3, "unexpected ']'"),
    ("[]hue", 0, "bad label"),
    ("hue [a] x", 8, "unexpected 'x'"),
    ("h-ue", 0, "bad filter name"),
])
def test_syntax_errors_say_where(text, position, what):
    with pytest.raises(FilterSyntaxError) as e:
        parse(text)
    assert e.value.position == position
    assert what in str(e.value) and f"at character {position}" in str(e.value)
    assert "\n" not in str(e.value)


def test_unknown_filter():
    with pytest.raises(UnknownFilterError, match=r"unknown filter 'nosuchfilter' \(at character 5\)"):
        FilterGraph("hue, nosuchfilter")


@pytest.mark.parametrize("text, n, match", [
    ("[x]hflip", 1, r"no output is labelled \[x\]"),
    ("[3]hflip", 1, r"names input stream 3"),
    ("hflip[a];vflip[a]", 2, r"unlabelled output before ';'|defined twice"),
    ("split[a][b];[a][b]hstack[o];hflip", 1, "unlabelled input pad"),
    ("hflip[a][b]", 1, "has 1 output, given 2 labels"),
    ("[0][1]hflip", 2, "has 1 input, given 2"),
    ("crop=w=nonsense_option_value:q=1", 1, "ffmpeg refuses crop"),
    ("testsrc", 1, "reads none of its input streams"),
    ("loop=loop=-1:size=5", 1, "looks endless"),
])
def test_graph_errors_are_one_line(text, n, match):
    b = batch(CISCO)
    with pytest.raises(FilterGraphError, match=match) as e:
        run_filter(text, [b] * n)
    assert "\n" not in str(e.value)


# -- against the ffmpeg binary ---------------------------------------------------------------------

@requires_tool("ffmpeg")
@pytest.mark.parametrize("clip", [FOREMAN, PARK], ids=["foreman", "park_joy"])
@pytest.mark.parametrize("text", ["hue=s=0", "hflip", "crop=iw/2:ih:0:0", "scale=88:72", "scale=87:71",
                                  "negate,vflip", "[in]hflip,hue=h=90:s=2[out]", MIRROR])
def test_equals_ffmpeg(clip, text):
    b = batch(clip)
    (out,) = run_filter(text, [b])
    # -filter_complex has no [in]/[out] (they are -vf's names); the same graph without them.
    want = ffmpeg_yuv([clip], ["-filter_complex", text.replace("[in]", "").replace("[out]", "")])
    assert out.start == b.start and out.fps == b.fps
    assert raw(out) == want


@requires_tool("ffmpeg")
def test_two_inputs_equal_ffmpeg():
    """Two input streams: a labelled graph, the unlabelled form, and a stream used twice."""
    a, b = batch(FOREMAN), batch(FOREMAN)
    b = FrameBatch(255 - b.y, b.u, b.v, b.start, b.fps)
    for text in ("[0:v][1:v]hstack=inputs=2[v]", "hstack", "[1]hflip[f];[0][f]vstack"):
        (out,) = run_filter(text, [a, b])
        want = ffmpeg_yuv([FOREMAN, FOREMAN], ["-filter_complex", _negated(text)])
        assert raw(out) == want, text
    (out,) = run_filter("[0][0]hstack", [a])
    assert raw(out) == ffmpeg_yuv([FOREMAN], ["-filter_complex", "[0][0]hstack"])


def _negated(text: str) -> str:
    """``text`` for ffmpeg with input 1 negated first (as the test's second stream is)."""
    body = {"hstack": "[0][n]hstack"}.get(text, text.replace("[1:v]", "[n]").replace("[1]", "[n]"))
    body = body.replace("[v]", "")  # an output label ffmpeg would want -map for
    return "[1]lutyuv=y=255-val[n];" + body


def test_output_numbering_follows_first_input():
    b = batch(CISCO, start=40)
    (out,) = run_filter("hflip", [b])
    assert (out.start, out.count, out.fps) == (40, 5, (6, 1))
    assert (out.y == b.y[:, :, ::-1]).all()
