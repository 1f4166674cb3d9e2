"""A pipeline submitted to a running coordinator (a ``RemoteCoordinator`` backend).

A pipeline is a dynamic job: its planner lives where the engine runs. The client reads the
sources into items as for a local run, plans the first tasks, and sends the Jobs service the job
(those tasks and every node's FSM), the source objects, and the planner as JSON
(``JobSpec.pipeline``): the pipespec as written, the source items, the scheduler and the stage
modules. The coordinator rebuilds the planner from it (``planner_from_json``, its
``planner_factory``) and checks that it plans the same first tasks: planning depends on the data
only, so both sides agree. The sink objects come back as the job's result; each value carries
its place in the video, so the client puts them in order and writes the outputs. A sink joined
in S3 (``pipeline.ivf_join``) travels in the JSON as its upload (``joins``): the coordinator's
planner adds its tasks, and its objects are not result objects (never fetched).
"""

from __future__ import annotations

import json
from typing import Any

from pipeline.delivery import Item

#: Format of the JSON (bumped when it changes).
VERSION = 1


def _item(i: Item) -> dict:
    return {"key": i.key, "sha256": i.sha256, "size": i.size, "type": i.port_type, "lineage": i.lineage,
            "start": i.start, "count": i.count, "fps": list(i.fps), "meta": i.meta, "source": i.source}


def planner_json(doc: dict, sources: dict[tuple[str, str], list[Item]], scheduler: Any = None,
                 stage_modules: tuple[str, ...] = (), joins: dict | None = None) -> str:
    """What the coordinator needs to plan the pipeline ``doc`` (the pipespec's JSON object);
    ``joins``: sink -> ``JoinPlan`` of the sinks joined in S3."""
    out = {"version": VERSION, "spec": doc, "scheduler": scheduler, "stages": list(stage_modules),
           "sources": [{"name": n, "port": p, "items": [_item(i) for i in items]}
                       for (n, p), items in sorted(sources.items())]}
    if joins:
        out["joins"] = {n: [j.destination, j.upload_id, j.part_min] for n, j in sorted(joins.items())}
    return json.dumps(out, sort_keys=True, separators=(",", ":"))


def planner_from_json(text: str):
    """(a started ``PipelinePlanner``, its first tasks) from ``planner_json``'s output; ValueError
    in one line when it is not one (the Jobs service answers INVALID_ARGUMENT)."""
    from coordinator.engine import PlanError
    from coordinator.excamera_job import JoinPlan
    from pipeline.planner import PipelinePlanner
    from pipeline.schedulers import make_scheduler
    from pipeline.spec import validate
    from pipeline.stage import load_modules

    try:
        doc = json.loads(text)
        if not isinstance(doc, dict) or doc.get("version") != VERSION:
            raise ValueError(f"not a pipeline of format {VERSION}")
        load_modules(doc.get("stages") or ())
        spec = validate(doc["spec"])
        joins = {str(n): JoinPlan(str(d), str(u), int(m)) for n, (d, u, m) in (doc.get("joins") or {}).items()}
        if not set(joins) <= set(spec.outputs):
            raise ValueError(f"joins name sinks the pipespec does not have: {sorted(set(joins) - set(spec.outputs))}")
        planner = PipelinePlanner(spec, scheduler=make_scheduler(doc.get("scheduler")), joins=joins)
        for src in doc["sources"]:
            items = [Item(d["key"], d["sha256"], int(d["size"]), d["type"], int(d["lineage"]), int(d["start"]),
                          int(d["count"]), tuple(d["fps"]), dict(d.get("meta") or {}), d.get("source", ""))
                     for d in src["items"]]
            planner.add_input(src["name"], src["port"], items)
        return planner, planner.start()
    except (KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"malformed pipeline JSON ({type(e).__name__}: {e})") from None
    except PlanError as e:
        raise ValueError(str(e)) from None


def sink_of(spec, key: str) -> str | None:
    """The sink an object of a node's output goes to, from its key (``n/<node>/<group>.<port>.<i>``,
    ``pipeline.worker_op``), or None."""
    parts = key.split("/")
    if len(parts) != 3 or parts[0] != "n":
        return None
    node, name = parts[1], parts[2]
    fields = name.split(".")
    if len(fields) < 3 or node not in spec.nodes:
        return None
    stream = spec.nodes[node].outputs.get(fields[-2])
    return stream.dst if stream is not None and stream.dst in spec.outputs else None


def run_remote(spec, planner, first, text, inputs, outputs, config, sound=None, timing=None) -> tuple[int, dict[str, int]]:
    """Submit the pipeline to the running coordinator ``config.backend`` (a ``RemoteCoordinator``),
    fetch the sink objects, write the outputs."""
    import asyncio

    from coordinator.api import JobFailed, submit_remote
    from coordinator.fsm import Job
    from storage import StorageError
    from pipeline.outputs import PipelineError, _line, write_outputs
    from pipeline.values import BadValue, decode

    job = Job("pipeline", planner.fsms(), tuple(first))
    remote = config.backend
    try:
        result = asyncio.run(submit_remote(job, remote, inputs=inputs, workers=config.worker_count,
                                           spare=config.spare, max_attempts=config.max_attempts, pipeline=text))
    except JobFailed as e:
        raise PipelineError(_line(e)) from None
    except (OSError, ValueError, StorageError) as e:
        raise PipelineError(f"coordinator {remote.address}: {_line(e)}") from None
    except Exception as e:  # noqa: BLE001 - grpc's errors: one line
        raise PipelineError(f"coordinator {remote.address}: {_line(e)}") from None
    planner.mark_joined()   # the job succeeded: its join tasks completed the uploads
    by_sink: dict[str, list] = {name: [] for name in outputs}
    try:
        for key, data in result.data.items():
            sink = sink_of(spec, key)
            if sink in by_sink:
                by_sink[sink].append((key, decode(spec.outputs[sink].port_type, data)))
    except BadValue as e:
        raise PipelineError(_line(e)) from None
    rest = {n: p for n, p in outputs.items() if n not in planner.joins}
    write_outputs(spec, rest, lambda name: [v for _, v in sorted(by_sink[name], key=lambda kv: (kv[1].start, kv[0]))],
                  sound, timing)
    frames = {name: sum(v.count for _, v in by_sink[name]) for name in rest}
    frames.update((name, _joined_frames(outputs[name])) for name in planner.joins)
    return len(planner.tasks), frames


def _joined_frames(url: str) -> int:
    """The frame count in the header of the IVF file the job joined at ``url`` (its first 32
    bytes, by range: this client saw none of the sink's items)."""
    from storage.s3 import MultipartOutput

    upload = MultipartOutput(url)
    try:
        head = upload.client.get_object(Bucket=upload.bucket, Key=upload.key, Range="bytes=0-31")["Body"].read()
    except Exception:  # noqa: BLE001 - only a count for the report
        return 0
    return int.from_bytes(head[24:28], "little")
