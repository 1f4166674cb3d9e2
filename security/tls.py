"""Mutual TLS for the runtime: a certificate authority per deployment, and the gRPC credentials.

Every connection (worker -> coordinator, worker -> rendezvous, coordinator -> rendezvous, client
-> jobs service) is mutual TLS: a peer without a certificate signed by the deployment's CA is
refused during the handshake. ``excamera certs init DIR`` writes::

    ca.pem ca.key            the deployment's CA (ca.key signs; keep it offline)
    server.pem server.key    the coordinator's and rendezvous's identity (CN excamera-server)
    client.pem client.key    what workers and users present (CN excamera-client)

The server certificate is also valid for client authentication: the coordinator presents it to
the rendezvous, which accepts its admin calls (opening and closing jobs) only from that identity.
Workers get ``ca.pem client.pem client.key`` only; no server private key ever goes to a worker.
The embedded default (``run_job``) makes an ephemeral bundle per run, in memory.

Keys are ECDSA P-256: the handshake is cheap, which matters with a thousand workers.
This module imports nothing from the rest of the project (the ground floor: docs/design/architecture.md).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from foundation.errors import ExcameraError

SERVER_CN = "excamera-server"
CLIENT_CN = "excamera-client"
DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")
FILES = ("ca.pem", "ca.key", "server.pem", "server.key", "client.pem", "client.key")
WORKER_FILES = ("ca.pem", "client.pem", "client.key")


class CertError(ExcameraError):
    """Missing, unreadable or inconsistent certificate files."""


@dataclass(frozen=True)
class Bundle:
    """PEM bytes of a deployment's CA and leaf certificates. Any field may be empty when the
    holder does not have it (a worker has no server key, no CA key)."""

    ca_pem: bytes
    ca_key: bytes = b""
    server_pem: bytes = b""
    server_key: bytes = b""
    client_pem: bytes = b""
    client_key: bytes = b""

    def for_worker(self) -> "Bundle":
        """What a worker may hold: the CA certificate and the client pair."""
        return Bundle(ca_pem=self.ca_pem, client_pem=self.client_pem, client_key=self.client_key)


def _name(cn: str):
    from cryptography.x509.oid import NameOID
    from cryptography import x509

    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "excamera"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def generate(hosts: tuple[str, ...] | list[str] = DEFAULT_HOSTS, days: int = 365) -> Bundle:
    """A fresh CA and server/client certificates signed by it. ``hosts`` (names or IP
    addresses) go into the server certificate's subjectAltName: the addresses clients dial."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=days)

    def key_pem(key) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    def cert(subject, public_key, issuer, signing_key, *, ca: bool, extensions=()):
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
                   .public_key(public_key).serial_number(x509.random_serial_number())
                   .not_valid_before(start).not_valid_after(end)
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        for ext, critical in extensions:
            builder = builder.add_extension(ext, critical=critical)
        return builder.sign(signing_key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("excamera-ca")
    ca_cert = cert(ca_name, ca_key.public_key(), ca_name, ca_key, ca=True, extensions=[
        (x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                       crl_sign=True, encipher_only=False, decipher_only=False), True)])

    sans = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = cert(_name(SERVER_CN), server_key.public_key(), ca_name, ca_key, ca=False,
                       extensions=[(x509.SubjectAlternativeName(sans), False),
                                   (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                           ExtendedKeyUsageOID.CLIENT_AUTH]), False)])
    client_key = ec.generate_private_key(ec.SECP256R1())
    client_cert = cert(_name(CLIENT_CN), client_key.public_key(), ca_name, ca_key, ca=False,
                       extensions=[(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)])

    pem = serialization.Encoding.PEM
    return Bundle(ca_pem=ca_cert.public_bytes(pem), ca_key=key_pem(ca_key),
                  server_pem=server_cert.public_bytes(pem), server_key=key_pem(server_key),
                  client_pem=client_cert.public_bytes(pem), client_key=key_pem(client_key))


def write(bundle: Bundle, directory: str | os.PathLike, *, overwrite: bool = False) -> list[Path]:
    """Write the bundle's non-empty members as ``FILES`` into ``directory`` (created 0700); keys
    are 0600. Refuses to replace existing files unless ``overwrite``. Returns the paths written."""
    d = Path(directory)
    members = {"ca.pem": bundle.ca_pem, "ca.key": bundle.ca_key,
               "server.pem": bundle.server_pem, "server.key": bundle.server_key,
               "client.pem": bundle.client_pem, "client.key": bundle.client_key}
    members = {k: v for k, v in members.items() if v}
    if not overwrite:
        existing = [n for n in members if (d / n).exists()]
        if existing:
            raise CertError(f"{d}: {', '.join(existing)} already exist(s); not overwriting")
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    written = []
    for name, data in members.items():
        path = d / name
        tmp = d / f".{name}.tmp-{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if name.endswith(".key") else 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        written.append(path)
    return written


def load(directory: str | os.PathLike, *, need: tuple[str, ...]) -> Bundle:
    """Read the files named in ``need`` (a subset of ``FILES``) from ``directory``."""
    d = Path(directory)
    data = {}
    for name in need:
        try:
            data[name] = (d / name).read_bytes()
        except OSError as e:
            raise CertError(f"{d / name}: {e.strerror or e}") from None
        if b"-----BEGIN" not in data[name]:
            raise CertError(f"{d / name}: not a PEM file")
    return Bundle(ca_pem=data.get("ca.pem", b""), ca_key=data.get("ca.key", b""),
                  server_pem=data.get("server.pem", b""), server_key=data.get("server.key", b""),
                  client_pem=data.get("client.pem", b""), client_key=data.get("client.key", b""))


def server_credentials(bundle: Bundle):
    """gRPC server credentials that demand a client certificate signed by the bundle's CA."""
    import grpc

    return grpc.ssl_server_credentials([(bundle.server_key, bundle.server_pem)],
                                       root_certificates=bundle.ca_pem, require_client_auth=True)


def client_credentials(bundle: Bundle, *, as_server: bool = False):
    """gRPC channel credentials: trust only the bundle's CA; present the client certificate (or,
    for the coordinator talking to the rendezvous, the server certificate)."""
    import grpc

    key, pem = (bundle.server_key, bundle.server_pem) if as_server else (bundle.client_key, bundle.client_pem)
    return grpc.ssl_channel_credentials(root_certificates=bundle.ca_pem, private_key=key,
                                        certificate_chain=pem)


def peer_common_name(context) -> str:
    """The common name of the authenticated peer of a gRPC call ('' when there is none)."""
    try:
        names = context.auth_context().get("x509_common_name") or []
    except Exception:  # noqa: BLE001 - no auth context means no identity
        return ""
    return names[0].decode("utf-8", "replace") if names else ""


def issue_client(bundle: Bundle, lifetime_s: float, *, label: str = "") -> tuple[bytes, bytes]:
    """A client certificate and its key (PEM), signed by the bundle's CA (which needs its key)
    and valid for ``lifetime_s`` seconds from now (and five minutes back, for clock skew): what a
    cloud worker of one job presents. ``label`` (the job id) goes into the subject's OU, so the
    certificate says which job it was issued for. The CA key stays with the caller."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    if not bundle.ca_key:
        raise CertError("issuing a client certificate needs the CA key (ca.key)")
    if lifetime_s <= 0:
        raise CertError(f"a certificate lifetime must be positive, not {lifetime_s}")
    ca_key = serialization.load_pem_private_key(bundle.ca_key, password=None)
    ca_cert = x509.load_pem_x509_certificate(bundle.ca_pem)
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "excamera")]
    if label:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, label[:64]))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, CLIENT_CN))
    now = datetime.datetime.now(datetime.timezone.utc)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name(attrs)).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(seconds=lifetime_s))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def server_names(bundle: Bundle) -> list[str]:
    """The names and addresses in the server certificate's subjectAltName (what clients may dial)."""
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(bundle.server_pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(n) for n in san.get_values_for_type(x509.DNSName)] + \
        [str(a) for a in san.get_values_for_type(x509.IPAddress)]
