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
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from gpuyard import pki

CA_DAYS = 365
CERT_DAYS = 30
RENEW_BEFORE = dt.timedelta(days=7)


@dataclass(frozen=True)
class Bundle:
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes
    cert_file: Path
    key_file: Path
    not_after: dt.datetime
    rotated: bool  # a new certificate was issued by this call


def new_ca(now: dt.datetime, days: int = CA_DAYS) -> tuple[bytes, bytes]:
    """(ca_cert_pem, ca_key_pem); each CA gets a distinct name, so that right after a
    rotation clients trusting both can pick the right issuer."""
    return pki.new_ca(now, days, "gpuyard-teams-webhook-ca")


def new_serving_cert(
    ca_pem: bytes, ca_key_pem: bytes, hosts: list[str], now: dt.datetime, days: int = CERT_DAYS
) -> tuple[bytes, bytes]:
    """(cert_pem, key_pem) for hosts (IP addresses or DNS names), signed by the CA."""
    return pki.new_serving_cert(ca_pem, ca_key_pem, hosts, now, days, "gpuyard-teams-webhook")


_write = pki.write_private


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
