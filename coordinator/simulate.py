"""A job replayed on a simulated clock: the real engine (``coordinator.engine.Engine``), with the
job's real FSMs and, for a pipeline, its real planner and scheduler, driven by simulated workers
that take the time a cost model says each operation takes. ``excamera plan`` predicts a job with
it (docs/design/engine.md: the engine is pure and clock-driven, which is what makes this possible).

What is simulated, and how (every figure is a field of ``Fleet``, stated where it is set):

* workers start when the engine asks (``Launch``): each launch is granted by the fleet's scaling
  rate (Lambda: ``scale_per_10s`` new execution environments every 10 s per function name, the
  first burst at once; several function names multiply it), then connects ``start_s`` later
  (a cold start); a worker is paid for from its grant to its stop;
* each command reaches its worker ``dispatch_s`` after the engine sends it, and its result comes
  back as long again; the operation takes ``Work.cpu_s`` (seconds of one core of the machine the
  cost model was measured on) divided by the worker's ``speed`` and multiplied by its straggler
  factor, plus its storage reads and writes: each request waits for its prefix's request rate
  (``put_per_s`` / ``get_per_s`` per prefix; a prefix is the key up to its last ``/``), then
  takes ``get_s`` / ``put_s`` of latency and its bytes over ``bandwidth_Bps``;
* workers of one machine (``cores`` > 0, the local backend) share its cores: while k of them
  compute, each runs at ``min(1, cores / k)`` of its speed (processor sharing), so a job that keeps
  one worker busy runs faster per operation than one that keeps all of them busy;
* the rendezvous: ``send-state`` makes the state available to its receiver after its transfer;
  ``receive-state`` ends when the state it waits for is there (and has come over the network);
* stragglers: each worker draws a speed factor: with probability ``straggler_p`` it runs
  ``straggler_x`` times slower (a slow host), else within ``jitter`` of nominal. The engine's own
  speculation and timeouts deal with them, as they would for real.

The engine is stepped after every batch of events within ``step_s`` of each other, and at least
every ``tick_s`` (its timeouts, speculation and idle retirement need the clock to move); while
steps find nothing to observe and do nothing, the tick doubles, up to ``tick_max_s`` (so a
clock-driven decision of a quiet job, such as a streaming scheduler's next release, may come up
to ``tick_max_s`` late; the real coordinator's loop wakes every 0.1 s). The simulated workers
complete commands at their own times; only the engine's observation of them is batched.
"""

from __future__ import annotations

import heapq
import logging
import math
import random
from dataclasses import dataclass, field
from typing import Any, Callable

from coordinator.engine import (Engine, JobEnded, Launch, ReleaseMailbox, Result, SendCommand,
                                StopWorker)

#: The rendezvous operations the simulator carries out itself (the workers' built-ins).
SEND, RECEIVE = "send-state", "receive-state"


@dataclass
class Fleet:
    """How workers start, how fast they are and what they cost. Defaults: local processes."""

    kind: str = "local"                 # "local" or "lambda"
    start_s: float = 0.5                # launch granted -> connected (process start / cold start)
    scale_per_10s: int | None = None    # new workers per 10 s per function name (None: no limit)
    functions: int = 1
    speed: float = 1.0                  # a worker's core against the cost model's
    cores: float = 0.0                  # >0: the workers share this many cores (one machine)
    dispatch_s: float = 0.002           # coordinator <-> worker, one way
    bandwidth_Bps: float = 1e9          # a worker's network (or disk) bandwidth
    get_s: float = 0.0                  # storage request latency
    put_s: float = 0.0
    get_per_s: float | None = None      # request rate per key prefix (None: no limit)
    put_per_s: float | None = None
    spread_prefixes: int = 0            # >0: keys hashed over this many prefixes instead
    straggler_p: float = 0.0
    straggler_x: float = 3.0
    jitter: float = 0.0
    memory_mb: int = 0                  # Lambda: configured memory (billing)
    gb_second_usd: float = 0.0
    request_usd: float = 0.0
    state_bytes: int = 0                # a decoder state's size on the rendezvous


@dataclass
class Work:
    """What a command costs: CPU seconds, storage reads and writes (key, bytes), and the outputs
    its result reports. ``warm``: (what, seconds) added to the CPU time the first time a worker
    runs anything of ``what`` (a process loading its compiled codec once)."""

    cpu_s: float = 0.0
    gets: list[tuple[str, int]] = field(default_factory=list)
    puts: list[tuple[str, int]] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    warm: tuple[str, float] | None = None
    wait_s: float = 0.0     # waiting on requests issued together (not CPU: no slow host stretches it)


@dataclass
class SimWorker:
    worker_id: str
    granted: float
    factor: float
    joined: float | None = None
    stopped: float | None = None
    token: int = 0          # bumped when stopped: its pending completions are void
    busy_s: float = 0.0
    warmed: set = field(default_factory=set)


@dataclass
class SimResult:
    status: str
    error: str
    wall_s: float                     # job created -> ended
    worker_seconds: float             # held (granted -> stopped), summed
    busy_seconds: float
    peak_workers: int
    invocations: int
    cost_usd: float
    gets: int
    puts: int
    peak_prefix_rate: dict[str, float]   # "GET"/"PUT" -> the most requests one prefix saw in a second
    throttled_s: float                    # seconds requests waited for their prefix's rate
    engine: Engine
    job_id: str
    last_join_s: float


def held_by_state(r: SimResult) -> dict[str, float]:
    """Worker-seconds held, by what the workers were doing (the engine's worker histories: a task's
    FSM state, ``idle`` for no task), largest first: where a fleet's paid time goes."""
    job = r.engine.jobs[r.job_id]
    end = job.ended or r.engine.clock()
    held: dict[str, float] = {}
    for wid in job.worker_ids:
        h = r.engine.workers[wid].history + [(end, "")]
        for (t0, label), (t1, _) in zip(h, h[1:]):
            state = str(label).rsplit(":", 1)[-1]
            if state == "gone":   # stopped: no longer held
                break
            held[state] = held.get(state, 0.0) + max(0.0, t1 - t0)
    return dict(sorted(((k, round(v, 1)) for k, v in held.items()), key=lambda kv: -kv[1]))


class _NullStorage:
    """Simulated objects exist by fiat: every reported object verifies."""

    def verify(self, ref) -> None:
        return None


class Simulation:
    """One job on a simulated fleet; see the module docstring."""

    def __init__(self, fleet: Fleet, work: Callable[[SendCommand], Work], *, seed: int = 1,
                 step_s: float = 0.002, tick_s: float = 0.25, tick_max_s: float = 1.0,
                 limit_s: float = 7 * 86400.0):
        self.fleet, self.work = fleet, work
        self.rng = random.Random(seed)
        self.step_s, self.tick_s, self.tick_max_s, self.limit_s = step_s, tick_s, tick_max_s, limit_s
        self.now = 0.0
        self.engine = Engine(clock=lambda: self.now)
        self._events: list = []
        self._seq = 0
        self.workers: dict[str, SimWorker] = {}
        self.mail: dict[tuple[str, str], float] = {}           # (receiver, tag) -> available at
        self.waiting: dict[tuple[str, str], list] = {}         # (receiver, tag) -> [(worker, cmd, token)]
        self._grants: list[float] = []                         # launch grant times (scaling)
        self._prefix_count: dict[tuple[str, str, int], int] = {}   # (kind, prefix, second) -> requests
        self.gets = self.puts = 0
        self.throttled = 0.0
        self.ended: JobEnded | None = None
        # processor sharing (``Fleet.cores``): worker id -> [CPU seconds left, token, then]
        self._cpu: dict[str, list] = {}
        self._cpu_at = 0.0
        self._cpu_version = 0

    # -- events ------------------------------------------------------------------------------

    def _at(self, t: float, fn, *args) -> None:
        self._seq += 1
        heapq.heappush(self._events, (t, self._seq, fn, args))

    def run(self, job, *, workers: int, spare: int = 0, planner=None, job_id: str = "sim") -> SimResult:
        log = logging.getLogger("excamera.coordinator")
        level = log.level
        log.setLevel(logging.CRITICAL)   # stragglers and speculation are expected here, not news
        try:
            self.engine.add_job(job_id, job, _NullStorage(), workers=workers, spare=spare, planner=planner)
            self._at(0.0, lambda: None)
            tick = self.tick_s
            while self._events and self.ended is None:
                t = self._events[0][0]
                if t > self.limit_s:
                    break
                until = t + self.step_s
                while self._events and self._events[0][0] <= until:
                    t, _, fn, args = heapq.heappop(self._events)
                    self.now = max(self.now, t)
                    fn(*args)
                busy = bool(self.engine._inbox)
                actions = self.engine.step()
                self._handle(actions)
                # A quiet clock (nothing observed, nothing done) is ticked ever less often, up to
                # ``tick_max_s``: a streaming job paced to its deadline spends most of an hour so.
                tick = self.tick_s if busy or actions else min(self.tick_max_s, 2 * tick)
                if self.ended is None and not any(e[0] <= self.now + tick for e in self._events[:1]):
                    self._at(self.now + tick, lambda: None)
        finally:
            log.setLevel(level)
        return self._result(job_id)

    def _handle(self, actions: list) -> None:
        for a in actions:
            if isinstance(a, SendCommand):
                self._command(a)
            elif isinstance(a, StopWorker):
                self._stop(a.worker_id)
            elif isinstance(a, Launch):
                for _ in range(a.count):
                    self._launch(a.job_id)
            elif isinstance(a, JobEnded):
                self.ended = a
            elif isinstance(a, ReleaseMailbox):
                pass    # mailboxes cost nothing here

    # -- workers -----------------------------------------------------------------------------

    def _grant_time(self) -> float:
        """When the next launch is granted under the fleet's scaling rate."""
        f = self.fleet
        if not f.scale_per_10s:
            return self.now
        per_window = f.scale_per_10s * max(1, f.functions)
        # A window of 10 s holds per_window grants; the first at t=0 holds a full burst.
        n = len(self._grants)
        earliest = (n // per_window) * 10.0
        t = max(self.now, earliest)
        self._grants.append(t)
        return t

    def _launch(self, job_id: str) -> None:
        f = self.fleet
        t = self._grant_time()
        u = self.rng.random()
        factor = f.straggler_x if u < f.straggler_p else 1.0 + f.jitter * (2 * self.rng.random() - 1)
        w = SimWorker("", t, factor)
        self._at(t + f.start_s, self._connect, job_id, w)

    def _connect(self, job_id: str, w: SimWorker) -> None:
        w.worker_id = self.engine.observe_connect(job_id, f"sim-{len(self.workers) + 1}")
        w.joined = self.now
        self.workers[w.worker_id] = w

    def _stop(self, worker_id: str) -> None:
        w = self.workers.get(worker_id)
        if w is None or w.stopped is not None:
            return
        w.stopped = self.now
        w.token += 1
        if w.worker_id in self._cpu:     # its computation stops with it
            self._cpu_advance()
            del self._cpu[w.worker_id]
            self._cpu_next()
        self._at(self.now + self.fleet.dispatch_s, self.engine.observe_disconnect, worker_id)

    # -- commands ----------------------------------------------------------------------------

    def _command(self, cmd: SendCommand) -> None:
        w = self.workers[cmd.worker_id]
        arrive = self.now + self.fleet.dispatch_s
        if cmd.operation == RECEIVE:
            sender = cmd.args.get("sender") or ""
            if not sender:
                self._finish(w, cmd, w.token, arrive, {})
                return
            key = (cmd.task_id, cmd.args.get("tag", ""))
            if key in self.mail:
                self._finish(w, cmd, w.token, max(arrive, self.mail[key]) + self._transfer(), {})
            else:
                self.waiting.setdefault(key, []).append((w, cmd, w.token, arrive))
            return
        if cmd.operation == SEND:
            done = arrive + self._transfer()
            to = cmd.args.get("to") or ""
            if to:
                key = (to, cmd.args.get("tag", ""))
                self.mail[key] = done
                for w2, cmd2, token2, arrive2 in self.waiting.pop(key, ()):
                    self._finish(w2, cmd2, token2, max(done, arrive2) + self._transfer(), {})
            self._finish(w, cmd, w.token, done, {})
            return
        work = self.work(cmd)
        t = arrive
        for key, size in work.gets:
            t = self._request("GET", key, size, t)
        cpu_s = work.cpu_s
        if work.warm is not None and work.warm[0] not in w.warmed:
            w.warmed.add(work.warm[0])
            cpu_s += work.warm[1]
        cpu = cpu_s * w.factor / max(self.fleet.speed, 1e-9)
        w.busy_s += cpu
        token = w.token
        t += work.wait_s

        def then(t: float) -> None:
            for key, size in work.puts:
                t = self._request("PUT", key, size, t)
            self._finish(w, cmd, token, t, work.outputs)

        if self.fleet.cores > 0 and cpu > 0:
            self._at(t, self._cpu_start, w, cpu, token, then)
        else:
            then(t + cpu)

    # -- processor sharing (one machine's cores) ---------------------------------------------

    def _cpu_advance(self) -> None:
        k = len(self._cpu)
        if k:
            done = (self.now - self._cpu_at) * min(1.0, self.fleet.cores / k)
            for entry in self._cpu.values():
                entry[0] -= done
        self._cpu_at = self.now

    def _cpu_next(self) -> None:
        """(Re)book the next CPU completion; an older booking is void (its version is stale)."""
        self._cpu_version += 1
        if self._cpu:
            rate = min(1.0, self.fleet.cores / len(self._cpu))
            left = min(e[0] for e in self._cpu.values())
            self._at(self.now + max(0.0, left) / rate, self._cpu_done, self._cpu_version)

    def _cpu_start(self, w: SimWorker, cpu: float, token: int, then) -> None:
        if w.token != token:
            return
        self._cpu_advance()
        self._cpu[w.worker_id] = [cpu, token, then]
        self._cpu_next()

    def _cpu_done(self, version: int) -> None:
        if version != self._cpu_version:
            return
        self._cpu_advance()
        for wid in [wid for wid, e in self._cpu.items() if e[0] <= 1e-9]:
            _, token, then = self._cpu.pop(wid)
            if self.workers[wid].token == token:
                then(self.now)
        self._cpu_next()

    def _transfer(self) -> float:
        f = self.fleet
        return f.get_s + f.state_bytes / f.bandwidth_Bps

    def _prefix(self, key: str) -> str:
        if self.fleet.spread_prefixes > 0:
            return str(hash(key) % self.fleet.spread_prefixes)
        return key.rsplit("/", 1)[0] if "/" in key else ""

    def _request(self, kind: str, key: str, size: int, t: float) -> float:
        """A storage request issued at ``t``: when it ends (rate limit, latency, bytes).

        The limit is counted per whole second of the clock, so that a request booked ahead (a
        command's PUT after its CPU time is worked out when the command starts) takes a slot in
        its own second and never delays an earlier request behind it."""
        f = self.fleet
        rate = f.get_per_s if kind == "GET" else f.put_per_s
        prefix = self._prefix(key)
        second = int(t)
        if rate:
            while self._prefix_count.get((kind, prefix, second), 0) >= rate:
                second += 1
        start = max(t, float(second))
        self.throttled += start - t
        slot = (kind, prefix, second)
        self._prefix_count[slot] = self._prefix_count.get(slot, 0) + 1
        if kind == "GET":
            self.gets += 1
        else:
            self.puts += 1
        return start + (f.get_s if kind == "GET" else f.put_s) + size / f.bandwidth_Bps

    def _finish(self, w: SimWorker, cmd: SendCommand, token: int, t: float, outputs: dict) -> None:
        back = t + self.fleet.dispatch_s

        def deliver():
            if w.token == token and w.stopped is None:
                self.engine.observe_result(w.worker_id, Result(cmd.seq, cmd.task_id, True, outputs=outputs))

        self._at(back, deliver)

    # -- the figures -------------------------------------------------------------------------

    def _result(self, job_id: str) -> SimResult:
        job = self.engine.jobs[job_id]
        end = job.ended if self.ended is not None else self.now
        f = self.fleet
        spans = []
        all_workers = list(self.workers.values())
        for w in all_workers:
            stop = w.stopped if w.stopped is not None else end
            spans.append((w.granted, stop))
        held = sum(b - a for a, b in spans)
        peak, live = 0, 0
        for _, d in sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans], key=lambda x: (x[0], x[1])):
            live += d
            peak = max(peak, live)
        invocations = len(all_workers)
        if f.kind == "lambda":
            billed = sum(math.ceil((b - a) * 1000) / 1000 for a, b in spans)
            cost = billed * f.memory_mb / 1024 * f.gb_second_usd + invocations * f.request_usd
        else:
            cost = 0.0
        rates: dict[str, float] = {"GET": 0.0, "PUT": 0.0}
        for (kind, _, _), n in self._prefix_count.items():
            rates[kind] = max(rates[kind], float(n))
        joins = [w.joined for w in all_workers if w.joined is not None]
        return SimResult(self.ended.status if self.ended else "unfinished",
                         self.ended.error if self.ended else f"still running at {self.now:.0f} s",
                         end - job.created, held, sum(w.busy_s for w in all_workers), peak, invocations,
                         cost, self.gets, self.puts, rates, self.throttled, self.engine, job_id,
                         max(joins, default=0.0))
