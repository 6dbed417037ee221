"""A lean HTTP/1.1 transport for `Client`: plain requests over kept-alive connections.

Every unary request a controller makes (a binding, a status patch, a get) costs the
client far less here than through aiohttp's general-purpose session (measured on a
pod binding against the embedded server: see benchmarks/scheduler.py): the request
is one pre-formatted write, the answer is read by `gpuyard.http1.Connection`, and
nothing else runs per request. Watches (long-lived streams) still go through
`HttpTransport`, which this wraps.

What it speaks: HTTP/1.1 over TCP or TLS (the kubeconfig's SSL context), answers with
Content-Length, chunked transfer encoding, or read-until-close; "Connection: close"
from the server is honoured. At most `max_connections` requests are in flight; idle
connections are kept for `idle_s` seconds, well under the keep-alive timeouts servers
use, so a request is not sent on a connection the server is about to drop. A request
whose connection breaks is retried on a fresh connection only when it is a GET (a write
may have reached the server); other failures raise `ConnectionError`, as the aiohttp
transport raises its own errors, and `Client` decides about retries.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from urllib.parse import quote, urlsplit

from gpuyard.http1 import Connection
from gpuyard.kube.proxy import open_tunnel, proxy_parts
from gpuyard.kube.transport import HttpTransport, RawResponse


class FastTransport:
    """Unary requests through `Connection`s; streams (watches) through aiohttp."""

    def __init__(
        self,
        base_url: str,
        ssl_context: ssl.SSLContext | None = None,
        *,
        max_connections: int = 64,
        timeout: float = 30.0,
        idle_s: float = 15.0,
        proxy: str | None = None,
        server_hostname: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        u = urlsplit(self.base_url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self._tls = u.scheme == "https"
        self._host = u.hostname
        self._port = u.port or (443 if self._tls else 80)
        self._prefix = u.path.rstrip("/")
        default_port = 443 if self._tls else 80
        host = f"[{self._host}]" if ":" in self._host else self._host
        self._host_header = host if self._port == default_port else f"{host}:{self._port}"
        self._ssl = ssl_context if self._tls else None
        if self._tls and self._ssl is None:
            self._ssl = ssl.create_default_context()
        self._timeout = timeout
        self._idle_s = idle_s
        self._max = max_connections
        self._idle: deque[Connection] = deque()
        self._sem: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fast_opened = 0
        self._proxy = proxy
        # Plain http through a proxy: requests in absolute form to the proxy itself (as
        # kubectl sends them); https: a CONNECT tunnel per connection.
        self._forward: tuple[str, int, str | None] | None = None
        if proxy is not None and not self._tls:
            self._forward = proxy_parts(proxy)
        self._server_hostname = server_hostname or self._host
        self.streams = HttpTransport(
            base_url,
            ssl_context,
            max_connections=max_connections,
            timeout=timeout,
            proxy=proxy,
            server_hostname=server_hostname,
        )

    def set_ssl(self, ssl_context: ssl.SSLContext | None) -> None:
        """New TLS settings (a renewed client certificate) for the next connections."""
        if not self._tls:
            return
        self._ssl = ssl_context or ssl.create_default_context()
        for c in self._idle:
            c.abort()
        self._idle.clear()
        self.streams.set_ssl(ssl_context)

    @property
    def connections_opened(self) -> int:
        return self._fast_opened + self.streams.connections_opened

    def _target(self, path: str, query: list[tuple[str, str]]) -> str:
        t = self._prefix + path
        if self._forward is not None:
            t = f"http://{self._host_header}{t}"
        if query:
            t += "?" + "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in query)
        return t

    def _bind_loop(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._sem is None:
            for c in self._idle:
                c.abort()
            self._idle.clear()
            self._loop = loop
            self._sem = asyncio.Semaphore(self._max)
        return self._sem

    async def _connect(self) -> Connection:
        loop = asyncio.get_running_loop()
        hostname = self._server_hostname if self._ssl is not None else None
        if self._forward is not None:
            _, conn = await loop.create_connection(Connection, self._forward[0], self._forward[1])
        elif self._proxy is not None:
            sock = await open_tunnel(self._proxy, self._host, self._port)
            _, conn = await loop.create_connection(
                Connection, sock=sock, ssl=self._ssl, server_hostname=hostname
            )
        else:
            _, conn = await loop.create_connection(
                Connection, self._host, self._port, ssl=self._ssl, server_hostname=hostname
            )
        self._fast_opened += 1
        return conn

    def _take_idle(self) -> Connection | None:
        now = time.monotonic()
        while self._idle:
            c = self._idle.pop()
            if not c.closed and now - c.last_used < self._idle_s:
                return c
            c.abort()
        return None

    async def request(
        self,
        method: str,
        path: str,
        query: list[tuple[str, str]],
        headers: dict[str, str],
        body: bytes | None,
        *,
        stream: bool = False,
        timeout: float | None = None,
    ) -> RawResponse:
        if stream:
            return await self.streams.request(
                method, path, query, headers, body, stream=True, timeout=timeout
            )
        lines = [f"{method} {self._target(path, query)} HTTP/1.1", f"Host: {self._host_header}"]
        for k, v in headers.items():
            if "\n" in v or "\r" in v or "\n" in k or "\r" in k:
                raise ValueError(f"bad header {k!r}")
            lines.append(f"{k}: {v}")
        if self._forward is not None and self._forward[2]:
            lines.append(f"Proxy-Authorization: {self._forward[2]}")
        data = body or b""
        if data or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(data)}")
        raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + data
        sem = self._bind_loop()
        async with sem:
            async with asyncio.timeout(timeout or self._timeout):
                while True:
                    conn = self._take_idle()
                    reused = conn is not None
                    if conn is None:
                        conn = await self._connect()
                    try:
                        ans = await conn.exchange(raw, head_request=method == "HEAD")
                    except ConnectionError:
                        conn.abort()
                        if reused and method == "GET" and not conn.got_bytes:
                            continue  # a kept-alive connection the server had closed
                        raise
                    except BaseException:
                        conn.abort()  # timeout or cancellation: the answer is unread
                        raise
                    if conn.keep_alive and not conn.closed and not conn.buf:
                        conn.last_used = time.monotonic()
                        self._idle.append(conn)
                    else:
                        conn.abort()
                    return ans

    async def close(self) -> None:
        while self._idle:
            c = self._idle.pop()
            if c.transport is not None:
                c.transport.close()
        await self.streams.close()
