"""The lean HTTP/1.1 transport the scheduler binds through (gpuyard.kube.fasthttp),
against a scripted socket server: the bytes it sends, answers framed every way HTTP/1.1
allows (split at every byte), connection reuse and its limits, and what happens when a
connection breaks (a GET is retried once, a POST never is)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from gpuyard.kube.fasthttp import FastTransport

Script = Callable[[bytes], list[bytes] | None]  # request bytes -> answer pieces, None: hang up


class Server:
    """Reads whole requests (head + Content-Length body) and answers from a script."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.requests: list[bytes] = []
        self.connections = 0
        self.close_after_answer = False
        self.server: asyncio.AbstractServer | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def _serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(w)
        try:
            while True:
                try:
                    head = await r.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                req = head + (await r.readexactly(length) if length else b"")
                self.requests.append(req)
                pieces = self.script(req)
                if pieces is None:
                    return  # hang up without answering
                for p in pieces:
                    w.write(p)
                    await w.drain()
                    await asyncio.sleep(0)
                if self.close_after_answer:
                    return
        finally:
            w.close()

    async def drop_idle(self) -> None:
        for w in self.writers:
            w.close()
        await asyncio.sleep(0.05)

    async def stop(self) -> None:
        assert self.server is not None
        for w in self.writers:
            w.close()
        self.server.close()
        await self.server.wait_closed()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Script], Any]]:
    started: list[tuple[Server, FastTransport]] = []

    async def make(script: Script) -> tuple[Server, FastTransport]:
        s = Server(script)
        url = await s.start()
        t = FastTransport(url, None, timeout=5)
        started.append((s, t))
        return s, t

    try:
        yield make
    finally:
        for s, t in started:
            await t.close()
            await s.stop()


def length_answer(body: bytes, status: str = "200 OK", extra: str = "") -> list[bytes]:
    return [
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{extra}"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    ]


async def test_request_bytes_and_kept_alive_connection(serve: Any) -> None:
    s, t = await serve(lambda req: length_answer(b'{"ok":true}'))
    body = b'{"kind":"Binding"}'
    for _ in range(3):
        resp = await t.request(
            "POST",
            "/api/v1/namespaces/default/pods/p-1/binding",
            [("fieldSelector", "spec.nodeName=n 1,a!=b")],
            {"Authorization": "Bearer tok", "Content-Type": "application/json"},
            body,
        )
        assert resp.status == 200
        assert await resp.read() == b'{"ok":true}'
    assert s.connections == 1 and t.connections_opened == 1  # reused, not reopened
    head, _, sent_body = s.requests[0].partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == (
        "POST /api/v1/namespaces/default/pods/p-1/binding"
        "?fieldSelector=spec.nodeName%3Dn%201%2Ca%21%3Db HTTP/1.1"
    )
    port = t.base_url.rsplit(":", 1)[1]
    assert f"Host: 127.0.0.1:{port}" in lines
    assert "Authorization: Bearer tok" in lines
    assert f"Content-Length: {len(body)}" in lines
    assert sent_body == body


async def test_chunked_answer_split_at_every_byte_with_trailer(serve: Any) -> None:
    payload = b'{"items":[' + b",".join(b'{"n":%d}' % i for i in range(300)) + b"]}"
    chunks = [payload[i : i + 97] for i in range(0, len(payload), 97)]
    wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nRetry-After: 3\r\n\r\n"
    for c in chunks:
        wire += b"%x; ext=1\r\n" % len(c) + c + b"\r\n"
    wire += b"0\r\nX-Trailer: yes\r\n\r\n"
    s, t = await serve(lambda req: [wire[i : i + 1] for i in range(len(wire))])
    resp = await t.request("GET", "/api/v1/pods", [], {}, None)
    assert await resp.read() == payload
    assert resp.headers.get("retry-after") == "3" and resp.headers.get("Retry-After") == "3"
    # The connection is clean after the trailer: the next request reuses it.
    resp = await t.request("GET", "/api/v1/pods", [], {}, None)
    assert await resp.read() == payload
    assert s.connections == 1


async def test_answer_read_until_close_and_connection_close(serve: Any) -> None:
    answers = iter(
        [
            [b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", b'{"a":', b"1}"],
            length_answer(b"{}", extra="Connection: close\r\n"),
            length_answer(b"{}"),
        ]
    )
    s, t = await serve(lambda req: next(answers))
    s.close_after_answer = True
    resp = await t.request("GET", "/x", [], {}, None)
    assert (resp.status, await resp.read()) == (200, b'{"a":1}')
    s.close_after_answer = False
    resp = await t.request("GET", "/x", [], {}, None)
    assert await resp.read() == b"{}"
    resp = await t.request("GET", "/x", [], {}, None)
    assert await resp.read() == b"{}"
    assert s.connections == 3  # each "close" answer cost its connection


async def test_error_status_and_no_body_answers(serve: Any) -> None:
    answers = iter(
        [
            length_answer(b'{"kind":"Status","code":409}', "409 Conflict"),
            [b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"],
            length_answer(b"{}"),
        ]
    )
    s, t = await serve(lambda req: next(answers))
    resp = await t.request("POST", "/x", [], {}, b"{}")
    assert resp.status == 409 and b"409" in await resp.read()
    resp = await t.request("DELETE", "/x", [], {}, None)
    assert (resp.status, await resp.read()) == (204, b"")
    resp = await t.request("GET", "/x", [], {}, None)
    assert (resp.status, await resp.read()) == (200, b"{}")
    assert s.connections == 1


async def test_get_retried_on_a_connection_the_server_dropped(serve: Any) -> None:
    s, t = await serve(lambda req: length_answer(b"{}"))
    await t.request("GET", "/x", [], {}, None)
    await s.drop_idle()  # the server closes the kept-alive connection
    resp = await t.request("GET", "/x", [], {}, None)
    assert resp.status == 200
    assert s.connections == 2


async def test_post_never_sent_twice_when_the_connection_breaks(serve: Any) -> None:
    s, t = await serve(
        lambda req: None if b"POST" in req.split(b" ", 1)[0] else length_answer(b"{}")
    )
    await t.request("GET", "/x", [], {}, None)  # leaves a kept-alive connection
    with pytest.raises(ConnectionError):
        await t.request("POST", "/bind", [], {}, b"{}")
    assert sum(1 for r in s.requests if r.startswith(b"POST")) == 1  # never resent
    # The broken connection is gone; the next request opens a new one.
    resp = await t.request("GET", "/x", [], {}, None)
    assert resp.status == 200


async def test_timeout_drops_the_connection(serve: Any) -> None:
    def script(req: bytes) -> list[bytes] | None:
        if b"/slow" in req:
            return []  # never answers (connection stays open)
        return length_answer(b"{}")

    s, t = await serve(script)
    with pytest.raises(TimeoutError):
        await t.request("GET", "/slow", [], {}, None, timeout=0.2)
    resp = await t.request("GET", "/fast", [], {}, None)
    assert resp.status == 200
    assert s.connections == 2  # the timed-out connection was not reused


async def test_at_most_max_connections_in_flight(serve: Any) -> None:
    s, t = await serve(lambda req: length_answer(b"{}"))
    t._max = 4  # before first use: the limit is bound to the loop then
    results = await asyncio.gather(*(t.request("GET", f"/x{i}", [], {}, None) for i in range(40)))
    assert all(r.status == 200 for r in results)
    assert 1 <= s.connections <= 4
