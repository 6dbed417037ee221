"""Who may look at the dashboard: the API server decides, as kube-rbac-proxy does.

A caller shows a bearer token (the `Authorization` header, or a session cookie that
`POST /api/session` issued for one), or, where the dashboard serves TLS with a client
CA, a client certificate that CA signed (the user is its CN, its groups its O values,
as the API server reads them). For a token the dashboard asks the API server with a
TokenReview who it names; for either, SubjectAccessReviews say whether that user may
list nodes and pods in every namespace (what the map shows). Answers are cached for
`ttl_s`, so a revoked token or a removed role binding stops working within that time.
Sessions are random ids kept in memory (never the token itself in the cookie), bounded
in number and age. Where the dashboard serves from a loop of its own (`gpuyard up`),
`client_loop` names the loop the client belongs to: answers from the cache never wait
for it, and only the reviews themselves go there.
"""

from __future__ import annotations

import asyncio
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
        client_loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.client = client
        self.client_loop = client_loop
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
        self._remember(key, now, verdict)
        return verdict

    async def check_user(self, name: str, groups: tuple[str, ...]) -> Verdict:
        """A user the TLS handshake vouched for (a client certificate): authorization only."""
        key = "cert\0" + name + "\0" + "\0".join(groups)
        now = time.monotonic()
        hit = self._verdicts.get(key)
        if hit is not None and now - hit[0] < self.ttl_s:
            return hit[1]
        self.reviews += 1
        verdict = await self._authorize(name, groups, {})
        self._remember(key, now, verdict)
        return verdict

    def _remember(self, key: str, now: float, verdict: Verdict) -> None:
        self._verdicts[key] = (now, verdict)
        self._verdicts.move_to_end(key)
        while len(self._verdicts) > self.max_cached:
            self._verdicts.popitem(last=False)

    async def _review(self, token: str) -> Verdict:
        self.reviews += 1
        tr = await self._create(
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
        return await self._authorize(
            str(user.get("username") or ""), tuple(user.get("groups") or ()), user
        )

    async def _authorize(self, name: str, groups: tuple[str, ...], user: dict[str, Any]) -> Verdict:
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
            sar = await self._create(
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

    async def _create(self, obj: dict[str, Any]) -> Any:
        """client.create(obj) on the client's own loop."""
        loop = self.client_loop
        if loop is None or loop is asyncio.get_running_loop():
            return await self.client.create(obj)
        return await asyncio.wrap_future(
            asyncio.run_coroutine_threadsafe(self.client.create(obj), loop)
        )

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


def cert_subject(peercert: dict[str, Any] | None) -> tuple[str, tuple[str, ...]] | None:
    """(user, groups) of a verified client certificate: its CN and O values."""
    if not peercert:
        return None
    cn, orgs = "", []
    for rdn in peercert.get("subject") or ():
        for key, value in rdn:
            if key == "commonName":
                cn = value
            elif key == "organizationName":
                orgs.append(value)
    return (cn, tuple(orgs)) if cn else None
