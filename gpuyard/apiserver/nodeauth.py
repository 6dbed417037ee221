"""The Node authorizer: what a kubelet (`system:node:NAME` in group `system:nodes`)
may do, limited to its own node, as Kubernetes' Node authorizer and NodeRestriction
admission limit it together.

- nodes: get, list and watch any; create, update and patch only its own Node (and
  nodes/status); never delete another;
- its heartbeat Lease (kube-node-lease/NAME): get, create, update, patch, delete;
- pods: get a pod only when it is bound to this node; list and watch only with the
  field selector spec.nodeName=NAME; update or patch pods/status of its own pods;
  delete its own pods (after they have terminated, as a kubelet does);
- events: create, patch, update.

Anything else is not decided here: RBAC may still grant it.
"""

from __future__ import annotations

from collections.abc import Mapping

from gpuyard.apiserver.attributes import Attributes
from gpuyard.apiserver.authn import NODE_PREFIX, NODES_GROUP, UserInfo
from gpuyard.apiserver.store import Store

PODS = ("", "pods")
_READ = frozenset({"get", "list", "watch"})


def node_name(user: UserInfo) -> str | None:
    if user.name.startswith(NODE_PREFIX) and NODES_GROUP in user.groups:
        return user.name[len(NODE_PREFIX) :] or None
    return None


def _pod_node(store: Store, ns: str, name: str) -> str | None:
    e = store.get(PODS, f"{ns}/{name}")
    if e is None:
        return None
    return (e.fields or {}).get("spec.nodeName")


def _selects_node(a: Attributes, query: Mapping[str, str], node: str) -> bool:
    for term in (a.field_selector or query.get("fieldSelector") or "").split(","):
        k, sep, v = term.strip().partition("=")
        if k.strip() == "spec.nodeName" and sep and v.strip().lstrip("=") == node:
            return True
    return False


def authorize(store: Store, node: str, a: Attributes, query: Mapping[str, str]) -> tuple[bool, str]:
    """(allowed, reason) for a node's request; (False, "") when not decided here."""
    if not a.resource_request:
        return False, ""
    why = f"Node: node {node!r}"
    if a.group == "" and a.resource == "nodes":
        if not a.subresource and a.verb in _READ:
            return True, why
        own = a.name == node
        if a.verb == "create" and not a.subresource:
            return True, why  # the body's name is checked by `admit_node_create`
        if own and a.verb in ("update", "patch") and a.subresource in ("", "status"):
            return True, why
        if own and a.verb == "get" and a.subresource == "status":
            return True, why
        return False, ""
    if a.group == "coordination.k8s.io" and a.resource == "leases":
        if a.namespace == "kube-node-lease" and a.name == node and not a.subresource:
            if a.verb in ("get", "create", "update", "patch", "delete"):
                return True, why
        if a.namespace == "kube-node-lease" and a.verb == "create" and not a.name:
            return True, why  # the body's name is checked by `admit_node_create`
        return False, ""
    if a.group == "" and a.resource == "pods":
        if a.verb in ("list", "watch") and not a.subresource:
            if _selects_node(a, query, node):
                return True, why
            return False, ""
        if a.name and _pod_node(store, a.namespace, a.name) == node:
            if a.verb == "get" and a.subresource in ("", "status"):
                return True, why
            if a.verb in ("update", "patch") and a.subresource == "status":
                return True, why
            if a.verb == "delete" and not a.subresource:
                return True, why
        return False, ""
    if a.resource == "events" and a.group in ("", "events.k8s.io"):
        if a.verb in ("create", "update", "patch"):
            return True, why
    return False, ""


def admit_node_create(node: str, a: Attributes, body_name: str) -> str | None:
    """NodeRestriction on create: the refusal, or None. A node creates only its own
    Node and its own Lease."""
    if a.verb != "create" or a.group not in ("", "coordination.k8s.io"):
        return None
    if a.resource == "nodes" and body_name != node:
        return f'node "{node}" is not allowed to create the Node "{body_name}"'
    if a.resource == "leases" and a.namespace == "kube-node-lease" and body_name != node:
        return f'node "{node}" is not allowed to create the Lease "{body_name}"'
    return None
