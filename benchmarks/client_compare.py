"""Which Kubernetes client should gpuyard use? Measure, then decide.

Compares, against one API server in the same run:
  - thin:      gpuyard.kube.Client (asyncio over aiohttp + orjson, plain dicts)
  - lightkube: lightkube.AsyncClient with its typed models (its normal use)
  - kr8s:      kr8s.asyncio API objects (its normal use), and kr8s with raw=True dicts
on two jobs a controller does all day at the 7,500-node scale:
  1. listing every Node (7,500 realistic nodes, about 3 KB each on the wire), and
  2. consuming watch events (node updates replayed from a resourceVersion).
Each figure is the median of `repeat` runs: wall seconds and the client's own CPU
seconds (the server runs in another process, so CPU time is the client's cost and is
less disturbed by other load on a shared machine). Ratios are against `thin`.

    python benchmarks/client_compare.py                  # starts the embedded server
    python benchmarks/client_compare.py --url URL --token T [--ca-file F]

`compare_clients(url, token)` returns the results as a dict; __main__ prints JSON.
Creates (once) nodes named bench-node-NNNNN and patches some of their annotations.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import yaml

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gpuyard.kube.client import Client  # noqa: E402
from gpuyard.kube.kubeconfig import ConnectionConfig  # noqa: E402
from gpuyard.kube.resources import NODES  # noqa: E402


def bench_node(i: int) -> dict[str, Any]:
    """A node shaped like a real 8-GPU node (labels, annotations, status)."""
    name = f"bench-node-{i:05d}"
    conds = [
        {
            "type": t,
            "status": "True" if t == "Ready" else "False",
            "reason": f"Kubelet{t}",
            "message": f"kubelet reports {t} condition for {name}",
            "lastHeartbeatTime": "2026-01-01T00:00:00Z",
            "lastTransitionTime": "2026-01-01T00:00:00Z",
        }
        for t in ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure", "NetworkUnavailable")
    ]
    res = {
        "cpu": "96",
        "memory": "1056816852Ki",
        "nvidia.com/gpu": "8",
        "ephemeral-storage": "3750000000Ki",
        "pods": "110",
        "hugepages-1Gi": "0",
        "hugepages-2Mi": "0",
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "node.kubernetes.io/instance-type": "Standard_ND96asr_v4",
                "topology.kubernetes.io/zone": f"zone-{i % 3}",
                "topology.kubernetes.io/region": "westus2",
                "gpuyard.io/pool": "gpu",
                "gpuyard.io/rack": f"rack-{i // 32:04d}",
                "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB",
                "nvidia.com/gpu.count": "8",
            },
            "annotations": {
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
                "gpuyard.io/last-check": "2026-01-01T00:00:00Z",
            },
        },
        "spec": {"podCIDR": f"10.{i // 250}.{i % 250}.0/24", "providerID": f"sim://{name}"},
        "status": {
            "capacity": res,
            "allocatable": res,
            "conditions": conds,
            "addresses": [
                {"type": "InternalIP", "address": f"10.200.{i // 250}.{i % 250}"},
                {"type": "Hostname", "address": name},
            ],
            "nodeInfo": {
                "machineID": f"{i:032x}",
                "systemUUID": f"{i:08x}-0000-0000-0000-000000000000",
                "bootID": f"{i:08x}-1111-1111-1111-111111111111",
                "kernelVersion": "5.15.0-1051-azure",
                "osImage": "Ubuntu 22.04.3 LTS",
                "containerRuntimeVersion": "containerd://1.7.2",
                "kubeletVersion": "v1.29.2",
                "kubeProxyVersion": "v1.29.2",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
            "images": [
                {"names": [f"registry.example/train/image-{k}:v{k}"], "sizeBytes": 10**9 + k}
                for k in range(4)
            ],
        },
    }


def _kubeconfig_file(url: str, token: str, ca_file: str | None) -> str:
    cluster: dict[str, Any] = {"server": url}
    if ca_file:
        cluster["certificate-authority"] = ca_file
    elif url.startswith("https"):
        cluster["insecure-skip-tls-verify"] = True
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "bench",
        "clusters": [{"name": "bench", "cluster": cluster}],
        "users": [{"name": "bench", "user": {"token": token}}],
        "contexts": [{"name": "bench", "context": {"cluster": "bench", "user": "bench"}}],
    }
    fd, path = tempfile.mkstemp(prefix="gpuyard-bench-", suffix=".kubeconfig")
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(doc, f)
    return path


async def _measure(fn: Callable[[], Awaitable[int]], repeat: int) -> dict[str, Any]:
    walls, cpus, count = [], [], 0
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        count = await fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return {
        "wall_s": round(statistics.median(walls), 4),
        "cpu_s": round(statistics.median(cpus), 4),
        "items": count,
    }


async def _populate(c: Client, nodes: int) -> None:
    have = await c.list(NODES, label_selector="gpuyard.io/pool=gpu", limit=5000)
    names = {n["metadata"]["name"] for n in have["items"]}
    todo = [i for i in range(nodes) if f"bench-node-{i:05d}" not in names]
    for k in range(0, len(todo), 200):
        await asyncio.gather(*(c.create(bench_node(i)) for i in todo[k : k + 200]))


async def _make_events(c: Client, events: int, nodes: int) -> str:
    """Patch `events` times the first `nodes` bench nodes, round robin (a heartbeat-like
    annotation); returns the RV before."""
    rv0 = str((await c.list(NODES, limit=1))["metadata"]["resourceVersion"])
    for k in range(0, events, 200):
        await asyncio.gather(
            *(
                c.patch(
                    NODES,
                    f"bench-node-{i % nodes:05d}",
                    {"metadata": {"annotations": {"gpuyard.io/last-check": f"t{i}"}}},
                )
                for i in range(k, min(k + 200, events))
            )
        )
    return rv0


async def _run(
    url: str, token: str, ca_file: str | None, nodes: int, events: int, repeat: int
) -> dict[str, Any]:
    cfg = ConnectionConfig(server=url, token=token, ca_file=ca_file)
    if url.startswith("https") and not ca_file:
        cfg.insecure_skip_tls_verify = True
    thin = Client(config=cfg, component="bench")
    await _populate(thin, nodes)
    rv0 = await _make_events(thin, events, nodes)
    kubeconfig = _kubeconfig_file(url, token, ca_file)
    results: dict[str, Any] = {"nodes": nodes, "watch_events": events, "repeat": repeat}
    sample = (await thin.list(NODES, limit=1))["items"][0]
    results["node_bytes"] = len(orjson.dumps(sample))

    warnings.filterwarnings("ignore", module="kr8s")  # "version not supported" notice
    import kr8s.asyncio
    import lightkube
    from lightkube.resources.core_v1 import Node

    lk = lightkube.AsyncClient(config=lightkube.KubeConfig.from_file(kubeconfig))
    kr = await kr8s.asyncio.api(kubeconfig=kubeconfig)

    # Every consumer reads each node's name and allocatable GPUs, so libraries that
    # parse lazily pay for what a controller would really touch.
    def use_dict(n: dict[str, Any]) -> int:
        return len(n["metadata"]["name"]) + len(n["status"]["allocatable"]["nvidia.com/gpu"])

    def use_lk(n: Any) -> int:
        return len(n.metadata.name) + len(n.status.allocatable["nvidia.com/gpu"])

    def use_kr(n: Any) -> int:
        return len(n.name) + len(n.status.allocatable["nvidia.com/gpu"])

    async def thin_list() -> int:
        return len([use_dict(n) for n in (await thin.list(NODES))["items"]])

    async def thin_list_paged() -> int:
        return len([use_dict(n) for n in (await thin.list(NODES, limit=500))["items"]])

    async def lk_list() -> int:
        return len([use_lk(n) async for n in lk.list(Node)])

    async def lk_list_dicts() -> int:
        # gpuyard's policy code takes plain dicts: what lightkube would cost us
        return len([use_dict(n.to_dict()) async for n in lk.list(Node)])

    async def lk_list_paged() -> int:
        return len([use_lk(n) async for n in lk.list(Node, chunk_size=500)])

    async def kr_list() -> int:
        return len([use_kr(n) async for n in kr.async_get("nodes")])

    async def kr_list_raw() -> int:
        return len([use_dict(n) async for n in kr.async_get("nodes", raw=True)])

    async def thin_watch() -> int:
        n = 0
        async for etype, obj in thin.watch(NODES, resource_version=rv0, allow_bookmarks=False):
            use_dict(obj)
            if etype == "MODIFIED":
                n += 1
                if n >= events:
                    break
        return n

    async def lk_watch() -> int:
        n = 0
        async for etype, obj in lk.watch(Node, resource_version=rv0):
            use_lk(obj)
            if etype == "MODIFIED":
                n += 1
                if n >= events:
                    break
        return n

    async def kr_watch() -> int:
        n = 0
        async for etype, obj in kr.async_watch("nodes", since=rv0):
            use_kr(obj)
            if etype == "MODIFIED":
                n += 1
                if n >= events:
                    break
        return n

    cases: dict[str, Callable[[], Awaitable[int]]] = {
        "list_thin": thin_list,
        "list_thin_paged500": thin_list_paged,
        "list_lightkube": lk_list,
        "list_lightkube_paged500": lk_list_paged,
        "list_lightkube_as_dicts": lk_list_dicts,
        "list_kr8s": kr_list,
        "list_kr8s_raw": kr_list_raw,
        "watch_thin": thin_watch,
        "watch_lightkube": lk_watch,
        "watch_kr8s": kr_watch,
    }
    try:
        for name, fn in cases.items():
            await fn()  # warm up: connections, discovery, imports
            results[name] = await _measure(fn, repeat)
    finally:
        await thin.close()
        await lk.close()
        os.unlink(kubeconfig)
    for job in ("list", "watch"):
        base = results[f"{job}_thin"]
        for name in list(results):
            if name.startswith(f"{job}_") and name != f"{job}_thin" and name in cases:
                r = results[name]
                r["wall_x_thin"] = round(r["wall_s"] / max(base["wall_s"], 1e-9), 2)
                r["cpu_x_thin"] = round(r["cpu_s"] / max(base["cpu_s"], 1e-9), 2)
    return results


def compare_clients(
    url: str,
    token: str,
    *,
    ca_file: str | None = None,
    nodes: int = 7500,
    events: int = 5000,
    repeat: int = 3,
) -> dict[str, Any]:
    """Run the comparison against the API server at `url` (see module docstring)."""
    return asyncio.run(_run(url, token, ca_file, nodes, events, repeat))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url")
    ap.add_argument("--token")
    ap.add_argument("--ca-file")
    ap.add_argument("--nodes", type=int, default=7500)
    ap.add_argument("--events", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    from gpuyard import childgroups

    childgroups.exit_on_signals()  # a signal still stops every server it started
    if args.url:
        out = compare_clients(
            args.url,
            args.token or "",
            ca_file=args.ca_file,
            nodes=args.nodes,
            events=args.events,
            repeat=args.repeat,
        )
    else:
        from gpuyard.apiserver.testing import run_apiserver_process

        with run_apiserver_process(in_memory=True) as srv:
            out = compare_clients(
                srv.url,
                srv.token,
                ca_file=srv.ca_file,
                nodes=args.nodes,
                events=args.events,
                repeat=args.repeat,
            )
            out["server"] = "embedded gpuyard apiserver (subprocess, in memory)"
    print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
