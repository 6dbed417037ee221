"""The `authorizer` variable of ValidatingAdmissionPolicy expressions, backed by this
server's authorizers (system:masters, the Node authorizer, RBAC) for the request's user.

The Kubernetes authorizer library: `authorizer.group(g).resource(r)` with optional
`.subresource(s)`, `.namespace(ns)`, `.name(n)`, `.fieldSelector(s)` and
`.labelSelector(s)` (selector text, as a list's query gives them), then `.check(verb)`;
`authorizer.path(p).check(httpVerb)` for non-resource paths;
`authorizer.serviceAccount(ns, name)` to ask for a service account instead of the
request's user; `authorizer.requestResource` for the resource of the request itself. A
decision answers `allowed()`, `reason()`, `errored()` and `error()`.

Values are CEL maps that carry what was chained so far (the engine passes a method's
receiver as its first argument); `check` asks the authorizer the request's gate set
(requestctx.AUTHORIZE). Without one (a caller outside a request) every check errors.
"""

from __future__ import annotations

from typing import Any

from gpuyard.apiserver import requestctx
from gpuyard.apiserver.attributes import Attributes
from gpuyard.apiserver.authn import AUTHENTICATED, SA_GROUP, UserInfo

_KIND = "__gpuyard_authz"


def value(user: UserInfo, request: dict[str, str] | None = None) -> dict[str, Any]:
    """The `authorizer` variable for `user`; request: the request's own resource
    (group, resource, subresource, namespace, name) for `authorizer.requestResource`."""
    base: dict[str, Any] = {
        _KIND: "authorizer",
        "user": user.name,
        "groups": list(user.groups),
        "uid": user.uid,
    }
    if request is not None:
        base["requestResource"] = {**base, _KIND: "resource", **request}
    return base


def _need(v: Any, kind: str, call: str) -> dict[str, Any]:
    if not isinstance(v, dict) or v.get(_KIND) != kind:
        raise ValueError(f"no such overload: {call}")
    return v


def _group(a: Any, g: Any) -> dict[str, Any]:
    a = _need(a, "authorizer", "group")
    return {**a, _KIND: "group", "group": str(g), "resource": ""}


def _resource(a: Any, r: Any) -> dict[str, Any]:
    a = _need(a, "group", "resource")
    return {**a, _KIND: "resource", "resource": str(r)}


def _setter(field: str) -> Any:
    def f(a: Any, v: Any) -> dict[str, Any]:
        a = _need(a, "resource", field)
        return {**a, field: str(v)}

    return f


def _path(a: Any, p: Any) -> dict[str, Any]:
    a = _need(a, "authorizer", "path")
    return {**a, _KIND: "path", "path": str(p)}


def _service_account(a: Any, ns: Any, name: Any) -> dict[str, Any]:
    _need(a, "authorizer", "serviceAccount")
    sa = UserInfo(
        f"system:serviceaccount:{ns}:{name}", (SA_GROUP, f"{SA_GROUP}:{ns}", AUTHENTICATED)
    )
    return value(sa)


def _check(a: Any, verb: Any) -> dict[str, Any]:
    if not isinstance(a, dict) or a.get(_KIND) not in ("resource", "path"):
        raise ValueError("no such overload: check")
    user = UserInfo(str(a.get("user") or ""), tuple(a.get("groups") or ()), str(a.get("uid") or ""))
    if a[_KIND] == "path":
        attrs = Attributes(str(verb), False, path=str(a.get("path") or ""))
    else:
        attrs = Attributes(
            str(verb),
            True,
            str(a.get("group") or ""),
            "*",
            str(a.get("resource") or ""),
            str(a.get("subresource") or ""),
            str(a.get("namespace") or ""),
            str(a.get("name") or ""),
            field_selector=str(a.get("fieldSelector") or ""),
            label_selector=str(a.get("labelSelector") or ""),
        )
    authorize = requestctx.AUTHORIZE.get()
    if authorize is None:
        return _decision(False, "", "no authorizer is available to this expression")
    try:
        ok, why = authorize(user, attrs)
    except Exception as exc:  # an authorizer failure is the decision's error
        return _decision(False, "", str(exc))
    return _decision(ok, why, "")


def _decision(allowed: bool, reason: str, error: str) -> dict[str, Any]:
    return {_KIND: "decision", "allowed": allowed, "reason": reason, "error": error}


def _field(field: str) -> Any:
    def f(d: Any) -> Any:
        return _need(d, "decision", field + "()")[field]

    return f


FUNCTIONS: dict[str, Any] = {
    "group": _group,
    "resource": _resource,
    "subresource": _setter("subresource"),
    "namespace": _setter("namespace"),
    "name": _setter("name"),
    "fieldSelector": _setter("fieldSelector"),
    "labelSelector": _setter("labelSelector"),
    "path": _path,
    "serviceAccount": _service_account,
    "check": _check,
    "allowed": _field("allowed"),
    "reason": _field("reason"),
    "error": _field("error"),
    "errored": lambda d: bool(_need(d, "decision", "errored()")["error"]),
}
