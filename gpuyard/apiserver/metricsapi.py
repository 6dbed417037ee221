"""The resource metrics API (metrics.k8s.io/v1beta1: NodeMetrics and PodMetrics) that
`kubectl top` reads, served only when a provider is set: a real cluster's comes from
metrics-server (an aggregated API); `gpuyard up` sets one that reports its simulated
nodes' usage (gpuyard.cluster.simmetrics). Without one the group is not in discovery,
so `kubectl top` says the Metrics API is not available, as on a cluster without
metrics-server. get and list only, with label selectors.
"""

from __future__ import annotations

from typing import Any, Protocol

from gpuyard.apiserver.errors import APIError
from gpuyard.apiserver.resources import Registry, Resource
from gpuyard.kube.objects import parse_label_selector, requirements_match

GROUP, VERSION = "metrics.k8s.io", "v1beta1"
API_VERSION = f"{GROUP}/{VERSION}"
RESOURCES = [
    Resource(GROUP, VERSION, "NodeMetrics", "nodes", "", False, verbs=("get", "list")),
    Resource(GROUP, VERSION, "PodMetrics", "pods", "", True, verbs=("get", "list")),
]


class Provider(Protocol):
    def node_metrics(self) -> list[dict[str, Any]]: ...

    def pod_metrics(self, namespace: str | None) -> list[dict[str, Any]]: ...


def register(registry: Registry) -> None:
    registry.ensure_builtin(RESOURCES)


def serve(
    provider: Provider, res: Resource, ns: str | None, name: str | None, query: dict[str, str]
) -> dict[str, Any]:
    """The NodeMetrics/PodMetrics (list) a GET asks for."""
    try:
        reqs = parse_label_selector(query.get("labelSelector"))
    except ValueError as exc:
        raise APIError(400, "BadRequest", f"unable to parse requirement: {exc}") from None
    items = provider.node_metrics() if res.plural == "nodes" else provider.pod_metrics(ns)
    items = [
        m for m in items if requirements_match(reqs, (m.get("metadata") or {}).get("labels") or {})
    ]
    if name is not None:
        for m in items:
            if m["metadata"]["name"] == name:
                return m
        raise APIError(
            404,
            "NotFound",
            f'{res.plural}.{GROUP} "{name}" not found',
            {"name": name, "group": GROUP, "kind": res.plural},
        )
    return {
        "kind": f"{res.kind}List",
        "apiVersion": API_VERSION,
        "metadata": {},
        "items": items,
    }
