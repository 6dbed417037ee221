"""Pod subresources: binding and eviction with PodDisruptionBudgets."""

from __future__ import annotations

from typing import Any

from .api import Api, pod

NS = "/api/v1/namespaces/default"


def binding(name: str, node: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": name},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    }


async def test_binding(api: Api) -> None:
    await api.post(f"{NS}/pods", pod("p"))
    st, res = await api.post(f"{NS}/pods/p/binding", binding("p", "n1"))
    assert st == 201 and res["status"] == "Success"
    _, p = await api.get(f"{NS}/pods/p")
    assert p["spec"]["nodeName"] == "n1"
    cond = {c["type"]: c["status"] for c in p["status"]["conditions"]}
    assert cond["PodScheduled"] == "True"
    st, err = await api.post(f"{NS}/pods/p/binding", binding("p", "n2"))
    assert st == 409 and err["reason"] == "Conflict"
    assert 'pod p is already assigned to node "n1"' in err["message"]
    st, err = await api.post(f"{NS}/pods/p/binding", binding("other", "n2"))
    assert st == 400
    assert (await api.post(f"{NS}/pods/zz/binding", binding("zz", "n1")))[0] == 404


async def _ready_pod(api: Api, name: str) -> None:
    await api.post(f"{NS}/pods", pod(name, {"app": "x"}, nodeName="n1"))
    _, p = await api.get(f"{NS}/pods/{name}")
    p["status"] = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
    st, _ = await api.put(f"{NS}/pods/{name}/status", p)
    assert st == 200


def eviction(name: str, **opts: Any) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": name, "namespace": "default"},
        "deleteOptions": opts,
    }


async def test_eviction_without_pdb_deletes(api: Api) -> None:
    await api.post(f"{NS}/pods", pod("p"))
    st, _ = await api.post(f"{NS}/pods/p/eviction", eviction("p"))
    assert st == 201
    assert (await api.get(f"{NS}/pods/p"))[0] == 404


async def test_eviction_honours_pdb(api: Api) -> None:
    for n in ("a", "b", "c"):
        await _ready_pod(api, n)
    st, _ = await api.post(
        "/apis/policy/v1/namespaces/default/poddisruptionbudgets",
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": "pdb"},
            "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "x"}}},
        },
    )
    assert st == 201
    st, _ = await api.post(f"{NS}/pods/a/eviction", eviction("a", gracePeriodSeconds=0))
    assert st == 201
    assert (await api.get(f"{NS}/pods/a"))[0] == 404
    st, err = await api.post(f"{NS}/pods/b/eviction", eviction("b"))
    assert st == 429 and err["reason"] == "TooManyRequests"
    assert err["message"] == "Cannot evict pod as it would violate the pod's disruption budget."
    assert err["details"]["retryAfterSeconds"] > 0
    _, p = await api.get(f"{NS}/pods/b")
    assert not p["metadata"].get("deletionTimestamp")


async def test_eviction_max_unavailable(api: Api) -> None:
    for n in ("a", "b"):
        await _ready_pod(api, n)
    await api.post(
        "/apis/policy/v1/namespaces/default/poddisruptionbudgets",
        {
            "metadata": {"name": "pdb"},
            "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {"app": "x"}}},
        },
    )
    st, _ = await api.post(f"{NS}/pods/a/eviction", eviction("a"))
    assert st == 429
    # a graceful eviction of a bound pod leaves it terminating, like DELETE
    await api.put(
        "/apis/policy/v1/namespaces/default/poddisruptionbudgets/pdb",
        {
            "metadata": {"name": "pdb"},
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "x"}}},
        },
    )
    st, _ = await api.post(f"{NS}/pods/a/eviction", eviction("a"))
    assert st == 201
    _, p = await api.get(f"{NS}/pods/a")
    assert p["metadata"]["deletionTimestamp"]


async def test_bindings_resource(api: Api) -> None:
    await api.post(f"{NS}/pods", pod("p"))
    st, _ = await api.post(f"{NS}/bindings", binding("p", "n7"))
    assert st == 201
    _, p = await api.get(f"{NS}/pods/p")
    assert p["spec"]["nodeName"] == "n7"
    assert (await api.get(f"{NS}/bindings"))[0] == 405
