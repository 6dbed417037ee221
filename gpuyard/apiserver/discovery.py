"""API discovery documents and /version: the legacy lists (APIVersions, APIGroupList,
APIResourceList) and aggregated discovery (apidiscovery.k8s.io/v2 APIGroupDiscoveryList,
which kubectl reads in one request instead of one per group-version). Pure: built from
a Registry."""

from __future__ import annotations

from typing import Any

import orjson

from gpuyard.apiserver.resources import Registry, Resource
from gpuyard.apiserver.schemas import KUBERNETES_VERSION

# /version: the Kubernetes release whose API the server follows (its schemas' release),
# so kubectl of that release does not warn about version skew.
VERSION_INFO = {
    "major": KUBERNETES_VERSION.split(".")[0],
    "minor": KUBERNETES_VERSION.split(".")[1],
    "gitVersion": f"v{KUBERNETES_VERSION}.0+gpuyard",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.24.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}


def api_versions(server_address: str) -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
        ],
    }


def _group(name: str, versions: list[str]) -> dict[str, Any]:
    vs = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": vs, "preferredVersion": vs[0]}


def api_group_list(registry: Registry) -> dict[str, Any]:
    return {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [_group(g, vs) for g, vs in registry.groups()],
    }


def api_group(registry: Registry, group: str) -> dict[str, Any] | None:
    for g, vs in registry.groups():
        if g == group:
            return {"kind": "APIGroup", "apiVersion": "v1", **_group(g, vs)}
    return None


def _entry(r: Resource) -> dict[str, Any]:
    e: dict[str, Any] = {
        "name": r.plural,
        "singularName": r.singular,
        "namespaced": r.namespaced,
        "kind": r.kind,
        "verbs": list(r.verbs),
    }
    if r.short_names:
        e["shortNames"] = list(r.short_names)
    if r.categories:
        e["categories"] = list(r.categories)
    return e


def _sub_entries(r: Resource) -> list[dict[str, Any]]:
    out = []
    info = {s.name: s for s in r.sub_info}
    for sub in r.subresources:
        e: dict[str, Any] = {
            "name": f"{r.plural}/{sub}",
            "singularName": "",
            "namespaced": r.namespaced,
        }
        s = info.get(sub)
        if s is not None:
            if s.group or s.version:
                e["group"], e["version"] = s.group, s.version
            e["kind"] = s.kind
            e["verbs"] = list(s.verbs)
        elif sub == "scale":  # a CRD's
            e.update(group="autoscaling", version="v1", kind="Scale")
            e["verbs"] = ["get", "patch", "update"]
        else:
            e["kind"] = r.kind
            e["verbs"] = ["get", "patch", "update"]
        out.append(e)
    return out


def api_resource_list(registry: Registry, group: str, version: str) -> dict[str, Any] | None:
    rs = registry.resources_in(group, version)
    if not rs:
        return None
    resources: list[dict[str, Any]] = []
    for r in sorted(rs, key=lambda r: r.plural):
        resources.append(_entry(r))
        resources.extend(_sub_entries(r))
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": resources,
    }


# ------------------------------------------------------------ aggregated discovery

AGGREGATED_V2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
_AGGREGATED_CACHE: dict[tuple[int, int, bool], bytes] = {}


def wants_aggregated(accept: str) -> bool:
    """Whether an Accept header asks for aggregated discovery (apidiscovery.k8s.io/v2)
    before the plain lists, as kubectl and client-go do."""
    for part in accept.split(","):
        params = [p.strip() for p in part.split(";")]
        if params[0] in ("application/json", "*/*") and len(params) == 1:
            return False
        if (
            "g=apidiscovery.k8s.io" in params
            and "v=v2" in params
            and "as=APIGroupDiscoveryList" in params
        ):
            return True
    return False


def _kind_ref(group: str, version: str, kind: str) -> dict[str, str]:
    return {"group": group, "version": version, "kind": kind}


def _aggregated_resource(r: Resource) -> dict[str, Any]:
    e: dict[str, Any] = {
        "resource": r.plural,
        "responseKind": _kind_ref("", "", r.kind),
        "scope": "Namespaced" if r.namespaced else "Cluster",
        "singularResource": r.singular,
        "verbs": list(r.verbs),
    }
    if r.short_names:
        e["shortNames"] = list(r.short_names)
    if r.categories:
        e["categories"] = list(r.categories)
    subs = []
    for s in _sub_entries(r):
        subs.append(
            {
                "subresource": s["name"].split("/", 1)[1],
                "responseKind": _kind_ref(s.get("group", ""), s.get("version", ""), s["kind"]),
                "verbs": s["verbs"],
            }
        )
    if subs:
        e["subresources"] = subs
    return e


def aggregated(registry: Registry, core: bool) -> bytes:
    """The APIGroupDiscoveryList of /api (core) or /apis, serialized once per registry
    generation."""
    key = (id(registry), int(getattr(registry, "generation", 0)), core)
    raw = _AGGREGATED_CACHE.get(key)
    if raw is not None:
        return raw
    groups = [("", ["v1"])] if core else registry.groups()
    items = []
    for g, versions in groups:
        vs = []
        for v in versions:
            rs = sorted(registry.resources_in(g, v), key=lambda r: r.plural)
            vs.append(
                {
                    "version": v,
                    "resources": [_aggregated_resource(r) for r in rs],
                    "freshness": "Current",
                }
            )
        items.append({"metadata": {"name": g, "creationTimestamp": None}, "versions": vs})
    raw = orjson.dumps(
        {
            "kind": "APIGroupDiscoveryList",
            "apiVersion": "apidiscovery.k8s.io/v2",
            "metadata": {},
            "items": items,
        }
    )
    for k in [k for k in _AGGREGATED_CACHE if k[0] == id(registry)]:
        del _AGGREGATED_CACHE[k]  # one generation kept per registry
    _AGGREGATED_CACHE[key] = raw
    return raw
