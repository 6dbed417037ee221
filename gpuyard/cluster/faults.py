"""Fault injection for the embedded cluster, through the Kubernetes API.

A fault is a ConfigMap in the `gpuyard-system` namespace labelled `gpuyard.io/fault`,
with data {kind, node, gpu, xid, factor, path}. The embedded cluster watches that one
label (a single watcher, not one per node), applies each fault once to the simulated
node and its host files, and records on the ConfigMap when and how it was applied
(annotations gpuyard.io/fault-applied and gpuyard.io/fault-result). Faults stay as a
record, so a test or a person can ask what was injected and check what the control
plane did about it.

Kinds: node-down, node-up, gpu-xid (gpu, xid), disk-full (path), net-partition,
slow-gpu (gpu, factor), clear (repair the host: healthy GPUs, disks and network).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from gpuyard.kube import objects as o
from gpuyard.kube.errors import AlreadyExists, NotFound
from gpuyard.kube.informer import Informer
from gpuyard.kube.resources import CONFIGMAPS

log = logging.getLogger("gpuyard.cluster.faults")

NAMESPACE = "gpuyard-system"
LABEL = "gpuyard.io/fault"
ANN_APPLIED = "gpuyard.io/fault-applied"
ANN_RESULT = "gpuyard.io/fault-result"
KINDS = ("node-down", "node-up", "gpu-xid", "disk-full", "net-partition", "slow-gpu", "clear")


class FaultError(ValueError):
    """A fault that cannot be injected (unknown kind, node or GPU, bad value)."""


def fault_object(kind: str, node: str, **params: Any) -> dict[str, Any]:
    if kind not in KINDS:
        raise FaultError(f"unknown fault {kind!r}; expected one of {', '.join(KINDS)}")
    data = {"kind": kind, "node": node, "time": o.now_rfc3339()}
    data.update({k: str(v) for k, v in params.items() if v is not None})
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "generateName": f"fault-{kind}-",
            "namespace": NAMESPACE,
            "labels": {LABEL: kind, "gpuyard.io/node": node},
        },
        "data": data,
    }


async def ensure_namespace(client: Any) -> None:
    try:
        await client.create(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
        )
    except AlreadyExists:
        pass


async def inject(
    client: Any, kind: str, node: str, wait: float = 10.0, **params: Any
) -> dict[str, Any]:
    """Record a fault and wait (up to `wait` s) for the cluster to apply it; returns the
    ConfigMap with its result annotations. Raises FaultError when the cluster refused it."""
    await ensure_namespace(client)
    cm = await client.create(fault_object(kind, node, **params))
    name = cm["metadata"]["name"]
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        cm = await client.get(CONFIGMAPS, name, NAMESPACE)
        ann = cm["metadata"].get("annotations") or {}
        if ANN_APPLIED in ann:
            result = ann.get(ANN_RESULT, "")
            if result.startswith("error: "):
                raise FaultError(result[len("error: ") :])
            return cm
        await asyncio.sleep(0.1)
    raise FaultError(
        f"fault {name} was recorded but not applied within {wait:.0f}s: is `gpuyard up` running?"
    )


async def list_faults(client: Any) -> list[dict[str, Any]]:
    items = (await client.list(CONFIGMAPS, NAMESPACE, label_selector=LABEL))["items"]
    return sorted(items, key=lambda c: (c["data"].get("time", ""), c["metadata"]["name"]))


class FaultApplier:
    """Inside `gpuyard up`: applies recorded faults to the simulated cluster."""

    def __init__(self, client: Any, sim: Any) -> None:
        self.client = client
        self.sim = sim
        self.informer = Informer(client, CONFIGMAPS, NAMESPACE, label_selector=LABEL, name="faults")
        self.applied: list[dict[str, Any]] = []

    async def start(self) -> None:
        await ensure_namespace(self.client)
        self.informer.add_handler(self._on, lambda old, new: self._on(new), None)
        self.informer.start()
        await self.informer.wait_synced()

    async def stop(self) -> None:
        await self.informer.stop()

    async def _on(self, cm: dict[str, Any]) -> None:
        ann = cm["metadata"].get("annotations") or {}
        if ANN_APPLIED in ann:
            return
        data = cm.get("data") or {}
        try:
            result = await self.apply(data)
        except (FaultError, KeyError, ValueError) as exc:
            why = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            result = f"error: {why}"
        log.info("fault %s on %s: %s", data.get("kind"), data.get("node"), result)
        self.applied.append({**data, "result": result})
        try:
            await self.client.patch(
                CONFIGMAPS,
                cm["metadata"]["name"],
                {"metadata": {"annotations": {ANN_APPLIED: o.now_rfc3339(), ANN_RESULT: result}}},
                NAMESPACE,
            )
        except NotFound:
            pass

    async def apply(self, data: dict[str, str]) -> str:
        kind, node = data.get("kind", ""), data.get("node", "")
        if node not in self.sim.nodes:
            raise FaultError(f"no simulated node named {node!r}")
        host = self.sim.host(node)
        if kind == "node-down":
            await self.sim.set_down(node, True)
            return "kubelet and lease stopped"
        if kind == "node-up":
            await self.sim.set_down(node, False)
            return "kubelet and lease running"
        if kind == "gpu-xid":
            return host.append_xid(int(data.get("gpu", "0")), int(data.get("xid", "79")))
        if kind == "disk-full":
            host.disk_full(data.get("path", "/"))
            return f"{data.get('path', '/')} full"
        if kind == "net-partition":
            host.net_partition()
            return "network partitioned"
        if kind == "slow-gpu":
            gpu, factor = int(data.get("gpu", "0")), float(data.get("factor", "0.5"))
            host.slow_gpu(gpu, factor)
            return f"GPU {gpu} at {factor:g} of its speed"
        if kind == "clear":
            host.clear()
            return "host repaired"
        raise FaultError(f"unknown fault {kind!r}")
