"""The APIs that answer questions about identities and permissions, never stored:

- authentication.k8s.io/v1 TokenRequest (`POST .../serviceaccounts/NAME/token`,
  `kubectl create token`), TokenReview, SelfSubjectReview (`kubectl auth whoami`);
- authorization.k8s.io/v1 SelfSubjectAccessReview (`kubectl auth can-i`),
  SubjectAccessReview, LocalSubjectAccessReview, SelfSubjectRulesReview (`kubectl auth
  can-i --list`).

Each answers from the same authenticator and authorizers the request path uses, so
what they say is what the server does.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from gpuyard.apiserver import attributes, nodeauth
from gpuyard.apiserver.access import Access
from gpuyard.apiserver.authn import MASTERS, AuthError, UserInfo
from gpuyard.apiserver.errors import APIError, bad_request, invalid, not_found
from gpuyard.apiserver.satoken import (
    API_AUDIENCES,
    BOUND_KINDS,
    DEFAULT_EXPIRATION,
    MAX_EXPIRATION,
    MIN_EXPIRATION,
)

AUTHN = "authentication.k8s.io"
AUTHZ = "authorization.k8s.io"
# (group, plural) of the review kinds and what answers them.
KINDS = {
    (AUTHN, "tokenreviews"),
    (AUTHN, "selfsubjectreviews"),
    (AUTHZ, "selfsubjectaccessreviews"),
    (AUTHZ, "subjectaccessreviews"),
    (AUTHZ, "localsubjectaccessreviews"),
    (AUTHZ, "selfsubjectrulesreviews"),
}


def _ts(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _spec(obj: Mapping[str, Any]) -> dict[str, Any]:
    spec = obj.get("spec")
    if spec is None:
        return {}
    if not isinstance(spec, dict):
        raise bad_request("spec must be an object")
    return spec


def _strings(v: Any, field: str) -> list[str]:
    if v is None:
        return []
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise invalid("", "", [{"field": field, "message": "must be a list of strings"}])
    return list(v)


def answer(
    access: Access,
    user: UserInfo,
    group: str,
    plural: str,
    api_version: str,
    kind: str,
    namespace: str,
    obj: dict[str, Any],
) -> dict[str, Any]:
    """The review with its status filled in."""
    out: dict[str, Any] = {
        "kind": kind,
        "apiVersion": api_version,
        "metadata": {"creationTimestamp": None},
    }
    spec = _spec(obj)
    if plural == "selfsubjectreviews":
        out["status"] = {"userInfo": user.as_dict()}
        return out
    out["spec"] = spec
    if plural == "tokenreviews":
        token = spec.get("token")
        if not isinstance(token, str) or not token:
            raise invalid(kind, "", [{"field": "spec.token", "message": "Required value"}])
        auds = tuple(_strings(spec.get("audiences"), "spec.audiences")) or API_AUDIENCES
        try:
            who = access.authn.token_user(token, auds)
        except AuthError as exc:
            out["status"] = {"authenticated": False, "error": exc.message, "user": {}}
            return out
        out["status"] = {"authenticated": True, "user": who.as_dict(), "audiences": list(auds)}
        return out
    if plural == "selfsubjectrulesreviews":
        ns = spec.get("namespace") or ""
        if not isinstance(ns, str):
            raise bad_request("spec.namespace must be a string")
        out["status"] = rules_review(access, user, ns)
        return out
    # access reviews
    if plural in ("subjectaccessreviews", "localsubjectaccessreviews"):
        name = spec.get("user")
        groups = _strings(spec.get("groups"), "spec.groups")
        if not (isinstance(name, str) and name) and not groups:
            raise invalid(
                kind,
                "",
                [
                    {
                        "field": "spec.user",
                        "message": "at least one of user or group must be specified",
                    }
                ],
            )
        extra = spec.get("extra") if isinstance(spec.get("extra"), dict) else {}
        subject = UserInfo(
            name if isinstance(name, str) else "",
            tuple(groups),
            str(spec.get("uid") or ""),
            {str(k): list(v) for k, v in (extra or {}).items() if isinstance(v, list)},
        )
    else:
        subject = user
    attrs = attributes.for_review(spec)
    if plural == "localsubjectaccessreviews":
        ra = spec.get("resourceAttributes")
        if not isinstance(ra, dict):
            raise bad_request("spec.resourceAttributes is required")
        if ra.get("namespace", namespace) != namespace:
            raise invalid(
                kind,
                "",
                [
                    {
                        "field": "spec.resourceAttributes.namespace",
                        "message": "must match the namespace of the request",
                    }
                ],
            )
        attrs = attributes.for_review({"resourceAttributes": {**ra, "namespace": namespace}})
        out["metadata"]["namespace"] = namespace
    if attrs.resource_request and attrs.subresource and "/" in attrs.subresource:
        raise bad_request("spec.resourceAttributes.subresource must not contain /")
    ok, why = access.authorize(subject, attrs)
    status: dict[str, Any] = {"allowed": ok}
    if why:
        status["reason"] = why
    out["status"] = status
    return out


def rules_review(access: Access, user: UserInfo, namespace: str) -> dict[str, Any]:
    """SelfSubjectRulesReview's status: every rule the user has in the namespace."""
    if MASTERS in user.groups:
        return {
            "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
            "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
            "incomplete": False,
        }
    res, non = access.rbac.rules(user, namespace)
    resource_rules = [r.as_resource_rule() for r in res]
    non_rules = [{"verbs": sorted(r.verbs), "nonResourceURLs": list(r.urls)} for r in non]
    incomplete = False
    if nodeauth.node_name(user) is not None:
        # The Node authorizer decides per object (pods bound to the node): it cannot be
        # written as rules, so the list is what RBAC grants and says it is incomplete.
        incomplete = True
    out: dict[str, Any] = {
        "resourceRules": resource_rules,
        "nonResourceRules": non_rules,
        "incomplete": incomplete,
    }
    if incomplete:
        out["evaluationError"] = "the Node authorizer's decisions are made per object"
    return out


def token_request(
    access: Access, namespace: str, sa_name: str, obj: dict[str, Any]
) -> dict[str, Any]:
    """TokenRequest for a ServiceAccount: a signed token bound to it (and to a Pod, a
    Secret or a Node when the spec names one), expiring."""
    sa_uid = access.uid_of("ServiceAccount", namespace, sa_name)
    if sa_uid is None:
        raise not_found("serviceaccounts", sa_name, "serviceaccounts")
    spec = _spec(obj)
    auds = _strings(spec.get("audiences"), "spec.audiences") or list(API_AUDIENCES)
    secs = spec.get("expirationSeconds", DEFAULT_EXPIRATION)
    if secs is None:
        secs = DEFAULT_EXPIRATION
    if isinstance(secs, bool) or not isinstance(secs, int):
        raise invalid(
            "TokenRequest",
            sa_name,
            [{"field": "spec.expirationSeconds", "message": "must be an integer"}],
        )
    if secs < MIN_EXPIRATION:
        raise invalid(
            "TokenRequest",
            sa_name,
            [
                {
                    "field": "spec.expirationSeconds",
                    "message": f"may not specify a duration less than {MIN_EXPIRATION} seconds",
                }
            ],
        )
    if secs > 1 << 32:
        raise invalid(
            "TokenRequest",
            sa_name,
            [
                {
                    "field": "spec.expirationSeconds",
                    "message": "may not specify a duration longer than 2^32 seconds",
                }
            ],
        )
    secs = min(secs, MAX_EXPIRATION)
    bound: dict[str, str] | None = None
    ref = spec.get("boundObjectRef")
    if ref is not None:
        if not isinstance(ref, dict):
            raise bad_request("spec.boundObjectRef must be an object")
        kind, name, uid = ref.get("kind"), ref.get("name"), ref.get("uid") or ""
        if kind not in BOUND_KINDS:
            raise invalid(
                "TokenRequest",
                sa_name,
                [
                    {
                        "field": "spec.boundObjectRef.kind",
                        "message": f'Unsupported value: "{kind}": supported values: "Pod", "Secret", "Node"',
                    }
                ],
            )
        if not isinstance(name, str) or not name:
            raise invalid(
                "TokenRequest",
                sa_name,
                [{"field": "spec.boundObjectRef.name", "message": "Required value"}],
            )
        ns = "" if kind == "Node" else namespace
        have = access.uid_of(str(kind), ns, name)
        if have is None:
            raise not_found(f"{str(kind).lower()}s", name, f"{str(kind).lower()}s")
        if uid and uid != have:
            raise APIError(
                409,
                "Conflict",
                f'the UID in the bound object reference ({uid}) does not match the {str(kind).lower()} "{name}" ({have})',
            )
        bound = {"kind": str(kind), "name": name, "uid": have}
    # a token bound to a scheduled pod also names the pod's node (kube 1.32+): what a
    # node-local agent's admission policy checks it against
    node = (
        access.node_of_pod(namespace, bound["name"]) if bound and bound["kind"] == "Pod" else None
    )
    token, exp = access.issuer.issue(
        namespace, sa_name, sa_uid, audiences=auds, seconds=secs, bound=bound, node=node
    )
    spec_out: dict[str, Any] = {"audiences": auds, "expirationSeconds": secs}
    spec_out["boundObjectRef"] = (
        {"kind": bound["kind"], "apiVersion": "v1", "name": bound["name"], "uid": bound["uid"]}
        if bound
        else None
    )
    return {
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {
            "name": sa_name,
            "namespace": namespace,
            "creationTimestamp": _ts(exp - secs),
        },
        "spec": spec_out,
        "status": {"token": token, "expirationTimestamp": _ts(exp)},
    }
