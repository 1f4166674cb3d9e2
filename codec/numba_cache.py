"""numba's cache loaded without its registry refresh: ``install_light_load``.

Every kernel is ``@njit(cache=True)``, so a process normally finds it compiled in numba's cache and
only loads it. Before each load numba calls ``target_context.refresh()``, which the first time
imports numba's whole library of implementations (about 80 modules: linear algebra, random
generators, typed containers, unicode, ...) so that it could compile anything. Loading compiled
code needs none of that, only numba's runtime (NRT) initialised. The refresh was about 0.07 s of
every process's start-up (the first decoded frame of a stream: 0.17 s, then 0.10 s without it),
paid again by each worker and each CLI command.

So here a cache load initialises the runtime and loads; if that finds nothing or fails, numba's own
path runs (refresh, then load), and a kernel that must be compiled goes through numba's compiler,
which refreshes by itself. Skipping the runtime's initialisation as well crashes: the cached code
calls into it.

This replaces a private method (``numba.core.caching.Cache.load_overload``), so it is done only on
the numba release it was checked against (``CHECKED``) and where that method is as expected;
anywhere else numba is left as it is, correct and 0.07 s slower to start.
"""

from __future__ import annotations

#: numba releases (major, minor) whose cache loading this was read against and tested on.
CHECKED = ((0, 68),)


def _release() -> tuple[int, int]:
    import numba

    parts = numba.__version__.split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return (-1, -1)


def install_light_load() -> bool:
    """Replace numba's cache load by ``light_load`` where it is safe to; True if done."""
    from numba.core import caching
    from numba.core.runtime import rtsys

    load = getattr(caching.Cache, "load_overload", None)
    if _release() not in CHECKED or load is None or not hasattr(caching.Cache, "_load_overload"):
        return False
    if getattr(load, "light", False):
        return True
    numba_load = load

    def light_load(self, sig, target_context):
        rtsys.initialize(target_context)  # idempotent; all a cached kernel needs of the context
        try:
            with self._guard_against_spurious_io_errors():
                data = self._load_overload(sig, target_context)
        except Exception:
            data = None
        return data if data is not None else numba_load(self, sig, target_context)

    light_load.light = True
    caching.Cache.load_overload = light_load
    return True
