"""Option values of a pipespec node: plain values, or arithmetic on the frame rate (``"{fps}"``,
``"{fps}*2"``) kept as an ``FpsExpr`` until a task knows its rate. ``pipeline.spec`` parses them;
``pipeline.delivery`` resolves them per task."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from foundation.errors import ExcameraError
from pipeline import arith


class SpecError(ExcameraError):
    """A pipespec that cannot run: one line naming the node or stream."""


@dataclass(frozen=True)
class FpsExpr:
    """A numeric option given as arithmetic on ``fps``, evaluated once the frame rate is known."""

    text: str
    tree: Any
    type: type

    def at(self, fps: tuple[int, int]) -> int | float:
        value = arith.evaluate(self.tree, {"fps": Fraction(fps[0], fps[1])})
        if self.type is int:
            return int((value + Fraction(1, 2)) // 1)   # nearest, halves up: 29.97 -> 30
        return float(value)


def resolve_option(node: str, name: str, value, fps: tuple[int, int] | None):
    """An option's value for a task at ``fps`` (expressions evaluated)."""
    if not isinstance(value, FpsExpr):
        return value
    if fps is None:
        raise SpecError(f"node {node}: option {name} = {value.text!r} needs the frame rate, "
                        f"which is not known here")
    try:
        return value.at(fps)
    except arith.ArithError as e:
        raise SpecError(f"node {node}: option {name} = {value.text!r}: {e}") from None
