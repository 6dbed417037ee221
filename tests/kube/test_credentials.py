"""The client's credentials and kubeconfig handling against the embedded API server:
exec credential plugins (a real plugin script), token files rotated under a running
client, and KUBECONFIG with several files merged as kubectl merges them (compared with
`kubectl config view --merge --flatten` on the same files)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpuyard.apiserver.testing import ServerProcess
from gpuyard.kube.client import Client
from gpuyard.kube.errors import ConfigError, Unauthorized
from gpuyard.kube.kubeconfig import load_kubeconfig
from gpuyard.kube.resources import NAMESPACES

KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"

PLUGIN = """#!{python}
# An exec credential plugin: answers with the tokens listed in its tokens file, one per
# run (the last one again when they run out), and logs each run's KUBERNETES_EXEC_INFO.
import json, os, sys, datetime
here = os.path.dirname(os.path.abspath(__file__))
runs = os.path.join(here, "runs.jsonl")
n = sum(1 for _ in open(runs)) if os.path.exists(runs) else 0
with open(runs, "a") as f:
    f.write(json.dumps({{"info": json.loads(os.environ["KUBERNETES_EXEC_INFO"]),
                        "env": os.environ.get("PLUGIN_SETTING"), "args": sys.argv[1:]}}) + "\\n")
tokens = open(os.path.join(here, "tokens")).read().split()
status = {{"token": tokens[min(n, len(tokens) - 1)]}}
ttl = float(os.environ.get("PLUGIN_TTL", "0"))
if ttl:
    t = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=ttl)
    status["expirationTimestamp"] = t.strftime("%Y-%m-%dT%H:%M:%SZ")
print(json.dumps({{"apiVersion": os.environ["PLUGIN_API_VERSION"], "kind": "ExecCredential",
                  "status": status}}))
"""


def kubeconfig_doc(srv: ServerProcess) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(Path(srv.kubeconfig).read_text())
    return doc


def with_user(srv: ServerProcess, user: dict[str, Any], path: Path) -> Path:
    doc = kubeconfig_doc(srv)
    doc["users"] = [{"name": "gpuyard", "user": user}]
    path.write_text(yaml.safe_dump(doc))
    return path


def plugin(tmp: Path, tokens: list[str]) -> Path:
    d = tmp / "plugin"
    d.mkdir()
    script = d / "credential-plugin"
    script.write_text(PLUGIN.format(python=sys.executable))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    (d / "tokens").write_text("\n".join(tokens))
    return script


def runs(script: Path) -> list[dict[str, Any]]:
    f = script.parent / "runs.jsonl"
    return [json.loads(line) for line in f.read_text().splitlines()] if f.exists() else []


def exec_user(api_version: str, ttl: float, **extra: Any) -> dict[str, Any]:
    env = [
        {"name": "PLUGIN_API_VERSION", "value": api_version},
        {"name": "PLUGIN_TTL", "value": str(ttl)},
        {"name": "PLUGIN_SETTING", "value": "from-kubeconfig"},
    ]
    spec: dict[str, Any] = {
        "apiVersion": api_version,
        "command": "./plugin/credential-plugin",  # relative to the kubeconfig's folder
        "args": ["--cluster", "gpuyard"],
        "env": env,
        **extra,
    }
    if api_version.endswith("/v1"):
        spec.setdefault("interactiveMode", "Never")
    return {"exec": spec}


@pytest.mark.parametrize("version", ["v1", "v1beta1"])
async def test_exec_plugin_token_is_cached_until_it_expires(
    apiserver: ServerProcess, tmp_path: Path, version: str
) -> None:
    api_version = f"client.authentication.k8s.io/{version}"
    script = plugin(tmp_path, [apiserver.token])
    cfg = with_user(
        apiserver, exec_user(api_version, 3, provideClusterInfo=True), tmp_path / "config"
    )
    # kubectl takes the same kubeconfig: the plugin is a real one.
    out = subprocess.run(
        [KUBECTL, "--kubeconfig", str(cfg), "get", "ns", "default", "-o", "name"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.stdout.strip() == "namespace/default", out.stderr
    kubectl_runs = len(runs(script))
    assert kubectl_runs >= 1

    async with Client.from_kubeconfig(cfg) as c:
        for _ in range(5):
            await c.get(NAMESPACES, "default")
        mine = runs(script)[kubectl_runs:]
        assert len(mine) == 1  # five requests, one run: the token is kept
        info = mine[0]["info"]
        assert info["apiVersion"] == api_version and info["kind"] == "ExecCredential"
        assert info["spec"]["interactive"] is False
        assert info["spec"]["cluster"]["server"] == apiserver.url
        assert mine[0]["env"] == "from-kubeconfig"
        assert mine[0]["args"] == ["--cluster", "gpuyard"]
        # The expirationTimestamp passes (second resolution): the plugin runs again.
        time.sleep(4)
        await c.get(NAMESPACES, "default")
        assert len(runs(script)) == kubectl_runs + 2


async def test_exec_plugin_runs_again_when_the_server_says_401(
    apiserver: ServerProcess, tmp_path: Path
) -> None:
    script = plugin(tmp_path, ["revoked-token", apiserver.token])
    cfg = with_user(
        apiserver, exec_user("client.authentication.k8s.io/v1", 3600), tmp_path / "config"
    )
    async with Client.from_kubeconfig(cfg) as c:
        ns = await c.get(NAMESPACES, "default")  # 401 with the first token, then a re-run
        assert ns["metadata"]["name"] == "default"
        assert len(runs(script)) == 2
        await c.get(NAMESPACES, "default")
        assert len(runs(script)) == 2


async def test_exec_plugin_failures_are_clear(apiserver: ServerProcess, tmp_path: Path) -> None:
    script = plugin(tmp_path, ["revoked-token"])
    cfg = with_user(
        apiserver, exec_user("client.authentication.k8s.io/v1", 3600), tmp_path / "config"
    )
    async with Client.from_kubeconfig(cfg) as c:
        with pytest.raises(Unauthorized):
            await c.get(NAMESPACES, "default")
    assert len(runs(script)) == 2  # one retry, not a loop
    user = exec_user("client.authentication.k8s.io/v1", 0)
    user["exec"]["command"] = str(tmp_path / "missing-plugin")
    user["exec"]["installHint"] = "install it with: make plugin"
    async with Client.from_kubeconfig(with_user(apiserver, user, tmp_path / "c2")) as c:
        with pytest.raises(ConfigError, match="cannot run exec plugin .*make plugin"):
            await c.get(NAMESPACES, "default")
    user = exec_user("client.authentication.k8s.io/v1", 0)
    user["exec"]["env"][0]["value"] = "client.authentication.k8s.io/v1beta1"
    async with Client.from_kubeconfig(with_user(apiserver, user, tmp_path / "c3")) as c:
        with pytest.raises(ConfigError, match="answered 'client.authentication.k8s.io/v1beta1'"):
            await c.get(NAMESPACES, "default")
    user = exec_user("client.authentication.k8s.io/v1alpha1", 0)
    with pytest.raises(ConfigError, match="v1alpha1' is not supported"):
        load_kubeconfig(with_user(apiserver, user, tmp_path / "c4"))
    user = exec_user("client.authentication.k8s.io/v1", 0)
    del user["exec"]["interactiveMode"]
    with pytest.raises(ConfigError, match="interactiveMode is required"):
        load_kubeconfig(with_user(apiserver, user, tmp_path / "c5"))


async def test_token_file_is_read_again_when_rotated(
    apiserver: ServerProcess, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text(apiserver.token + "\n")
    cfg = with_user(apiserver, {"tokenFile": "token"}, tmp_path / "config")
    async with Client.from_kubeconfig(cfg) as c:
        await c.get(NAMESPACES, "default")
        # Rotated as the kubelet rotates projected tokens: a new file renamed over the old.
        new = tmp_path / "token.new"
        new.write_text("rotated-and-wrong")
        os.replace(new, token)
        with pytest.raises(Unauthorized):
            await c.get(NAMESPACES, "default")
        new.write_text(apiserver.token)
        os.replace(new, token)
        await c.get(NAMESPACES, "default")


async def test_in_cluster_token_is_read_again_when_rotated(
    apiserver: ServerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gpuyard.kube.kubeconfig import in_cluster_config

    sa = tmp_path / "serviceaccount"
    sa.mkdir()
    (sa / "token").write_text("not-yet-valid")
    (sa / "namespace").write_text("kube-system")
    Path(sa / "ca.crt").write_text(Path(apiserver.ca_file).read_text())
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", apiserver.url.rsplit(":", 1)[1])
    cfg = in_cluster_config(sa)
    assert cfg.namespace == "kube-system"
    async with Client(config=cfg) as c:
        with pytest.raises(Unauthorized):
            await c.get(NAMESPACES, "default")
        (sa / "token.tmp").write_text(apiserver.token)
        os.replace(sa / "token.tmp", sa / "token")
        await c.get(NAMESPACES, "default")


# ---------------------------------------------------------------- KUBECONFIG merging


def test_kubeconfig_files_merge_as_kubectl_merges_them(
    apiserver: ServerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = kubeconfig_doc(apiserver)
    ca_data = base["clusters"][0]["cluster"]["certificate-authority-data"]
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    (two / "ca.crt").write_bytes(base64.b64decode(ca_data))
    (two / "tok").write_text("token-from-file")
    f1 = one / "config"
    f1.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "shared",
                        "cluster": {"server": apiserver.url, "certificate-authority-data": ca_data},
                    }
                ],
                "users": [{"name": "admin", "user": {"token": apiserver.token}}],
                "contexts": [
                    {
                        "name": "main",
                        "context": {"cluster": "shared", "user": "admin", "namespace": "from-one"},
                    }
                ],
                "preferences": {},
            }
        )
    )
    f2 = two / "config"
    f2.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "other",  # the first file sets none: this one wins
                "clusters": [
                    {"name": "shared", "cluster": {"server": "https://127.0.0.1:1"}},  # loses
                    {
                        "name": "far",
                        "cluster": {
                            "server": "https://far.example:6443",
                            "certificate-authority": "ca.crt",
                        },
                    },
                ],
                "users": [
                    {"name": "admin", "user": {"token": "loses"}},
                    {"name": "robot", "user": {"tokenFile": "tok"}},
                ],
                "contexts": [
                    {"name": "main", "context": {"cluster": "far", "user": "robot"}},  # loses
                    {
                        "name": "other",
                        "context": {"cluster": "far", "user": "robot", "namespace": "from-two"},
                    },
                ],
            }
        )
    )
    missing = tmp_path / "missing" / "config"
    monkeypatch.setenv("KUBECONFIG", os.pathsep.join(map(str, [f1, missing, f2])))
    view = json.loads(
        subprocess.run(
            [KUBECTL, "config", "view", "--merge", "--flatten", "--raw", "-o", "json"],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "KUBECONFIG": os.environ["KUBECONFIG"]},
            timeout=60,
        ).stdout
    )
    clusters = {c["name"]: c["cluster"] for c in view["clusters"]}
    users = {u["name"]: u["user"] for u in view["users"]}
    contexts = {c["name"]: c["context"] for c in view["contexts"]}

    for name in [None, *contexts]:
        cfg = load_kubeconfig(context=name)
        ctx_name = name or view["current-context"]
        ctx = contexts[ctx_name]
        cluster, user = clusters[ctx["cluster"]], users[ctx["user"]]
        assert cfg.context == ctx_name
        assert cfg.server == cluster["server"]
        assert cfg.namespace == ctx.get("namespace", "default")
        if cluster.get("certificate-authority-data"):
            ca = cfg.ca_data or Path(cfg.ca_file or "").read_bytes()
            assert ca == base64.b64decode(cluster["certificate-authority-data"])
        if "token" in user:
            assert cfg.bearer_token() == user["token"]
        else:  # kubectl shows the path as written; it is relative to its file
            assert user["tokenFile"] == "tok"
            assert cfg.bearer_token() == "token-from-file"
    assert load_kubeconfig().context == view["current-context"] == "other"
    assert load_kubeconfig(context="main").server == apiserver.url


CERT_PLUGIN = """#!{python}
# Answers with certificate N (and its key) on its Nth run, valid for 2 seconds.
import datetime, json, os
here = os.path.dirname(os.path.abspath(__file__))
n = len([f for f in os.listdir(here) if f.startswith("ran-")]) + 1
open(os.path.join(here, f"ran-{{n}}"), "w").close()
t = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=2)
print(json.dumps({{"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
  "status": {{"clientCertificateData": open(os.path.join(here, f"cert{{n}}.pem")).read(),
             "clientKeyData": open(os.path.join(here, f"key{{n}}.pem")).read(),
             "expirationTimestamp": t.strftime("%Y-%m-%dT%H:%M:%SZ")}}}}))
"""


def client_cert(ca_pem: bytes, ca_key_pem: bytes, cn: str) -> tuple[bytes, bytes]:
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca = x509.load_pem_x509_certificate(ca_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(pem), key_pem


async def test_exec_plugin_client_certificate_is_renewed(tmp_path: Path) -> None:
    """A plugin that answers with a client certificate (as Teleport's does): the client
    presents it, and the renewed one once it expires. The server here is a small TLS
    server that requires a client certificate from the CA and answers with its CN."""
    import asyncio
    import datetime as dt
    import ssl

    from gpuyard.pki import new_ca, new_serving_cert

    ca_pem, ca_key = new_ca(dt.datetime.now(dt.UTC), 1)
    srv_cert, srv_key = new_serving_cert(ca_pem, ca_key, ["127.0.0.1"], dt.datetime.now(dt.UTC), 1)
    (tmp_path / "srv.crt").write_bytes(srv_cert)
    (tmp_path / "srv.key").write_bytes(srv_key)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "srv.crt", tmp_path / "srv.key")
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=ca_pem.decode())

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            peer = w.get_extra_info("peercert") or {}
            cn = dict(x[0] for x in peer.get("subject", ()))["commonName"]
            while await r.readuntil(b"\r\n\r\n"):
                body = json.dumps({"kind": "Namespace", "metadata": {"name": cn}}).encode()
                head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                w.write(head.encode() + body)
                await w.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
    port = server.sockets[0].getsockname()[1]
    d = tmp_path / "plugin"
    d.mkdir()
    for i in (1, 2):
        cert, key = client_cert(ca_pem, ca_key, f"user-{i}")
        (d / f"cert{i}.pem").write_bytes(cert)
        (d / f"key{i}.pem").write_bytes(key)
    script = d / "credential-plugin"
    script.write_text(CERT_PLUGIN.format(python=sys.executable))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    cfg = tmp_path / "config"
    cfg.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "c",
                "clusters": [
                    {
                        "name": "c",
                        "cluster": {
                            "server": f"https://127.0.0.1:{port}",
                            "certificate-authority-data": base64.b64encode(ca_pem).decode(),
                        },
                    }
                ],
                "users": [
                    {
                        "name": "u",
                        "user": {
                            "exec": {
                                "apiVersion": "client.authentication.k8s.io/v1",
                                "command": str(script),
                                "interactiveMode": "Never",
                            }
                        },
                    }
                ],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
            }
        )
    )
    try:
        async with Client.from_kubeconfig(cfg) as c:
            assert (await c.get(NAMESPACES, "x"))["metadata"]["name"] == "user-1"
            assert (await c.get(NAMESPACES, "x"))["metadata"]["name"] == "user-1"
            await asyncio.sleep(3)  # past its expirationTimestamp
            assert (await c.get(NAMESPACES, "x"))["metadata"]["name"] == "user-2"
    finally:
        server.close()
        await server.wait_closed()
