"""OpenAPI documents of the embedded API server, for kubectl and other real clients.

Built-in kinds are described by the official Kubernetes 1.37 definitions (the ones
gpuyard.apiserver.schemas checks bodies with), with their descriptions, formats and
`x-kubernetes-*` extensions, so `kubectl explain` works on every built-in field and
client-side apply finds the strategic-merge keys. Custom kinds get their CRD's schema,
with `metadata` the official ObjectMeta.

kubectl (1.27+) validates and applies with OpenAPI v3: it reads the `/openapi/v3`
index, then the document of one group-version, and looks there for the PATCH operation
of the kind (found by its `x-kubernetes-group-version-kind`) with a `fieldValidation`
query parameter; finding one, it leaves validation to the server. `openapi_v2` is the
Swagger 2.0 document of every served kind; `openapi_v2_bytes` serializes it as JSON or
as gnostic's protobuf (gpuyard.apiserver.openapi_pb), which kubectl asks for.

Documents are built once per registry generation (the set of resources changes only
with CRDs) and kept serialized; callers get the shared objects and must not modify them.
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from gpuyard.apiserver import openapi_pb, schemas
from gpuyard.apiserver.resources import Registry, Resource

_LOCAL = "#/$defs/"
_OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
_STATUS = "io.k8s.apimachinery.pkg.apis.meta.v1.Status"
_DELETE_OPTIONS = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions"
_PATCH = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch"
_SCALE = "io.k8s.api.autoscaling.v1.Scale"
# Types the JSON-schema form writes as oneOf, as the OpenAPI documents write them.
_SPECIAL = {
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString": {
        "type": "string",
        "format": "int-or-string",
    },
    "io.k8s.apimachinery.pkg.api.resource.Quantity": {"type": "string"},
}
V2_PROTO = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
V2_PROTO_ANSWER = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"


# ------------------------------------------------------------ official definitions


def _refname(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def _convert(node: Any, prefix: str, v3: bool) -> Any:
    """One JSON-schema node of the definitions in OpenAPI form (refs under `prefix`,
    a single `type`, no nulls)."""
    if isinstance(node, list):
        return [_convert(x, prefix, v3) for x in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, val in node.items():
        if key == "$ref":
            continue
        if key == "type":
            types = [t for t in (val if isinstance(val, list) else [val]) if t != "null"]
            if len(types) == 1:
                out["type"] = types[0]
            continue
        if key == "enum" and isinstance(val, list):
            out["enum"] = [v for v in val if v is not None]
            continue
        if key in ("properties", "patternProperties") and isinstance(val, dict):
            out[key] = {k: _convert(v, prefix, v3) for k, v in val.items()}
            continue
        out[key] = _convert(val, prefix, v3)
    ref = node.get("$ref")
    if isinstance(ref, str):
        target = prefix + _refname(ref)
        if v3 and out:
            out["allOf"] = [{"$ref": target}]
        else:
            out["$ref"] = target
    return out


def _refs(node: Any, found: set[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            found.add(_refname(ref))
        for v in node.values():
            _refs(v, found)
    elif isinstance(node, list):
        for v in node:
            _refs(v, found)


class _Official:
    """The official definitions, converted once per form and with their closures."""

    def __init__(self) -> None:
        self.defs = schemas.definitions().defs
        self._forms: dict[bool, dict[str, Any]] = {}
        self._deps: dict[str, set[str]] = {}

    def form(self, v3: bool) -> dict[str, Any]:
        f = self._forms.get(v3)
        if f is None:
            prefix = "#/components/schemas/" if v3 else "#/definitions/"
            f = {}
            for name, d in self.defs.items():
                special = _SPECIAL.get(name)
                if special is not None:
                    c = {k: v for k, v in d.items() if k == "description"}
                    c.update(special)
                else:
                    c = _convert(d, prefix, v3)
                f[name] = c
            self._forms[v3] = f
        return f

    def closure(self, names: Iterable[str]) -> list[str]:
        seen: set[str] = set()
        todo = [n for n in names if n in self.defs]
        while todo:
            n = todo.pop()
            if n in seen:
                continue
            seen.add(n)
            deps = self._deps.get(n)
            if deps is None:
                deps = set()
                _refs(self.defs.get(n), deps)
                self._deps[n] = deps
            todo.extend(d for d in deps if d not in seen and d in self.defs)
        return sorted(seen)


_OFFICIAL: _Official | None = None


def _official() -> _Official:
    global _OFFICIAL
    if _OFFICIAL is None:
        _OFFICIAL = _Official()
    return _OFFICIAL


def _builtin_name(r: Resource, kind: str | None = None) -> str | None:
    return schemas.definitions().by_gvk.get((r.group, r.version, kind or r.kind))


def _custom_name(r: Resource, kind: str | None = None) -> str:
    group = ".".join(reversed(r.group.split(".")))
    return f"{group}.{r.version}.{kind or r.kind}"


def _def_name(r: Resource, kind: str | None = None) -> str:
    if not r.custom:
        name = _builtin_name(r, kind)
        if name:
            return name
    return _custom_name(r, kind)


def _gvk(r: Resource, kind: str | None = None) -> dict[str, str]:
    return {"group": r.group, "version": r.version, "kind": kind or r.kind}


def _v2_of_v3(node: Any) -> Any:
    """A CRD's structural schema as OpenAPI v2 can say it (what kube-apiserver
    publishes: no nullable, oneOf, anyOf, not; int-or-string without a type)."""
    if isinstance(node, list):
        return [_v2_of_v3(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for k, v in node.items():
        if k in ("nullable", "oneOf", "anyOf", "not", "allOf"):
            continue
        if k in ("properties", "patternProperties") and isinstance(v, dict):
            out[k] = {pk: _v2_of_v3(pv) for pk, pv in v.items()}
        else:
            out[k] = _v2_of_v3(v)
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
    return out


def _custom_schemas(r: Resource, v3: bool) -> dict[str, Any]:
    prefix = "#/components/schemas/" if v3 else "#/definitions/"
    schema = dict(r.schema or {"type": "object", "x-kubernetes-preserve-unknown-fields": True})
    if not v3:
        schema = _v2_of_v3(schema)
    props = dict(schema.get("properties") or {})
    props["apiVersion"] = {
        "type": "string",
        "description": "APIVersion defines the versioned schema of this representation of "
        "an object.",
    }
    props["kind"] = {
        "type": "string",
        "description": "Kind is a string value representing the REST resource this object "
        "represents.",
    }
    md = {"description": "Standard object's metadata."}
    props["metadata"] = (
        {**md, "allOf": [{"$ref": prefix + _OBJECT_META}]}
        if v3
        else {**md, "$ref": prefix + _OBJECT_META}
    )
    schema["properties"] = props
    schema.setdefault("type", "object")
    schema["x-kubernetes-group-version-kind"] = [_gvk(r)]
    lst = {
        "description": f"{r.kind}List is a list of {r.kind}",
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": props["apiVersion"],
            "items": {"type": "array", "items": {"$ref": prefix + _custom_name(r)}},
            "kind": props["kind"],
            "metadata": {"$ref": prefix + "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta"},
        },
        "x-kubernetes-group-version-kind": [_gvk(r, r.list_kind)],
    }
    return {_custom_name(r): schema, _custom_name(r, r.list_kind): lst}


def _schemas(resources: list[Resource], v3: bool) -> dict[str, Any]:
    """Definition name -> schema: every built-in kind's closure, custom kinds' schemas."""
    off = _official()
    names = {
        _OBJECT_META,
        _STATUS,
        _DELETE_OPTIONS,
        _PATCH,
        "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta",
    }
    custom: dict[str, Any] = {}
    for r in resources:
        if r.custom:
            custom.update(_custom_schemas(r, v3))
            continue
        for kind in (r.kind, r.list_kind):
            n = _builtin_name(r, kind)
            if n:
                names.add(n)
        if "scale" in r.subresources:
            names.add(_SCALE)
    if any("scale" in r.subresources for r in resources):
        names.add(_SCALE)
    form = off.form(v3)
    out = {n: form[n] for n in off.closure(names)}
    out.update(custom)
    return dict(sorted(out.items()))


# ------------------------------------------------------------ paths

_QUERY = (
    ("dryRun", "string", "When present, indicates that modifications should not be persisted."),
    (
        "fieldManager",
        "string",
        "fieldManager is a name associated with the actor or entity that is making these changes.",
    ),
    (
        "fieldValidation",
        "string",
        "fieldValidation instructs the server on how to handle "
        "objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields.",
    ),
    ("force", "boolean", 'Force is going to "force" Apply requests.'),
    ("pretty", "string", "If 'true', then the output is pretty printed."),
)


def _params(v3: bool, names: tuple[str, ...]) -> list[dict[str, Any]]:
    out = []
    for n, t, desc in _QUERY:
        if n not in names:
            continue
        p: dict[str, Any] = {"name": n, "in": "query", "description": desc, "uniqueItems": True}
        if v3:
            p["schema"] = {"type": t, "uniqueItems": True}
            p.pop("uniqueItems")
        else:
            p["type"] = t
        out.append(p)
    return out


def _patch_types(r: Resource) -> tuple[str, ...]:
    """The patch bodies a kind takes: custom kinds have no strategic merge patch (kubectl
    reads this to choose the patch it sends)."""
    types = (
        "application/apply-patch+yaml",
        "application/json-patch+json",
        "application/merge-patch+json",
    )
    return types if r.custom else (*types, "application/strategic-merge-patch+json")


_WRITE = ("dryRun", "fieldManager", "fieldValidation", "pretty")


def _paths(r: Resource, v3: bool) -> dict[str, Any]:
    base = r.path_prefix()
    coll = f"{base}/namespaces/{{namespace}}/{r.plural}" if r.namespaced else f"{base}/{r.plural}"
    prefix = "#/components/schemas/" if v3 else "#/definitions/"

    def ref(kind: str | None = None, name: str | None = None) -> dict[str, Any]:
        return {"$ref": prefix + (name or _def_name(r, kind))}

    def op(
        verb: str,
        action: str,
        answer: dict[str, Any],
        body: dict[str, Any] | None = None,
        params: tuple[str, ...] = ("pretty",),
        kind: str | None = None,
        gvk: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        o: dict[str, Any] = {
            "description": f"{verb} {kind or r.kind}",
            "operationId": f"{verb}{r.kind}",
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": gvk or _gvk(r),
        }
        ps = _params(v3, params)
        if v3:
            o["parameters"] = ps
            if body is not None:
                types = _patch_types(r) if verb == "patch" else ("*/*",)
                o["requestBody"] = {
                    "content": {t: {"schema": body} for t in types},
                    "required": True,
                }
            o["responses"] = {
                "200": {"description": "OK", "content": {"application/json": {"schema": answer}}},
                "401": {"description": "Unauthorized"},
            }
        else:
            if body is not None:
                ps = [{"name": "body", "in": "body", "required": True, "schema": body}, *ps]
            o["parameters"] = ps
            o["consumes"] = list(_patch_types(r)) if verb == "patch" else ["*/*"]
            o["produces"] = ["application/json", "application/yaml"]
            o["responses"] = {
                "200": {"description": "OK", "schema": answer},
                "401": {"description": "Unauthorized"},
            }
        return o

    verbs = set(r.verbs)
    item = f"{coll}/{{name}}"
    patch_body = {"$ref": prefix + _PATCH}
    paths: dict[str, Any] = {}
    c: dict[str, Any] = {}
    if "list" in verbs:
        c["get"] = op("list", "list", ref(r.list_kind))
    if "create" in verbs:
        c["post"] = op("create", "post", ref(), ref(), _WRITE)
    if "deletecollection" in verbs:
        c["delete"] = op("deletecollection", "deletecollection", {"$ref": prefix + _STATUS})
    if c:
        paths[coll] = c
    i: dict[str, Any] = {}
    if "get" in verbs:
        i["get"] = op("read", "get", ref())
    if "update" in verbs:
        i["put"] = op("replace", "put", ref(), ref(), _WRITE)
    if "patch" in verbs:
        i["patch"] = op("patch", "patch", ref(), patch_body, (*_WRITE, "force"))
    if "delete" in verbs:
        i["delete"] = op("delete", "delete", {"$ref": prefix + _STATUS})
    if i:
        paths[item] = i
    for sub in r.subresources:
        if sub == "status":
            answer = ref()
            gvk = _gvk(r)
        elif sub == "scale":
            answer = {"$ref": prefix + _SCALE}
            gvk = {"group": "autoscaling", "version": "v1", "kind": "Scale"}
        else:
            continue
        paths[f"{item}/{sub}"] = {
            "get": op("read", "get", answer, gvk=gvk),
            "put": op("replace", "put", answer, answer, _WRITE, gvk=gvk),
            "patch": op("patch", "patch", answer, patch_body, (*_WRITE, "force"), gvk=gvk),
        }
    return paths


# ------------------------------------------------------------ documents and cache


def _gv_path(r: Resource) -> str:
    return f"apis/{r.group}/{r.version}" if r.group else f"api/{r.version}"


def _doc_v3(resources: list[Resource]) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for r in resources:
        paths.update(_paths(r, True))
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.37.0"},
        "paths": paths,
        "components": {"schemas": _schemas(resources, True)},
    }


_cache: weakref.WeakKeyDictionary[Registry, tuple[int, dict[str, Any]]] = (
    weakref.WeakKeyDictionary()
)


def _cached(registry: Registry, key: str, build: Callable[[], Any]) -> Any:
    """One value per registry generation. Callers get the shared value: they must not
    modify it."""
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


def _gv_hash(registry: Registry, gv_path: str) -> str:
    raw = openapi_v3_doc_bytes(registry, gv_path)
    return hashlib.sha512(raw or b"").hexdigest()[:32].upper()


def openapi_v3_paths(registry: Registry) -> dict[str, Any]:
    """The /openapi/v3 index: one entry per served group-version, each URL with the
    hash of its document (clients cache documents by it)."""
    doc = _cached(registry, "v3", lambda: _v3_paths(registry))
    assert doc is not None
    return doc  # type: ignore[no-any-return]


def _v3_paths(registry: Registry) -> dict[str, Any]:
    gvs = sorted({_gv_path(r) for r in registry.all()})
    return {
        "paths": {
            gv: {"serverRelativeURL": f"/openapi/v3/{gv}?hash={_gv_hash(registry, gv)}"}
            for gv in gvs
        }
    }


def openapi_v3_paths_bytes(registry: Registry) -> bytes:
    return _cached(registry, "v3:json", lambda: orjson.dumps(openapi_v3_paths(registry)))  # type: ignore[no-any-return]


def openapi_v3_doc(registry: Registry, gv_path: str) -> dict[str, Any] | None:
    """The OpenAPI 3.0 document of one group-version ("api/v1", "apis/apps/v1")."""
    gv_path = gv_path.split("?", 1)[0].strip("/")
    return _cached(registry, "v3:" + gv_path, lambda: _v3_doc(registry, gv_path))  # type: ignore[no-any-return]


def openapi_v3_doc_bytes(registry: Registry, gv_path: str) -> bytes | None:
    gv_path = gv_path.split("?", 1)[0].strip("/")

    def build() -> bytes | None:
        doc = openapi_v3_doc(registry, gv_path)
        return None if doc is None else orjson.dumps(doc)

    return _cached(registry, "v3:json:" + gv_path, build)  # type: ignore[no-any-return]


def _v3_doc(registry: Registry, gv_path: str) -> dict[str, Any] | None:
    resources = [r for r in registry.all() if _gv_path(r) == gv_path]
    if not resources:
        return None
    return _doc_v3(sorted(resources, key=lambda r: r.plural))


def openapi_v2(registry: Registry) -> dict[str, Any]:
    """A Swagger 2.0 document covering every served kind."""
    doc = _cached(registry, "v2", lambda: _v2(registry))
    assert doc is not None
    return doc  # type: ignore[no-any-return]


def openapi_v2_bytes(registry: Registry, proto: bool) -> bytes:
    """The Swagger 2.0 document serialized: JSON, or gnostic's OpenAPIv2 protobuf."""
    if proto:
        return _cached(registry, "v2:pb", lambda: openapi_pb.encode(openapi_v2(registry)))  # type: ignore[no-any-return]
    return _cached(registry, "v2:json", lambda: orjson.dumps(openapi_v2(registry)))  # type: ignore[no-any-return]


def wants_v2_proto(accept: str) -> bool:
    """Whether an Accept header asks for the protobuf form first (as kubectl does)."""
    for part in accept.split(","):
        mt = part.split(";", 1)[0].strip()
        if mt == V2_PROTO:
            return True
        if mt in ("application/json", "*/*"):
            return False
    return False


def _v2(registry: Registry) -> dict[str, Any]:
    resources = sorted(registry.all(), key=lambda r: (r.group, r.version, r.plural))
    paths: dict[str, Any] = {}
    for r in resources:
        paths.update(_paths(r, False))
    return {
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": "v1.37.0"},
        "paths": paths,
        "definitions": _schemas(resources, False),
        "securityDefinitions": {
            "BearerToken": {
                "description": "Bearer Token authentication",
                "in": "header",
                "name": "authorization",
                "type": "apiKey",
            }
        },
        "security": [{"BearerToken": []}],
    }
