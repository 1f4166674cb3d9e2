"""Compile the codec's kernels ahead of time: ``python -m excamera.aot_build``.

Writes the extension module ``codec.aot`` loads (see there for why and how it is used), in three
child processes, each with the compiled module switched off:

1. run the kernels a worker and the CLI run (``awslambda.warmup``'s encodes, decode and
   distributed job, then ``excamera vp8enc`` and ``excamera ssim`` on a tiny clip), so that numba's
   cache holds all of them;
2. run the same again and list, for each kernel, the argument types it was called with from
   Python: in a process that only loads kernels from the cache, those are the only signatures
   numba knows (a kernel compiled in the process would list the kernels it calls too);
3. compile those signatures with ``numba.pycc`` for this CPU (or, ``--cpu``, for one a fleet
   runs: ``codec.aot.PORTABLE``), with an empty numba cache (pycc links the kernels a kernel
   calls from their LLVM IR, which a kernel loaded from the cache has not kept), into a temporary
   directory, and move the module and its table of exports into ``codec.aot.directory()`` under
   the current fingerprint, removing older ones for the same CPU.

Needs a C compiler and Python's headers (pycc links numba's runtime into the module). Where the
build fails nothing is written and the codec goes on with numba's JIT.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Step 1 and 2's child: the workload, then (step 2) the signatures as JSON on stdout's last line.
RUN_KERNELS = r"""
import contextlib, importlib, io, json, os, pkgutil, sys, tempfile

with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    from awslambda.warmup import tiny_y4m, warm_up
    from excamera.cli import main
    warm_up()
    with tempfile.TemporaryDirectory() as d:
        clip = os.path.join(d, "clip.y4m")
        tiny_y4m(clip)
        for argv in (["vp8enc", clip, "-o", os.path.join(d, "out.ivf")], ["ssim", clip, clip],
                     ["decode", "--frame-md5", os.path.join(d, "out.ivf")]):
            if main(argv):
                raise SystemExit(f"aot_build: excamera {argv[0]} failed")
if sys.argv[1] == "list":
    import numba
    from numba.core import types
    import codec

    def spec(t):
        if isinstance(t, types.Array):
            return ["array", str(t.dtype), t.ndim, t.layout, not t.mutable]
        if isinstance(t, types.Boolean):
            return ["scalar", "bool"]
        if isinstance(t, (types.Integer, types.Float)):
            return ["scalar", str(t)]
        if isinstance(t, types.NoneType):
            return ["none"]
        if isinstance(t, types.BaseTuple):
            return ["tuple", [spec(x) for x in t]]
        raise TypeError(str(t))

    out = []
    for info in sorted(pkgutil.iter_modules(codec.__path__), key=lambda m: m.name):
        module = importlib.import_module("codec." + info.name)
        for name, value in sorted(vars(module).items()):
            if not isinstance(value, numba.core.dispatcher.Dispatcher):
                continue
            if value.py_func.__module__ != module.__name__:
                continue
            for sig, cres in value.overloads.items():
                try:
                    out.append({"kernel": f"{module.__name__}.{value.py_func.__qualname__}",
                                "args": [spec(t) for t in sig], "ret": spec(cres.signature.return_type)})
                except TypeError as e:
                    print(f"aot_build: {module.__name__}.{name}: {e} is not exported", file=sys.stderr)
    print(json.dumps(out))
"""

# Step 3's child: argv[1] the signatures' JSON file, argv[2] the output directory, argv[3] the CPU.
COMPILE = r"""
import importlib, json, os, sys
from numba import types
from numba.pycc import CC
from codec import aot

def numba_type(s):
    if s[0] == "array":
        return types.Array(getattr(types, s[1]), s[2], s[3], readonly=s[4])
    if s[0] == "scalar":
        return types.boolean if s[1] == "bool" else getattr(types, s[1])
    if s[0] == "none":
        return types.none
    return types.Tuple([numba_type(x) for x in s[1]])

with open(sys.argv[1]) as f:
    entries = json.load(f)
cpu = sys.argv[3]
fp = aot.fingerprint(cpu)
modules = {}
table = []
for i, e in enumerate(entries):
    module, _, name = e["kernel"].rpartition(".")
    dispatcher = getattr(importlib.import_module(module), name)
    nrt = bool(dispatcher.targetoptions.get("_nrt", True))
    if nrt not in modules:
        modules[nrt] = CC(aot.module_name(fp, nrt, cpu))
        modules[nrt].output_dir = sys.argv[2]
        modules[nrt].target_cpu = cpu  # "host" or an LLVM CPU name (its default features)
        modules[nrt].use_nrt = nrt
    sig = numba_type(e["ret"])(*[numba_type(a) for a in e["args"]])
    modules[nrt].export(f"k{i}", sig)(dispatcher.py_func)
    table.append({"kernel": e["kernel"], "symbol": f"k{i}", "nrt": nrt, "args": e["args"]})
for cc in modules.values():
    cc.compile()
table_path = aot.paths(fp, sys.argv[2], cpu)[0]
with open(table_path, "w") as f:
    json.dump(table, f, indent=0)
print(json.dumps({"fingerprint": fp}))
"""


def _child(code: str, args: list[str], env: dict[str, str], what: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise SystemExit(f"aot_build: {what} failed: {tail}")
    return proc.stdout


def remove_older(target: str, cpu: str) -> None:
    """Remove the modules in ``target`` built for ``cpu`` (or named before modules named their
    CPU); those for other CPUs stay."""
    from codec import aot

    os.makedirs(target, exist_ok=True)
    for name in os.listdir(target):
        kind = name[len(aot.PREFIX):].split("_")[0] if name.startswith(aot.PREFIX) else None
        if kind is not None and (kind == cpu or kind not in (aot.HOST, *aot.PORTABLE)):
            os.unlink(os.path.join(target, name))


def build(target: str, only: list[str] | None = None, log=print, cpus: tuple[str, ...] = ("host",)
          ) -> list[str]:
    """Build the modules for each of ``cpus`` into ``target``; the paths written (each CPU's table
    first)."""
    from codec import aot

    env = dict(os.environ, **{aot.ENV_SWITCH: "0"})
    started = time.monotonic()
    _child(RUN_KERNELS, ["warm"], env, "running the kernels")
    log(f"kernels run and cached ({time.monotonic() - started:.1f} s)")
    listed = _child(RUN_KERNELS, ["list"], env, "listing the kernels' signatures")
    entries = json.loads(listed.strip().splitlines()[-1])
    if only:
        entries = [e for e in entries if e["kernel"] in only]
    if not entries:
        raise SystemExit("aot_build: no kernel signature to compile")
    log(f"{len(entries)} entry points in {len({e['kernel'] for e in entries})} kernels")
    written = []
    with tempfile.TemporaryDirectory(prefix="excamera-aot-") as tmp:
        sigs = os.path.join(tmp, "signatures.json")
        with open(sigs, "w") as f:
            json.dump(entries, f)
        for cpu in cpus:
            out = os.path.join(tmp, cpu)
            os.makedirs(out)
            compile_env = dict(env, NUMBA_CACHE_DIR=os.path.join(tmp, "numba-cache-" + cpu))
            started = time.monotonic()
            fp = json.loads(_child(COMPILE, [sigs, out, cpu], compile_env, f"compiling for {cpu}"
                                   ).strip().splitlines()[-1])["fingerprint"]
            log(f"compiled for {cpu} ({time.monotonic() - started:.1f} s)")
            remove_older(target, cpu)
            built, made = aot.paths(fp, out, cpu), aot.paths(fp, target, cpu)
            # The modules first, then the table: its presence says the build is complete.
            for src, dst in list(zip(built, made))[1:] + [(built[0], made[0])]:
                if os.path.exists(src):
                    shutil.copyfile(src, dst + ".tmp")
                    os.replace(dst + ".tmp", dst)
            written += [p for p in made if os.path.exists(p)]
    return written


def main(argv: list[str] | None = None) -> int:
    from codec import aot

    parser = argparse.ArgumentParser(prog="python -m excamera.aot_build", description=__doc__.split("\n")[0])
    parser.add_argument("--dir", default=None, help=f"where to write it (default: ${aot.ENV_DIR} or "
                                                     "the codec's __pycache__)")
    parser.add_argument("--only", default=None,
                        help="comma-separated kernels (module.name) to compile; default: all")
    parser.add_argument("--cpu", action="append", choices=(aot.HOST, *aot.PORTABLE), default=None,
                        help="the CPU to compile for: this machine's (host, the default) or one a "
                             "fleet runs (an image's: haswell, every x86-64 AWS Lambda host); repeatable")
    parser.add_argument("--if-stale", action="store_true",
                        help="do nothing if a module for the current sources is already there")
    args = parser.parse_args(argv)
    target = args.dir or aot.directory()
    cpus = tuple(dict.fromkeys(args.cpu or [aot.HOST]))
    if args.if_stale and all(os.path.exists(aot.paths(aot.fingerprint(c), target, c)[0]) for c in cpus):
        print(f"aot_build: the compiled kernels in {target} are current", file=sys.stderr)
        return 0
    if not aot.wanted():
        print(f"aot_build: note: this environment turns the compiled kernels off "
              f"({aot.ENV_SWITCH}=0 or a NUMBA_ setting); building them anyway", file=sys.stderr)
    started = time.monotonic()
    written = build(target, args.only.split(",") if args.only else None,
                    log=lambda m: print(f"aot_build: {m}", file=sys.stderr), cpus=cpus)
    size = sum(os.path.getsize(p) for p in written)
    names = ", ".join(p[:-len(".json")] + "*" for p in written if p.endswith(".json"))
    print(f"aot_build: {names} ({size >> 10} KiB) in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
