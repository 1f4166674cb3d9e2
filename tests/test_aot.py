"""codec.aot and excamera.aot_build: kernels compiled ahead of time, loaded without numba.

One build runs here, into a temporary directory, with the decoder's kernels only (the whole set
takes about two minutes), for this machine's CPU and (on x86-64) for a named one, as a Lambda
image's: processes pointed at it decode without importing numba, and the encoder's kernels, not
in it, run under numba's JIT in the same process with the same output.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig

import numpy as np
import pytest

from codec import aot
from common import ROOT, CLIPS, VECTORS, md5_path, parse_md5, prepare_numba_cache_in_child, subprocess_env

DECODER_KERNELS = ["codec.boolcoder.bd_init", "codec.boolcoder.bd_read", "codec.boolcoder.bd_literal",
                   "codec.boolcoder.bd_overrun", "codec.decoder.decode_pixels",
                   "codec.decoder._prepare_edges", "codec.modes.read_modes", "codec.tokens.read_tokens",
                   "codec.tokens.read_coeff_updates"]

needs_compiler = pytest.mark.skipif(
    shutil.which(sysconfig.get_config_var("CC").split()[0] if sysconfig.get_config_var("CC") else "cc")
    is None, reason="no C compiler: numba.pycc needs one (apt-get install gcc)")
#: The named CPU built beside this machine's (what a Lambda image is built for), on x86-64.
NAMED = "haswell" if platform.machine() == "x86_64" else None


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> str:
    target = str(tmp_path_factory.mktemp("aot"))
    cpus = ["--cpu", "host"] + (["--cpu", NAMED] if NAMED else [])
    proc = subprocess.run([sys.executable, "-m", "excamera.aot_build", "--dir", target,
                           "--only", ",".join(DECODER_KERNELS), *cpus],
                          cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr
    return target


def _env(directory: str, **extra) -> dict:
    env = {k: v for k, v in subprocess_env().items() if not k.startswith("NUMBA_") and k != aot.ENV_SWITCH}
    env.update({aot.ENV_DIR: directory}, **extra)
    return env


# A process decodes vectors and prints, per vector, its frames' md5s, then what it loaded.
DECODE = r"""
import hashlib, json, sys
from codec.decoder import Decoder
from codec.ivf import IvfReader
import codec.aot, codec.jit
out = {}
for path in sys.argv[1:]:
    with IvfReader(path) as reader:
        d, md5s = Decoder(), []
        while (f := reader.read_frame()) is not None:
            p = d.decode(f.data)
            if p is not None:
                md5s.append(hashlib.md5(p.y.tobytes() + p.u.tobytes() + p.v.tobytes()).hexdigest())
    out[path] = md5s
print(json.dumps({"md5s": out, "aot": codec.jit.AOT, "cpu": codec.aot.CPU, "numba": "numba" in sys.modules}))
"""


def _run(code: str, args: list[str], env: dict) -> dict:
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@needs_compiler
def test_the_compiled_decoder_decodes_every_vector_as_libvpx_without_importing_numba(built):
    got = _run(DECODE, [str(v) for v in VECTORS], _env(built))
    assert got["aot"] is True and got["numba"] is False and got["cpu"] == "host"  # preferred
    for v in VECTORS:
        assert got["md5s"][str(v)] == [line.md5 for line in parse_md5(md5_path(v))], v.name


@needs_compiler
def test_a_module_for_other_sources_or_numba_settings_is_not_used(built, tmp_path):
    vector = [str(VECTORS[0])]
    # Another fingerprint (other sources, numba, numpy, Python or CPU): not found.
    for name in os.listdir(built):
        shutil.copy(os.path.join(built, name), tmp_path / re.sub("_[0-9a-f]{20}", "_" + "0" * 20, name))
    assert _run(DECODE, vector, _env(str(tmp_path)))["aot"] is False
    for extra in ({"NUMBA_BOUNDSCHECK": "1"}, {"NUMBA_DISABLE_JIT": "1"}, {aot.ENV_SWITCH: "0"}):
        got = _run(DECODE, vector, _env(built, **extra))
        assert got["aot"] is False and got["numba"] is True, extra
    assert _run(DECODE, vector, _env(built, NUMBA_CACHE_DIR=str(tmp_path / "cache")))["aot"] is True


# Encode a clip in one process: the encoder's kernels are not in the module built here, so they
# run under numba's JIT, calling the boolean coder's kernels, which the module does have.
ENCODE = r"""
import hashlib, json, sys
import codec.jit
from excamera.cli import main
rc = main(["vp8enc", sys.argv[1], "-o", sys.argv[2], "--frames", "3"])
with open(sys.argv[2], "rb") as f:
    data = f.read()
print(json.dumps({"rc": rc, "md5": hashlib.md5(data).hexdigest(), "aot": codec.jit.AOT,
                  "numba": "numba" in sys.modules}))
"""


@needs_compiler
def test_kernels_the_module_lacks_run_under_numba_in_the_same_process_with_the_same_output(built, tmp_path):
    clip = str(CLIPS[0])
    mixed = _run(ENCODE, [clip, str(tmp_path / "mixed.ivf")], _env(built))
    jit = _run(ENCODE, [clip, str(tmp_path / "jit.ivf")], _env(built, **{aot.ENV_SWITCH: "0"}))
    assert mixed["rc"] == jit["rc"] == 0
    assert mixed["aot"] is True and jit["aot"] is False
    assert mixed["numba"] is True  # the encoder's kernels needed it
    assert mixed["md5"] == jit["md5"]


# Calls the compiled entry points could not take (they check nothing themselves and would crash)
# go to numba instead, and give what numba gives: the same bits from a strided copy of the data.
WRONG_TYPES = r"""
import json, sys
import numpy as np
import codec.jit
from codec.boolcoder import STATE_SIZE, bd_init, bd_read
data = np.frombuffer(bytes(range(7, 200)), np.uint8)
strided = np.zeros(2 * len(data), np.uint8)[::2]
strided[:] = data
out, numba_loaded = [], []
for d in (data, strided):
    state = np.zeros(STATE_SIZE, np.int64)
    bd_init(state, d, 0, len(d))
    out.append([int(bd_read(state, d, p)) for p in (1, 128, 255, 7, 200) * 8])
    numba_loaded.append("numba" in sys.modules)
print(json.dumps({"out": out, "aot": codec.jit.AOT, "numba": numba_loaded}))
"""


@needs_compiler
def test_calls_of_other_types_go_to_numba_and_agree(built):
    got = _run(WRONG_TYPES, [], _env(built))
    assert got["aot"] is True and got["numba"] == [False, True]
    assert got["out"][0] == got["out"][1]
    assert len(set(got["out"][0])) > 1


def test_numba_settings_and_the_switch_turn_the_module_off():
    assert aot.wanted({})
    assert aot.wanted({"NUMBA_CACHE_DIR": "/tmp/x", "PATH": "/bin"})
    assert not aot.wanted({aot.ENV_SWITCH: "0"})
    for name in ("NUMBA_DISABLE_JIT", "NUMBA_BOUNDSCHECK", "NUMBA_CPU_NAME", "NUMBA_OPT"):
        assert not aot.wanted({name: "1"}), name


def test_the_fingerprint_follows_the_codec_sources(tmp_path, monkeypatch):
    copy = tmp_path / "codec"
    shutil.copytree(aot.CODEC_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(aot, "CODEC_DIR", str(copy))
    before = aot.fingerprint()
    assert before == aot.fingerprint() and len(before) == 20
    with open(copy / "loopfilter.py", "a") as f:
        f.write("\n# one more line\n")
    assert aot.fingerprint() != before


def test_argument_checks_take_only_what_numba_would_type_the_same():
    c_u8 = aot.arg_check(["array", "uint8", 2, "C", False])
    a = np.zeros((4, 6), np.uint8)
    assert c_u8(a)
    assert not c_u8(a.astype(np.int8))            # dtype
    assert not c_u8(a[0])                          # ndim
    assert not c_u8(a[:, ::2])                     # not contiguous
    assert not c_u8(a.T)                           # Fortran order
    a.flags.writeable = False
    assert not c_u8(a)                             # the kernel may write to it
    assert aot.arg_check(["array", "uint8", 2, "C", True])(a)
    assert not c_u8(list(range(4)))
    any_layout = aot.arg_check(["array", "int16", 2, "A", False])
    assert any_layout(np.zeros((4, 6), np.int16)[:, ::2])
    unaligned = np.frombuffer(bytearray(17), np.int16, count=8, offset=1)
    assert not aot.arg_check(["array", "int16", 1, "A", True])(unaligned)

    i64 = aot.arg_check(["scalar", "int64"])
    assert i64(5) and i64(np.int64(-3)) and i64(-(1 << 63))
    assert not i64(True) and not i64(1 << 63) and not i64(2.0) and not i64(np.int32(5))
    boolean = aot.arg_check(["scalar", "bool"])
    assert boolean(True) and boolean(np.bool_(False)) and not boolean(1)
    assert aot.arg_check(["scalar", "uint8"])(np.uint8(3)) and not aot.arg_check(["scalar", "uint8"])(3)
    assert aot.arg_check(["scalar", "float64"])(0.5) and not aot.arg_check(["scalar", "float64"])(1)
    with pytest.raises(ValueError):
        aot.arg_check(["tuple", []])


def test_a_build_writes_its_modules_and_their_table_under_the_current_fingerprint(built):
    table, with_nrt, without_nrt = aot.paths(aot.fingerprint(), built)
    named = aot.paths(aot.fingerprint(NAMED), built, NAMED) if NAMED else ()
    assert sorted(os.listdir(built)) == sorted(os.path.basename(p) for p in (table, with_nrt, without_nrt, *named))
    with open(table) as f:
        entries = json.load(f)
    # decode_pixels uses numba's runtime, the boolean decoder's kernels do not
    assert {e["nrt"] for e in entries} == {True, False}
    kernels = {e["kernel"] for e in entries}
    assert kernels <= set(DECODER_KERNELS)
    assert {"codec.decoder.decode_pixels", "codec.tokens.read_tokens", "codec.modes.read_modes"} <= kernels
    assert aot.fingerprint(NAMED or "haswell") != aot.fingerprint()


def _named_only(built: str, tmp_path) -> str:
    """A directory with the named CPU's module alone, as a Lambda image holds it."""
    if NAMED is None:
        pytest.skip("a module for a named CPU is built on x86-64 only")
    if not aot.runs_here(NAMED):
        pytest.skip(f"this CPU lacks {NAMED}'s features: {sorted(set(aot.PORTABLE[NAMED]) - aot.cpu_flags())}")
    only = tmp_path / "named"
    only.mkdir()
    for name in os.listdir(built):
        if name.startswith(f"{aot.PREFIX}{NAMED}_"):
            shutil.copy(os.path.join(built, name), only / name)
    return str(only)


@needs_compiler
def test_a_module_for_a_named_cpu_is_used_where_this_machine_s_is_missing(built, tmp_path):
    got = _run(DECODE, [str(v) for v in VECTORS], _env(_named_only(built, tmp_path)))
    assert got["aot"] is True and got["cpu"] == NAMED and got["numba"] is False
    for v in VECTORS:
        assert got["md5s"][str(v)] == [line.md5 for line in parse_md5(md5_path(v))], v.name


def test_a_named_cpu_s_module_runs_only_where_the_cpu_has_its_features():
    flags = set(aot.PORTABLE["haswell"]) | {"fpu", "sse2"}
    assert aot.runs_here("haswell", flags, "x86_64")
    assert not aot.runs_here("haswell", flags - {"avx2"}, "x86_64")
    assert not aot.runs_here("haswell", flags, "aarch64")
    assert not aot.runs_here("pentium", flags, "x86_64")


@needs_compiler
def test_the_lambda_handler_loads_the_image_s_compiled_kernels_and_leaves_numba_alone(built, tmp_path):
    from awslambda.handler import CPU_NAME
    assert CPU_NAME in aot.PORTABLE  # the image compiles for the CPU the handler pins numba to
    shipped = tmp_path / "shipped"
    (shipped / "codec").mkdir(parents=True)
    named = _named_only(built, tmp_path)
    got = prepare_numba_cache_in_child(shipped, tmp_path / "cache", **{aot.ENV_DIR: named})
    assert got["compiled"] == NAMED and got["numba"] is False
    assert got["cpu_name"] is None and not got["copied"]  # no shipped cache needed
    assert got["cache"] == str(tmp_path / "cache")         # still set: for kernels not in the module


def test_a_build_replaces_the_modules_for_its_cpu_only(tmp_path):
    from excamera.aot_build import remove_older
    names = ["excamera_aot_host_" + "1" * 20 + ".json", "excamera_aot_host_" + "1" * 20 + "_nonrt.so",
             "excamera_aot_haswell_" + "2" * 20 + ".json", "excamera_aot_" + "3" * 20 + ".json",
             "unrelated.pyc"]
    for n in names:
        (tmp_path / n).write_text("x")
    remove_older(str(tmp_path), "host")
    assert sorted(os.listdir(tmp_path)) == sorted([names[2], names[4]])
    remove_older(str(tmp_path), "haswell")
    assert os.listdir(tmp_path) == [names[4]]
