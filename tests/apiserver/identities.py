"""Helpers for the identity tests: ServiceAccounts with tokens, roles, client
certificates and kubectl run as someone."""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import tempfile
from typing import Any

import aiohttp
import orjson
import yaml

from .api import Api

RBAC = "/apis/rbac.authorization.k8s.io/v1"


async def service_account(api: Api, ns: str, name: str, **spec: Any) -> str:
    """Create a ServiceAccount (if missing) and return a token for it from TokenRequest."""
    st, _ = await api.req(
        "POST", f"/api/v1/namespaces/{ns}/serviceaccounts", {"metadata": {"name": name}}
    )
    assert st in (201, 409)
    st, tr = await api.req(
        "POST",
        f"/api/v1/namespaces/{ns}/serviceaccounts/{name}/token",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec},
    )
    assert st == 201, tr
    return str(tr["status"]["token"])


async def grant(
    api: Api, ns: str | None, name: str, rules: list[dict[str, Any]], subjects: list[dict[str, Any]]
) -> None:
    """A Role and RoleBinding in ns, or (ns None) a ClusterRole and ClusterRoleBinding."""
    base = f"{RBAC}/namespaces/{ns}" if ns else RBAC
    kind = "Role" if ns else "ClusterRole"
    st, out = await api.req(
        "POST", f"{base}/{kind.lower()}s", {"metadata": {"name": name}, "rules": rules}
    )
    assert st == 201, out
    st, out = await api.req(
        "POST",
        f"{base}/{kind.lower()}bindings",
        {
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": name},
            "subjects": subjects,
        },
    )
    assert st == 201, out


def sa_subject(ns: str, name: str) -> dict[str, Any]:
    return {"kind": "ServiceAccount", "name": name, "namespace": ns}


def kubeconfig(
    server: Any, token: str | None = None, cert: tuple[bytes, bytes] | None = None
) -> str:
    """A kubeconfig file for the server with a token or a client certificate."""
    import base64

    user: dict[str, str] = {}
    if token:
        user["token"] = token
    if cert:
        user["client-certificate-data"] = base64.b64encode(cert[0]).decode()
        user["client-key-data"] = base64.b64encode(cert[1]).decode()
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "c",
                "cluster": {
                    "server": server.url,
                    "certificate-authority-data": base64.b64encode(server.ca_pem).decode(),
                },
            }
        ],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "c",
    }
    fd, path = tempfile.mkstemp(prefix="gpuyard-test-kubeconfig-")
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(cfg, f)
    return path


async def kubectl(kubeconfig_path: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run kubectl without blocking the loop the in-process server answers on."""
    p = await asyncio.create_subprocess_exec(
        "kubectl",
        "--kubeconfig",
        kubeconfig_path,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(p.communicate(), 60)
    assert p.returncode is not None
    return subprocess.CompletedProcess(args, p.returncode, out.decode(), err.decode())


class CertApi:
    """Raw HTTPS requests with a client certificate."""

    def __init__(self, server: Any, cert: tuple[bytes, bytes]) -> None:
        ctx = ssl.create_default_context(cadata=server.ca_pem.decode())
        d = tempfile.mkdtemp(prefix="gpuyard-test-cert-")
        crt, key = os.path.join(d, "c.crt"), os.path.join(d, "c.key")
        with open(crt, "wb") as f:
            f.write(cert[0])
        with open(key, "wb") as f:
            f.write(cert[1])
        ctx.load_cert_chain(crt, key)
        os.unlink(crt)
        os.unlink(key)
        os.rmdir(d)
        self.url = server.url
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx))

    async def req(
        self,
        method: str,
        path: str,
        body: Any = None,
        ctype: str = "application/json",
        **query: str,
    ) -> tuple[int, Any]:
        data = orjson.dumps(body) if body is not None else None
        h = {"Content-Type": ctype} if data else {}
        async with self.session.request(
            method, self.url + path, data=data, headers=h, params=query
        ) as r:
            raw = await r.read()
            try:
                return r.status, orjson.loads(raw)
            except orjson.JSONDecodeError:
                return r.status, raw

    async def close(self) -> None:
        await self.session.close()
