"""The simulated nodes' resource usage, served as metrics.k8s.io for `kubectl top`
(gpuyard.apiserver.metricsapi), read from the simulated kubelets' caches: no requests
to the API server.

Each running container uses what its pod's `gpuyard.io/sim-usage` annotation says
("cpu=250m,memory=1Gi", per container), or else a share of what it requests that drifts
minute by minute (cpu 20-90 %, memory 50-95 %; a container without requests a few
millicores and MiB). A node uses its running pods' sum plus the system's overhead
(100m cpu, 1 GiB); a downed node reports nothing, as its kubelet would not answer.
"""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime
from typing import Any

from gpuyard import names
from gpuyard.kube import objects as o

WINDOW = "30s"
SYSTEM_CPU_M, SYSTEM_MEMORY = 100, 1 << 30
IDLE_CPU_M, IDLE_MEMORY = 2, 8 << 20


def _share(seed: str, lo: float, hi: float) -> float:
    h = hashlib.blake2b(f"{seed}/{int(time.time() // 60)}".encode(), digest_size=4).digest()
    return lo + (hi - lo) * int.from_bytes(h, "big") / 0xFFFFFFFF


def _given(pod: dict[str, Any]) -> dict[str, int] | None:
    raw = (o.meta(pod).get("annotations") or {}).get(names.ANN_SIM_USAGE)
    if not raw:
        return None
    out: dict[str, int] = {}
    try:
        for part in raw.split(","):
            k, _, v = part.partition("=")
            k = k.strip()
            if k in ("cpu", "memory"):
                out[k] = o.resource_amount(k, v.strip())
    except ValueError:
        return None  # a bad annotation: the model's numbers instead
    return out


def container_usage(pod: dict[str, Any], c: dict[str, Any]) -> tuple[int, int]:
    """(milli-cpu, bytes) the container uses now."""
    given = _given(pod) or {}
    res = c.get("resources") or {}
    req = {**o.resource_list(res.get("limits")), **o.resource_list(res.get("requests"))}
    seed = f"{o.meta(pod).get('uid')}/{c.get('name')}"
    cpu = given.get("cpu")
    if cpu is None:
        cpu = int(req["cpu"] * _share(seed + "/cpu", 0.2, 0.9)) if req.get("cpu") else IDLE_CPU_M
    mem = given.get("memory")
    if mem is None:
        mem = (
            int(req["memory"] * _share(seed + "/mem", 0.5, 0.95))
            if req.get("memory")
            else IDLE_MEMORY
        )
    return max(cpu, 0), max(mem, 0)


def _usage(cpu_m: int, mem: int) -> dict[str, str]:
    return {"cpu": f"{cpu_m * 1_000_000}n", "memory": f"{mem // 1024}Ki"}


class SimMetrics:
    """metricsapi.Provider over a SimCluster."""

    def __init__(self, sim: Any) -> None:
        self.sim = sim

    def _running(self) -> list[dict[str, Any]]:
        out = []
        for p in self.sim.pods.list():
            n = self.sim.nodes.get((p.get("spec") or {}).get("nodeName") or "")
            if n is None or n.down or (p.get("status") or {}).get("phase") != "Running":
                continue
            out.append(p)
        return out

    def pod_metrics(self, namespace: str | None) -> list[dict[str, Any]]:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        out = []
        for p in self._running():
            if namespace and o.namespace_of(p) != namespace:
                continue
            md = o.meta(p)
            containers = [
                {"name": c.get("name"), "usage": _usage(*container_usage(p, c))}
                for c in (p.get("spec") or {}).get("containers") or []
            ]
            out.append(
                {
                    "kind": "PodMetrics",
                    "apiVersion": "metrics.k8s.io/v1beta1",
                    "metadata": {
                        "name": md.get("name"),
                        "namespace": md.get("namespace"),
                        "labels": dict(md.get("labels") or {}),
                        "creationTimestamp": now,
                    },
                    "timestamp": now,
                    "window": WINDOW,
                    "containers": containers,
                }
            )
        return sorted(out, key=lambda m: (m["metadata"]["namespace"], m["metadata"]["name"]))

    def node_metrics(self) -> list[dict[str, Any]]:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        used: dict[str, list[int]] = {}
        for p in self._running():
            u = used.setdefault(p["spec"]["nodeName"], [0, 0])
            for c in (p.get("spec") or {}).get("containers") or []:
                cpu, mem = container_usage(p, c)
                u[0] += cpu
                u[1] += mem
        out = []
        for name, n in sorted(self.sim.nodes.items()):
            if n.down:
                continue
            node = self.sim.node_informer.cache.get(name) or {}
            cpu, mem = used.get(name, [0, 0])
            out.append(
                {
                    "kind": "NodeMetrics",
                    "apiVersion": "metrics.k8s.io/v1beta1",
                    "metadata": {
                        "name": name,
                        "labels": dict(o.labels_of(node)),
                        "creationTimestamp": now,
                    },
                    "timestamp": now,
                    "window": WINDOW,
                    "usage": _usage(cpu + SYSTEM_CPU_M, mem + SYSTEM_MEMORY),
                }
            )
        return out
