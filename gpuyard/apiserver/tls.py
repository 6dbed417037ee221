"""A self-signed CA and a serving certificate for 127.0.0.1/localhost.

kubectl does not send bearer tokens over plain HTTP, so the server speaks HTTPS; the
CA goes into the kubeconfig as certificate-authority-data. With a data directory the
key material is kept there (mode 0600) and reused across restarts.
"""

from __future__ import annotations

import datetime
import os
import ssl
import tempfile

from gpuyard import pki


def make_ca_and_cert(hosts: list[str]) -> tuple[bytes, bytes, bytes]:
    """(ca_pem, cert_pem, key_pem) for a new CA and a server certificate for hosts."""
    now = datetime.datetime.now(datetime.UTC)
    ca, ca_key = pki.new_ca(now, 3650, "gpuyard-ca")
    cert, key = pki.new_serving_cert(ca, ca_key, hosts, now, 3650, "gpuyard-apiserver")
    return ca, cert, key


_write = pki.write_private


def server_tls(data_dir: str | None, host: str) -> tuple[ssl.SSLContext, bytes]:
    """An SSL context for serving, and the CA PEM for clients."""
    hosts = sorted({host, "127.0.0.1", "localhost", "::1"} - {"0.0.0.0", "::", ""})
    if data_dir is None:  # nothing kept: the files live only while they are loaded
        with tempfile.TemporaryDirectory(prefix="gpuyard-tls-") as d:
            return _load(d, hosts)
    return _load(data_dir, hosts)


def _load(d: str, hosts: list[str]) -> tuple[ssl.SSLContext, bytes]:
    ca_p, crt_p, key_p = (os.path.join(d, n) for n in ("ca.crt", "apiserver.crt", "apiserver.key"))
    if not all(os.path.exists(p) for p in (ca_p, crt_p, key_p)):
        ca, crt, key = make_ca_and_cert(hosts)
        os.makedirs(d, exist_ok=True)
        _write(ca_p, ca)
        _write(crt_p, crt)
        _write(key_p, key)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(crt_p, key_p)
    with open(ca_p, "rb") as f:
        ca_pem = f.read()
    return ctx, ca_pem
