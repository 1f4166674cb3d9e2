"""codec.jit: kernels loaded from numba's cache without numba's registry refresh (in processes
without the compiled module of ``codec.aot``: its tests are in test_aot.py)."""

from __future__ import annotations

import subprocess
import sys

import numba

import codec.jit
import codec.numba_cache
from common import ROOT, VECTORS, subprocess_env

# A fresh process decodes a conformance vector and reports what it loaded.
CHILD = r"""
import hashlib, sys
from codec.decoder import Decoder
from codec.ivf import IvfReader
import codec.jit
h = hashlib.md5()
with IvfReader(sys.argv[1]) as reader:
    d = Decoder()
    while (f := reader.read_frame()) is not None:
        picture = d.decode(f.data)
        if picture is not None:
            h.update(picture.y.tobytes()); h.update(picture.u.tobytes()); h.update(picture.v.tobytes())
print(codec.jit.LIGHT_CACHE_LOAD, "numba.np.linalg" in sys.modules, h.hexdigest())
"""


def _decode_in_child(path) -> list[str]:
    env = dict(subprocess_env(), EXCAMERA_AOT="0")
    res = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, cwd=ROOT,
                         timeout=600, env=env)
    assert res.returncode == 0, res.stderr
    return res.stdout.split()


def test_a_warm_process_loads_the_kernels_without_numbas_registry_and_decodes_the_same():
    """On the checked numba release the light load is on: a process whose kernels are all in the
    cache never imports numba's implementation registry (numba.np.linalg stands for it), and
    decodes the same pictures as the process before it (which may have compiled them)."""
    first = _decode_in_child(VECTORS[0])     # compiles whatever the cache lacks
    warm = _decode_in_child(VECTORS[0])
    assert warm[2] == first[2]
    if numba.__version__.startswith("0.68."):
        assert warm[:2] == ["True", "False"]
    else:   # another release: numba is left as it is, and refreshes as it always did
        assert warm[:2] == ["False", "True"]


def test_an_unchecked_numba_release_is_left_alone(monkeypatch):
    monkeypatch.setattr(codec.numba_cache, "_release", lambda: (9, 99))
    from numba.core import caching
    before = caching.Cache.load_overload
    assert codec.numba_cache.install_light_load() is False
    assert caching.Cache.load_overload is before


def test_installing_again_changes_nothing():
    first = codec.numba_cache.install_light_load()
    from numba.core import caching
    before = caching.Cache.load_overload
    assert codec.numba_cache.install_light_load() is first
    assert caching.Cache.load_overload is before
    assert getattr(before, "light", False) is first
    assert first is numba.__version__.startswith("0.68.")
