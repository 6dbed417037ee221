"""The RBAC objects the API server creates at start when they are missing, as
Kubernetes bootstraps them (label kubernetes.io/bootstrapping=rbac-defaults):

- cluster-admin (everything), bound to the group system:masters;
- system:discovery and system:basic-user (discovery paths, the self reviews: `kubectl
  auth can-i`, `kubectl auth whoami`), bound to system:authenticated;
- system:public-info-viewer (health and version), bound to system:authenticated and
  system:unauthenticated;
- the user-facing roles admin, edit and view, each an aggregated ClusterRole
  (aggregationRule) over the system:aggregate-to-admin|edit|view roles that hold their
  rules, so an install can extend them by labelling a ClusterRole of its own.
"""

from __future__ import annotations

from typing import Any

API = "rbac.authorization.k8s.io/v1"
_LABELS = {"kubernetes.io/bootstrapping": "rbac-defaults"}
_ANNOT = {"rbac.authorization.kubernetes.io/autoupdate": "true"}
READ = ["get", "list", "watch"]
WRITE = ["create", "delete", "deletecollection", "patch", "update"]

_DISCOVERY_URLS = ["/api", "/api/*", "/apis", "/apis/*", "/openapi", "/openapi/*"]
_PUBLIC_URLS = ["/healthz", "/livez", "/readyz", "/version", "/version/"]

# Namespaced kinds a team works with (read by view; written by edit).
_WORKLOADS: list[tuple[str, list[str]]] = [
    ("", ["pods", "pods/status", "services", "configmaps", "serviceaccounts", "events"]),
    ("apps", ["deployments", "deployments/status", "daemonsets", "daemonsets/status"]),
    ("policy", ["poddisruptionbudgets", "poddisruptionbudgets/status"]),
    ("events.k8s.io", ["events"]),
    ("scheduling.x-k8s.io", ["podgroups", "podgroups/status"]),
    ("gpuyard.io", ["trainingjobs", "trainingjobs/status"]),
]


def _meta(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"name": name, "labels": {**_LABELS, **(labels or {})}, "annotations": dict(_ANNOT)}


def _rule(groups: list[str], resources: list[str], verbs: list[str]) -> dict[str, Any]:
    return {"apiGroups": groups, "resources": resources, "verbs": verbs}


def _role(name: str, rules: list[dict[str, Any]], labels: dict[str, str] | None = None) -> Any:
    return {
        "apiVersion": API,
        "kind": "ClusterRole",
        "metadata": _meta(name, labels),
        "rules": rules,
    }


def _aggregated(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    sel = {"matchLabels": {f"rbac.authorization.k8s.io/aggregate-to-{name}": "true"}}
    return {
        "apiVersion": API,
        "kind": "ClusterRole",
        "metadata": _meta(name, labels),
        "aggregationRule": {"clusterRoleSelectors": [sel]},
        "rules": [],
    }


def _binding(name: str, role: str, groups: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "ClusterRoleBinding",
        "metadata": _meta(name),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": g} for g in groups
        ],
    }


def _agg_label(to: str) -> dict[str, str]:
    return {f"rbac.authorization.k8s.io/aggregate-to-{to}": "true"}


def cluster_roles() -> list[dict[str, Any]]:
    view = [_rule([g], res, READ) for g, res in _WORKLOADS]
    edit = [_rule([g], [r for r in res if "/" not in r], WRITE) for g, res in _WORKLOADS]
    edit += [
        _rule([""], ["secrets"], [*READ, *WRITE]),
        _rule([""], ["pods/eviction"], ["create"]),
        _rule([""], ["serviceaccounts/token"], ["create"]),
    ]
    admin = [
        _rule(["rbac.authorization.k8s.io"], ["roles", "rolebindings"], [*READ, *WRITE]),
        _rule(["authorization.k8s.io"], ["localsubjectaccessreviews"], ["create"]),
    ]
    return [
        {
            **_role("cluster-admin", []),
            "rules": [
                _rule(["*"], ["*"], ["*"]),
                {"nonResourceURLs": ["*"], "verbs": ["*"]},
            ],
        },
        {
            **_role("system:discovery", []),
            "rules": [{"nonResourceURLs": _DISCOVERY_URLS, "verbs": ["get"]}],
        },
        {
            **_role("system:public-info-viewer", []),
            "rules": [{"nonResourceURLs": _PUBLIC_URLS, "verbs": ["get"]}],
        },
        _role(
            "system:basic-user",
            [
                _rule(
                    ["authorization.k8s.io"],
                    ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                    ["create"],
                ),
                _rule(["authentication.k8s.io"], ["selfsubjectreviews"], ["create"]),
            ],
        ),
        _aggregated("admin"),
        _aggregated("edit", _agg_label("admin")),
        _aggregated("view", _agg_label("edit")),
        _role("system:aggregate-to-admin", admin, _agg_label("admin")),
        _role("system:aggregate-to-edit", edit, _agg_label("edit")),
        _role("system:aggregate-to-view", view, _agg_label("view")),
    ]


def cluster_role_bindings() -> list[dict[str, Any]]:
    return [
        _binding("cluster-admin", "cluster-admin", ["system:masters"]),
        _binding("system:discovery", "system:discovery", ["system:authenticated"]),
        _binding("system:basic-user", "system:basic-user", ["system:authenticated"]),
        _binding(
            "system:public-info-viewer",
            "system:public-info-viewer",
            ["system:authenticated", "system:unauthenticated"],
        ),
    ]
