"""``excamera certs init DIR``: a deployment's CA and its server and client certificates."""

from __future__ import annotations

import argparse

from excamera.commands.base import CliError, command


def register(sub) -> None:
    ce = sub.add_parser("certs", help="make a deployment's certificates")
    ce_sub = ce.add_subparsers(dest="action", metavar="ACTION", required=True)
    init = command(ce_sub, "init", cmd_certs_init, help="write a new CA and server/client certificates into DIR",
                   description="Write ca.pem ca.key server.pem server.key client.pem "
                               "client.key. Give workers only ca.pem client.pem client.key.")
    init.add_argument("dir", metavar="DIR")
    init.add_argument("--host", action="append", default=[], metavar="NAME",
                      help="a name or address clients dial (repeatable; localhost, 127.0.0.1 and ::1 "
                           "are always included)")
    init.add_argument("--force", action="store_true", help="replace existing files")


def cmd_certs_init(args: argparse.Namespace) -> int:
    from security import tls

    hosts = list(tls.DEFAULT_HOSTS) + [h for h in args.host if h not in tls.DEFAULT_HOSTS]
    try:
        written = tls.write(tls.generate(hosts), args.dir, overwrite=args.force)
    except (tls.CertError, OSError) as e:
        raise CliError(f"{args.dir}: {getattr(e, 'strerror', None) or e}") from None
    print(f"wrote {', '.join(p.name for p in written)} in {args.dir}; give workers only "
          f"ca.pem client.pem client.key")
    return 0
