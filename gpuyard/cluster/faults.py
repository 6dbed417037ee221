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
from collections.abc import Mapping
from typing import Any

from gpuyard.cliargs import NATURAL, Float, Int, Text, Value
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


# NVIDIA numbers GPU Xids from 1 and no catalogued one reaches 255; NVSwitch SXids (five
# digits) are another kind of record, not a GPU Xid.
XID = Int(1, 255, "an NVIDIA GPU Xid number")
FACTOR = Float(gt=0, hi=1, what="a share of full speed")

# The parameters each kind takes: type and default. `gpuyard fault` declares its flags
# with these types, and the cluster checks a recorded fault with them again (a fault
# ConfigMap may be written by kubectl as well).
PARAMS: dict[str, dict[str, tuple[Value, Any]]] = {
    "gpu-xid": {"gpu": (NATURAL, 0), "xid": (XID, 79)},
    "slow-gpu": {"gpu": (NATURAL, 0), "factor": (FACTOR, 0.5)},
    "disk-full": {"path": (Text(), "/")},
}


class FaultError(ValueError):
    """A fault that cannot be injected (unknown kind, node or GPU, bad value)."""


def fault_params(kind: str, given: Mapping[str, Any], strict: bool = True) -> dict[str, Any]:
    """The typed parameters of a fault of `kind`, from values or the text a ConfigMap
    holds; a parameter not given takes its default. FaultError names a bad value, or
    (when `strict`) a parameter the kind does not take."""
    if kind not in KINDS:
        raise FaultError(f"unknown fault {kind!r}; expected one of {', '.join(KINDS)}")
    takes = PARAMS.get(kind, {})
    if strict:
        extra = sorted(k for k, v in given.items() if v is not None and k not in takes)
        if extra:
            wants = ", ".join(takes) or "no parameters"
            raise FaultError(f"{kind} takes {wants}, not {', '.join(extra)}")
    out: dict[str, Any] = {}
    for key, (kind_of, default) in takes.items():
        raw = given.get(key)
        try:
            out[key] = default if raw is None else kind_of.check(raw)
        except ValueError as exc:
            raise FaultError(f"{kind} {key}={raw}: {exc}") from None
    return out


def fault_object(kind: str, node: str, **params: Any) -> dict[str, Any]:
    typed = fault_params(kind, params)
    data = {"kind": kind, "node": node, "time": o.now_rfc3339()}
    data.update({k: str(v) for k, v in typed.items()})
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
        # The recorded data (with kind, node and time beside the parameters) is checked
        # with the same types as the command's flags.
        params = fault_params(kind, data, strict=False)
        host = self.sim.host(node)
        if kind == "node-down":
            await self.sim.set_down(node, True)
            return "kubelet and lease stopped"
        if kind == "node-up":
            await self.sim.set_down(node, False)
            return "kubelet and lease running"
        if kind == "gpu-xid":
            return host.append_xid(params["gpu"], params["xid"])
        if kind == "disk-full":
            host.disk_full(params["path"])
            return f"{params['path']} full"
        if kind == "net-partition":
            host.net_partition()
            return "network partitioned"
        if kind == "slow-gpu":
            gpu, factor = params["gpu"], params["factor"]
            host.slow_gpu(gpu, factor)
            return f"GPU {gpu} at {factor:g} of its speed"
        if kind == "clear":
            host.clear()
            return "host repaired"
        raise FaultError(f"unknown fault {kind!r}")
