"""ServiceAccount tokens of the embedded API server: signed, bound, expiring JWTs.

`TokenIssuer` holds the cluster's service-account signing key (EC P-256, ES256; kept in
the data directory as sa.key, mode 0600, and reused across restarts) and issues the
tokens TokenRequest answers (`POST .../serviceaccounts/NAME/token`, `kubectl create
token`) with the claims Kubernetes puts in them: iss, sub, aud, exp, iat, nbf, jti and
the `kubernetes.io` claim naming the namespace, the ServiceAccount and the object the
token is bound to (a Pod, a Secret or a Node, by name and uid). `verify` checks the
signature, the times and the audience; the authenticator then checks that the
ServiceAccount and the bound object still exist with the same uid.
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gpuyard import pki

ISSUER = "https://kubernetes.default.svc.cluster.local"
API_AUDIENCES = (ISSUER, "https://kubernetes.default.svc")
DEFAULT_EXPIRATION = 3600  # seconds, as Kubernetes defaults a TokenRequest
MIN_EXPIRATION = 600  # Kubernetes refuses shorter ones
MAX_EXPIRATION = 48 * 3600  # longer requests get this (kube caps with its max flag)
BOUND_KINDS = ("Pod", "Secret", "Node")
LEEWAY = 60  # seconds of clock skew accepted on nbf / exp


class TokenInvalid(ValueError):
    """A bearer token that looks like a service-account JWT but does not verify."""


@dataclass(frozen=True, slots=True)
class Claims:
    namespace: str
    name: str
    uid: str
    audiences: tuple[str, ...]
    expires: int
    bound_kind: str = ""
    bound_name: str = ""
    bound_uid: str = ""
    jti: str = ""
    # the node of the pod a pod-bound token names
    node_name: str = ""
    node_uid: str = ""


def _key_id(pub: ec.EllipticCurvePublicKey) -> str:
    der = pub.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()


class TokenIssuer:
    """Signs and verifies service-account tokens with one key."""

    def __init__(self, data_dir: str | None) -> None:
        key: ec.EllipticCurvePrivateKey | None = None
        path = os.path.join(data_dir, "sa.key") if data_dir else None
        if path and os.path.exists(path):
            with open(path, "rb") as f:
                loaded = serialization.load_pem_private_key(f.read(), None)
            if isinstance(loaded, ec.EllipticCurvePrivateKey):
                key = loaded
        if key is None:
            key = ec.generate_private_key(ec.SECP256R1())
            if path:
                pki.write_private(
                    path,
                    key.private_bytes(
                        serialization.Encoding.PEM,
                        serialization.PrivateFormat.PKCS8,
                        serialization.NoEncryption(),
                    ),
                )
        self._key = key
        self._pub = key.public_key()
        self.key_id = _key_id(self._pub)

    def issue(
        self,
        namespace: str,
        name: str,
        uid: str,
        *,
        audiences: list[str] | None = None,
        seconds: int = DEFAULT_EXPIRATION,
        bound: dict[str, str] | None = None,
        node: dict[str, str] | None = None,
        now: float | None = None,
    ) -> tuple[str, int]:
        """(token, expiry as a Unix time). `node`: for a token bound to a pod, the
        node the pod runs on ({"name", "uid"})."""
        t = int(now if now is not None else time.time())
        exp = t + seconds
        k8s: dict[str, Any] = {
            "namespace": namespace,
            "serviceaccount": {"name": name, "uid": uid},
        }
        if bound:
            k8s[bound["kind"].lower()] = {"name": bound["name"], "uid": bound["uid"]}
            if node and bound["kind"] == "Pod":
                k8s["node"] = {"name": node["name"], "uid": node["uid"]}
        claims = {
            "iss": ISSUER,
            "sub": f"system:serviceaccount:{namespace}:{name}",
            "aud": list(audiences or API_AUDIENCES),
            "exp": exp,
            "iat": t,
            "nbf": t,
            "jti": str(uuid.uuid4()),
            "kubernetes.io": k8s,
        }
        token = jwt.encode(claims, self._key, algorithm="ES256", headers={"kid": self.key_id})
        return token, exp

    def verify(self, token: str, audiences: tuple[str, ...] = API_AUDIENCES) -> Claims | None:
        """The claims of a token this issuer signed, or None when it is not one of its
        tokens at all (another issuer, not a JWT). Raises TokenInvalid for a token of
        this issuer that is expired, not yet valid, for another audience, or altered."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return None
        if header.get("kid") != self.key_id or header.get("alg") != "ES256":
            return None
        try:
            c = jwt.decode(
                token,
                self._pub,
                algorithms=["ES256"],
                audience=list(audiences),
                issuer=ISSUER,
                leeway=LEEWAY,
                options={"require": ["exp", "iat", "nbf", "iss", "sub", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenInvalid("the token has expired") from None
        except jwt.InvalidAudienceError:
            raise TokenInvalid("the token's audience is not accepted") from None
        except jwt.PyJWTError as exc:
            raise TokenInvalid(f"invalid token: {exc}") from None
        k8s = c.get("kubernetes.io")
        if not isinstance(k8s, dict):
            raise TokenInvalid("the token has no kubernetes.io claim")
        sa = k8s.get("serviceaccount") or {}
        ns, name, uid = k8s.get("namespace"), sa.get("name"), sa.get("uid")
        if not all(isinstance(v, str) and v for v in (ns, name, uid)):
            raise TokenInvalid("the token names no service account")
        if c.get("sub") != f"system:serviceaccount:{ns}:{name}":
            raise TokenInvalid("the token's subject is not its service account")
        bound = ("", "", "")
        for kind in BOUND_KINDS:
            ref = k8s.get(kind.lower())
            if isinstance(ref, dict):
                bound = (kind, str(ref.get("name") or ""), str(ref.get("uid") or ""))
                break
        node_name = node_uid = ""
        if bound[0] == "Pod" and isinstance(k8s.get("node"), dict):
            node_name = str(k8s["node"].get("name") or "")
            node_uid = str(k8s["node"].get("uid") or "")
        aud = c["aud"] if isinstance(c["aud"], list) else [c["aud"]]
        return Claims(
            str(ns),
            str(name),
            str(uid),
            tuple(str(a) for a in aud),
            int(c["exp"]),
            *bound,
            jti=str(c.get("jti") or ""),
            node_name=node_name,
            node_uid=node_uid,
        )
