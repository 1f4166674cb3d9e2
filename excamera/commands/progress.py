"""Progress on a terminal, through tqdm: one bar per named counter (a stage of an encode, a node of
a pipeline, the frames of a file), drawn on stderr only when stderr is a terminal — never in a pipe
or a log. ``line()`` gives the same counts as text (for tests and the final summary).

    progress = Progress({"decode": 10, "encode": 10}, unit="items")
    progress.add("decode")             # one more done
    progress.close()
"""

from __future__ import annotations

import sys
import time


class Progress:
    """Counters ``name -> done/total`` (a total may be None: unknown, or grow with ``total()``)."""

    def __init__(self, totals: dict[str, int | None], *, unit: str = "", enabled: bool | None = None,
                 file=None, clock=time.monotonic):
        self.file = file or sys.stderr
        self.enabled = self.file.isatty() if enabled is None else enabled
        self.unit = unit
        self.clock = clock
        self.start = clock()
        self.totals = dict(totals)
        self.done = {name: 0 for name in totals}
        self.notes: dict[str, str] = {}
        self._bars = {}
        if self.enabled:
            from tqdm import tqdm

            width = max((len(n) for n in totals), default=0)
            for i, (name, total) in enumerate(totals.items()):
                self._bars[name] = tqdm(total=total, desc=name.rjust(width), unit=f" {unit}" if unit else "it",
                                        position=i, leave=True, file=self.file, dynamic_ncols=True,
                                        mininterval=0.2)

    def add(self, name: str, n: int = 1) -> None:
        self.set(name, self.done.get(name, 0) + n)

    def set(self, name: str, done: int) -> None:
        if name not in self.done:
            return
        step = done - self.done[name]
        self.done[name] = done
        bar = self._bars.get(name)
        if bar is not None and step:
            bar.update(step)

    def total(self, name: str, total: int | None) -> None:
        """Change a counter's total (a pipeline learns how many tasks a node gets as it runs)."""
        if name in self.totals:
            self.totals[name] = total
            bar = self._bars.get(name)
            if bar is not None:
                bar.total = total
                bar.refresh()

    def note(self, key: str, text: str) -> None:
        """A remark shown after the counts (``re-issued``: "2 re-issued")."""
        self.notes[key] = text
        for bar in self._bars.values():
            bar.set_postfix_str(", ".join(self.notes.values()), refresh=False)
            break

    def line(self) -> str:
        parts = [f"{name} {self.done[name]}/{self.totals[name] if self.totals[name] is not None else '?'}"
                 for name in self.totals]
        extra = "".join(f", {t}" for t in self.notes.values())
        return f"{' | '.join(parts)}  {self.clock() - self.start:6.1f} s{extra}"

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()
        self._bars = {}

    clear = close


# -- what feeds the counters: one small adapter per kind of run ------------------------------------

class StageProgress:
    """Chunks done per stage of a distributed encode, fed the job's events
    (``jobs_pb2.JobEvent``). A chunk counts once per stage however many attempts it took; the
    rebase counts batches (one task walks each), ``batches`` of them (default: one per 16 chunks)."""

    LABELS = {"first-pass": "first pass", "encode-given-state": "given state", "rebase": "rebase",
              "stitch": "stitch"}

    def __init__(self, n_chunks: int, tty: bool | None = None, batches: int | None = None):
        totals = {"stitch": 1, "rebase": batches if batches is not None else -(-n_chunks // 16)}
        self.progress = Progress({label: totals.get(stage, n_chunks)
                                  for stage, label in self.LABELS.items()}, unit="chunks", enabled=tty)
        self.done: dict[str, set] = {stage: set() for stage in self.LABELS}
        self.lost = 0

    def __call__(self, ev) -> None:
        if ev.kind == "transition" and ev.from_state in self.done:
            self.done[ev.from_state].add(ev.task_id)
            self.progress.set(self.LABELS[ev.from_state], len(self.done[ev.from_state]))
        elif ev.kind == "attempt" and ev.detail != "attempt 1":
            self.lost += 1
            self.progress.note("lost", f"{self.lost} re-issued")

    def line(self) -> str:
        return self.progress.line()

    def finish(self) -> None:
        self.progress.close()


class PhaseProgress:
    """One counter at a time, replaced when the phase changes (reading, first pass, ...), fed
    ``(phase, done, total)``; a total may be None (unknown) or an estimate."""

    def __init__(self, unit: str = "chunks"):
        self.unit = unit
        self.bars: Progress | None = None
        self.phase = ""

    def __call__(self, phase: str, done: int, total: int | None) -> None:
        if phase != self.phase:
            self.finish()
            self.phase = phase
            self.bars = Progress({phase: total if total and done <= total else None}, unit=self.unit)
        self.bars.set(phase, done)

    def finish(self) -> None:
        if self.bars is not None:
            self.bars.close()
            self.bars = None


class NodeProgress:
    """Tasks done per node of a pipeline, fed ``(node, done, planned, finished)``."""

    def __init__(self, nodes, tty: bool | None = None):
        self.progress = Progress({n: 0 for n in nodes}, unit="tasks", enabled=tty)
        self.tty = self.progress.enabled

    def __call__(self, node: str, done: int, planned: int, finished: bool) -> None:
        self.progress.total(node, planned)
        self.progress.set(node, done)
        if finished:
            self.progress.note(node, f"{node} finished")

    def close(self) -> None:
        self.progress.close()
