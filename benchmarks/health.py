"""Health at 7,500 nodes: fault -> taint latency, API writes when healthy, agent CPU.

Drives the real agent loop (`SimAgents`: one task reading every simulated host
directory, as `gpuyard up` runs it) and the real taint reconciler (with the brake) in
one asyncio loop. API writes go to an in-memory recorder that applies them to node
objects and wakes the controller, as a watch would; so the figures are the health
code's own costs, without the API server's. Faults are injected the way the embedded
cluster does (an NVRM Xid 79 line appended to kern.log, or disk.json rewritten to a
full disk) on 1% of nodes (under the 5% brake) at random moments.

    python benchmarks/health.py [--nodes 7500] [--interval 10] [--faults 75]

Prints JSON: fault_to_taint_s p50/p99 (agent check interval dominates), healthy API
writes per node per hour (target 0), agent CPU seconds per node per hour and its share
of one core per node.

    python benchmarks/health.py --embedded [--nodes 1000] [--window 60]

measures the same on a real `gpuyard up --components health` subprocess: the health
component's own API requests (the API server counts them by user agent) over a healthy
window, and seconds from a full disk (written to the simulated host, as `gpuyard fault
disk-full` does) to the taint seen through a watch.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from gpuyard.health.agent import AgentConfig, SimAgents
from gpuyard.health.brake import BrakeConfig
from gpuyard.health.controller import TaintReconciler, current_taint
from gpuyard.health.verdict import Condition, Event, VerdictConfig, conditions_patch
from gpuyard.health.xid import format_xid_line


def make_hosts(root: Path, n: int) -> list[str]:
    gpus = json.dumps(
        {
            "gpus": [
                {
                    "index": i,
                    "pci_bus_id": f"0000:{16 + i:02x}:00.0",
                    "product": "NVIDIA-H100-80GB-HBM3",
                }
                for i in range(8)
            ]
        }
    )
    disk = json.dumps({"mounts": [{"path": "/", "total": 1 << 41, "free": 1 << 40}]})
    net = json.dumps(
        {
            "peers": {},
            "infiniband": [
                {"device": f"mlx5_{i}", "port": 1, "state": "4: ACTIVE", "phys_state": "5: LinkUp"}
                for i in range(8)
            ],
        }
    )
    names = []
    for i in range(n):
        name = f"gpu-{i:05d}"
        d = root / name
        d.mkdir(parents=True)
        (d / "gpus.json").write_text(gpus)
        (d / "disk.json").write_text(disk)
        (d / "net.json").write_text(net)
        (d / "kern.log").write_text("[    1.000000] Linux version 6.5.0\n")
        names.append(name)
    return names


class Api:
    """In-memory stand-in for the API: node objects, counted writes, a change signal."""

    def __init__(self, names: list[str]) -> None:
        self.nodes: dict[str, dict[str, Any]] = {
            n: {
                "metadata": {"name": n, "resourceVersion": "1", "annotations": {}},
                "spec": {"taints": []},
                "status": {"conditions": [{"type": "Ready", "status": "True"}]},
            }
            for n in names
        }
        self.writes = 0
        self.events = 0
        self.changed = asyncio.Event()

    async def write_conditions(self, node: str, changed: list[Condition]) -> None:
        self.writes += 1
        st = self.nodes[node]["status"]
        st["conditions"] = conditions_patch(changed, "2026-01-01T00:00:00Z", st["conditions"])
        self.changed.set()

    async def event(self, node: str, ev: Event) -> None:
        self.events += 1


async def controller(
    api: Api, rec: TaintReconciler, tainted_at: dict[str, float], stop: asyncio.Event
) -> None:
    while not stop.is_set():
        await api.changed.wait()
        api.changed.clear()
        now = time.time()
        for p in rec.reconcile(api.nodes, now).patches:
            api.writes += 1
            node = api.nodes[p.node]
            node["spec"]["taints"] = p.taints
            if p.taint is not None and p.node not in tainted_at:
                tainted_at[p.node] = time.monotonic()


async def main(nodes: int, interval: float, n_faults: int, healthy_passes: int) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="gpuyard-health-bench-"))
    try:
        t0 = time.perf_counter()
        names = make_hosts(root, nodes)
        setup_s = time.perf_counter() - t0
        api = Api(names)
        cfg = AgentConfig(interval_s=interval, verdict=VerdictConfig(quiet_s=300))
        agents = SimAgents(root, api, cfg)
        await agents.tick_all()  # first report: one write per node, once
        first_writes = api.writes

        # Healthy steady state: full passes, nothing should be written.
        api.writes = 0
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for _ in range(healthy_passes):
            await agents.tick_all()
        healthy_cpu = time.process_time() - cpu0
        healthy_wall = time.perf_counter() - wall0
        healthy_writes = api.writes
        pass_s = healthy_wall / healthy_passes
        # Writes per node per hour at the configured interval.
        writes_per_node_hour = healthy_writes / nodes / (healthy_passes * interval / 3600)
        cpu_per_node_hour = healthy_cpu / healthy_passes * (3600 / interval) / nodes

        # Faults at random moments while the agent loop runs at its interval.
        rec = TaintReconciler(BrakeConfig(max_share=0.05, window_s=3600))
        tainted_at: dict[str, float] = {}
        injected: dict[str, float] = {}
        stop = asyncio.Event()
        ctl = asyncio.create_task(controller(api, rec, tainted_at, stop))
        run = asyncio.create_task(agents.run(stop))
        rng = random.Random(7)
        victims = rng.sample(names, n_faults)
        for i, name in enumerate(victims):
            await asyncio.sleep(rng.uniform(0, 2 * interval / n_faults))
            d = root / name
            if i % 2 == 0:
                with open(d / "kern.log", "a") as f:
                    f.write(format_xid_line("0000:13:00", 79, "GPU has fallen off the bus.") + "\n")
            else:
                (d / "disk.json").write_text(
                    json.dumps({"mounts": [{"path": "/", "total": 1 << 41, "free": 1 << 20}]})
                )
            injected[name] = time.monotonic()
        deadline = time.monotonic() + 3 * interval + 30
        while len(tainted_at) < len(victims) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        stop.set()
        api.changed.set()
        await asyncio.gather(run, ctl)
        lat = sorted(tainted_at[n] - injected[n] for n in victims if n in tainted_at)
        effects = {current_taint(api.nodes[n]) for n in victims}
        return {
            "nodes": nodes,
            "agent_interval_s": interval,
            "setup_s": round(setup_s, 1),
            "first_report_writes": first_writes,
            "full_pass_s": round(pass_s, 3),
            "healthy": {
                "passes": healthy_passes,
                "api_writes": healthy_writes,
                "api_writes_per_node_per_hour": writes_per_node_hour,
            },
            "agent_cpu": {
                "cpu_s_per_node_per_hour": round(cpu_per_node_hour, 4),
                "core_share_per_node": cpu_per_node_hour / 3600,
                "cores_all_nodes": round(cpu_per_node_hour * nodes / 3600, 4),
            },
            "faults": {
                "injected": len(victims),
                "tainted": len(lat),
                "taints": sorted(f"{t[0]}:{t[1]}" for t in effects if t),
                "fault_to_taint_s": {
                    "p50": round(statistics.median(lat), 2) if lat else None,
                    "p99": round(lat[min(len(lat) - 1, int(0.99 * len(lat)))], 2) if lat else None,
                    "max": round(lat[-1], 2) if lat else None,
                },
                "brake_tripped": rec.state.tripped,
            },
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _metrics_text(kubeconfig: str) -> str:
    import urllib.request

    from gpuyard.kube.kubeconfig import load_kubeconfig

    cfg = load_kubeconfig(kubeconfig)
    req = urllib.request.Request(cfg.server + "/metrics")
    tok = cfg.bearer_token()
    if tok:
        req.add_header("Authorization", f"Bearer {tok}")
    with urllib.request.urlopen(req, context=cfg.ssl_context(), timeout=30) as r:
        return str(r.read().decode())


def health_requests(kubeconfig: str) -> dict[str, float]:
    """The health component's API requests by verb, from the server's metrics."""
    out: dict[str, float] = {}
    for line in _metrics_text(kubeconfig).splitlines():
        if line.startswith("apiserver_requests_by_user_agent_total{") and "health" in line:
            labels, value = line.rsplit(" ", 1)
            verb = labels.split('verb="', 1)[1].split('"', 1)[0]
            out[verb] = out.get(verb, 0.0) + float(value)
    return out


def embedded(nodes: int, window: float, n_faults: int) -> dict[str, Any]:
    from gpuyard.cluster.testing import start_cluster_process
    from gpuyard.kube.resources import NODES

    root = Path(tempfile.mkdtemp(prefix="gpuyard-health-embedded-"))
    t0 = time.perf_counter()
    c = start_cluster_process(root, nodes, ["--components", "health", "--in-memory"], timeout=600)
    try:
        ready_s = time.perf_counter() - t0
        interval = max(2.0, 0.0015 * nodes)
        # Let the first report (one condition write per node) finish.
        settle_deadline = time.monotonic() + 300
        prev = -1.0
        while time.monotonic() < settle_deadline:
            time.sleep(max(interval, 5.0))
            cur = health_requests(c.kubeconfig).get("patch", 0.0)
            if cur == prev and cur >= nodes:
                break
            prev = cur
        first = health_requests(c.kubeconfig)
        time.sleep(window)
        after = health_requests(c.kubeconfig)
        writes = sum(
            after.get(v, 0) - first.get(v, 0) for v in ("create", "update", "patch", "delete")
        )
        reads = sum(after.get(v, 0) - first.get(v, 0) for v in ("get", "list", "watch"))
        per_hour = 3600 / window / nodes

        async def watch_taints(victims: set[str], t_inject: dict[str, float]) -> list[float]:
            seen: dict[str, float] = {}
            async with c.client("bench") as k:
                rv = (await k.list(NODES, limit=1))["metadata"]["resourceVersion"]
                async for _etype, obj in k.watch(
                    NODES, resource_version=rv, timeout_seconds=int(3 * interval + 60)
                ):
                    if _etype == "BOOKMARK":
                        continue
                    name = obj["metadata"].get("name", "")
                    if name in victims and name not in seen and current_taint(obj):
                        seen[name] = time.monotonic()
                        if len(seen) == len(victims):
                            break
            return sorted(seen[n] - t_inject[n] for n in seen)

        names = [f"gpu-node-{i:04d}" for i in range(nodes)]
        victims = random.Random(3).sample(names, n_faults)
        t_inject: dict[str, float] = {}

        async def run_faults() -> list[float]:
            from gpuyard.cluster.simhost import SimHost

            task = asyncio.create_task(watch_taints(set(victims), t_inject))
            await asyncio.sleep(1.0)
            rng = random.Random(5)
            for v in victims:  # at the host, as `gpuyard fault disk-full` ends up doing
                await asyncio.sleep(rng.uniform(0, 2 * interval / len(victims)))
                t_inject[v] = time.monotonic()
                SimHost(root / "hosts" / v).disk_full()
            return await task

        lat = asyncio.run(run_faults())
        return {
            "mode": "embedded gpuyard up --components health",
            "nodes": nodes,
            "agent_interval_s": interval,
            "cluster_ready_s": round(ready_s, 1),
            "healthy_window_s": window,
            "healthy": {
                "api_writes_per_node_per_hour": writes * per_hour,
                "api_reads_per_node_per_hour": round(reads * per_hour, 4),
            },
            "faults": {
                "injected": n_faults,
                "tainted": len(lat),
                "fault_to_taint_s": {
                    "p50": round(statistics.median(lat), 2) if lat else None,
                    "p99": round(lat[min(len(lat) - 1, int(0.99 * len(lat)))], 2) if lat else None,
                },
            },
        }
    finally:
        c.kill()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=7500)
    ap.add_argument("--interval", type=float, default=10.0)
    ap.add_argument("--faults", type=int, default=75)
    ap.add_argument("--healthy-passes", type=int, default=5)
    ap.add_argument("--embedded", action="store_true", help="measure on gpuyard up")
    ap.add_argument("--window", type=float, default=60.0, help="healthy window (embedded)")
    a = ap.parse_args()
    if a.embedded:
        result = embedded(a.nodes, a.window, min(a.faults, max(1, a.nodes // 20)))
    else:
        result = asyncio.run(main(a.nodes, a.interval, a.faults, a.healthy_passes))
    print(json.dumps(result, indent=2))
