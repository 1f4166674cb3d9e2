"""``excamera lambda package | deploy``: the worker function for AWS Lambda. This module parses
the flags; the work is ``awslambda.package``'s::

    excamera lambda package -o DIR
    excamera lambda deploy --function NAME --role ARN --image URI [--memory MB] [--timeout S]
                           [--ephemeral-mb MB] [--max-event-age S] [--region R]

(The ``--backend lambda`` options of the commands that run jobs are ``excamera.commands.base``'s.)
Only argparse is imported here; boto3 and the packaging load when a command runs.
"""

from __future__ import annotations

import argparse
import os
import sys

from excamera.commands.base import MEMORY_MB, CliError, command, int_in

#: ``awslambda.package``'s defaults, repeated so that --help imports nothing.
TIMEOUT_S = 900
EPHEMERAL_MB = 2048
MAX_EVENT_AGE_S = 120
BASE_IMAGE = "public.ecr.aws/lambda/python:3.12"


def register(sub) -> None:
    lam = sub.add_parser("lambda", help="package and deploy the worker function for AWS Lambda")
    lam_sub = lam.add_subparsers(dest="action", metavar="ACTION", required=True)
    pk = command(lam_sub, "package", cmd_package, help="write a container image build context",
                 description=f"Write DIR/Dockerfile (based on {BASE_IMAGE}), the project's "
                             f"wheel, pinned requirements from this environment, and a warm-up "
                             f"step that compiles the numba kernels into the image.")
    pk.add_argument("-o", "--output", required=True, metavar="DIR")
    dp = command(lam_sub, "deploy", cmd_deploy, help="create or update the worker function",
                 description="Create or update the function from a container image, set its "
                             "memory, timeout, ephemeral storage, no retries and a maximum "
                             "event age, and wait until it is active.")
    dp.add_argument("--function", required=True, metavar="NAME")
    dp.add_argument("--role", required=True, metavar="ARN", help="the function's execution role")
    dp.add_argument("--image", required=True, metavar="URI", help="the image in ECR")
    dp.add_argument("--memory", type=int_in(128, 10240), default=MEMORY_MB, metavar="MB")
    dp.add_argument("--timeout", type=int_in(1, 900), default=TIMEOUT_S, metavar="S")
    dp.add_argument("--ephemeral-mb", type=int_in(512, 10240), default=EPHEMERAL_MB, metavar="MB")
    dp.add_argument("--max-event-age", type=int_in(60, 21600), default=MAX_EVENT_AGE_S, metavar="S",
                    help="drop events not started within S seconds (default %(default)s)")
    dp.add_argument("--region", metavar="R", help="default: boto3's configuration")


def cmd_package(args: argparse.Namespace) -> int:
    from awslambda.package import PackageError, write_build_context

    out = args.output
    if os.path.exists(out) and os.listdir(out):
        raise CliError(f"-o {out}: not empty; give a new directory")
    try:
        pinned, wheels = write_build_context(out)
    except PackageError as e:
        raise CliError(f"lambda package: {e}") from None
    print(f"{out}: Dockerfile, requirements.txt ({len(pinned)} pinned), wheels/{', '.join(wheels)}; "
          f"build with: docker build --platform linux/amd64 -t excamera-worker {out}", file=sys.stderr)
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, WaiterError

    from awslambda.package import deploy

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
