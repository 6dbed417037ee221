"""The pod ranges by zone that `gpuyard controllers` publishes in one ConfigMap for every
netd: the same Ranges as from all the nodes, small, and written only when they change."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from gpuyard import names
from gpuyard.kube.client import Client
from gpuyard.kube.resources import CONFIGMAPS, NODES
from gpuyard.network import rangesmap
from gpuyard.network.desired import ranges_for

SERVICES = ["10.96.0.0/16", "fd00:96::/108"]


def node(name: str, zone: str | None, *cidrs: str) -> dict[str, Any]:
    labels = {names.LABEL_ZONE: zone} if zone else {}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "spec": {"podCIDR": cidrs[0], "podCIDRs": list(cidrs)} if cidrs else {},
    }


def cluster() -> list[dict[str, Any]]:
    """Two zones of adjacent /24s (one dual-stack node), a node without a zone, one
    without a range yet."""
    nodes = [node(f"a{i}", "a", f"10.1.{i}.0/24") for i in range(8)]
    nodes += [node(f"b{i}", "b", f"10.2.{i}.0/24") for i in range(3)]
    nodes.append(node("b9", "b", "10.2.9.0/24", "fd00:2:9::/64"))
    nodes += [node("u0", None, "10.9.0.0/24"), node("new", "a")]
    return nodes


def test_ranges_from_the_configmap_are_those_from_all_the_nodes() -> None:
    nodes = cluster()
    data = rangesmap.content(nodes)
    for own in nodes:
        assert rangesmap.ranges_from(data, own, SERVICES) == ranges_for(own, nodes, SERVICES)
    # Collapsed: zone a's eight /24s are one /21, whatever the number of nodes.
    zones, unzoned = rangesmap.parse(data)
    assert zones == {
        "a": ["10.1.0.0/21"],
        "b": ["10.2.0.0/23", "10.2.2.0/24", "10.2.9.0/24", "fd00:2:9::/64"],
    }
    assert unzoned == ["10.9.0.0/24"]
    r = rangesmap.ranges_from(data, nodes[0], SERVICES)
    assert r.classify("10.1.5.9") == "cluster" and r.classify("10.2.9.1") == "zone"
    assert r.classify("10.9.0.4") == "cluster" and r.classify("8.8.8.8") == "internet"
    # Before the ConfigMap exists: the node's own range and the services' only.
    alone = rangesmap.ranges_from(None, nodes[0], SERVICES)
    assert alone.node == ("10.1.0.0/24",) and alone.zone == ()
    assert alone.classify("10.96.3.3") == "cluster" and alone.classify("10.2.0.1") == "internet"


def test_a_configmap_not_written_by_the_controller_is_refused_clearly() -> None:
    for bad in ({"zones": "{nope"}, {"zones": "[]"}, {"zones": '{"a": [1]}'}):
        try:
            rangesmap.ranges_from(bad, node("n", "a", "10.1.0.0/24"), SERVICES)
        except ValueError as exc:
            assert rangesmap.NAME in str(exc)
        else:
            raise AssertionError(f"accepted {bad}")


async def _until(fn: Any, what: str, timeout: float = 10.0) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = await fn()
        if v:
            return v
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


async def test_the_controller_publishes_one_configmap_and_writes_only_on_change(
    apiserver_inproc: Any,
) -> None:
    async with Client.in_process(apiserver_inproc) as k:
        ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": names.NAMESPACE}}
        await k.create(ns)
        for n in cluster():
            await k.create(n)
        pub = rangesmap.RangesPublisher(k, interval=0.05)
        stop = asyncio.Event()
        task = asyncio.create_task(pub.run(stop))

        async def cm() -> Any:
            return await k.get_or_none(CONFIGMAPS, rangesmap.NAME, rangesmap.NAMESPACE)

        try:
            first = await _until(cm, "the ConfigMap")
            assert first["data"] == rangesmap.content(cluster())
            # Status updates (every kubelet's heartbeat) change nothing there: no write.
            for n in ("a0", "b1", "u0"):
                cond = {"type": "Ready", "status": "True", "reason": "KubeletReady"}
                await k.patch_status(NODES, n, {"status": {"conditions": [cond]}})
            await _until(
                lambda: _seen(pub, "u0", lambda o: (o.get("status") or {}).get("conditions")),
                "the publisher to see the status update",
            )
            await asyncio.sleep(0.3)  # several intervals
            assert pub.writes == 1
            assert (await cm())["metadata"]["resourceVersion"] == first["metadata"][
                "resourceVersion"
            ]
            # A node moved to zone b: the content changes, one update.
            await k.patch(NODES, "a7", {"metadata": {"labels": {names.LABEL_ZONE: "b"}}})
            moved = await _until(
                lambda: _changed(cm, first["metadata"]["resourceVersion"]), "the update"
            )
            zones, _ = rangesmap.parse(moved["data"])
            assert zones["a"] == ["10.1.0.0/22", "10.1.4.0/23", "10.1.6.0/24"]
            assert "10.1.7.0/24" in zones["b"]
            assert pub.writes == 2
            # Someone else wrote in between: the guarded update conflicts, re-reads, wins.
            stale = await cm()
            await k.replace({**stale, "data": {"zones": "{}", "unzoned": "[]"}})
            real_get = k.get_or_none
            calls = 0

            async def stale_get(*a: Any, **kw: Any) -> Any:
                nonlocal calls
                calls += 1
                return stale if calls == 1 else await real_get(*a, **kw)

            k.get_or_none = stale_get  # type: ignore[method-assign]
            await k.patch(NODES, "u0", {"metadata": {"labels": {names.LABEL_ZONE: "c"}}})
            fixed = await _until(lambda: _has_zone(real_get, "c"), "the write after the conflict")
            assert pub.conflicts == 1 and calls >= 2
            assert fixed["data"] == rangesmap.content(
                [n for n in cluster() if n["metadata"]["name"] not in ("a7", "u0")]
                + [node("a7", "b", "10.1.7.0/24"), node("u0", "c", "10.9.0.0/24")]
            )
        finally:
            stop.set()
            await task


async def _seen(pub: rangesmap.RangesPublisher, name: str, pred: Any) -> bool:
    obj = pub.nodes.get(name)
    return obj is not None and bool(pred(obj))


async def _changed(cm: Any, rv: str) -> Any:
    obj = await cm()
    return obj if obj["metadata"]["resourceVersion"] != rv else None


async def _has_zone(get: Any, zone: str) -> Any:
    obj = await get(CONFIGMAPS, rangesmap.NAME, rangesmap.NAMESPACE)
    return obj if zone in rangesmap.parse(obj["data"])[0] else None
