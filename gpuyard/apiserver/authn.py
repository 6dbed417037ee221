"""Who is asking: authentication in the embedded API server, as Kubernetes does it.

A request is authenticated by the first of these that recognises its credential:

- a client certificate signed by the cluster CA (verified in the TLS handshake): the
  user is the subject's CN, its groups the subject's O values;
- the admin bearer token of the server's kubeconfig, compared in constant time: the
  user `gpuyard-admin` in group `system:masters`;
- a ServiceAccount token (a JWT the server signed, `satoken`): the user
  `system:serviceaccount:NS:NAME` in groups `system:serviceaccounts` and
  `system:serviceaccounts:NS`, valid while its ServiceAccount (and the object it is
  bound to) exists with the same uid.

Every authenticated user is also in `system:authenticated`. A request without any
credential is anonymous; one whose credential is recognised by none of them, or is
expired or revoked, is refused with 401 (`AuthError`).
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gpuyard.apiserver.satoken import API_AUDIENCES, LEEWAY, Claims, TokenInvalid, TokenIssuer

MASTERS = "system:masters"
AUTHENTICATED = "system:authenticated"
UNAUTHENTICATED = "system:unauthenticated"
ANONYMOUS = "system:anonymous"
SA_PREFIX = "system:serviceaccount:"
SA_GROUP = "system:serviceaccounts"
NODE_PREFIX = "system:node:"
NODES_GROUP = "system:nodes"
ADMIN_USER = "gpuyard-admin"
_MAX_VERIFIED = 4096


@dataclass(frozen=True, slots=True)
class UserInfo:
    name: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: dict[str, list[str]] = field(default_factory=dict, hash=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        """user.info as the Kubernetes APIs show it (TokenReview, SelfSubjectReview)."""
        out: dict[str, Any] = {"username": self.name, "groups": list(self.groups)}
        if self.uid:
            out["uid"] = self.uid
        if self.extra:
            out["extra"] = {k: list(v) for k, v in self.extra.items()}
        return out

    @property
    def anonymous(self) -> bool:
        return self.name == ANONYMOUS


ANONYMOUS_USER = UserInfo(ANONYMOUS, (UNAUTHENTICATED,))
# What the server's own in-process callers are (the loopback client of kube-apiserver).
LOOPBACK_USER = UserInfo("system:apiserver", (MASTERS, AUTHENTICATED))
ADMIN = UserInfo(ADMIN_USER, (MASTERS, AUTHENTICATED))


class AuthError(Exception):
    """401: a credential that names no one (unknown, expired, revoked)."""

    def __init__(self, message: str = "Unauthorized") -> None:
        super().__init__(message)
        self.message = message


def with_authenticated(name: str, groups: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    out = list(dict.fromkeys(groups))
    if name != ANONYMOUS and AUTHENTICATED not in out:
        out.append(AUTHENTICATED)
    return tuple(out)


def service_account_user(ns: str, name: str, uid: str = "") -> UserInfo:
    return UserInfo(
        f"{SA_PREFIX}{ns}:{name}",
        (SA_GROUP, f"{SA_GROUP}:{ns}", AUTHENTICATED),
        uid,
    )


def split_service_account(user: str) -> tuple[str, str] | None:
    """(namespace, name) of a `system:serviceaccount:NS:NAME` user name."""
    if not user.startswith(SA_PREFIX):
        return None
    ns, sep, name = user[len(SA_PREFIX) :].partition(":")
    if not sep or not ns or not name or ":" in name:
        return None
    return ns, name


def cert_user(peercert: dict[str, Any] | None) -> UserInfo | None:
    """The user of a verified client certificate (ssl's getpeercert() dict)."""
    if not peercert:
        return None
    cn = ""
    orgs: list[str] = []
    for rdn in peercert.get("subject") or ():
        for key, value in rdn:
            if key == "commonName":
                cn = value
            elif key == "organizationName":
                orgs.append(value)
    if not cn:
        return None
    return UserInfo(cn, with_authenticated(cn, orgs))


# (namespace, name) -> uid of a stored ServiceAccount, or of a bound object by kind.
Lookup = Callable[[str, str, str], str | None]


class Authenticator:
    """Maps a bearer token or a client certificate to a `UserInfo`."""

    def __init__(self, admin_token: str, issuer: TokenIssuer, lookup: Lookup) -> None:
        self._admin = admin_token.encode()
        self.issuer = issuer
        self._lookup = lookup
        # Signatures checked once per token (an ES256 verification costs more than the
        # rest of a request); expiry and the ServiceAccount's existence on every use.
        self._verified: dict[tuple[str, tuple[str, ...]], Claims] = {}

    def authenticate(
        self, authorization: str, peercert: dict[str, Any] | None = None
    ) -> UserInfo | None:
        """The user, None for a request without any credential; raises AuthError."""
        if authorization:
            scheme, _, cred = authorization.partition(" ")
            if scheme.lower() != "bearer" or not cred.strip():
                raise AuthError()
            return self.token_user(cred.strip())
        return cert_user(peercert)

    def token_user(self, token: str, audiences: tuple[str, ...] = API_AUDIENCES) -> UserInfo:
        if hmac.compare_digest(token.encode(), self._admin) and audiences == API_AUDIENCES:
            return ADMIN
        key = (token, audiences)
        claims = self._verified.get(key)
        if claims is None or claims.expires + LEEWAY < time.time():
            try:
                claims = self.issuer.verify(token, audiences)
            except TokenInvalid as exc:
                raise AuthError(str(exc)) from None
            if claims is None:
                raise AuthError()
            if len(self._verified) >= _MAX_VERIFIED:
                self._verified.clear()
            self._verified[key] = claims
        return self._sa_user(claims)

    def _sa_user(self, c: Claims) -> UserInfo:
        uid = self._lookup("ServiceAccount", c.namespace, c.name)
        if uid != c.uid:
            raise AuthError(
                f"service account {c.namespace}/{c.name} has been deleted"
                if uid is None
                else f"service account {c.namespace}/{c.name} was recreated (uid changed)"
            )
        if c.bound_kind:
            ns = "" if c.bound_kind == "Node" else c.namespace
            if self._lookup(c.bound_kind, ns, c.bound_name) != c.bound_uid:
                raise AuthError(
                    f"the {c.bound_kind.lower()} {c.bound_name} the token is bound to "
                    "no longer exists"
                )
        u = service_account_user(c.namespace, c.name, c.uid)
        extra: dict[str, list[str]] = {}
        if c.bound_kind:
            key = f"authentication.kubernetes.io/{c.bound_kind.lower()}"
            extra[key + "-name"] = [c.bound_name]
            extra[key + "-uid"] = [c.bound_uid]
        if c.node_name:  # a pod-bound token names the pod's node too
            extra["authentication.kubernetes.io/node-name"] = [c.node_name]
            extra["authentication.kubernetes.io/node-uid"] = [c.node_uid]
        if c.jti:
            extra["authentication.kubernetes.io/credential-id"] = [f"JTI={c.jti}"]
        return UserInfo(u.name, u.groups, u.uid, extra)
