"""The team mutating admission webhook: an HTTPS server (its own CA, see certs.py) that
answers admission.k8s.io/v1 AdmissionReviews for pod creation with the decision of
`gpuyard.teams.admission.mutate_pod`, and the MutatingWebhookConfiguration that
registers it (failurePolicy Fail, scoped to team namespaces by a namespaceSelector).

    server = WebhookServer(lookup, cert_dir)      # lookup(namespace) -> TeamInfo | None
    url = await server.start()                   # https://127.0.0.1:PORT/mutate-pods
    # (start(thread=True): served from a thread with its own event loop)
    config = webhook_configuration(url, server.ca_bundle)
    if server.rotate(now, activate=False):       # new key material when due
        publish(webhook_configuration(url, server.ca_bundle))   # trusts old and new CA
        server.activate()                        # then present the new certificate
    await server.stop()
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import datetime as dt
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, cast

import orjson

from gpuyard import names
from gpuyard.network import bandwidth
from gpuyard.teams import certs, webhook_metrics
from gpuyard.teams.admission import TeamInfo, mutate_pod

log = logging.getLogger("gpuyard.teams.webhook")

CONFIG_NAME = "gpuyard-teams"
WEBHOOK_NAME = "pods.teams.gpuyard.io"
PATH = "/mutate-pods"

Lookup = Callable[[str], TeamInfo | None]


def teams_by_namespace(teams: Iterable[Mapping[str, Any]]) -> dict[str, TeamInfo]:
    """namespace -> TeamInfo from Team objects (a namespace claimed twice goes to the
    team first by name)."""
    out: dict[str, TeamInfo] = {}
    for t in sorted(teams, key=lambda o: (o.get("metadata") or {}).get("name") or ""):
        name = (t.get("metadata") or {}).get("name") or ""
        spec = t.get("spec") or {}
        egress = spec.get("internetEgressBandwidth") or ""
        try:
            bandwidth.parse(egress) if egress else None
        except ValueError:
            egress = ""  # refused by the Team's schema; never stamped on a pod
        info = TeamInfo(name, bool(spec.get("borrow", False)), str(egress))
        for ns in spec.get("namespaces") or []:
            if isinstance(ns, str):
                out.setdefault(ns, info)
    return out


def review(body: Mapping[str, Any], lookup: Lookup) -> dict[str, Any]:
    """AdmissionReview request -> AdmissionReview response (pure apart from lookup)."""
    return _review(body, lookup)[0]


def _review(body: Mapping[str, Any], lookup: Lookup) -> tuple[dict[str, Any], str]:
    """(response, the refusal's reason or "")."""
    req = body.get("request") or {}
    uid = req.get("uid") or ""
    resp: dict[str, Any] = {"uid": uid, "allowed": True}
    out = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": resp}
    res = req.get("resource") or {}
    if req.get("operation") != "CREATE" or res.get("resource") != "pods" or req.get("subResource"):
        return out, ""
    obj = req.get("object") or {}
    ns = req.get("namespace") or (obj.get("metadata") or {}).get("namespace") or ""
    decision = mutate_pod(obj, lookup(ns), ns)
    if not decision.allowed:
        resp["allowed"] = False
        resp["status"] = {
            "status": "Failure",
            "code": 403,
            "reason": "Forbidden",
            "message": decision.message,
        }
        return out, decision.reason or "refused"
    if decision.patch:
        resp["patchType"] = "JSONPatch"
        resp["patch"] = base64.b64encode(orjson.dumps(decision.patch)).decode()
    return out, ""


def webhook_configuration(url: str, ca_pem: bytes, timeout_s: int = 10) -> dict[str, Any]:
    """The configuration in url form: the API server calls `url`, trusting ca_pem."""
    return _configuration({"url": url, "caBundle": base64.b64encode(ca_pem).decode()}, timeout_s)


def service_webhook_configuration(
    namespace: str, service: str, ca_pem: bytes = b"", port: int = 443, timeout_s: int = 10
) -> dict[str, Any]:
    """The same in service form: the API server calls the Service `service` in
    `namespace` on `port`, path /mutate-pods (how a real cluster reaches the webhook)."""
    cc: dict[str, Any] = {
        "service": {"namespace": namespace, "name": service, "path": PATH, "port": port}
    }
    if ca_pem:
        cc["caBundle"] = base64.b64encode(ca_pem).decode()
    return _configuration(cc, timeout_s)


def _configuration(client_config: dict[str, Any], timeout_s: int) -> dict[str, Any]:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": CONFIG_NAME, "labels": {"app.kubernetes.io/part-of": "gpuyard"}},
        "webhooks": [
            {
                "name": WEBHOOK_NAME,
                "clientConfig": client_config,
                "rules": [
                    {
                        "operations": ["CREATE"],
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "resources": ["pods"],
                        "scope": "Namespaced",
                    }
                ],
                "namespaceSelector": {
                    "matchExpressions": [{"key": names.LABEL_TEAM, "operator": "Exists"}]
                },
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": timeout_s,
                "reinvocationPolicy": "IfNeeded",
            }
        ],
    }


class WebhookServer:
    def __init__(
        self,
        lookup: Lookup,
        cert_dir: str | Path,
        host: str = "127.0.0.1",
        port: int = 0,
        hosts: list[str] | None = None,
        sock: socket.socket | None = None,
    ) -> None:
        self.lookup = lookup
        self.sock = sock  # an already bound socket to listen on (host and port then unused)
        self.cert_dir = Path(cert_dir)
        self.host = host
        self.port = port
        self.hosts = hosts or [host, "localhost"]
        self.bundle: certs.Bundle | None = None
        self.previous_ca = b""
        self.requests = 0
        self.denied = 0
        self.ready = True
        self._ssl: ssl.SSLContext | None = None
        self._server: asyncio.AbstractServer | None = None
        self._conns: set[_HTTPServer] = set()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._quit: asyncio.Event | None = None

    @property
    def ca_pem(self) -> bytes:
        assert self.bundle is not None, "start() first"
        return self.bundle.ca_pem

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}{PATH}"

    def _context(self) -> ssl.SSLContext:
        assert self.bundle is not None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(self.bundle.cert_file), str(self.bundle.key_file))
        return ctx

    @property
    def ca_bundle(self) -> bytes:
        """What the MutatingWebhookConfiguration should trust: the current CA, plus the
        one before it right after a CA rotation (so the switch never refuses a call)."""
        if self.previous_ca and self.previous_ca != self.ca_pem:
            return self.ca_pem + self.previous_ca
        return self.ca_pem

    def rotate(
        self,
        now: dt.datetime | None = None,
        renew_before: dt.timedelta = certs.RENEW_BEFORE,
        activate: bool = True,
    ) -> bool:
        """Issue new key material when due (within renew_before of its end). True if it
        changed. With activate=False the server keeps presenting the old certificate
        until `activate()`: publish `ca_bundle` first, then switch."""
        now = now or dt.datetime.now(dt.UTC)
        old = self.bundle
        self.bundle = certs.ensure(self.cert_dir, self.hosts, now, renew_before=renew_before)
        if old is not None and old.ca_pem != self.bundle.ca_pem:
            self.previous_ca = old.ca_pem
        changed = old is None or self.bundle.cert_pem != old.cert_pem
        if changed and activate:
            self.activate()
        return changed

    def activate(self) -> None:
        """Present the current certificate on new connections."""
        if self._ssl is None or self.bundle is None:
            return
        ctx, cert, key = self._ssl, str(self.bundle.cert_file), str(self.bundle.key_file)
        loop = self._loop
        if loop is None or self._thread is None:
            ctx.load_cert_chain(cert, key)
            return
        # Served from its own thread: switch there, between two handshakes.
        done: concurrent.futures.Future[None] = concurrent.futures.Future()

        def switch() -> None:
            try:
                ctx.load_cert_chain(cert, key)
                done.set_result(None)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                done.set_exception(exc)

        loop.call_soon_threadsafe(switch)
        done.result(timeout=10)

    def load_files(self, cert: str | Path, key: str | Path) -> None:
        """Present the certificate in these files on new connections (kept-alive ones go
        on); for a server started with `files` and served from the caller's loop."""
        assert self._ssl is not None, "start() first"
        self._ssl.load_cert_chain(str(cert), str(key))

    def answer(self, raw: bytes) -> tuple[int, bytes]:
        """An AdmissionReview request body -> (HTTP status, body)."""
        self.requests += 1
        t0 = time.perf_counter()
        metrics = webhook_metrics.process_metrics()
        if not self.ready:  # no team table yet: fail (the API server refuses the pod)
            metrics.observe("unknown", time.perf_counter() - t0, "no-team-table")
            return 503, b"the webhook has no team table yet"
        try:
            body = orjson.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            metrics.observe("unknown", time.perf_counter() - t0, "bad-review")
            return 400, f"bad AdmissionReview: {exc}".encode()
        out, refused = _review(body, self.lookup)
        if not out["response"]["allowed"]:
            self.denied += 1
        op = (body.get("request") or {}).get("operation")
        op = op if op in ("CREATE", "UPDATE", "DELETE", "CONNECT") else "unknown"
        metrics.observe(op, time.perf_counter() - t0, refused)
        return 200, orjson.dumps(out)

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        if self.sock is not None:
            self._server = await loop.create_server(
                lambda: _HTTPServer(self), sock=self.sock, ssl=self._ssl
            )
        else:
            self._server = await loop.create_server(
                lambda: _HTTPServer(self), self.host, self.port, ssl=self._ssl
            )
        if self.port == 0 and self._server.sockets:
            self.port = int(self._server.sockets[0].getsockname()[1])

    async def start(self, thread: bool = False, files: tuple[Path, Path] | None = None) -> str:
        """Serve; the URL. With thread=True the server runs in a thread of its own with
        its own event loop, so the caller's event loop (the API server's) never waits
        behind the webhook's TLS and request handling, nor the webhook behind the
        caller's work. With `files` (certificate, key) it serves those and issues
        nothing (key material kept by another process; see webhook_proc.py)."""
        if files is None:
            self.rotate()
            self._ssl = self._context()
        else:
            self._ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self._ssl.load_cert_chain(str(files[0]), str(files[1]))
        if not thread:
            await self._serve()
        else:
            ready: concurrent.futures.Future[None] = concurrent.futures.Future()
            self._thread = threading.Thread(
                target=self._thread_main, args=(ready,), name="gpuyard-teams-webhook", daemon=True
            )
            self._thread.start()
            try:
                await asyncio.wrap_future(ready)
            except BaseException:
                await asyncio.to_thread(self._thread.join, 10)
                self._thread = None
                raise
        log.info("team webhook listening on %s%s", self.url, " (own thread)" if thread else "")
        return self.url

    def _thread_main(self, ready: concurrent.futures.Future[None]) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        self._quit = quit_ = asyncio.Event()

        async def main() -> None:
            try:
                await self._serve()
            except BaseException as exc:  # noqa: BLE001 - handed to start()
                ready.set_exception(exc)
                await self._cleanup()
                return
            ready.set_result(None)
            await quit_.wait()
            await self._cleanup()

        try:
            loop.run_until_complete(main())
        finally:
            self._loop = None
            loop.close()

    async def _cleanup(self) -> None:
        if self._server is not None:
            self._server.close()
            for conn in list(self._conns):
                conn.close()
            await self._server.wait_closed()
            self._server = None

    async def stop(self) -> None:
        thread, loop = self._thread, self._loop
        if thread is not None:
            if loop is not None and self._quit is not None:
                with contextlib.suppress(RuntimeError):  # loop already closed
                    loop.call_soon_threadsafe(self._quit.set)
            await asyncio.to_thread(thread.join, 10)
            self._thread = None
            return
        await self._cleanup()


MAX_REQUEST_BYTES = 16 << 20
IDLE_CLOSE_S = 90.0  # kept-alive connections idle this long are closed
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    411: "Length Required",
    413: "Content Too Large",
    503: "Service Unavailable",
}


class _HTTPServer(asyncio.Protocol):
    """One HTTPS connection to the webhook: HTTP/1.1 with keep-alive, requests answered
    in order as they arrive (bodies by Content-Length; a chunked body is refused with
    411, as API servers send the length). Small on purpose: at hundreds of admissions a
    second the webhook's CPU per request is what its latency depends on."""

    def __init__(self, server: WebhookServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.idle: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # (uvloop's are not subclasses)
        self.server._conns.add(self)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server._conns.discard(self)
        if self.idle is not None:
            self.idle.cancel()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _arm(self) -> None:
        if self.idle is not None:
            self.idle.cancel()
        self.idle = asyncio.get_running_loop().call_later(IDLE_CLOSE_S, self.close)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self._arm()
        while self.transport is not None and not self.transport.is_closing():
            if not self._one():
                return

    def _send(self, status: int, body: bytes, ctype: str, close: bool) -> None:
        assert self.transport is not None
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\n"
            f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
        )
        if close:
            head += "Connection: close\r\n"
        self.transport.write(head.encode() + b"\r\n" + body)
        if close:
            self.transport.close()

    def _one(self) -> bool:
        """Answer the first complete request in the buffer; False when there is none."""
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buf) > 65536:
                self._send(400, b"request head too large", "text/plain", True)
            return False
        lines = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            self._send(400, b"malformed request line", "text/plain", True)
            return False
        method, target, version = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        conn = headers.get("connection", "").lower()
        close = conn == "close" if version == "HTTP/1.1" else conn != "keep-alive"
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self._send(411, b"a Content-Length is required", "text/plain", True)
            return False
        try:
            n = int(headers.get("content-length") or 0)
            if n < 0:
                raise ValueError
        except ValueError:
            self._send(400, b"bad Content-Length", "text/plain", True)
            return False
        if n > MAX_REQUEST_BYTES:
            self._send(413, b"request body too large", "text/plain", True)
            return False
        if len(self.buf) < end + 4 + n:
            return False
        body = bytes(self.buf[end + 4 : end + 4 + n])
        del self.buf[: end + 4 + n]
        path = target.split("?", 1)[0]
        if path == PATH:
            if method != "POST":
                self._send(405, b"POST an AdmissionReview", "text/plain", close)
            else:
                status, out = self.server.answer(body)
                ctype = "application/json" if status == 200 else "text/plain"
                self._send(status, out, ctype, close)
        elif path == "/healthz" and method == "GET":
            self._send(200, b"ok", "text/plain", close)
        elif path == "/readyz" and method == "GET":
            ok = self.server.ready
            self._send(
                200 if ok else 503, b"ok" if ok else b"no team table yet", "text/plain", close
            )
        else:
            self._send(404, b"not found", "text/plain", close)
        return True
