"""Access control of the embedded API server: who a request is (authn), who it acts as
(impersonation), and whether that one may do it (the authorizers), in one place that
the request path calls once per request.

Authorizers, in Kubernetes' order: members of `system:masters` may do everything;
then the Node authorizer for `system:node:NAME` users (nodeauth); then RBAC from the
stored roles and bindings (rbac). A request none of them allows is refused with 403
naming the user, the verb and the resource.

Impersonation (Impersonate-User, Impersonate-Group, Impersonate-Uid and
Impersonate-Extra-* headers) is allowed only to a user the authorizers let
`impersonate` each of them: users, groups or serviceaccounts (core group) and uids or
userextras/KEY (authentication.k8s.io), by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

from gpuyard.apiserver import nodeauth
from gpuyard.apiserver.attributes import Attributes
from gpuyard.apiserver.authn import (
    AUTHENTICATED,
    MASTERS,
    SA_GROUP,
    Authenticator,
    UserInfo,
    split_service_account,
)
from gpuyard.apiserver.errors import APIError
from gpuyard.apiserver.rbac import RBAC
from gpuyard.apiserver.satoken import TokenIssuer
from gpuyard.apiserver.store import Store

_KINDS = {
    "ServiceAccount": ("", "serviceaccounts"),
    "Pod": ("", "pods"),
    "Secret": ("", "secrets"),
    "Node": ("", "nodes"),
}


def _getall(headers: Mapping[str, str], name: str) -> list[str]:
    getall = getattr(headers, "getall", None)
    if getall is not None:
        return list(getall(name, []))
    low = name.lower()
    return [v for k, v in headers.items() if k.lower() == low]


def forbidden(user: UserInfo, a: Attributes, reason: str = "") -> APIError:
    """403 as kube-apiserver words it."""
    who = f'User "{user.name}"'
    if not a.resource_request:
        msg = f'forbidden: {who} cannot {a.verb} path "{a.path}"'
        details: dict[str, Any] = {}
    else:
        res = f"{a.resource}.{a.group}" if a.group else a.resource
        head = f'{res} "{a.name}"' if a.name else res
        scope = f'in the namespace "{a.namespace}"' if a.namespace else "at the cluster scope"
        msg = (
            f'{head} is forbidden: {who} cannot {a.verb} resource "{a.resource_with_sub}" '
            f'in API group "{a.group}" {scope}'
        )
        details = {"group": a.group, "kind": a.resource}
        if a.name:
            details["name"] = a.name
    if reason:
        msg += f": {reason}"
    return APIError(403, "Forbidden", msg, details)


class Access:
    """Authenticator and authorizers over one store."""

    def __init__(self, store: Store, admin_token: str, data_dir: str | None) -> None:
        self.store = store
        self.issuer = TokenIssuer(data_dir)
        self.authn = Authenticator(admin_token, self.issuer, self.uid_of)
        self.rbac = RBAC(store)

    def uid_of(self, kind: str, ns: str, name: str) -> str | None:
        """The uid of a stored object of one of the kinds tokens name, or None."""
        ck = _KINDS.get(kind)
        if ck is None:
            return None
        e = self.store.get(ck, f"{ns}/{name}" if ns else name)
        return e.uid if e is not None else None

    def node_of_pod(self, ns: str, name: str) -> dict[str, str] | None:
        """The Node a stored pod is bound to ({"name", "uid"}), or None: what a token
        bound to the pod names besides the pod (as kube does since 1.32)."""
        e = self.store.get(_KINDS["Pod"], f"{ns}/{name}")
        node = str((e.obj().get("spec") or {}).get("nodeName") or "") if e else ""
        uid = self.uid_of("Node", "", node) if node else None
        return {"name": node, "uid": uid} if uid else None

    # ------------------------------------------------------------------ authorization

    def authorize(
        self, user: UserInfo, a: Attributes, query: Mapping[str, str] | None = None
    ) -> tuple[bool, str]:
        """(allowed, reason)."""
        if MASTERS in user.groups:
            return True, ""
        node = nodeauth.node_name(user)
        if node is not None:
            ok, why = nodeauth.authorize(self.store, node, a, query or {})
            if ok:
                return True, why
        return self.rbac.authorize(user, a)

    def check(self, user: UserInfo, a: Attributes, query: Mapping[str, str]) -> str:
        """The reason it is allowed; raises 403."""
        ok, why = self.authorize(user, a, query)
        if not ok:
            raise forbidden(user, a)
        return why

    # ------------------------------------------------------------------ impersonation

    def impersonate(self, user: UserInfo, headers: Mapping[str, str]) -> UserInfo | None:
        """The user this request acts as when it has impersonation headers (each one
        checked against the requester's permissions), else None."""
        if not any(k[:12].lower() == "impersonate-" for k in headers):
            return None  # the common case: one pass over the header names
        names = _getall(headers, "Impersonate-User")
        groups = _getall(headers, "Impersonate-Group")
        uids = _getall(headers, "Impersonate-Uid")
        extra: dict[str, list[str]] = {}
        for k, v in headers.items():
            if k.lower().startswith("impersonate-extra-"):
                key = unquote(k[len("impersonate-extra-") :]).lower()
                extra.setdefault(key, []).append(v)
        if not (names or groups or uids or extra):
            return None
        if len(names) != 1 or not names[0]:
            raise APIError(
                400,
                "BadRequest",
                "impersonation needs exactly one Impersonate-User header",
            )
        if len(uids) > 1:
            raise APIError(400, "BadRequest", "at most one Impersonate-Uid header is allowed")
        name = names[0]
        sa = split_service_account(name)
        if sa is not None:
            target = Attributes(
                "impersonate", True, "", "v1", "serviceaccounts", namespace=sa[0], name=sa[1]
            )
        else:
            target = Attributes("impersonate", True, "", "v1", "users", name=name)
        self._may_impersonate(user, target)
        for g in groups:
            self._may_impersonate(user, Attributes("impersonate", True, "", "v1", "groups", name=g))
        for u in uids:
            self._may_impersonate(
                user, Attributes("impersonate", True, "authentication.k8s.io", "v1", "uids", name=u)
            )
        for key, values in extra.items():
            for v in values:
                self._may_impersonate(
                    user,
                    Attributes(
                        "impersonate",
                        True,
                        "authentication.k8s.io",
                        "v1",
                        "userextras",
                        key,
                        name=v,
                    ),
                )
        out_groups = list(groups)
        if sa is not None:
            out_groups += [SA_GROUP, f"{SA_GROUP}:{sa[0]}"]
        if name != "system:anonymous":
            out_groups.append(AUTHENTICATED)
        else:
            out_groups.append("system:unauthenticated")
        return UserInfo(name, tuple(dict.fromkeys(out_groups)), uids[0] if uids else "", extra)

    def _may_impersonate(self, user: UserInfo, a: Attributes) -> None:
        ok, _ = self.authorize(user, a)
        if not ok:
            what = a.resource if a.group == "" else f"{a.resource}.{a.group}"
            raise APIError(
                403,
                "Forbidden",
                f'{what} "{a.name}" is forbidden: User "{user.name}" cannot impersonate '
                f'resource "{a.resource_with_sub}" in API group "{a.group}"'
                + (f' in the namespace "{a.namespace}"' if a.namespace else ""),
                {"group": a.group, "kind": a.resource, "name": a.name},
            )
