"""The one place a request passes on its way in: authentication (for in-process
callers that carry a credential), impersonation, authorization, NodeRestriction on
creates, the review APIs, and the audit record of how it ended.

`Gate.handle(...)` wraps the REST core's `dispatch`: the HTTP layer has already
authenticated the connection's credential (a 401 never gets here), in-process callers
pass their `Authorization` header (or none: the server's own loopback identity, a
member of system:masters).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson

from gpuyard.apiserver import attributes, audit, ids, nodeauth, paths, requestctx, reviews
from gpuyard.apiserver.access import Access
from gpuyard.apiserver.attributes import Attributes
from gpuyard.apiserver.authn import ANONYMOUS_USER, LOOPBACK_USER, AuthError, UserInfo
from gpuyard.apiserver.errors import APIError, status_obj
from gpuyard.apiserver.handlers import Response

Inner = Callable[[str, str, Mapping[str, str], Mapping[str, str], bytes], Awaitable[Response]]
_NOT_ALLOWED = "the server does not allow this method on the requested resource"
_SA_TOKEN = ("", "serviceaccounts")


def unauthorized(message: str = "Unauthorized") -> Response:
    return Response(401, orjson.dumps(status_obj(401, "Unauthorized", message)))


def _header(headers: Mapping[str, str], name: str) -> str:
    return headers.get(name) or headers.get(name.lower()) or ""


class Gate:
    def __init__(self, server: Any, access: Access, audit_log: audit.AuditLog | None) -> None:
        self.server = server
        self.access = access
        self.audit = audit_log

    async def handle(
        self,
        method: str,
        path: str,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        body: bytes,
        user: UserInfo | None,
        source_ip: str,
        inner: Inner,
    ) -> Response:
        received = audit.now() if self.audit is not None else None
        raw_path = path
        if "?" in path:
            raw_path, more = paths.split_target(path)
            query = {**more, **query}
        a = attributes.of_request(method, raw_path, query)
        requester = user
        acting: UserInfo | None = None
        decision: tuple[str, str] | None = None
        annotations: dict[str, str] = {}  # what admission adds to the audit event
        try:
            if requester is None:
                auth = _header(headers, "Authorization")
                requester = self.access.authn.authenticate(auth) if auth else LOOPBACK_USER
                if requester is None:
                    requester = ANONYMOUS_USER
            acting = self.access.impersonate(requester, headers)
            effective = acting or requester
            ok, why = self.access.authorize(effective, a, query)
            if not ok:
                decision = ("forbid", "")
                raise _forbidden(effective, a)
            decision = ("allow", why)
            node = nodeauth.node_name(effective)
            if node is not None and a.verb == "create":
                self._node_restriction(node, a, body, headers)
            if a.resource_request and (
                (a.group, a.resource) in reviews.KINDS
                or (
                    (a.group, a.resource) == _SA_TOKEN
                    and a.subresource == "token"
                    and method.upper() == "POST"
                )
            ):
                resp = self._review(effective, method, raw_path, a, body, headers)
            else:
                tokens = (
                    requestctx.USER.set(effective),
                    requestctx.AUTHORIZE.set(self._authorize),
                    requestctx.AUDIT_ANNOTATIONS.set(annotations),
                )
                try:
                    resp = await inner(method, path, query, headers, body)
                finally:
                    requestctx.USER.reset(tokens[0])
                    requestctx.AUTHORIZE.reset(tokens[1])
                    requestctx.AUDIT_ANNOTATIONS.reset(tokens[2])
        except AuthError as exc:
            resp = unauthorized()
            requester = requester or ANONYMOUS_USER
            decision = None
            _ = exc
        except APIError as e:
            resp = Response(e.code, orjson.dumps(e.status()))
            resp.headers.update(e.headers)
        if self.audit is not None and received is not None:
            self._record(
                received,
                method,
                raw_path,
                query,
                headers,
                body,
                a,
                requester,
                acting,
                source_ip,
                resp,
                decision,
                annotations,
            )
        return resp

    def _authorize(self, user: UserInfo, a: Attributes) -> tuple[bool, str]:
        return self.access.authorize(user, a)

    # ------------------------------------------------------------------ pieces

    def _node_restriction(
        self, node: str, a: Attributes, body: bytes, headers: Mapping[str, str]
    ) -> None:
        if a.resource not in ("nodes", "leases") or a.name:
            return
        try:
            obj = self.server._body_obj(body, _header(headers, "Content-Type"))
        except APIError:
            return  # the create itself refuses the body
        name = (obj.get("metadata") or {}).get("name") or ""
        refusal = nodeauth.admit_node_create(node, a, str(name))
        if refusal:
            raise APIError(403, "Forbidden", refusal, {"kind": a.resource, "name": str(name)})

    def _review(
        self,
        user: UserInfo,
        method: str,
        raw_path: str,
        a: Attributes,
        body: bytes,
        headers: Mapping[str, str],
    ) -> Response:
        kind, info = self.server.route(raw_path)
        if kind != "resource":
            raise APIError(404, "NotFound", "the server could not find the requested resource")
        res, ns, name, sub, watch = info
        if method.upper() != "POST" or watch:
            raise APIError(405, "MethodNotAllowed", _NOT_ALLOWED)
        obj = self.server._body_obj(body, _header(headers, "Content-Type"))
        if sub == "token":
            out = reviews.token_request(self.access, ns or "", name, obj)
            return Response(201, orjson.dumps(out))
        if name is not None:
            raise APIError(405, "MethodNotAllowed", _NOT_ALLOWED)
        out = reviews.answer(
            self.access, user, res.group, res.plural, res.api_version, res.kind, ns or "", obj
        )
        return Response(201, orjson.dumps(out))

    def audit_unauthorized(
        self,
        method: str,
        raw_path: str,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        source_ip: str,
    ) -> None:
        if self.audit is None:
            return
        a = attributes.of_request(method, raw_path, query)
        self._record(
            audit.now(),
            method,
            raw_path,
            query,
            headers,
            b"",
            a,
            ANONYMOUS_USER,
            None,
            source_ip,
            unauthorized(),
            None,
        )

    def _record(
        self,
        received: Any,
        method: str,
        raw_path: str,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        body: bytes,
        a: Attributes,
        requester: UserInfo | None,
        acting: UserInfo | None,
        source_ip: str,
        resp: Response,
        decision: tuple[str, str] | None,
        annotations: dict[str, str] | None = None,
    ) -> None:
        assert self.audit is not None
        who = requester or ANONYMOUS_USER
        level = self.audit.level(acting or who, a)
        if level == "None":
            return
        req_obj = resp_obj = None
        if level in ("Request", "RequestResponse") and body:
            ctype = _header(headers, "Content-Type")
            if "json" in ctype or not ctype:
                try:
                    req_obj = orjson.loads(body)
                except orjson.JSONDecodeError:
                    req_obj = None
        if level == "RequestResponse" and not resp.streaming and isinstance(resp.body, bytes):
            try:
                resp_obj = orjson.loads(resp.body)
            except orjson.JSONDecodeError:
                resp_obj = None
        message = ""
        if resp.status >= 400 and isinstance(resp.body, bytes):
            try:
                message = str(orjson.loads(resp.body).get("message") or "")
            except (orjson.JSONDecodeError, AttributeError):
                message = ""
        uri = raw_path
        if query:
            from urllib.parse import urlencode

            uri += "?" + urlencode(list(query.items()))
        audit_id = ids.new_id()
        resp.headers["Audit-Id"] = audit_id
        fields = (
            level,
            audit_id,
            received,
            uri,
            a,
            who,
            acting,
            source_ip,
            _header(headers, "User-Agent"),
            resp.status,
            "ResponseStarted" if resp.streaming else "ResponseComplete",
            decision,
            message,
        )
        if req_obj is None and resp_obj is None:
            # the common case (Metadata level): the line made from encoded pieces
            self.audit.write(audit.line(*fields, annotations=annotations))
            return
        self.audit.write(audit.event(*fields, req_obj, resp_obj, annotations))


def _forbidden(user: UserInfo, a: Attributes) -> APIError:
    from gpuyard.apiserver.access import forbidden

    return forbidden(user, a)
