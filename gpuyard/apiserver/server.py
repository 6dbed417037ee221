"""The embedded Kubernetes-compatible API server: `APIServer`, and its thin HTTP layer.

Use from asyncio code (tests, `gpuyard up`):

    server = APIServer(data_dir=None, host="127.0.0.1", port=0)   # None = in memory
    url = await server.start()          # listening; server.token, server.kubeconfig_path
    ...
    await server.stop()

In-process entry point (no sockets, no auth, same semantics and metrics as HTTP):

    resp = await server.dispatch("GET", "/api/v1/nodes", {"limit": "10"}, {}, b"")
    resp.status, resp.headers, resp.body   # body: bytes, or for a watch an async
                                           # iterator of byte chunks (JSON lines; an
                                           # empty chunk is an idle heartbeat to skip)

A caller that stops reading a watch should `aclose()` its iterator so the watcher is
unregistered. `dispatch` works after `start()`, or after `await server.start(listen=False)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import time
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from gpuyard.apiserver import bootstrap_rbac, discovery, openapi, paths, webhooks
from gpuyard.apiserver.access import Access
from gpuyard.apiserver.audit import AuditLog, Policy
from gpuyard.apiserver.authn import ANONYMOUS_USER, AuthError, UserInfo
from gpuyard.apiserver.errors import APIError, status_obj
from gpuyard.apiserver.flow import (
    TOO_MANY,
    FlowCollector,
    FlowControl,
    FlowLimits,
    Listener,
    client_of,
    connection_cap,
    is_long_running,
    raise_file_limit,
    request_kind,
)
from gpuyard.apiserver.gate import Gate, unauthorized
from gpuyard.apiserver.handlers import JSON, MAX_BODY, Core, Response
from gpuyard.apiserver.kubeconfig import new_token, read_token, write_kubeconfig
from gpuyard.apiserver.resources import Registry
from gpuyard.apiserver.store import Store
from gpuyard.apiserver.tls import client_cert, cluster_tls

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/livez", "/version"})
_TEXT = {"Content-Type": "text/plain; charset=utf-8"}


def _is_json(headers: Mapping[str, str]) -> bool:
    return headers.get("Content-Type", JSON).startswith(JSON)


def _status_body(code: int, reason: str, message: str, details: Any = None) -> bytes:
    """A Status as kube-apiserver's serializer writes it (closing newline included)."""
    return orjson.dumps(status_obj(code, reason, message, details)) + b"\n"


def _verb_and_resource(method: str, path: str, query: Mapping[str, str]) -> tuple[str, str]:
    try:
        r = paths.parse(paths.split_target(path)[0])
    except APIError:
        return method.lower(), "invalid-path"
    if r.kind == "other":
        return method.lower(), r.other if len(r.other) < 40 else "other"
    if r.kind != "resource":
        return "discovery", ""
    resource = r.plural + ("/" + r.sub if r.sub else "")
    named = r.name is not None
    if method == "GET":
        if r.watch or query.get("watch") in ("true", "1"):
            verb = "watch"
        else:
            verb = "get" if named else "list"
    elif method == "POST":
        verb = "create"
    elif method == "PUT":
        verb = "update"
    elif method == "PATCH":
        verb = "patch"
    elif method == "DELETE":
        verb = "delete" if named else "deletecollection"
    else:
        verb = method.lower()
    return verb, resource


def _shutting_down() -> Response:
    return Response(
        503,
        orjson.dumps(status_obj(503, "ServiceUnavailable", "the API server is shutting down")),
        {"Content-Type": JSON, "Retry-After": "1"},
    )


class _StoreCollector:
    """Gauges read at scrape time: stored objects and open watches per resource."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Any:
        objs = GaugeMetricFamily(
            "apiserver_storage_objects", "Stored objects per resource", labels=["resource"]
        )
        watches = GaugeMetricFamily(
            "apiserver_watchers", "Open watches per resource", labels=["resource"]
        )
        for (group, plural), c in list(self.store.colls.items()):
            name = f"{plural}.{group}" if group else plural
            objs.add_metric([name], len(c.items))
            watches.add_metric([name], len(c.all_watchers()))
        rev = GaugeMetricFamily("apiserver_resource_version", "Current revision")
        rev.add_metric([], self.store.published_rv)
        return [objs, watches, rev]


class _GcTime:
    """Seconds this process spent in the cyclic garbage collector, by generation (one
    gc callback per process, however many servers it runs)."""

    seconds = [0.0, 0.0, 0.0]
    _t0 = 0.0
    _installed = False

    @classmethod
    def install(cls) -> None:
        if not cls._installed:
            cls._installed = True
            gc.callbacks.append(cls._cb)

    @classmethod
    def _cb(cls, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            cls._t0 = time.perf_counter()
        else:
            cls.seconds[min(2, int(info.get("generation", 0)))] += time.perf_counter() - cls._t0

    @classmethod
    def collect(cls) -> list[Any]:
        fam = CounterMetricFamily(
            "gpuyard_process_gc_seconds",
            "Seconds spent in the cyclic garbage collector, by generation",
            labels=["generation"],
        )
        for gen, secs in enumerate(cls.seconds):
            fam.add_metric([str(gen)], secs)
        return [fam]


class APIServer(Core):
    """The API server. See the module docstring for the two ways to call it."""

    def __init__(
        self,
        data_dir: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        *,
        log_size: int = 50_000,
        watch_buffer: int = 20_000,
        bookmark_interval: float = 10.0,
        persist: bool = True,
        tls: bool = True,
        fsync: bool = False,
        flow: FlowLimits | None = None,
        audit_policy: str | None = None,
        audit_log: str | None = None,
        default_toleration_seconds: int = 300,
    ) -> None:
        self.data_dir = data_dir
        self.host = host
        self.port = port
        self.kubeconfig_path = os.path.join(data_dir, "kubeconfig") if data_dir else None
        if token is None and self.kubeconfig_path and os.path.exists(self.kubeconfig_path):
            token = read_token(self.kubeconfig_path)
        self.token = token or new_token()
        self.url = ""
        self.tls = tls
        self.ca_pem: bytes | None = None
        self.ca_key_pem: bytes | None = None
        self.ca_path: str | None = None
        store = Store(
            data_dir if (data_dir and persist) else None,
            log_size=log_size,
            watch_buffer=watch_buffer,
            fsync=fsync,
        )
        super().__init__(store, Registry(), bookmark_interval=bookmark_interval)
        # Set when stop() begins: a request that comes after (an in-process client whose
        # component has not stopped yet) is answered 503 without being served or audited.
        self.stopping = False
        # Who may do what (authn.py, rbac.py, nodeauth.py) and what they did (audit.py).
        # The audit log goes to DATA_DIR/audit.log unless audit_log names another
        # path ("" turns it off); audit_policy is an audit.k8s.io/v1 Policy file.
        self.access = Access(store, self.token, data_dir)
        policy = Policy.load(audit_policy) if audit_policy else None
        if audit_log is None and data_dir:
            audit_log = os.path.join(data_dir, "audit.log")
        self.audit = AuditLog(audit_log, policy) if audit_log else None
        self.gate = Gate(self, self.access, self.audit)
        self.cluster.toleration_seconds = default_toleration_seconds
        self.flow_limits = (flow or FlowLimits()).check()
        self.flow = FlowControl(self.flow_limits)
        self._listener: Listener | None = None
        self._started = False
        self.metrics = CollectorRegistry()
        self._m_requests = Counter(
            "apiserver_request_total",
            "API requests by verb, resource and code",
            ["verb", "resource", "code"],
            registry=self.metrics,
        )
        self._m_latency = Histogram(
            "apiserver_request_duration_seconds",
            "API request latency (until the response starts)",
            ["verb", "resource"],
            registry=self.metrics,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self._m_agents = Counter(
            "apiserver_requests_by_user_agent_total",
            "API requests by user agent",
            ["user_agent", "verb"],
            registry=self.metrics,
        )

        self._m_children: dict[tuple[Any, ...], tuple[Any, Any, Any]] = {}
        self.metrics.register(_StoreCollector(self.store))  # type: ignore[arg-type]
        _GcTime.install()
        self.metrics.register(_GcTime)  # type: ignore[arg-type]
        self.metrics.register(
            FlowCollector(self.flow, lambda: self._listener)  # type: ignore[arg-type]
        )

    # ------------------------------------------------------------------ life cycle

    async def start(self, listen: bool = True) -> str:
        """Load state, create defaults, and (with listen) serve HTTP; returns the URL."""
        if not self._started:
            await self.bootstrap()
            await self._bootstrap_rbac()
            self._started = True
            self._bg.add(asyncio.get_running_loop().create_task(self._gc_freezer()))
        if not listen:
            return ""
        ssl_ctx = None
        if self.tls:
            ssl_ctx, self.ca_pem, self.ca_key_pem = cluster_tls(self.data_dir, self.host)
            if self.data_dir:
                self.ca_path = os.path.join(self.data_dir, "ca.crt")
        # The listener owns the socket (flow.py): connections are counted from accept,
        # held below the file limit, and timed out when slow to say what they want.
        cap = self.flow_limits.max_connections or connection_cap(raise_file_limit())
        listener = Listener(
            self._http,
            self.flow_limits,
            ssl_context=ssl_ctx,
            client_max_size=MAX_BODY + 1024 * 1024,
            max_connections=cap,
        )
        self.port = await listener.start(self.host, self.port)
        self._listener = listener
        scheme = "https" if self.tls else "http"
        self.url = f"{scheme}://{self.host}:{self.port}"
        if self.kubeconfig_path:
            try:
                self.write_kubeconfig(self.kubeconfig_path)
            except OSError as exc:  # a full disk: serve anyway, say why there is none
                logging.getLogger("gpuyard.apiserver").error(
                    "cannot write the kubeconfig %s: %s", self.kubeconfig_path, exc
                )
        if self.store.read_only:
            logging.getLogger("gpuyard.apiserver").warning(
                "no space left on device under %s: serving reads only; writes answer 507 "
                "until there is space again",
                self.data_dir,
            )
        return self.url

    async def _gc_freezer(self, every: float = 1.0) -> None:
        """Move long-lived objects out of the cyclic collector's reach.

        Stored entries live long and hold no reference cycles (reference counting frees
        them), but a full collection would walk all of them: with 100k objects that is a
        pause of tens of milliseconds on every watcher. Freezing what exists now keeps
        those pauses short. Every second, not every 20: while 12,000 pods were bound
        (benchmarks/scheduler.py) the collector took half of the cluster process's CPU
        with 20 s between freezes. Freezing is O(1); what it keeps from the collector is
        cyclic garbage made since the last young collection, a few objects at most."""
        gc.freeze()
        t0, t1, t2 = gc.get_threshold()
        if t0 < 20_000:
            # Young collections every 20,000 net allocations, not 700: with the store
            # frozen, the 700-object ones still cost this process about 0.7 s while
            # 12,000 pods were bound (benchmarks/scheduler.py), mostly fixed overhead.
            gc.set_threshold(20_000, t1, t2)
        while True:
            await asyncio.sleep(every)
            gc.freeze()

    async def _bootstrap_rbac(self) -> None:
        """The bootstrap ClusterRoles and bindings (bootstrap_rbac.py), when missing."""
        if self.store.read_only:
            return
        for plural, objs in (
            ("clusterroles", bootstrap_rbac.cluster_roles()),
            ("clusterrolebindings", bootstrap_rbac.cluster_role_bindings()),
        ):
            res = self._res("rbac.authorization.k8s.io", plural)
            for obj in objs:
                if self.store.get(res.key, obj["metadata"]["name"]) is None:
                    await self.create_object(res, "", obj)

    def client_cert(self, user: str, groups: list[str], days: int = 365) -> tuple[bytes, bytes]:
        """(cert_pem, key_pem): a client certificate from the cluster CA for user in
        groups (after start)."""
        if self.ca_pem is None or self.ca_key_pem is None:
            raise RuntimeError("the server has no CA: start it with TLS first")
        return client_cert(self.ca_pem, self.ca_key_pem, user, groups, days)

    def write_kubeconfig(self, path: str) -> str:
        """Write a kubeconfig (mode 0600) for this server: URL, CA data, token."""
        return write_kubeconfig(path, self.url, self.token, ca_pem=self.ca_pem)

    async def stop(self) -> None:
        """Stop serving, close watches, flush and close the store. Requests that come
        from now on are refused (503 ServiceUnavailable, Retry-After), never served
        after the audit log is closed."""
        self.stopping = True
        for c in self.store.colls.values():
            for w in c.all_watchers():
                w.close()
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._listener.close(), 10)
            self._listener = None
        await self.shutdown()
        await self.store.close()
        if self.audit is not None:
            self.audit.close()
        with contextlib.suppress(Exception):
            await webhooks.close()  # this loop's kept-alive webhook connections

    # ------------------------------------------------------------------ dispatch

    async def dispatch(
        self,
        method: str,
        path: str,
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        *,
        user: UserInfo | None = None,
        source_ip: str = "",
    ) -> Response:
        """Answer one request as `user` (authenticated by the HTTP layer); without one,
        an in-process caller's Authorization header is checked here, and a caller with
        none is the server's own loopback identity (system:masters)."""
        if self.stopping:
            return _shutting_down()
        t0 = time.perf_counter()
        q = query or {}
        h = headers or {}
        resp = await self.gate.handle(method, path, q, h, body, user, source_ip, super().dispatch)
        try:
            ua = h.get("User-Agent") or h.get("user-agent") or ""
            # The labelled children are looked up once per (verb, resource, status, agent):
            # prometheus_client's labels() costs more than the rest of a small request's
            # bookkeeping together.
            verb, resource = _verb_and_resource(method.upper(), path, q)
            ck = (verb, resource, resp.status, ua)
            children = self._m_children.get(ck)
            if children is None:
                children = (
                    self._m_requests.labels(verb, resource, str(resp.status)),
                    self._m_latency.labels(verb, resource),
                    self._m_agents.labels(ua.split(" ")[0][:80] or "unknown", verb),
                )
                if len(self._m_children) >= 4096:
                    self._m_children.clear()  # many distinct agents: bounded memory
                self._m_children[ck] = children
            children[0].inc()
            children[1].observe(time.perf_counter() - t0)
            children[2].inc()
        except Exception:  # metrics never break a request
            pass
        return resp

    async def serve_other(
        self, kind: str, info: Any, query: Mapping[str, str], headers: Mapping[str, str]
    ) -> Response:
        def js(obj: Any) -> Response:
            return Response(200, orjson.dumps(obj))

        if kind in ("api", "apis"):
            accept = next((v for k, v in headers.items() if k.lower() == "accept"), "")
            if discovery.wants_aggregated(accept):
                doc = discovery.aggregated(self.registry, core=kind == "api")
                return Response(200, doc, {"Content-Type": discovery.AGGREGATED_V2})
        if kind == "api":
            return js(discovery.api_versions(f"{self.host}:{self.port}"))
        if kind == "apis":
            return js(discovery.api_group_list(self.registry))
        if kind == "group":
            g = discovery.api_group(self.registry, info)
            if g is not None:
                return js(g)
        elif kind == "gv":
            group, version = info
            rl = discovery.api_resource_list(self.registry, group, version)
            if rl is not None:
                return js(rl)
        elif kind == "other":
            path = info
            if path in ("/healthz", "/readyz", "/livez") or path.startswith(
                ("/healthz/", "/readyz/", "/livez/")
            ):
                return Response(200, b"ok", dict(_TEXT))
            if path == "/version":
                return Response(200, orjson.dumps(discovery.VERSION_INFO), serialized=False)
            if path == "/metrics":
                return Response(
                    200,
                    generate_latest(self.metrics),
                    {"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
                )
            if path.startswith("/openapi/"):
                raw: bytes | None = None
                ctype = "application/json"
                if path == "/openapi/v2":
                    accept = next((v for k, v in headers.items() if k.lower() == "accept"), "")
                    if openapi.wants_v2_proto(accept):
                        raw, ctype = (
                            openapi.openapi_v2_bytes(self.registry, True),
                            openapi.V2_PROTO_ANSWER,
                        )
                    else:
                        raw = openapi.openapi_v2_bytes(self.registry, False)
                elif path == "/openapi/v3":
                    raw = openapi.openapi_v3_paths_bytes(self.registry)
                elif path.startswith("/openapi/v3/"):
                    raw = openapi.openapi_v3_doc_bytes(self.registry, path[len("/openapi/v3/") :])
                if raw is not None:
                    return Response(200, raw, {"Content-Type": ctype}, serialized=False)
        raise APIError(404, "NotFound", "the server could not find the requested resource")

    # ------------------------------------------------------------------ HTTP

    def _authenticate(self, request: web.BaseRequest) -> UserInfo | None:
        """The user of a request's bearer token or client certificate; None when it
        has no credential. Raises AuthError for one that names no one."""
        auth = request.headers.get("Authorization", "")
        peercert = None
        if not auth and request.transport is not None:
            ssl_obj = request.transport.get_extra_info("ssl_object")
            if ssl_obj is not None:
                peercert = ssl_obj.getpeercert()
        return self.access.authn.authenticate(auth, peercert)

    async def _http(self, request: web.BaseRequest) -> web.StreamResponse:
        # The path as sent, still percent-encoded: `paths` decodes each segment once.
        path = request.raw_path.partition("?")[0]
        listener = self._listener
        if path in OPEN_PATHS:  # probes: answered however busy the server is
            if listener is not None:
                listener.request_started(request.protocol, False)
            try:  # as anonymous: what system:public-info-viewer lets everyone read
                return await self._serve_http(request, path, ANONYMOUS_USER)
            finally:
                if listener is not None:
                    listener.request_done(request.protocol)
        try:
            user = self._authenticate(request)
        except AuthError:
            user = None
        if listener is not None:
            listener.request_started(request.protocol, user is not None)
        try:
            if user is None:  # anonymous requests are refused (401), as is a bad token
                self.gate.audit_unauthorized(
                    request.method, path, request.query, request.headers, request.remote or ""
                )
                r = unauthorized()
                body = r.body + b"\n" if isinstance(r.body, bytes) else b""
                return web.Response(status=401, body=body, content_type="application/json")
            method = request.method
            if is_long_running(method, path, request.query):
                return await self._serve_http(request, path, user)
            kind = request_kind(method)
            client = client_of(request.headers)
            flow = self.flow
            if not flow.try_enter(kind, client):
                refused = await flow.enter(kind, client)
                if refused is not None:
                    return self._too_many(method, path, request.query)
            try:
                return await self._serve_http(request, path, user)
            finally:
                flow.leave(kind, client)
        finally:
            if listener is not None:
                listener.request_done(request.protocol)

    def _too_many(self, method: str, path: str, query: Mapping[str, str]) -> web.Response:
        """429 as kube-apiserver answers when its flow control refuses a request."""
        secs = self.flow_limits.retry_after
        with contextlib.suppress(Exception):
            verb, resource = _verb_and_resource(method, path, query)
            self._m_requests.labels(verb, resource, "429").inc()
        return web.Response(
            status=429,
            body=_status_body(429, "TooManyRequests", TOO_MANY, {"retryAfterSeconds": secs}),
            headers={"Retry-After": str(secs)},
            content_type="application/json",
        )

    async def _serve_http(
        self, request: web.BaseRequest, path: str, user: UserInfo | None = None
    ) -> web.StreamResponse:
        try:
            if not request.can_read_body:
                body = b""
            elif request.content.is_eof():
                # The whole body came with the head (most requests): read it without
                # the timer, whose task and loop turn cost more than the read.
                body = await request.read()
            else:
                body = await asyncio.wait_for(request.read(), self.flow_limits.body_timeout)
        except TimeoutError:
            if self._listener is not None:
                self._listener.closing("body-timeout")
            timed_out = web.Response(
                status=408,
                body=_status_body(
                    408,
                    "Timeout",
                    f"the request body did not arrive within {self.flow_limits.body_timeout:g} s",
                ),
                content_type="application/json",
            )
            # Sent now and the connection closed: aiohttp would otherwise linger,
            # reading the rest of the slow body for up to ten more seconds.
            timed_out.force_close()
            await timed_out.prepare(request)
            await timed_out.write_eof()
            if request.transport is not None:
                request.transport.close()
            return timed_out
        except web.HTTPRequestEntityTooLarge:
            return web.Response(
                status=413,
                body=_status_body(
                    413,
                    "RequestEntityTooLarge",
                    f"the request body is too large: limit is {MAX_BODY} bytes",
                ),
                content_type="application/json",
            )
        resp = await self.dispatch(
            request.method,
            path,
            request.query,
            request.headers,
            body,
            user=user,
            source_ip=request.remote or "",
        )
        if not resp.streaming:
            answer = resp.body
            assert isinstance(answer, bytes | bytearray)
            if resp.serialized and answer[-1:] == b"}" and _is_json(resp.headers):
                answer = answer + b"\n"
            return web.Response(status=resp.status, body=answer, headers=resp.headers)
        out = web.StreamResponse(
            status=resp.status,
            headers={"Content-Type": resp.headers.get("Content-Type", "application/json")},
        )
        out.enable_chunked_encoding()
        it: Any = resp.body
        try:
            await out.prepare(request)
            async for chunk in it:
                if chunk:
                    await out.write(chunk)
                elif request.transport is None or request.transport.is_closing():
                    break
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            with contextlib.suppress(Exception):
                await it.aclose()
        with contextlib.suppress(Exception):
            await out.write_eof()
        return out
