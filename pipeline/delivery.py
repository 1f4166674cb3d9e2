"""Delivery functions: how the items waiting on a node's input ports become tasks.

docs/design/pipelines.md: items (an object in storage plus its place in the video) wait on a node's
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

A user's delivery function is named ``module:function`` in the pipespec. It may declare the
streaming ports it takes and the node options it reads with ``@delivery`` (which also registers
it by name in ``DELIVERIES``, so a pipespec may name it so once ``--stages MODULE`` imported it).
For example, pairs of consecutive chunks, in order::

    from pipeline.delivery import Batch, delivery

    @delivery("two_chunks", ports=1)
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
ports joined by presentation time, as ffmpeg's framesync), ``serialized_frames`` (groups of ``frames_per_chunk`` frames in frame
order, across upstream chunks), ``serialized_scenes`` (scenes, cut at flagged frames and at
``max_scene_frames``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Protocol

from foundation.errors import ExcameraError
from foundation.registry import Registry
from pipeline.stage import Option


class DeliveryError(ExcameraError):
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
        from pipeline.options import resolve_option
        return resolve_option(self.name, name, self.options[name], fps)


class DeliveryFunction(Protocol):
    """What a delivery function is (see the module docstring)."""

    def __call__(self, node: NodeState, waiting: dict[str, list[Item]], end: bool) -> list[Batch]: ...


@dataclass(frozen=True)
class DeliveryDef:
    name: str
    fn: DeliveryFunction
    ports: int | None = None                  # streaming ports it takes (None: any number)
    options: dict[str, Option] = field(default_factory=dict)  # options it reads from the node
    aliases: tuple[str, ...] = ()

    @classmethod
    def undeclared(cls, name: str, fn: DeliveryFunction) -> "DeliveryDef":
        """A ``module:function`` that no ``@delivery`` declared: its ports and options as set on
        the function (``fn.ports = 1``, the older way a user's function declares them)."""
        return cls(name, fn, getattr(fn, "ports", None), dict(getattr(fn, "options", {}) or {}))


#: The delivery functions by name (and Sprocket alias): the built-ins, and users' functions
#: declared with ``@delivery``.
DELIVERIES: Registry[DeliveryDef] = Registry("delivery function", error=DeliveryError,
                                             duplicate=DeliveryError)


def delivery(name: str, *, ports: int | None = None, options: dict[str, Option] | None = None,
             aliases: tuple[str, ...] = ()):
    """Register the decorated delivery function as ``name`` (and each of ``aliases``), declaring
    the streaming ports it takes (None: any number) and the node options it reads."""

    def register(fn: DeliveryFunction) -> DeliveryFunction:
        DELIVERIES.add(name, DeliveryDef(name, fn, ports, dict(options or {}), tuple(aliases)),
                       tuple(aliases))
        return fn

    return register


def _declared(fn) -> DeliveryDef | None:
    """The ``@delivery`` registration of ``fn``, if it has one."""
    return next((d for _, d in DELIVERIES.items() if d.fn is fn), None)


def get_delivery(name: str) -> DeliveryDef:
    """A registered delivery function (built in, a Sprocket alias, or a user's ``@delivery``), or
    ``module:function``."""
    if not isinstance(name, str) or not name:
        raise DeliveryError(f"delivery function {name!r} is not a name")
    if name in DELIVERIES:
        return DELIVERIES.get(name)
    if ":" not in name:
        raise DeliveryError(f"unknown delivery function {name!r} (built in: {', '.join(builtin_names())}; "
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
    d = _declared(fn)
    if d is not None:       # named by module:function: it keeps that name, and its declaration
        return DeliveryDef(name, fn, d.ports, d.options)
    return DeliveryDef.undeclared(name, fn)


def builtin_names() -> list[str]:
    """Every registered delivery function's name and alias, sorted."""
    return sorted(DELIVERIES.names(aliases=True))


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
    """The two ports joined by presentation time (``pair_delivery_func``), as ffmpeg's framesync
    joins a two-input filter's inputs (its defaults: repeat the last frame of an input that
    ended, end with the longer input). The first port drives: each of its items is one task,
    given the second port's frames that were showing during it (the last one at or before each
    of its frames' times). Once the first port ended, the second's frames after its last one go
    on, each paired with that last frame. So inputs of any frame rates, chunkings and lengths
    join; inputs that do not overlap in time are an error naming them. The stages that take
    such tasks (``blend``, ``merge_filter``, ``overlay``: ``pipeline.stages.timejoin``) pair
    the frames up by the same rule."""
    p0, p1 = node.ports
    st = node.state
    for port in (p0, p1):
        st.setdefault(port, []).extend(waiting.get(port, []))
        if port in waiting:
            waiting[port].clear()
    a_items = sorted(st[p0], key=lambda i: (i.start, i.key))
    b_items = sorted(st[p1], key=lambda i: (i.start, i.key))
    out: list[Batch] = []
    if not a_items or not b_items:
        if end:
            empty = p0 if not a_items else p1
            raise DeliveryError(f"node {node.name}: {empty} carried no frames; a join needs both of its inputs")
        return out
    fb = as_fraction(b_items[0].fps)
    b_end = max(i.end for i in b_items)
    while True:
        a = _next_item(st, a_items, "a_next", "a_done", end)
        if a is None:
            break
        fa = as_fraction(a.fps)
        lo = _floor(Fraction(a.start) / fa * fb)
        hi = min(_floor(Fraction(a.end - 1) / fa * fb), b_end - 1 if end else 1 << 62)
        lo = min(lo, hi)
        if not end and not _covered(b_items, lo, hi + 1):
            break                                       # its partners have not all arrived
        _take(st, "a_done", a, "a_next")
        out.append(_batch(st, {p0: [whole(a)], p1: _showing(b_items, lo, hi + 1)}))
    if end and len(st.get("a_done", ())) == len(a_items) and not st.get("tail_done"):
        st["tail_done"] = True
        _check_overlap(node, p0, p1, a_items, b_items)
        last = max(a_items, key=lambda i: i.end)
        t_last = Fraction(last.end - 1) / as_fraction(last.fps)
        tail = _floor(t_last * fb) + 1                  # the second's first frame after it
        for part in _parts(b_items, tail, b_end):
            out.append(_batch(st, {p0: [Part(last, last.count - 1, last.count)], p1: [part]}))
    return out


def _floor(x: Fraction) -> int:
    return x.numerator // x.denominator


def _covered(items: list[Item], lo: int, hi: int) -> bool:
    """Whether the sorted ``items`` hold every frame ``lo`` .. ``hi - 1``."""
    at = lo
    for i in items:
        if i.start <= at < i.end:
            at = i.end
        if at >= hi:
            return True
    return at >= hi


def _showing(items: list[Item], lo: int, hi: int) -> list[Part]:
    """The frames of sorted ``items`` showing from frame time ``lo`` to ``hi - 1``: those in the
    range, and before them, when ``lo`` falls in a gap (frames dropped upstream), the last frame
    before it."""
    parts = _parts(items, lo, hi)
    if not parts or parts[0].start > lo:
        before = [i for i in items if i.end <= lo and i.count]
        if before:
            b = max(before, key=lambda i: i.end)
            parts.insert(0, Part(b, b.count - 1, b.count))
    return parts


def _next_item(st: dict, items: list[Item], nxt: str, done: str, end: bool) -> Item | None:
    """The next item of the driving port: the one starting where the last ended; at the end,
    whatever is left, in order (gaps: frames dropped upstream)."""
    taken = {i.key for i in st.get(done, ())}
    left = [i for i in items if i.key not in taken]
    if not left:
        return None
    want = st.get(nxt, left[0].start if end else 0)
    found = next((i for i in left if i.start == want), None)
    return found if found is not None else (left[0] if end else None)


def _take(st: dict, done: str, item: Item, nxt: str) -> None:
    st.setdefault(done, []).append(item)
    st[nxt] = item.end


def _parts(items: list[Item], lo: int, hi: int) -> list[Part]:
    """Frames ``lo`` .. ``hi - 1`` of the sorted, contiguous ``items``, as parts."""
    out = []
    at = lo
    for i in items:
        a, b = max(at, i.start), min(hi, i.end)
        if a < b:
            out.append(Part(i, a - i.start, b - i.start))
            at = b
    return out


def _batch(st: dict, inputs: dict) -> Batch:
    lineage = st.get("groups", 0)
    st["groups"] = lineage + 1
    return Batch(inputs, lineage)


def _check_overlap(node: NodeState, p0: str, p1: str, a_items, b_items) -> None:
    fa, fb = as_fraction(a_items[0].fps), as_fraction(b_items[0].fps)
    a0, a1 = Fraction(a_items[0].start) / fa, Fraction(max(i.end for i in a_items) - 1) / fa
    b0, b1 = Fraction(b_items[0].start) / fb, Fraction(max(i.end for i in b_items) - 1) / fb
    if b0 > a1 or a0 > b1:
        raise DeliveryError(f"node {node.name}: {p0} ({float(a0):.3f}..{float(a1):.3f} s) and {p1} "
                            f"({float(b0):.3f}..{float(b1):.3f} s) do not overlap in time; a join "
                            f"needs frames of both at once")


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


@delivery("all", ports=1)
def all_at_once(node: NodeState, waiting: dict[str, list[Item]], end: bool) -> list[Batch]:
    """Every item of the port in one task, once the stream has ended (a global step over the
    whole video, such as smoothing a camera path: ``vidstabaggregate``)."""
    if not end:
        return []
    (port,) = node.ports
    items = sorted(waiting.get(port, []), key=lambda i: (i.start, i.key))
    waiting.get(port, []).clear()
    return [Batch({port: items}, 0)] if items else []
