"""The codec's kernels compiled ahead of time: loading them without importing numba.

A process that decodes one frame spends about 0.33 s before it: numba's import (0.12 s) and the
loading of each cached kernel make up most of it, and a fleet pays that in every worker. So
``python -m excamera.aot_build`` compiles, with numba's own AOT compiler (``numba.pycc``), every
kernel entry point the codec calls from Python, at the argument types it calls them with, into two
extension modules (with and without numba's runtime, see :func:`module_name`) and a table of their
exports. When those are there and current, ``codec.jit.njit`` makes each kernel a :class:`Kernel`
that calls the compiled entry point and numba is never imported.

* **Current** means built from these very codec sources, for this numba, numpy, Python and CPU:
  all of that is hashed into the module's file name (:func:`fingerprint`), so a stale module is
  simply not found. A module built for a named CPU (:data:`PORTABLE`, for an image built on one
  machine and run on others) is used where this machine's is missing and its CPU has the
  features. It is also not used where numba is told to compile differently (any
  ``NUMBA_*`` setting but the cache directory: bounds checking, ``NUMBA_DISABLE_JIT``, another CPU)
  or where ``EXCAMERA_AOT=0``.
* The compiled entry points check nothing: a wrong dtype crashes the process. So a Kernel checks
  each call's argument types against the exported signatures first, as numba's ``typeof`` would
  type them, and a call that matches none (a test calling a helper kernel, a new caller) goes to
  numba's JIT after all (:func:`_jit_world`): the same kernel, from numba's cache, correct and as
  slow to start as before.

Nothing here imports numba (until a call needs its JIT); ``excamera.aot_build`` writes what
:func:`load` reads.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.machinery
import importlib.util
import json
import os
import platform
import sys
import types as pytypes

import numpy as np

#: Set to 0 to never use the compiled module.
ENV_SWITCH = "EXCAMERA_AOT"
#: Where the module is looked for and written; default: the codec's own ``__pycache__``.
ENV_DIR = "EXCAMERA_AOT_DIR"
PREFIX = "excamera_aot_"
CODEC_DIR = os.path.dirname(os.path.abspath(__file__))


def wanted(environ=os.environ) -> bool:
    """Whether this process may use the compiled module at all (see the module docstring)."""
    if environ.get(ENV_SWITCH, "1") == "0":
        return False
    return not any(k.startswith("NUMBA_") and k != "NUMBA_CACHE_DIR" for k in environ)


def directory(environ=os.environ) -> str:
    return environ.get(ENV_DIR) or os.path.join(CODEC_DIR, "__pycache__")


#: CPUs a module may be built for besides this machine's (``aot_build --cpu NAME``), each with the
#: ``/proc/cpuinfo`` flags a machine needs to run it. Such a module is used where the host's own is
#: missing and the CPU has those features. Haswell's set is what every x86-64 AWS Lambda host runs,
#: so an image built on any machine carries kernels its sandboxes load (``excamera lambda package``).
PORTABLE = {"haswell": ("avx", "avx2", "bmi1", "bmi2", "cx16", "f16c", "fma", "abm", "movbe",
                        "pclmulqdq", "popcnt", "sse4_2")}
#: The module compiled for the machine that builds it.
HOST = "host"
#: What a loaded module was compiled for (HOST or a PORTABLE name); None while none is loaded.
CPU: str | None = None


@functools.lru_cache(maxsize=1)
def _cpu() -> bytes:
    """What identifies this CPU to a compiler for it: on Linux its model and feature flags."""
    try:
        with open("/proc/cpuinfo", "rb") as f:
            lines = []
            for line in f:
                if not line.strip():
                    break
                if line.startswith((b"model name", b"flags", b"vendor_id", b"cpu family", b"model\t")):
                    lines.append(line)
            return b"".join(lines)
    except OSError:
        return f"{platform.processor()} {platform.machine()}".encode()


def cpu_flags() -> set[str]:
    """This CPU's feature flags as Linux lists them (empty elsewhere)."""
    for line in _cpu().decode(errors="replace").splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def runs_here(cpu: str, flags: set[str] | None = None, machine: str | None = None) -> bool:
    """Whether a module compiled for ``cpu`` (a PORTABLE name) runs on this machine."""
    machine = platform.machine() if machine is None else machine
    return (cpu in PORTABLE and machine in ("x86_64", "AMD64")
            and set(PORTABLE[cpu]) <= (cpu_flags() if flags is None else flags))


def _dependencies() -> "hashlib._Hash | None":
    """A hash of what every module depends on but the CPU: the codec's sources, numba's release
    (read from its files, not imported), numpy's and Python's; None without numba."""
    h = hashlib.sha256()
    for name in sorted(os.listdir(CODEC_DIR)):
        if name.endswith(".py"):
            h.update(name.encode() + b"\0")
            with open(os.path.join(CODEC_DIR, name), "rb") as f:
                h.update(f.read())
    spec = importlib.util.find_spec("numba")
    if spec is None or not spec.origin:
        return None
    try:
        with open(os.path.join(os.path.dirname(spec.origin), "_version.py"), "rb") as f:
            h.update(f.read())
    except OSError:
        return None
    h.update(f"{np.__version__} {sys.version} {platform.machine()}".encode())
    return h


def fingerprint(cpu: str = HOST, dependencies=None) -> str:
    """A hash of everything the module compiled for ``cpu`` depends on: ``_dependencies`` (given,
    or read now) and the CPU: this machine's model and flags for HOST, the name for a PORTABLE
    one. Empty without numba."""
    h = _dependencies() if dependencies is None else dependencies.copy()
    if h is None:
        return ""
    h.update(_cpu() if cpu == HOST else f"cpu {cpu}".encode())
    return h.hexdigest()[:20]


def module_name(fp: str, nrt: bool = True, cpu: str = HOST) -> str:
    """``excamera_aot_<cpu>_<fingerprint>``. Kernels compiled without numba's runtime
    (``_nrt=False``) go to a module of their own, built without it too: compiled with it, they
    would release array views that their callees, compiled without it, never acquired (and free
    arrays still in use)."""
    return f"{PREFIX}{cpu}_{fp}" + ("" if nrt else "_nonrt")


def paths(fp: str, where: str | None = None, cpu: str = HOST) -> tuple[str, str, str]:
    """The export table's path, then the two extension modules' (with, without numba's runtime)."""
    where = directory() if where is None else where
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    return (os.path.join(where, module_name(fp, True, cpu) + ".json"),
            os.path.join(where, module_name(fp, True, cpu) + suffix),
            os.path.join(where, module_name(fp, False, cpu) + suffix))


def _import(name: str, path: str):
    loader = importlib.machinery.ExtensionFileLoader(name, path)
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


# --- argument types, as numba's typeof gives them -------------------------------------------------
# An export's argument is ["array", dtype, ndim, layout, readonly] or ["scalar", name] (int64,
# bool, float64, or a numpy scalar's dtype name). Return types are written the same way, plus
# ["none"] and ["tuple", [...]], for the build only.

# numpy's array flags (``ndarray.flags.num``): one integer read instead of a flags object per test.
_C, _F, _ALIGNED, _WRITEABLE = 0x1, 0x2, 0x100, 0x400


def _condition(i: int, spec, env: dict) -> str:
    """Python source that is true when argument ``a{i}`` types as ``spec``."""
    a = f"a{i}"
    if spec[0] == "array":
        _, dtype, ndim, layout, readonly = spec
        env[f"d{i}"] = np.dtype(dtype)
        mask = want = _ALIGNED | (0 if readonly else _WRITEABLE)
        if layout == "C":
            mask, want = mask | _C, want | _C
        elif layout == "F":  # numba types an array both C and F contiguous as C
            mask, want = mask | _C | _F, want | _F
        elif layout != "A":
            raise ValueError(f"unsupported layout in {spec!r}")
        return (f"(type({a}) is ndarray and {a}.ndim == {int(ndim)} and ({a}.dtype is d{i} or "
                f"{a}.dtype == d{i}) and ({a}.flags.num & {mask}) == {want})")
    if spec[0] == "scalar":
        name = spec[1]
        if name == "int64":
            return f"((type({a}) is int and {-(1 << 63)} <= {a} < {1 << 63}) or type({a}) is int64)"
        if name == "bool":
            return f"(type({a}) is bool or type({a}) is bool_)"
        if name == "float64":
            return f"(type({a}) is float or type({a}) is float64)"
        env[f"t{i}"] = np.dtype(name).type
        return f"type({a}) is t{i}"
    raise ValueError(f"unsupported argument type {spec!r}")


def takes_function(specs):
    """A function of an argument tuple: do the arguments type as ``specs``, exactly as numba's
    ``typeof`` would type them (or, for read-only arrays, as writable ones, which a kernel that
    only reads them takes as safely)? Made from source so that a call costs one function call,
    not one per argument: the codec calls some kernels from Python thousands of times a second."""
    env = {"ndarray": np.ndarray, "int64": np.int64, "bool_": np.bool_, "float64": np.float64}
    conditions = [_condition(i, spec, env) for i, spec in enumerate(specs)]
    names = "".join(f"a{i}, " for i in range(len(specs)))
    source = (f"def takes(args):\n"
              f"    if len(args) != {len(specs)}:\n        return False\n"
              + (f"    {names}= args\n" if specs else "")
              + f"    return {' and '.join(conditions) or 'True'}\n")
    exec(compile(source, "<codec.aot argument check>", "exec"), env)
    return env["takes"]


def arg_check(spec):
    """A predicate on one value: does it type as ``spec``?"""
    takes = takes_function([spec])
    return lambda value: takes((value,))


class Export:
    """One compiled entry point and the argument types it takes."""

    def __init__(self, function, args):
        self.function = function
        self.takes = takes_function(args)


class Kernel:
    """A codec kernel in a process with the compiled module: calls an export that takes the
    arguments, or else the kernel compiled by numba (``_jit_world``)."""

    def __init__(self, py_func, args, options, exports):
        self.py_func = py_func
        self.module = py_func.__module__
        self.__name__ = py_func.__name__
        self.__qualname__ = py_func.__qualname__
        self.__doc__ = py_func.__doc__
        self.__wrapped__ = py_func
        self.decorator_args = args
        self.options = options
        self.exports = exports
        self.jitted = None  # numba's dispatcher, once a call needed it

    def __call__(self, *args):
        for export in self.exports:
            if export.takes(args):
                return export.function(*args)
        if self.jitted is None:
            _jit_world(self.module)
        return self.jitted(*args)

    def __repr__(self) -> str:
        return f"<codec kernel {self.module}.{self.__qualname__}: {len(self.exports)} compiled>"


_MODULE = None  # the loaded extension modules
_EXPORTS: dict[str, list[Export]] = {}  # "module.qualname" -> exports
_KERNELS: dict[str, list[Kernel]] = {}  # module -> its kernels
_WORLD: dict[str, dict] = {}  # module -> the globals its numba-compiled kernels see


def load() -> bool:
    """Load a current compiled module: this machine's, else one for a PORTABLE CPU it runs;
    True if one is loaded (now or before)."""
    global _MODULE, CPU
    if _MODULE is not None:
        return True
    if not wanted():
        return False
    dependencies = _dependencies()  # the sources read once for every candidate CPU
    if dependencies is None:
        return False
    for cpu in [HOST] + [c for c in PORTABLE if runs_here(c)]:
        fp = fingerprint(cpu, dependencies)
        table, *so = paths(fp, cpu=cpu)
        if not os.path.exists(table):  # written last: the build is complete
            continue
        try:
            with open(table) as f:
                entries = json.load(f)
            modules = {nrt: _import(module_name(fp, nrt, cpu), so[0 if nrt else 1])
                       for nrt in {e["nrt"] for e in entries}}
            exports: dict[str, list[Export]] = {}
            for e in entries:
                function = getattr(modules[e["nrt"]], e["symbol"])
                exports.setdefault(e["kernel"], []).append(Export(function, e["args"]))
        except (OSError, ValueError, ImportError, AttributeError, KeyError, TypeError):
            continue
        _EXPORTS.update(exports)
        _MODULE, CPU = modules, cpu
        return True
    return False


def njit(*args, **options):
    """``numba.njit``'s two forms (``@njit``, ``@njit(...)``) making :class:`Kernel` objects."""
    if len(args) == 1 and callable(args[0]) and not options:
        return _kernel(args[0], (), {})

    def decorate(py_func):
        return _kernel(py_func, args, options)
    return decorate


def _kernel(py_func, args, options) -> Kernel:
    kernel = Kernel(py_func, args, options,
                    _EXPORTS.get(f"{py_func.__module__}.{py_func.__qualname__}", []))
    _KERNELS.setdefault(kernel.module, []).append(kernel)
    return kernel


def _jit_world(module: str) -> dict:
    """numba dispatchers for ``module``'s kernels, over a copy of its globals in which every
    Kernel is its dispatcher (numba can compile calls to dispatchers, not to Kernels), made for
    the modules they call as well. The functions keep their code, names and files, so they find
    numba's cache as a process without the compiled module would."""
    if module in _WORLD:
        return _WORLD[module]
    import numba

    from .numba_cache import install_light_load

    install_light_load()
    world: dict = {}
    _WORLD[module] = world
    for k in _KERNELS.get(module, []):
        f = k.py_func
        fn = pytypes.FunctionType(f.__code__, world, f.__name__, f.__defaults__, f.__closure__)
        # __module__ too: made over a still empty dict it is None, which numba takes for a
        # function made at run time, whose whole globals its cache would then try to pickle.
        fn.__module__, fn.__qualname__, fn.__doc__ = f.__module__, f.__qualname__, f.__doc__
        fn.__kwdefaults__ = f.__kwdefaults__
        k.jitted = numba.njit(*k.decorator_args, **k.options)(fn)
    for name, value in vars(sys.modules[module]).items():
        if isinstance(value, Kernel):
            if value.jitted is None:
                _jit_world(value.module)
            world[name] = value.jitted
        else:
            world[name] = value
    return world
