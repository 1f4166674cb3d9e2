"""The ``pipeline-stage`` worker operation: one task of a pipeline node (docs/design/pipelines.md).

Arguments (the planner's task params, ``pipeline.planner``): ``node``, ``stage``, ``config``
(JSON: option -> value), ``inputs`` (JSON: port -> list of ``{key, sha256, size, type, a, b,
count}``: an object and the frames ``a`` .. ``b`` of it to keep), ``lineage`` and ``prefix``
(where the outputs go). Each input object is read from the job's storage, checked against its
digest, decoded (``pipeline.values.decode``) and sliced; the stage function runs with a private
scratch directory (``ctx.tmpdir``, made only if the stage asks for it, removed after); each output
value is encoded and stored as ``<prefix>.<port>.<i>``. The result: an ``ObjectRef`` per output (``o0``, ``o1``, ...: the coordinator re-verifies each) and
``items``, a JSON list saying which port, frames and metadata each carries.

``run_stage`` is the same work without a worker, for ``--workers 0``; both write the same bytes.
Any failure is one ``OperationError`` line naming the node and the lineage.
"""

from __future__ import annotations

import hashlib
import json

from foundation.errors import one_line
from storage import Storage
from pipeline.stage import StageContext, get_stage
from pipeline.steal import Prebuilt, run_pair
from pipeline.values import PORT_TYPES, Records, decode
from worker.ops import OpContext, OperationError, operation


def _slice(value, a: int, b: int, count: int):
    """Frames ``a`` .. ``b`` of a value holding ``count`` frames (the whole value if that is all)."""
    if (a, b) == (0, count):
        return value
    if hasattr(value, "slice"):
        return value.slice(a, b)
    if isinstance(value, Records):
        lo, hi = value.start + a, value.start + b
        return Records([r for r in value.records if lo <= r.get("frame", lo) < hi], lo, b - a,
                       value.fps, dict(value.meta))
    raise ValueError(f"a {type(value).__name__} cannot be cut into frames {a}..{b}")


def _load(storage: Storage, d: dict):
    data = storage.get(d["key"])
    if len(data) != d["size"] or hashlib.sha256(data).hexdigest() != d["sha256"]:
        raise ValueError(f"input {d['key']} does not match its digest")
    return _slice(decode(d["type"], data), d["a"], d["b"], d["count"])


def run_stage(storage: Storage, *, node: str, stage: str, config: str, inputs: str, lineage: int,
              prefix: str, task_id: str = "", attempt: int = 1, steal: int = 0) -> dict:
    """Run one task: load, call the stage, store; returns the operation's outputs. ``steal``: the
    task is one of a work-stealing pair of attempts (``pipeline.steal``); the attempt number's
    parity picks the end it starts from."""
    where = f"node {node} lineage {lineage}"
    try:
        st = get_stage(stage)
        cfg = json.loads(config)
        values = {port: [_load(storage, d) for d in ds] for port, ds in json.loads(inputs).items()}
    except (ValueError, KeyError, TypeError, OSError) as e:
        raise OperationError(f"{where}: inputs: {one_line(e)}") from None
    ctx = StageContext(node, task_id, lineage, attempt)
    stole = ""
    try:
        if steal:
            produced, stole = run_pair(storage, st, ctx, values, cfg, prefix, (attempt - 1) % 2)
        else:
            produced = st.fn(ctx, values, cfg) or {}
    except Exception as e:  # noqa: BLE001 - a stage's failure is the task's, in one line
        raise OperationError(f"{where}: stage {st.name}: {one_line(e)}") from None
    finally:
        ctx.cleanup()
    if not isinstance(produced, dict):
        raise OperationError(f"{where}: stage {st.name} returned {type(produced).__name__}, not a dict")
    out: dict = {}
    items = []
    for port in sorted(produced):
        if port not in st.outputs:
            raise OperationError(f"{where}: stage {st.name} returned port {port!r}, which it does not declare")
        cls = PORT_TYPES[st.outputs[port]]
        for i, v in enumerate(produced[port]):
            if not isinstance(v, (cls, Prebuilt)):
                raise OperationError(f"{where}: stage {st.name} port {port}: value {i} is a "
                                     f"{type(v).__name__}, not {cls.__name__}")
            name = f"o{len(items)}"
            out[name] = storage.put(f"{prefix}.{port}.{i}", v.to_bytes())
            items.append({"ref": name, "port": port, "start": v.start, "count": v.count,
                          "fps": list(v.fps), "meta": v.meta})
    out["items"] = json.dumps(items, sort_keys=True, separators=(",", ":"))
    if stole:
        out["steal"] = stole
    return out


@operation("pipeline-stage")
def op_pipeline_stage(ctx: OpContext, *, node: str, stage: str, config: str, inputs: str, lineage: int,
                      prefix: str, steal: int = 0) -> dict:
    """One task of pipeline node ``node`` (see the module docstring)."""
    return run_stage(ctx.storage, node=node, stage=stage, config=config, inputs=inputs, lineage=lineage,
                     prefix=prefix, task_id=ctx.task_id, attempt=ctx.attempt, steal=steal)


import pipeline.ivf_join  # noqa: E402,F401  (a chunks sink joined in S3: its layout, assemble and join ops)
