"""Flow control (flow.py): in-flight bounds, the fair queue, long-running requests,
header and idle timeouts, flags, and what /metrics says about them."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator

import aiohttp
import pytest

from gpuyard.apiserver.flow import (
    MUTATING,
    READ_ONLY,
    FlowControl,
    FlowLimits,
    client_of,
    is_long_running,
)
from gpuyard.apiserver.server import APIServer
from gpuyard.cli import main as gpuyard_main


def limits(**kw: object) -> FlowLimits:
    base: dict[str, object] = {
        "max_requests_inflight": 2,
        "max_mutating_requests_inflight": 2,
        "max_client_requests_inflight": 2,
        "max_queued_requests": 4,
        "max_client_queued_requests": 2,
        "queue_wait": 5.0,
    }
    base.update(kw)
    return FlowLimits(**base).check()  # type: ignore[arg-type]


async def test_bounds_per_kind_and_per_client_then_queue_then_refuse() -> None:
    f = FlowControl(limits())
    assert f.try_enter(MUTATING, "a") and f.try_enter(MUTATING, "a")
    assert not f.try_enter(MUTATING, "a")  # a's own bound
    assert f.try_enter(READ_ONLY, "b")  # another kind, another client: room
    w1 = asyncio.create_task(f.enter(MUTATING, "a"))
    w2 = asyncio.create_task(f.enter(MUTATING, "a"))
    await asyncio.sleep(0)
    assert f.queued[MUTATING] == 2
    assert await f.enter(MUTATING, "a") == "queue-full"  # a's queue is full
    f.leave(MUTATING, "a")
    assert await w1 is None  # served in order
    assert not w2.done()
    f.leave(MUTATING, "a")
    assert await w2 is None
    assert f.inflight == [1, 2] and f.queued == [0, 0]
    assert f.rejected == {(MUTATING, "queue-full"): 1}


async def test_the_queue_is_served_round_robin_across_clients() -> None:
    f = FlowControl(limits(max_mutating_requests_inflight=1, max_client_queued_requests=4))
    assert f.try_enter(MUTATING, "x")
    order: list[str] = []

    async def req(client: str) -> None:
        assert await f.enter(MUTATING, client) is None
        order.append(client)

    tasks = [asyncio.create_task(req(c)) for c in ("a", "a", "a", "b")]
    await asyncio.sleep(0)
    f.leave(MUTATING, "x")
    for _ in range(4):
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        f.leave(MUTATING, order[-1])
    await asyncio.gather(*tasks)
    assert order[:2] == ["a", "b"]  # b is not stuck behind all of a's requests


async def test_a_wait_times_out_and_a_cancelled_wait_frees_its_place() -> None:
    f = FlowControl(limits(max_requests_inflight=1, queue_wait=0.05))
    assert f.try_enter(READ_ONLY, "a")
    assert await f.enter(READ_ONLY, "b") == "time-out"
    t = asyncio.create_task(f.enter(READ_ONLY, "c"))
    await asyncio.sleep(0)
    t.cancel()
    with pytest.raises(asyncio.CancelledError):
        await t
    assert f.queued == [0, 0] and f.client_queued == {}
    f.leave(READ_ONLY, "a")
    assert f.inflight == [0, 0] and f.client_inflight == {}


def test_what_counts_as_long_running_and_who_the_client_is() -> None:
    assert is_long_running("GET", "/api/v1/watch/pods", {})
    assert is_long_running("GET", "/api/v1/namespaces/a/pods", {"watch": "true"})
    assert is_long_running("GET", "/apis/apps/v1/watch/namespaces/a/deployments", {})
    assert is_long_running("POST", "/api/v1/namespaces/a/pods/p/exec", {})
    assert is_long_running("GET", "/api/v1/namespaces/a/pods/p/log", {})
    assert not is_long_running("GET", "/api/v1/namespaces/watch/pods", {})  # a namespace
    assert not is_long_running("GET", "/api/v1/namespaces/a/pods/exec", {})  # a pod "exec"
    assert not is_long_running("DELETE", "/api/v1/watch/pods", {})
    assert client_of({"User-Agent": "kubectl/v1.37.0 (linux/amd64) kubernetes/abc"}) == "kubectl"
    assert client_of({"User-Agent": "gpuyard-scheduler/0.1"}) == "gpuyard-scheduler"
    assert client_of({}) == "unknown"


@pytest.mark.parametrize(
    "kw",
    [
        {"max_requests_inflight": 0},
        {"max_client_requests_inflight": -1},
        {"max_queued_requests": -1},
        {"queue_wait": 0},
        {"header_timeout": float("nan")},
        {"keepalive_timeout": float("inf")},
        {"max_connections": 0},
    ],
)
def test_nonsense_limits_are_refused(kw: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=next(iter(kw))):
        FlowLimits(**kw).check()  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "args",
    [
        ["apiserver", "--max-requests-inflight", "0"],
        ["apiserver", "--queue-wait", "abc"],
        ["up", "--max-connections", "-5"],
        ["up", "--request-header-timeout", "nan"],
    ],
)
def test_bad_flags_exit_2_with_one_line(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as e:
        gpuyard_main(args)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "error: argument --" in err and "Traceback" not in err


@pytest.fixture
async def small_server() -> AsyncIterator[APIServer]:
    srv = APIServer(
        None,
        flow=FlowLimits(
            max_requests_inflight=1,
            max_client_requests_inflight=1,
            max_queued_requests=0,
            header_timeout=0.5,
            unauth_idle_timeout=0.5,
        ),
    )
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


def _ctx(srv: APIServer) -> ssl.SSLContext:
    assert srv.ca_pem is not None
    return ssl.create_default_context(cadata=srv.ca_pem.decode())


async def test_watches_are_not_counted_and_a_busy_server_says_429(small_server: APIServer) -> None:
    srv = small_server
    hdr = {"Authorization": f"Bearer {srv.token}"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=_ctx(srv))) as s:
        watches = [
            await s.get(srv.url + "/api/v1/namespaces/default/configmaps?watch=true", headers=hdr)
            for _ in range(3)
        ]
        try:
            assert all(w.status == 200 for w in watches)
            async with s.get(srv.url + "/api/v1/namespaces", headers=hdr) as r:
                assert r.status == 200  # three open watches take no slot
            # Hold the one read slot, then ask again.
            assert srv.flow.try_enter(READ_ONLY, "Python")
            try:
                async with s.get(srv.url + "/api/v1/namespaces", headers=hdr) as r:
                    assert r.status == 429
                    assert r.headers["Retry-After"] == "1"
                    body = await r.json()
                    assert body["reason"] == "TooManyRequests"
                    assert body["details"]["retryAfterSeconds"] == 1
                async with s.get(srv.url + "/readyz") as r:
                    assert r.status == 200  # probes are answered however busy
                async with s.post(
                    srv.url + "/api/v1/namespaces/default/configmaps",
                    json={"metadata": {"name": "m"}},
                    headers={**hdr, "User-Agent": "other/1.0"},
                ) as r:
                    assert r.status == 201  # another client's write: its own slots
            finally:
                srv.flow.leave(READ_ONLY, "Python")
            async with s.get(srv.url + "/metrics", headers=hdr) as r:
                text = await r.text()
            assert (
                'apiserver_flowcontrol_rejected_requests_total{reason="queue-full",'
                'request_kind="readOnly"} 1.0'
            ) in text
            assert 'apiserver_request_total{code="429",resource="namespaces",verb="list"}' in text
        finally:
            for w in watches:
                w.close()


async def test_slow_headers_and_silent_connections_are_closed(small_server: APIServer) -> None:
    srv = small_server
    port = srv.port
    ctx = _ctx(srv)
    # Slow head: request line, then a header line now and then, never the end.
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    writer.write(b"GET /api/v1/namespaces HTTP/1.1\r\nHost: x\r\n")
    closed = False
    for i in range(40):
        await asyncio.sleep(0.1)
        try:
            writer.write(f"X-{i}: y\r\n".encode())
            await writer.drain()
            if reader.at_eof():
                closed = True
                break
        except (ConnectionError, ssl.SSLError):
            closed = True
            break
    if not closed:
        closed = await asyncio.wait_for(reader.read(1), 5) == b""
    assert closed, "a 4 s trickle of header lines outlived a 0.5 s header timeout"
    writer.transport.abort()
    # Silent after the handshake, never authenticated: closed too.
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    assert await asyncio.wait_for(reader.read(1), 10) == b""
    writer.transport.abort()
    # An authenticated kept-alive connection outlives the unauthenticated idle time.
    hdr = {"Authorization": f"Bearer {srv.token}"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx, limit=1)) as s:
        async with s.get(srv.url + "/api/v1/namespaces", headers=hdr) as r:
            assert r.status == 200
        await asyncio.sleep(1.5)
        async with s.get(srv.url + "/api/v1/namespaces", headers=hdr) as r:
            assert r.status == 200
        assert srv._listener is not None
        assert srv._listener.accepted == 3  # the same connection both times
        closed = srv._listener.closed
        assert closed.get("header-timeout", 0) == 1 and closed.get("idle-timeout", 0) == 1


async def test_a_slow_body_gets_408_and_its_connection_closed() -> None:
    """Headers on time, then the body a few bytes a second (slow-loris on the body):
    408 once the body timeout has passed, the connection closed, and the request's slot
    free again for others."""
    srv = APIServer(
        None, flow=FlowLimits(max_requests_inflight=1, max_client_requests_inflight=1,
                              max_queued_requests=0, body_timeout=1.0),
    )  # fmt: skip
    await srv.start()
    try:
        ctx = _ctx(srv)
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port, ssl=ctx)
        writer.write(
            b"POST /api/v1/namespaces/default/configmaps HTTP/1.1\r\nHost: x\r\n"
            + f"Authorization: Bearer {srv.token}\r\n".encode()
            + b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
        )
        await writer.drain()
        t0 = asyncio.get_running_loop().time()

        async def trickle() -> None:
            with contextlib.suppress(ConnectionError, ssl.SSLError, RuntimeError):
                for _ in range(100):
                    await asyncio.sleep(0.2)
                    writer.write(b" ")
                    await writer.drain()

        dripping = asyncio.create_task(trickle())
        answer = await asyncio.wait_for(reader.read(), 10)  # to the connection's end
        elapsed = asyncio.get_running_loop().time() - t0
        dripping.cancel()
        writer.transport.abort()
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b'"reason":"Timeout"' in answer and b"1 s" in answer
        assert 0.8 <= elapsed < 5, elapsed
        assert srv._listener is not None and srv._listener.closed.get("body-timeout") == 1
        # The slot is free: a normal request gets through.
        hdr = {"Authorization": f"Bearer {srv.token}"}
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as s:
            async with s.get(srv.url + "/api/v1/namespaces", headers=hdr) as r:
                assert r.status == 200
    finally:
        await srv.stop()
