"""Flow control for the API server's HTTP side: how many connections it holds, how
long a connection may take to say what it wants, and how many requests run at once
(API Priority and Fairness in spirit).

- `Listener` accepts connections itself (a non-blocking listening socket read by the
  event loop) and hands each one to aiohttp's low-level HTTP protocol. It counts every
  connection from the moment it is accepted, TLS handshake included, and holds at
  most `FlowLimits.max_connections` of them, a cap kept below the process file limit
  (see `raise_file_limit` and `connection_cap`) so that the store, watches and
  outbound webhook calls always find a descriptor. A connection accepted at the cap
  takes the place of the oldest connection that has not yet made an authenticated
  request; when every connection has, the new one is closed at once. A connection
  is closed when its TLS handshake takes longer than `handshake_timeout`, when the
  head of a request (request line and headers) takes longer than `header_timeout`
  from its first byte, when it has made no authenticated request and stays idle
  for `unauth_idle_timeout`, and after `keepalive_timeout` idle between requests. A
  request whose body takes longer than `body_timeout` to arrive whole is answered 408
  and its connection closed (a slow body would hold a request slot).
- `FlowControl` bounds requests in flight: read-only and mutating requests have
  separate totals (as kube-apiserver's --max-requests-inflight and
  --max-mutating-requests-inflight), each client has its own bound, and a request
  that finds no room waits in a short queue (at most `queue_wait` seconds; queues
  are served round-robin across clients). Beyond the queue the answer is 429 with a
  Retry-After header and a Status carrying details.retryAfterSeconds, as
  kube-apiserver sends. Long-running requests (watches, exec, attach, port-forward,
  proxy, log) are not counted.

A client is the program named first in its User-Agent: everyone holding the server's
single token is the same user, so the agent is what tells components apart.
Both parts report to /metrics through `FlowCollector`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import logging
import resource
import socket
import ssl
import struct
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from gpuyard import cliargs

READ_ONLY = 0
MUTATING = 1
KIND_NAMES = ("readOnly", "mutating")
MUTATING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
log = logging.getLogger("gpuyard.apiserver")

LONG_RUNNING_SUBRESOURCES = frozenset({"exec", "attach", "portforward", "proxy", "log"})
MAX_DEFAULT_CONNECTIONS = 65_536
TOO_MANY = "Too many requests, please try again later."


@dataclass
class FlowLimits:
    """Every limit of `Listener` and `FlowControl`; `check()` refuses nonsense."""

    max_connections: int | None = None  # None: below the file limit (connection_cap)
    handshake_timeout: float = 10.0
    header_timeout: float = 10.0
    unauth_idle_timeout: float = 10.0
    keepalive_timeout: float = 75.0
    body_timeout: float = 60.0
    max_requests_inflight: int = 400
    max_mutating_requests_inflight: int = 200
    max_client_requests_inflight: int = 100
    max_queued_requests: int = 200  # per kind (read-only, mutating)
    max_client_queued_requests: int = 50
    queue_wait: float = 2.0
    retry_after: int = 1

    def check(self) -> FlowLimits:
        """Raise ValueError naming the first limit that is not a sane value."""
        for name in (
            "max_requests_inflight",
            "max_mutating_requests_inflight",
            "max_client_requests_inflight",
            "retry_after",
        ):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a whole number of at least 1, not {v!r}")
        for name in ("max_queued_requests", "max_client_queued_requests"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"{name} must be a whole number of at least 0, not {v!r}")
        if self.max_connections is not None and (
            not isinstance(self.max_connections, int) or self.max_connections < 1
        ):
            raise ValueError(f"max_connections must be at least 1, not {self.max_connections!r}")
        for name in (
            "handshake_timeout",
            "header_timeout",
            "unauth_idle_timeout",
            "keepalive_timeout",
            "body_timeout",
            "queue_wait",
        ):
            v = getattr(self, name)
            if not isinstance(v, int | float) or not (0 < v <= 86_400):
                raise ValueError(f"{name} must be a number of seconds in (0, 86400], not {v!r}")
        return self


# ---------------------------------------------------------------------- file limit


def raise_file_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit; returns the soft
    limit in force afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:
        target = 1 << 20
        with contextlib.suppress(OSError, ValueError):
            with open("/proc/sys/fs/nr_open") as f:
                target = int(f.read())
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(OSError, ValueError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return 1 << 20 if soft == resource.RLIM_INFINITY else int(soft)


def fd_reserve(file_limit: int) -> int:
    """Descriptors kept out of the connection cap: the store's files, webhook
    connections, logs and whatever else the process opens besides client sockets."""
    return min(max(128, file_limit // 16), 2048)


def connection_cap(file_limit: int) -> int:
    return max(1, min(file_limit - fd_reserve(file_limit), MAX_DEFAULT_CONNECTIONS))


# ---------------------------------------------------------------------- connections


class _Conn:
    """One accepted connection: its handshake task until aiohttp's protocol has it."""

    __slots__ = ("listener", "task", "handler", "open", "authed", "head_t", "last")

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.task: asyncio.Task[Any] | None = None
        self.handler: _Handler | None = None
        self.open = True
        self.authed = False
        self.head_t = 0.0  # when the first byte of a request head arrived; 0: none pending
        self.last = 0.0  # when it connected or last finished a request

    def abort(self) -> None:
        h = self.handler
        if h is not None:
            t = h.transport
            if t is not None:
                t.abort()
            else:
                self.listener.forget(self)
        elif self.task is not None:
            self.task.cancel()  # in the TLS handshake: the transport is aborted
        else:
            self.listener.forget(self)


class _Handler(RequestHandler):
    """aiohttp's HTTP/1.1 protocol, telling the listener when request heads start
    and when the connection is gone."""

    __slots__ = ("_conn",)
    _conn: _Conn

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        c = self._conn
        c.handler = self
        c.last = self._loop.time()
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        c = self._conn
        if not c.head_t and not self._request_in_progress:
            c.head_t = self._loop.time()
        super().data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        try:
            super().connection_lost(exc)
        finally:
            self._conn.listener.forget(self._conn)


def _bound(family: int, type_: int, proto: int, addr: Any, backlog: int) -> socket.socket:
    sock = socket.socket(family, type_, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(addr)
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _show(addr: Any) -> str:
    return f"[{addr[0]}]:{addr[1]}" if ":" in str(addr[0]) else f"{addr[0]}:{addr[1]}"


class Listener:
    """The API server's listening socket and every connection it accepted."""

    def __init__(
        self,
        handler: Callable[[web.BaseRequest], Any],
        limits: FlowLimits,
        *,
        ssl_context: ssl.SSLContext | None = None,
        client_max_size: int = 1024**2,
        max_connections: int | None = None,
    ) -> None:
        self.limits = limits
        self.ssl_context = ssl_context
        self.client_max_size = client_max_size
        self.max_connections = max_connections or limits.max_connections or 1024
        self._socks: list[socket.socket] = []  # one per address the host resolves to
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: web.Server | None = None
        self._handler = handler
        self._kwargs: dict[str, Any] = {
            "access_log": None,
            "keepalive_timeout": limits.keepalive_timeout,
        }
        self.conns: set[_Conn] = set()
        self.unauth: dict[_Conn, None] = {}  # never authenticated, oldest first
        self.closed: dict[str, int] = {}  # connections closed by the listener, by reason
        self.accepted = 0
        self._sweeper: asyncio.Task[None] | None = None
        self._paused: asyncio.TimerHandle | None = None

    # ---------------------------------------------------------------- life cycle

    async def start(self, host: str, port: int, backlog: int = 4096) -> int:
        """Bind and listen on every address `host` resolves to; returns the port.

        With port 0 the first socket picks the port and the others take the same
        one. An address that cannot be bound is skipped with a logged reason; if
        none binds, the last error is raised naming every address tried."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        if not infos:
            raise OSError(f"cannot resolve {host!r}")
        seen: set[tuple[int, object]] = set()
        failures: list[str] = []
        last: OSError | None = None
        for family, type_, proto, _, addr in infos:
            if (family, addr[0]) in seen:
                continue
            seen.add((family, addr[0]))
            if port == 0 and self._socks:
                addr = (addr[0], self._socks[0].getsockname()[1], *addr[2:])
            try:
                sock = _bound(family, type_, proto, addr, backlog)
            except OSError as e:
                last = e
                failures.append(f"{_show(addr)}: {e.strerror or e}")
                log.warning("cannot listen on %s (skipped): %s", _show(addr), e.strerror or e)
                continue
            self._socks.append(sock)
        if not self._socks:
            raise OSError(
                last.errno if last else errno.EADDRNOTAVAIL,
                f"cannot listen on any address of {host!r}: " + "; ".join(failures),
            )
        self._server = web.Server(
            self._handler,
            request_factory=self._make_request,
            handler_cancellation=True,
            **self._kwargs,
        )
        self._watch()
        self._sweeper = loop.create_task(self._sweep())
        return int(self._socks[0].getsockname()[1])

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """(address, port) of each listening socket."""
        return [tuple(s.getsockname()[:2]) for s in self._socks]  # type: ignore[misc]

    def _watch(self) -> None:
        assert self._loop is not None
        for sock in self._socks:
            self._loop.add_reader(sock.fileno(), self._on_readable, sock)

    def _unwatch(self) -> None:
        assert self._loop is not None
        for sock in self._socks:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(sock.fileno())

    async def close(self) -> None:
        """Stop accepting, let running requests end for a moment, abort the rest."""
        loop = self._loop
        if self._socks and loop is not None:
            self._unwatch()
            for sock in self._socks:
                sock.close()
            self._socks = []
        if self._paused is not None:
            self._paused.cancel()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._sweeper
            self._sweeper = None
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.shutdown(1.0), 5)
        for c in list(self.conns):
            c.abort()
        if self.conns:
            await asyncio.sleep(0)

    # ---------------------------------------------------------------- accepting

    def _make_request(
        self, message: Any, payload: Any, protocol: Any, writer: Any, task: Any
    ) -> Any:
        assert self._loop is not None
        return web.BaseRequest(
            message,
            payload,
            protocol,
            writer,
            task,
            self._loop,
            client_max_size=self.client_max_size,
        )

    def _new_handler(self, conn: _Conn) -> _Handler:
        assert self._server is not None and self._loop is not None
        h = _Handler(self._server, loop=self._loop, **self._kwargs)
        h._conn = conn
        return h

    def _on_readable(self, sock: socket.socket) -> None:
        if sock not in self._socks or self._paused is not None:
            return
        for _ in range(256):
            try:
                conn, _addr = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # Out of descriptors despite the reserve (something else holds
                    # them): free one unauthenticated connection if there is one,
                    # else stop accepting for a moment.
                    self._count("fd-exhausted")
                    if not self._evict():
                        self._pause(0.05)
                        return
                    continue
                continue  # ECONNABORTED and the like: that connection is gone
            self._admit(conn)

    def _pause(self, seconds: float) -> None:
        loop = self._loop
        if loop is None or not self._socks or self._paused is not None:
            return
        self._unwatch()  # every socket: the shortage is the process's, not one address's

        def resume() -> None:
            self._paused = None
            if self._socks:
                self._watch()

        self._paused = loop.call_later(seconds, resume)

    def _admit(self, sock: socket.socket) -> None:
        if len(self.conns) >= self.max_connections and not self._evict():
            self._count("connection-limit")
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
            return
        assert self._loop is not None
        sock.setblocking(False)
        c = _Conn(self)
        c.last = self._loop.time()
        self.conns.add(c)
        self.unauth[c] = None
        self.accepted += 1
        c.task = self._loop.create_task(self._connect(c, sock))

    async def _connect(self, c: _Conn, sock: socket.socket) -> None:
        assert self._loop is not None
        try:
            if self.ssl_context is not None:
                await self._loop.connect_accepted_socket(
                    lambda: self._new_handler(c),
                    sock,
                    ssl=self.ssl_context,
                    ssl_handshake_timeout=self.limits.handshake_timeout,
                )
            else:
                await self._loop.connect_accepted_socket(lambda: self._new_handler(c), sock)
        except BaseException as exc:  # a failed or timed-out handshake, an eviction
            if not isinstance(exc, asyncio.CancelledError) and c.handler is None:
                self._count("handshake-failed")
            self.forget(c)
            with contextlib.suppress(OSError):
                sock.close()
        finally:
            c.task = None

    def _evict(self) -> bool:
        """Close the oldest connection that never made an authenticated request."""
        for c in self.unauth:
            self._count("evicted")
            c.abort()
            self.forget(c)  # its descriptor is freed when the loop next runs
            return True
        return False

    def forget(self, c: _Conn) -> None:
        if c.open:
            c.open = False
            self.conns.discard(c)
            self.unauth.pop(c, None)

    def _count(self, reason: str) -> None:
        self.closed[reason] = self.closed.get(reason, 0) + 1

    def closing(self, reason: str) -> None:
        """The request handler closes a connection for `reason` (counted in metrics)."""
        self._count(reason)

    # ---------------------------------------------------------------- requests

    def request_started(self, protocol: Any, authed: bool) -> None:
        """The head of a request arrived whole (called by the request handler)."""
        c = getattr(protocol, "_conn", None)
        if c is None:
            return
        c.head_t = 0.0
        if authed and not c.authed:
            c.authed = True
            self.unauth.pop(c, None)

    def request_done(self, protocol: Any) -> None:
        c = getattr(protocol, "_conn", None)
        if c is not None and self._loop is not None:
            c.last = self._loop.time()

    async def _sweep(self) -> None:
        lim = self.limits
        tick = min(1.0, max(0.05, min(lim.header_timeout, lim.unauth_idle_timeout) / 4))
        assert self._loop is not None
        while True:
            await asyncio.sleep(tick)
            now = self._loop.time()
            for c in list(self.conns):
                h = c.handler
                if h is None:
                    continue  # in its TLS handshake: handshake_timeout applies
                if c.head_t and now - c.head_t > lim.header_timeout:
                    self._count("header-timeout")
                    c.abort()
                elif (
                    not c.authed
                    and not c.head_t
                    and not h._request_in_progress
                    and now - c.last > lim.unauth_idle_timeout
                ):
                    self._count("idle-timeout")
                    c.abort()

    def stats(self) -> dict[str, int]:
        handshaking = sum(1 for c in self.conns if c.handler is None)
        return {
            "open": len(self.conns),
            "handshaking": handshaking,
            "unauthenticated": len(self.unauth),
        }


# ---------------------------------------------------------------------- requests


def request_kind(method: str) -> int:
    return MUTATING if method in MUTATING_METHODS else READ_ONLY


def is_long_running(method: str, path: str, query: Mapping[str, str]) -> bool:
    """Watches and exec-like requests: they are not counted as in flight."""
    if method != "GET" and method != "POST":
        return False
    parts = path.split("/")
    # /api/v1/... has the rest at 3, /apis/group/version/... at 4
    if len(parts) < 4 or parts[0] != "" or parts[1] not in ("api", "apis"):
        return False
    rest = parts[3:] if parts[1] == "api" else parts[4:]
    if not rest:
        return False
    if method == "GET" and (rest[0] == "watch" or query.get("watch") in ("true", "1")):
        return True
    if len(rest) >= 3 and rest[0] == "namespaces":
        rest = rest[2:]
    return len(rest) >= 3 and rest[2] in LONG_RUNNING_SUBRESOURCES


def client_of(headers: Mapping[str, str]) -> str:
    """The client a request is counted against: its user agent's program name."""
    ua = headers.get("User-Agent", "")
    return ua.split("/", 1)[0].split(" ", 1)[0][:64] or "unknown"


class FlowControl:
    """Requests in flight, bounded per kind and per client, with a short fair queue."""

    def __init__(self, limits: FlowLimits) -> None:
        self.limits = limits
        self.limit = (limits.max_requests_inflight, limits.max_mutating_requests_inflight)
        self.inflight = [0, 0]
        self.client_inflight: dict[str, int] = {}
        self.queues: tuple[dict[str, deque[asyncio.Future[bool]]], ...] = ({}, {})
        self.queued = [0, 0]
        self.client_queued: dict[str, int] = {}
        self.waited = [0, 0]  # requests that had to queue (then ran or not)
        self.rejected: dict[tuple[int, str], int] = {}

    def try_enter(self, kind: int, client: str) -> bool:
        """Take a slot at once if there is room (nobody is then waiting who could
        use it: every release serves the queue first)."""
        n = self.client_inflight.get(client, 0)
        if self.inflight[kind] < self.limit[kind] and n < self.limits.max_client_requests_inflight:
            self.inflight[kind] += 1
            self.client_inflight[client] = n + 1
            return True
        return False

    async def enter(self, kind: int, client: str) -> str | None:
        """Take a slot, waiting in the queue if need be; None when admitted, else the
        reason of the refusal ("queue-full", "time-out")."""
        if self.try_enter(kind, client):
            return None
        lim = self.limits
        if (
            self.queued[kind] >= lim.max_queued_requests
            or self.client_queued.get(client, 0) >= lim.max_client_queued_requests
        ):
            return self._reject(kind, "queue-full")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bool] = loop.create_future()
        self.queues[kind].setdefault(client, deque()).append(fut)
        self.queued[kind] += 1
        self.client_queued[client] = self.client_queued.get(client, 0) + 1
        self.waited[kind] += 1
        timer = loop.call_later(lim.queue_wait, self._expire, kind, client, fut)
        try:
            granted = await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and fut.result():
                self.leave(kind, client)  # granted just as the client went away
            else:
                self._unqueue(kind, client, fut)
            raise
        finally:
            timer.cancel()
        return None if granted else self._reject(kind, "time-out")

    def leave(self, kind: int, client: str) -> None:
        self.inflight[kind] -= 1
        n = self.client_inflight.get(client, 1) - 1
        if n > 0:
            self.client_inflight[client] = n
        else:
            self.client_inflight.pop(client, None)
        if self.queued[0] or self.queued[1]:
            self._pump()

    def _reject(self, kind: int, reason: str) -> str:
        key = (kind, reason)
        self.rejected[key] = self.rejected.get(key, 0) + 1
        return reason

    def _unqueue(self, kind: int, client: str, fut: asyncio.Future[bool]) -> None:
        q = self.queues[kind].get(client)
        if q is None:
            return
        try:
            q.remove(fut)
        except ValueError:
            return
        if not q:
            del self.queues[kind][client]
        self.queued[kind] -= 1
        n = self.client_queued.get(client, 1) - 1
        if n > 0:
            self.client_queued[client] = n
        else:
            self.client_queued.pop(client, None)

    def _expire(self, kind: int, client: str, fut: asyncio.Future[bool]) -> None:
        if not fut.done():
            self._unqueue(kind, client, fut)
            fut.set_result(False)

    def _pump(self) -> None:
        """Hand free slots to waiting requests, one client after another."""
        per_client = self.limits.max_client_requests_inflight
        for kind in (READ_ONLY, MUTATING):
            qs = self.queues[kind]
            while qs and self.inflight[kind] < self.limit[kind]:
                client = next((c for c in qs if self.client_inflight.get(c, 0) < per_client), None)
                if client is None:
                    break
                q = qs.pop(client)
                fut = q.popleft()
                if q:
                    qs[client] = q  # to the back: round-robin across clients
                self.queued[kind] -= 1
                n = self.client_queued.get(client, 1) - 1
                if n > 0:
                    self.client_queued[client] = n
                else:
                    self.client_queued.pop(client, None)
                if fut.done():
                    continue
                self.inflight[kind] += 1
                self.client_inflight[client] = self.client_inflight.get(client, 0) + 1
                fut.set_result(True)


class FlowCollector:
    """/metrics gauges and counters of a `FlowControl` and its `Listener`."""

    def __init__(self, flow: FlowControl, listener: Callable[[], Listener | None]) -> None:
        self.flow = flow
        self.listener = listener

    def collect(self) -> list[Any]:
        f = self.flow
        inflight = GaugeMetricFamily(
            "apiserver_current_inflight_requests",
            "Requests being served, by kind (long-running requests not counted)",
            labels=["request_kind"],
        )
        inqueue = GaugeMetricFamily(
            "apiserver_flowcontrol_current_inqueue_requests",
            "Requests waiting for a slot, by kind",
            labels=["request_kind"],
        )
        limit = GaugeMetricFamily(
            "apiserver_flowcontrol_request_concurrency_limit",
            "Requests allowed in flight, by kind",
            labels=["request_kind"],
        )
        waited = CounterMetricFamily(
            "apiserver_flowcontrol_queued_requests",
            "Requests that had to wait in the queue, by kind",
            labels=["request_kind"],
        )
        rejected = CounterMetricFamily(
            "apiserver_flowcontrol_rejected_requests",
            "Requests refused with 429, by kind and reason",
            labels=["request_kind", "reason"],
        )
        for k, name in enumerate(KIND_NAMES):
            inflight.add_metric([name], f.inflight[k])
            inqueue.add_metric([name], f.queued[k])
            limit.add_metric([name], f.limit[k])
            waited.add_metric([name], f.waited[k])
            for reason in ("queue-full", "time-out"):
                rejected.add_metric([name, reason], f.rejected.get((k, reason), 0))
        out: list[Any] = [inflight, inqueue, limit, waited, rejected]
        lst = self.listener()
        if lst is not None:
            conns = GaugeMetricFamily(
                "gpuyard_apiserver_connections", "Open client connections", labels=["state"]
            )
            for state, n in lst.stats().items():
                conns.add_metric([state], n)
            cap = GaugeMetricFamily(
                "gpuyard_apiserver_connection_limit", "Most client connections held at once"
            )
            cap.add_metric([], lst.max_connections)
            accepted = CounterMetricFamily(
                "gpuyard_apiserver_connections_accepted", "Client connections accepted"
            )
            accepted.add_metric([], lst.accepted)
            closed = CounterMetricFamily(
                "gpuyard_apiserver_connections_closed",
                "Connections the server closed to protect itself, by reason",
                labels=["reason"],
            )
            for reason in (
                "connection-limit",
                "evicted",
                "header-timeout",
                "idle-timeout",
                "body-timeout",
                "handshake-failed",
                "fd-exhausted",
            ):
                closed.add_metric([reason], lst.closed.get(reason, 0))
            out += [conns, cap, accepted, closed]
        return out


# ---------------------------------------------------------------------- flags


# Flag values, typed and range-checked as every command's are (gpuyard.cliargs).
_COUNT = cliargs.COUNT
_NATURAL = cliargs.NATURAL
_SECONDS = cliargs.Float(gt=0, hi=86_400, what="a number of seconds")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flow-control flags of `gpuyard apiserver` and `gpuyard up`."""
    d = FlowLimits()
    g = parser.add_argument_group("flow control")
    g.add_argument(
        "--max-requests-inflight",
        type=_COUNT,
        metavar="N",
        default=d.max_requests_inflight,
        help="read-only requests served at once, watches not counted "
        f"(default {d.max_requests_inflight})",
    )
    g.add_argument(
        "--max-mutating-requests-inflight",
        type=_COUNT,
        metavar="N",
        default=d.max_mutating_requests_inflight,
        help=f"mutating requests served at once (default {d.max_mutating_requests_inflight})",
    )
    g.add_argument(
        "--max-client-requests-inflight",
        type=_COUNT,
        metavar="N",
        default=d.max_client_requests_inflight,
        help="requests one client (user agent) has served at once "
        f"(default {d.max_client_requests_inflight})",
    )
    g.add_argument(
        "--max-queued-requests",
        type=_NATURAL,
        metavar="N",
        default=d.max_queued_requests,
        help="requests of each kind waiting for a slot before the rest get 429 "
        f"(default {d.max_queued_requests}; per client {d.max_client_queued_requests})",
    )
    g.add_argument(
        "--queue-wait",
        type=_SECONDS,
        metavar="SECONDS",
        default=d.queue_wait,
        help=f"seconds a request may wait for a slot (default {d.queue_wait:g})",
    )
    g.add_argument(
        "--max-connections",
        type=_COUNT,
        metavar="N",
        default=None,
        help="client connections held at once (default: the file limit less a reserve)",
    )
    g.add_argument(
        "--request-header-timeout",
        type=_SECONDS,
        metavar="SECONDS",
        default=d.header_timeout,
        help=f"seconds to send a request's line and headers (default {d.header_timeout:g})",
    )
    g.add_argument(
        "--request-body-timeout",
        type=_SECONDS,
        metavar="SECONDS",
        default=d.body_timeout,
        help=f"seconds to send a request's body once its headers arrived (default "
        f"{d.body_timeout:g}; slower: 408 and the connection closed)",
    )
    g.add_argument(
        "--tls-handshake-timeout",
        type=_SECONDS,
        metavar="SECONDS",
        default=d.handshake_timeout,
        help=f"seconds to finish the TLS handshake (default {d.handshake_timeout:g})",
    )
    g.add_argument(
        "--unauthenticated-idle-timeout",
        type=_SECONDS,
        metavar="SECONDS",
        default=d.unauth_idle_timeout,
        help="seconds a connection that made no authenticated request may stay idle "
        f"(default {d.unauth_idle_timeout:g})",
    )
    g.add_argument(
        "--keepalive-timeout",
        type=_SECONDS,
        metavar="SECONDS",
        default=d.keepalive_timeout,
        help=f"seconds a connection may stay idle between requests (default "
        f"{d.keepalive_timeout:g})",
    )


def limits_from_args(args: argparse.Namespace) -> FlowLimits:
    return FlowLimits(
        max_connections=args.max_connections,
        handshake_timeout=args.tls_handshake_timeout,
        header_timeout=args.request_header_timeout,
        unauth_idle_timeout=args.unauthenticated_idle_timeout,
        keepalive_timeout=args.keepalive_timeout,
        body_timeout=args.request_body_timeout,
        max_requests_inflight=args.max_requests_inflight,
        max_mutating_requests_inflight=args.max_mutating_requests_inflight,
        max_client_requests_inflight=args.max_client_requests_inflight,
        max_queued_requests=args.max_queued_requests,
        max_client_queued_requests=min(args.max_queued_requests, 50),
        queue_wait=args.queue_wait,
    ).check()
