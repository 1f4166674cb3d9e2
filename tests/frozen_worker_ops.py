"""Operations used only by tests/test_frozen_worker.py (imported by its workers with ``--ops``)."""

import ctypes

from worker.ops import operation


@operation("test-hold-gil")
def hold_gil(ctx, *, seconds: float) -> dict:
    """Block ``seconds`` in C *holding the GIL* (libc's sleep called through ``ctypes.PyDLL``,
    which does not release it): like a numba kernel that keeps the interpreter, the worker's
    Python threads and event loop stand still, only gRPC's C core runs."""
    ctypes.PyDLL(None).usleep(int(seconds * 1e6))
    return {}
