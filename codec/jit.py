"""The codec kernels' decorator, ``njit``: compiled ahead of time where that is possible
(``codec.aot``), else numba's ``njit`` with a lighter load of kernels from numba's cache.

Where ``codec.aot`` finds a current compiled module, ``njit`` is ``codec.aot.njit`` and numba is
not imported (until a call no compiled entry point takes). Everywhere else it is numba's.

A process normally finds every kernel compiled in numba's cache and only loads it;
``codec.numba_cache.install_light_load`` makes that load skip numba's registry refresh (about
0.07 s of every process's start-up) where it is safe to.
"""

from __future__ import annotations

from . import aot
from .numba_cache import install_light_load

#: Whether the kernels are the compiled module's (``codec.aot``); numba is not imported then.
AOT = aot.load()
if AOT:
    njit = aot.njit
    #: Whether cache loads here skip numba's refresh (see the module docstring); with ``AOT``,
    #: ``codec.aot`` installs it if a call ever needs numba.
    LIGHT_CACHE_LOAD = False
else:
    from numba import njit  # noqa: F401  (the kernels' decorator: ``from .jit import njit``)

    LIGHT_CACHE_LOAD = install_light_load()
