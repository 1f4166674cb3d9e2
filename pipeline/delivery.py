"""Delivery functions: how the items waiting on a node's input ports become tasks.

DESIGN.md, "Pipelines": items (an object in storage plus its place in the video) wait on a node's
input ports; the node's delivery function takes what it can from them and returns the groups
of inputs that become tasks, one task per ``Batch``. The signature::

    fn(node: NodeState, waiting: dict[str, list[Item]], end: bool) -> list[Batch]

``waiting`` holds, per streaming input port, the items not yet taken, in arrival order (which
is *not* frame order: upstream tasks finish in any order). The function removes what it uses
(``waiting[port].remove(item)``), may keep anything in ``node.state`` (a dict private to the
node: the next frame expected, a half-filled group), and reads the node's options with
``node.option(name, fps)`` (``"{fps}"`` expressions evaluated). ``end`` is true once every
upstream node has finished: the function must then flush what remains, or raise
``DeliveryError`` naming what cannot be delivered. A ``Batch`` gives each port a list of
``Item``\\ s or ``Part``\\ s (frames ``a`` .. ``b`` of an item, so regrouping needs no extra
task) and a ``lineage``: the group's number, which with the inputs names the task, so it must
depend on the data only (never on arrival order) for re-runs to give identical output.

A user's delivery function is named ``module:function`` in the pipespec. For example, pairs of
consecutive chunks, in order::

    from pipeline.delivery import Batch

    def two_chunks(node, waiting, end):
        items = waiting["frames"]
        have = {i.start: i for i in items}
        out = []
        while node.state.setdefault("next", 0) in have:
            first = have.pop(node.state["next"])
            second = have.get(first.start + first.count)
            if second is None and not end:
                break                                  # wait for its partner
            group = [first] + ([second] if second else [])
            for i in group:
                items.remove(i)
                have.pop(i.start, None)
            node.state["next"] = group[-1].start + group[-1].count
            out.append(Batch({"frames": group}, lineage=len(node.state.setdefault("done", []))))
            node.state["done"].append(first.start)
        return out

Built in (with Sprocket's names as aliases): ``default`` (one item, one task), ``pair`` (two
ports joined on lineage), ``serialized_frames`` (groups of ``frames_per_chunk`` frames in frame
order, across upstream chunks), ``serialized_scenes`` (scenes, cut at flagged frames and at
``max_scene_frames``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable

from pipeline.stage import Option


class DeliveryError(ValueError):
    """A delivery function that is unknown, or items it cannot deliver (one line, naming them)."""


@dataclass(frozen=True)
class Item:
    """One value waiting on a port: its object in storage and its place in the video."""

    key: str
    sha256: str
    size: int
    port_type: str
    lineage: int                     # the chunk (or group) number it descends from
    start: int                       # number of its first frame
    count: int                       # frames it covers
    fps: tuple[int, int] = (30, 1)
    meta: dict = field(default_factory=dict, compare=False, hash=False)
    source: str = ""                 # "node:port" it came from

    @property
    def end(self) -> int:
        return self.start + self.count

    def describe(self) -> str:
        return f"{self.source or self.key} lineage {self.lineage} (frames {self.start}..{self.end - 1})"


@dataclass(frozen=True)
class Part:
    """Frames ``a`` .. ``b - 1`` (indices into ``item``) of an item: a task may take part of one."""

    item: Item
    a: int
    b: int

    def __post_init__(self):
        if not 0 <= self.a < self.b <= self.item.count:
            raise DeliveryError(f"part {self.a}..{self.b} of {self.item.describe()} is out of range")

    @property
    def start(self) -> int:
        return self.item.start + self.a

    @property
    def count(self) -> int:
        return self.b - self.a

    @property
    def fps(self) -> tuple[int, int]:
        return self.item.fps


def whole(x: Item | Part) -> Part:
    return x if isinstance(x, Part) else Part(x, 0, x.count)


@dataclass
class Batch:
    """The inputs of one task: port -> items or parts, and the group's ``lineage``."""

    inputs: dict[str, list]
    lineage: int


@dataclass
class NodeState:
    """What a delivery function sees of its node."""

    name: str
    options: dict[str, Any]          # option -> value, or an arith tree where it uses {fps}
    ports: tuple[str, ...]           # its streaming (not durable) connected input ports
    state: dict = field(default_factory=dict)

    def option(self, name: str, fps: tuple[int, int] | None = None):
        """The option's value; one given as ``"{fps}..."`` is evaluated at ``fps`` (and rounded
        to the nearest whole number when it is one of the values an int option takes)."""
        from pipeline.spec import resolve_option
        return resolve_option(self.name, name, self.options[name], fps)


@dataclass(frozen=True)
class DeliveryDef:
    name: str
    fn: Callable
    ports: int | None = None                  # streaming ports it takes (None: any number)
    options: dict[str, Option] = field(default_factory=dict)  # options it reads from the node
    aliases: tuple[str, ...] = ()


_BUILTIN: dict[str, DeliveryDef] = {}
_ALIASES: dict[str, str] = {}


def delivery(name: str, *, ports: int | None = None, options: dict[str, Option] | None = None,
             aliases: tuple[str, ...] = ()):
    """Register a built-in delivery function."""

    def register(fn: Callable) -> Callable:
        _BUILTIN[name] = DeliveryDef(name, fn, ports, dict(options or {}), tuple(aliases))
        for a in aliases:
            _ALIASES[a] = name
        return fn

    return register


def get_delivery(name: str) -> DeliveryDef:
    """A built-in delivery function (or its Sprocket alias), or ``module:function``."""
    if not isinstance(name, str) or not name:
        raise DeliveryError(f"delivery function {name!r} is not a name")
    d = _BUILTIN.get(_ALIASES.get(name, name))
    if d is not None:
        return d
    if ":" not in name:
        known = sorted(set(_BUILTIN) | set(_ALIASES))
        raise DeliveryError(f"unknown delivery function {name!r} (built in: {', '.join(known)}; "
                            f"or module:function)")
    module, _, attr = name.partition(":")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except ImportError as e:
        raise DeliveryError(f"delivery function {name!r}: cannot import {module!r}: {e}") from None
    except AttributeError:
        raise DeliveryError(f"delivery function {name!r}: {module!r} has no {attr!r}") from None
    if not callable(fn):
        raise DeliveryError(f"delivery function {name!r} is not callable")
    return DeliveryDef(name, fn, getattr(fn, "ports", None), dict(getattr(fn, "options", {}) or {}))


def builtin_names() -> list[str]:
    return sorted(set(_BUILTIN) | set(_ALIASES))


# -- the built-in functions ----------------------------------------------------------------------

@delivery("default", ports=1, aliases=("default_delivery_func",))
def default(node: NodeState, waiting: dict[str, list[Item]], end: bool) -> list[Batch]:
    """One item, one task, as soon as it arrives (Sprocket's ``default_delivery_func``)."""
    out = []
    for port in node.ports:
        items = waiting.get(port, [])
        out.extend(Batch({port: [i]}, i.lineage) for i in items)
        items.clear()
    return out


@delivery("pair", ports=2, aliases=("pair_delivery_func",))
def pair(node: NodeState, waiting: dict[str, list[Item]], end: bool) -> list[Batch]:
    """Items of the two ports joined on lineage (``pair_delivery_func``); what has no partner at
    the end is an error naming it, not dropped."""
    p0, p1 = node.ports
    a, b = waiting.get(p0, []), waiting.get(p1, [])
    by_lineage = {}
    for i in b:
        by_lineage.setdefault(i.lineage, i)
    out = []
    for i in list(a):
        j = by_lineage.pop(i.lineage, None)
        if j is not None:
            a.remove(i)
            b.remove(j)
            out.append(Batch({p0: [i], p1: [j]}, i.lineage))
    if end and (a or b):
        left = [f"{p} {i.describe()}" for p, items in ((p0, a), (p1, b)) for i in items]
        raise DeliveryError(f"node {node.name}: no partner on lineage for {len(left)} item(s) at the "
                            f"end of the stream: {'; '.join(left[:5])}{' ...' if len(left) > 5 else ''}")
    out.sort(key=lambda x: x.lineage)
    return out


def _in_order(node: NodeState, port: str, waiting: dict[str, list[Item]], end: bool):
    """The frames of ``port``'s items in frame order, one Part at a time: those that continue
    where the last one ended (``state['next']``), and at the end everything left, in order.
    Taken items leave ``waiting`` when the generator ends."""
    items = waiting.get(port, [])
    st = node.state
    by_start: dict[int, Item] = {}
    for i in sorted(items, key=lambda i: (i.start, i.key)):
        by_start.setdefault(i.start, i)
    taken: set[int] = set()
    try:
        while len(taken) < len(items):
            found = by_start.pop(st.setdefault("next", 0), None)
            if found is None:
                if not end:
                    return
                # A gap (frames dropped upstream) or a second item at one start: the end takes them.
                found = min((i for i in items if id(i) not in taken), key=lambda i: (i.start, i.key))
                if by_start.get(found.start) is found:
                    del by_start[found.start]
            taken.add(id(found))
            st["next"] = found.end
            if found.count:
                yield whole(found)
    finally:
        if taken:
            items[:] = [i for i in items if id(i) not in taken]


def _frame_groups(node: NodeState, port: str, parts, limit_of, cut_before) -> list[Batch]:
    """Pour ``parts`` into groups (held in ``node.state['group']``): a group closes when it holds
    ``limit_of(fps)`` frames, or before a frame where ``cut_before(part, index)`` says so."""
    st = node.state
    out = []
    for part in parts:
        a = part.a
        while a < part.b:
            group = st.setdefault("group", [])
            have = sum(p.count for p in group)
            if have and cut_before(part.item, a):
                out.append(_close(node, port))
                continue
            limit = limit_of(part.fps)
            b = min(part.b, a + max(1, limit - have))
            for k in range(a + 1, b):
                if cut_before(part.item, k):
                    b = k
                    break
            group.append(Part(part.item, a, b))
            a = b
            if have + group[-1].count >= limit:
                out.append(_close(node, port))
    return out


def _close(node: NodeState, port: str) -> Batch:
    st = node.state
    group = st.pop("group")
    lineage = st.get("groups", 0)
    st["groups"] = lineage + 1
    return Batch({port: group}, lineage)


def _flush(node: NodeState, port: str, end: bool) -> list[Batch]:
    return [_close(node, port)] if end and node.state.get("group") else []


def _positive(node: NodeState, name: str, fps) -> int:
    n = node.option(name, fps)
    if not isinstance(n, int) or n < 1:
        raise DeliveryError(f"node {node.name}: {name} is {n!r} at {fps[0]}/{fps[1]} fps; "
                            f"it must be a whole number >= 1")
    return n


@delivery("serialized_frames", ports=1, aliases=("serialized_frame_delivery_func",),
          options={"frames_per_chunk": Option(int, "{fps}", "frames per task (default: one second)")})
def serialized_frames(node: NodeState, waiting: dict[str, list[Item]], end: bool) -> list[Batch]:
    """Frames regrouped in frame order, across upstream items, into groups of
    ``frames_per_chunk`` (``serialized_frame_delivery_func``); the last group may be shorter."""
    (port,) = node.ports
    out = _frame_groups(node, port, _in_order(node, port, waiting, end),
                        lambda fps: _positive(node, "frames_per_chunk", fps), lambda item, k: False)
    return out + _flush(node, port, end)


def scene_cuts(item: Item) -> frozenset[int]:
    """The frame numbers where a new scene starts, as an upstream stage marked them
    (``meta["scene_cuts"]``, frame numbers in the pipeline input's numbering)."""
    cuts = item.meta.get("scene_cuts", ()) if isinstance(item.meta, dict) else ()
    return frozenset(c for c in cuts if isinstance(c, int))


@delivery("serialized_scenes", ports=1, aliases=("serialized_scene_delivery_func",),
          options={"max_scene_frames": Option(int, "{fps}*10", "longest scene per task (frames)")})
def serialized_scenes(node: NodeState, waiting: dict[str, list[Item]], end: bool) -> list[Batch]:
    """Frames grouped in order into scenes (``serialized_scene_delivery_func``): a scene ends
    before a frame an upstream stage flagged (``meta["scene_cuts"]``) and at
    ``max_scene_frames``, wherever the upstream items' boundaries fall."""
    (port,) = node.ports
    cache: dict[str, frozenset[int]] = {}

    def cut_before(item: Item, k: int) -> bool:
        cuts = cache.get(item.key)
        if cuts is None:
            cuts = cache[item.key] = scene_cuts(item)
        return item.start + k in cuts

    out = _frame_groups(node, port, _in_order(node, port, waiting, end),
                        lambda fps: _positive(node, "max_scene_frames", fps), cut_before)
    return out + _flush(node, port, end)


def as_fraction(fps: tuple[int, int]) -> Fraction:
    return Fraction(fps[0], fps[1])


@delivery("with_previous", ports=1)
def with_previous(node: NodeState, waiting: dict[str, list[Item]], end: bool) -> list[Batch]:
    """One item, one task, given also the last frame before it on the port ``previous`` (for
    stages that compare a frame with the one before, e.g. ``scene_change``: a cut on a chunk's
    first frame is found). An item waits until the one ending where it starts has arrived; the
    first (frame 0) and, at the end of the stream, any left without one go alone."""
    (port,) = node.ports
    seen: dict[int, Item] = node.state.setdefault("by_end", {})
    items = waiting.get(port, [])
    for i in items:
        seen[i.end] = i
    out = []
    for i in sorted(items, key=lambda i: (i.start, i.key)):
        prev = seen.get(i.start) if i.start else None
        if i.start == 0 or prev is not None or end:
            items.remove(i)
            inputs = {port: [i]}
            if prev is not None and prev.count:
                inputs["previous"] = [Part(prev, prev.count - 1, prev.count)]
            out.append(Batch(inputs, i.lineage))
    return out
