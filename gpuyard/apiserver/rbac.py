"""RBAC authorization from the stored Roles, ClusterRoles, RoleBindings and
ClusterRoleBindings, as Kubernetes evaluates it.

A request is allowed when some rule of a role bound to the user (by name, by one of
its groups, or as a ServiceAccount subject) covers it: a ClusterRoleBinding's role
applies everywhere, a RoleBinding's role (a Role of its namespace or a ClusterRole)
only in the binding's namespace. An aggregated ClusterRole (aggregationRule) has the
rules of every ClusterRole its label selectors match, besides its own. Nothing denies:
there are only grants.

Fast: the bindings are indexed by subject (built once, then kept up to date binding by
binding from the store's event stream), and the rules a user has are compiled once
per (user, groups) and kept until an RBAC object changes (the same events drop them
the moment a Role or binding is written), so a request costs a few set look-ups.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from gpuyard.apiserver.attributes import Attributes
from gpuyard.apiserver.authn import UserInfo, split_service_account
from gpuyard.apiserver.store import CollKey, Store
from gpuyard.kube.objects import label_selector_requirements, requirements_match

GROUP = "rbac.authorization.k8s.io"
ROLES: CollKey = (GROUP, "roles")
CLUSTER_ROLES: CollKey = (GROUP, "clusterroles")
BINDINGS: CollKey = (GROUP, "rolebindings")
CLUSTER_BINDINGS: CollKey = (GROUP, "clusterrolebindings")
_MAX_USERS = 4096


def _set(v: Any) -> frozenset[str]:
    return frozenset(x for x in v if isinstance(x, str)) if isinstance(v, list) else frozenset()


@dataclass(frozen=True, slots=True)
class Rule:
    verbs: frozenset[str]
    groups: frozenset[str]
    resources: frozenset[str]
    names: frozenset[str]
    urls: tuple[str, ...]

    @classmethod
    def of(cls, r: dict[str, Any]) -> Rule:
        urls = r.get("nonResourceURLs")
        return cls(
            _set(r.get("verbs")),
            _set(r.get("apiGroups")),
            _set(r.get("resources")),
            _set(r.get("resourceNames")),
            tuple(u for u in urls if isinstance(u, str)) if isinstance(urls, list) else (),
        )

    def allows(self, a: Attributes) -> bool:
        if not ("*" in self.verbs or a.verb in self.verbs):
            return False
        if not a.resource_request:
            for u in self.urls:
                if u == a.path or u == "*" or (u.endswith("*") and a.path.startswith(u[:-1])):
                    return True
            return False
        if not ("*" in self.groups or a.group in self.groups):
            return False
        res = self.resources
        if a.subresource:
            full = f"{a.resource}/{a.subresource}"
            if not (
                "*" in res or full in res or f"{a.resource}/*" in res or f"*/{a.subresource}" in res
            ):
                return False
        elif not ("*" in res or a.resource in res):
            return False
        return not self.names or a.name in self.names

    def as_resource_rule(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "verbs": sorted(self.verbs),
            "apiGroups": sorted(self.groups),
            "resources": sorted(self.resources),
        }
        if self.names:
            out["resourceNames"] = sorted(self.names)
        return out


@dataclass(slots=True)
class _Grants:
    cluster: list[tuple[Rule, str]]  # (rule, "ClusterRoleBinding NAME of ClusterRole R")
    namespaced: dict[str, list[tuple[Rule, str]]]


class RBAC:
    """The RBAC authorizer over one store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        # subject (kind, name) -> {(binding namespace or "", binding name): binding}
        self._index: dict[tuple[str, str], dict[tuple[str, str], dict[str, Any]]] | None = None
        self._grants: dict[tuple[str, tuple[str, ...]], _Grants] = {}
        self._role_rules: dict[tuple[str, str], list[Rule]] = {}
        store.listeners.append(self._on_event)

    def _on_event(self, ck: CollKey, ev: Any) -> None:
        if ck[0] != GROUP:
            return
        # Whatever changed, the compiled grants may be stale: they are rebuilt per user
        # on its next request. A binding moves in the subject index by itself.
        self._grants = {}
        if ck in (ROLES, CLUSTER_ROLES):
            self._role_rules = {}
        elif self._index is not None:
            ns = ev.entry.namespace if ck == BINDINGS else ""
            for old in (ev.prev, ev.entry):
                if old is not None:
                    self._unindex(self._index, ns, old.name, old.obj())
            if ev.type != "DELETED":
                self._add(self._index, ns, ev.entry.obj())

    def invalidate(self) -> None:
        self._index = None
        self._grants = {}
        self._role_rules = {}

    # ------------------------------------------------------------------ index

    @staticmethod
    def _subjects(ns: str, b: dict[str, Any]) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for s in b.get("subjects") or []:
            if not isinstance(s, dict):
                continue
            kind, name = s.get("kind"), s.get("name")
            if not isinstance(name, str):
                continue
            if kind == "ServiceAccount":
                sns = s.get("namespace") or ns
                out.append(("User", f"system:serviceaccount:{sns}:{name}"))
            elif kind in ("User", "Group"):
                out.append((str(kind), name))
        return out

    def _add(self, index: Any, ns: str, b: dict[str, Any]) -> None:
        name = str((b.get("metadata") or {}).get("name") or "")
        for subj in self._subjects(ns, b):
            index.setdefault(subj, {})[(ns, name)] = b

    def _unindex(self, index: Any, ns: str, name: str, b: dict[str, Any]) -> None:
        for subj in self._subjects(ns, b):
            held = index.get(subj)
            if held is not None:
                held.pop((ns, name), None)
                if not held:
                    del index[subj]

    def _build_index(self) -> dict[tuple[str, str], dict[tuple[str, str], dict[str, Any]]]:
        index: dict[tuple[str, str], dict[tuple[str, str], dict[str, Any]]] = {}
        for ck in (CLUSTER_BINDINGS, BINDINGS):
            for e in self.store.entries(ck):
                self._add(index, e.namespace if ck == BINDINGS else "", e.obj())
        return index

    def _rules_of(
        self, kind: str, ns: str, name: str, seen: frozenset[str] = frozenset()
    ) -> list[Rule]:
        key = (f"{kind}/{ns}", name)
        cached = self._role_rules.get(key)
        if cached is not None:
            return cached
        if kind == "Role":
            e = self.store.get(ROLES, f"{ns}/{name}")
        else:
            e = self.store.get(CLUSTER_ROLES, name)
        rules: list[Rule] = []
        if e is not None:
            role = e.obj()
            rules = [Rule.of(r) for r in role.get("rules") or [] if isinstance(r, dict)]
            agg = role.get("aggregationRule")
            if kind == "ClusterRole" and isinstance(agg, dict):
                rules += self._aggregated(name, agg, seen | {name})
        self._role_rules[key] = rules
        return rules

    def _aggregated(self, name: str, agg: dict[str, Any], seen: frozenset[str]) -> list[Rule]:
        out: list[Rule] = []
        selectors = [
            label_selector_requirements(s)
            for s in agg.get("clusterRoleSelectors") or []
            if isinstance(s, dict)
        ]
        if not selectors:
            return out
        for e in self.store.entries(CLUSTER_ROLES):
            if e.name in seen:
                continue
            labels = e.labels or {}
            if any(requirements_match(reqs, labels) for reqs in selectors):
                out += self._rules_of("ClusterRole", "", e.name, seen)
        return out

    def grants(self, user: UserInfo) -> _Grants:
        key = (user.name, user.groups)
        g = self._grants.get(key)
        if g is not None:
            return g
        if self._index is None:
            self._index = self._build_index()
        subjects = [("User", user.name)] + [("Group", grp) for grp in user.groups]
        g = _Grants([], {})
        for subj in subjects:
            for (ns, _name), b in self._index.get(subj, {}).items():
                ref = b.get("roleRef") or {}
                rkind, rname = ref.get("kind"), ref.get("name")
                if rkind not in ("Role", "ClusterRole") or not isinstance(rname, str):
                    continue
                if rkind == "Role" and not ns:
                    continue
                why = (
                    f"{'RoleBinding' if ns else 'ClusterRoleBinding'} "
                    f'"{(b.get("metadata") or {}).get("name", "")}"'
                    + (f' of namespace "{ns}"' if ns else "")
                    + f' to {rkind} "{rname}"'
                )
                rules = self._rules_of(rkind, ns if rkind == "Role" else "", rname)
                target = g.cluster if not ns else g.namespaced.setdefault(ns, [])
                target.extend((r, why) for r in rules)
        if len(self._grants) >= _MAX_USERS:
            self._grants.clear()
        self._grants[key] = g
        return g

    # ------------------------------------------------------------------ decisions

    def authorize(self, user: UserInfo, a: Attributes) -> tuple[bool, str]:
        """(allowed, reason)."""
        g = self.grants(user)
        for r, why in g.cluster:
            if r.allows(a):
                return True, f"RBAC: allowed by {why}"
        if a.resource_request and a.namespace:
            for r, why in g.namespaced.get(a.namespace, ()):
                if r.allows(a):
                    return True, f"RBAC: allowed by {why}"
        return False, ""

    def rules(self, user: UserInfo, namespace: str) -> tuple[list[Rule], list[Rule]]:
        """(resource rules, non-resource rules) the user has in a namespace."""
        g = self.grants(user)
        all_rules: Iterable[tuple[Rule, str]] = list(g.cluster) + list(
            g.namespaced.get(namespace, ())
        )
        res: list[Rule] = []
        non: list[Rule] = []
        for r, _ in all_rules:
            if r.urls:
                non.append(r)
            if r.resources or r.groups:
                res.append(r)
        return res, non


def is_service_account(user: UserInfo) -> bool:
    return split_service_account(user.name) is not None
