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


PDBS = "/apis/policy/v1/namespaces/default/poddisruptionbudgets"


async def _budget(
    api: Api, name: str, allowed: int, healthy: int, desired: int, **spec: Any
) -> None:
    """A budget over app=x, and the status its disruption controller would write (no
    controller runs beside this API server)."""
    body = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": name},
        "spec": {"selector": {"matchLabels": {"app": "x"}}, **spec},
    }
    st, made = await api.post(PDBS, body)
    assert st == 201, made
    made["status"] = {
        "observedGeneration": made["metadata"]["generation"],
        "disruptionsAllowed": allowed,
        "currentHealthy": healthy,
        "desiredHealthy": desired,
        "expectedPods": healthy,
    }
    st, out = await api.put(f"{PDBS}/{name}/status", made)
    assert st == 200, out


async def test_eviction_takes_one_disruption_from_the_budget(api: Api) -> None:
    for n in ("a", "b", "c"):
        await _ready_pod(api, n)
    await _budget(api, "pdb", allowed=1, healthy=3, desired=2, minAvailable=2)
    # a dry run asks and leaves the budget as it was
    st, _ = await api.post(f"{NS}/pods/a/eviction", eviction("a", dryRun=["All"]))
    assert st == 201
    assert (await api.get(f"{PDBS}/pdb"))[1]["status"]["disruptionsAllowed"] == 1
    st, _ = await api.post(f"{NS}/pods/a/eviction", eviction("a", gracePeriodSeconds=0))
    assert st == 201
    assert (await api.get(f"{NS}/pods/a"))[0] == 404
    _, pdb = await api.get(f"{PDBS}/pdb")
    assert pdb["status"]["disruptionsAllowed"] == 0
    assert set(pdb["status"]["disruptedPods"]) == {"a"}
    cond = {c["type"]: c for c in pdb["status"]["conditions"]}["DisruptionAllowed"]
    assert (cond["status"], cond["reason"]) == ("False", "InsufficientPods")
    st, err = await api.post(f"{NS}/pods/b/eviction", eviction("b"))
    assert st == 429 and err["reason"] == "TooManyRequests"
    assert err["message"] == "Cannot evict pod as it would violate the pod's disruption budget."
    assert err["details"]["causes"][0]["message"] == (
        "The disruption budget pdb needs 2 healthy pods and has 3 currently"
    )
    # no Retry-After: a client's HTTP layer would sit it out; kubectl drain retries itself
    assert "retryAfterSeconds" not in err["details"]
    _, p = await api.get(f"{NS}/pods/b")
    assert not p["metadata"].get("deletionTimestamp")


async def test_budget_not_yet_seen_by_its_controller_refuses(api: Api) -> None:
    await _ready_pod(api, "a")
    st, _ = await api.post(
        PDBS,
        {"metadata": {"name": "new"}, "spec": {"maxUnavailable": 1, "selector": {}}},
    )
    assert st == 201
    st, err = await api.post(f"{NS}/pods/a/eviction", eviction("a"))
    assert st == 429
    assert err["details"]["causes"][0]["message"] == (
        "The disruption budget new is still being processed by the server."
    )
    assert err["details"]["retryAfterSeconds"] == 10


async def test_unready_pod_goes_while_the_budget_holds(api: Api) -> None:
    for n in ("a", "b"):
        await _ready_pod(api, n)
    await api.post(f"{NS}/pods", pod("sick", {"app": "x"}, nodeName="n1"))
    _, p = await api.get(f"{NS}/pods/sick")
    p["status"] = {"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}]}
    assert (await api.put(f"{NS}/pods/sick/status", p))[0] == 200
    await _budget(api, "pdb", allowed=0, healthy=2, desired=2, minAvailable=2)
    st, _ = await api.post(f"{NS}/pods/a/eviction", eviction("a"))
    assert st == 429  # a healthy one may not go
    st, _ = await api.post(f"{NS}/pods/sick/eviction", eviction("sick"))
    assert st == 201  # the unready one may: the budget still holds without it
    assert (await api.get(f"{PDBS}/pdb"))[1]["status"]["disruptionsAllowed"] == 0


async def test_pod_under_two_budgets_is_refused(api: Api) -> None:
    await _ready_pod(api, "a")
    await _budget(api, "one", allowed=1, healthy=1, desired=0, maxUnavailable=1)
    await _budget(api, "two", allowed=1, healthy=1, desired=0, maxUnavailable=1)
    st, err = await api.post(f"{NS}/pods/a/eviction", eviction("a"))
    assert st == 500
    assert err["message"] == (
        "This pod has more than one PodDisruptionBudget, which the eviction subresource "
        "does not support."
    )


async def test_bindings_resource(api: Api) -> None:
    await api.post(f"{NS}/pods", pod("p"))
    st, _ = await api.post(f"{NS}/bindings", binding("p", "n7"))
    assert st == 201
    _, p = await api.get(f"{NS}/pods/p")
    assert p["spec"]["nodeName"] == "n7"
    assert (await api.get(f"{NS}/bindings"))[0] == 405
