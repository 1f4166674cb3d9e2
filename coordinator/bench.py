"""The runtime load benchmark (``excamera bench runtime``).

A coordinator and its rendezvous run in this process; ``workers`` lightweight workers (asyncio
tasks, each with its own mutual-TLS channels to both) run in ``processes`` child processes
(``excamera worker --count``) and connect generic. Every task runs a 5-state FSM::

    hello (echo) -> make-state -> send-state -> receive-state -> report (echo) -> done

in a ring: task i sends its state to task i+1. ``relay_mb / state_mb`` tasks make states of
``state_mb`` MiB, the rest empty ones, so the rendezvous relays ``relay_mb`` MiB in all. At the
end every received digest is checked against what its sender made.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import tempfile
import time

from coordinator.fsm import DONE, FSM, Job, State, Task


def bench_fsm() -> FSM:
    t = 120.0
    return FSM("bench", "hello", (
        State("hello", "echo", {"text": "${task_id}"}, {"ok": "make-state"}, t),
        State("make-state", "make-state", {"into": "state", "size": "${size}", "seed": "${task_id}"},
              {"ok": "send-state"}, t),
        State("send-state", "send-state", {"to": "${next}", "tag": "state", "compress": "no"},
              {"ok": "receive-state"}, t),
        State("receive-state", "receive-state", {"sender": "${prev}", "into": "prev", "tag": "state"},
              {"ok": "report"}, t),
        State("report", "echo", {"text": "${receive-state.sha256}"}, {"ok": DONE}, t),
    ))


def bench_job(workers: int, relay_bytes: int, state_bytes: int) -> Job:
    big = min(workers, relay_bytes // state_bytes) if state_bytes else 0
    tasks = []
    for i in range(workers):
        tasks.append(Task(f"t{i:05d}", "bench", {
            "size": state_bytes if i < big else 0,
            "next": f"t{(i + 1) % workers:05d}", "prev": f"t{(i - 1) % workers:05d}"}))
    return Job("bench-runtime", (bench_fsm(),), tuple(tasks))


async def bench(workers: int = 1000, relay_mb: float = 1024, state_mb: float = 4.0,
                processes: int = 2, quiet: bool = False, state_dir: str | None = None) -> dict:
    """Run the benchmark; returns its figures (and raises if any relayed state was wrong). With
    ``state_dir`` the coordinator journals the job there (``coordinator.journal``): its cost."""
    from coordinator.api import JobFailed, embedded_coordinator
    from coordinator.engine import Speculation

    if workers < 2:
        raise ValueError("bench: need at least 2 workers for a ring")
    state_bytes = int(state_mb * (1 << 20))
    relay_bytes = int(relay_mb * (1 << 20))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="excamera-bench-") as storage:
        from coordinator.journal import Journal

        journal = Journal(state_dir) if state_dir else None
        # One attempt per task: the load figures measure the runtime, not duplicated work.
        async with embedded_coordinator(storage, launch_workers=False, speculation=Speculation(factor=0),
                                        journal=journal,
                                        rendezvous_limits={"max_held_bytes": max(relay_bytes, 1 << 30) * 2}) as c:
            job = bench_job(workers, relay_bytes, state_bytes)
            job_id, _ = await c.submit(job, workers=workers, launch=False)
            with tempfile.TemporaryDirectory(prefix="excamera-bench-certs-") as certs:
                t_spawn, procs = _spawn_workers(c, job_id, workers, processes, certs)
                try:
                    outcome, t_connected = await _wait_connected_and_done(c, job_id, workers, procs)
                    t_end, t_end_mono = time.perf_counter(), time.monotonic()
                finally:
                    _reap(procs)
            if outcome.status != "succeeded":
                raise JobFailed(f"bench job {outcome.status}: {outcome.error}")
            jrec = c.engine.jobs[job_id]
            _check_relayed_states(jrec)
            transitions = sum(len(a.history) - 1 for t in jrec.tasks.values() for a in t.attempts)
            relayed = c._rendezvous_server.servicer.relayed_bytes
            t_first = min(a.history[0][0] for t in jrec.tasks.values() for a in t.attempts)
    connect_s = (t_connected or t_end) - t_spawn
    run_s = t_end - t_spawn
    job_s = max(t_end_mono - t_first, 1e-9)
    figures = {
        "workers": workers, "processes": processes, "states_relayed": workers,
        "relayed_mb": relayed / (1 << 20), "connect_s": connect_s, "run_s": run_s,
        "job_s": job_s, "transitions": transitions, "transitions_per_s": transitions / job_s,
        "relay_mb_per_s": relayed / (1 << 20) / job_s, "total_s": time.perf_counter() - t0,
    }
    if not quiet:
        _print_figures(figures, state_mb, min(workers, relay_bytes // state_bytes) if state_bytes else 0)
    return figures


def _spawn_workers(c, job_id: str, workers: int, processes: int, certs: str):
    """(when the spawn began, the processes): ``processes`` ``excamera worker`` processes sharing
    ``workers`` lightweight workers, each with its own id and token, trusting the CA written to
    ``certs``."""
    from coordinator.launcher import TOKEN_ENV, worker_command
    from security import tls
    from security.tokens import format_worker_tokens

    tls.write(c.bundle.for_worker(), certs, overwrite=True)
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    per = [workers // processes + (1 if i < workers % processes else 0) for i in range(processes)]
    pairs = c.worker_tokens(job_id, workers)
    groups, at = [], 0
    for n in per:
        groups.append(pairs[at:at + n])
        at += n
    t_spawn = time.perf_counter()
    return t_spawn, [subprocess.Popen(worker_command() + [
        "worker", "--coordinator", c.address, "--certs", certs, "--job", job_id],
        env=dict(env, **{TOKEN_ENV: format_worker_tokens(g)}), stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL) for g in groups if g]


async def _wait_connected_and_done(c, job_id: str, workers: int, procs: list[subprocess.Popen]):
    """(the job's outcome, when the last worker connected or None): polls, cancelling the job if a
    worker process fails."""
    jrec = c.engine.jobs[job_id]
    t_connected = None
    done = asyncio.ensure_future(c.wait(job_id))
    while not done.done():
        if t_connected is None and len(jrec.worker_ids) >= workers:
            t_connected = time.perf_counter()
        if any(p.poll() not in (None, 0) for p in procs):
            c.cancel(job_id)
        await asyncio.sleep(0.01)
    return done.result(), t_connected


def _reap(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _check_relayed_states(jrec) -> None:
    """Every state must have arrived intact: receiver's digest == sender's."""
    from coordinator.api import JobFailed

    made = {tid: t.winner.outputs["make-state"]["sha256"] for tid, t in jrec.tasks.items()}
    for tid, t in jrec.tasks.items():
        prev = t.spec.params["prev"]
        got = t.winner.outputs["receive-state"]["sha256"]
        if got != made[prev]:
            raise JobFailed(f"bench: {tid} received a state with sha256 {got[:16]}..., "
                            f"{prev} made {made[prev][:16]}...")


def _print_figures(figures: dict, state_mb: float, big_states: int) -> None:
    workers = figures["workers"]
    print(f"runtime bench: {workers} workers in {figures['processes']} process(es), 5-state FSM, "
          f"{figures['relayed_mb']:.0f} MiB relayed in {workers} states "
          f"({state_mb:g} MiB x {big_states}, rest empty)")
    print(f"  connect:     {figures['connect_s']:6.2f} s (spawn to all {workers} connected)")
    print(f"  job:         {figures['job_s']:6.2f} s (first command to done)")
    print(f"  transitions: {figures['transitions']} = {figures['transitions_per_s']:.0f}/s")
    print(f"  relay:       {figures['relay_mb_per_s']:.0f} MiB/s")
    print(f"  total:       {figures['total_s']:6.2f} s (incl. CA, servers, process start)")
