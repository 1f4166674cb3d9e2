"""The Lambda worker's packaging and deployment, without the command line: a container image
build context (Dockerfile, the project's wheel, requirements pinned from this environment) and
create-or-update of the function through boto3. ``excamera lambda package|deploy``
(``excamera.commands.lambda_``) parses its flags and calls these.
"""

from __future__ import annotations

import os
import sys

from foundation.errors import ExcameraError

#: Defaults of a deployed function (the worker's configuration).
MEMORY_MB = 3008
TIMEOUT_S = 900
EPHEMERAL_MB = 2048
MAX_EVENT_AGE_S = 120
#: The image's Python and the glibc of the distribution its base runs: Lambda's Python 3.12 and later
#: bases are Amazon Linux 2023 (glibc 2.34, dnf); 3.11 and earlier Amazon Linux 2 (glibc 2.26), too old
#: for the manylinux_2_28 wheels of av and numpy (tests/test_lambda_image.py resolves them).
IMAGE_PYTHON = "3.12"
IMAGE_GLIBC = (2, 34)
BASE_IMAGE = f"public.ecr.aws/lambda/python:{IMAGE_PYTHON}"
HANDLER = "awslambda.handler.handler"
#: Packages only the tests use: never in a worker image.
TEST_ONLY = {"pytest", "hypothesis", "moto", "flask", "flask-cors", "awslambdaric", "grpcio-tools"}


class PackageError(ExcameraError):
    """The build context cannot be written (one line)."""


def project_root() -> str:
    """The source tree this package was loaded from (it must have setup.cfg)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not os.path.exists(os.path.join(root, "setup.cfg")):
        raise PackageError(f"needs the project's source tree (no setup.cfg in {root})")
    return root


def requirements(root: str) -> list[str]:
    """The project's dependencies and theirs, pinned to the versions installed here."""
    import configparser
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(root, "setup.cfg"))
    todo = [line.strip() for line in cfg.get("options", "install_requires", fallback="").splitlines() if line.strip()]
    todo += ["boto3"]  # S3 storage; the base image has one, pin ours
    pinned: dict[str, str] = {}
    while todo:
        req = Requirement(todo.pop())
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(req.name)
        if name in pinned or name in TEST_ONLY:
            continue
        try:
            pinned[name] = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            raise PackageError(f"{req.name} is not installed here; install the project first") from None
        todo += metadata.requires(req.name) or []
    return [f"{n}=={v}" for n, v in sorted(pinned.items())]


DOCKERFILE = """\
# The excamera worker as an AWS Lambda container image (excamera lambda package).
# numba, llvmlite and PyAV together exceed a zip function's 250 MB: hence an image.
FROM {base}
COPY requirements.txt /tmp/build/
RUN pip install --no-cache-dir -r /tmp/build/requirements.txt
COPY wheels/ /tmp/build/wheels/
RUN pip install --no-cache-dir --no-deps /tmp/build/wheels/*.whl && rm -rf /tmp/build
# Compile the kernels ahead of time for the CPU every x86-64 Lambda host runs (codec.aot): a
# sandbox loads them without importing numba. numba.pycc needs a C compiler for the build only.
RUN dnf install -y gcc && python -m excamera.aot_build --cpu {cpu} && dnf remove -y gcc && dnf clean all
# And numba's cache for the same CPU, for a host without its features: the handler copies it to
# /tmp on a fresh sandbox (awslambda.handler.SHIPPED_CACHE).
RUN NUMBA_CACHE_DIR={cache} python -m awslambda.warmup && chmod -R a+rX {cache}
CMD ["{handler}"]
"""


def _packages(root: str) -> list[str]:
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(root, "setup.cfg"))
    return [line.strip() for line in cfg.get("options", "packages").splitlines() if line.strip()]


def build_wheel(root: str, wheels: str) -> None:
    """The project's wheel into ``wheels``, built from a copy of what the wheel holds (no build/
    or egg-info left in the tree); ``PackageError`` with pip's error line."""
    import shutil
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory(prefix="excamera-wheel-") as src:
        for name in ("setup.cfg", "pyproject.toml", "README.md", "LICENSE"):
            if os.path.exists(os.path.join(root, name)):
                shutil.copy(os.path.join(root, name), src)
        for package in sorted({p.split(".")[0] for p in _packages(root)}):  # subpackages come along
            shutil.copytree(os.path.join(root, package), os.path.join(src, package),
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.nbi", "*.nbc"))
        build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                                "--quiet", "-w", os.path.abspath(wheels), src],
                               capture_output=True, text=True)
    if build.returncode != 0:
        lines = [ln.strip() for ln in build.stderr.splitlines() if ln.strip()] or ["no output"]
        last = next((ln for ln in reversed(lines) if "error" in ln.lower() and "hint" not in ln), lines[-1])
        raise PackageError(f"pip wheel failed: {last}")


def write_build_context(out: str) -> tuple[list[str], list[str]]:
    """DIR/Dockerfile, DIR/requirements.txt and DIR/wheels/ for ``docker build``; ``out`` must be
    new or empty (removed again on failure). Returns (the pinned requirements, the wheels)."""
    import shutil

    from awslambda.handler import CPU_NAME, SHIPPED_CACHE

    root = project_root()
    if os.path.exists(out) and os.listdir(out):
        raise PackageError(f"{out}: not empty; give a new directory")
    os.makedirs(os.path.join(out, "wheels"), exist_ok=True)
    pinned = requirements(root)
    try:
        build_wheel(root, os.path.join(out, "wheels"))
    except PackageError:
        shutil.rmtree(out, ignore_errors=True)
        raise
    with open(os.path.join(out, "requirements.txt"), "w") as f:
        f.write("\n".join(pinned) + "\n")
    with open(os.path.join(out, "Dockerfile"), "w") as f:
        f.write(DOCKERFILE.format(base=BASE_IMAGE, cache=SHIPPED_CACHE, handler=HANDLER, cpu=CPU_NAME))
    return pinned, os.listdir(os.path.join(out, "wheels"))


def deploy(client, *, function: str, role: str, image: str, memory: int, timeout: int, ephemeral_mb: int,
           max_event_age: int, waiter_delay: float = 2.0) -> str:
    """Create or update ``function`` and wait until it is active; returns "created" or "updated"."""
    from botocore.exceptions import ClientError

    config = dict(MemorySize=memory, Timeout=timeout, EphemeralStorage={"Size": ephemeral_mb})
    wait = {"Delay": max(1, int(waiter_delay)), "MaxAttempts": 150}
    try:
        client.get_function(FunctionName=function)
        exists = True
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
            raise
        exists = False
    if exists:
        client.update_function_code(FunctionName=function, ImageUri=image)
        client.get_waiter("function_updated_v2").wait(FunctionName=function, WaiterConfig=wait)
        client.update_function_configuration(FunctionName=function, Role=role, **config)
        client.get_waiter("function_updated_v2").wait(FunctionName=function, WaiterConfig=wait)
    else:
        client.create_function(FunctionName=function, Role=role, PackageType="Image", Code={"ImageUri": image},
                               Description="excamera worker (awslambda.handler.handler)",
                               Architectures=["x86_64"], **config)
        client.get_waiter("function_active_v2").wait(FunctionName=function, WaiterConfig=wait)
    client.put_function_event_invoke_config(FunctionName=function, MaximumRetryAttempts=0,
                                            MaximumEventAgeInSeconds=max_event_age)
    return "updated" if exists else "created"
