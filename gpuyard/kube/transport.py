"""How `Client` requests reach an API server: over HTTP (aiohttp, pooled keep-alive
connections) or in-process (calling the embedded server's `dispatch` without sockets).

A transport answers `request(...)` with a `RawResponse`: status, headers, and either
the whole body (`read()`) or a stream of JSON lines (`lines()`, for watches).
"""

from __future__ import annotations

import asyncio
import inspect
import ssl
from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

import aiohttp


class RawResponse(Protocol):
    status: int
    headers: Mapping[str, str]

    async def read(self) -> bytes: ...

    def lines(self) -> AsyncIterator[bytes]: ...

    async def close(self) -> None: ...


class Transport(Protocol):
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
    ) -> RawResponse: ...

    async def close(self) -> None: ...


async def split_lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Re-chunk a byte stream into lines (without the newline), in linear time and
    with no limit on line length (a watch event can carry a large object)."""
    pending: list[bytes] = []
    async for chunk in chunks:
        if not chunk:
            continue
        if b"\n" not in chunk:
            pending.append(chunk)
            continue
        parts = chunk.split(b"\n")
        if pending:
            pending.append(parts[0])
            parts[0] = b"".join(pending)
            pending = []
        tail = parts.pop()
        if tail:
            pending.append(tail)
        for line in parts:
            if line.strip():
                yield line
    rest = b"".join(pending)
    if rest.strip():
        yield rest


class _HttpResponse:
    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp
        self.status = resp.status
        self.headers: Mapping[str, str] = resp.headers

    async def read(self) -> bytes:
        try:
            return await self._resp.read()
        finally:
            self._resp.release()

    async def lines(self) -> AsyncIterator[bytes]:
        try:
            async for line in split_lines(self._resp.content.iter_any()):
                yield line.rstrip(b"\r")
        finally:
            self._resp.close()

    async def close(self) -> None:
        self._resp.close()


class HttpTransport:
    """aiohttp with one pooled session per event loop (connection reuse)."""

    def __init__(
        self,
        base_url: str,
        ssl_context: ssl.SSLContext | None = None,
        *,
        max_connections: int = 64,
        timeout: float = 30.0,
        proxy: str | None = None,
        server_hostname: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._ssl = ssl_context
        self._proxy: str | None = None
        self._proxy_headers: dict[str, str] | None = None
        if proxy is not None:
            from gpuyard.kube.proxy import proxy_parts

            host, port, auth = proxy_parts(proxy)
            self._proxy = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
            if auth:
                self._proxy_headers = {"Proxy-Authorization": auth}
        self._server_hostname = server_hostname
        self._closing: set[asyncio.Future[None]] = set()
        self._max_connections = max_connections
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.connections_opened = 0  # TCP(+TLS) connections made: shows connection reuse

    def set_ssl(self, ssl_context: ssl.SSLContext | None) -> None:
        """New TLS settings for new streams; open ones end (their informers relist)."""
        self._ssl = ssl_context
        old, self._session = self._session, None
        if old is not None and not old.closed:
            task = asyncio.ensure_future(old.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    def _get_session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections,
                ssl=self._ssl if self._ssl is not None else False,
                keepalive_timeout=60,
            )
            trace = aiohttp.TraceConfig()

            async def _opened(*_: Any) -> None:
                self.connections_opened += 1

            trace.on_connection_create_end.append(_opened)
            self._session = aiohttp.ClientSession(
                connector=connector,
                trace_configs=[trace],
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
                auto_decompress=True,
                skip_auto_headers=("User-Agent",),
            )
            self._loop = loop
        return self._session

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
        session = self._get_session()
        if stream:
            # A watch: no total limit; a read stall longer than the server-side
            # timeout plus a margin means the connection is dead.
            t = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=timeout)
        else:
            t = aiohttp.ClientTimeout(total=timeout or self._timeout, sock_connect=10)
        if self._proxy_headers and not self.base_url.startswith("https"):
            # Plain http: the request itself goes to the proxy, which reads its headers.
            headers = {**headers, **self._proxy_headers}
        resp = await session.request(
            method,
            self.base_url + path,
            params=query or None,
            headers=headers,
            data=body,
            timeout=t,
            proxy=self._proxy,
            proxy_headers=self._proxy_headers,
            server_hostname=self._server_hostname,
        )
        return _HttpResponse(resp)

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None


class _InProcessResponse:
    def __init__(self, status: int, headers: Mapping[str, str], body: Any) -> None:
        self.status = status
        self.headers = headers
        self._body = body

    async def read(self) -> bytes:
        body = self._body
        if body is None:
            return b""
        if isinstance(body, bytes | bytearray | memoryview):
            return bytes(body)
        if isinstance(body, str):
            return body.encode()
        parts = [bytes(c) async for c in body]
        return b"".join(parts)

    async def lines(self) -> AsyncIterator[bytes]:
        body = self._body
        if isinstance(body, bytes | bytearray | memoryview | str | type(None)):
            data = await self.read()
            for line in data.splitlines():
                if line.strip():
                    yield line
            return
        try:
            async for line in split_lines(_as_bytes(body)):
                yield line
        finally:
            await self.close()

    async def close(self) -> None:
        aclose = getattr(self._body, "aclose", None)
        if aclose is not None:
            res = aclose()
            if inspect.isawaitable(res):
                await res


async def _as_bytes(body: AsyncIterator[Any]) -> AsyncIterator[bytes]:
    async for chunk in body:
        yield chunk.encode() if isinstance(chunk, str) else bytes(chunk)


class InProcessTransport:
    """Calls `await server.dispatch(method, path, query, headers, body)` directly.

    The server answers an object with `status`, `headers` and `body` (bytes or an
    async iterator of bytes for watches)."""

    def __init__(self, server: Any, user: Any = None) -> None:
        self.server = server
        self.user = user  # an identity the server's own process vouches for, or None

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
        q: dict[str, str] = dict(query)
        if self.user is not None:
            resp = await self.server.dispatch(method, path, q, headers, body or b"", user=self.user)
        else:
            resp = await self.server.dispatch(method, path, q, headers, body or b"")
        return _InProcessResponse(
            int(resp.status), dict(getattr(resp, "headers", None) or {}), resp.body
        )

    async def close(self) -> None:
        return None
