"""The node lifecycle's taints at kube-controller-manager's rates, per zone by its
state: none while no zone has a ready node (a starved control plane: every Lease late
at once), one at a time in a zone that has lost its ready nodes while others have
some, the secondary rate in a partly disrupted zone of a large cluster. Every stale
node gets Ready=Unknown either way. Pure: the lifecycle on caches and a recording client."""

from __future__ import annotations

import asyncio
from typing import Any

from gpuyard.cluster import lifecycle as lc
from gpuyard.kube.informer import Cache
from gpuyard.kube.resources import NODES


class Caches:
    def __init__(self, objs: list[dict[str, Any]] | None = None) -> None:
        self.store = Cache()
        for obj in objs or []:
            self.store.put(obj)

    @property
    def cache(self) -> dict[str, Any]:
        return self.store.objects

    def get(self, name: str, namespace: str | None = None) -> Any:
        return self.store.get(f"{namespace}/{name}" if namespace else name)

    def by_node(self, node: str) -> list[dict[str, Any]]:
        return self.store.by_index("node", node)


class Recorder:
    def __init__(self) -> None:
        self.taints: list[str] = []
        self.unknown: list[str] = []
        self.deleted: list[str] = []

    async def patch(self, res: Any, name: str, body: dict[str, Any], *a: Any, **k: Any) -> None:
        assert res is NODES and "taints" in body["spec"]
        self.taints.append(name)

    async def patch_status(self, res: Any, name: str, body: dict[str, Any], **k: Any) -> None:
        self.unknown.append(name)

    async def delete(self, res: Any, name: str, *a: Any, **k: Any) -> None:
        self.deleted.append(name)


def node(name: str, zone: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "labels": {"topology.kubernetes.io/zone": zone},
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "resourceVersion": "1",
        },
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }


def lease(name: str, at: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": lc.LEASE_NS}, "spec": {"renewTime": at}}


async def _two_ticks(zones: dict[str, tuple[int, int]]) -> tuple[Recorder, lc.NodeLifecycle]:
    """zones: name -> (stale nodes, live nodes). Grace 0: a node whose Lease did not
    change between the two passes is stale at the second."""
    nodes, leases, live = [], Caches(), []
    for z, (stale, fresh) in zones.items():
        for i in range(stale + fresh):
            n = node(f"{z}-{i}", z)
            nodes.append(n)
            leases.store.put(lease(n["metadata"]["name"], "2026-01-01T00:00:01Z"))
            if i >= stale:
                live.append(n["metadata"]["name"])
    pod = {"metadata": {"name": "p", "namespace": "default"}, "spec": {"nodeName": "a-0"}}
    rec = Recorder()
    life = lc.NodeLifecycle(rec, Caches(nodes), Caches([pod]), leases, grace=0.0)  # type: ignore[arg-type]
    await life.tick()
    await asyncio.sleep(0.01)
    for name in live:  # these renew between the passes
        leases.store.put(lease(name, "2026-01-01T00:00:02Z"))
    await life.tick()
    return rec, life


async def test_no_taints_while_no_zone_has_a_ready_node() -> None:
    rec, life = await _two_ticks({"a": (40, 0), "b": (30, 0)})
    assert life.zone_states == {"a": lc.FULL, "b": lc.FULL}
    assert len(rec.unknown) == 70  # every stale node is Unknown all the same
    assert rec.taints == [] and rec.deleted == []


async def test_a_zone_without_ready_nodes_is_tainted_one_at_a_time() -> None:
    rec, life = await _two_ticks({"a": (40, 0), "b": (0, 30)})
    assert life.zone_states == {"a": lc.FULL, "b": lc.NORMAL}
    assert len(rec.unknown) == 40
    assert rec.taints == ["a-0"]  # 0.1 a second: the next one in 10 s
    assert rec.deleted == ["p"]  # the pod of the tainted node


async def test_a_partly_disrupted_zone_at_the_secondary_rate_or_none_when_small() -> None:
    rec, life = await _two_ticks({"a": (40, 20)})  # 67% not ready, 60 nodes
    assert life.zone_states == {"a": lc.PARTIAL}
    assert len(rec.taints) == 1 and len(rec.unknown) == 40
    rec, life = await _two_ticks({"a": (20, 10)})  # 30 nodes: a small cluster
    assert life.zone_states == {"a": lc.PARTIAL}
    assert rec.taints == [] and len(rec.unknown) == 20
    rec, life = await _two_ticks({"a": (2, 2)})  # 2 not ready: normal, both tainted
    assert life.zone_states == {"a": lc.NORMAL}
    assert len(rec.taints) == 1  # (one now, one 10 s later: the zone's rate)
