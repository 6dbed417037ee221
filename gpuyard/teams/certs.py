"""The webhook's own certificate authority and serving certificate: generated on first
use, kept in a directory (mode 0600), and rotated before they expire.

`ensure(directory, hosts, now)` returns the current `Bundle`, issuing a new serving
certificate when the old one is within `renew_before` of its end (or names other
hosts), and a new CA when the CA itself is within `renew_before` of its end. The caller
compares `Bundle.ca_pem` to what the MutatingWebhookConfiguration carries and updates
its caBundle when it changed. Time is passed in, so rotation is testable.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 365
CERT_DAYS = 30
RENEW_BEFORE = dt.timedelta(days=7)

_PEM = serialization.Encoding.PEM


@dataclass(frozen=True)
class Bundle:
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes
    cert_file: Path
    key_file: Path
    not_after: dt.datetime
    rotated: bool  # a new certificate was issued by this call


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(_PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def new_ca(now: dt.datetime, days: int = CA_DAYS) -> tuple[bytes, bytes]:
    """(ca_cert_pem, ca_key_pem)."""
    key = ec.generate_private_key(ec.SECP256R1())
    # A distinct name per CA: right after a rotation clients trust the old and the new
    # CA at once and must pick the right issuer for either certificate.
    name = _name(f"gpuyard-teams-webhook-ca-{now:%Y%m%d%H%M%S}-{os.urandom(3).hex()}")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(_PEM), _key_pem(key)


def new_serving_cert(
    ca_pem: bytes, ca_key_pem: bytes, hosts: list[str], now: dt.datetime, days: int = CERT_DAYS
) -> tuple[bytes, bytes]:
    """(cert_pem, key_pem) for hosts (IP addresses or DNS names), signed by the CA."""
    ca = x509.load_pem_x509_certificate(ca_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("gpuyard-teams-webhook"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + dt.timedelta(days=days), ca.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(_PEM), _key_pem(key)


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _sans(cert: x509.Certificate) -> set[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(v) for v in ext.get_values_for_type(x509.IPAddress)} | set(
        ext.get_values_for_type(x509.DNSName)
    )


def ensure(
    directory: str | Path,
    hosts: list[str],
    now: dt.datetime,
    *,
    renew_before: dt.timedelta = RENEW_BEFORE,
    ca_days: int = CA_DAYS,
    cert_days: int = CERT_DAYS,
) -> Bundle:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    ca_file, ca_key_file = d / "ca.crt", d / "ca.key"
    cert_file, key_file = d / "tls.crt", d / "tls.key"
    rotated = False

    ca_pem = ca_file.read_bytes() if ca_file.exists() and ca_key_file.exists() else b""
    if ca_pem:
        ca = x509.load_pem_x509_certificate(ca_pem)
        if ca.not_valid_after_utc - renew_before <= now:
            ca_pem = b""
    if not ca_pem:
        ca_pem, ca_key = new_ca(now, ca_days)
        _write(ca_key_file, ca_key)
        _write(ca_file, ca_pem)
        for f in (cert_file, key_file):
            f.unlink(missing_ok=True)
    ca = x509.load_pem_x509_certificate(ca_pem)

    cert_pem = cert_file.read_bytes() if cert_file.exists() and key_file.exists() else b""
    if cert_pem:
        cert = x509.load_pem_x509_certificate(cert_pem)
        if (
            cert.not_valid_after_utc - renew_before <= now
            or cert.issuer != ca.subject
            or not set(hosts) <= _sans(cert)
        ):
            cert_pem = b""
        else:
            try:
                cert.verify_directly_issued_by(ca)
            except Exception:  # noqa: BLE001 - signed by an older CA
                cert_pem = b""
    if not cert_pem:
        cert_pem, key_pem = new_serving_cert(
            ca_pem, ca_key_file.read_bytes(), hosts, now, cert_days
        )
        _write(key_file, key_pem)
        _write(cert_file, cert_pem)
        rotated = True
    cert = x509.load_pem_x509_certificate(cert_pem)
    return Bundle(
        ca_pem=ca_pem,
        cert_pem=cert_pem,
        key_pem=key_file.read_bytes(),
        cert_file=cert_file,
        key_file=key_file,
        not_after=cert.not_valid_after_utc,
        rotated=rotated,
    )
