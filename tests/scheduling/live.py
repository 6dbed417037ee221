"""Helpers of the tests that run gpuyard's scheduler against an API server: the objects
they create (nodes, PodGroups, pods for gpuyard-scheduler), the PodGroup CRDs set up
and served, waiting for a condition, and stopping the scheduler and its clients."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Any

from gpuyard.kube.client import Client
from gpuyard.kube.resources import NODES, POD_GROUPS, PODS
from gpuyard.scheduling.crds import crds

GPU = "nvidia.com/gpu"


def node(name: str, gpus: int = 8) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {
            "allocatable": {"cpu": "64", "memory": "512Gi", GPU: str(gpus), "pods": "110"},
            "capacity": {"cpu": "64", "memory": "512Gi", GPU: str(gpus), "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def pod(
    name: str,
    group: str | None = None,
    *,
    gpus: int | None = None,
    claim: str | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A pod in `default` for gpuyard-scheduler, a member of the PodGroup `group` when
    given; its one container asks for `gpus` GPUs (limits) or for the devices of the
    ResourceClaim `claim`; `spec` adds fields (priority, priorityClassName)."""
    md: dict[str, Any] = {"name": name, "namespace": "default"}
    if group:
        md["labels"] = {"scheduling.x-k8s.io/pod-group": group}
    resources: dict[str, Any] = {}
    if gpus is not None:
        resources["limits"] = {GPU: str(gpus)}
    if claim is not None:
        resources["claims"] = [{"name": "gpus"}]
        spec["resourceClaims"] = [{"name": "gpus", "resourceClaimName": claim}]
    container = {"name": "w", "image": "x", "resources": resources}
    body = {"schedulerName": "gpuyard-scheduler", "containers": [container], **spec}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": md, "spec": body}


def podgroup(name: str, n: int) -> dict[str, Any]:
    return {
        "apiVersion": "scheduling.x-k8s.io/v1alpha1",
        "kind": "PodGroup",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"minMember": n},
    }


async def setup(k: Client, nodes: int) -> None:
    """The scheduling CRDs, served, and `nodes` ready nodes n0, n1, ... of 8 GPUs."""
    for crd in crds():
        await k.create(crd)
    for i in range(nodes):
        created = await k.create(node(f"n{i}"))
        if not (created.get("status") or {}).get("allocatable"):
            await k.patch_status(NODES, f"n{i}", {"status": node(f"n{i}")["status"]})
    # The CRD's resource is served once discovery knows it.
    deadline = time.monotonic() + 10
    while True:
        try:
            await k.list(POD_GROUPS, "default")
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def until(fn: Callable[[], Any], timeout: float = 30) -> Any:
    """The first true value of `await fn()`, asked every 0.1 s; AssertionError after
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = await fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.1)


async def pods_by_name(k: Client) -> dict[str, dict[str, Any]]:
    return {p["metadata"]["name"]: p for p in (await k.list(PODS, "default"))["items"]}


async def stop_all(
    stop: asyncio.Event, tasks: Iterable[asyncio.Task[None] | None], clients: Iterable[Any]
) -> None:
    """A test's teardown: the schedulers told to stop, their tasks (None: never started)
    awaited whatever they raised, then every client closed."""
    stop.set()
    await asyncio.gather(*(t for t in tasks if t is not None), return_exceptions=True)
    for c in clients:
        await c.close()
