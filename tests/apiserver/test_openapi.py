"""gpuyard.apiserver.openapi: the documents kubectl reads (v3 index and group-version
documents, Swagger 2.0), their strategic-merge extensions, custom kinds, and caching."""

from __future__ import annotations

from typing import Any

from gpuyard.apiserver.openapi import openapi_v2, openapi_v3_doc, openapi_v3_paths
from gpuyard.apiserver.resources import Registry

CRD: dict[str, Any] = {
    "metadata": {"name": "widgets.example.com"},
    "spec": {
        "group": "example.com",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {"type": "object", "properties": {"size": {"type": "integer"}}}
                        },
                    }
                },
            }
        ],
    },
}


def by_gvk(schemas: dict[str, Any], kind: str, group: str = "") -> dict[str, Any]:
    for s in schemas.values():
        for gvk in s.get("x-kubernetes-group-version-kind") or []:
            if gvk["kind"] == kind and gvk["group"] == group:
                return dict(s)
    raise AssertionError(f"no schema for {group}/{kind}")


def test_v3_index_and_documents() -> None:
    reg = Registry()
    index = openapi_v3_paths(reg)["paths"]
    assert "api/v1" in index and "apis/apps/v1" in index
    assert index["api/v1"]["serverRelativeURL"].startswith("/openapi/v3/api/v1?hash=")
    doc = openapi_v3_doc(reg, index["api/v1"]["serverRelativeURL"][len("/openapi/v3/") :])
    assert doc is not None and doc["openapi"].startswith("3.")
    pod = by_gvk(doc["components"]["schemas"], "Pod")
    containers = pod["properties"]["spec"]["properties"]["containers"]
    assert containers["x-kubernetes-patch-merge-key"] == "name"
    assert containers["x-kubernetes-patch-strategy"] == "merge"
    env = containers["items"]["properties"]["env"]
    assert env["x-kubernetes-patch-merge-key"] == "name"
    # kubectl looks for a PATCH operation with fieldValidation to leave validation to us
    patch_ops = [p["patch"] for p in doc["paths"].values() if "patch" in p]
    assert patch_ops and all(
        any(q["name"] == "fieldValidation" for q in op.get("parameters", [])) for op in patch_ops
    )
    assert openapi_v3_doc(reg, "apis/nope.example.com/v1") is None


def test_custom_kinds_and_cache_follow_the_registry() -> None:
    reg = Registry()
    first = openapi_v3_paths(reg)
    assert openapi_v3_paths(reg) is first, "cached while nothing changes"
    v2 = openapi_v2(reg)
    assert v2["swagger"] == "2.0" and openapi_v2(reg) is v2
    assert "apis/example.com/v1" not in first["paths"]
    reg.add_crd(CRD)
    index = openapi_v3_paths(reg)
    assert index is not first and "apis/example.com/v1" in index["paths"]
    assert index["paths"]["api/v1"] != first["paths"]["api/v1"], "hash changes with the API"
    doc = openapi_v3_doc(reg, "apis/example.com/v1")
    assert doc is not None
    widget = by_gvk(doc["components"]["schemas"], "Widget", "example.com")
    assert widget["properties"]["spec"]["properties"]["size"] == {"type": "integer"}
    v2b = openapi_v2(reg)
    by_gvk(v2b["definitions"], "Widget", "example.com")
    node = by_gvk(v2b["definitions"], "Node")
    assert node["x-kubernetes-group-version-kind"] == [
        {"group": "", "version": "v1", "kind": "Node"}
    ]
    reg.remove_crd("widgets.example.com")
    assert openapi_v3_doc(reg, "apis/example.com/v1") is None
