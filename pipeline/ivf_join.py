"""A ``chunks`` sink written to ``-o NAME=s3://BUCKET/KEY.ivf`` with no process reading every
chunk back (docs/design/pipelines.md, docs/design/data-path.md).

The sink's values are VP8 chunks in IVF, each opening with a key frame, so no chain needs proving:
once the sink is complete the planner adds, inside the same job (same workers, same storage),

* ``NAME:layout``: the ``pipeline-ivf-layout`` operation lays the output out from the sink's
  items (their digests, sizes and frame counts) and the first chunk alone (read, checked against
  its digest, for the picture size of the file header): the layout of ``worker.assemble_ops``
  (``{"header", "groups", "sizes", "chunks"}``, parts of at least ``part_min`` bytes but the last).
  A sink's object is an ``EncodedChunk`` value (``pipeline.values``): its IVF file follows an
  envelope whose length the item's place in the video gives (``envelope``), so each chunk row
  carries where its IVF starts; the assemble task checks the claim (digest, IVF, sizes);
* ``NAME:assemble-J``: ``vp8-assemble`` builds parts J, J + K, ... and uploads each straight into
  the S3 multipart upload the client started (each chunk checked against its digest, its IVF
  record count against the item's frame count);
* ``NAME:join``: ``vp8-join`` completes the upload once it holds exactly the parts laid out.

The bytes are those the client writes for a local ``.ivf``: the header (the first key frame's
size, the sink's rate, every frame counted), then every frame with its index as pts (a chunk of
an encode stage shows every frame it holds). ``run_here`` runs these tasks in one process for
``--workers 0``, through the same operation functions.
"""

from __future__ import annotations

import json
import struct

from coordinator.excamera_job import ASSEMBLE_CHUNKS, assemble_fsm, join_fsm
from pipeline.values import EncodedChunk
from coordinator.fsm import DONE, FSM, State, Task, fill
from storage import ObjectRef
from worker.assemble_ops import plan_parts
from worker.ops import DEFAULT, OpContext, OperationError, check_outputs, get_verified, operation

LAYOUT_FSM = "pipeline-ivf-layout"
#: The FSMs of a joined sink's tasks (the assemble and join FSMs are the ExCamera encode's).
FSM_NAMES = (LAYOUT_FSM, "excamera-encode-assemble", "excamera-encode-join")
#: Seconds per task: each reads and uploads a few parts (S3 retries included).
TIMEOUT_S = 600.0
_IVF_HEADER = 32


def fsms() -> tuple[FSM, ...]:
    layout = FSM(LAYOUT_FSM, "layout", (
        State("layout", "pipeline-ivf-layout",
              {"chunks": ["${chunks}"], "rate_num": "${rate_num}", "rate_den": "${rate_den}",
               "part_min": "${part_min}", "layout": "${layout}"},
              {"ok": DONE}, TIMEOUT_S),))
    return layout, assemble_fsm(TIMEOUT_S), join_fsm(TIMEOUT_S)


def envelope(item) -> int:
    """Bytes before the IVF file in the object of ``item`` (an ``EncodedChunk`` of container
    ``ivf``, as the encode stage makes them)."""
    return len(EncodedChunk(b"", "ivf", item.start, item.count, tuple(item.fps), dict(item.meta)).to_bytes())


def tasks(sink: str, items: list, join) -> list[Task]:
    """The layout, assemble and join tasks of sink ``sink`` over its ``items`` (frame order), into
    ``join`` (a ``coordinator.excamera_job.JoinPlan``); ValueError when the items cannot make one
    IVF stream (the local writer refuses the same)."""
    fps = {tuple(i.fps) for i in items}
    if len(fps) != 1:
        raise ValueError(f"{sink}: its values play at {len(fps)} different rates; an .ivf file has one")
    (rate,) = fps
    layout = f"join/{sink}/layout.json"
    where = {"destination": join.destination, "upload_id": join.upload_id}
    k = max(1, -(-len(items) // ASSEMBLE_CHUNKS))
    out = [Task(f"{sink}:layout", LAYOUT_FSM, {
        "chunks": [f"{i.key} {i.sha256} {i.size} {i.count} {envelope(i)}" for i in items],
        "rate_num": int(rate[0]), "rate_den": int(rate[1]), "part_min": int(join.part_min), "layout": layout})]
    out += [Task(f"{sink}:assemble-{j:05d}", "excamera-encode-assemble",
                 {"layout": layout, "index": j, "of": k, "parts": f"join/{sink}/parts/{{:05d}}.ivf", **where},
                 after=(f"{sink}:layout",)) for j in range(k)]
    out.append(Task(f"{sink}:join", "excamera-encode-join", {"layout": layout, **where},
                    after=(f"{sink}:layout",) + tuple(f"{sink}:assemble-{j:05d}" for j in range(k))))
    return out


@operation("pipeline-ivf-layout")
def op_ivf_layout(ctx: OpContext, *, chunks: list[str], rate_num: int, rate_den: int, part_min: int,
                  layout: str) -> dict:
    """The layout of one IVF file of ``chunks`` (``"KEY SHA256 SIZE FRAMES AT"`` each, in order:
    the object, its frames and where its IVF file starts in it) at ``rate_num/rate_den`` frames a
    second, parts of at least ``part_min`` bytes, to ``layout``. Only the first chunk is read (its
    digest checked): a VP8 chunk in IVF whose first frame is a key frame, whose size the header
    carries."""
    from codec.chunks import frame_tag
    from codec.errors import VP8Error
    from codec.ivf import IvfHeader
    from pipeline.values import BadValue

    rows = [line.split(" ") for line in chunks]
    if not rows or any(len(r) != 5 or not all(f.isdigit() for f in r[2:]) or int(r[4]) > int(r[2]) - _IVF_HEADER
                       for r in rows):
        raise OperationError("pipeline-ivf-layout: chunks must be 'KEY SHA256 SIZE FRAMES AT' lines")
    if part_min < 1:
        raise OperationError(f"pipeline-ivf-layout: part_min {part_min} must be positive")
    key, sha, size, _, at = rows[0]
    first = get_verified(ctx, key, [f"{key} {sha} {size}"])
    try:
        value = EncodedChunk.from_bytes(first)
        if value.container != "ivf" or len(value.data) != len(first) - int(at):
            raise ValueError(f"a {value.container} chunk, its envelope not the {at} bytes planned")
        IvfHeader.parse(value.data)
        (length,) = struct.unpack_from("<I", value.data, _IVF_HEADER)
        tag = frame_tag(value.data[_IVF_HEADER + 12:_IVF_HEADER + 12 + length])
    except (ValueError, BadValue, VP8Error, struct.error) as e:
        raise OperationError(f"{key}: not a VP8 chunk in IVF ({e}); an s3:// .ivf output takes VP8 "
                             "chunks (an encode stage's)") from None
    if not tag.key_frame:
        raise OperationError(f"{key}: does not start with a key frame")
    counts = [int(r[3]) for r in rows]
    sizes = [int(r[2]) - int(r[4]) for r in rows]      # each chunk's IVF file
    header = IvfHeader(width=tag.width, height=tag.height, rate=rate_num, scale=rate_den,
                       frame_count=sum(counts)).to_bytes()
    groups = plan_parts(sizes, part_min)
    part_sizes = [(_IVF_HEADER if g == 0 else 0) + sum(sizes[i] - _IVF_HEADER for i in range(a, b))
                  for g, (a, b) in enumerate(groups)]
    firsts = [sum(counts[:i]) for i in range(len(counts))]
    doc = {"header": header.hex(), "groups": groups, "sizes": part_sizes,
           "chunks": [[r[0], r[1], int(r[2]), first_frame, n, int(r[4])]
                      for r, first_frame, n in zip(rows, firsts, counts)]}
    ref = ctx.storage.put(layout, json.dumps(doc, separators=(",", ":")).encode())
    return {"object": ref, "parts": len(groups), "bytes": sum(part_sizes)}


def run_here(fsm: FSM, task: Task, done: dict, storage) -> dict:
    """Task ``task`` of ``fsm`` (one state) in this process as a worker would run it: its
    arguments filled from its params and ``${after}`` (the objects the tasks it runs after
    reported, from ``done``: task id -> outputs), the operation called with the job's
    ``storage``. Its outputs, as the engine hands them to the planner."""
    state = fsm.state(fsm.initial)
    context = dict(task.params, task_id=task.task_id, job_id="local", attempt=1)
    context["after"] = [f"{v.key} {v.sha256} {v.size}" for dep in task.after
                        for outs in done.get(dep, {}).values() for v in outs.values() if isinstance(v, ObjectRef)]
    op = DEFAULT.get(state.operation)
    out = op.fn(OpContext("local", task.task_id, 1, storage), **op.check_args(fill(state.args, context)))
    return {state.name: check_outputs(state.operation, out)}


__all__ = ["FSM_NAMES", "fsms", "op_ivf_layout", "run_here", "tasks"]
