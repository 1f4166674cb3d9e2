"""The Lambda image ``excamera lambda package`` writes can be built: its pinned requirements
resolve, as binary wheels, for the base image's platform (glibc) and Python, and the Dockerfile
uses the package manager of the distribution its base runs.

pip resolves against PyPI (reachable from CI); no container engine is needed. What stays
unchecked without one: that the base tag exists and runs the stated glibc and Python, that gcc
installs from the AL2023 repositories, that ``excamera.aot_build`` and the warm-up succeed inside
the image, and that the handler starts under the Lambda runtime interface.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from common import run_cli

#: What each Lambda Python base runs (AWS's Lambda runtimes page): the distribution's glibc and
#: its package manager. Python 3.8-3.11 are Amazon Linux 2; 3.12 and later Amazon Linux 2023.
BASES = {
    "public.ecr.aws/lambda/python:3.11": ((2, 26), "yum"),
    "public.ecr.aws/lambda/python:3.12": ((2, 34), "dnf"),
    "public.ecr.aws/lambda/python:3.13": ((2, 34), "dnf"),
}
MANAGERS = ("yum", "dnf", "microdnf", "apt-get", "apk")


def platforms(glibc: tuple[int, int]) -> list[str]:
    """Every manylinux tag a glibc of ``glibc`` accepts (pip does not widen ``--platform
    manylinux_2_N`` to older tags itself)."""
    tags = [f"manylinux_2_{n}_x86_64" for n in range(glibc[1], 4, -1)]
    tags += ["manylinux2014_x86_64"] if glibc >= (2, 17) else []
    tags += ["manylinux2010_x86_64"] if glibc >= (2, 12) else []
    return tags + ["manylinux1_x86_64"]


def pip_download(requirements: list[str], glibc: tuple[int, int], python: str, dest) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--no-deps",
           "--implementation", "cp", "--python-version", python, "-d", str(dest)]
    for tag in platforms(glibc):
        cmd += ["--platform", tag]
    return subprocess.run(cmd + requirements, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def context(tmp_path_factory):
    out = tmp_path_factory.mktemp("image") / "ctx"
    p = run_cli("lambda", "package", "-o", out)
    assert p.returncode == 0, p.stderr
    docker = (out / "Dockerfile").read_text()
    reqs = [r for r in (out / "requirements.txt").read_text().split() if r]
    return docker, reqs


def test_base_is_amazon_linux_2023_and_uses_its_package_manager(context):
    docker, _ = context
    (base,) = re.findall(r"^FROM\s+(\S+)", docker, re.M)
    assert base in BASES, f"{base}: not a base this test knows the glibc and package manager of"
    glibc, manager = BASES[base]
    assert glibc >= (2, 28), f"{base} runs glibc {glibc}: too old for the pinned wheels"
    used = {m for line in re.findall(r"^RUN\s+(.*)$", docker, re.M)
            for m in re.findall(r"(?:^|&&|;)\s*(\S+)\s+(?:install|remove|clean)\b", line) if m in MANAGERS}
    assert used == {manager}, f"{base} uses {manager}; the Dockerfile runs {sorted(used)}"
    assert "dnf install -y gcc" in docker and "dnf clean all" in docker


def test_pinned_requirements_resolve_for_the_image(context, tmp_path):
    docker, reqs = context
    base = re.search(r"^FROM\s+(\S+)", docker, re.M)[1]
    python = base.rsplit(":", 1)[1]
    from awslambda import package
    from excamera.commands import lambda_

    assert python == package.IMAGE_PYTHON and BASES[base][0] == package.IMAGE_GLIBC
    assert lambda_.BASE_IMAGE == package.BASE_IMAGE    # the CLI's help repeats it: no drift
    names = {r.split("==")[0] for r in reqs}
    assert {"av", "numpy", "numba", "llvmlite"} <= names
    p = pip_download(reqs, BASES[base][0], python, tmp_path / "ok")
    assert p.returncode == 0, p.stderr[-3000:]
    got = {f.name.split("-")[0].lower().replace("_", "-") for f in (tmp_path / "ok").iterdir()}
    assert {"av", "numpy", "numba", "llvmlite"} <= got
    assert all(f.suffix == ".whl" for f in (tmp_path / "ok").iterdir())


def test_the_old_base_could_not_install_them(context, tmp_path):
    """The check can fail: the pinned av has no wheel for Amazon Linux 2 (glibc 2.26, Python 3.11),
    the base this package used to name."""
    _, reqs = context
    av = [r for r in reqs if r.startswith("av==")]
    p = pip_download(av, (2, 26), "3.11", tmp_path / "old")
    assert p.returncode != 0 and "av" in p.stderr
