"""Benchmark of the embedded API server; prints JSON.

Measures, against `python -m gpuyard.apiserver` in a subprocess with persistence on:
- acknowledged writes/s creating 7,500 nodes and 75,000 pods (concurrent connections,
  from client worker processes), and the server's CPU seconds per 1,000 of them;
- the time of a full node list over HTTP (ms, median of 5);
- watch delivery latency p50/p99 with 100 watchers under ~1,000 writes/s;
- peak RSS of the server process;
- the OpenAPI documents: RSS they add once built and cached, time to fetch them all
  the first time (built) and again (cached);
- the cost of authorization: writes/s creating ConfigMaps as a ServiceAccount whose
  rights come from RBAC (among 1,000 other bindings) against the same writes with the
  admin token (system:masters: no rule is looked at), and the time authentication and
  authorization take per request in-process, as a share of a write's time.

    python benchmarks/apiserver.py [--quick] [--nodes N] [--pods N]
    python benchmarks/apiserver.py --baseline-commit REV [--rounds N]   # ratios to REV

Targets on a 2-core machine: >= 2,000 writes/s, list <= 300 ms, watch p99 <= 50 ms,
RSS <= 1.5 GiB. The client runs on the same machine and competes for the cores.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import shutil
import signal
import ssl
import statistics
import sys
import tempfile
import time
from typing import Any

import aiohttp
import orjson

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gpuyard.apiserver.testing import run_apiserver_process  # noqa: E402


def node(i: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": f"node-{i:05d}",
            "labels": {
                "gpuyard.io/pool": "gpu",
                "gpuyard.io/rack": f"rack-{i // 32}",
                "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
                "topology.kubernetes.io/zone": f"zone-{i % 3}",
            },
        },
        "spec": {"podCIDR": f"10.{i // 256}.{i % 256}.0/24"},
        "status": {
            "capacity": {"cpu": "96", "memory": "1843Gi", "nvidia.com/gpu": "8", "pods": "110"},
            "allocatable": {"cpu": "94", "memory": "1800Gi", "nvidia.com/gpu": "8", "pods": "110"},
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "lastHeartbeatTime": "2026-01-01T00:00:00Z",
                }
            ],
            "addresses": [{"type": "InternalIP", "address": f"10.0.{i // 256}.{i % 256}"}],
            "nodeInfo": {
                "architecture": "amd64",
                "bootID": f"boot-{i}",
                "containerRuntimeVersion": "containerd://2.0.0",
                "kernelVersion": "6.8.0",
                "kubeProxyVersion": "",
                "kubeletVersion": "v1.36.0-gpuyard",
                "machineID": f"m-{i}",
                "operatingSystem": "linux",
                "osImage": "Ubuntu 24.04",
                "systemUUID": f"u-{i}",
            },
        },
    }


def pod(i: int, nodes: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"job-{i // 8:05d}-{i % 8}",
            "labels": {"app": "train", "scheduling.x-k8s.io/pod-group": f"job-{i // 8:05d}"},
        },
        "spec": {
            "schedulerName": "gpuyard-scheduler",
            "nodeName": f"node-{i % nodes:05d}",
            "containers": [
                {
                    "name": "main",
                    "image": "trainer:latest",
                    "resources": {
                        "requests": {"nvidia.com/gpu": "1", "cpu": "10"},
                        "limits": {"nvidia.com/gpu": "1"},
                    },
                }
            ],
        },
    }


def _ctx(ca_file: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_file)


async def _post_many(
    url: str, token: str, ca: str, items: list[tuple[str, bytes]], conns: int
) -> int:
    hdr = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    ok = 0
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=_ctx(ca), limit=conns)
    ) as s:
        it = iter(items)

        async def worker() -> None:
            nonlocal ok
            for path, body in it:
                async with s.post(url + path, data=body, headers=hdr) as r:
                    await r.read()
                    if r.status == 201:
                        ok += 1

        await asyncio.gather(*[worker() for _ in range(conns)])
    return ok


def _client_proc(args: tuple[str, str, str, list[tuple[str, bytes]], int]) -> int:
    url, token, ca, items, conns = args
    return asyncio.run(_post_many(url, token, ca, items, conns))


def _worker_signals() -> None:
    """A client worker ends at the pool's SIGTERM: the handler it inherits through fork
    (childgroups.exit_on_signals: SystemExit and the exit's clean-up) could hang it on
    a lock copied mid-use, and the pool then waits for it for ever."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def write_phase(
    url: str, token: str, ca: str, items: list[tuple[str, bytes]], procs: int = 2, conns: int = 32
) -> tuple[int, float]:
    chunks = [items[i::procs] for i in range(procs)]
    t0 = time.perf_counter()
    with mp.get_context("fork").Pool(procs, initializer=_worker_signals) as pool:
        oks = pool.map(_client_proc, [(url, token, ca, c, conns) for c in chunks])
    return sum(oks), time.perf_counter() - t0


async def list_nodes(url: str, token: str, ca: str, reps: int = 5) -> tuple[float, int]:
    hdr = {"Authorization": f"Bearer {token}"}
    times = []
    n = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=_ctx(ca))) as s:
        for _ in range(reps):
            t0 = time.perf_counter()
            async with s.get(url + "/api/v1/nodes", headers=hdr) as r:
                body = await r.read()
            times.append(time.perf_counter() - t0)
            n = len(orjson.loads(body)["items"])
    return statistics.median(times) * 1000, n


async def _watchers(
    url: str,
    token: str,
    ca: str,
    path: str,
    rv: str,
    n: int,
    expected: int,
    ready: Any,
    deadline: float,
) -> list[float]:
    hdr = {"Authorization": f"Bearer {token}"}
    lat: list[float] = []
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=_ctx(ca), limit=n + 4)
    ) as s:

        async def watcher() -> None:
            got = 0
            async with s.get(
                url + path,
                headers=hdr,
                params={"watch": "true", "resourceVersion": rv},
                timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
            ) as r:
                with ready.get_lock():
                    ready.value += 1
                # Read whole chunks and find the send stamps in them: far cheaper for
                # the client than splitting lines, so it measures the server more.
                async for chunk in r.content.iter_any():
                    now = time.time()
                    i = chunk.find(b'"sent":"')
                    while i >= 0:
                        j = chunk.find(b'"', i + 8)
                        lat.append(now - float(chunk[i + 8 : j]))
                        got += 1
                        i = chunk.find(b'"sent":"', j)
                    if got >= expected:
                        return

        tasks = [asyncio.create_task(watcher()) for _ in range(n)]
        try:
            await asyncio.wait_for(asyncio.gather(*tasks), max(1.0, deadline - time.time()))
        except TimeoutError:
            pass
    return lat


def _watch_proc(args: tuple[Any, ...], q: Any) -> None:
    try:
        q.put(asyncio.run(_watchers(*args)))
    except BaseException as exc:
        q.put(repr(exc))


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def _per_1000(cpu: float, ok: int) -> float:
    """Server CPU seconds (user + system, all its threads) per 1,000 acknowledged writes:
    steadier than writes/s on a shared machine, since time the server waits for a core
    is not counted."""
    return round(cpu / ok * 1000, 3) if ok else -1.0


def watch_latency(
    url: str,
    token: str,
    ca: str,
    watchers: int,
    rate: int,
    seconds: float,
    server_pid: int,
    procs: int = 2,
) -> dict[str, Any]:
    """Watchers in `procs` client processes; the writer in this one at `rate` writes/s."""
    path = "/api/v1/namespaces/default/configmaps"
    hdr = {"Authorization": f"Bearer {token}"}
    total = int(rate * seconds)

    async def current_rv() -> str:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=_ctx(ca))) as s:
            async with s.get(url + path, headers=hdr) as r:
                return str(orjson.loads(await r.read())["metadata"]["resourceVersion"])

    rv = asyncio.run(current_rv())
    ctx = mp.get_context("fork")
    ready = ctx.Value("i", 0)
    deadline = time.time() + seconds + 30
    per = [watchers // procs + (1 if i < watchers % procs else 0) for i in range(procs)]
    q = ctx.Queue()
    workers = [
        ctx.Process(
            target=_watch_proc,
            args=((url, token, ca, path, rv, n, total, ready, deadline), q),
            daemon=True,
        )
        for n in per
    ]
    for w in workers:
        w.start()
    try:
        while ready.value < watchers:
            if not all(w.is_alive() for w in workers):
                raise RuntimeError(f"a watcher process ended early: {q.get(timeout=5)}")
            time.sleep(0.05)
        time.sleep(0.3)
        cpu0 = _cpu_seconds(server_pid)

        async def writer() -> float:
            whdr = {**hdr, "Content-Type": "application/json"}
            sem = asyncio.Semaphore(32)
            async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=_ctx(ca), limit=32)
            ) as s:

                async def write(i: int) -> None:
                    async with sem:
                        body = orjson.dumps(
                            {
                                "metadata": {
                                    "name": f"w{i}",
                                    "annotations": {"sent": repr(time.time())},
                                },
                                "data": {"i": str(i)},
                            }
                        )
                        async with s.post(url + path, data=body, headers=whdr) as r:
                            await r.read()

                t0 = time.perf_counter()
                sent = 0
                pending = []
                while sent < total:
                    due = int((time.perf_counter() - t0) * rate) + 1
                    while sent < min(due, total):
                        pending.append(asyncio.create_task(write(sent)))
                        sent += 1
                    await asyncio.sleep(0.002)
                await asyncio.gather(*pending)
                return time.perf_counter() - t0

        elapsed = asyncio.run(writer())
        cpu = _cpu_seconds(server_pid) - cpu0
        lats = []
        for _ in workers:
            part = q.get(timeout=max(5.0, deadline - time.time() + 5))
            if isinstance(part, str):
                raise RuntimeError(f"watcher process failed: {part}")
            lats.extend(part)
    finally:
        for w in workers:
            if w.is_alive():
                w.kill()
            w.join(5)
    lats.sort()

    def pct(p: float) -> float:
        return round(lats[min(len(lats) - 1, int(p * len(lats)))] * 1000, 2) if lats else -1.0

    return {
        "watchers": watchers,
        "writes": total,
        "write_rate_achieved": round(total / elapsed, 1),
        "events_expected": total * watchers,
        "events_received": len(lats),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "max_ms": pct(1.0),
        "server_cpu_share_during_writes": round(cpu / elapsed, 2),
    }


def _req(url: str, token: str, ca: str, method: str, path: str, body: Any) -> Any:
    import urllib.request

    r = urllib.request.Request(
        url + path,
        data=orjson.dumps(body),
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(r, context=_ctx(ca), timeout=30) as resp:
        return orjson.loads(resp.read())


RBAC_API = "/apis/rbac.authorization.k8s.io/v1"


def rbac_objects(decoys: int) -> list[tuple[str, dict[str, Any]]]:
    """A namespace, a ServiceAccount that may create ConfigMaps there, and `decoys`
    other ServiceAccounts' bindings (half cluster-wide) so the index has work to do."""
    rule = [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create", "get"]}]
    out: list[tuple[str, dict[str, Any]]] = [
        ("/api/v1/namespaces", {"metadata": {"name": "bench"}}),
        ("/api/v1/namespaces/bench/serviceaccounts", {"metadata": {"name": "writer"}}),
        (f"{RBAC_API}/namespaces/bench/roles", {"metadata": {"name": "writer"}, "rules": rule}),
    ]
    ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "writer"}
    for i in range(decoys):
        subj = [{"kind": "ServiceAccount", "name": f"other-{i}", "namespace": "bench"}]
        if i % 2:
            out.append(
                (
                    f"{RBAC_API}/clusterrolebindings",
                    {
                        "metadata": {"name": f"other-{i}"},
                        "roleRef": {**ref, "kind": "ClusterRole", "name": "view"},
                        "subjects": subj,
                    },
                )
            )
        else:
            out.append(
                (
                    f"{RBAC_API}/namespaces/bench/rolebindings",
                    {"metadata": {"name": f"other-{i}"}, "roleRef": ref, "subjects": subj},
                )
            )
    out.append(
        (
            f"{RBAC_API}/namespaces/bench/rolebindings",
            {
                "metadata": {"name": "writer"},
                "roleRef": ref,
                "subjects": [{"kind": "ServiceAccount", "name": "writer", "namespace": "bench"}],
            },
        )
    )
    return out


def _cms(prefix: str, n: int) -> list[tuple[str, bytes]]:
    return [
        (
            "/api/v1/namespaces/bench/configmaps",
            orjson.dumps({"metadata": {"name": f"{prefix}-{i}"}, "data": {"k": "v" * 64}}),
        )
        for i in range(n)
    ]


def authorization_cost(url: str, token: str, ca: str, writes: int) -> dict[str, Any]:
    """Writes/s as the admin and as an RBAC-authorized ServiceAccount, in turns."""
    for path, obj in rbac_objects(1000):
        _req(url, token, ca, "POST", path, obj)
    sa_token = _req(
        url, token, ca, "POST", "/api/v1/namespaces/bench/serviceaccounts/writer/token", {}
    )["status"]["token"]
    admin, sa = [], []
    for r in range(2):
        ok, secs = write_phase(url, token, ca, _cms(f"admin{r}", writes))
        admin.append(ok / secs)
        ok, secs = write_phase(url, sa_token, ca, _cms(f"sa{r}", writes))
        sa.append(ok / secs)
    a, s = statistics.median(admin), statistics.median(sa)
    micro = asyncio.run(_authz_micro())
    return {
        "admin_writes_per_s": round(a, 1),
        "service_account_writes_per_s": round(s, 1),
        "ratio": round(s / a, 3),
        **micro,
        "share_of_write_time": round(micro["authn_authz_us_per_request"] * s / 1e6, 4),
    }


async def _authz_micro(n: int = 20000) -> dict[str, Any]:
    """Per-request time of authenticating the ServiceAccount's token and authorizing a
    create against the same RBAC objects, in-process."""
    from gpuyard.apiserver import attributes
    from gpuyard.apiserver.server import APIServer

    srv = APIServer(None, persist=False, tls=False)
    await srv.start(listen=False)
    try:
        h = {"Authorization": f"Bearer {srv.token}", "Content-Type": "application/json"}
        for path, obj in rbac_objects(1000):
            await srv.dispatch("POST", path, {}, h, orjson.dumps(obj))
        r = await srv.dispatch(
            "POST", "/api/v1/namespaces/bench/serviceaccounts/writer/token", {}, h, b"{}"
        )
        tok = orjson.loads(r.body)["status"]["token"]
        acc = srv.access
        auth = f"Bearer {tok}"
        path = "/api/v1/namespaces/bench/configmaps"
        user = acc.authn.authenticate(auth)
        assert user is not None
        a = attributes.of_request("POST", path, {})
        assert acc.authorize(user, a)[0]
        t0 = time.perf_counter()
        for _ in range(n):
            u = acc.authn.authenticate(auth)
            assert u is not None
            acc.impersonate(u, h)
            acc.authorize(u, attributes.of_request("POST", path, {}))
        per = (time.perf_counter() - t0) / n * 1e6
        extra = {
            "metadata": {"name": "one-more"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "writer"},
            "subjects": [{"kind": "ServiceAccount", "name": "someone", "namespace": "bench"}],
        }
        await srv.dispatch(
            "POST", f"{RBAC_API}/namespaces/bench/rolebindings", {}, h, orjson.dumps(extra)
        )
        t0 = time.perf_counter()
        acc.authorize(user, a)  # the first request after an RBAC change
        cold = (time.perf_counter() - t0) * 1e6
        acc.rbac.invalidate()
        t0 = time.perf_counter()
        acc.authorize(user, a)  # with the subject index rebuilt from the store
        rebuild = (time.perf_counter() - t0) * 1e6
    finally:
        await srv.stop()
    return {
        "authn_authz_us_per_request": round(per, 2),
        "after_rbac_change_us": round(cold, 1),
        "index_rebuild_us": round(rebuild, 1),
    }


def peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return -1.0


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return -1.0


async def _openapi_fetch_all(url: str, token: str, ca: str) -> tuple[float, int]:
    """Every OpenAPI document kubectl may read (the v3 index and each group-version, v2
    as JSON and as protobuf): (seconds, bytes)."""
    h = {"Authorization": f"Bearer {token}"}
    t0 = time.perf_counter()
    total = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=_ctx(ca))) as s:
        async with s.get(url + "/openapi/v3", headers=h) as r:
            index = orjson.loads(await r.read())
        for entry in index["paths"].values():
            async with s.get(url + entry["serverRelativeURL"], headers=h) as r:
                total += len(await r.read())
        for accept in (
            "application/json",
            "application/com.github.proto-openapi.spec.v2@v1.0+protobuf",
        ):
            async with s.get(url + "/openapi/v2", headers={**h, "Accept": accept}) as r:
                total += len(await r.read())
    return time.perf_counter() - t0, total


def openapi_cost(url: str, token: str, ca: str, pid: int) -> dict[str, Any]:
    """Memory the cached OpenAPI documents add to the server, and the time to serve them
    all the first time (built) and the second time (cached)."""
    before = rss_mib(pid)
    first, size = asyncio.run(_openapi_fetch_all(url, token, ca))
    second, _ = asyncio.run(_openapi_fetch_all(url, token, ca))
    return {
        "documents_bytes": size,
        "first_fetch_ms": round(first * 1000, 1),
        "cached_fetch_ms": round(second * 1000, 1),
        "rss_before_mib": round(before, 1),
        "rss_added_mib": round(rss_mib(pid) - before, 1),
    }


def measure(
    nodes: int, pods: int, watchers: int, rate: int, wsec: float, code_dir: str | None = None
) -> dict[str, Any]:
    """One run of every phase against a fresh server (from `code_dir` if given)."""
    out: dict[str, Any] = {}
    d = tempfile.mkdtemp(prefix="gpuyard-bench-")
    try:
        with run_apiserver_process(d, code_dir=code_dir) as srv:
            ca = srv.ca_file
            items = [("/api/v1/nodes", orjson.dumps(node(i))) for i in range(nodes)]
            cpu0 = _cpu_seconds(srv.pid)
            ok, secs = write_phase(srv.url, srv.token, ca, items)
            out["create_nodes"] = {
                "ok": ok,
                "seconds": round(secs, 2),
                "writes_per_s": round(ok / secs, 1),
                "server_cpu_s_per_1000": _per_1000(_cpu_seconds(srv.pid) - cpu0, ok),
            }
            items = [
                ("/api/v1/namespaces/default/pods", orjson.dumps(pod(i, nodes)))
                for i in range(pods)
            ]
            cpu0 = _cpu_seconds(srv.pid)
            ok, secs = write_phase(srv.url, srv.token, ca, items)
            out["create_pods"] = {
                "ok": ok,
                "seconds": round(secs, 2),
                "writes_per_s": round(ok / secs, 1),
                "server_cpu_s_per_1000": _per_1000(_cpu_seconds(srv.pid) - cpu0, ok),
            }
            ms, n = asyncio.run(list_nodes(srv.url, srv.token, ca))
            out["list_nodes"] = {"items": n, "median_ms": round(ms, 1)}
            out["watch"] = watch_latency(srv.url, srv.token, ca, watchers, rate, wsec, srv.pid)
            out["server_peak_rss_mib"] = round(peak_rss_mib(srv.pid), 1)
            out["openapi"] = openapi_cost(srv.url, srv.token, ca, srv.pid)  # after the peak
            out["store_bytes"] = sum(
                os.path.getsize(os.path.join(d, f))
                for f in os.listdir(d)
                if f.startswith("store.db")
            )
            if code_dir is None:
                out["client"] = _client_figures(srv, ca, nodes)
                out["authorization"] = authorization_cost(
                    srv.url, srv.token, ca, max(500, pods // 10)
                )
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return out


def _client_figures(srv: Any, ca: str | None, nodes: int) -> Any:
    """The client comparison at this run's size (--quick: 750 nodes, not its own 7,500)."""
    try:
        from benchmarks.client_compare import compare_clients  # type: ignore
    except ImportError:
        return None
    try:
        return compare_clients(
            srv.url, srv.token, ca_file=ca, nodes=nodes, events=min(5000, nodes * 2)
        )
    except Exception as exc:  # the comparison is someone else's; report, don't die
        return {"error": repr(exc)}


# The figures compared with --baseline-commit: (section, key, higher is better).
COMPARED = [
    ("create_nodes", "writes_per_s", True),
    ("create_pods", "writes_per_s", True),
    ("create_nodes", "server_cpu_s_per_1000", False),
    ("create_pods", "server_cpu_s_per_1000", False),
    ("list_nodes", "median_ms", False),
    ("watch", "p50_ms", False),
    ("watch", "p99_ms", False),
    ("server_peak_rss_mib", None, False),
]


def _figure(run: dict[str, Any], section: str, key: str | None) -> float:
    v = run[section] if key is None else run[section][key]
    return float(v)


def compare(rev: str, rounds: int, *args: Any) -> dict[str, Any]:
    """Measure `rev` (in a temporary git worktree) and this checkout in turns,
    `rounds` times each, so both see the same machine; medians and their ratios
    (this code / baseline: above 1 is better for throughput, below 1 for times)."""
    from benchmarks.baseline import baseline_tree

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    runs: dict[str, list[dict[str, Any]]] = {"baseline": [], "current": []}
    with baseline_tree(rev, "benchmarks/apiserver.py") as (commit, tree):
        for _ in range(rounds):
            runs["baseline"].append(measure(*args, code_dir=tree))
            runs["current"].append(measure(*args, code_dir=repo))
    out: dict[str, Any] = {"baseline_commit": commit, "rounds": rounds, "figures": {}}
    for section, key, higher in COMPARED:
        name = section if key is None else f"{section}.{key}"
        base = statistics.median(_figure(r, section, key) for r in runs["baseline"])
        cur = statistics.median(_figure(r, section, key) for r in runs["current"])
        out["figures"][name] = {
            "baseline": base,
            "current": cur,
            "ratio": round(cur / base, 3) if base else None,
            "higher_is_better": higher,
            "all_baseline": [_figure(r, section, key) for r in runs["baseline"]],
            "all_current": [_figure(r, section, key) for r in runs["current"]],
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10x smaller run")
    ap.add_argument("--nodes", type=int, default=None)
    ap.add_argument("--pods", type=int, default=None)
    ap.add_argument("--watchers", type=int, default=100)
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--watch-seconds", type=float, default=None)
    ap.add_argument(
        "--baseline-commit",
        metavar="REV",
        default=None,
        help="also measure the code of commit REV (in a temporary git worktree), in "
        "turns with this checkout, and print the ratios",
    )
    ap.add_argument(
        "--rounds", type=int, default=2, help="runs of each side with --baseline-commit"
    )
    a = ap.parse_args()
    from gpuyard import childgroups

    childgroups.exit_on_signals()  # a signal still stops every server it started
    nodes = a.nodes or (750 if a.quick else 7500)
    pods = a.pods or (7500 if a.quick else 75000)
    wsec = a.watch_seconds or (3 if a.quick else 10)
    out: dict[str, Any] = {"cpus": os.cpu_count(), "nodes": nodes, "pods": pods}
    if a.baseline_commit:
        if a.rounds < 1:
            raise SystemExit("benchmarks/apiserver.py: --rounds must be at least 1")
        out.update(compare(a.baseline_commit, a.rounds, nodes, pods, a.watchers, a.rate, wsec))
    else:
        out.update(measure(nodes, pods, a.watchers, a.rate, wsec))
    out["targets"] = {
        "writes_per_s": 2000,
        "list_ms": 300,
        "watch_p99_ms": 50,
        "rss_mib": 1536,
        "authorization_share_of_write_time": 0.05,
    }
    print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
