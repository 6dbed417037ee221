"""OpenAPI documents of the embedded API server, for kubectl and other real clients.

kubectl (1.27+) validates and applies with OpenAPI v3: it reads the `/openapi/v3`
index, then the document of one group-version, and looks there for the PATCH
operation of the kind (found by its `x-kubernetes-group-version-kind` extension) with
a `fieldValidation` query parameter. When it finds one, it leaves validation to the
server (it sends `fieldValidation=Strict`) instead of validating on the client. For
client-side apply of built-in kinds it uses the component schemas' strategic-merge
extensions (`x-kubernetes-patch-merge-key`, `x-kubernetes-patch-strategy`) on the list
fields that have merge keys; custom resources are applied with merge patches and get
their CRD's schema.

`openapi_v2` gives a Swagger 2.0 document with the same definitions, for clients that
read v2 as JSON. Documents are cached per registry generation (shared: do not modify).
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Callable
from typing import Any

import orjson

from gpuyard.apiserver.resources import Registry, Resource

_OBJ: dict[str, Any] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


def _merge_list(key: str, items: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "type": "array",
        "items": items or dict(_OBJ),
        "x-kubernetes-patch-merge-key": key,
        "x-kubernetes-patch-strategy": "merge",
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": [key],
    }


def _container() -> dict[str, Any]:
    return {
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
        "properties": {
            "name": {"type": "string"},
            "env": _merge_list("name"),
            "ports": _merge_list("containerPort"),
            "volumeMounts": _merge_list("mountPath"),
        },
    }


def _pod_spec() -> dict[str, Any]:
    return {
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
        "properties": {
            "containers": _merge_list("name", _container()),
            "initContainers": _merge_list("name", _container()),
            "ephemeralContainers": _merge_list("name", _container()),
            "volumes": _merge_list("name"),
            "imagePullSecrets": _merge_list("name"),
            "tolerations": {"type": "array", "items": dict(_OBJ)},
        },
    }


def _metadata() -> dict[str, Any]:
    return {
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
        "properties": {
            "name": {"type": "string"},
            "namespace": {"type": "string"},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            "ownerReferences": _merge_list("uid"),
            "finalizers": {
                "type": "array",
                "items": {"type": "string"},
                "x-kubernetes-patch-strategy": "merge",
            },
        },
    }


def _builtin_schema(r: Resource) -> dict[str, Any]:
    props: dict[str, Any] = {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": _metadata(),
    }
    status = {
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
        "properties": {"conditions": _merge_list("type")},
    }
    if r.kind == "Pod":
        props["spec"] = _pod_spec()
        props["status"] = status
    elif r.kind in ("Deployment", "DaemonSet"):
        props["spec"] = {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": True,
            "properties": {
                "template": {
                    "type": "object",
                    "x-kubernetes-preserve-unknown-fields": True,
                    "properties": {"metadata": _metadata(), "spec": _pod_spec()},
                }
            },
        }
        props["status"] = status
    elif r.kind == "Node":
        props["spec"] = {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": True,
            "properties": {"taints": {"type": "array", "items": dict(_OBJ)}},
        }
        props["status"] = {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": True,
            "properties": {"conditions": _merge_list("type"), "addresses": _merge_list("type")},
        }
    return {"type": "object", "x-kubernetes-preserve-unknown-fields": True, "properties": props}


def _custom_schema(r: Resource) -> dict[str, Any]:
    schema = dict(r.schema or _OBJ)
    props = dict(schema.get("properties") or {})
    props["apiVersion"] = {"type": "string"}
    props["kind"] = {"type": "string"}
    props["metadata"] = _metadata()
    schema["properties"] = props
    schema.setdefault("type", "object")
    return schema


def _def_name(r: Resource) -> str:
    group = ".".join(reversed(r.group.split("."))) if r.group else "core"
    return f"io.gpuyard.{group}.{r.version}.{r.kind}"


def _gvk(r: Resource) -> dict[str, str]:
    return {"group": r.group, "version": r.version, "kind": r.kind}


_PARAMS = [
    {"name": n, "in": "query", "schema": {"type": t}, "type": t}
    for n, t in (
        ("dryRun", "string"),
        ("fieldManager", "string"),
        ("fieldValidation", "string"),
        ("force", "boolean"),
        ("pretty", "string"),
    )
]


def _paths(r: Resource, v3: bool) -> dict[str, Any]:
    base = r.path_prefix()
    if r.namespaced:
        coll = f"{base}/namespaces/{{namespace}}/{r.plural}"
    else:
        coll = f"{base}/{r.plural}"
    ref = f"#/components/schemas/{_def_name(r)}" if v3 else f"#/definitions/{_def_name(r)}"
    body = (
        {"requestBody": {"content": {"application/json": {"schema": {"$ref": ref}}}}}
        if v3
        else {"parameters": [{"name": "body", "in": "body", "schema": {"$ref": ref}}]}
    )

    def op(verb: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        o: dict[str, Any] = {
            "operationId": f"{verb}{r.kind}",
            "x-kubernetes-action": verb,
            "x-kubernetes-group-version-kind": _gvk(r),
            "parameters": [dict(p) for p in _PARAMS],
            "responses": {"200": {"description": "OK"}},
        }
        o.update(extra or {})
        if not v3:
            for p in o["parameters"]:
                p.pop("schema", None)
        else:
            for p in o["parameters"]:
                p.pop("type", None)
        return o

    item = f"{coll}/{{name}}"
    paths: dict[str, Any] = {
        coll: {"get": op("list"), "post": op("post", body)},
        item: {
            "get": op("get"),
            "put": op("put", body),
            "patch": op("patch"),
            "delete": op("delete"),
        },
    }
    if "status" in r.subresources:
        paths[f"{item}/status"] = {"get": op("get"), "put": op("put", body), "patch": op("patch")}
    return paths


def _gv_path(r: Resource) -> str:
    return f"apis/{r.group}/{r.version}" if r.group else f"api/{r.version}"


def _signature(registry: Registry) -> str:
    parts = sorted(
        f"{r.group}/{r.version}/{r.plural}/{hash(orjson.dumps(r.schema or {}))}"
        for r in registry.all()
    )
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _doc_v3(resources: list[Resource]) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for r in resources:
        paths.update(_paths(r, True))
    return {
        "openapi": "3.0.0",
        "info": {"title": "gpuyard", "version": "v1"},
        "paths": paths,
        "components": {"schemas": _schemas(resources)},
    }


def _schemas(resources: list[Resource]) -> dict[str, Any]:
    """Definition name -> schema, each tagged with its group-version-kind."""
    out: dict[str, Any] = {}
    for r in resources:
        schema = _custom_schema(r) if r.custom else _builtin_schema(r)
        schema["x-kubernetes-group-version-kind"] = [_gvk(r)]
        out[_def_name(r)] = schema
    return out


_cache: weakref.WeakKeyDictionary[Registry, tuple[int, dict[str, Any]]] = (
    weakref.WeakKeyDictionary()
)


def _cached(
    registry: Registry, key: str, build: Callable[[], dict[str, Any] | None]
) -> dict[str, Any] | None:
    """One document per registry generation (the set of resources changes only with CRDs).
    Callers get the shared document: they must not modify it."""
    gen = int(getattr(registry, "generation", 0))
    entry = _cache.get(registry)
    if entry is None or entry[0] != gen:
        entry = (gen, {})
        _cache[registry] = entry
    docs = entry[1]
    doc = docs.get(key)
    if doc is None:
        doc = build()
        if doc is not None:  # unknown group-versions are not remembered
            docs[key] = doc
    return doc


def openapi_v3_paths(registry: Registry) -> dict[str, Any]:
    """The /openapi/v3 index: one entry per served group-version."""
    doc = _cached(registry, "v3", lambda: _v3_paths(registry))
    assert doc is not None
    return doc


def _v3_paths(registry: Registry) -> dict[str, Any]:
    sig = _signature(registry)
    gvs = sorted({_gv_path(r) for r in registry.all()})
    return {"paths": {gv: {"serverRelativeURL": f"/openapi/v3/{gv}?hash={sig}"} for gv in gvs}}


def openapi_v3_doc(registry: Registry, gv_path: str) -> dict[str, Any] | None:
    """The OpenAPI 3.0 document of one group-version ("api/v1", "apis/apps/v1")."""
    gv_path = gv_path.split("?", 1)[0].strip("/")
    return _cached(registry, "v3:" + gv_path, lambda: _v3_doc(registry, gv_path))


def _v3_doc(registry: Registry, gv_path: str) -> dict[str, Any] | None:
    resources = [r for r in registry.all() if _gv_path(r) == gv_path]
    if not resources:
        return None
    return _doc_v3(sorted(resources, key=lambda r: r.plural))


def openapi_v2(registry: Registry) -> dict[str, Any]:
    """A Swagger 2.0 document covering every served kind."""
    doc = _cached(registry, "v2", lambda: _v2(registry))
    assert doc is not None
    return doc


def _v2(registry: Registry) -> dict[str, Any]:
    resources = sorted(registry.all(), key=lambda r: (r.group, r.version, r.plural))
    paths: dict[str, Any] = {}
    for r in resources:
        paths.update(_paths(r, False))
    return {
        "swagger": "2.0",
        "info": {"title": "gpuyard", "version": "v1"},
        "paths": paths,
        "definitions": _schemas(resources),
    }
