"""Back-pressure and connection limits under hostile load, against `gpuyard apiserver`
in a subprocess (flow.py): idle and slow-header connections cannot starve a
legitimate client, and a burst of creates gets 429 with Retry-After that kubectl,
the official Python client and gpuyard's own client retry until all succeed.

The idle flood is sized from the server's own limits: the server runs with a file
limit of 4,096 (its connection cap is that less its reserve, as in production) and
the flood holds a quarter of the cap more than the file limit, from as many helper
processes as their own file limits need.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from typing import Any

import aiohttp
import orjson
import pytest

from gpuyard.apiserver.flow import connection_cap
from gpuyard.apiserver.testing import ServerProcess, run_apiserver_process
from gpuyard.kube.client import Client
from gpuyard.kube.fasthttp import FastTransport
from gpuyard.kube.kubeconfig import load_kubeconfig
from gpuyard.kube.resources import CONFIGMAPS

from .test_kubectl import KUBECTL

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CM = "/api/v1/namespaces/default/configmaps"


def metrics(srv: ServerProcess) -> dict[str, float]:
    req = urllib.request.Request(srv.url + "/metrics", headers=srv.headers)
    with urllib.request.urlopen(req, context=srv.ssl_context(), timeout=60) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def helper(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.apiserver.load_clients", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 90) -> dict[str, Any]:
    if proc.stdout is None or proc.stdout.closed:
        return {}  # read already
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    last = (out or "").strip().splitlines()
    return json.loads(last[-1]) if last else {}


def fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(p * len(xs)))] * 1000, 1) if xs else -1.0


# The flood test's server runs with this file limit (or the hard limit, if lower):
# its connection cap follows from it as in production (connection_cap), and a flood
# past the file limit stays small enough for a loaded 2-core machine to raise.
FLOOD_FILE_LIMIT = 4096


HEADER_TIMEOUTS = 'gpuyard_apiserver_connections_closed_total{reason="header-timeout"}'


def _shed(m: dict[str, float]) -> float:
    return (
        m['gpuyard_apiserver_connections_closed_total{reason="evicted"}']
        + m['gpuyard_apiserver_connections_closed_total{reason="connection-limit"}']
    )


def _stop(proc: subprocess.Popen[str]) -> dict[str, Any]:
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    return finish(proc, 60)


@pytest.mark.slow
async def test_idle_and_slow_header_floods_do_not_starve_a_legitimate_client() -> None:
    """More idle connections than the server has file descriptors, and 300 clients
    that trickle request heads, all kept up until the legitimate client is done: the
    server holds its cap (below its file limit), sheds flood connections for new
    ones, cuts off every slow head, and the legitimate client's requests, on a kept
    connection and on a fresh connection each, all succeed.

    The TLS handshake timeout is set long so that idle connections (which never send
    a ClientHello) are shed only by the cap, the defence under test; the flood is
    sized from the server's own file limit and cap, and each phase waits on what the
    server reports, not on a clock."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    file_limit = min(FLOOD_FILE_LIMIT, hard)
    if file_limit < 1024:
        pytest.skip(f"the hard file limit ({hard}) is too low for a flood past a server's cap")
    cap = connection_cap(file_limit)
    # Past the server's file limit, not only its cap; not so far past that evictions
    # come faster than the header timeout (then no slow head would live to meet it).
    idle_total = file_limit + 256
    per_helper = max(256, hard - 200)
    counts = [min(per_helper, idle_total - k) for k in range(0, idle_total, per_helper)]
    args = ("--request-header-timeout", "3", "--tls-handshake-timeout", "600")
    with run_apiserver_process(in_memory=True, extra_args=args, file_limit=file_limit) as srv:
        host, port = srv.url.split("//")[1].rsplit(":", 1)
        limit_text = open(f"/proc/{srv.pid}/limits").read()
        server_limit = next(
            int(line.split()[3]) for line in limit_text.splitlines() if "open files" in line
        )
        assert server_limit == file_limit
        m = await asyncio.to_thread(metrics, srv)
        assert m["gpuyard_apiserver_connection_limit"] == cap
        assert idle_total > server_limit > cap
        idlers = [helper("idle", host, port, str(n), "900") for n in counts]
        slow = helper("slow", host, port, "300", "900", srv.ca_file)
        client = Client.from_kubeconfig(srv.kubeconfig, component="legit")
        fresh_lat: list[float] = []
        kept_lat: list[float] = []
        max_fds = 0
        rounds = 20
        try:
            # Wait until the flood is at full strength: it holds the server at its
            # cap, has gone past it (connections shed), and slow heads are being cut
            # off by the header timeout.
            deadline = time.monotonic() + 300  # a bound on the condition, not a timing
            while True:
                m = await asyncio.to_thread(metrics, srv)
                opened = m['gpuyard_apiserver_connections{state="open"}']
                timed_out = m[HEADER_TIMEOUTS]
                if opened >= cap - 50 and _shed(m) > 0 and timed_out > 0:
                    break
                for p in [*idlers, slow]:
                    assert p.poll() is None, f"a flood helper ended early: {finish(p)}"
                assert time.monotonic() < deadline, (
                    f"the flood reached {opened} of {cap} connections, shed {_shed(m)}, "
                    f"{timed_out} header time-outs"
                )
                await asyncio.sleep(0.5)
            shed_before = _shed(m)
            ctx = srv.ssl_context()
            # The legitimate client at work while the flood goes on: a kept-alive
            # client creating and reading objects, and a fresh connection per request.
            for i in range(rounds):
                t0 = time.perf_counter()
                created = await client.create(
                    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"ok-{i}"}},
                    namespace="default",
                )
                got = await client.get(CONFIGMAPS, f"ok-{i}", namespace="default")
                assert got["metadata"]["uid"] == created["metadata"]["uid"]
                kept_lat.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                async with aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(ssl=ctx, force_close=True),
                    timeout=aiohttp.ClientTimeout(total=60),
                ) as s:
                    async with s.get(srv.url + CM + f"/ok-{i}", headers=srv.headers) as r:
                        assert r.status == 200, await r.text()
                        assert (await r.json())["metadata"]["name"] == f"ok-{i}"
                fresh_lat.append(time.perf_counter() - t0)
                max_fds = max(max_fds, fd_count(srv.pid))
            # The flood was still on: it fills the server to its cap again (between waves of slow
            # heads timing out it may stand a little below), never past it.
            deadline = time.monotonic() + 120
            while True:
                m = await asyncio.to_thread(metrics, srv)
                opened = m['gpuyard_apiserver_connections{state="open"}']
                assert opened <= cap
                if opened >= cap - 50:
                    break
                assert time.monotonic() < deadline, f"the flood holds only {opened} of {cap}"
                await asyncio.sleep(0.2)
            # The server made room for them: by shedding flood connections, or, when a
            # wave of slow heads had just timed out, in the room that wave left.
            assert _shed(m) > shed_before or m[HEADER_TIMEOUTS] > timed_out, (
                _shed(m),
                m[HEADER_TIMEOUTS],
            )
            assert 0 < max_fds < server_limit
            for p in [*idlers, slow]:
                assert p.poll() is None, f"a flood helper ended early: {finish(p)}"
        finally:
            await client.close()
            slow_stats = _stop(slow)
            idle_stats = [_stop(p) for p in idlers]
        # Every slow-header client was cut off by the server long before it ended
        # its 30 s trickle (header timeout 3 s; evicted ones went sooner).
        assert slow_stats["completed"] == 0, slow_stats
        assert slow_stats["closed_by_server"] > 0, slow_stats
        assert sum(s["max_open"] for s in idle_stats) >= cap - 50, idle_stats
        assert sum(s["closed_by_server"] for s in idle_stats) > 0, idle_stats
        print(
            json.dumps(
                {
                    "server_file_limit": server_limit,
                    "server_cap": cap,
                    "idle_connections": idle_total,
                    "legit_rounds": rounds,
                    "kept_alive_p99_ms": pct(kept_lat, 0.99),
                    "fresh_connection_p99_ms": pct(fresh_lat, 0.99),
                    "idle": idle_stats,
                    "slow": slow_stats,
                }
            )
        )


async def _burst(srv: ServerProcess, n: int, prefix: str) -> list[tuple[int, Any, Any]]:
    hdr = {**srv.headers, "Content-Type": "application/json"}
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=srv.ssl_context(), limit=0)
    ) as s:

        async def one(i: int) -> tuple[int, Any, Any]:
            body = orjson.dumps({"metadata": {"name": f"{prefix}{i}"}, "data": {"i": str(i)}})
            async with s.post(srv.url + CM, data=body, headers=hdr) as r:
                return r.status, r.headers.get("Retry-After"), await r.json()

        return await asyncio.gather(*(one(i) for i in range(n)))


async def test_a_burst_of_creates_gets_429_with_retry_after_and_clients_retry() -> None:
    with run_apiserver_process() as srv:  # persistent store: writes wait for commits
        res = await _burst(srv, 1000, "b")
        codes = Counter(st for st, _, _ in res)
        assert set(codes) <= {201, 429}, codes
        assert codes[429] > 0 and codes[201] > 0, codes
        for st, retry_after, body in res:
            if st == 429:
                assert retry_after is not None and int(retry_after) >= 1
                assert body["kind"] == "Status" and body["reason"] == "TooManyRequests"
                assert body["code"] == 429
                assert body["details"]["retryAfterSeconds"] == int(retry_after)
        m = metrics(srv)
        rejected = m[
            'apiserver_flowcontrol_rejected_requests_total{reason="queue-full",'
            'request_kind="mutating"}'
        ]
        assert rejected == codes[429]
        # Nothing refused was stored; what was acknowledged is there.
        async with Client.from_kubeconfig(srv.kubeconfig) as c:
            names = {
                o["metadata"]["name"]
                for o in (await c.list(CONFIGMAPS, namespace="default"))["items"]
            }
        want = {body["metadata"]["name"] for st, _, body in res if st == 201}
        assert {n for n in names if n.startswith("b")} == want

        # gpuyard's own client: the same burst, retried honouring Retry-After (with
        # 1,000 connections: by default it keeps at most 64 requests in flight).
        cfg = load_kubeconfig(srv.kubeconfig)
        wide = FastTransport(cfg.server, cfg.ssl_context(), max_connections=1000)
        async with Client(config=cfg, transport=wide, component="burst") as c:
            made = await asyncio.gather(
                *(
                    c.create(
                        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"g{i}"}},
                        namespace="default",
                    )
                    for i in range(1000)
                )
            )
            assert len({o["metadata"]["uid"] for o in made}) == 1000
        assert (
            metrics(srv)[
                'apiserver_flowcontrol_rejected_requests_total{reason="queue-full",'
                'request_kind="mutating"}'
            ]
            > rejected
        )


def _official_client(srv: ServerProcess) -> Any:
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config
    from urllib3.util.retry import Retry

    cfg = k8s.Configuration()
    k8s_config.load_kube_config(config_file=srv.kubeconfig, client_configuration=cfg)
    # As a user would configure it: retry 429 (POST too: a 429 was not processed),
    # honouring Retry-After, with a bound on the attempts.
    cfg.retries = Retry(
        total=20,
        status_forcelist=[429],
        allowed_methods=None,
        respect_retry_after_header=True,
        backoff_factor=0.1,
        raise_on_status=True,
    )
    cfg.connection_pool_maxsize = 64
    return k8s.CoreV1Api(k8s.ApiClient(cfg))


class SlotHog(threading.Thread):
    """A create whose body arrives `hold` seconds after its head, sent with the user
    agent `agent`: it holds one of that client's in-flight slots all that time."""

    def __init__(self, srv: ServerProcess, agent: str, name: str, hold: float) -> None:
        super().__init__(daemon=True)
        self.srv, self.agent, self.obj, self.hold = srv, agent, name, hold
        self.status = 0
        self.started_head = threading.Event()

    def run(self) -> None:
        host, port = self.srv.url.split("//")[1].rsplit(":", 1)
        body = json.dumps({"metadata": {"name": self.obj}}).encode()
        head = (
            f"POST {CM} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {self.agent}\r\n"
            f"Authorization: Bearer {self.srv.token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        raw = socket.create_connection((host, int(port)), timeout=60)
        with self.srv.ssl_context().wrap_socket(raw, server_hostname=host) as s:
            s.sendall(head + body[:5])
            self.started_head.set()
            time.sleep(self.hold)
            s.sendall(body[5:])
            answer = b""
            while b"\r\n" not in answer:
                chunk = s.recv(4096)
                if not chunk:
                    break
                answer += chunk
        self.status = int(answer.split(b" ", 2)[1]) if answer else -1


def hog(srv: ServerProcess, agent: str, slots: int, hold: float) -> list[SlotHog]:
    hogs = [
        SlotHog(srv, agent, f"hog-{agent.split('/')[0].lower()}-{i}", hold) for i in range(slots)
    ]
    for h in hogs:
        h.start()
    for h in hogs:
        assert h.started_head.wait(30)
    time.sleep(0.3)  # the server has read their heads and holds the slots
    return hogs


# Each client may have 4 requests in flight and none waiting: while a client's
# 4 slots are held (by SlotHog) every request it makes gets 429 at once.
SMALL = ("--max-client-requests-inflight", "4", "--max-queued-requests", "0")


def test_official_client_retries_429_until_every_create_succeeds() -> None:
    from kubernetes import __version__ as k8s_version

    with run_apiserver_process(extra_args=SMALL) as srv:
        api = _official_client(srv)
        errors: list[BaseException] = []
        created: list[str] = []
        agent = f"OpenAPI-Generator/{k8s_version}/python"  # the client's own user agent
        hogs = hog(srv, agent, 4, 3.0)

        def worker(part: range) -> None:
            for i in part:
                try:
                    body = {"metadata": {"name": f"py-{i}"}, "data": {"i": str(i)}}
                    obj = api.create_namespaced_config_map("default", body)
                    created.append(obj.metadata.name)
                except BaseException as exc:
                    errors.append(exc)

        threads = [threading.Thread(target=worker, args=(range(t, 1000, 8),)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        for h in hogs:
            h.join(60)
            assert h.status == 201
        assert not errors, errors[:3]
        assert len(set(created)) == 1000
        m = metrics(srv)
        assert m['apiserver_request_total{code="429",resource="configmaps",verb="create"}'] >= 8
        names = {o["metadata"]["name"] for o in _list_configmaps(srv)}
        assert {f"py-{i}" for i in range(1000)} <= names


def test_kubectl_retries_429_until_every_create_succeeds() -> None:
    with run_apiserver_process(extra_args=SMALL) as srv:
        hogs = hog(srv, "kubectl/hog", 4, 3.0)
        tmp = tempfile.mkdtemp(prefix="gpuyard-load-")
        kubectls = []
        for p in range(2):
            path = os.path.join(tmp, f"list-{p}.json")
            items = [
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"kc-{p}-{j}"}}
                for j in range(20)
            ]
            with open(path, "w") as f:
                json.dump({"apiVersion": "v1", "kind": "List", "items": items}, f)
            kubectls.append(
                subprocess.Popen(
                    [KUBECTL, "--kubeconfig", srv.kubeconfig, "create", "-f", path]
                    + ["--validate=false", "-v=4"],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        outs = [p.communicate(timeout=300) for p in kubectls]
        for h in hogs:
            h.join(60)
            assert h.status == 201
        for p, (out, err) in zip(kubectls, outs, strict=True):
            assert p.returncode == 0, err[-2000:]
            assert out.count("created") == 20, out
            assert "Retry-After" in err, "kubectl was never refused"
        names = {o["metadata"]["name"] for o in _list_configmaps(srv)}
        assert {f"kc-{p}-{j}" for p in range(2) for j in range(20)} <= names


def _list_configmaps(srv: ServerProcess) -> list[dict[str, Any]]:
    with urllib.request.urlopen(
        urllib.request.Request(srv.url + CM, headers=srv.headers), context=srv.ssl_context()
    ) as r:
        return list(json.loads(r.read())["items"])
