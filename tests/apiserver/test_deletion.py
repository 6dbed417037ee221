"""Deletion: finalizers, graceful pod deletion, ownerReference cascade, namespaces."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from .api import Api, cm, pod

NS = "/api/v1/namespaces/default"


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 3) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        if await check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


async def gone(api: Api, path: str) -> bool:
    return (await api.get(path))[0] == 404


def owned(name: str, owner: dict[str, Any], block: bool = False) -> dict[str, Any]:
    o = cm(name)
    o["metadata"]["ownerReferences"] = [
        {
            "apiVersion": owner["apiVersion"],
            "kind": owner["kind"],
            "name": owner["metadata"]["name"],
            "uid": owner["metadata"]["uid"],
            "blockOwnerDeletion": block,
        }
    ]
    return o


async def test_finalizers_hold_object_until_removed(api: Api) -> None:
    await api.post(f"{NS}/configmaps", cm("f", finalizers=["example.com/hold"]))
    st, obj = await api.delete(f"{NS}/configmaps/f")
    assert st == 200
    _, obj = await api.get(f"{NS}/configmaps/f")
    assert obj["metadata"]["deletionTimestamp"]
    assert obj["metadata"]["finalizers"] == ["example.com/hold"]
    st, _ = await api.patch(f"{NS}/configmaps/f", {"metadata": {"finalizers": None}})
    assert st == 200
    assert await gone(api, f"{NS}/configmaps/f")


async def test_pod_deletion_bound_vs_unbound(api: Api) -> None:
    await api.post(f"{NS}/pods", pod("unbound"))
    await api.post(f"{NS}/pods", pod("bound", nodeName="n1"))
    await api.delete(f"{NS}/pods/unbound")
    assert await gone(api, f"{NS}/pods/unbound")
    st, p = await api.delete(f"{NS}/pods/bound")
    assert st == 200 and p["metadata"]["deletionTimestamp"]
    assert p["metadata"]["deletionGracePeriodSeconds"] == 30
    # still there until the kubelet deletes it with grace period 0
    _, p = await api.get(f"{NS}/pods/bound")
    assert p["metadata"]["deletionTimestamp"]
    await api.delete(f"{NS}/pods/bound", gracePeriodSeconds=0)
    assert await gone(api, f"{NS}/pods/bound")
    await api.post(f"{NS}/pods", pod("now", nodeName="n1"))
    await api.delete(f"{NS}/pods/now", {"gracePeriodSeconds": 0})
    assert await gone(api, f"{NS}/pods/now")


async def test_cascade_background(api: Api) -> None:
    _, owner = await api.post(f"{NS}/configmaps", cm("owner"))
    await api.post(f"{NS}/configmaps", owned("dep1", owner))
    await api.post(f"{NS}/configmaps", owned("dep2", owner))
    await api.delete(f"{NS}/configmaps/owner")
    assert await gone(api, f"{NS}/configmaps/owner")
    await eventually(lambda: gone(api, f"{NS}/configmaps/dep1"))
    await eventually(lambda: gone(api, f"{NS}/configmaps/dep2"))


async def test_dependent_with_remaining_owner_survives(api: Api) -> None:
    _, o1 = await api.post(f"{NS}/configmaps", cm("o1"))
    _, o2 = await api.post(f"{NS}/configmaps", cm("o2"))
    d = owned("dep", o1)
    d["metadata"]["ownerReferences"] += owned("x", o2)["metadata"]["ownerReferences"]
    await api.post(f"{NS}/configmaps", d)
    await api.delete(f"{NS}/configmaps/o1")
    await asyncio.sleep(0.2)
    assert (await api.get(f"{NS}/configmaps/dep"))[0] == 200
    await api.delete(f"{NS}/configmaps/o2")
    await eventually(lambda: gone(api, f"{NS}/configmaps/dep"))


async def test_cascade_foreground(api: Api) -> None:
    _, owner = await api.post(f"{NS}/configmaps", cm("owner"))
    await api.post(f"{NS}/configmaps", {**owned("dep", owner, block=True)})
    # The dependent has a finalizer, so the owner must wait for it.
    await api.patch(f"{NS}/configmaps/dep", {"metadata": {"finalizers": ["x/hold"]}})
    st, _ = await api.delete(f"{NS}/configmaps/owner", {"propagationPolicy": "Foreground"})
    assert st == 200
    await asyncio.sleep(0.2)
    _, o = await api.get(f"{NS}/configmaps/owner")
    assert o["metadata"]["deletionTimestamp"]
    assert "foregroundDeletion" in o["metadata"]["finalizers"]
    _, d = await api.get(f"{NS}/configmaps/dep")
    assert d["metadata"]["deletionTimestamp"]
    await api.patch(f"{NS}/configmaps/dep", {"metadata": {"finalizers": None}})
    await eventually(lambda: gone(api, f"{NS}/configmaps/dep"))
    await eventually(lambda: gone(api, f"{NS}/configmaps/owner"))


async def test_cascade_orphan(api: Api) -> None:
    _, owner = await api.post(f"{NS}/configmaps", cm("owner"))
    await api.post(f"{NS}/configmaps", owned("dep", owner))
    await api.delete(f"{NS}/configmaps/owner", propagationPolicy="Orphan")
    assert await gone(api, f"{NS}/configmaps/owner")
    await asyncio.sleep(0.2)
    st, d = await api.get(f"{NS}/configmaps/dep")
    assert st == 200 and not d["metadata"].get("ownerReferences")


async def test_namespace_deletion_removes_contents(api: Api) -> None:
    st, ns = await api.post("/api/v1/namespaces", {"metadata": {"name": "team"}})
    assert st == 201 and ns["status"]["phase"] == "Active"
    await api.post("/api/v1/namespaces/team/configmaps", cm("a"))
    await api.post("/api/v1/namespaces/team/pods", pod("p"))
    st, ns = await api.delete("/api/v1/namespaces/team")
    assert st == 200 and ns["status"]["phase"] == "Terminating"
    await eventually(lambda: gone(api, "/api/v1/namespaces/team"))
    assert (await api.get("/api/v1/namespaces/team/configmaps/a"))[0] == 404
    assert (await api.get("/api/v1/namespaces/team/pods/p"))[0] == 404


async def test_terminating_namespace_refuses_new_objects(api: Api) -> None:
    await api.post("/api/v1/namespaces", {"metadata": {"name": "t2"}})
    await api.post("/api/v1/namespaces/t2/configmaps", cm("held", finalizers=["x/hold"]))
    await api.delete("/api/v1/namespaces/t2")
    st, err = await api.post("/api/v1/namespaces/t2/configmaps", cm("new"))
    assert st == 403 and "being terminated" in err["message"]
    await asyncio.sleep(0.1)
    assert (await api.get("/api/v1/namespaces/t2"))[0] == 200  # held by the finalizer
    await api.patch("/api/v1/namespaces/t2/configmaps/held", {"metadata": {"finalizers": None}})
    await eventually(lambda: gone(api, "/api/v1/namespaces/t2"))


async def test_delete_preconditions(api: Api) -> None:
    _, o = await api.post(f"{NS}/configmaps", cm("a"))
    st, err = await api.delete(f"{NS}/configmaps/a", {"preconditions": {"uid": "other"}})
    assert st == 409
    st, _ = await api.delete(f"{NS}/configmaps/a", {"preconditions": {"uid": o["metadata"]["uid"]}})
    assert st == 200


async def test_forced_pod_deletion_with_finalizer(api: Api) -> None:
    p = pod("fp", nodeName="n1")
    p["metadata"]["finalizers"] = ["x/hold"]
    await api.post(f"{NS}/pods", p)
    await api.delete(f"{NS}/pods/fp")
    await api.delete(f"{NS}/pods/fp", gracePeriodSeconds=0)
    _, got = await api.get(f"{NS}/pods/fp")
    assert got["metadata"]["deletionGracePeriodSeconds"] == 0
    await api.patch(f"{NS}/pods/fp", {"metadata": {"finalizers": None}})
    assert await gone(api, f"{NS}/pods/fp")
