"""TrainingJob timings on the embedded cluster; prints JSON.

Starts `gpuyard up` (scheduler and jobs controller) with N simulated nodes, submits a
job with R whole-node replicas, and measures seconds from submit to every worker
Running; then takes one worker's node down and measures seconds until the restarted
gang is Running again. Defaults: 7,500 nodes, 1,000 replicas (targets 10 s and 15 s);
`--quick`: 300 nodes, 100 replicas. Leases every 10 s, a node counts as lost after 12 s
without one; the restart time includes that detection.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from typing import Any

from gpuyard.cluster.testing import start_cluster_process
from gpuyard.kube.resources import TRAINING_JOBS

GRACE = 12  # seconds without a lease before a node counts as lost (includes detection)


def job(replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "gpuyard.io/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": "bench", "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "gpusPerReplica": 8,
            "backoffLimit": 3,
            "template": {"spec": {"containers": [{"name": "t", "image": "trainer"}]}},
        },
    }


async def measure(kubeconfig: str, replicas: int, fault: Any) -> dict[str, Any]:
    from gpuyard.kube.client import Client

    async with Client.from_kubeconfig(kubeconfig, component="bench") as c:

        async def status() -> dict[str, Any]:
            return (await c.get(TRAINING_JOBS, "bench", "default")).get("status") or {}

        async def until(pred: Any, timeout: float) -> float:
            t0 = time.monotonic()
            while time.monotonic() - t0 < timeout:
                if pred(await status()):
                    return time.monotonic() - t0
                await asyncio.sleep(0.1)
            raise TimeoutError("job did not get there in time")

        t0 = time.monotonic()
        await c.create(job(replicas))
        await until(lambda s: s.get("phase") == "Running", 600)
        submit_to_running = time.monotonic() - t0
        pods = (await c.list(("v1", "Pod"), "default", label_selector="gpuyard.io/job=bench"))[
            "items"
        ]
        node = pods[0]["spec"]["nodeName"]
        before = (await status()).get("restarts", 0)
        t1 = time.monotonic()
        fault(node)
        await until(lambda s: s.get("restarts", 0) > before and s.get("phase") == "Running", 600)
        restart = time.monotonic() - t1
    return {
        "submit_to_all_running_s": round(submit_to_running, 2),
        "node_loss_to_running_again_s": round(restart, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--nodes", type=int)
    ap.add_argument("--replicas", type=int)
    args = ap.parse_args()
    nodes = args.nodes or (300 if args.quick else 7500)
    replicas = args.replicas or (100 if args.quick else 1000)
    with tempfile.TemporaryDirectory() as d:
        t0 = time.monotonic()
        c = start_cluster_process(
            d,
            nodes,
            ["--components", "scheduler,jobs", "--node-grace", str(GRACE), "--lease-seconds", "10"],
            timeout=600,
        )
        try:
            ready = time.monotonic() - t0
            out = asyncio.run(measure(c.kubeconfig, replicas, lambda n: c.fault("node-down", n)))
        finally:
            c.kill()
    print(
        json.dumps(
            {
                "nodes": nodes,
                "replicas": replicas,
                "cluster_ready_s": round(ready, 1),
                **out,
                "node_grace_s": GRACE,
                "targets_s": {"submit_to_all_running": 10, "restart": 15},
            }
        )
    )


if __name__ == "__main__":
    main()
