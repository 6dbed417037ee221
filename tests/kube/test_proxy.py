"""The client through an HTTP proxy, as kubectl goes through one: HTTPS_PROXY from the
environment (not for loopback addresses, not for what NO_PROXY names) and a cluster's
proxy-url. The proxy is a small CONNECT proxy this test runs; it is the only one that
knows the name `apiserver.gpuyard.test`, so a request that reaches the server by that
name went through it."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpuyard.apiserver.testing import ServerProcess
from gpuyard.kube.client import Client
from gpuyard.kube.errors import ConfigError, KubeError
from gpuyard.kube.proxy import bypassed, proxy_for
from gpuyard.kube.resources import CONFIGMAPS, NAMESPACES

KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"
NAME = "apiserver.gpuyard.test"


class ConnectProxy:
    """CONNECT host:port, optionally with Basic credentials; *.gpuyard.test is 127.0.0.1."""

    def __init__(self, credentials: str | None = None) -> None:
        self.credentials = credentials
        self.tunnels: list[str] = []
        self.forwarded: list[str] = []
        self.refused = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def _pipe(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
        with contextlib.suppress(Exception):
            w.close()

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self._writers.append(w)
        head = (await r.readuntil(b"\r\n\r\n")).decode("latin-1")
        lines = head.split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
        if self.credentials is not None:
            want = "Basic " + base64.b64encode(self.credentials.encode()).decode()
            if headers.get("Proxy-Authorization") != want:
                self.refused += 1
                w.write(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
                await w.drain()
                w.close()
                return
        if method != "CONNECT" and target.startswith("http://"):
            # A plain-http request in absolute form: forwarded, the connection piped on.
            self.forwarded.append(f"{method} {target}")
            hostport = target[len("http://") :].split("/", 1)[0]
            host, _, port = hostport.rpartition(":")
            addr = "127.0.0.1" if host.endswith(".gpuyard.test") else host
            ur, uw = await asyncio.open_connection(addr, int(port))
            self._writers.append(uw)
            kept = [ln for ln in lines[1:] if ln and not ln.startswith("Proxy-Authorization")]
            uw.write(("\r\n".join([lines[0], *kept]) + "\r\n\r\n").encode("latin-1"))
            await asyncio.gather(self._pipe(r, uw), self._pipe(ur, w))
            return
        if method != "CONNECT":
            w.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            w.close()
            return
        host, _, port = target.rpartition(":")
        self.tunnels.append(target)
        addr = "127.0.0.1" if host.endswith(".gpuyard.test") else host.strip("[]")
        ur, uw = await asyncio.open_connection(addr, int(port))
        self._writers.append(uw)
        w.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await w.drain()
        await asyncio.gather(self._pipe(r, uw), self._pipe(ur, w))

    async def __aenter__(self) -> ConnectProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for w in self._writers:
            w.close()
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
async def proxy() -> AsyncIterator[ConnectProxy]:
    async with ConnectProxy() as p:
        yield p


def kubeconfig(srv: ServerProcess, path: Path, by_name: bool, **cluster: Any) -> Path:
    doc = yaml.safe_load(Path(srv.kubeconfig).read_text())
    c = doc["clusters"][0]["cluster"]
    if by_name:
        c["server"] = srv.url.replace("127.0.0.1", NAME)
        c["tls-server-name"] = "localhost"  # the name the server's certificate has
    c.update(cluster)
    path.write_text(yaml.safe_dump(doc))
    return path


async def use(cfg: Path) -> None:
    """A get, a create and a watch event: unary requests and a stream."""
    async with Client.from_kubeconfig(cfg) as c:
        await c.get(NAMESPACES, "default")
        await c.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "via-proxy"}})
        async for etype, obj in c.watch(CONFIGMAPS, "default", timeout_seconds=5):
            if obj["metadata"]["name"] == "via-proxy":
                assert etype == "ADDED"
                break
        await c.delete(CONFIGMAPS, "via-proxy", "default")


async def test_https_proxy_from_the_environment(
    apiserver: ServerProcess, proxy: ConnectProxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = f"{NAME}:{apiserver.url.rsplit(':', 1)[1]}"
    cfg = kubeconfig(apiserver, tmp_path / "config", by_name=True)
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    await use(cfg)
    assert proxy.tunnels and set(proxy.tunnels) == {target}
    # kubectl, given the same kubeconfig and environment, goes the same way.
    seen = len(proxy.tunnels)
    out = await asyncio.to_thread(
        subprocess.run,
        [KUBECTL, "--kubeconfig", str(cfg), "get", "ns", "default", "-o", "name"],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ),
    )
    assert out.stdout.strip() == "namespace/default", out.stderr
    assert len(proxy.tunnels) > seen

    # NO_PROXY names the server: no tunnel, and without the proxy the name does not
    # resolve here.
    seen = len(proxy.tunnels)
    monkeypatch.setenv("NO_PROXY", "example.com,.gpuyard.test")
    with pytest.raises(KubeError):
        async with Client.from_kubeconfig(cfg, max_retries=0) as c:
            await c.get(NAMESPACES, "default")
    assert len(proxy.tunnels) == seen


async def test_loopback_servers_skip_the_environment_proxy(
    apiserver: ServerProcess, proxy: ConnectProxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    await use(kubeconfig(apiserver, tmp_path / "config", by_name=False))
    assert proxy.tunnels == []


async def test_proxy_url_of_the_cluster_with_credentials(
    apiserver: ServerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    monkeypatch.delenv("https_proxy", raising=False)
    async with ConnectProxy(credentials="ops:s3cret word") as p:
        good = f"http://ops:s3cret%20word@127.0.0.1:{p.port}"
        await use(kubeconfig(apiserver, tmp_path / "c1", by_name=False, **{"proxy-url": good}))
        # proxy-url applies to a loopback server too, as in kubectl.
        assert set(p.tunnels) == {apiserver.url.removeprefix("https://")}
        bad = f"http://ops:wrong@127.0.0.1:{p.port}"
        cfg = kubeconfig(apiserver, tmp_path / "c2", by_name=False, **{"proxy-url": bad})
        with pytest.raises(KubeError, match="407"):
            async with Client.from_kubeconfig(cfg, max_retries=0) as c:
                await c.get(NAMESPACES, "default")
        assert p.refused >= 1
    with pytest.raises(ConfigError, match="only http:// proxies"):
        Client.from_kubeconfig(
            kubeconfig(apiserver, tmp_path / "c3", by_name=False, **{"proxy-url": "socks5://x:1"})
        )


def test_no_proxy_rules() -> None:
    env = {"HTTPS_PROXY": "proxy:3128", "NO_PROXY": "10.0.0.0/8,.corp.example,api.example:6443"}
    assert proxy_for("https://k8s.example:443", None, env) == "http://proxy:3128"
    assert proxy_for("https://10.1.2.3:6443", None, env) is None
    assert proxy_for("https://a.corp.example", None, env) is None
    assert proxy_for("https://corp.example", None, env) == "http://proxy:3128"
    assert proxy_for("https://api.example:6443", None, env) is None
    assert proxy_for("https://api.example:443", None, env) == "http://proxy:3128"
    assert proxy_for("https://localhost:6443", None, env) is None
    assert proxy_for("https://[::1]:6443", None, env) is None
    assert proxy_for("http://k8s.example", None, env) is None  # HTTP_PROXY unset
    assert proxy_for("https://k8s.example", None, {"https_proxy": "http://p:1"}) == "http://p:1"
    assert bypassed("any.host", 1, "*")
    assert bypassed("sub.example.com", 443, "example.com")
    assert not bypassed("badexample.com", 443, "example.com")


async def test_plain_http_server_through_the_proxy_in_absolute_form(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An http:// server: requests go to the proxy in absolute form (no CONNECT), with
    the proxy's credentials, for unary requests and watches alike."""
    seen: list[str] = []

    async def backend(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = (await r.readuntil(b"\r\n\r\n")).decode("latin-1")
                seen.append(head.split("\r\n", 1)[0])
                ns = {"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": "default"}}
                if "watch=" in head.split("\r\n", 1)[0]:
                    body = (json.dumps({"type": "ADDED", "object": ns}) + "\n").encode()
                else:
                    body = json.dumps(ns).encode()
                w.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                await w.drain()

    server = await asyncio.start_server(backend, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    monkeypatch.delenv("HTTP_PROXY", raising=False)
    monkeypatch.delenv("http_proxy", raising=False)
    try:
        async with ConnectProxy(credentials="ops:pw") as p:
            cfg = tmp_path / "config"
            cluster = {
                "server": f"http://backend.gpuyard.test:{port}",
                "proxy-url": f"http://ops:pw@127.0.0.1:{p.port}",
            }
            cfg.write_text(
                yaml.safe_dump(
                    {
                        "apiVersion": "v1",
                        "kind": "Config",
                        "current-context": "c",
                        "clusters": [{"name": "c", "cluster": cluster}],
                        "users": [{"name": "u", "user": {"token": "t"}}],
                        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                    }
                )
            )
            async with Client.from_kubeconfig(cfg) as c:
                assert (await c.get(NAMESPACES, "default"))["metadata"]["name"] == "default"
                async for etype, obj in c.watch(NAMESPACES, timeout_seconds=5):
                    assert (etype, obj["metadata"]["name"]) == ("ADDED", "default")
                    break
            assert p.tunnels == [] and p.refused == 0
            assert p.forwarded[0] == (
                f"GET http://backend.gpuyard.test:{port}/api/v1/namespaces/default"
            )
            assert any("watch=" in f for f in p.forwarded)
            assert seen  # the backend got them
    finally:
        server.close()
        await server.wait_closed()
