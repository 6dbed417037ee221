"""gpuyard.apiserver.openapi: the documents kubectl reads (v3 index and group-version
documents, Swagger 2.0), their strategic-merge extensions, custom kinds, and caching."""

from __future__ import annotations

import ssl
from typing import Any

import orjson

from gpuyard.apiserver.openapi import openapi_v2, openapi_v3_doc, openapi_v3_paths
from gpuyard.apiserver.resources import Registry
from gpuyard.apiserver.testing import ServerProcess

from .test_kubectl import k

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


def follow(schemas: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """A property's schema with its reference (plain or through allOf) resolved."""
    ref = node.get("$ref") or (node.get("allOf") or [{}])[0].get("$ref")
    return dict(schemas[ref.rsplit("/", 1)[-1]]) if ref else node


def test_v3_index_and_documents() -> None:
    reg = Registry()
    index = openapi_v3_paths(reg)["paths"]
    assert "api/v1" in index and "apis/apps/v1" in index and "apis/batch/v1" in index
    assert index["api/v1"]["serverRelativeURL"].startswith("/openapi/v3/api/v1?hash=")
    doc = openapi_v3_doc(reg, index["api/v1"]["serverRelativeURL"][len("/openapi/v3/") :])
    assert doc is not None and doc["openapi"].startswith("3.")
    schemas = doc["components"]["schemas"]
    pod = by_gvk(schemas, "Pod")
    assert "Pod is a collection of containers" in pod["description"]
    spec = follow(schemas, pod["properties"]["spec"])
    containers = spec["properties"]["containers"]
    assert containers["x-kubernetes-patch-merge-key"] == "name"
    assert containers["x-kubernetes-patch-strategy"] == "merge"
    container = follow(schemas, containers["items"])
    env = container["properties"]["env"]
    assert env["x-kubernetes-patch-merge-key"] == "name"
    resources = follow(schemas, container["properties"]["resources"])
    assert set(resources["properties"]) == {"claims", "limits", "requests"}
    # every reference of the document resolves inside it
    refs = set()

    def walk(x: Any) -> None:
        if isinstance(x, dict):
            if isinstance(x.get("$ref"), str):
                refs.add(x["$ref"].rsplit("/", 1)[-1])
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(doc)
    assert refs and refs <= set(schemas), refs - set(schemas)
    # kubectl looks for a PATCH operation with fieldValidation to leave validation to us
    patch_ops = [p["patch"] for p in doc["paths"].values() if "patch" in p]
    assert patch_ops and all(
        any(q["name"] == "fieldValidation" for q in op.get("parameters", [])) for op in patch_ops
    )
    assert openapi_v3_doc(reg, "apis/nope.example.com/v1") is None
    apps = openapi_v3_doc(reg, "apis/apps/v1")
    assert apps is not None
    scale = apps["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"]
    assert scale["put"]["x-kubernetes-group-version-kind"]["kind"] == "Scale"


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
    assert index["paths"]["api/v1"] == first["paths"]["api/v1"], "each document has its own hash"
    doc = openapi_v3_doc(reg, "apis/example.com/v1")
    assert doc is not None
    widget = by_gvk(doc["components"]["schemas"], "Widget", "example.com")
    assert widget["properties"]["spec"]["properties"]["size"] == {"type": "integer"}
    meta = follow(doc["components"]["schemas"], widget["properties"]["metadata"])
    assert "labels" in meta["properties"], "a custom kind's metadata is the official ObjectMeta"
    v2b = openapi_v2(reg)
    by_gvk(v2b["definitions"], "Widget", "example.com")
    node = by_gvk(v2b["definitions"], "Node")
    assert node["x-kubernetes-group-version-kind"] == [
        {"group": "", "version": "v1", "kind": "Node"}
    ]
    reg.remove_crd("widgets.example.com")
    assert openapi_v3_doc(reg, "apis/example.com/v1") is None


def test_kubectl_explain_every_encoding(apiserver: ServerProcess) -> None:
    """kubectl explain reads OpenAPI v3 JSON by default and the v2 protobuf with
    --output=plaintext-openapiv2; both describe built-in fields from the definitions."""
    for extra in ((), ("--output=plaintext-openapiv2",)):
        out = k(apiserver, "explain", "pod.spec.containers.resources", *extra).stdout
        assert "ResourceRequirements describes the compute resource requirements" in out, out
        assert "limits" in out and "requests" in out and "claims" in out
    for path in (
        "job.spec.podFailurePolicy.rules",
        "validatingwebhookconfiguration.webhooks.clientConfig.service",
        "apiservice.spec.caBundle",
        "deployment.spec.strategy.rollingUpdate.maxSurge",
        "workloads.spec",
    ):
        r = k(apiserver, "explain", path, check=False)
        assert r.returncode == 0 and "DESCRIPTION" in r.stdout, (path, r.stderr)
    r = k(apiserver, "explain", "pod.spec.nosuchfield", check=False)
    assert r.returncode != 0 and "does not exist" in r.stderr


def test_v2_is_served_as_protobuf_when_asked(apiserver: ServerProcess) -> None:
    import urllib.request

    from gpuyard.apiserver.openapi import V2_PROTO, V2_PROTO_ANSWER

    def fetch(accept: str) -> tuple[str, bytes]:
        req = urllib.request.Request(
            apiserver.url + "/openapi/v2",
            headers={"Accept": accept, "Authorization": f"Bearer {apiserver.token}"},
        )
        ctx = ssl.create_default_context(cafile=apiserver.ca_file)
        with urllib.request.urlopen(req, context=ctx, timeout=30) as r:
            return r.headers["Content-Type"], r.read()

    ctype, body = fetch(f"{V2_PROTO}, application/json")
    assert ctype == V2_PROTO_ANSWER and body[:1] == b"\x0a" and b"io.k8s.api.core.v1.Pod" in body
    ctype, js = fetch("application/json")
    assert ctype.startswith("application/json") and orjson.loads(js)["swagger"] == "2.0"
