"""The dashboard's HTTP server (aiohttp): the page and its modules, a JSON snapshot,
the live stream of changes as server-sent events, and one node's details.

    GET  /                    the page (static; it holds no cluster data)
    GET  /static/NAME         its modules and style sheet
    POST /api/session         Authorization: Bearer TOKEN -> a session cookie
    DELETE /api/session       sign out
    GET  /api/whoami          who the credential names
    GET  /api/snapshot        every row (nodes, jobs, teams, events, brake, network)
    GET  /api/events          text/event-stream: `snapshot`, then `delta` batches (gzipped,
                              flushed at each event, where the browser accepts gzip)
    GET  /api/nodes/NAME      a node's conditions, taints and pods
    GET  /metrics             the process's Prometheus metrics (`gpuyard dashboard` only)
    GET  /healthz             ok

Every /api path except POST /api/session takes the bearer token or the session cookie
and asks `gpuyard.dashboard.auth` whether it may look; it is read-only. A stream sends a
comment every `keepalive_s` and re-checks its credential then, so a revoked token's
stream ends too.

`own_loop=True` (what `gpuyard up` uses) serves from an event loop in a thread of its
own: the process's loop is kept busy by the simulated kubelets (at 7,500 nodes their
750 Lease writes a second and the node lifecycle's list of every Lease fill it), and a
browser's requests queued behind that work for most of a second each. With
`start_hub=True` (also `gpuyard up`'s) the hub runs there too, on views of the process's
watches fed across threads, so a change reaches the browser without queueing behind
that work more than once (see `gpuyard.dashboard.hub`). Otherwise the hub stays on its
informers' loop; the server reads its rows (replaced whole, never edited in place) and
takes node details over to that loop. Credential reviews go to the client's loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import gzip
import logging
import threading
import zlib
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from gpuyard.dashboard import assets
from gpuyard.dashboard.auth import Authority, Verdict, cert_subject
from gpuyard.dashboard.hub import Hub

log = logging.getLogger(__name__)

COOKIE = "gpuyard-dashboard"
STATIC = Path(str(resources.files("gpuyard.dashboard") / "static"))
GZIP_MIN_BYTES = 64 * 1024  # a snapshot this large goes gzipped where the client accepts it
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(data),
        status=status,
        content_type="application/json",
        headers=SECURITY_HEADERS,
    )


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


def _bearer(request: web.Request) -> str:
    h = request.headers.get("Authorization", "")
    scheme, _, value = h.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


class Dashboard:
    """The server around a started `Hub`. `url = await start()`, then `await stop()`."""

    def __init__(
        self,
        hub: Hub,
        authority: Authority,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        keepalive_s: float = 15.0,
        secure_cookie: bool = False,
        serve_metrics: bool = False,
        ssl_context: Any = None,
        own_loop: bool = False,
        start_hub: bool = False,
    ) -> None:
        self.hub = hub
        self.authority = authority
        self.host = host
        self.port = port
        self.keepalive_s = keepalive_s
        self.secure_cookie = secure_cookie
        # /metrics of the process (behind the same sign-in) where nothing else serves it
        self.serve_metrics = serve_metrics
        # TLS (and, when it asks for them, client certificates); its cookies Secure
        self.ssl_context = ssl_context
        if ssl_context is not None:
            self.secure_cookie = True
        self.url = ""
        # the page's files, read and compressed once (see gpuyard.dashboard.assets)
        self.assets = assets.load(STATIC)
        self._runner: web.AppRunner | None = None
        self._streams: set[asyncio.Task[Any]] = set()
        self.own_loop = own_loop
        # the hub is started (and stopped) with the server, on the server's loop
        self.start_hub = start_hub
        self._hub_loop: asyncio.AbstractEventLoop | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the server's, with own_loop
        self._thread: threading.Thread | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024)
        app.router.add_get("/", self.index)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/static/{name}", self.static)
        app.router.add_post("/api/session", self.login)
        app.router.add_delete("/api/session", self.logout)
        app.router.add_get("/api/whoami", self.whoami)
        app.router.add_get("/api/snapshot", self.snapshot)
        app.router.add_get("/api/events", self.events)
        app.router.add_get("/api/nodes/{name}", self.node)
        if self.serve_metrics:
            app.router.add_get("/metrics", self.metrics)
        return app

    async def start(self) -> str:
        self._hub_loop = asyncio.get_running_loop()
        if not self.own_loop:
            return await self._start_here()
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="dashboard", daemon=True)
        self._thread.start()
        try:
            return await asyncio.wrap_future(
                asyncio.run_coroutine_threadsafe(self._start_here(), loop)
            )
        except BaseException:
            self._end_thread()
            raise

    async def _start_here(self) -> str:
        from gpuyard.dashboard import metrics

        if self.start_hub:
            self._hub_loop = asyncio.get_running_loop()
            try:
                await self.hub.start()
            except BaseException:
                await self.hub.stop()
                raise

        metrics.track(authority=self.authority)
        # handler_cancellation: a browser that leaves ends its stream at once (its
        # queue goes with it), not at the next keepalive write
        self._runner = web.AppRunner(
            self.app(), access_log=None, handle_signals=False, handler_cancellation=True
        )
        await self._runner.setup()
        site = web.TCPSite(
            self._runner, self.host, self.port, shutdown_timeout=1.0, ssl_context=self.ssl_context
        )
        await site.start()
        server = site._server
        assert server is not None
        port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "https" if self.ssl_context is not None else "http"
        self.url = f"{scheme}://{host}:{port}/"
        return self.url

    async def stop(self) -> None:
        loop = self._loop
        if loop is None:
            await self._stop_here()
            return
        with contextlib.suppress(RuntimeError):  # its loop has already gone
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._stop_here(), loop))
        self._end_thread()

    async def _stop_here(self) -> None:
        for t in list(self._streams):
            t.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.start_hub:
            await self.hub.stop()

    def _end_thread(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        if not thread.is_alive():
            loop.close()

    async def _on_hub(self, fn: Callable[[], Any]) -> Any:
        """fn() on the hub's loop (its informers' caches change only there)."""
        loop = self._hub_loop
        if loop is None or loop is asyncio.get_running_loop():
            return fn()
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def call() -> None:
            try:
                fut.set_result(fn())
            except BaseException as exc:
                fut.set_exception(exc)

        loop.call_soon_threadsafe(call)
        return await asyncio.wrap_future(fut)

    # ------------------------------------------------------------ credentials

    def _token(self, request: web.Request) -> str:
        return _bearer(request) or self.authority.session_token(request.cookies.get(COOKIE, ""))

    async def _allowed(self, request: web.Request) -> Verdict:
        token = self._token(request)
        who = None
        if not token and request.transport is not None:
            who = cert_subject(request.transport.get_extra_info("peercert"))
        try:
            if who is not None:
                return await self.authority.check_user(*who)
            return await self.authority.check(token)
        except Exception as exc:  # the API server could not answer
            log.warning("dashboard: cannot review a credential: %s", exc)
            return Verdict(False, status=503, message=f"cannot reach the API server: {exc}")

    # ------------------------------------------------------------ handlers

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def index(self, request: web.Request) -> web.Response:
        return self._file(request, "index.html")

    async def static(self, request: web.Request) -> web.Response:
        return self._file(request, request.match_info["name"])

    def _file(self, request: web.Request, name: str) -> web.Response:
        """A file of the page from memory: 304 where the browser's copy is current,
        gzip where it accepts it; cached for good where `?v=` names its digest."""
        asset = self.assets.get(name)
        if asset is None:
            return _error(404, f"no such file: {name}")
        versioned = request.query.get("v") == asset.version
        cache = assets.IMMUTABLE if versioned and name != "index.html" else assets.REVALIDATE
        gz = asset.gzipped is not None and assets.accepts_gzip(
            request.headers.get("Accept-Encoding", "")
        )
        headers = {
            **SECURITY_HEADERS,
            "Cache-Control": cache,
            "Vary": "Accept-Encoding",
            "ETag": asset.etag_gzip if gz else asset.etag,
        }
        inm = request.headers.get("If-None-Match")
        if inm is not None and assets.matches(inm, asset.etag, asset.etag_gzip):
            return web.Response(status=304, headers=headers)
        headers["Content-Type"] = asset.content_type
        if gz:
            assert asset.gzipped is not None
            headers["Content-Encoding"] = "gzip"
            return web.Response(body=asset.gzipped, headers=headers)
        return web.Response(body=asset.body, headers=headers)

    async def login(self, request: web.Request) -> web.Response:
        token = _bearer(request)
        if not token:
            return _error(401, "send the token as 'Authorization: Bearer TOKEN'")
        v = await self._allowed(request)
        if not v.ok:
            return _error(v.status, v.message)
        resp = _json({"user": v.user, "groups": list(v.groups)})
        resp.set_cookie(
            COOKIE,
            self.authority.new_session(token),
            httponly=True,
            samesite="Strict",
            secure=self.secure_cookie,
            path="/",
            max_age=int(self.authority.session_s),
        )
        return resp

    async def logout(self, request: web.Request) -> web.Response:
        self.authority.end_session(request.cookies.get(COOKIE, ""))
        resp = _json({"signedOut": True})
        resp.del_cookie(COOKIE, path="/")
        return resp

    async def whoami(self, request: web.Request) -> web.Response:
        v = await self._allowed(request)
        if not v.ok:
            return _error(v.status, v.message)
        return _json({"user": v.user, "groups": list(v.groups)})

    async def snapshot(self, request: web.Request) -> web.Response:
        v = await self._allowed(request)
        if not v.ok:
            return _error(v.status, v.message)
        body = orjson.dumps(self.hub.snapshot())
        headers = {
            **SECURITY_HEADERS,
            "Content-Type": "application/json",
            "Vary": "Accept-Encoding",
        }
        if len(body) >= GZIP_MIN_BYTES and assets.accepts_gzip(
            request.headers.get("Accept-Encoding", "")
        ):
            # 7,500 nodes: 0.94 MB, 65 kB at level 1 in 7 ms (off the event loop)
            loop = asyncio.get_running_loop()
            body = await loop.run_in_executor(
                None, functools.partial(gzip.compress, body, compresslevel=1, mtime=0)
            )
            headers["Content-Encoding"] = "gzip"
        return web.Response(body=body, headers=headers)

    async def node(self, request: web.Request) -> web.Response:
        v = await self._allowed(request)
        if not v.ok:
            return _error(v.status, v.message)
        name = request.match_info["name"]
        detail = await self._on_hub(lambda: self.hub.node_detail(name))
        if detail is None:
            return _error(404, f"no node named {name!r}")
        return _json(detail)

    async def metrics(self, request: web.Request) -> web.Response:
        v = await self._allowed(request)
        if not v.ok:
            return _error(v.status, v.message)
        from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

        from gpuyard.kube import metrics as kube_metrics

        kube_metrics.register_process(REGISTRY)
        return web.Response(
            body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def events(self, request: web.Request) -> web.StreamResponse:
        v = await self._allowed(request)
        if not v.ok:
            return _error(v.status, v.message)
        headers = {
            **SECURITY_HEADERS,
            "Content-Type": "text/event-stream",
            "X-Accel-Buffering": "no",  # a proxy passes each event on as it comes
            "Vary": "Accept-Encoding",
        }
        out = _Frames(assets.accepts_gzip(request.headers.get("Accept-Encoding", "")))
        if out.packer is not None:
            headers["Content-Encoding"] = "gzip"
        resp = web.StreamResponse(headers=headers)
        await resp.prepare(request)
        sub = self.hub.subscribe()
        task = asyncio.current_task()
        if task is not None:
            self._streams.add(task)
        try:
            await resp.write(out.pack(b"retry: 2000\n\n"))
            while not sub.closed:
                try:
                    if not sub.wake.is_set():  # (wait_for would make a task even then)
                        await asyncio.wait_for(sub.wake.wait(), self.keepalive_s)
                except TimeoutError:
                    if not (await self._allowed(request)).ok:
                        await resp.write(out.pack(b"event: unauthorized\ndata: {}\n\n"))
                        break
                    await resp.write(out.pack(b": keepalive\n\n"))
                    continue
                resync, delta = sub.take()
                if resync:
                    frame = b"event: snapshot\ndata: " + orjson.dumps(self.hub.snapshot())
                elif delta:
                    frame = b"event: delta\ndata: " + orjson.dumps(delta)
                else:
                    continue
                # waits while the browser is slow: its queue (at most one value per
                # row, see hub.Subscriber) holds what changes meanwhile
                await resp.write(out.pack(frame + b"\n\n"))
        except ConnectionResetError:
            pass
        finally:
            self.hub.unsubscribe(sub)
            if task is not None:
                self._streams.discard(task)
        with contextlib.suppress(ConnectionResetError, RuntimeError):
            tail = out.finish()
            if tail:
                await resp.write(tail)
            await resp.write_eof()
        return resp


class _Frames:
    """An event stream's bytes, gzipped where the browser accepts it: one deflate stream
    for the whole connection (each delta compresses against the rows before it), flushed
    at every event (Z_SYNC_FLUSH) so the browser decodes each one as it arrives. The
    first snapshot at 7,500 nodes: 938 kB, about 65 kB on the wire."""

    def __init__(self, gzipped: bool) -> None:
        # level 1: the snapshot in a few ms; memory about 256 KiB per open stream
        self.packer = zlib.compressobj(1, zlib.DEFLATED, 31) if gzipped else None

    def pack(self, frame: bytes) -> bytes:
        # on the event loop, a snapshot too (7,500 nodes: a few ms, as its orjson.dumps):
        # a hop to a thread and back costs a turn of the loop, which in a busy
        # `gpuyard up` takes longer than the compression
        p = self.packer
        if p is None:
            return frame
        return p.compress(frame) + p.flush(zlib.Z_SYNC_FLUSH)

    def finish(self) -> bytes:
        """The gzip trailer (nothing for a plain stream)."""
        if self.packer is None:
            return b""
        with contextlib.suppress(zlib.error):
            return self.packer.flush(zlib.Z_FINISH)
        return b""
