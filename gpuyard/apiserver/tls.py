"""The cluster CA and a serving certificate for 127.0.0.1/localhost.

kubectl does not send bearer tokens over plain HTTP, so the server speaks HTTPS; the
CA goes into the kubeconfig as certificate-authority-data. The same CA signs client
certificates (`client_cert`): the server asks for one in the handshake and accepts
those it signed (CN: the user, O: its groups). With a data directory the key material
is kept there (ca.crt, ca.key, apiserver.crt, apiserver.key; mode 0600) and reused
across restarts; a directory from before the CA key was kept gets a new CA.
"""

from __future__ import annotations

import datetime
import os
import ssl
import tempfile

from gpuyard import pki


def _new_ca_and_cert(hosts: list[str]) -> tuple[bytes, bytes, bytes, bytes]:
    """(ca_pem, ca_key_pem, cert_pem, key_pem): a new CA, a server certificate for hosts."""
    now = datetime.datetime.now(datetime.UTC)
    ca, ca_key = pki.new_ca(now, 3650, "gpuyard-ca")
    cert, key = pki.new_serving_cert(ca, ca_key, hosts, now, 3650, "gpuyard-apiserver")
    return ca, ca_key, cert, key


def make_ca_and_cert(hosts: list[str]) -> tuple[bytes, bytes, bytes]:
    """(ca_pem, cert_pem, key_pem) for a new CA and a server certificate for hosts."""
    ca, _, cert, key = _new_ca_and_cert(hosts)
    return ca, cert, key


def client_cert(
    ca_pem: bytes, ca_key_pem: bytes, user: str, groups: list[str], days: int = 365
) -> tuple[bytes, bytes]:
    """(cert_pem, key_pem) of a client certificate for user in groups, from the CA."""
    now = datetime.datetime.now(datetime.UTC)
    return pki.new_client_cert(ca_pem, ca_key_pem, user, groups, now, days)


_write = pki.write_private


def server_tls(data_dir: str | None, host: str) -> tuple[ssl.SSLContext, bytes]:
    """An SSL context for serving, and the CA PEM for clients."""
    ctx, ca_pem, _ = cluster_tls(data_dir, host)
    return ctx, ca_pem


def cluster_tls(data_dir: str | None, host: str) -> tuple[ssl.SSLContext, bytes, bytes]:
    """An SSL context for serving (client certificates from the CA optional), the CA
    PEM for clients and the CA key PEM."""
    hosts = sorted({host, "127.0.0.1", "localhost", "::1"} - {"0.0.0.0", "::", ""})
    if data_dir is None:  # nothing kept: the files live only while they are loaded
        with tempfile.TemporaryDirectory(prefix="gpuyard-tls-") as d:
            return _load(d, hosts)
    return _load(data_dir, hosts)


def _load(d: str, hosts: list[str]) -> tuple[ssl.SSLContext, bytes, bytes]:
    ca_p, cak_p, crt_p, key_p = (
        os.path.join(d, n) for n in ("ca.crt", "ca.key", "apiserver.crt", "apiserver.key")
    )
    if not all(os.path.exists(p) for p in (ca_p, cak_p, crt_p, key_p)):
        ca, ca_key, crt, key = _new_ca_and_cert(hosts)
        os.makedirs(d, exist_ok=True)
        _write(ca_p, ca)
        _write(cak_p, ca_key)
        _write(crt_p, crt)
        _write(key_p, key)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(crt_p, key_p)
    ctx.load_verify_locations(ca_p)
    ctx.verify_mode = ssl.CERT_OPTIONAL  # a certificate, when sent, must be the CA's
    with open(ca_p, "rb") as f:
        ca_pem = f.read()
    with open(cak_p, "rb") as f:
        ca_key_pem = f.read()
    return ctx, ca_pem, ca_key_pem
