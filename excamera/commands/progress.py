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
    """Work done per stage of a distributed encode, fed the job's events
    (``jobs_pb2.JobEvent``). A chunk counts once per stage however many attempts it took. Given
    ``frames`` (each chunk's frame count, in order) the counters are frames: a chunk task adds its
    chunk's frames, a rebase task its batch's (``batch_chunks`` chunks), the stitch all of them;
    else chunks, the rebase counting batches, ``batches`` of them (default: one per 16 chunks)."""

    LABELS = {"first-pass": "first pass", "encode-given-state": "given state", "rebase": "rebase",
              "stitch": "stitch"}

    def __init__(self, n_chunks: int, tty: bool | None = None, batches: int | None = None, *,
                 frames: list[int] | None = None, batch_chunks: int = 16):
        self.frames = frames
        self.batch_chunks = batch_chunks
        if frames is not None:
            totals = {stage: sum(frames) for stage in self.LABELS}
            unit = "frames"
        else:
            totals = {"stitch": 1, "rebase": batches if batches is not None else -(-n_chunks // 16)}
            unit = "chunks"
        self.progress = Progress({label: totals.get(stage, n_chunks)
                                  for stage, label in self.LABELS.items()}, unit=unit, enabled=tty)
        self.done: dict[str, set] = {stage: set() for stage in self.LABELS}
        self.lost = 0

    def _weight(self, task_id: str) -> int:
        """What one finished task adds: 1 (counting chunks), or its frames."""
        if self.frames is None:
            return 1
        kind, _, number = task_id.rpartition("-")
        if kind == "chunk" and number.isdigit():
            return self.frames[int(number)]
        if kind == "rebase" and number.isdigit():
            lo = int(number) * self.batch_chunks
            return sum(self.frames[lo:lo + self.batch_chunks])
        return sum(self.frames)          # the stitch: the whole stream

    def __call__(self, ev) -> None:
        if ev.kind == "transition" and ev.from_state in self.done:
            self.done[ev.from_state].add(ev.task_id)
            self.progress.set(self.LABELS[ev.from_state], sum(map(self._weight, self.done[ev.from_state])))
        elif ev.kind == "attempt" and ev.detail != "attempt 1":
            self.lost += 1
            self.progress.note("lost", f"{self.lost} re-issued")

    def line(self) -> str:
        return self.progress.line()

    def finish(self) -> None:
        self.progress.close()


class PhaseProgress:
    """One counter at a time, replaced when the phase changes (reading, first pass, ...), fed
    ``(phase, done, total)`` in chunks; a total may be None (unknown) or an estimate. Given
    ``chunk_frames`` (N) the bar counts frames: ``done`` chunks are N frames each, all of them
    ``total_frames`` (the last chunk may be shorter) when that is known."""

    def __init__(self, unit: str = "chunks", *, chunk_frames: int | None = None, total_frames: int | None = None):
        self.unit = "frames" if chunk_frames else unit
        self.chunk_frames = chunk_frames
        self.total_frames = total_frames
        self.bars: Progress | None = None
        self.phase = ""

    def __call__(self, phase: str, done: int, total: int | None) -> None:
        if self.chunk_frames:
            whole = bool(total) and done >= total and bool(self.total_frames)
            done = self.total_frames if whole else done * self.chunk_frames
            total = self.total_frames or (total * self.chunk_frames if total else None)
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
    """A pipeline's progress, fed ``(node, done, planned, finished)`` as its tasks go and, through
    ``frames(name, n)``, the frames its sources hold and its sinks have received. With ``sinks``
    named, one bar per sink counts frames (its total: the longest source's frames, an estimate
    for a pipeline that drops or adds frames), the nodes' tasks in the bars' note; without, one
    bar per node counts tasks."""

    def __init__(self, nodes, tty: bool | None = None, sinks=()):
        self.sinks = list(sinks)
        self.counts = {n: (0, 0) for n in nodes}
        self.finished: set[str] = set()
        self.source_frames: dict[str, int] = {}
        if self.sinks:
            self.progress = Progress({s: None for s in self.sinks}, unit="frames", enabled=tty)
        else:
            self.progress = Progress({n: 0 for n in nodes}, unit="tasks", enabled=tty)
        self.tty = self.progress.enabled

    def __call__(self, node: str, done: int, planned: int, finished: bool) -> None:
        if finished:
            self.finished.add(node)
        if not self.sinks:
            self.progress.total(node, planned)
            self.progress.set(node, done)
            if finished:
                self.progress.note(node, f"{node} finished")
            return
        self.counts[node] = (done, planned)
        self.progress.note("tasks", ", ".join(
            f"{n} {d}/{p}{' finished' * (n in self.finished)}" for n, (d, p) in self.counts.items()))

    def frames(self, name: str, n: int) -> None:
        """``n`` frames at source or sink ``name`` so far."""
        if name not in self.sinks:
            self.source_frames[name] = n
            for s in self.sinks:
                self.progress.total(s, max(self.source_frames.values()))
            return
        total = self.progress.totals.get(name)
        if total is not None and n > total:
            self.progress.total(name, n)
        self.progress.set(name, n)

    def close(self) -> None:
        self.progress.close()
