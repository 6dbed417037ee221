"""Who may look at the dashboard: the API server decides, as kube-rbac-proxy does.

A caller shows a bearer token (the `Authorization` header, or a session cookie that
`POST /api/session` issued for one). The dashboard asks the API server with a
TokenReview who the token names, and with SubjectAccessReviews whether that user may
list nodes and pods in every namespace (what the map shows); both answers are
cached for `ttl_s`, so a revoked token stops working within that time. Sessions are
random ids kept in memory (never the token itself in the cookie), bounded in number
and age.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

# What a viewer must be allowed: (verb, group, resource).
REQUIRED = (("list", "", "nodes"), ("list", "", "pods"))


@dataclass(frozen=True)
class Verdict:
    ok: bool
    user: str = ""
    groups: tuple[str, ...] = ()
    status: int = 200  # 401: no one; 403: someone not allowed to look
    message: str = ""


class Authority:
    """Checks tokens against the API server (through `client`, which must be allowed
    to create tokenreviews and subjectaccessreviews) and keeps sessions."""

    def __init__(
        self,
        client: Any,
        *,
        ttl_s: float = 30.0,
        session_s: float = 12 * 3600.0,
        max_sessions: int = 1000,
        max_cached: int = 1000,
    ) -> None:
        self.client = client
        self.ttl_s = ttl_s
        self.session_s = session_s
        self.max_sessions = max_sessions
        self.max_cached = max_cached
        self._verdicts: OrderedDict[str, tuple[float, Verdict]] = OrderedDict()
        self._sessions: OrderedDict[str, tuple[float, str]] = OrderedDict()  # id -> (made, token)
        self.reviews = 0

    async def check(self, token: str) -> Verdict:
        if not token:
            return Verdict(False, status=401, message="a bearer token is required")
        key = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        hit = self._verdicts.get(key)
        if hit is not None and now - hit[0] < self.ttl_s:
            return hit[1]
        verdict = await self._review(token)
        self._verdicts[key] = (now, verdict)
        self._verdicts.move_to_end(key)
        while len(self._verdicts) > self.max_cached:
            self._verdicts.popitem(last=False)
        return verdict

    async def _review(self, token: str) -> Verdict:
        self.reviews += 1
        tr = await self.client.create(
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenReview",
                "spec": {"token": token},
            }
        )
        st = tr.get("status") or {}
        if not st.get("authenticated"):
            return Verdict(False, status=401, message=st.get("error") or "invalid token")
        user = st.get("user") or {}
        name = str(user.get("username") or "")
        groups = tuple(user.get("groups") or ())
        for verb, group, resource in REQUIRED:
            spec: dict[str, Any] = {
                "user": name,
                "groups": list(groups),
                "resourceAttributes": {"verb": verb, "group": group, "resource": resource},
            }
            if user.get("uid"):
                spec["uid"] = user["uid"]
            if user.get("extra"):
                spec["extra"] = user["extra"]
            sar = await self.client.create(
                {
                    "apiVersion": "authorization.k8s.io/v1",
                    "kind": "SubjectAccessReview",
                    "spec": spec,
                }
            )
            if not (sar.get("status") or {}).get("allowed"):
                return Verdict(
                    False,
                    name,
                    groups,
                    403,
                    f"user {name!r} may not {verb} {resource} in every namespace",
                )
        return Verdict(True, name, groups)

    # ------------------------------------------------------------ sessions

    def new_session(self, token: str) -> str:
        sid = secrets.token_urlsafe(32)
        self._sessions[sid] = (time.monotonic(), token)
        while len(self._sessions) > self.max_sessions:
            self._sessions.popitem(last=False)
        return sid

    def session_token(self, sid: str) -> str:
        hit = self._sessions.get(sid)
        if hit is None:
            return ""
        if time.monotonic() - hit[0] > self.session_s:
            del self._sessions[sid]
            return ""
        return hit[1]

    def end_session(self, sid: str) -> None:
        self._sessions.pop(sid, None)
