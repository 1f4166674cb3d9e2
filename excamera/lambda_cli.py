"""The AWS Lambda subcommands and the ``--backend`` options, registered into ``excamera``::

    excamera lambda package -o DIR
    excamera lambda deploy --function NAME --role ARN --image URI [--memory MB] [--timeout S]
                           [--ephemeral-mb MB] [--max-event-age S] [--region R]
    --backend local|lambda --function NAME --region R[,R...] --public-address HOST:PORT
    --listen HOST:PORT [--memory MB]    (on excamera encode and excamera coordinator serve)

Only argparse is imported here; boto3 and the runtime load when a command runs.
"""

from __future__ import annotations

import argparse
import os
import sys

#: Defaults of a deployed function (the worker's configuration).
MEMORY_MB = 3008
TIMEOUT_S = 900
EPHEMERAL_MB = 2048
MAX_EVENT_AGE_S = 120
BASE_IMAGE = "public.ecr.aws/lambda/python:3.11"
HANDLER = "worker.lambda_handler.handler"
#: Packages only the tests use: never in a worker image.
TEST_ONLY = {"pytest", "hypothesis", "moto", "flask", "flask-cors", "awslambdaric", "grpcio-tools"}


def _address(text: str) -> str:
    from excamera.runtime_cli import _address as check

    return check(text)


def _range(lo: int, hi: int):
    from excamera.cli import int_in

    return int_in(lo, hi)


#: Seconds after the first accepted invocation by which some worker must have connected.
CONNECT_DEADLINE_S = 60


def add_backend_args(p, *, listen: bool = True) -> None:
    """``--backend`` and its Lambda options on a command that launches workers."""
    g = p.add_argument_group("workers on AWS Lambda")
    g.add_argument("--backend", choices=("local", "lambda"), default="local",
                   help="where workers run: local processes (default) or AWS Lambda invocations")
    g.add_argument("--function", metavar="NAME", help="with --backend lambda: the deployed worker function")
    g.add_argument("--region", metavar="R[,R...]",
                   help="with --backend lambda: region(s) to invoke in, round-robin (default: boto3's)")
    g.add_argument("--public-address", type=_address, metavar="HOST:PORT",
                   help="with --backend lambda: the address workers dial (this machine's public "
                        "address; port 0: the port bound)")
    if listen:
        g.add_argument("--listen", type=_address, default="0.0.0.0:0", metavar="HOST:PORT",
                       help="with --backend lambda: where the coordinator listens (default 0.0.0.0:0)")
    g.add_argument("--memory", type=_range(128, 10240), default=MEMORY_MB, metavar="MB",
                   help=f"with --backend lambda: the function's memory, for the cost (default {MEMORY_MB})")
    g.add_argument("--connect-deadline", type=_range(1, 900), default=CONNECT_DEADLINE_S, metavar="S",
                   help="with --backend lambda: fail the job when no worker has connected S seconds after "
                        f"the first accepted invocation (a --public-address they cannot reach; default "
                        f"{CONNECT_DEADLINE_S}: a container image's first cold start can take tens of seconds)")


def backend_error(args) -> str | None:
    """Why the backend options do not fit together (a usage error), or None."""
    if getattr(args, "backend", "local") != "lambda":
        for flag in ("function", "region", "public_address"):
            if getattr(args, flag, None):
                return f"--{flag.replace('_', '-')} goes with --backend lambda"
        return None
    if not args.function:
        return "--backend lambda needs --function NAME"
    if not args.public_address:
        return "--backend lambda needs --public-address HOST:PORT (the address Lambda workers dial)"
    return None


def regions(args) -> list[str]:
    if args.region:
        from coordinator.lambda_launcher import parse_regions

        return parse_regions(args.region)
    import boto3

    region = boto3.session.Session().region_name
    if not region:
        from excamera.cli import CliError

        raise CliError("--backend lambda: no region: give --region R or set AWS_REGION")
    return [region]


def launcher_factory(args):
    """The ``launcher_factory(bundle)`` for ``--backend lambda``."""
    from coordinator.lambda_launcher import LambdaLauncher

    chosen = regions(args)

    def factory(bundle):
        return LambdaLauncher(bundle, args.function, chosen, memory_mb=args.memory,
                              connect_deadline_s=float(getattr(args, "connect_deadline", CONNECT_DEADLINE_S)))

    return factory


def register(sub) -> None:
    lam = sub.add_parser("lambda", help="package and deploy the worker function for AWS Lambda")
    lam_sub = lam.add_subparsers(dest="action", metavar="ACTION", required=True)
    pk = lam_sub.add_parser("package", help="write a container image build context",
                            description=f"Write DIR/Dockerfile (based on {BASE_IMAGE}), the project's "
                                        f"wheel, pinned requirements from this environment, and a warm-up "
                                        f"step that compiles the numba kernels into the image.")
    pk.add_argument("-o", "--output", required=True, metavar="DIR")
    pk.set_defaults(func=cmd_package)
    dp = lam_sub.add_parser("deploy", help="create or update the worker function",
                            description="Create or update the function from a container image, set its "
                                        "memory, timeout, ephemeral storage, no retries and a maximum "
                                        "event age, and wait until it is active.")
    dp.add_argument("--function", required=True, metavar="NAME")
    dp.add_argument("--role", required=True, metavar="ARN", help="the function's execution role")
    dp.add_argument("--image", required=True, metavar="URI", help="the image in ECR")
    dp.add_argument("--memory", type=_range(128, 10240), default=MEMORY_MB, metavar="MB")
    dp.add_argument("--timeout", type=_range(1, 900), default=TIMEOUT_S, metavar="S")
    dp.add_argument("--ephemeral-mb", type=_range(512, 10240), default=EPHEMERAL_MB, metavar="MB")
    dp.add_argument("--max-event-age", type=_range(60, 21600), default=MAX_EVENT_AGE_S, metavar="S",
                    help="drop events not started within S seconds (default %(default)s)")
    dp.add_argument("--region", metavar="R", help="default: boto3's configuration")
    dp.set_defaults(func=cmd_deploy)


# -- package --------------------------------------------------------------------------------------

def _project_root() -> str:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not os.path.exists(os.path.join(root, "setup.cfg")):
        from excamera.cli import CliError

        raise CliError(f"lambda package: needs the project's source tree (no setup.cfg in {root})")
    return root


def _requirements(root: str) -> list[str]:
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
            from excamera.cli import CliError

            raise CliError(f"lambda package: {req.name} is not installed here; install the project first") from None
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
RUN yum install -y -q gcc && python -m excamera.aot_build --cpu {cpu} && yum remove -y -q gcc && yum clean all
# And numba's cache for the same CPU, for a host without its features: the handler copies it to
# /tmp on a fresh sandbox (worker.lambda_handler.SHIPPED_CACHE).
RUN NUMBA_CACHE_DIR={cache} python -m worker.lambda_warmup && chmod -R a+rX {cache}
CMD ["{handler}"]
"""


def _packages(root: str) -> list[str]:
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(root, "setup.cfg"))
    return [line.strip() for line in cfg.get("options", "packages").splitlines() if line.strip()]


def cmd_package(args: argparse.Namespace) -> int:
    import shutil
    import subprocess

    from excamera.cli import CliError
    from worker.lambda_handler import CPU_NAME, SHIPPED_CACHE

    root = _project_root()
    out = args.output
    if os.path.exists(out) and os.listdir(out):
        raise CliError(f"-o {out}: not empty; give a new directory")
    os.makedirs(os.path.join(out, "wheels"), exist_ok=True)
    requirements = _requirements(root)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="excamera-wheel-") as src:
        # Build from a copy of what the wheel holds: no build/ or egg-info left in the tree.
        for name in ("setup.cfg", "pyproject.toml", "README.md", "LICENSE"):
            if os.path.exists(os.path.join(root, name)):
                shutil.copy(os.path.join(root, name), src)
        for package in sorted({p.split(".")[0] for p in _packages(root)}):  # subpackages come along
            shutil.copytree(os.path.join(root, package), os.path.join(src, package),
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.nbi", "*.nbc"))
        build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                                "--quiet", "-w", os.path.abspath(os.path.join(out, "wheels")), src],
                               capture_output=True, text=True)
    if build.returncode != 0:
        lines = [ln.strip() for ln in build.stderr.splitlines() if ln.strip()] or ["no output"]
        last = next((ln for ln in reversed(lines) if "error" in ln.lower() and "hint" not in ln), lines[-1])
        shutil.rmtree(out, ignore_errors=True)
        raise CliError(f"lambda package: pip wheel failed: {last}")
    with open(os.path.join(out, "requirements.txt"), "w") as f:
        f.write("\n".join(requirements) + "\n")
    with open(os.path.join(out, "Dockerfile"), "w") as f:
        f.write(DOCKERFILE.format(base=BASE_IMAGE, cache=SHIPPED_CACHE, handler=HANDLER, cpu=CPU_NAME))
    wheels = os.listdir(os.path.join(out, "wheels"))
    print(f"{out}: Dockerfile, requirements.txt ({len(requirements)} pinned), wheels/{', '.join(wheels)}; "
          f"build with: docker build --platform linux/amd64 -t excamera-worker {out}", file=sys.stderr)
    return 0


# -- deploy ---------------------------------------------------------------------------------------

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
                               Description="excamera worker (worker.lambda_handler.handler)",
                               Architectures=["x86_64"], **config)
        client.get_waiter("function_active_v2").wait(FunctionName=function, WaiterConfig=wait)
    client.put_function_event_invoke_config(FunctionName=function, MaximumRetryAttempts=0,
                                            MaximumEventAgeInSeconds=max_event_age)
    return "updated" if exists else "created"


def cmd_deploy(args: argparse.Namespace) -> int:
    from excamera.cli import CliError

    import boto3
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, WaiterError

    try:
        client = boto3.session.Session().client("lambda", region_name=args.region)
        how = deploy(client, function=args.function, role=args.role, image=args.image, memory=args.memory,
                     timeout=args.timeout, ephemeral_mb=args.ephemeral_mb, max_event_age=args.max_event_age)
    except NoCredentialsError:
        raise CliError(f"lambda deploy {args.function}: no AWS credentials found") from None
    except ClientError as e:
        err = e.response.get("Error", {})
        raise CliError(f"lambda deploy {args.function}: {err.get('Code', '?')}: "
                       f"{' '.join((err.get('Message') or '').split())}") from None
    except WaiterError as e:
        raise CliError(f"lambda deploy {args.function}: it did not become active: {e}") from None
    except BotoCoreError as e:
        raise CliError(f"lambda deploy {args.function}: {e}") from None
    print(f"lambda function {args.function}: {how} from {args.image}, {args.memory} MB, {args.timeout} s, "
          f"retries 0, maximum event age {args.max_event_age} s; active", file=sys.stderr)
    return 0
