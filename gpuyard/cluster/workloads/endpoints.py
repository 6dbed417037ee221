"""v1 Endpoints of Services with a selector, kept beside their EndpointSlices (by
gpuyard.cluster.workloads.endpointslices, from the same endpoints) as
kube-controller-manager's Endpoints controller keeps them: one object named after the
Service, a subset per set of resolved ports with the ready pods' addresses and the
unready ones under notReadyAddresses (terminating pods left out unless the Service
publishes not-ready addresses), labelled endpointslice.kubernetes.io/skip-mirror so no
slice is mirrored from it; deleted with its Service."""

from __future__ import annotations

from typing import Any

from gpuyard.kube import objects as o

SKIP_MIRROR = "endpointslice.kubernetes.io/skip-mirror"


def _address(ep: dict[str, Any]) -> dict[str, Any]:
    a: dict[str, Any] = {"ip": ep["addresses"][0], "targetRef": dict(ep["targetRef"])}
    if ep.get("nodeName"):
        a["nodeName"] = ep["nodeName"]
    if ep.get("hostname"):
        a["hostname"] = ep["hostname"]
    return a


def subsets(
    svc: dict[str, Any], groups: list[tuple[tuple[Any, ...], list[dict[str, Any]]]]
) -> list[dict[str, Any]]:
    """The Endpoints subsets of the slices' (ports, endpoints) groups."""
    publish = bool((svc.get("spec") or {}).get("publishNotReadyAddresses"))
    merged: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for ports, eps in groups:
        merged.setdefault(ports, []).extend(eps)
    out = []
    for ports, eps in sorted(merged.items()):
        ready: list[dict[str, Any]] = []
        unready: list[dict[str, Any]] = []
        for ep in eps:
            cond = ep.get("conditions") or {}
            if cond.get("terminating") and not publish:
                continue
            (ready if cond.get("ready") else unready).append(_address(ep))
        if not ready and not unready:
            continue
        sub: dict[str, Any] = {}
        if ready:
            sub["addresses"] = sorted(ready, key=lambda a: a["ip"])
        if unready:
            sub["notReadyAddresses"] = sorted(unready, key=lambda a: a["ip"])
        if ports:
            sub["ports"] = [{"name": n, "port": p, "protocol": proto} for n, p, proto in ports]
        out.append(sub)
    return out


def endpoints_object(svc: dict[str, Any], subs: list[dict[str, Any]]) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {
            "name": o.name_of(svc),
            "namespace": o.namespace_of(svc),
            "labels": {**o.labels_of(svc), SKIP_MIRROR: "true"},
        },
    }
    if subs:
        body["subsets"] = subs
    return body


def differs(have: dict[str, Any] | None, want: dict[str, Any]) -> bool:
    if have is None:
        return True
    return (have.get("subsets") or []) != (want.get("subsets") or []) or o.labels_of(
        have
    ) != o.labels_of(want)
