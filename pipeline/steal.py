"""Work stealing between a pair of attempts (Sprocket's decode and transform pairs; issue 12).

A node with ``"steal": true`` in its pipespec has each task started as two attempts at once
(``coordinator.fsm.Task.pair``). Both split the task's pictures into the same ``UNITS`` runs and
walk them from opposite ends, so each does about half; before a unit an attempt looks in the
job's storage, and a unit its peer has already stored is skipped. When an attempt reaches the end
of its walk every unit is done, by it or by its peer, so a slow or frozen peer costs nothing: the
fast attempt simply did the peer's half too. The first to finish puts the whole output together
(its own units from memory, its peer's as stored, never recompressed: each picture is its own
zstd frame, ``FrameBatch.picture_blobs``) and wins; the engine lets the other finish its unit and
go idle, or stops it if it is frozen.

* ``"frames"`` stages map each picture on its own (grayscale, blend, ...): role 0 walks the units
  first to last, role 1 last to first; they meet in the middle.
* ``"decode"``: decoding is sequential (each picture predicts from the one before), so role 1
  decodes from the key frame to the middle without storing, stores the second half, then stores
  whatever of the first half its peer has not. Role 0 decodes first to last and stores each unit
  the peer has not.

The output is the same bytes either way: units have fixed bounds, each picture is compressed the
same by whoever did it, and the object is put together in picture order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from pipeline.values import FrameBatch

#: Units a task's pictures are split into (fewer if it has fewer pictures).
UNITS = 8


def unit_bounds(count: int, units: int = UNITS) -> list[tuple[int, int]]:
    n = max(1, min(units, count))
    return [(count * j // n, count * (j + 1) // n) for j in range(n)]


def walk(n: int, role: int, sequential: bool) -> list[int]:
    """The order in which an attempt of ``role`` visits ``n`` units."""
    if role == 0:
        return list(range(n))
    if sequential:
        return list(range(n // 2, n)) + list(range(n // 2))
    return list(range(n - 1, -1, -1))


@dataclass
class Prebuilt:
    """An output value already in its stored form (put together from units)."""
    start: int
    count: int
    fps: tuple[int, int]
    meta: dict
    data: bytes

    def to_bytes(self) -> bytes:
        return self.data


@dataclass
class _Units:
    storage: object
    prefix: str
    ports: tuple[str, ...]
    mine: dict = field(default_factory=dict)     # unit -> port -> (head, blobs), done here

    def _key(self, j: int, what: str) -> str:
        return f"{self.prefix}.steal.{j:03d}.{what}"

    def done(self, j: int) -> bool:
        return j in self.mine or self.storage.exists(self._key(j, "done"))

    def store(self, j: int, values: dict[str, FrameBatch]) -> None:
        parts, made = {}, {}
        for port in self.ports:
            v = values[port]
            if id(v) not in made:   # duplicate_filter hands one batch to both its ports
                made[id(v)] = (v._head(), v.picture_blobs())
            head, blobs = parts[port] = made[id(v)]
            self.storage.put(self._key(j, port), FrameBatch.bytes_from_blobs(head, blobs))
        # written last: a unit is done only once every port of it is stored
        self.storage.put(self._key(j, "done"), json.dumps(sorted(parts)).encode())
        self.mine[j] = parts

    def blobs(self, j: int, port: str) -> tuple[dict, list[bytes]]:
        if j in self.mine:
            return self.mine[j][port]
        head, blobs = FrameBatch.split_blobs(self.storage.get(self._key(j, port)))
        return head, [bytes(b) for b in blobs]

    def assemble(self, n: int) -> dict[str, list[Prebuilt]]:
        out = {}
        for port in self.ports:
            parts = [self.blobs(j, port) for j in range(n)]
            head = dict(parts[0][0], count=sum(h["count"] for h, _ in parts))
            for k in ("z", "sizes"):
                head.pop(k, None)
            data = FrameBatch.bytes_from_blobs(head, [b for _, bs in parts for b in bs])
            out[port] = [Prebuilt(head["start"], head["count"], tuple(head["fps"]), head["meta"], data)]
        return out


def run_pair(storage, st, ctx, values: dict, config: dict, prefix: str, role: int):
    """Run ``st`` on ``values`` as attempt ``role`` (0 or 1) of a pair; returns the outputs (port
    -> values, as ``st.fn`` would) and a line saying what this attempt did. A task whose inputs
    do not split into pictures (not one batch per port, or batches that do not line up) runs
    whole, as without stealing."""
    if st.steal == "decode":
        chunks = values.get("chunks", [])
        if len(chunks) == 1 and chunks[0].count > 0:
            return _decode_pair(storage, ctx, chunks[0], prefix, role)
    elif st.steal == "frames":
        batches = [vs[0] for vs in values.values() if len(vs) == 1]
        if len(batches) == len(values) and batches and \
                len({(b.start, b.count) for b in batches}) == 1:
            return _frames_pair(storage, st, ctx, values, config, prefix, role, batches[0].count)
    return st.fn(ctx, values, config) or {}, "whole (the inputs do not split into pictures)"


def _line(did: list[int], n: int, role: int) -> str:
    own = set(range((n + 1) // 2)) if role == 0 else set(range((n + 1) // 2, n))
    stolen = len(set(did) - own)
    return f"role {role}: did {len(did)} of {n} units, {stolen} of them the peer's"


def _frames_pair(storage, st, ctx, values, config, prefix, role, count):
    bounds = unit_bounds(count)
    units = _Units(storage, prefix, tuple(sorted(st.outputs)))
    did = []
    for j in walk(len(bounds), role, sequential=False):
        if units.done(j):
            continue
        a, b = bounds[j]
        out = st.fn(ctx, {p: [vs[0].slice(a, b)] for p, vs in values.items()}, config) or {}
        got = {}
        for port in units.ports:
            vs = out.get(port, [])
            if len(vs) != 1 or not isinstance(vs[0], FrameBatch) or vs[0].count != b - a:
                raise ValueError(f"stage {st.name} is not picture by picture: port {port} gave "
                                 f"{len(vs)} value(s) for {b - a} pictures")
            got[port] = vs[0]
        units.store(j, got)
        did.append(j)
    return units.assemble(len(bounds)), _line(did, len(bounds), role)


def _decode_pair(storage, ctx, chunk, prefix, role):
    from pipeline.stages.video import check_images, chunk_images
    bounds = unit_bounds(chunk.count)
    n = len(bounds)
    units = _Units(storage, prefix, ("frames",))
    held = set(range(n // 2)) if role else set()   # decoded only to reach role 1's half
    images, did = [], []

    def unit(j):
        a, b = bounds[j]
        return FrameBatch.from_images(images[a:b], chunk.start + a, chunk.fps, chunk.meta)

    ends = {b: j for j, (a, b) in enumerate(bounds)}
    for im in chunk_images(chunk, ctx.tmpdir):
        images.append(im)
        j = ends.get(len(images))
        if j is not None and j not in held and not units.done(j):
            units.store(j, {"frames": unit(j)})
            did.append(j)
    check_images(chunk, images)
    for j in reversed(range(n)):     # role 1's steal: the first half, back from the middle
        if not units.done(j):
            units.store(j, {"frames": unit(j)})
            did.append(j)
    return units.assemble(n), _line(did, n, role)
