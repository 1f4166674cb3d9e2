"""The committed generated modules match the .proto files (run `make protos` when this fails)."""

import hashlib
import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
SOURCES = sorted(PROTOS.glob("*.proto"))


def test_stamp_lists_every_proto_with_its_digest():
    stamp = {}
    for line in (PROTOS / "PROTOS.sha256").read_text().splitlines():
        digest, name = line.split()
        stamp[name] = digest
    actual = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in SOURCES}
    assert stamp == actual, "protos/*.proto changed since the modules were generated: run `make protos`"


def test_generated_modules_present_and_newer_than_nothing():
    for p in SOURCES:
        assert (PROTOS / f"{p.stem}_pb2.py").exists(), f"{p.stem}_pb2.py missing: run `make protos`"
        if "service " in p.read_text():
            assert (PROTOS / f"{p.stem}_pb2_grpc.py").exists()


def _generated_version() -> str:
    text = (PROTOS / "coordinator_pb2_grpc.py").read_text()
    return re.search(r"GRPC_GENERATED_VERSION = '([^']+)'", text).group(1)


def test_regenerating_gives_the_committed_modules(tmp_path):
    if importlib.util.find_spec("grpc_tools") is None:
        pytest.skip("grpcio-tools not installed (pip install -e '.[protos]'); the digest stamp test still ran")

    from importlib.metadata import version

    if version("grpcio-tools") != _generated_version():
        pytest.skip(f"grpcio-tools {version('grpcio-tools')} is not the pinned {_generated_version()}")
    (tmp_path / "protos").mkdir()
    for p in SOURCES:
        shutil.copy(p, tmp_path / "protos" / p.name)
    names = [f"protos/{p.name}" for p in SOURCES]
    services = [n for n, p in zip(names, SOURCES) if "service " in p.read_text()]
    for out, files in (("--python_out=.", names), ("--grpc_python_out=.", services)):
        subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I.", out, *files], cwd=tmp_path, check=True)
    for gen in sorted((tmp_path / "protos").glob("*_pb2*.py")):
        assert gen.read_bytes() == (PROTOS / gen.name).read_bytes(), f"{gen.name} is stale: run `make protos`"
