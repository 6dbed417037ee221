"""The embedded cluster's workload controllers at scale: a Deployment of R replicas
rolled out and a DaemonSet on every node, and the API writes they make once idle.

One child process runs an `EmbeddedCluster` of N simulated nodes with the scheduler and
the workloads component (in memory). Measured there:

- daemonset_s: from creating a DaemonSet until the daemon is available on every node
  whose taints it tolerates (daemonset_nodes of them); made first, so the packing
  scheduler cannot fill a node's pod slots before its daemon comes;
- deployment_s: from creating a Deployment of R replicas until R are available;
- idle writes per second (counted by the API server) in a window before the workloads
  exist and in one after they settled; `workloads_idle_writes_per_s` is the difference
  (what the new objects and their controllers cost when nothing happens);
- rollout_s: a new image on the Deployment (what `kubectl set image` sends) until every
  replica is updated and available.

    python benchmarks/workloads.py                    # 7,500 nodes, 1,000 replicas
    python benchmarks/workloads.py --nodes 500 --replicas 200 --window 10

Prints JSON; targets at 7,500 nodes: deployment_s <= 30 and daemonset_s <= 30. The
machine is shared, so figures are noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import subprocess
import sys
import tempfile
import time
from typing import Any

WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}


def _server_writes(server: Any) -> dict[str, float]:
    """Writes the API server counted so far, by "verb resource"."""
    out: dict[str, float] = {}
    for metric in server.metrics.collect():
        for s in metric.samples:
            if s.name == "apiserver_request_total" and s.labels.get("verb") in WRITE_VERBS:
                k = f"{s.labels.get('verb')} {s.labels.get('resource')}"
                out[k] = out.get(k, 0.0) + s.value
    return out


def _deployment(replicas: int, image: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "bench", "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "bench"}},
            "strategy": {"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": {
                "metadata": {"labels": {"app": "bench"}},
                "spec": {
                    "containers": [
                        {"name": "c", "image": image, "resources": {"requests": {"cpu": "10m"}}}
                    ]
                },
            },
        },
    }


def _daemonset() -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "agent", "namespace": "default"},
        "spec": {
            "selector": {"matchLabels": {"app": "agent"}},
            "template": {
                "metadata": {"labels": {"app": "agent"}},
                "spec": {"containers": [{"name": "a", "image": "agent:1"}]},
            },
        },
    }


async def _until(fn: Any, timeout: float, what: str) -> float:
    t0 = time.perf_counter()
    while not await fn():
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError(f"{what} not within {timeout:.0f} s")
        await asyncio.sleep(0.25)
    took = time.perf_counter() - t0
    print(f"{what}: {took:.1f} s", file=sys.stderr, flush=True)
    return took


async def _idle(cluster: Any, window: float) -> tuple[float, dict[str, float]]:
    """Writes per second over `window` seconds, in all and by "verb resource"."""
    w0, t0 = _server_writes(cluster.server), time.perf_counter()
    await asyncio.sleep(window)
    w1, took = _server_writes(cluster.server), time.perf_counter() - t0
    by = {k: round((v - w0.get(k, 0.0)) / took, 1) for k, v in w1.items()}
    by = {k: v for k, v in sorted(by.items(), key=lambda kv: -kv[1]) if v > 0}
    return sum(by.values()), by


async def measure(
    nodes: int, replicas: int, window: float, timeout: float, settle: float = 5.0
) -> dict[str, Any]:
    from gpuyard.cluster.up import EmbeddedCluster, UpOptions
    from gpuyard.kube.resources import BUILTIN

    deploys = BUILTIN[("apps/v1", "Deployment")]
    daemons = BUILTIN[("apps/v1", "DaemonSet")]
    out: dict[str, Any] = {"nodes": nodes, "replicas": replicas}
    with tempfile.TemporaryDirectory(prefix="gpuyard-bench-") as d:
        opts = UpOptions(
            nodes=nodes,
            data_dir=d,
            port=0,
            in_memory=True,
            components=["scheduler", "workloads"],
        )
        cluster = EmbeddedCluster(opts)
        try:
            await cluster.start()
            await cluster.wait_ready(timeout=600)
            await asyncio.sleep(10)  # the start-up burst settles
            c = cluster.client
            idle_before, by_before = await _idle(cluster, window)

            async def available(res: Any, name: str, field: str, want: int) -> bool:
                st = (await c.get(res, name, "default")).get("status") or {}
                return int(st.get(field) or 0) >= want

            await c.create(_daemonset(), "default")

            async def daemons_up() -> bool:
                st = (await c.get(daemons, "agent", "default")).get("status") or {}
                want = int(st.get("desiredNumberScheduled") or 0)
                out["daemonset_nodes"] = want  # nodes whose taints the daemon tolerates
                out["daemonset_available"] = int(st.get("numberAvailable") or 0)
                return want > 0 and int(st.get("numberAvailable") or 0) == want

            out["daemonset_s"] = round(await _until(daemons_up, timeout, "daemonset available"), 2)
            await c.create(_deployment(replicas, "app:1"), "default")
            out["deployment_s"] = round(
                await _until(
                    lambda: available(deploys, "bench", "availableReplicas", replicas),
                    timeout,
                    "deployment available",
                ),
                2,
            )
            patch = {
                "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "app:2"}]}}}
            }
            made = await c.patch(deploys, "bench", patch, "default", patch_type="strategic")
            gen = int(made["metadata"].get("generation") or 0)

            async def updated() -> bool:
                st = (await c.get(deploys, "bench", "default")).get("status") or {}
                return (
                    int(st.get("observedGeneration") or 0) >= gen
                    and int(st.get("updatedReplicas") or 0) == replicas
                    and int(st.get("availableReplicas") or 0) == replicas
                    and int(st.get("replicas") or 0) == replicas
                )

            out["rollout_s"] = round(await _until(updated, timeout, "rollout done"), 2)
            await asyncio.sleep(settle)
            idle_after, by_after = await _idle(cluster, window)
        except TimeoutError as exc:
            out["error"] = str(exc)  # what was measured until then is still printed
            return out
        finally:
            await cluster.stop()
    out["idle_writes_per_s_before"] = round(idle_before, 1)
    out["idle_writes_per_s_after"] = round(idle_after, 1)
    out["workloads_idle_writes_per_s"] = round(idle_after - idle_before, 1)
    out["idle_writes_per_s_by_resource_before"] = by_before
    out["idle_writes_per_s_by_resource_after"] = by_after
    out["settle_s"] = settle
    out["window_s"] = window
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, default=7500)
    ap.add_argument("--replicas", type=int, default=1000)
    ap.add_argument("--window", type=float, default=20.0, help="each idle window, seconds")
    ap.add_argument(
        "--settle", type=float, default=5.0, help="seconds after the rollout before the idle window"
    )
    ap.add_argument("--timeout", type=float, default=600.0, help="each wait, seconds")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    from gpuyard import childgroups

    childgroups.exit_on_signals()
    logging.basicConfig(level=logging.WARNING)
    if args.child:
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
        row = asyncio.run(
            measure(args.nodes, args.replicas, args.window, args.timeout, args.settle)
        )
        print(json.dumps(row))
        return 0
    cmd = [
        sys.executable,
        __file__,
        "--child",
        "--nodes",
        str(args.nodes),
        "--replicas",
        str(args.replicas),
        "--window",
        str(args.window),
        "--timeout",
        str(args.timeout),
        "--settle",
        str(args.settle),
    ]
    try:
        res = childgroups.run(cmd, timeout=args.timeout * 4 + 900)
    except subprocess.TimeoutExpired:
        print(json.dumps({"error": "timed out"}))
        return 1
    if res.returncode != 0:
        print(json.dumps({"error": res.stderr.strip()[-1500:]}))
        return 1
    row = json.loads(res.stdout.strip().splitlines()[-1])
    if args.nodes == 7500 and "error" not in row:
        row["meets_targets"] = row["deployment_s"] <= 30 and row["daemonset_s"] <= 30
    print(json.dumps(row, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
