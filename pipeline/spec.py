"""The pipespec: Sprocket's JSON pipeline description, parsed and validated whole before anything runs.

docs/design/pipelines.md::

    {"nodes": [{"name": "decode", "stage": "decode", "config": {}},
               {"name": "gray", "stage": "grayscale", "delivery_function": "default"},
               {"name": "encode", "stage": "encode", "config": {"cq_level": 20}}],
     "streams": [{"src": "input_0:chunks", "dst": "decode:chunks"},
                 {"src": "decode:frames", "dst": "gray:frames"},
                 {"src": "gray:frames", "dst": "encode:frames"},
                 {"src": "encode:chunks", "dst": "output_0:chunks"}],
     "scheduler": "fifo"}

A node names a registered stage (or a Sprocket alias), its ``config`` (checked against the
options the stage and its delivery function declare; a numeric option may be a ``"{fps}/4"``
expression, evaluated per task once the frame rate is known: ``pipeline.arith``), an optional
``delivery_function`` (built in, a Sprocket alias, or ``module:function``) and, our extensions,
``timeout_s`` for its tasks and ``"steal": true`` to run each task as a work-stealing pair of
attempts (``pipeline.steal``; for stages that declare they can split). Sprocket's spellings are accepted: ``null`` for unset values,
options without underscores (``framesperchunk``), a ``lambda_function`` per node (ignored).
Streams join ``node:port`` to ``node:port``; ``input_N`` nodes are the pipeline's sources (a
port's type is the type of what it feeds), ``output_N`` its sinks (one stream each);
``"durable": true`` marks a side input every task of the node sees.

Every error is one ``SpecError`` line naming the node or stream and what is wrong.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from pipeline import arith
from pipeline.delivery import DeliveryDef, DeliveryError, get_delivery
from pipeline.options import FpsExpr, SpecError, resolve_option  # noqa: F401 - part of this module's API
from pipeline.stage import Option, StageDef, StageError, all_stages, get_stage

DEFAULT_TIMEOUT_S = 300.0
_NODE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
_IO_NAME = re.compile(r"(input|output)_(\d+)")
_NODE_KEYS = {"name", "stage", "config", "delivery_function", "timeout_s", "steal",
              "lambda_function"}   # Sprocket's per-node Lambda function name: not ours, ignored
_STREAM_KEYS = {"src", "dst", "durable"}


@dataclass(frozen=True)
class Stream:
    src: str
    src_port: str
    dst: str
    dst_port: str
    port_type: str
    durable: bool = False
    index: int = 0            # its place in the file's "streams"

    def __str__(self) -> str:
        return f"{self.src}:{self.src_port} -> {self.dst}:{self.dst_port}"


@dataclass
class Node:
    name: str
    stage: StageDef
    options: dict[str, Any]            # every option of the stage and the delivery function
    delivery: DeliveryDef
    timeout_s: float
    steal: bool = False
    inputs: dict[str, list[Stream]] = field(default_factory=dict)   # connected input ports
    durable: set[str] = field(default_factory=set)
    outputs: dict[str, Stream] = field(default_factory=dict)        # connected output ports

    @property
    def streaming_ports(self) -> tuple[str, ...]:
        return tuple(sorted(p for p in self.inputs if p not in self.durable))

    def stage_config(self, fps: tuple[int, int] | None) -> dict[str, Any]:
        """The stage's options for a task at ``fps`` (delivery-only options left out)."""
        return {k: resolve_option(self.name, k, self.options[k], fps) for k in sorted(self.stage.options)}


@dataclass
class Spec:
    nodes: dict[str, Node]                     # stage nodes, in topological order
    streams: list[Stream]
    inputs: dict[str, dict[str, str]]          # input_N -> port -> type
    outputs: dict[str, Stream]                 # output_N -> the stream into it
    scheduler: Any = None
    upstream: dict[str, set[str]] = field(default_factory=dict)  # node -> nodes feeding it
    doc: Any = None                            # the JSON object it was made from

    @property
    def fsm_names(self) -> dict[str, str]:
        return {n: f"node-{n}" for n in self.nodes}

    def describe(self) -> str:
        """The DAG as text, one node per line with what feeds it."""
        lines = []
        for name, ports in self.inputs.items():
            lines.append(f"{name}: source ({', '.join(f'{p}: {t}' for p, t in ports.items())})")
        for n in self.nodes.values():
            ins = "; ".join(f"{p} <- {', '.join(f'{s.src}:{s.src_port}' for s in ss)}"
                            f"{' (durable)' if p in n.durable else ''}" for p, ss in sorted(n.inputs.items()))
            steal = ", work-stealing pairs" if n.steal else ""
            lines.append(f"{n.name}: stage {n.stage.name}, delivery {n.delivery.name}{steal}; {ins or 'no inputs'}")
        for name, s in self.outputs.items():
            lines.append(f"{name}: sink ({s.dst_port}: {s.port_type}) <- {s.src}:{s.src_port}")
        return "\n".join(lines)


def load(path: str) -> Spec:
    """Read and validate the pipespec file at ``path``."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise SpecError(f"{path}: {why}") from None
    return parse(text, where=path)


def parse(text: str, where: str = "pipespec") -> Spec:
    """Validate the JSON text of a pipespec; malformed JSON is one line with line and column."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise SpecError(f"{where}: not JSON: line {e.lineno} column {e.colno}: {e.msg}") from None
    return validate(doc)


def _option_value(node: str, name: str, opt: Option, value: Any) -> Any:
    where = f"node {node}: option {name}"
    if opt.type in (int, float) and isinstance(value, str):
        try:
            tree = arith.parse(value)
        except arith.ArithError as e:
            raise SpecError(f"{where} must be {opt.type.__name__} or arithmetic on {{fps}}: {e}") from None
        unknown = arith.names(tree) - {"fps"}
        if unknown:
            raise SpecError(f"{where} must be {opt.type.__name__} or arithmetic on {{fps}}: {value!r} "
                            f"uses {', '.join(sorted(unknown))}, and only fps is known")
        expr = FpsExpr(value, tree, opt.type)
        if arith.names(tree):
            return expr
        try:
            return expr.at((1, 1))
        except arith.ArithError as e:
            raise SpecError(f"{where}: {e}") from None
    ok = {int: lambda v: isinstance(v, int) and not isinstance(v, bool),
          float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          bool: lambda v: isinstance(v, bool),
          str: lambda v: isinstance(v, str)}.get(opt.type, lambda v: isinstance(v, opt.type))
    if not ok(value):
        raise SpecError(f"{where} must be {opt.type.__name__}, got {json.dumps(value)}")
    if opt.type is float:
        value = float(value)
    if opt.choices and value not in opt.choices:
        raise SpecError(f"{where} is {json.dumps(value)}; allowed: {', '.join(map(str, opt.choices))}")
    return value


def _node(i: int, raw: Any) -> tuple[str, StageDef, dict, DeliveryDef, float, bool]:
    if not isinstance(raw, dict):
        raise SpecError(f"nodes[{i}]: not an object")
    name = raw.get("name")
    if not isinstance(name, str) or not _NODE_NAME.fullmatch(name):
        raise SpecError(f"nodes[{i}]: name {json.dumps(name)} must be a letter then up to 63 letters, "
                        f"digits, '_' or '-'")
    if _IO_NAME.fullmatch(name):
        raise SpecError(f"node {name}: input_N and output_N are the pipeline's sources and sinks; "
                        f"streams name them, nodes do not declare them")
    unknown = sorted(set(raw) - _NODE_KEYS)
    if unknown:
        raise SpecError(f"node {name}: unknown key(s) {', '.join(unknown)} "
                        f"(known: {', '.join(sorted(_NODE_KEYS))})")
    if not isinstance(raw.get("stage"), str):
        raise SpecError(f"node {name}: no stage named")
    try:
        st = get_stage(raw["stage"])
    except StageError as e:
        raise SpecError(f"node {name}: {e}") from None
    try:
        dl = get_delivery(raw.get("delivery_function") or st.delivery)   # Sprocket writes null
    except DeliveryError as e:
        raise SpecError(f"node {name}: {e}") from None
    config = raw.get("config", {})
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise SpecError(f"node {name}: config must be an object")
    options = _options(name, st, dl, config)
    timeout = raw.get("timeout_s", DEFAULT_TIMEOUT_S)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 24 * 3600:
        raise SpecError(f"node {name}: timeout_s must be seconds in (0, 86400], got {json.dumps(timeout)}")
    steal = raw.get("steal", False)
    if not isinstance(steal, bool):
        raise SpecError(f"node {name}: steal must be true or false, got {json.dumps(steal)}")
    if steal and not st.steal:
        stealers = sorted(n for n, d in all_stages().items() if d.steal)
        raise SpecError(f"node {name}: stage {st.name} cannot split a task between a pair of "
                        f"attempts (steal works with: {', '.join(stealers)})")
    return name, st, options, dl, float(timeout), steal


def _options(name: str, st: StageDef, dl: DeliveryDef, config: dict) -> dict[str, Any]:
    """Every option of node ``name``'s stage and delivery function: its ``config``'s value, else
    the default (a delivery option the stage sets derives from the stage's options)."""
    declared = {**dl.options, **st.options}
    config = _sprocket_config(name, st, config, declared)
    options = {}
    for key, opt in sorted(declared.items()):
        if key in config:
            options[key] = _option_value(name, key, opt, config[key])
        elif opt.required:
            raise SpecError(f"node {name}: option {key} is required ({opt.help or opt.type.__name__})")
        elif key in st.delivery_defaults and key not in st.options:
            continue    # from the stage's options, below
        else:
            options[key] = _option_value(name, key, opt, opt.default)
    for key, default in st.delivery_defaults.items():
        if key in dl.options and key not in options:
            options[key] = _option_value(name, key, dl.options[key], default(options))
    return options


def _sprocket_config(node: str, st: StageDef, config: dict, declared: dict) -> dict:
    """The config with Sprocket's spellings mapped to ours: ``null`` means not given, and an
    option may be written without its underscores (``framesperchunk``); anything else unknown is
    an error."""
    plain = {k.replace("_", "").lower(): k for k in declared}
    out = {}
    for key in sorted(config):
        if config[key] is None:
            continue
        ours = key if key in declared else plain.get(key.replace("_", "").lower())
        if ours is None:
            raise SpecError(f"node {node}: stage {st.name} has no option {key!r} "
                            f"(options: {', '.join(sorted(declared)) or 'none'})")
        if ours in out:
            raise SpecError(f"node {node}: option {ours} is given twice (as {key!r} too)")
        out[ours] = config[key]
    return out


def _sprocket_graph(doc: dict) -> dict:
    """Sprocket's face-search graph in our stages' terms (a copy when anything changes): its
    ``rek`` finds the person's photo through a side channel, so each ``matchFace`` node with no
    stream out feeds every ``rek`` node's ``person`` port (durable); its ``draw`` on ``frame``
    ports is ``draw_frame`` (the boxes ride on the frames)."""
    nodes = [n for n in doc["nodes"] if isinstance(n, dict)]
    streams = [s for s in doc["streams"] if isinstance(s, dict)]
    ends = {str(s.get(k, "")) for s in streams for k in ("src", "dst")}
    faces = [n["name"] for n in nodes if n.get("stage") == "matchFace"
             and not any(str(s.get("src", "")).startswith(f"{n['name']}:") for s in streams)]
    reks = [n["name"] for n in nodes if n.get("stage") == "rek" and f"{n['name']}:person" not in ends]
    draws = [n for n in nodes if n.get("stage") == "draw" and f"{n.get('name')}:frame" in ends]
    if not (faces and reks) and not draws:
        return doc
    doc = dict(doc, nodes=[dict(n, stage="draw_frame") if n in draws else n for n in doc["nodes"]],
               streams=list(doc["streams"]))
    for f in faces[:1]:
        for r in reks:
            doc["streams"].append({"src": f"{f}:person", "dst": f"{r}:person", "durable": True})
    return doc


def _endpoint(i: int, raw: dict, key: str) -> tuple[str, str]:
    v = raw.get(key)
    if not isinstance(v, str) or v.count(":") != 1 or not all(v.split(":")):
        raise SpecError(f"streams[{i}]: {key} {json.dumps(v)} must be \"node:port\"")
    node, port = v.split(":")
    return node, port


def validate(doc: Any) -> Spec:
    """A ``Spec`` from the parsed JSON ``doc``, or SpecError naming the first thing wrong: the
    nodes (each on its own), then the streams in order (each against the nodes and the streams
    before it), then each node's ports, the graph's ends, and that it has no cycle."""
    if not isinstance(doc, dict):
        raise SpecError("pipespec: the top level must be an object with nodes and streams")
    for key in ("nodes", "streams"):
        if not isinstance(doc.get(key), list):
            raise SpecError(f"pipespec: {key!r} must be a list")
    doc = _sprocket_graph(doc)
    nodes = _nodes(doc["nodes"])
    streams, inputs, outputs = _streams(doc["streams"], nodes)
    for n in nodes.values():
        _check_ports(n)
    if not inputs:
        raise SpecError("pipespec: no stream from an input_N source")
    if not outputs:
        raise SpecError("pipespec: no stream into an output_N sink; the pipeline would write nothing")
    upstream = {name: {s.src for ss in n.inputs.values() for s in ss} for name, n in nodes.items()}
    order = _topological(nodes, upstream)
    scheduler = doc.get("scheduler")
    if scheduler is not None and not isinstance(scheduler, (str, dict)):
        raise SpecError("pipespec: scheduler must be a name or an object")
    return Spec({n: nodes[n] for n in order}, streams, dict(sorted(inputs.items())),
                dict(sorted(outputs.items())), scheduler, upstream, doc)


def _nodes(raws: list) -> dict[str, Node]:
    """The nodes by name, each checked by ``_node``; a name may be used once."""
    nodes: dict[str, Node] = {}
    for i, raw in enumerate(raws):
        name, st, options, dl, timeout, steal = _node(i, raw)
        if name in nodes:
            raise SpecError(f"node {name}: the name is used twice")
        nodes[name] = Node(name, st, options, dl, timeout, steal)
    return nodes


def _streams(raws: list, nodes: dict[str, Node]) -> tuple[list[Stream], dict[str, dict[str, str]],
                                                          dict[str, Stream]]:
    """The streams, each checked (``_stream``) and joined to its ends (``_join``) before the next;
    with the pipeline's sources (input_N -> port -> type) and sinks (output_N -> its stream)."""
    inputs: dict[str, dict[str, str]] = {}
    outputs: dict[str, Stream] = {}
    used_src: dict[tuple[str, str], int] = {}   # (node, port) -> the stream it feeds
    streams: list[Stream] = []
    for i, raw in enumerate(raws):
        s = _stream(i, raw, nodes, used_src, outputs)
        streams.append(s)
        _join(s, nodes, inputs, outputs)
    return streams, inputs, outputs


def _stream(i: int, raw: Any, nodes: dict[str, Node], used_src: dict[tuple[str, str], int],
            outputs: dict[str, Stream]) -> Stream:
    """Stream ``i``: its keys, a source port feeding no other stream, its two ends, and port
    types that agree (an input_N source takes the type of what it feeds)."""
    if not isinstance(raw, dict):
        raise SpecError(f"streams[{i}]: not an object")
    unknown = sorted(set(raw) - _STREAM_KEYS)
    if unknown:
        raise SpecError(f"streams[{i}]: unknown key(s) {', '.join(unknown)}")
    src, sp = _endpoint(i, raw, "src")
    dst, dp = _endpoint(i, raw, "dst")
    label = f"stream {src}:{sp} -> {dst}:{dp}"
    durable = raw.get("durable", False)
    if not isinstance(durable, bool):
        raise SpecError(f"{label}: durable must be true or false")
    if (src, sp) in used_src:
        raise SpecError(f"{label}: source port {src}:{sp} already feeds streams[{used_src[src, sp]}]; "
                        f"a source port feeds exactly one destination (duplicate_filter copies)")
    used_src[src, sp] = i
    src_type = _source_type(label, src, sp, nodes)
    dst_type = _destination_type(label, dst, dp, src_type, durable, nodes, outputs)
    if src_type is not None and src_type != dst_type:
        raise SpecError(f"{label}: port types differ ({src}:{sp} is {src_type}, {dst}:{dp} is {dst_type})")
    return Stream(src, sp, dst, dp, dst_type, durable, i)


def _source_type(label: str, src: str, sp: str, nodes: dict[str, Node]) -> str | None:
    """The type of a stream's source port; None for an input_N source (it has the type of what
    it feeds)."""
    io = _IO_NAME.fullmatch(src)
    if io and io.group(1) == "output":
        raise SpecError(f"{label}: {src} is a sink; it cannot be a stream's source")
    if io:
        return None
    return _port_type(label, src, sp, nodes, "output")


def _destination_type(label: str, dst: str, dp: str, src_type: str | None, durable: bool,
                      nodes: dict[str, Node], outputs: dict[str, Stream]) -> str:
    """The type of a stream's destination port; an output_N sink takes its source's type, and
    one stream, not durable."""
    io = _IO_NAME.fullmatch(dst)
    if io and io.group(1) == "input":
        raise SpecError(f"{label}: {dst} is a source; it cannot be a stream's destination")
    if io:
        if src_type is None:
            raise SpecError(f"{label}: a source straight into a sink; there is nothing to run")
        if dst in outputs:
            raise SpecError(f"{label}: sink {dst} already takes {outputs[dst]}; a sink takes one stream")
        if durable:
            raise SpecError(f"{label}: a sink takes no durable stream")
        return src_type
    return _port_type(label, dst, dp, nodes, "input")


def _port_type(label: str, name: str, port: str, nodes: dict[str, Node], side: str) -> str:
    """The type of node ``name``'s ``side`` (``"input"`` or ``"output"``) port ``port``."""
    if name not in nodes:
        raise SpecError(f"{label}: unknown node {name!r}")
    ports = nodes[name].stage.inputs if side == "input" else nodes[name].stage.outputs
    if port not in ports:
        raise SpecError(f"{label}: node {name} (stage {nodes[name].stage.name}) has no {side} port "
                        f"{port!r} ({side}s: {', '.join(sorted(ports)) or 'none'})")
    return ports[port]


def _join(s: Stream, nodes: dict[str, Node], inputs: dict[str, dict[str, str]],
          outputs: dict[str, Stream]) -> None:
    """Record checked stream ``s`` at its ends: a source's port or a node's output, a sink or a
    node's input (whose streams are all durable or all streaming)."""
    if _IO_NAME.fullmatch(s.src):
        inputs.setdefault(s.src, {})[s.src_port] = s.port_type
    else:
        nodes[s.src].outputs[s.src_port] = s
    if _IO_NAME.fullmatch(s.dst):
        outputs[s.dst] = s
        return
    node = nodes[s.dst]
    if s.dst_port in node.inputs and (s.dst_port in node.durable) != s.durable:
        raise SpecError(f"stream {s}: port {s.dst}:{s.dst_port} is fed both durable and streaming streams")
    node.inputs.setdefault(s.dst_port, []).append(s)
    if s.durable:
        node.durable.add(s.dst_port)


def _check_ports(n: Node) -> None:
    """Node ``n``'s every needed input port is connected, at least one streams, and its delivery
    function takes that many streaming ports."""
    for port in sorted(n.stage.inputs):
        if port not in n.inputs and port not in n.stage.optional_inputs:
            raise SpecError(f"node {n.name}: input port {port!r} ({n.stage.inputs[port]}) is not "
                            f"connected, and stage {n.stage.name} needs it")
    ports = n.streaming_ports
    if not ports:
        raise SpecError(f"node {n.name}: no streaming input (only durable ones or none); it would never run")
    if n.delivery.ports is not None and len(ports) != n.delivery.ports:
        raise SpecError(f"node {n.name}: delivery function {n.delivery.name} takes {n.delivery.ports} "
                        f"streaming input port(s); the node has {len(ports)} ({', '.join(ports)})")


def _topological(nodes: dict[str, Node], upstream: dict[str, set[str]]) -> list[str]:
    """The nodes in an order where each comes after what feeds it; SpecError naming a cycle."""
    order: list[str] = []
    mark: dict[str, int] = {}

    def visit(n: str, path: list[str]) -> None:
        if mark.get(n) == 2:
            return
        if mark.get(n) == 1:
            cycle = (path[path.index(n):] + [n])[::-1]   # in the direction data flows
            raise SpecError(f"node {n}: a cycle: {' -> '.join(cycle)}")
        mark[n] = 1
        for u in sorted(upstream[n]):
            if u in nodes:
                visit(u, path + [n])
        mark[n] = 2
        order.append(n)

    for n in nodes:
        visit(n, [])
    return order
