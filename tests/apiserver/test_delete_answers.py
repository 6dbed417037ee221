"""DELETE answers and Status objects as kube-apiserver writes them: the deleted object
for the kinds whose store returns it (pods, services, serviceaccounts, PVs, PVCs,
storage classes, namespaces, CRDs), a Status naming the resource for the others
(custom resources too), the object as it now is while finalizers hold it, and Status
fields in kube-apiserver's order, so strict clients (the official client's typed
models) parse them."""

from __future__ import annotations

from typing import Any

from .api import Api, crd

NS = "/api/v1/namespaces/default"

CRD: dict[str, Any] = crd("Gizmo", {"type": "object", "x-kubernetes-preserve-unknown-fields": True})


async def test_status_for_most_kinds_object_for_some(api: Api) -> None:
    st, cm = await api.post(f"{NS}/configmaps", {"metadata": {"name": "c"}, "data": {"a": "b"}})
    assert st == 201
    st, out = await api.delete(f"{NS}/configmaps/c")
    assert st == 200
    assert list(out) == ["kind", "apiVersion", "metadata", "status", "details"]
    assert out["status"] == "Success"
    assert out["details"] == {"name": "c", "kind": "configmaps", "uid": cm["metadata"]["uid"]}

    st, _ = await api.post(
        "/apis/rbac.authorization.k8s.io/v1/clusterroles", {"metadata": {"name": "r"}, "rules": []}
    )
    st, out = await api.delete("/apis/rbac.authorization.k8s.io/v1/clusterroles/r")
    assert st == 200 and list(out["details"]) == ["name", "group", "kind", "uid"]
    assert out["details"]["group"] == "rbac.authorization.k8s.io"
    assert out["details"]["kind"] == "clusterroles"

    for path, body in (
        (f"{NS}/serviceaccounts", {"metadata": {"name": "sa"}}),
        (f"{NS}/services", {"metadata": {"name": "svc"}, "spec": {"ports": [{"port": 80}]}}),
        (
            "/apis/storage.k8s.io/v1/storageclasses",
            {"metadata": {"name": "fast"}, "provisioner": "example.com/disk"},
        ),
    ):
        st, made = await api.post(path, body)
        assert st == 201, made
        st, out = await api.delete(f"{path}/{body['metadata']['name']}")
        assert st == 200 and out["kind"] == made["kind"], out
        assert out["metadata"]["uid"] == made["metadata"]["uid"]
        st, _ = await api.get(f"{path}/{body['metadata']['name']}")
        assert st == 404


async def test_custom_resources_and_finalizers(api: Api) -> None:
    st, _ = await api.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", CRD)
    assert st == 201
    base = "/apis/example.com/v1/namespaces/default/gizmos"
    for _ in range(50):
        st, _ = await api.get(base)
        if st == 200:
            break
        import asyncio

        await asyncio.sleep(0.1)
    st, g = await api.post(
        base, {"apiVersion": "example.com/v1", "kind": "Gizmo", "metadata": {"name": "g"}}
    )
    assert st == 201, g
    st, out = await api.delete(f"{base}/g")
    assert st == 200 and out["kind"] == "Status"
    assert out["details"] == {
        "name": "g",
        "group": "example.com",
        "kind": "gizmos",
        "uid": g["metadata"]["uid"],
    }
    # held by a finalizer: the object as it now is, with its deletionTimestamp
    st, _ = await api.post(
        f"{NS}/configmaps", {"metadata": {"name": "held", "finalizers": ["example.com/keep"]}}
    )
    st, out = await api.delete(f"{NS}/configmaps/held")
    assert st == 200 and out["kind"] == "ConfigMap" and out["metadata"]["deletionTimestamp"]


async def test_failure_status_field_order(api: Api) -> None:
    st, out = await api.get(f"{NS}/configmaps/nope")
    assert st == 404
    assert list(out) == [
        "kind",
        "apiVersion",
        "metadata",
        "status",
        "message",
        "reason",
        "details",
        "code",
    ]
    assert list(out["details"]) == ["name", "kind"]
    st, out = await api.get("/apis/apps/v1/namespaces/default/deployments/nope")
    assert list(out["details"]) == ["name", "group", "kind"]
