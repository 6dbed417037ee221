"""A lean HTTP/1.1 transport for `Client`: plain requests over kept-alive connections.

Every unary request a controller makes (a binding, a status patch, a get) costs the
client far less here than through aiohttp's general-purpose session (measured on a
pod binding against the embedded server: see benchmarks/scheduler.py): the request
is one pre-formatted write, the answer is parsed by a small protocol object, and
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
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import quote, urlsplit

from gpuyard.kube.transport import HttpTransport, RawResponse

_NO_BODY_STATUS = (204, 304)
_MAX_HEAD = 256 * 1024


class _Answer:
    """A complete unary answer (`RawResponse` for `Client`)."""

    __slots__ = ("status", "headers", "_body")

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers: Mapping[str, str] = _Headers(headers)
        self._body = body

    async def read(self) -> bytes:
        return self._body

    async def lines(self) -> AsyncIterator[bytes]:
        for line in self._body.splitlines():
            if line.strip():
                yield line

    async def close(self) -> None:
        return None


class _Headers(dict[str, str]):
    """Header lookup by any capitalisation (names are stored in lower case)."""

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(key.lower(), default)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())


class _Conn(asyncio.Protocol):
    """One connection; parses one answer at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.closed = False
        self.waiter: asyncio.Future[_Answer] | None = None
        self.head_request = False
        self.last_used = 0.0
        self.got_bytes = False
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.mode = ""  # "", "length", "chunked", "close"
        self.length = 0
        self.pos = 0  # chunked: where parsing continues in buf
        self.parts: list[bytes] = []
        self.keep_alive = True

    # -- protocol callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        self.buf += data
        if self.waiter is not None and not self.waiter.done():
            try:
                ans = self._parse()
            except ValueError as exc:
                self._fail(ConnectionError(f"bad HTTP answer: {exc}"))
                return
            if ans is not None:
                self.waiter.set_result(ans)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        w = self.waiter
        if w is not None and not w.done():
            if self.mode == "close" and self.status:
                body = bytes(self.buf)
                self.buf.clear()
                w.set_result(_Answer(self.status, self.headers, body))
            else:
                w.set_exception(
                    ConnectionError(f"connection closed before a full answer: {exc or 'EOF'}")
                )

    def _fail(self, exc: Exception) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)
        self.abort()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    # -- parsing

    def _parse(self) -> _Answer | None:
        buf = self.buf
        if not self.status:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > _MAX_HEAD:
                    raise ValueError("header section too large")
                return None
            head = bytes(buf[:end]).decode("latin-1").split("\r\n")
            del buf[: end + 4]
            parts = head[0].split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
                raise ValueError(f"status line {head[0][:80]!r}")
            status = int(parts[1])
            headers: dict[str, str] = {}
            for line in head[1:]:
                k, sep, v = line.partition(":")
                if sep:
                    k = k.strip().lower()
                    v = v.strip()
                    headers[k] = f"{headers[k]}, {v}" if k in headers else v
            if 100 <= status < 200:
                return self._parse()  # an interim answer (100 Continue): skip it
            self.status = status
            self.headers = headers
            conn = headers.get("connection", "").lower()
            self.keep_alive = "close" not in conn and parts[0] != "HTTP/1.0"
            if self.head_request or status in _NO_BODY_STATUS:
                self.mode, self.length = "length", 0
            elif "chunked" in headers.get("transfer-encoding", "").lower():
                self.mode = "chunked"
            elif "content-length" in headers:
                self.mode, self.length = "length", int(headers["content-length"])
            else:
                self.mode = "close"
                self.keep_alive = False
        if self.mode == "length":
            if len(buf) < self.length:
                return None
            body = bytes(buf[: self.length])
            del buf[: self.length]
            return self._done(body)
        if self.mode == "chunked":
            return self._parse_chunks()
        return None  # read until close

    def _parse_chunks(self) -> _Answer | None:
        buf = self.buf
        pos = self.pos
        while True:
            nl = buf.find(b"\r\n", pos)
            if nl < 0:
                break
            size = int(bytes(buf[pos:nl]).split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                # Trailers (rare) end with an empty line.
                end = buf.find(b"\r\n\r\n", nl)
                if end < 0:
                    break
                body = b"".join(self.parts)
                del buf[: end + 4]
                self.pos = 0
                return self._done(body)
            start = nl + 2
            if len(buf) < start + size + 2:
                break
            self.parts.append(bytes(buf[start : start + size]))
            pos = start + size + 2
        # Drop what was consumed so the buffer does not grow with a long answer.
        if pos:
            del buf[:pos]
            pos = 0
        self.pos = pos
        return None

    def _done(self, body: bytes) -> _Answer:
        ans = _Answer(self.status, self.headers, body)
        keep = self.keep_alive
        self._reset()
        self.keep_alive = keep
        return ans


class FastTransport:
    """Unary requests through `_Conn`s; streams (watches) through aiohttp."""

    def __init__(
        self,
        base_url: str,
        ssl_context: ssl.SSLContext | None = None,
        *,
        max_connections: int = 64,
        timeout: float = 30.0,
        idle_s: float = 15.0,
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
        self._idle: deque[_Conn] = deque()
        self._sem: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fast_opened = 0
        self.streams = HttpTransport(
            base_url, ssl_context, max_connections=max_connections, timeout=timeout
        )

    @property
    def connections_opened(self) -> int:
        return self._fast_opened + self.streams.connections_opened

    def _target(self, path: str, query: list[tuple[str, str]]) -> str:
        t = self._prefix + path
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

    async def _connect(self) -> _Conn:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(
            _Conn,
            self._host,
            self._port,
            ssl=self._ssl,
            server_hostname=self._host if self._ssl is not None else None,
        )
        self._fast_opened += 1
        return conn

    def _take_idle(self) -> _Conn | None:
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
                        ans = await self._exchange(conn, method, raw)
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

    async def _exchange(self, conn: _Conn, method: str, raw: bytes) -> _Answer:
        if conn.closed or conn.transport is None:
            raise ConnectionError("connection closed")
        fut: asyncio.Future[_Answer] = asyncio.get_running_loop().create_future()
        conn.waiter = fut
        conn.got_bytes = False
        conn.head_request = method == "HEAD"
        try:
            conn.transport.write(raw)
            if conn.buf:  # bytes that arrived early (should not happen): parse them
                ans = conn._parse()
                if ans is not None:
                    return ans
            return await fut
        finally:
            conn.waiter = None

    async def close(self) -> None:
        while self._idle:
            c = self._idle.pop()
            if c.transport is not None:
                c.transport.close()
        await self.streams.close()
