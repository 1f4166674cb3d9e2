"""The stage registry: what a pipespec node's ``stage`` names.

A stage is a Python function registered with ``@stage``, declaring its typed ports, its options
and its default delivery function, the way worker operations register (``worker.ops``)::

    from pipeline.stage import Option, stage
    from pipeline.values import FrameBatch

    @stage("invert", inputs={"frames": "frames"}, outputs={"frames": "frames"},
           options={"strength": Option(float, 1.0, "how much")})
    def invert(ctx, inputs, config):
        out = []
        for batch in inputs["frames"]:               # FrameBatch values, in frame order
            out.append(FrameBatch(255 - batch.y, batch.u, batch.v, batch.start, batch.fps))
        return {"frames": out}

The function gets a ``StageContext``, ``inputs`` (input port -> list of values of the port's
type, ``pipeline.values``) and ``config`` (option -> value, checked, typed and with defaults
filled); it returns output port -> list of values. A value's ``start``/``count``/``fps`` say
where in the video it belongs; the planner turns each into an item downstream. Stages must be
deterministic: a re-issued task must write the same bytes (that is what keeps a pipeline's output
identical when workers die).

The registry is ``STAGES`` (a ``foundation.registry.Registry`` of ``StageDef``); ``get_stage`` and
``all_stages`` read it after importing the built-ins. A user's module registers its stages on import; ``excamera pipeline run --stages MODULE`` (and
every worker) imports it. Built-in stages live in ``pipeline.stages`` and are imported on first
lookup, so importing this module stays cheap.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from foundation.errors import ExcameraError
from foundation.registry import Registry
from pipeline.values import PORT_TYPES

#: The built-in stage modules, imported on the first lookup.
BUILTIN_MODULES: tuple[str, ...] = ("pipeline.stages",)

_REQUIRED = object()


class StageError(ExcameraError):
    """A stage that cannot be registered, found or configured (one line, naming it)."""


@dataclass(frozen=True)
class Option:
    """One option of a stage: its type (int, float, str or bool), default (``REQUIRED`` when it
    must be given), help text, and the allowed values when only some are."""

    type: type
    default: Any = _REQUIRED
    help: str = ""
    choices: tuple = ()

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED


REQUIRED = _REQUIRED


class StageFunction(Protocol):
    """What ``@stage`` decorates: output port -> values, from input port -> values."""

    def __call__(self, ctx: "StageContext", inputs: dict[str, list], config: dict[str, Any]
                 ) -> dict[str, list]: ...


@dataclass(frozen=True)
class StageDef:
    name: str
    fn: StageFunction
    inputs: dict[str, str]                    # port -> port type
    outputs: dict[str, str]
    options: dict[str, Option] = field(default_factory=dict)
    delivery: str = "default"                 # default delivery function (a node may override)
    optional_inputs: tuple[str, ...] = ()     # ports a pipespec may leave unconnected
    aliases: tuple[str, ...] = ()
    extra: str = ""                           # the pip extra its libraries come from, if any
    doc: str = ""
    # delivery option -> its default as a function of this stage's options (when the pipespec
    # does not set it): excamera_encode groups N*x frames per task
    delivery_defaults: dict[str, Callable] = field(default_factory=dict)
    # how a pair of attempts may split a task (a node's "steal": true; pipeline.steal):
    # "frames" for a stage that maps each picture on its own, "decode" for decode; "" for none
    steal: str = ""


#: Every registered stage, by name (and alias). Read it through ``get_stage``/``all_stages``,
#: which import the built-in stages first.
STAGES: Registry[StageDef] = Registry("stage", error=StageError, duplicate=StageError)
_loaded = False


def stage(name: str, *, inputs: dict[str, str], outputs: dict[str, str],
          options: dict[str, Option] | None = None, delivery: str = "default",
          optional_inputs: tuple[str, ...] = (), aliases: tuple[str, ...] = (), extra: str = "",
          delivery_defaults: dict[str, Callable] | None = None, steal: str = ""):
    """Register the decorated function as stage ``name`` (and under each of ``aliases``).
    ``delivery_defaults`` gives a delivery option (e.g. ``frames_per_chunk``) a default computed
    from the stage's own options, used when the pipespec leaves it out. ``steal``: ``"frames"``
    when the stage maps each picture on its own (its output for any run of pictures is the run
    of its outputs for each), so a pair of attempts may split a task (``pipeline.steal``)."""

    if steal not in ("", "frames", "decode"):
        raise StageError(f"stage {name}: steal must be 'frames' or 'decode', not {steal!r}")

    def register(fn: Callable) -> Callable:
        for port, t in {**inputs, **outputs}.items():
            if t not in PORT_TYPES:
                raise StageError(f"stage {name}: port {port!r} has unknown type {t!r} "
                                 f"(known: {', '.join(sorted(PORT_TYPES))})")
        for port in optional_inputs:
            if port not in inputs:
                raise StageError(f"stage {name}: optional input {port!r} is not an input")
        d = StageDef(name, fn, dict(inputs), dict(outputs), dict(options or {}), delivery,
                     tuple(optional_inputs), tuple(aliases), extra, (fn.__doc__ or "").strip(),
                     dict(delivery_defaults or {}), steal)
        STAGES.add(name, d, tuple(aliases))      # StageError for a name already taken
        return fn

    return register


def _load_builtins() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for m in BUILTIN_MODULES:
            importlib.import_module(m)


def load_modules(modules) -> None:
    """Import user modules that register stages (or delivery functions)."""
    for m in modules:
        try:
            importlib.import_module(m)
        except ImportError as e:
            raise StageError(f"cannot import stage module {m!r}: {e}") from None


def get_stage(name: str) -> StageDef:
    """The stage registered as ``name`` or under that alias; StageError when there is none."""
    _load_builtins()
    return STAGES.get(name)


def all_stages() -> dict[str, StageDef]:
    """Every stage by its name (aliases left out), the built-ins imported first."""
    _load_builtins()
    return dict(STAGES.items())


class StageContext:
    """What a stage function gets besides its inputs and config: the pipespec node's name, the
    task's id, the lineage (chunk or group number) it descends from, the attempt, and ``tmpdir``,
    a private scratch directory made on first use and removed after the call."""

    def __init__(self, node: str, task_id: str, lineage: int, attempt: int = 1, tmpdir: str = ""):
        self.node, self.task_id, self.lineage, self.attempt = node, task_id, lineage, attempt
        self._tmpdir = tmpdir
        self._made = ""

    @property
    def tmpdir(self) -> str:
        if not self._tmpdir:   # most stages never touch the disk: make it only when asked
            import tempfile
            self._tmpdir = self._made = tempfile.mkdtemp(prefix="excamera-stage-")
        return self._tmpdir

    def cleanup(self) -> None:
        """Remove the scratch directory if this context made it."""
        if self._made:
            import shutil
            shutil.rmtree(self._made, ignore_errors=True)
            self._made = self._tmpdir = ""

    def __repr__(self) -> str:
        return f"StageContext(node={self.node!r}, task_id={self.task_id!r}, lineage={self.lineage})"
