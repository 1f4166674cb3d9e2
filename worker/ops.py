"""The operation registry: the only things a coordinator can ask a worker to do.

An operation is a Python function registered under a name. It takes an ``OpContext`` (the job's
storage, the rendezvous, a scratch space that lives as long as the task attempt) and keyword
arguments with type annotations (``int``, ``float``, ``str``, ``bytes``, ``bool``, ``list[str]``,
``ObjectRef``), and returns a dict of typed outputs. The registry checks every argument against
the annotations before the call (unknown, missing or mistyped arguments are refused with a clear
error) and every output after it. ``async def`` operations run on the worker's event loop; plain
functions run in a thread, so a slow one does not stall the worker's stream.

An output named ``outcome`` (a str) picks the FSM edge; without it the outcome is ``ok``. Every
``ObjectRef`` output is re-hashed by the coordinator before it believes the result.

The codec operations (first pass, state dump, encode-given-state, rebase, stitch) plug in later
the same way::

    from worker.ops import operation

    @operation("vp8-first-pass")
    def first_pass(ctx, *, chunk: str, quantizer: int) -> dict:
        ...
        return {"encoded": ctx.storage.put(f"chunks/{ctx.task_id}.ivf", data)}

The registry is a ``foundation.registry.Registry`` of ``Operation`` entries; ``DEFAULT`` (also
named ``OPERATIONS``) is the one workers use unless given another. Built-in operations (see each
docstring): ``sleep``, ``echo``, ``fail``, ``hash-object``, ``make-object``, ``make-state``,
``send-state``, ``receive-state``, ``upload``, ``concat``.
No I/O happens at import time.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import random
import typing
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Protocol

from foundation.errors import ExcameraError
from foundation.registry import Registry as _Registry
from storage import ObjectRef, Storage

ALLOWED_TYPES = (int, float, str, bytes, bool, ObjectRef)


class OperationError(ExcameraError):
    """An operation refused its input or failed; the message is one line for the result."""


class UnknownOperation(OperationError):
    pass


@dataclass
class OpContext:
    """What an operation gets besides its arguments."""

    job_id: str
    task_id: str                     # the logical worker (task) this command belongs to
    attempt: int
    storage: Storage                 # confined to the job's prefix
    rendezvous: Any = None           # rendezvous.client.RendezvousClient, or None
    scratch: dict[str, bytes] = field(default_factory=dict)  # per task attempt
    timeout_s: float = 60.0


class OperationFunction(Protocol):
    """What ``@operation`` registers: the context, then typed keyword-only arguments; a dict of
    typed outputs (or None), directly or awaited."""

    def __call__(self, ctx: OpContext, /, **kwargs: Any) -> dict | None | Awaitable[dict | None]: ...


@dataclass(frozen=True)
class Param:
    name: str
    type: Any          # one of ALLOWED_TYPES, or list (meaning list[str])
    required: bool
    default: Any = None


@dataclass(frozen=True)
class Operation:
    name: str
    fn: OperationFunction
    params: dict[str, Param]
    is_async: bool

    def check_args(self, args: dict[str, Any]) -> dict[str, Any]:
        """The arguments as the function will get them, or OperationError saying what is wrong."""
        unknown = sorted(set(args) - set(self.params))
        if unknown:
            raise OperationError(f"operation {self.name}: unknown argument(s) {', '.join(unknown)} "
                                 f"(takes {', '.join(self.params) or 'none'})")
        out = {}
        for p in self.params.values():
            if p.name not in args:
                if p.required:
                    raise OperationError(f"operation {self.name}: missing argument {p.name}")
                continue
            out[p.name] = _coerce(self.name, p, args[p.name])
        return out


def _type_label(t) -> str:
    return "list[str]" if t is list else t.__name__


def _coerce(op: str, p: Param, value: Any) -> Any:
    t = p.type
    if t is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if t is list:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
    elif t is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(value, t):
        return value
    raise OperationError(f"operation {op}: argument {p.name} must be {_type_label(t)}, "
                         f"got {type(value).__name__}")


def _param_type(fn_name: str, name: str, hint) -> Any:
    if hint in ALLOWED_TYPES:
        return hint
    if typing.get_origin(hint) is list and typing.get_args(hint) == (str,):
        return list
    raise TypeError(f"operation {fn_name}: parameter {name} has type {hint!r}; allowed: "
                    f"int, float, str, bytes, bool, list[str], ObjectRef")


class Registry(_Registry[Operation]):
    """Name -> Operation: the project's registry type, which also checks and runs them."""

    def __init__(self) -> None:
        super().__init__("operation", error=UnknownOperation)

    def register(self, name: str, fn: Callable | None = None, aliases: tuple[str, ...] = ()):
        """Register ``fn`` as operation ``name`` (its signature checked: TypeError when it is not
        an operation's); without ``fn``, a decorator that does."""
        if fn is None:
            return lambda f: self.register(name, f, aliases)
        if name in self:                             # checked first, as the signature may not be
            if self.get(name).fn is fn:
                return fn                            # the same function twice: harmless
            raise self.duplicate(f"operation {name!r} is already registered")
        hints = typing.get_type_hints(fn)
        sig = inspect.signature(fn)
        params = {}
        for i, (pname, p) in enumerate(sig.parameters.items()):
            if i == 0:
                continue  # the OpContext
            if p.kind is not inspect.Parameter.KEYWORD_ONLY:
                raise TypeError(f"operation {name}: parameter {pname} must be keyword-only (after *)")
            params[pname] = Param(pname, _param_type(name, pname, hints.get(pname)),
                                  p.default is inspect.Parameter.empty,
                                  None if p.default is inspect.Parameter.empty else p.default)
        self.add(name, Operation(name, fn, params, inspect.iscoroutinefunction(fn)), aliases)
        return fn

    async def call(self, name: str, ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
        """Check the arguments, run the operation, check its outputs."""
        op = self.get(name)
        kwargs = op.check_args(args)
        if op.is_async:
            out = await op.fn(ctx, **kwargs)
        else:
            out = await asyncio.to_thread(op.fn, ctx, **kwargs)
        return check_outputs(name, out)


def check_outputs(name: str, out: Any) -> dict[str, Any]:
    if out is None:
        return {}
    if not isinstance(out, dict):
        raise OperationError(f"operation {name}: returned {type(out).__name__}, not a dict")
    for k, v in out.items():
        ok = (isinstance(v, ALLOWED_TYPES)
              or (isinstance(v, list) and all(isinstance(i, str) for i in v)))
        if not isinstance(k, str) or not ok:
            raise OperationError(f"operation {name}: output {k!r} has type {type(v).__name__}")
    if "outcome" in out and not isinstance(out["outcome"], str):
        raise OperationError(f"operation {name}: output 'outcome' must be a str")
    return out


#: The registry workers use unless given another.
DEFAULT = Registry()
OPERATIONS = DEFAULT


def operation(name: str, registry: Registry = DEFAULT) -> Callable[[Callable], Callable]:
    """Decorator: register ``fn`` under ``name``."""
    return lambda fn: registry.register(name, fn)


def expand(seed: bytes, size: int) -> bytes:
    """``size`` deterministic pseudo-random bytes from ``seed`` (Mersenne Twister seeded with the
    seed's sha256: fast, and identical on every machine and Python 3 version)."""
    if size < 0:
        raise OperationError(f"size {size} is negative")
    return random.Random(hashlib.sha256(seed).digest()).randbytes(size)


def _scratch(ctx: OpContext, name: str) -> bytes:
    try:
        return ctx.scratch[name]
    except KeyError:
        raise OperationError(f"task {ctx.task_id}: no scratch value {name!r} (held: "
                             f"{', '.join(sorted(ctx.scratch)) or 'none'})") from None


def get_verified(ctx: OpContext, key: str, verified: list[str]) -> bytes:
    """Object ``key``, checked against the digest the coordinator accepted for it: ``verified``
    holds ``"KEY SHA256 SIZE"`` lines (the FSM's ``${after}``). An empty list checks nothing (a
    job whose inputs the client stored); a key it does not name, or other bytes, fail the task."""
    data = ctx.storage.get(key)
    if not verified:
        return data
    for line in verified:
        k, _, rest = line.partition(" ")
        if k == key:
            sha, _, size = rest.partition(" ")
            if len(data) != int(size) or hashlib.sha256(data).hexdigest() != sha:
                raise OperationError(f"storage key {key!r}: holds {len(data)} bytes that are not the "
                                     f"{size} verified ({sha[:16]}...)")
            return data
    raise OperationError(f"storage key {key!r}: not among the objects verified for this task")


# -- built-in operations -------------------------------------------------------------------------

@operation("sleep")
async def op_sleep(ctx: OpContext, *, seconds: float) -> dict:
    """Wait ``seconds`` (tests and benchmarks: a stand-in for work)."""
    if not 0 <= seconds <= 3600:
        raise OperationError(f"sleep: seconds {seconds} out of range 0..3600")
    await asyncio.sleep(seconds)
    return {}


@operation("echo")
async def op_echo(ctx: OpContext, *, text: str, outcome: str = "ok") -> dict:
    """Return ``text`` (and ``outcome``, to steer the FSM)."""
    return {"text": text, "outcome": outcome}


@operation("fail")
async def op_fail(ctx: OpContext, *, message: str) -> dict:
    """Always fail with ``message`` (tests)."""
    raise OperationError(message)


@operation("hash-object")
def op_hash_object(ctx: OpContext, *, key: str) -> dict:
    """sha256 and size of a storage object."""
    ref = ctx.storage.digest(key)
    return {"sha256": ref.sha256, "size": ref.size}


@operation("make-object")
def op_make_object(ctx: OpContext, *, key: str, size: int, seed: str) -> dict:
    """Write ``size`` deterministic bytes (from ``seed``) to ``key``."""
    return {"object": ctx.storage.put(key, expand(seed.encode(), size))}


@operation("make-state")
def op_make_state(ctx: OpContext, *, into: str, size: int, seed: str) -> dict:
    """Put ``size`` deterministic bytes (from ``seed``) in scratch slot ``into``."""
    data = expand(seed.encode(), size)
    ctx.scratch[into] = data
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


@operation("send-state")
async def op_send_state(ctx: OpContext, *, to: str, tag: str = "state", scratch: str = "state",
                        compress: str = "auto") -> dict:
    """Send scratch slot ``scratch`` to worker (task) ``to`` through the rendezvous. An empty
    ``to`` (the last chunk has no successor) sends nothing."""
    if not to:
        return {"sent": False}
    if ctx.rendezvous is None:
        raise OperationError("send-state: this worker has no rendezvous")
    if compress not in ("auto", "yes", "no"):
        raise OperationError(f"send-state: compress must be auto, yes or no, not {compress!r}")
    data = _scratch(ctx, scratch)
    new = await ctx.rendezvous.send(ctx.task_id, to, tag, data,
                                    compress="auto" if compress == "auto" else compress == "yes")
    return {"sent": True, "duplicate": not new, "sha256": hashlib.sha256(data).hexdigest(),
            "size": len(data)}


@operation("receive-state")
async def op_receive_state(ctx: OpContext, *, sender: str, into: str = "state", tag: str = "state",
                           keep: bool = False, timeout_s: float = 0.0) -> dict:
    """Wait for the message ``sender`` -> this task tagged ``tag`` and put it in scratch slot
    ``into``. ``keep`` leaves it held at the rendezvous (so a re-issued attempt of this task can
    receive it again; the coordinator releases it when the task is done). An empty ``sender``
    (the first chunk has no predecessor) puts an empty value."""
    if not sender:
        ctx.scratch[into] = b""
        return {"received": False, "size": 0}
    if ctx.rendezvous is None:
        raise OperationError("receive-state: this worker has no rendezvous")
    data = await ctx.rendezvous.receive(ctx.task_id, sender, tag, timeout_s=timeout_s or ctx.timeout_s,
                                        keep=keep)
    ctx.scratch[into] = data
    return {"received": True, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


@operation("upload")
def op_upload(ctx: OpContext, *, scratch: str, key: str) -> dict:
    """Write scratch slot ``scratch`` to storage ``key``."""
    return {"object": ctx.storage.put(key, _scratch(ctx, scratch))}


@operation("concat")
def op_concat(ctx: OpContext, *, keys: list[str], output: str) -> dict:
    """Join storage objects ``keys``, in order, into ``output``."""
    if not keys:
        raise OperationError("concat: no keys")
    return {"object": ctx.storage.put(output, b"".join(ctx.storage.get(k) for k in keys))}
