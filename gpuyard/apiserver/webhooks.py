"""Mutating admission webhooks: match MutatingWebhookConfigurations against a request,
call each matching webhook with an admission.k8s.io/v1 AdmissionReview over HTTPS
(server verified with the webhook's caBundle), and apply the JSONPatch it returns.

`admit(configs, attrs, obj, old)` is what the API server calls before validation and
storage. Webhooks run in configuration-name order, then in list order; a webhook with
`reinvocationPolicy: IfNeeded` runs once more when a later webhook changed the object.
A refusal (`allowed: false`) raises `AdmissionDenied(status.code or 403, message)`; an
unreachable, slow or malformed webhook raises `AdmissionDenied(500, "failed calling
webhook ...")` under failurePolicy Fail (the default) and is skipped under Ignore.

Matching (`webhook_matches`) is pure. HTTP is a small HTTP/1.1 client on asyncio
protocols (`_Conn`) with kept-alive connections per event loop and one SSL context per
caBundle, so a busy webhook costs one round trip per admission, not a TLS handshake; a
gate per host (`_Gate`) lets a burst open only a couple of new connections at a time,
so it never turns into a storm of handshakes. `observers` get each call's latency (the
webhook's own, as the API server sees it).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import copy
import ssl
import time
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson

from gpuyard import http1
from gpuyard.apiserver.resources import Resource
from gpuyard.kube import json_patch
from gpuyard.kube.objects import SelectorError, selector_matches

DEFAULT_TIMEOUT_S = 10
MAX_TIMEOUT_S = 30
OPERATIONS = ("CREATE", "UPDATE", "DELETE", "CONNECT")
# Kept-alive connections per webhook host. Bounded: a burst then waits briefly for a free
# connection instead of opening hundreds of TLS connections at once (each handshake
# costs both sides milliseconds of CPU, and a storm of them stalls everything).
CONNECTIONS_PER_HOST = 64


@dataclass
class AdmissionAttributes:
    """What an admission request is about (the server fills these)."""

    operation: str  # CREATE | UPDATE | DELETE | CONNECT
    resource: Resource
    sub_resource: str = ""
    namespace: str = ""
    name: str = ""
    user_info: dict[str, Any] = field(default_factory=dict)
    dry_run: bool = False
    namespace_labels: dict[str, str] = field(default_factory=dict)
    namespace_object: dict[str, Any] | None = None
    # (group, version, kind) of the object sent when it is not the resource's own kind:
    # a /scale write sends an autoscaling/v1 Scale
    kind: tuple[str, str, str] | None = None


class AdmissionDenied(Exception):
    """A webhook refused the request, or failed under failurePolicy Fail."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class WebhookError(Exception):
    """A webhook could not be called or answered something unusable."""


# ------------------------------------------------------------------ matching (pure)


def _listed(values: Any, want: str) -> bool:
    if not isinstance(values, list):
        return False
    return "*" in values or want in values


def _resource_listed(values: Any, plural: str, sub: str) -> bool:
    if not isinstance(values, list):
        return False
    full = f"{plural}/{sub}" if sub else plural
    for v in values:
        if not isinstance(v, str):
            continue
        if v == "*/*" or v == full:
            return True
        if v == "*" and not sub:
            return True
        if sub and v == f"{plural}/*":
            return True
        if sub and v == f"*/{sub}":
            return True
    return False


def rule_matches(rule: dict[str, Any], attrs: AdmissionAttributes) -> bool:
    """Whether one RuleWithOperations covers the request."""
    if not isinstance(rule, dict):
        return False
    res = attrs.resource
    if not _listed(rule.get("operations"), attrs.operation):
        return False
    if not _listed(rule.get("apiGroups"), res.group):
        return False
    if not _listed(rule.get("apiVersions"), res.version):
        return False
    if not _resource_listed(rule.get("resources"), res.plural, attrs.sub_resource or ""):
        return False
    scope = rule.get("scope") or "*"
    if scope == "Namespaced" and not res.namespaced:
        return False
    if scope == "Cluster" and res.namespaced:
        return False
    return True


def _labels(obj: dict[str, Any] | None) -> dict[str, str]:
    if not isinstance(obj, dict):
        return {}
    md = obj.get("metadata")
    labels = md.get("labels") if isinstance(md, dict) else None
    return labels if isinstance(labels, dict) else {}


def _selector_ok(selector: Any, labels: dict[str, str]) -> bool:
    if not selector:
        return True
    if not isinstance(selector, dict):
        return False
    try:
        return selector_matches(selector, labels)
    except (SelectorError, TypeError, AttributeError):
        return False


def webhook_matches(
    hook: dict[str, Any],
    attrs: AdmissionAttributes,
    obj: dict[str, Any] | None,
    old: dict[str, Any] | None,
) -> bool:
    """Rules, namespaceSelector and objectSelector of one webhook against a request."""
    rules = hook.get("rules")
    if not isinstance(rules, list) or not any(rule_matches(r, attrs) for r in rules):
        return False
    ns_sel = hook.get("namespaceSelector")
    if ns_sel:
        if attrs.resource.kind == "Namespace" and not attrs.resource.group:
            if not _selector_ok(ns_sel, _labels(obj) or _labels(old)):
                return False
        elif attrs.resource.namespaced:
            if not _selector_ok(ns_sel, dict(attrs.namespace_labels or {})):
                return False
    obj_sel = hook.get("objectSelector")
    if obj_sel:
        if not (_selector_ok(obj_sel, _labels(obj)) or _selector_ok(obj_sel, _labels(old))):
            return False
    return True


def matching_webhooks(
    configs: list[dict[str, Any]],
    attrs: AdmissionAttributes,
    obj: dict[str, Any] | None,
    old: dict[str, Any] | None,
) -> list[dict[str, Any]]:
    """The webhooks to call, in order (configurations by name, then as listed)."""

    def cname(c: dict[str, Any]) -> str:
        md = c.get("metadata") if isinstance(c, dict) else None
        return str((md or {}).get("name") or "")

    out = []
    for cfg in sorted((c for c in configs if isinstance(c, dict)), key=cname):
        for hook in cfg.get("webhooks") or []:
            if isinstance(hook, dict) and webhook_matches(hook, attrs, obj, old):
                out.append(hook)
    return out


def review_request(
    hook: dict[str, Any],
    attrs: AdmissionAttributes,
    obj: dict[str, Any] | None,
    old: dict[str, Any] | None,
) -> dict[str, Any]:
    """The AdmissionReview sent to a webhook."""
    res = attrs.resource
    g, v, k = attrs.kind or (res.group, res.version, res.kind)
    kind = {"group": g, "version": v, "kind": k}
    resource = {"group": res.group, "version": res.version, "resource": res.plural}
    req: dict[str, Any] = {
        "uid": str(uuid.uuid4()),
        "kind": kind,
        "resource": resource,
        "requestKind": kind,
        "requestResource": resource,
        "name": attrs.name or "",
        "operation": attrs.operation,
        "userInfo": attrs.user_info or {},
        "object": obj if attrs.operation != "DELETE" else None,
        "oldObject": old if attrs.operation in ("UPDATE", "DELETE") else None,
        "dryRun": bool(attrs.dry_run),
        "options": {
            "apiVersion": "meta.k8s.io/v1",
            "kind": {"CREATE": "CreateOptions", "UPDATE": "UpdateOptions"}.get(
                attrs.operation, "DeleteOptions"
            ),
        },
    }
    if attrs.sub_resource:
        req["subResource"] = attrs.sub_resource
        req["requestSubResource"] = attrs.sub_resource
    if res.namespaced and attrs.namespace:
        req["namespace"] = attrs.namespace
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": req}


def hook_url(hook: dict[str, Any]) -> str:
    cc = hook.get("clientConfig") or {}
    if not isinstance(cc, dict):
        raise WebhookError("clientConfig is not an object")
    url = cc.get("url")
    if isinstance(url, str) and url:
        if not url.startswith("https://"):
            raise WebhookError(f"webhook URL {url!r} must use https")
        return url
    svc = cc.get("service")
    if isinstance(svc, dict) and svc.get("name") and svc.get("namespace"):
        path = svc.get("path") or "/"
        port = int(svc.get("port") or 443)
        return f"https://{svc['name']}.{svc['namespace']}.svc:{port}{path}"
    raise WebhookError("clientConfig has neither url nor service")


def hook_timeout(hook: dict[str, Any]) -> float:
    t = hook.get("timeoutSeconds")
    if not isinstance(t, int) or isinstance(t, bool) or t <= 0:
        return float(DEFAULT_TIMEOUT_S)
    return float(min(t, MAX_TIMEOUT_S))


def _copy(obj: dict[str, Any]) -> Any:
    """An independent copy of a JSON object: through orjson, much cheaper than deepcopy
    (which is the fallback for anything orjson cannot encode)."""
    try:
        return orjson.loads(orjson.dumps(obj))
    except (orjson.JSONEncodeError, TypeError):
        return copy.deepcopy(obj)


def apply_response(
    review: Any, uid: str, obj: dict[str, Any] | None
) -> tuple[dict[str, Any] | None, list[str], bool]:
    """Read a webhook's AdmissionReview answer: (patched object, warnings, changed).

    Raises AdmissionDenied for a refusal and WebhookError for an unusable answer."""
    if not isinstance(review, dict) or not isinstance(review.get("response"), dict):
        raise WebhookError("the answer is not an AdmissionReview with a response")
    resp = review["response"]
    if resp.get("uid") not in (uid, None, ""):
        raise WebhookError(f"response uid {resp.get('uid')!r} does not match request {uid!r}")
    warnings = [str(w) for w in resp.get("warnings") or [] if isinstance(w, str)]
    if resp.get("allowed") is not True:
        status = resp.get("status") if isinstance(resp.get("status"), dict) else {}
        code = status.get("code")
        code = code if isinstance(code, int) and 400 <= code < 600 else 403
        message = str(status.get("message") or status.get("reason") or "")
        raise AdmissionDenied(code, message or "admission webhook denied the request")
    raw = resp.get("patch")
    if not raw or obj is None:
        return obj, warnings, False
    ptype = resp.get("patchType") or "JSONPatch"
    if ptype != "JSONPatch":
        raise WebhookError(f"unsupported patchType {ptype!r}")
    try:
        ops = orjson.loads(base64.b64decode(raw, validate=True))
        if not isinstance(ops, list):
            raise WebhookError("the patch is not a JSON array")
        new = json_patch.apply(_copy(obj), ops)
    except WebhookError:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoding or patch error of theirs
        raise WebhookError(f"could not apply the returned patch: {exc}") from None
    if not isinstance(new, dict):
        raise WebhookError("the patched object is not an object")
    return new, warnings, new != obj


# ------------------------------------------------------------------ HTTP (edges)

_contexts: dict[str, ssl.SSLContext] = {}
# Kept-alive connections idle longer than this are closed (before the webhook's server
# would close them: a request never races a server-side idle close).
KEEPALIVE_S = 30.0
# New connections a burst may open at once towards one webhook host; the other calls
# of the burst wait for whichever comes first, a connection freed by a finished call or
# a new one.
OPENING_PER_HOST = 2
# The largest answer read from a webhook.
MAX_ANSWER_BYTES = 16 << 20

# Called after every webhook call with (webhook name, seconds, ok): the webhook's own
# latency as its caller sees it (metrics, benchmarks). An observer must not raise.
observers: list[Callable[[str, float, bool], None]] = []


class _Conn(http1.Connection):
    """A kept-alive HTTPS connection to a webhook (gpuyard.http1: one request at a time,
    little CPU per call, which matters at hundreds of admissions a second); answers over
    MAX_ANSWER_BYTES are refused."""

    def body_limit(self) -> int:
        return MAX_ANSWER_BYTES


class _Gate:
    """The kept-alive connections of one webhook host, and admission of calls to them.

    A call reuses an idle connection when there is one (the most recently used first).
    Otherwise it opens a new one, but only while fewer than OPENING_PER_HOST are being
    opened and the host has fewer than CONNECTIONS_PER_HOST; else it waits. Without
    this, a burst (after any stall of the event loop) opens a connection per call, and
    the TLS handshakes, all at once, cost both sides milliseconds of CPU each: a storm
    that stalls everything for tens to hundreds of milliseconds. With it, a burst is
    served by the warm connections while the pool grows a couple at a time.

    `acquire()` gives an idle connection, or None: the caller opens one. `release()`
    takes it back (kept when reusable, else closed)."""

    def __init__(self, limit: int, opening: int) -> None:
        self.limit = max(1, limit)
        self.max_opening = max(1, opening)
        self.idle: list[_Conn] = []
        self.busy = 0
        self.opening = 0
        self.closed = False
        self.waiters: collections.deque[asyncio.Future[_Conn | None]] = collections.deque()

    def _prune(self, now: float) -> None:
        cutoff = now - KEEPALIVE_S
        if any(c.closed or c.last_used < cutoff for c in self.idle):
            keep = []
            for c in self.idle:
                if c.closed or c.last_used < cutoff:
                    c.close()
                else:
                    keep.append(c)
            self.idle = keep

    def _take(self, now: float) -> tuple[bool, _Conn | None]:
        """(got a slot, the idle connection to reuse or None to open one)."""
        self._prune(now)
        if self.idle:
            self.busy += 1
            return True, self.idle.pop()
        if self.opening < self.max_opening and self.busy < self.limit:
            self.opening += 1
            self.busy += 1
            return True, None
        return False, None

    async def acquire(self) -> _Conn | None:
        loop = asyncio.get_running_loop()
        while self.waiters and self.waiters[0].done():  # gave up waiting (timed out)
            self.waiters.popleft()
        if not self.waiters:
            ok, conn = self._take(loop.time())
            if ok:
                return conn
        fut: asyncio.Future[_Conn | None] = loop.create_future()
        self.waiters.append(fut)
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():  # handed a slot: hand it on
                conn = fut.result()
                self.release(conn, opened=conn is None, reusable=conn is not None)
            raise

    def release(self, conn: _Conn | None, opened: bool, reusable: bool) -> None:
        now = asyncio.get_running_loop().time()
        self.busy -= 1
        if opened:
            self.opening -= 1
        if conn is not None:
            if reusable and not conn.closed and not self.closed:
                conn.last_used = now
                self.idle.append(conn)
            else:
                conn.close()
        while self.waiters:
            if self.waiters[0].done():  # cancelled while waiting
                self.waiters.popleft()
                continue
            ok, got = self._take(now)
            if not ok:
                break
            self.waiters.popleft().set_result(got)

    def close(self) -> None:
        self.closed = True
        for c in self.idle:
            c.close()
        self.idle.clear()


class _Target:
    """Where a webhook URL points: host, port, request head, TLS context."""

    def __init__(self, url: str, ctx: ssl.SSLContext) -> None:
        parts = urlsplit(url)
        if not parts.hostname:
            raise WebhookError(f"webhook URL {url!r} has no host")
        self.host = parts.hostname
        try:
            self.port = parts.port or 443
        except ValueError as exc:
            raise WebhookError(f"webhook URL {url!r}: {exc}") from None
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.ctx = ctx
        self.head = (
            f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            "Content-Type: application/json\r\nAccept: application/json\r\n"
            "User-Agent: gpuyard-apiserver\r\nContent-Length: "
        ).encode()

    async def open(self) -> _Conn:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(
            _Conn, self.host, self.port, ssl=self.ctx, server_hostname=self.host
        )
        return conn


class _Pool:
    """One event loop's webhook client: a gate (with its connections) per host."""

    def __init__(self) -> None:
        self.gates: dict[tuple[str, str], tuple[_Target, _Gate]] = {}

    def get(self, url: str, ca_bundle: str) -> tuple[_Target, _Gate]:
        key = (url, ca_bundle)
        got = self.gates.get(key)
        if got is None:
            if len(self.gates) > 256:
                self.close()
            target = _Target(url, ssl_context(ca_bundle))
            got = self.gates[key] = (target, _Gate(CONNECTIONS_PER_HOST, OPENING_PER_HOST))
        return got

    def close(self) -> None:
        for _, gate in self.gates.values():
            gate.close()
        self.gates.clear()


_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Pool] = weakref.WeakKeyDictionary()


def ssl_context(ca_bundle: str | None) -> ssl.SSLContext:
    """An SSL context trusting caBundle (base64 PEM), or the system roots without one."""
    key = ca_bundle or ""
    ctx = _contexts.get(key)
    if ctx is None:
        if key:
            try:
                pem = base64.b64decode(key, validate=True).decode()
                ctx = ssl.create_default_context(cadata=pem)
            except (ValueError, ssl.SSLError, UnicodeDecodeError) as exc:
                raise WebhookError(f"caBundle is not a base64 PEM certificate: {exc}") from None
        else:
            ctx = ssl.create_default_context()
        if len(_contexts) > 256:
            _contexts.clear()
        _contexts[key] = ctx
    return ctx


def _pool() -> _Pool:
    loop = asyncio.get_running_loop()
    p = _pools.get(loop)
    if p is None:
        p = _pools[loop] = _Pool()
    return p


async def close() -> None:
    """Close this event loop's kept-alive webhook connections (server shutdown)."""
    p = _pools.pop(asyncio.get_running_loop(), None)
    if p is not None:
        p.close()


def _observe(name: str, seconds: float, ok: bool) -> None:
    for fn in observers:
        fn(name, seconds, ok)


def _failure(conn: _Conn, exc: ConnectionError) -> WebhookError:
    if isinstance(exc, http1.Malformed):
        return WebhookError(str(exc))
    if conn.got_bytes:
        return WebhookError("the webhook closed the connection mid-answer")
    return WebhookError("the webhook closed the connection")


async def _post(target: _Target, gate: _Gate, body: bytes) -> tuple[int, bytes]:
    raw = target.head + str(len(body)).encode() + b"\r\n\r\n" + body
    conn = await gate.acquire()
    opened = conn is None
    reusable = False
    try:
        if conn is not None:
            try:
                ans = await conn.exchange(raw)
                reusable = conn.keep_alive and not conn.closed and not conn.buf
                return ans.status, await ans.read()
            except ConnectionError as exc:
                if conn.got_bytes or isinstance(exc, http1.Malformed):
                    raise _failure(conn, exc) from None
                # Closed by the webhook while idle: once more on a new connection.
                conn.close()
        conn = await target.open()
        try:
            ans = await conn.exchange(raw)
        except ConnectionError as exc:
            raise _failure(conn, exc) from None
        reusable = conn.keep_alive and not conn.closed and not conn.buf
        return ans.status, await ans.read()
    finally:
        gate.release(conn, opened, reusable)


async def call_webhook(hook: dict[str, Any], review: dict[str, Any]) -> Any:
    """POST one AdmissionReview; the decoded answer. Raises WebhookError."""
    t0 = time.perf_counter()
    name = str(hook.get("name") or "")
    ok = False
    try:
        url = hook_url(hook)
        cc = hook.get("clientConfig") or {}
        target, gate = _pool().get(url, str(cc.get("caBundle") or ""))
        timeout = hook_timeout(hook)
        body = orjson.dumps(review)
        try:
            async with asyncio.timeout(timeout):
                status, raw = await _post(target, gate, body)
        except TimeoutError:
            raise WebhookError(f"timed out after {timeout:g}s") from None
        except (OSError, ValueError) as exc:
            raise WebhookError(str(exc) or type(exc).__name__) from None
        if status != 200:
            raise WebhookError(f"the webhook answered HTTP {status}")
        try:
            answer = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise WebhookError(f"the answer is not JSON: {exc}") from None
        ok = True
        return answer
    finally:
        if observers:
            _observe(name, time.perf_counter() - t0, ok)


async def _run_one(
    hook: dict[str, Any],
    attrs: AdmissionAttributes,
    obj: dict[str, Any] | None,
    old: dict[str, Any] | None,
) -> tuple[dict[str, Any] | None, list[str], bool]:
    name = str(hook.get("name") or "")
    review = review_request(hook, attrs, obj, old)
    try:
        answer = await call_webhook(hook, review)
        return apply_response(answer, review["request"]["uid"], obj)
    except AdmissionDenied as exc:
        msg = f'admission webhook "{name}" denied the request'
        raise AdmissionDenied(exc.code, f"{msg}: {exc.message}" if exc.message else msg) from None
    except WebhookError as exc:
        if (hook.get("failurePolicy") or "Fail") == "Ignore":
            return obj, [], False
        raise AdmissionDenied(500, f'failed calling webhook "{name}": {exc}') from None


async def validate_one(
    hook: dict[str, Any],
    attrs: AdmissionAttributes,
    obj: dict[str, Any] | None,
    old: dict[str, Any] | None,
) -> list[str]:
    """Call one validating webhook: its warnings (a patch it answers is not applied);
    AdmissionDenied when it refuses, or fails under failurePolicy Fail."""
    _, warnings, _ = await _run_one(hook, attrs, obj, old)
    return warnings


async def admit(
    configs: list[dict[str, Any]],
    attrs: AdmissionAttributes,
    obj: dict[str, Any] | None,
    old: dict[str, Any] | None,
) -> tuple[dict[str, Any], list[str]]:
    """Run the mutating webhooks that match; the (possibly patched) object and warnings."""
    hooks = matching_webhooks(configs, attrs, obj, old)
    warnings: list[str] = []
    if not hooks:
        return obj, warnings  # type: ignore[return-value]
    changed_after: list[bool] = []  # per hook run: did a later hook change the object?
    for hook in hooks:
        obj, ws, changed = await _run_one(hook, attrs, obj, old)
        warnings.extend(ws)
        if changed:
            changed_after = [True] * len(changed_after)
        changed_after.append(False)
    again = [
        h
        for h, later in zip(hooks, changed_after, strict=True)
        if later and h.get("reinvocationPolicy") == "IfNeeded"
    ]
    for hook in again:
        obj, ws, _ = await _run_one(hook, attrs, obj, old)
        warnings.extend(ws)
    return obj, warnings  # type: ignore[return-value]
