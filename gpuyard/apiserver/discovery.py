"""Legacy (plain JSON) API discovery documents and /version. Pure: built from a Registry."""

from __future__ import annotations

from typing import Any

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
