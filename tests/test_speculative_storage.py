"""Speculative I/O (storage.speculative): a transfer slow against its size class's median
is re-issued in parallel and the first to finish wins. Slowness is injected into a real local
storage: the first call for a chosen key stalls."""

import threading
import time

import pytest

from storage.speculative import SpeculativeStorage, size_class
from storage import LocalStorage, StorageError


class Stalling(LocalStorage):
    """The first get or put of each key in ``stall`` waits ``seconds`` (or until ``release`` is
    set) before doing its work; ``stalls_over`` counts the stalls that ended."""

    def __init__(self, root, stall, seconds=3.0):
        super().__init__(root)
        self.stall, self.seconds = set(stall), seconds
        self.calls = []
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.stalls_over = 0

    def _maybe_stall(self, key):
        with self.lock:
            self.calls.append(key)
            first = key in self.stall
            self.stall.discard(key)
        if first:
            self.release.wait(self.seconds)
            with self.lock:
                self.stalls_over += 1

    def get(self, key):
        self._maybe_stall(key)
        return super().get(key)

    def put(self, key, data):
        self._maybe_stall(key)
        return super().put(key, data)


def test_size_classes_are_powers_of_four():
    assert [size_class(n) for n in (0, 4095, 4096, 16383, 16384, 1 << 30)] == [0, 0, 1, 1, 2, 10]


def test_a_stalled_get_and_put_are_reissued_and_the_fast_copy_wins(tmp_path):
    base = Stalling(tmp_path, stall={"slow-put"}, seconds=60)
    s = SpeculativeStorage(base, factor=2.0, min_sample=5, floor_s=0.05)
    for i in range(6):
        s.put(f"k{i}", b"x" * 1000)
        assert s.get(f"k{i}") == b"x" * 1000
    base.put("slow-get", b"y" * 1000)   # written directly: its first *get* stalls
    base.stall.add("slow-get")
    base.calls.clear()
    t0 = time.monotonic()
    try:
        assert s.get("slow-get") == b"y" * 1000
        ref = s.put("slow-put", b"z" * 1000)
        # Both answered while both first calls were still stalled: the re-issues won.
        assert base.stalls_over == 0
        assert time.monotonic() - t0 < 30           # a hang-catcher (the stalls are 60 s)
    finally:
        base.release.set()
    assert s.stats["reissued"] == 2 and s.stats["won_by_reissue"] == 2
    assert base.calls.count("slow-get") == 2 and base.calls.count("slow-put") == 2
    assert ref.size == 1000 and s.get("slow-put") == b"z" * 1000
    s.close()


def test_no_reissue_before_a_sample_or_when_off(tmp_path):
    base = Stalling(tmp_path, stall={"a"}, seconds=0.3)
    s = SpeculativeStorage(base, min_sample=5)
    s.put("a", b"1")                                 # no sample yet: waits out the stall
    assert s.stats["reissued"] == 0 and base.calls == ["a"]
    off = SpeculativeStorage(Stalling(tmp_path, stall={"b"}, seconds=0.3), factor=0, min_sample=1)
    for i in range(3):
        off.put(f"c{i}", b"1")
    off.put("b", b"2")
    assert off.stats["reissued"] == 0


def test_errors_come_through(tmp_path):
    s = SpeculativeStorage(LocalStorage(tmp_path), min_sample=1)
    s.put("k", b"1")
    with pytest.raises(StorageError, match="no such object"):
        s.get("missing")
    with pytest.raises(StorageError, match="escapes"):
        s.put("../x", b"1")


def test_stop_waits_for_the_write_under_way_and_refuses_new_ones(tmp_path):
    """A worker told to stop: the write it has begun ends before ``stop`` returns (so nothing
    lands after it hangs up), and no write starts after."""
    base = Stalling(tmp_path, stall={"slow"}, seconds=30)
    s = SpeculativeStorage(base, factor=0)
    writer = threading.Thread(target=s.put, args=("slow", b"x" * 10))
    writer.start()
    deadline = time.monotonic() + 10
    while "slow" not in base.calls:       # the write is under way (stalled in the base)
        assert time.monotonic() < deadline
        time.sleep(0.01)
    stopped = []
    stopper = threading.Thread(target=lambda: stopped.append(s.stop(wait_s=20)))
    stopper.start()
    stopper.join(0.3)
    assert stopper.is_alive() and not stopped       # waiting for the write under way
    with pytest.raises(StorageError, match="this worker is stopping"):
        s.put("later", b"y")
    base.release.set()
    stopper.join(10)
    writer.join(10)
    assert stopped == [True] and base.get("slow") == b"x" * 10 and not base.exists("later")
    assert SpeculativeStorage(LocalStorage(tmp_path / "idle")).stop(wait_s=0) is True
