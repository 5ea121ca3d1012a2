"""A local certificate authority for the sandbox's TLS listener.

The SDKs always dial ``wss://`` for Live, so the sandbox must speak TLS with a certificate
the client can be told to trust: ``SSL_CERT_FILE`` (Python SDK) or ``NODE_EXTRA_CA_CERTS``
(node). The files are reused while valid, so a developer trusts the same CA across runs.
"""

import ipaddress
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from django.conf import settings

CA_NAME = "Ephemera sandbox local CA"
HOSTS = ("localhost", "127.0.0.1", "::1")
CA_DAYS = 365
SERVER_DAYS = 90
RENEW_BEFORE = timedelta(days=2)


@dataclass(frozen=True)
class SandboxCertificates:
    ca_file: Path
    cert_file: Path
    key_file: Path


def _write(path: Path, data: bytes, private: bool = False) -> None:
    """Write beside and rename, so a reader never sees half a PEM."""
    partial = path.with_suffix(path.suffix + ".partial")
    partial.write_bytes(data)
    if private:
        partial.chmod(0o600)
    os.replace(partial, path)


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _still_valid(certs: SandboxCertificates, hosts: tuple[str, ...], now: datetime) -> bool:
    try:
        ca = x509.load_pem_x509_certificate(certs.ca_file.read_bytes())
        server = x509.load_pem_x509_certificate(certs.cert_file.read_bytes())
        key = serialization.load_pem_private_key(certs.key_file.read_bytes(), password=None)
    except (OSError, ValueError):
        return False
    if key.public_key() != server.public_key() or server.issuer != ca.subject:
        return False
    try:
        server.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    if any(_san(host) not in names for host in hosts):
        return False
    return all(cert.not_valid_after_utc - now > RENEW_BEFORE for cert in (ca, server))


def sandbox_cert_dir() -> Path:
    """Where the sandbox keeps its CA and certificate when run by `manage.py` (`dev`,
    `sandbox_gemini`), reused across runs while valid."""
    return settings.VAR_DIR / "sandbox"


def sandbox_certificates(directory: Path, hosts: tuple[str, ...] = HOSTS) -> SandboxCertificates:
    """The CA and server certificate in ``directory``, made (or remade) when missing or stale."""
    directory.mkdir(parents=True, exist_ok=True)
    certs = SandboxCertificates(
        ca_file=directory / "ca.pem",
        cert_file=directory / "server.pem",
        key_file=directory / "server-key.pem",
    )
    hosts = tuple(dict.fromkeys((*HOSTS, *hosts)))
    now = datetime.now(UTC)
    if _still_valid(certs, hosts, now):
        return certs

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_subject)
        .issuer_name(ca_subject)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    server_key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=SERVER_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(server_key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    _write(
        certs.key_file,
        server_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        private=True,
    )
    _write(certs.cert_file, server.public_bytes(pem))
    _write(certs.ca_file, ca.public_bytes(pem))
    return certs
