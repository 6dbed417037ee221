"""metadata.generation only for the kinds kube-apiserver keeps one for, bumped when the
part of the object that counts for the kind changes."""

from __future__ import annotations

from typing import Any

from .api import Api, cm
from .api import crd as api_crd

NS = "/api/v1/namespaces/default"
DEPLOYS = "/apis/apps/v1/namespaces/default/deployments"
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


def deploy(name: str) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            },
        },
    }


async def test_configmap_has_no_generation(api: Api) -> None:
    st, obj = await api.post(f"{NS}/configmaps", cm("nogen", {"k": "1"}))
    assert st == 201 and "generation" not in obj["metadata"]
    obj["data"] = {"k": "2"}
    st, obj = await api.put(f"{NS}/configmaps/nogen", obj)
    assert st == 200 and obj["data"] == {"k": "2"}
    assert "generation" not in obj["metadata"]
    st, got = await api.get(f"{NS}/configmaps/nogen")
    assert st == 200 and "generation" not in got["metadata"]
    # nor can an update give it one
    got["metadata"]["generation"] = 7
    got["data"] = {"k": "3"}
    st, obj = await api.put(f"{NS}/configmaps/nogen", got)
    assert st == 200 and "generation" not in obj["metadata"]


async def test_deployment_generation_counts_spec_changes_only(api: Api) -> None:
    st, d = await api.post(DEPLOYS, deploy("gen"))
    assert st == 201 and d["metadata"]["generation"] == 1
    d["spec"]["replicas"] = 3
    st, d = await api.put(f"{DEPLOYS}/gen", d)
    assert st == 200 and d["metadata"]["generation"] == 2
    st, d = await api.patch(f"{DEPLOYS}/gen", {"metadata": {"labels": {"tier": "web"}}})
    assert st == 200 and d["metadata"]["labels"] == {"tier": "web"}
    assert d["metadata"]["generation"] == 2
    st, d = await api.patch(f"{DEPLOYS}/gen/status", {"status": {"observedGeneration": 2}})
    assert st == 200 and d["metadata"]["generation"] == 2


def _gadget_crd(status_subresource: bool) -> dict[str, Any]:
    kind = "Gadget" if status_subresource else "Gizmo"
    extra: dict[str, Any] = {"subresources": {"status": {}}} if status_subresource else {}
    return api_crd(
        kind,
        {
            "type": "object",
            "properties": {
                "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            },
        },
        **extra,
    )


async def test_custom_resource_generation(api: Api) -> None:
    for with_status in (True, False):
        st, c = await api.post(CRDS, _gadget_crd(with_status))
        assert st == 201, c
        plural = c["spec"]["names"]["plural"]
        base = f"/apis/example.com/v1/namespaces/default/{plural}"
        obj = {
            "apiVersion": "example.com/v1",
            "kind": c["spec"]["names"]["kind"],
            "metadata": {"name": "x"},
            "spec": {"size": 1},
        }
        st, o = await api.post(base, obj)
        assert st == 201 and o["metadata"]["generation"] == 1, o
        o["spec"]["size"] = 2
        st, o = await api.put(f"{base}/x", o)
        assert st == 200 and o["metadata"]["generation"] == 2
        st, o = await api.patch(f"{base}/x", {"metadata": {"labels": {"a": "b"}}})
        assert st == 200 and o["metadata"]["generation"] == 2
        # a status written through the main resource: ignored with the status
        # subresource, and a change like any other without it
        st, o = await api.patch(f"{base}/x", {"status": {"phase": "Ready"}})
        assert st == 200
        assert o["metadata"]["generation"] == (2 if with_status else 3)


async def test_deletion_start_bumps_generation_where_there_is_one(api: Api) -> None:
    body = deploy("held")
    body["metadata"]["finalizers"] = ["example.com/hold"]
    st, d = await api.post(DEPLOYS, body)
    assert st == 201 and d["metadata"]["generation"] == 1
    st, d = await api.delete(f"{DEPLOYS}/held")
    assert st == 200 and d["metadata"]["deletionTimestamp"]
    assert d["metadata"]["generation"] == 2
    st, d = await api.delete(f"{DEPLOYS}/held")  # already deleting: no change
    assert st == 200 and d["metadata"]["generation"] == 2
    st, c = await api.post(f"{NS}/configmaps", cm("held", finalizers=["example.com/hold"]))
    assert st == 201
    st, c = await api.delete(f"{NS}/configmaps/held")
    assert st == 200 and c["metadata"]["deletionTimestamp"]
    assert "generation" not in c["metadata"]
    for path in (f"{DEPLOYS}/held", f"{NS}/configmaps/held"):
        st, _ = await api.patch(path, {"metadata": {"finalizers": None}})
        assert st == 200
