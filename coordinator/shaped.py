"""An ExCamera-shaped job over the built-in and fake-codec operations.

The per-chunk worker FSM has the shape of ExCamera's (NSDI 2017, section 4)::

    first-pass -> dump-state -> send-state -> receive-state -> chain-step -> upload -> done

followed by one ``stitch`` task that runs after every chunk and joins their outputs. The codec
work is deterministic hashing (``worker.fakecodec``), so the orchestration, the state hand-off
through the rendezvous, stragglers, kill -9 and byte-identical output are tested now; the real
encode FSM will have the same structure with the real operations (vpxenc first pass, state dump,
encode-given-state, rebase, stitch) registered under their own names.

Chunk i receives chunk i-1's state and leaves it held at the rendezvous (``keep``), as does the
serial chain step with the final state, so a re-issued attempt of chunk i can receive them again;
the coordinator releases chunk i's mailbox when chunk i is done.
"""

from __future__ import annotations

from coordinator.fsm import DONE, FSM, Job, State, Task

CHUNK_TIMEOUT_S = 30.0


def chunk_fsm(timeout_s: float = CHUNK_TIMEOUT_S) -> FSM:
    t = timeout_s
    return FSM("excamera-chunk", "first-pass", (
        State("first-pass", "fake-first-pass", {"chunk": "${chunk}", "work_s": "${work_s}"},
              {"ok": "dump-state"}, t),
        State("dump-state", "fake-dump-state", {"state_bytes": "${state_bytes}"},
              {"ok": "send-state"}, t),
        State("send-state", "send-state", {"to": "${next}", "tag": "state", "scratch": "state"},
              {"ok": "receive-state"}, t),
        State("receive-state", "receive-state",
              {"sender": "${prev}", "tag": "state", "into": "prev_state", "keep": True},
              {"ok": "chain-step"}, t),
        State("chain-step", "fake-chain-step",
              {"prev": "${prev}", "next": "${next}", "state_bytes": "${state_bytes}",
               "work_s": "${work_s}"},
              {"ok": "upload"}, t),
        State("upload", "upload", {"scratch": "output", "key": "out/${task_id}"}, {"ok": DONE}, t),
    ))


def stitch_fsm(timeout_s: float = CHUNK_TIMEOUT_S) -> FSM:
    return FSM("excamera-stitch", "stitch", (
        State("stitch", "concat", {"keys": ["${outputs}"], "output": "${output}"}, {"ok": DONE}, timeout_s),
    ))


def chunk_id(i: int) -> str:
    return f"chunk-{i:04d}"


def shaped_job(n_chunks: int, *, state_bytes: int = 64 << 10, output: str = "output.bin",
               timeout_s: float = CHUNK_TIMEOUT_S, work_s: float = 0.0) -> Job:
    """The job for ``n_chunks`` chunks stored as ``input/chunk-NNNN`` (see ``shaped_inputs``);
    ``work_s`` seconds of pretend codec work in the first pass and in each serial step."""
    tasks = []
    for i in range(n_chunks):
        tasks.append(Task(chunk_id(i), "excamera-chunk", {
            "chunk": f"input/{chunk_id(i)}", "state_bytes": state_bytes, "work_s": float(work_s),
            "prev": chunk_id(i - 1) if i > 0 else "",
            "next": chunk_id(i + 1) if i + 1 < n_chunks else ""}))
    tasks.append(Task("stitch", "excamera-stitch",
                      {"outputs": [f"out/{chunk_id(i)}" for i in range(n_chunks)], "output": output},
                      after=tuple(chunk_id(i) for i in range(n_chunks))))
    return Job("excamera-shaped", (chunk_fsm(timeout_s), stitch_fsm(timeout_s)), tuple(tasks),
               result_tasks=("stitch",))


def shaped_inputs(chunks: list[bytes]) -> dict[str, bytes]:
    return {f"input/{chunk_id(i)}": c for i, c in enumerate(chunks)}
