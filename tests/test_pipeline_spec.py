"""The pipespec: every way a spec can be wrong is one line naming the node or stream; the
arithmetic of config strings is a parser, not eval."""

import copy
import json
from fractions import Fraction

import pytest

import pipeline_test_stages  # noqa: F401 - registers the t_* stages
from pipeline import arith
from pipeline.spec import FpsExpr, SpecError, parse, validate

GOOD = {"nodes": [{"name": "unpack", "stage": "t_unpack"},
                  {"name": "inv", "stage": "t_invert", "config": {"sleep_s": 0, "mode": "half"}},
                  {"name": "grp", "stage": "t_regroup", "config": {"frames_per_chunk": "{fps}/2"}}],
        "streams": [{"src": "input_0:chunks", "dst": "unpack:chunks"},
                    {"src": "unpack:frames", "dst": "inv:frames"},
                    {"src": "inv:frames", "dst": "grp:frames"},
                    {"src": "grp:frames", "dst": "output_0:frames"}]}


def bad(change, **kw) -> str:
    doc = copy.deepcopy(GOOD)
    change(doc)
    with pytest.raises(SpecError) as e:
        validate(doc)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_a_good_spec_and_its_dag():
    spec = validate(GOOD)
    assert list(spec.nodes) == ["unpack", "inv", "grp"]
    assert spec.inputs == {"input_0": {"chunks": "chunks"}}
    assert spec.outputs["output_0"].port_type == "frames"
    assert spec.nodes["grp"].delivery.name == "serialized_frames"   # the stage's default
    fpc = spec.nodes["grp"].options["frames_per_chunk"]
    assert isinstance(fpc, FpsExpr) and fpc.at((30, 1)) == 15 and fpc.at((25, 1)) == 13
    assert spec.nodes["inv"].stage_config((30, 1)) == {"luma_only": False, "mode": "half", "sleep_s": 0.0}
    text = spec.describe()
    assert "grp: stage t_regroup, delivery serialized_frames; frames <- inv:frames" in text
    assert "output_0: sink (frames: frames) <- grp:frames" in text


def test_malformed_json_gives_line_and_column():
    with pytest.raises(SpecError, match=r"^x.json: not JSON: line 2 column 1: "):
        parse('{"nodes": [\n}', where="x.json")


@pytest.mark.parametrize("change, message", [
    (lambda d: d["nodes"][0].update(stage="nope"), "node unpack: unknown stage 'nope'"),
    (lambda d: d["nodes"][1].update(name="unpack"), "node unpack: the name is used twice"),
    (lambda d: d["nodes"][0].update(name="input_3"), "node input_3: input_N and output_N are the pipeline's"),
    (lambda d: d["nodes"][0].update(name="bad name"), 'nodes[0]: name "bad name" must be'),
    (lambda d: d["nodes"][0].update(colour="red"), "node unpack: unknown key(s) colour"),
    (lambda d: d["nodes"][1].update(config={"speed": 3}), "node inv: stage t_invert has no option 'speed'"),
    (lambda d: d["nodes"][1].update(config={"sleep_s": "slow"}), "node inv: option sleep_s must be float or arithmetic on {fps}: 'slow' uses slow, and only fps is known"),
    (lambda d: d["nodes"][1].update(config={"luma_only": 1}), "node inv: option luma_only must be bool, got 1"),
    (lambda d: d["nodes"][1].update(config={"mode": "quarter"}),
     'node inv: option mode is "quarter"; allowed: full, half'),
    (lambda d: d["nodes"][1].update(stage="t_needs", config={}), "node inv: option level is required (a required option)"),
    (lambda d: d["nodes"][2].update(config={"frames_per_chunk": "{rate}/2"}),
     "node grp: option frames_per_chunk must be int or arithmetic on {fps}: '{rate}/2' uses rate"),
    (lambda d: d["nodes"][2].update(config={"frames_per_chunk": "{fps}/"}),
     "node grp: option frames_per_chunk must be int or arithmetic on {fps}: '{fps}/': expected a number"),
    (lambda d: d["nodes"][2].update(config={"frames_per_chunk": "__import__('os')"}),
     "node grp: option frames_per_chunk must be int or arithmetic on {fps}: \"__import__('os')\": unexpected"),
    (lambda d: d["nodes"][1].update(delivery_function="nope"), "node inv: unknown delivery function 'nope'"),
    (lambda d: d["nodes"][1].update(delivery_function="no_such_module_x:f"),
     "node inv: delivery function 'no_such_module_x:f': cannot import 'no_such_module_x'"),
    (lambda d: d["nodes"][1].update(delivery_function="pipeline_test_stages:nope"),
     "node inv: delivery function 'pipeline_test_stages:nope': 'pipeline_test_stages' has no 'nope'"),
    (lambda d: d["nodes"][1].update(delivery_function="pair"),
     "node inv: delivery function pair takes 2 streaming input port(s); the node has 1 (frames)"),
    (lambda d: d["nodes"][1].update(timeout_s=0), "node inv: timeout_s must be seconds"),
    (lambda d: d["streams"][1].update(src="unpack:pictures"),
     "stream unpack:pictures -> inv:frames: node unpack (stage t_unpack) has no output port 'pictures'"),
    (lambda d: d["streams"][1].update(dst="inv:pictures"),
     "stream unpack:frames -> inv:pictures: node inv (stage t_invert) has no input port 'pictures'"),
    (lambda d: d["streams"][1].update(src="ghost:frames"), "stream ghost:frames -> inv:frames: unknown node 'ghost'"),
    (lambda d: d["streams"][1].update(src="unpack"), 'streams[1]: src "unpack" must be "node:port"'),
    (lambda d: d["streams"][1].update(durable="yes"), "stream unpack:frames -> inv:frames: durable must be"),
    (lambda d: d["streams"][1].update(colour=1), "streams[1]: unknown key(s) colour"),
    (lambda d: d["streams"][0].update(dst="inv:frames"),
     "node unpack: input port 'chunks' (chunks) is not connected"),
    (lambda d: d["streams"].append({"src": "unpack:frames", "dst": "grp:frames"}),
     "stream unpack:frames -> grp:frames: source port unpack:frames already feeds streams[1]"),
    (lambda d: d["streams"].append({"src": "grp:groups", "dst": "output_0:frames"}),
     "stream grp:groups -> output_0:frames: sink output_0 already takes grp:frames -> output_0:frames"),
    (lambda d: d["streams"].append({"src": "grp:groups", "dst": "input_0:x"}),
     "stream grp:groups -> input_0:x: input_0 is a source"),
    (lambda d: d["streams"].append({"src": "output_0:frames", "dst": "inv:frames"}),
     "stream output_0:frames -> inv:frames: output_0 is a sink"),
    (lambda d: d["streams"].append({"src": "input_1:chunks", "dst": "output_1:chunks"}),
     "stream input_1:chunks -> output_1:chunks: a source straight into a sink"),
    (lambda d: d["streams"].pop(), "pipespec: no stream into an output_N sink"),
    (lambda d: d.update(nodes={}), "pipespec: 'nodes' must be a list"),
])
def test_each_bad_spec_is_one_line_naming_what(change, message):
    assert message in bad(change)


def test_mismatched_port_types():
    def change(d):
        d["nodes"].append({"name": "scn", "stage": "t_scene"})
        d["streams"].append({"src": "scn:scenes", "dst": "output_1:records"})
        d["streams"].append({"src": "grp:groups", "dst": "scn:frames"})
    assert bad(change) == ("stream grp:groups -> scn:frames: port types differ "
                           "(grp:groups is records, scn:frames is frames)")


def test_a_cycle_is_named():
    def change(d):
        d["nodes"].append({"name": "dup", "stage": "t_dup"})
        d["nodes"].append({"name": "bl", "stage": "t_blend"})
        d["streams"][1] = {"src": "unpack:frames", "dst": "bl:frames_0"}
        d["streams"].append({"src": "dup:frames_1", "dst": "bl:frames_1"})
        d["streams"].append({"src": "bl:frames", "dst": "inv:frames"})
        d["streams"][2] = {"src": "inv:frames", "dst": "dup:frames"}
        d["streams"].append({"src": "dup:frames_0", "dst": "grp:frames"})
    msg = bad(change)
    assert "a cycle:" in msg and "bl" in msg and "dup" in msg and "inv" in msg


def test_unconnected_needed_port_and_durable_side_input():
    def unconnected(d):
        d["nodes"][1] = {"name": "inv", "stage": "t_overlay"}
    assert bad(unconnected) == "node inv: input port 'image' (frame) is not connected, and stage t_overlay needs it"
    doc = copy.deepcopy(GOOD)
    doc["nodes"][1] = {"name": "inv", "stage": "t_overlay"}
    doc["streams"].append({"src": "input_1:frame", "dst": "inv:image", "durable": True})
    spec = validate(doc)
    assert spec.nodes["inv"].durable == {"image"} and spec.nodes["inv"].streaming_ports == ("frames",)
    assert spec.inputs["input_1"] == {"frame": "frame"}


def test_default_delivery_refuses_two_streaming_ports_and_aliases_are_accepted():
    doc = {"nodes": [{"name": "dup", "stage": "t_dup"},
                     {"name": "bl", "stage": "t_blend", "delivery_function": "default_delivery_func"}],
           "streams": [{"src": "input_0:frames", "dst": "dup:frames"},
                       {"src": "dup:frames_0", "dst": "bl:frames_0"}, {"src": "dup:frames_1", "dst": "bl:frames_1"},
                       {"src": "bl:frames", "dst": "output_0:frames"}]}
    with pytest.raises(SpecError, match="node bl: delivery function default takes 1 streaming input port"):
        validate(doc)
    doc["nodes"][1]["delivery_function"] = "pair_delivery_func"
    assert validate(doc).nodes["bl"].delivery.name == "pair"
    doc["nodes"][1]["stage"] = "t_mix"   # an alias of t_blend
    assert validate(doc).nodes["bl"].stage.name == "t_blend"


def test_scheduler_is_kept():
    doc = dict(copy.deepcopy(GOOD), scheduler="fifo")
    assert validate(doc).scheduler == "fifo"
    with pytest.raises(SpecError, match="scheduler must be a name or an object"):
        validate(dict(doc, scheduler=3))


def test_spec_file_errors(tmp_path):
    from pipeline.spec import load
    with pytest.raises(SpecError, match="missing.json: No such file"):
        load(str(tmp_path / "missing.json"))
    p = tmp_path / "s.json"
    p.write_text(json.dumps(GOOD))
    assert list(load(str(p)).nodes) == ["unpack", "inv", "grp"]


# -- arithmetic ------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, fps, value", [
    ("{fps}/4", 30, Fraction(15, 2)), ("{fps}*2+1", 30, 61), ("fps // 4", 30, 7), ("-(3+4)*2", 1, -14),
    ("7 % 3 + 2 * 3", 1, 7), ("-7 // 2", 1, -4), ("-7 % 3", 1, 2), ("1.5 * 2", 1, 3), ("+-+2", 1, -2),
    ("{fps}", Fraction(30000, 1001), Fraction(30000, 1001)), ("((1))", 1, 1), (" 2 *( 3+ 4 ) ", 1, 14),
])
def test_arith_values(text, fps, value):
    assert arith.calc(text, fps=fps) == value


@pytest.mark.parametrize("text, message", [
    ("__import__('os').system('x')", "unexpected \"'\" at column 12"),
    ("fps.real", "unexpected '.' at column 4"),
    ("abs(fps)", "expected an operator or the end at column 4, found '('"),
    ("2 ** 3", "expected a number, a name or '(' at column 4, found '*'"),
    ("1 < 2", "unexpected '<' at column 3"),
    ("'4'", "unexpected \"'\" at column 1"),
    ("[1]", "unexpected '[' at column 1"),
    ("lambda: 1", "unexpected ':' at column 7"),
    ("(1 + 2", "expected ')' at column 7, found the end"),
    ("{fps", "expected '}' at column 5, found the end"),
    ("{3}", "expected a name at column 2, found '3'"),
    ("", "expected a number, a name or '(' at column 1, found the end"),
    ("1 +", "found the end"),
    ("1/0", "division by zero"),
    ("5 % (fps - fps)", "division by zero"),
    ("x + 1", "unknown name 'x'"),
])
def test_arith_refuses_what_is_not_arithmetic(text, message):
    with pytest.raises(arith.ArithError) as e:
        arith.calc(text, fps=30)
    assert message in str(e.value)


def test_arith_limits_and_names():
    with pytest.raises(arith.ArithError, match="longer than"):
        arith.parse("1+" * 200 + "1")
    assert arith.names(arith.parse("{fps} * 2 + x")) == {"fps", "x"}
    with pytest.raises(arith.ArithError, match="not a string"):
        arith.parse(3)


def test_sprocket_spellings_are_accepted():
    """Sprocket writes null for what it leaves unset, options without underscores, and a
    lambda_function per node."""
    doc = copy.deepcopy(GOOD)
    doc["nodes"][2] = {"name": "grp", "stage": "t_regroup", "delivery_function": None, "lambda_function": None,
                       "config": {"framesperchunk": "{fps}", "chunklimit": None, "nworkers": None, "cmd": None}}
    node = validate(doc).nodes["grp"]
    assert node.delivery.name == "serialized_frames" and node.options["frames_per_chunk"].at((24, 1)) == 24
    doc["nodes"][2]["config"] = {"framesperchunk": 3, "frames_per_chunk": 4}
    with pytest.raises(SpecError, match="node grp: option frames_per_chunk is given twice"):
        validate(doc)
    doc["nodes"][2]["config"] = {"nworkers": 3}
    with pytest.raises(SpecError, match="node grp: stage t_regroup has no option 'nworkers'"):
        validate(doc)
