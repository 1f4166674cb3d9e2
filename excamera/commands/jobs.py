"""``excamera jobs``: the jobs of a running coordinator, and serving one submitted earlier::

    excamera jobs list  --coordinator HOST:PORT --certs DIR
    excamera jobs watch ID  --coordinator HOST:PORT --certs DIR      (its events until it ends)
    excamera jobs fetch ID -o OUT  --coordinator HOST:PORT --certs DIR
    excamera jobs cancel ID  --coordinator HOST:PORT --certs DIR

``fetch`` and ``cancel`` need the job's key, which only its submitter was told: an ``excamera
encode|pipeline run --coordinator`` from this account noted it (``coordinator.reconnect``), so a
user whose laptop slept through the job can still fetch its result. Every call rides through a
restart of a journalled coordinator for up to ``--reconnect`` seconds.
"""

from __future__ import annotations

import argparse
import sys

from excamera.commands.base import CliError, address, command, describe, seconds


def register(sub) -> None:
    jobs = sub.add_parser("jobs", help="list, watch, fetch or cancel a running coordinator's jobs",
                          description="The jobs of a running `excamera coordinator serve`; fetch and "
                                      "cancel serve a job submitted earlier from this account.")
    jsub = jobs.add_subparsers(dest="action", metavar="ACTION", required=True)
    parsers = [
        command(jsub, "list", cmd_list, help="every job the coordinator knows, with its status"),
        command(jsub, "watch", cmd_watch, help="print a job's events until it ends (exit 1 unless it succeeds)"),
        command(jsub, "fetch", cmd_fetch, help="write a succeeded job's result: one object to OUT, several "
                                              "into the directory OUT"),
        command(jsub, "cancel", cmd_cancel, help="cancel a running job"),
    ]
    for p in parsers[1:]:
        p.add_argument("job_id", metavar="ID")
    parsers[2].add_argument("-o", "--output", required=True, metavar="OUT")
    for p in parsers:
        p.add_argument("--coordinator", type=address, required=True, metavar="HOST:PORT")
        p.add_argument("--certs", required=True, metavar="DIR", help="ca.pem, client.pem, client.key")
        p.add_argument("--reconnect", type=seconds, default=120.0, metavar="S",
                       help="keep trying for S seconds while the coordinator is away (default %(default)g)")


def _run(args, body):
    """``body(stub)`` on a channel to the coordinator; gRPC's errors as one line."""
    import asyncio
    import os

    os.environ.setdefault("GRPC_VERBOSITY", "NONE")  # the error below says it in one line
    import grpc

    from coordinator.api import CLIENT_OPTIONS
    from coordinator.reconnect import CHANNEL_OPTIONS
    from excamera.commands.base import load_certs
    from protos import jobs_pb2_grpc as jpb_grpc
    from security import tls

    bundle = load_certs(args.certs, tls.WORKER_FILES)

    async def main():
        async with grpc.aio.secure_channel(args.coordinator, tls.client_credentials(bundle),
                                           options=CLIENT_OPTIONS + CHANNEL_OPTIONS) as ch:
            return await body(jpb_grpc.JobsStub(ch))

    try:
        return asyncio.run(main())
    except grpc.aio.AioRpcError as e:
        detail = " ".join((e.details() or "").split()) or "no detail"
        raise CliError(f"--coordinator {args.coordinator}: {e.code().name.lower()}: {detail}") from None


def _key(args) -> str:
    from coordinator.reconnect import book_path, recall

    entry = recall(args.job_id)
    if entry is None:
        raise CliError(f"job {args.job_id}: its key is not in {book_path()} (only the account that "
                       f"submitted a job can fetch or cancel it)")
    return entry["key"]


def cmd_list(args: argparse.Namespace) -> int:
    from coordinator import reconnect
    from protos import jobs_pb2 as jpb

    async def body(stub):
        return await reconnect.call(lambda: stub.List(jpb.ListRequest(), timeout=30), args.reconnect)

    listing = _run(args, body)
    for j in listing.jobs:
        print(f"{j.job_id}  {j.status:<9}  {j.done}/{j.tasks} tasks  {j.name}")
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    from coordinator import reconnect

    def show(ev) -> None:
        what = " -> ".join(s for s in (ev.from_state, ev.to_state) if s)
        print(" ".join(x for x in (ev.kind, ev.task_id, ev.worker_id, what, ev.detail) if x), flush=True)

    final = _run(args, lambda stub: reconnect.watch(stub, args.job_id, args.reconnect, show))
    if final is None or final.to_state != "succeeded":
        raise CliError(f"job {args.job_id} {final.to_state if final else 'lost'}"
                       f"{': ' + final.detail if final is not None and final.detail else ''}")
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    import os

    from codec.ivf import AtomicFile
    from coordinator import reconnect
    from coordinator.api import fetch_remote
    from storage import StorageError

    key = _key(args)

    async def body(stub):
        final = await reconnect.watch(stub, args.job_id, args.reconnect)
        if final is None or final.to_state != "succeeded":
            raise CliError(f"job {args.job_id} {final.to_state if final else 'lost'}: nothing to fetch")
        wanted = [o.key for o in final.objects]
        if LAYOUT_KEY in wanted and args.output.lower().endswith((".ivf", ".webm", ".mkv")):
            wanted = [LAYOUT_KEY]  # an encode streamed to its client: the file is made from its chunks
        return {k: await reconnect.call(lambda k=k: fetch_remote(stub, args.job_id, key, k), args.reconnect)
                for k in wanted}

    from coordinator.excamera_job import LAYOUT_KEY

    try:
        data = _run(args, body)
        if list(data) == [LAYOUT_KEY]:
            return _fetch_streamed(args, key, data[LAYOUT_KEY])
    except StorageError as e:
        raise CliError(str(e)) from None
    try:
        if len(data) == 1:
            with AtomicFile(args.output) as out:
                out.write(next(iter(data.values())))
        else:
            for name, blob in data.items():
                path = os.path.join(args.output, *name.split("/"))
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with AtomicFile(path) as out:
                    out.write(blob)
    except OSError as e:
        raise CliError(f"-o {args.output}: {describe(e)}") from None
    print(f"excamera: job {args.job_id}: wrote {len(data)} object(s), {sum(map(len, data.values()))} bytes",
          file=sys.stderr)
    return 0


def _fetch_streamed(args, key: str, layout: bytes) -> int:
    """``-o OUT.ivf|.webm|.mkv`` of an ``excamera encode`` whose client wrote its output as it ran
    (``excamera.commands.encode_output``): the results are the chunks and the stitch's layout;
    the file is written from the chunks the layout names, each fetched and checked in turn."""
    import json
    import os

    from codec.ivf import IvfHeader
    from coordinator.api import RemoteObjects
    from coordinator.config import RemoteCoordinator
    from coordinator.excamera_job import LAYOUT_KEY
    from excamera.commands.encode_output import StreamedOutput
    from storage import StorageError

    try:
        doc = json.loads(layout)
        keys = [c[0] for c in doc["chunks"]]
        h = IvfHeader.parse(bytes.fromhex(doc["header"]))
    except (ValueError, KeyError, TypeError, IndexError) as e:
        raise StorageError(f"job {args.job_id}: the stitch's layout: {e}") from None
    reader = RemoteObjects(RemoteCoordinator(args.coordinator, certs=args.certs, reconnect_s=args.reconnect),
                           args.job_id, key)
    try:
        out = StreamedOutput(args.output, [("", keys)], h.width, h.height, (h.rate, h.scale), h.frame_count)
        out.storage = reader
        out.finish(layout)
    except (OSError, ValueError) as e:  # (ContainerError: ffmpeg's refusal)
        raise CliError(f"-o {args.output}: {describe(e)}") from None
    finally:
        reader.close()
    size = os.path.getsize(args.output)
    print(f"excamera: job {args.job_id}: wrote 1 object(s), {size} bytes ({args.output}, from {len(keys)} "
          f"chunk(s) as {LAYOUT_KEY} lays them out)", file=sys.stderr)
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from coordinator import reconnect
    from protos import jobs_pb2 as jpb

    key = _key(args)

    async def body(stub):
        return await reconnect.call(lambda: stub.Cancel(jpb.JobRef(job_id=args.job_id, job_key=key), timeout=30),
                                    args.reconnect)

    reply = _run(args, body)
    print(f"job {args.job_id}: {'cancelled' if reply.cancelled else 'not running (nothing to cancel)'}")
    return 0
