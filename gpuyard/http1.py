"""One kept-alive HTTP/1.1 client connection on an asyncio protocol, shared by the
Kubernetes client's unary requests (gpuyard.kube.fasthttp) and the API server's calls
to admission webhooks (gpuyard.apiserver.webhooks).

Both call it hundreds to thousands of times a second on a 2-core machine, where a
general-purpose client library's per-request machinery showed up as the client's main
cost in profiles of benchmarks/scheduler.py and benchmarks/teams.py. A request is one
pre-formatted write; the answer is read by Content-Length, chunked transfer encoding
(with trailers), or until the server closes; interim 1xx answers are skipped;
"Connection: close" and HTTP/1.0 end reuse. One request at a time per connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

_NO_BODY_STATUS = (204, 304)


class Malformed(ConnectionError):
    """The server's answer is not HTTP/1.1 this client can read, or is too large."""


class Incomplete(ConnectionError):
    """The connection closed before a whole answer arrived."""


class _TooLarge(ValueError):
    pass


_MAX_HEAD = 256 * 1024


class Answer:
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


class Connection(asyncio.Protocol):
    """One connection; parses one answer at a time. `max_body`: answers larger than
    this many bytes fail the request and close the connection (None: no limit)."""

    max_body: int | None = None

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.closed = False
        self.waiter: asyncio.Future[Answer] | None = None
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
        limit = self.body_limit()
        if limit is not None and len(self.buf) > limit + (0 if self.status else _MAX_HEAD):
            self._fail(Malformed(f"the answer is larger than {limit} bytes"))
            return
        if self.waiter is not None and not self.waiter.done():
            try:
                ans = self._parse()
            except _TooLarge as exc:
                self._fail(Malformed(str(exc)))
                return
            except ValueError as exc:
                self._fail(Malformed(f"malformed HTTP answer: {exc}"))
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
                w.set_result(Answer(self.status, self.headers, body))
            else:
                w.set_exception(
                    Incomplete(f"connection closed before a full answer: {exc or 'EOF'}")
                )

    def _fail(self, exc: Exception) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)
        self.abort()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def _check_size(self, n: int) -> None:
        limit = self.body_limit()
        if limit is not None and n > limit:
            raise _TooLarge(f"the answer is larger than {limit} bytes")

    def body_limit(self) -> int | None:
        """The largest answer taken (None: no limit); `max_body` unless overridden."""
        return self.max_body

    def close(self) -> None:
        """Close gracefully (pending writes are flushed)."""
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    async def exchange(self, raw: bytes, head_request: bool = False) -> Answer:
        """Write one whole request and wait for its answer. ConnectionError when the
        connection breaks first (`got_bytes` then says whether anything came back)."""
        self.got_bytes = False
        if self.closed or self.transport is None or self.transport.is_closing():
            raise Incomplete("connection closed")
        fut: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self.waiter = fut
        self.head_request = head_request
        try:
            self.transport.write(raw)
            if self.buf:  # bytes that arrived early (should not happen): parse them
                ans = self._parse()
                if ans is not None:
                    return ans
            return await fut
        finally:
            self.waiter = None

    # -- parsing

    def _parse(self) -> Answer | None:
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
                self._check_size(self.length)
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

    def _parse_chunks(self) -> Answer | None:
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
            self._check_size(sum(len(p) for p in self.parts))
            pos = start + size + 2
        # Drop what was consumed so the buffer does not grow with a long answer.
        if pos:
            del buf[:pos]
            pos = 0
        self.pos = pos
        return None

    def _done(self, body: bytes) -> Answer:
        ans = Answer(self.status, self.headers, body)
        keep = self.keep_alive
        self._reset()
        self.keep_alive = keep
        return ans
