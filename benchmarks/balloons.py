"""Warm capacity on the embedded cluster; prints JSON.

1. gang: `gpuyard up` with N nodes, balloons and the scheduler; once every node holds a
   running balloon, a PodGroup and a G-pod gang (8 GPUs a pod, whole nodes) are
   created; measured: seconds from the gang's creation to all its pods Running (the
   scheduler evicts G balloons first). Target <= 10 s for 1,000 pods on 7,500 nodes.
2. join: `gpuyard up` with no nodes and the simulated cluster-autoscaler (one node
   group, max M); M pods of 8 GPUs are created, the autoscaler asks for M nodes, and
   the API server's request counter (apiserver_request_total from /metrics) is sampled
   every 0.2 s until all M nodes are Ready. Run twice: nodes released at once, and at
   --join-rate nodes per second. Measured: peak requests per second (over any 1 s
   window), seconds until all nodes joined; the figure is the ratio of the peaks.

    python benchmarks/balloons.py            # 7,500 nodes, 1,000-pod gang, 1,000-node scale-up
    python benchmarks/balloons.py --quick    # 1,000 nodes, 200-pod gang, 300-node scale-up

The machine is shared with other work, so figures are noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import tempfile
import time
from typing import Any

from gpuyard.cluster.testing import start_cluster_process
from gpuyard.kube.objects import is_node_ready
from gpuyard.kube.resources import NODES, PODS

SLOW_LEASES = ["--lease-seconds", "10", "--node-grace", "40", "--start-delay", "0.2"]


def gang_pod(i: int, group: str | None) -> dict[str, Any]:
    labels = {"scheduling.x-k8s.io/pod-group": group} if group else {"app": "wide"}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"w-{i}", "namespace": "default", "labels": labels},
        "spec": {
            "schedulerName": "gpuyard-scheduler",
            "priorityClassName": "gpuyard-normal",
            "containers": [
                {"name": "t", "image": "trainer", "resources": {"limits": {"nvidia.com/gpu": 8}}}
            ],
        },
    }


async def create_all(c: Any, objs: list[dict[str, Any]], conc: int = 64) -> None:
    sem = asyncio.Semaphore(conc)

    async def one(o: dict[str, Any]) -> None:
        async with sem:
            await c.create(o)

    await asyncio.gather(*(one(o) for o in objs))


async def count_running(c: Any, ns: str, selector: str) -> int:
    items = (await c.list(PODS, ns, label_selector=selector))["items"]
    return sum(1 for p in items if (p.get("status") or {}).get("phase") == "Running")


async def until_running(c: Any, selector: str, rv: str, n: int) -> None:
    """Until n pods matching the selector are Running, from a watch (no polling load)."""
    running: set[str] = set()
    while True:
        async for typ, pod in c.watch(
            PODS, "default", label_selector=selector, resource_version=rv
        ):
            rv = pod["metadata"]["resourceVersion"]
            if typ != "DELETED" and (pod.get("status") or {}).get("phase") == "Running":
                running.add(pod["metadata"]["name"])
                if len(running) >= n:
                    return


async def gang_case(nodes: int, gang: int) -> dict[str, Any]:
    from gpuyard.kube.client import Client

    with tempfile.TemporaryDirectory() as d:
        t0 = time.monotonic()
        cp = await asyncio.to_thread(
            start_cluster_process,
            d,
            nodes,
            [*SLOW_LEASES, "--in-memory", "--balloons", "--components", "scheduler,balloons"],
            timeout=600,
        )
        try:
            async with Client.from_kubeconfig(cp.kubeconfig, component="bench", timeout=120) as c:
                while await count_running(c, "gpuyard-system", "gpuyard.io/balloon") < nodes:
                    await asyncio.sleep(0.5)
                warm = time.monotonic() - t0
                pg = {
                    "apiVersion": "scheduling.x-k8s.io/v1alpha1",
                    "kind": "PodGroup",
                    "metadata": {"name": "big", "namespace": "default"},
                    "spec": {"minMember": gang},
                }
                sel = "scheduling.x-k8s.io/pod-group=big"
                rv = (await c.list(PODS, "default", label_selector=sel, limit=1))["metadata"][
                    "resourceVersion"
                ]
                watcher = asyncio.create_task(until_running(c, sel, rv, gang))
                t1 = time.monotonic()
                await c.create(pg)
                await create_all(c, [gang_pod(i, "big") for i in range(gang)])
                created = time.monotonic() - t1
                await asyncio.wait_for(watcher, 600)
                to_running = time.monotonic() - t1
                await asyncio.sleep(2)
                balloons = (
                    await c.list(PODS, "gpuyard-system", label_selector="gpuyard.io/balloon")
                )["items"]
                pending = sum(1 for p in balloons if not p["spec"].get("nodeName"))
        finally:
            cp.kill()
    return {
        "nodes": nodes,
        "gang_pods": gang,
        "seconds_until_every_node_held_a_balloon": round(warm, 1),
        "seconds_to_create_gang": round(created, 2),
        "seconds_gang_created_to_all_running": round(to_running, 2),
        "target_seconds": 10,
        "balloons_pending_after": pending,
    }


_REQ = re.compile(r"^apiserver_request_total\{[^}]*\} ([0-9.e+]+)$", re.M)


async def request_total(c: Any) -> float:
    resp = await c._send("GET", "/metrics", None, None, None)  # text, not JSON
    text = (await resp.read()).decode()
    return sum(float(x) for x in _REQ.findall(text))


async def join_case(nodes: int, rate: float) -> dict[str, Any]:
    from gpuyard.kube.client import Client

    with tempfile.TemporaryDirectory() as d:
        cp = await asyncio.to_thread(
            start_cluster_process,
            d,
            0,
            [
                *SLOW_LEASES,
                "--in-memory",
                "--autoscale",
                f"gpu=0:{nodes}",
                "--join-rate",
                str(rate),
                "--components",
                "scheduler",
                "--set",
                "autoscaler_scan_s=5",
                "--set",
                "autoscaler_preflight=false",
            ],
            timeout=120,
        )
        try:
            async with Client.from_kubeconfig(cp.kubeconfig, component="bench") as c:
                await create_all(c, [gang_pod(i, None) for i in range(nodes)])
                samples: list[tuple[float, float]] = []
                t0 = time.monotonic()
                done_at = None
                while time.monotonic() - t0 < 300:
                    samples.append((time.monotonic(), await request_total(c)))
                    if len(samples) % 5 == 0 and done_at is None:
                        items = (await c.list(NODES))["items"]
                        if sum(1 for n in items if is_node_ready(n)) >= nodes:
                            done_at = time.monotonic()
                    if done_at is not None and time.monotonic() - done_at > 5:
                        break
                    await asyncio.sleep(0.2)
                items = (await c.list(NODES))["items"]
        finally:
            cp.kill()
    peak = 0.0
    j = 0
    for i in range(len(samples)):
        while samples[i][0] - samples[j][0] > 1.0:
            j += 1
        k = max(0, j - 1)
        dt = samples[i][0] - samples[k][0]
        if dt >= 0.9:
            peak = max(peak, (samples[i][1] - samples[k][1]) / dt)
    total_s = samples[-1][0] - samples[0][0]
    return {
        "nodes": nodes,
        "join_rate_per_s": rate or "unlimited",
        "nodes_joined": len(items),
        "seconds_until_all_ready": round((done_at or samples[-1][0]) - t0, 1),
        "peak_requests_per_s": round(peak),
        "mean_requests_per_s": round((samples[-1][1] - samples[0][1]) / total_s),
    }


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--nodes", type=int)
    ap.add_argument("--gang", type=int)
    ap.add_argument("--scale-up", type=int)
    ap.add_argument("--join-rate", type=float, default=100.0)
    ap.add_argument("--skip", choices=["gang", "join"], action="append", default=[])
    a = ap.parse_args()
    nodes = a.nodes or (1000 if a.quick else 7500)
    gang = a.gang or (200 if a.quick else 1000)
    scale = a.scale_up or (300 if a.quick else 1000)
    out: dict[str, Any] = {}
    if "gang" not in a.skip:
        out["gang_on_balloons"] = await gang_case(nodes, gang)
    if "join" not in a.skip:
        burst = await join_case(scale, 0)
        smooth = await join_case(scale, a.join_rate)
        out["scale_up"] = {
            "all_at_once": burst,
            "smoothed": smooth,
            "peak_ratio_at_once_over_smoothed": round(
                burst["peak_requests_per_s"] / max(1, smooth["peak_requests_per_s"]), 2
            ),
        }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    asyncio.run(main())
