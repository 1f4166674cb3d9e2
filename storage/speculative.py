"""Speculative I/O: a storage read or write that is slow against its peers is issued again.

Object stores have long tails: most GETs of a few megabytes take tens of milliseconds, a few take
seconds (a slow server, a dropped connection waiting on its retry). ``SpeculativeStorage`` wraps
any ``Storage``: it times every ``get`` and ``put``, keeps the durations per *size class* (powers
of four of the object's size, so a 4 KB state and a 40 MB chunk are not compared), and when a
transfer runs past ``factor`` times the median of its class (after ``min_sample`` of them, and
never sooner than ``floor_s``), it starts the same transfer again in parallel; the first to
finish wins, the other's result is ignored. This is safe because puts are atomic and idempotent
here (every writer of a key writes the same bytes) and gets have no side effects.

``stats`` counts transfers and re-issues (for the timeline and the tests). Every worker reads and
writes its job's storage through one (``worker.runtime``).
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
import time
from collections import defaultdict

from storage.core import ObjectRef, Storage, StorageError

#: Size classes: 0 for < 4 KiB, then one per factor of four.
_CLASS_BASE = 4096


def size_class(size: int) -> int:
    c, limit = 0, _CLASS_BASE
    while size >= limit and c < 20:
        c += 1
        limit *= 4
    return c


class SpeculativeStorage(Storage):
    """``base`` with slow gets and puts re-issued (see the module docstring)."""

    def __init__(self, base: Storage, *, factor: float = 2.0, min_sample: int = 5, floor_s: float = 0.05,
                 max_parallel: int = 16, clock=time.monotonic):
        self.base = base
        self.factor, self.min_sample, self.floor_s = factor, min_sample, floor_s
        self.clock = clock
        self._times: dict[tuple[str, int], list[float]] = defaultdict(list)
        self._sizes: dict[str, int] = {}
        self._lock = threading.Lock()
        self._pool = cf.ThreadPoolExecutor(max_parallel, thread_name_prefix="excamera-io")
        self.stats = {"transfers": 0, "reissued": 0, "won_by_reissue": 0}
        self._writes = threading.Condition()   # guards the two below
        self._stopped, self._in_flight = False, 0

    def _class(self, key: str, size: int | None) -> int:
        """A put's class is its size's; a get's is the size its key had when last seen here, or
        -1 (every get so far) when this storage has not seen the key."""
        if size is None:
            size = self._sizes.get(key)
        return -1 if size is None else size_class(size)

    def _limit(self, kind: str, cls: int) -> float | None:
        with self._lock:
            times = self._times.get((kind, cls))
            if not times or len(times) < self.min_sample:
                return None
            ordered = sorted(times[-101:])
        return max(self.factor * ordered[len(ordered) // 2], self.floor_s)

    def _record(self, kind: str, cls: int, key: str, size: int, seconds: float) -> None:
        with self._lock:
            # A get of unknown size (class -1) is compared with every get: record each there too.
            for c in {cls, size_class(size), -1 if kind == "get" else cls}:
                times = self._times[(kind, c)]
                times.append(seconds)
                if len(times) > 1000:
                    del times[:500]
            if len(self._sizes) > 10000:
                self._sizes.clear()
            self._sizes[key] = size
            self.stats["transfers"] += 1

    def _run(self, kind: str, key: str, fn, *args, size: int | None = None):
        start = self.clock()
        cls = self._class(key, size)
        limit = None if self.factor <= 0 else self._limit(kind, cls)

        def done(result):
            n = size if size is not None else len(result)
            self._record(kind, cls, key, n, self.clock() - start)
            return result

        if limit is None:
            return done(fn(*args))
        first = self._pool.submit(fn, *args)
        finished, _ = cf.wait([first], timeout=limit)
        if finished:
            return done(first.result())
        with self._lock:
            self.stats["reissued"] += 1
        second = self._pool.submit(fn, *args)
        pending, error = {first, second}, None
        while pending:
            finished, pending = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
            for f in finished:
                if f.exception() is None:
                    if f is second:
                        with self._lock:
                            self.stats["won_by_reissue"] += 1
                    return done(f.result())
                error = f.exception()
        raise error

    def get(self, key: str) -> bytes:
        return self._run("get", key, self.base.get, key)

    def put(self, key: str, data: bytes) -> ObjectRef:
        with self._writes:
            if self._stopped:
                raise StorageError(f"{key}: not written: this worker is stopping")
            self._in_flight += 1
        try:
            return self._run("put", key, self.base.put, key, data, size=len(data))
        finally:
            with self._writes:
                self._in_flight -= 1
                self._writes.notify_all()

    def stop(self, wait_s: float = 10.0) -> bool:
        """No write starts from now on, and the ones under way end first (up to ``wait_s``):
        a worker told to stop mid-operation (a job cancelled, failed or done without it) must not
        write into a job's prefix once it has hung up, when the coordinator may be removing it.
        Whether every write had ended."""
        with self._writes:
            self._stopped = True
            return self._writes.wait_for(lambda: self._in_flight == 0, timeout=wait_s)

    def exists(self, key: str) -> bool:
        return self.base.exists(key)

    def delete(self, key: str) -> None:
        self.base.delete(key)

    def list(self, prefix: str = "") -> list[str]:
        return self.base.list(prefix)

    @property
    def url(self) -> str:
        return self.base.url

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
