"""gpuyard.apiserver.webhooks under load: kept-alive connections reused, a burst opening
only a few new connections at a time (no storm of TLS handshakes), failures giving
their slot back, the per-call latency observers, and the JSON Patch fast path agreeing
with the jsonpatch library."""

from __future__ import annotations

import asyncio
import base64
import copy
import ssl
import time
from collections.abc import AsyncIterator
from typing import Any

import jsonpatch
import orjson
import pytest
from aiohttp import web

from gpuyard.apiserver import webhooks as wh
from gpuyard.apiserver.resources import Resource
from gpuyard.apiserver.tls import server_tls
from gpuyard.kube import json_patch

PODS = Resource("", "v1", "Pod", "pods", "pod", True)
PATCH = base64.b64encode(
    orjson.dumps([{"op": "add", "path": "/metadata/labels/seen", "value": "yes"}])
).decode()


class Hook:
    """An HTTPS webhook that adds a label, answers after `delay` seconds, and counts the
    connections its callers opened."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.ctx, self.ca = server_tls(None, "127.0.0.1")
        self.connections: set[int] = set()
        self.calls = 0
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.connections.add(id(request.transport))
        self.calls += 1
        review = orjson.loads(await request.read())
        if self.delay:
            await asyncio.sleep(self.delay)
        resp = {"uid": review["request"]["uid"], "allowed": True}
        resp.update(patchType="JSONPatch", patch=PATCH)
        return web.Response(body=orjson.dumps({"response": resp}), content_type="application/json")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/m", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=self.ctx)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    def configs(self, port: int | None = None) -> list[dict[str, Any]]:
        hook = {
            "name": "pool.example.com",
            "clientConfig": {
                "url": f"https://127.0.0.1:{port or self.port}/m",
                "caBundle": base64.b64encode(self.ca).decode(),
            },
            "rules": [
                {
                    "operations": ["CREATE"],
                    "apiGroups": [""],
                    "apiVersions": ["v1"],
                    "resources": ["pods"],
                }
            ],
            "timeoutSeconds": 5,
        }
        return [{"metadata": {"name": "pool"}, "webhooks": [hook]}]


@pytest.fixture
async def hooks() -> AsyncIterator[list[Hook]]:
    made: list[Hook] = []
    try:
        yield made
    finally:
        for h in made:
            await h.stop()
        await wh.close()


async def start(hooks: list[Hook], delay: float = 0.0) -> Hook:
    h = Hook(delay)
    await h.start()
    hooks.append(h)
    return h


def attrs(i: int) -> wh.AdmissionAttributes:
    return wh.AdmissionAttributes("CREATE", PODS, namespace="default", name=f"p{i}")


def pod(i: int) -> dict[str, Any]:
    return {"metadata": {"name": f"p{i}", "namespace": "default", "labels": {}}}


async def burst(configs: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    outs = await asyncio.gather(*(wh.admit(configs, attrs(i), pod(i), None) for i in range(n)))
    return [o for o, _ in outs]


async def test_sequential_calls_reuse_one_connection(hooks: list[Hook]) -> None:
    h = await start(hooks)
    for i in range(20):
        out, _ = await wh.admit(h.configs(), attrs(i), pod(i), None)
        assert out["metadata"]["labels"] == {"seen": "yes"}
    assert h.calls == 20 and len(h.connections) == 1


async def test_a_burst_opens_few_connections_and_all_are_served(hooks: list[Hook]) -> None:
    # 60 calls at once to a webhook that takes 20 ms: without the gate each call opens
    # its own connection (60 TLS handshakes at once). With it the pool grows by at most
    # OPENING_PER_HOST connections per round of calls.
    h = await start(hooks, delay=0.02)
    outs = await burst(h.configs(), 60)
    assert all(o["metadata"]["labels"] == {"seen": "yes"} for o in outs)
    assert h.calls == 60
    first = len(h.connections)
    assert 2 <= first <= 24, first
    # A second burst of the same size is served by the connections already open.
    await burst(h.configs(), first)
    assert len(h.connections) == first


async def test_failures_give_their_slot_back(hooks: list[Hook]) -> None:
    h = await start(hooks)
    port = h.port
    await h.stop()
    # Nothing listening: every call of a burst fails quickly (connection refused), none
    # waits for a slot until its timeout.
    t0 = time.monotonic()
    results = await asyncio.gather(
        *(wh.admit(h.configs(port), attrs(i), pod(i), None) for i in range(30)),
        return_exceptions=True,
    )
    assert all(isinstance(r, wh.AdmissionDenied) and r.code == 500 for r in results)
    assert time.monotonic() - t0 < 4.0
    cc = h.configs(port)[0]["webhooks"][0]["clientConfig"]
    _, gate = wh._pool().get(cc["url"], cc["caBundle"])
    assert gate.busy == 0 and gate.opening == 0 and not gate.waiters
    # A live webhook is still reached afterwards from the same pool.
    live = await start(hooks)
    outs = await burst(live.configs(), 10)
    assert all(o["metadata"]["labels"] == {"seen": "yes"} for o in outs)


async def test_gate_slots_waiting_cancellation_and_idle_expiry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gate = wh._Gate(limit=2, opening=1)
    assert await gate.acquire() is None  # nothing idle: this call opens one
    second = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0)
    assert not second.done()  # one opening at a time
    conn = wh._Conn()
    gate.release(conn, opened=True, reusable=True)
    assert await second is conn  # handed the connection just freed
    third = asyncio.create_task(gate.acquire())
    fourth = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0)
    assert third.done() and await third is None  # under the limit, nothing opening
    assert not fourth.done()  # limit 2 reached
    fourth.cancel()
    with pytest.raises(asyncio.CancelledError):
        await fourth
    gate.release(conn, opened=False, reusable=True)
    other = wh._Conn()
    gate.release(other, opened=True, reusable=True)
    assert gate.busy == 0 and gate.idle == [conn, other] and not gate.waiters
    assert await gate.acquire() is other  # the most recently used first
    gate.release(other, opened=False, reusable=False)  # not reusable: closed, dropped
    assert other.closed and gate.idle == [conn]
    # Idle connections older than the pool keeps them are closed and forgotten.
    monkeypatch.setattr(wh, "KEEPALIVE_S", 0.02)
    await asyncio.sleep(0.05)
    assert await gate.acquire() is None
    assert gate.idle == [] and conn.closed


async def test_observers_see_each_call(hooks: list[Hook]) -> None:
    h = await start(hooks, delay=0.01)
    seen: list[tuple[str, float, bool]] = []
    wh.observers.append(lambda name, s, ok: seen.append((name, s, ok)))
    try:
        await burst(h.configs(), 5)
        port = h.port
        await h.stop()
        with pytest.raises(wh.AdmissionDenied):
            await wh.admit(h.configs(port), attrs(0), pod(0), None)
    finally:
        wh.observers.clear()
    assert [ok for _, _, ok in seen] == [True] * 5 + [False]
    assert all(name == "pool.example.com" for name, _, _ in seen)
    assert all(0.01 <= s < 5 for _, s, ok in seen if ok)


DOC = {
    "metadata": {"name": "p", "labels": {"a": "1"}, "annotations": {"x/y": "z"}},
    "spec": {"tolerations": [{"key": "k1"}, {"key": "k2"}], "containers": [{"name": "c"}]},
}

PATCHES: list[list[dict[str, Any]]] = [
    [{"op": "add", "path": "/metadata/labels/b", "value": "2"}],
    [{"op": "add", "path": "/metadata/labels/a", "value": "over"}],
    [{"op": "add", "path": "/spec/tolerations/-", "value": {"key": "k3"}}],
    [{"op": "add", "path": "/spec/tolerations/0", "value": {"key": "k0"}}],
    [{"op": "add", "path": "/spec/tolerations/2", "value": {"key": "end"}}],
    [{"op": "add", "path": "/spec/tolerations/3", "value": {"key": "past"}}],
    [{"op": "add", "path": "/spec/tolerations/01", "value": {}}],
    [{"op": "add", "path": "/spec/affinity/nodeAffinity", "value": {}}],
    [{"op": "add", "path": "/spec/affinity", "value": {"nodeAffinity": {}}}],
    [{"op": "add", "path": "/metadata/annotations/x~1y", "value": "w"}],
    [{"op": "add", "path": "/metadata/annotations/t~0", "value": "w"}],
    [{"op": "replace", "path": "/metadata/labels/a", "value": "r"}],
    [{"op": "replace", "path": "/metadata/labels/zz", "value": "r"}],
    [{"op": "replace", "path": "/spec/tolerations/1", "value": {"key": "r"}}],
    [{"op": "replace", "path": "/spec/tolerations/-", "value": {"key": "r"}}],
    [{"op": "remove", "path": "/metadata/labels/a"}],
    [{"op": "remove", "path": "/metadata/labels/zz"}],
    [{"op": "remove", "path": "/spec/tolerations/0"}],
    [{"op": "remove", "path": "/spec/tolerations/5"}],
    [{"op": "add", "path": "/metadata/name/x", "value": 1}],
    [{"op": "add", "path": "/metadata/labels/c"}],
    [
        {"op": "add", "path": "/metadata/labels/b", "value": "2"},
        {"op": "test", "path": "/metadata/labels/b", "value": "2"},
        {"op": "copy", "from": "/metadata/labels/b", "path": "/metadata/labels/c"},
        {"op": "add", "path": "/metadata/labels/d", "value": "4"},
    ],
    [
        {"op": "add", "path": "/metadata/labels/b", "value": "2"},
        {"op": "test", "path": "/metadata/labels/b", "value": "3"},
    ],
    [{"op": "move", "from": "/metadata/labels/a", "path": "/metadata/labels/m"}],
    [{"op": "add", "path": "", "value": {"whole": True}}],
]


@pytest.mark.parametrize("ops", PATCHES, ids=[str(i) for i in range(len(PATCHES))])
def test_patch_fast_path_agrees_with_jsonpatch(ops: list[dict[str, Any]]) -> None:
    try:
        want: Any = jsonpatch.JsonPatch(copy.deepcopy(ops)).apply(copy.deepcopy(DOC))
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, KeyError, IndexError):
        want = "error"
    try:
        got: Any = json_patch.apply(copy.deepcopy(DOC), copy.deepcopy(ops))
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, KeyError, IndexError):
        got = "error"
    assert got == want


def test_a_patch_that_does_not_apply_leaves_the_object_alone() -> None:
    obj = copy.deepcopy(DOC)
    ops = [
        {"op": "add", "path": "/metadata/labels/b", "value": "2"},
        {"op": "remove", "path": "/metadata/labels/missing"},
    ]
    patch = base64.b64encode(orjson.dumps(ops)).decode()
    review = {"response": {"allowed": True, "patch": patch}}
    with pytest.raises(wh.WebhookError):
        wh.apply_response(review, "", obj)
    assert obj == DOC


class Raw:
    """A TLS server answering each request with canned bytes (to exercise the client's
    HTTP reading): `answers` in turn, then the last one again; `close_after` closes the
    connection after that many answers."""

    def __init__(self, answers: list[bytes], close_after: int = 0) -> None:
        self.answers = answers
        self.close_after = close_after
        self.count = 0
        self.connections = 0
        self.ctx, self.ca = server_tls(None, "127.0.0.1")
        self.server: asyncio.Server | None = None
        self.port = 0

    async def handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.connections += 1
        served = 0
        try:
            while True:
                head = await r.readuntil(b"\r\n\r\n")
                n = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                await r.readexactly(n)
                answer = self.answers[min(self.count, len(self.answers) - 1)]
                self.count += 1
                served += 1
                w.write(answer)
                await w.drain()
                if b"Connection: close" in answer or served == self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            w.close()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0, ssl=self.ctx)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    def hook(self) -> dict[str, Any]:
        return {
            "name": "raw.example.com",
            "clientConfig": {
                "url": f"https://127.0.0.1:{self.port}/m?x=1",
                "caBundle": base64.b64encode(self.ca).decode(),
            },
            "timeoutSeconds": 2,
        }


def answer_body(uid: str = "") -> bytes:
    resp = {"uid": uid, "allowed": True, "patchType": "JSONPatch", "patch": PATCH}
    return orjson.dumps({"response": resp})


def http(body: bytes, *headers: str, status: str = "200 OK", length: bool = True) -> bytes:
    lines = [f"HTTP/1.1 {status}", *headers]
    if length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def chunked(body: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: b\r\n\r\n"
    parts = [body[:7], body[7:30], body[30:]]
    out = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in parts if p)
    return head + out + b"0\r\nX-Trailer: t\r\n\r\n"


@pytest.mark.parametrize(
    ("answers", "close_after", "want_connections"),
    [
        ([http(answer_body())], 0, 1),
        ([chunked(answer_body())], 0, 1),
        ([http(b"", status="100 Continue", length=False) + http(answer_body())], 0, 1),
        ([http(answer_body(), "Connection: close")], 0, 3),
        ([http(answer_body(), "Connection: close", length=False)], 0, 3),
        # The webhook closes a kept-alive connection while it is idle: the next call
        # notices and goes once more over a new connection, without failing.
        # Without a pause the close may arrive just as the connection is reused.
        ([http(answer_body())], 1, 3),
        ([http(answer_body())], -1, 3),
    ],
    ids=["length", "chunked", "interim-100", "close", "until-eof", "idle-closed", "race"],
)
async def test_http_answers_are_read(
    answers: list[bytes], close_after: int, want_connections: int
) -> None:
    raw = Raw(answers, abs(close_after))
    await raw.start()
    try:
        for _ in range(3):
            out = await wh.call_webhook(raw.hook(), {"request": {"uid": ""}})
            assert out["response"]["allowed"] is True
            if close_after > 0:
                await asyncio.sleep(0.05)  # the close reaches the client while idle
        assert raw.count == 3 and raw.connections == want_connections
    finally:
        await raw.stop()
        await wh.close()


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (http(b"nope", status="503 Service Unavailable"), "HTTP 503"),
        (http(b"not json"), "not JSON"),
        (b"HTTP/1.1 abc\r\n\r\n", "malformed"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{}", "closed the connection"),
    ],
    ids=["status", "json", "status-line", "short-body"],
)
async def test_bad_http_answers_are_webhook_errors(answer: bytes, message: str) -> None:
    raw = Raw([answer], close_after=1)
    await raw.start()
    try:
        with pytest.raises(wh.WebhookError, match=message):
            await wh.call_webhook(raw.hook(), {"request": {"uid": ""}})
    finally:
        await raw.stop()
        await wh.close()


async def test_an_oversized_answer_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wh, "MAX_ANSWER_BYTES", 1000)
    raw = Raw([http(b"x" * 5000)])
    await raw.start()
    try:
        with pytest.raises(wh.WebhookError, match="larger than 1000"):
            await wh.call_webhook(raw.hook(), {"request": {"uid": ""}})
    finally:
        await raw.stop()
        await wh.close()


def test_the_client_under_uvloop() -> None:
    # `gpuyard up` runs on uvloop: its TLS transports are uvloop's own.
    uvloop = pytest.importorskip("uvloop")

    async def main() -> None:
        h = Hook()
        await h.start()
        raw = Raw([chunked(answer_body())])
        await raw.start()
        try:
            outs = await burst(h.configs(), 20)
            assert all(o["metadata"]["labels"] == {"seen": "yes"} for o in outs)
            assert len(h.connections) <= 12
            for _ in range(3):
                out = await wh.call_webhook(raw.hook(), {"request": {"uid": ""}})
                assert out["response"]["allowed"] is True
            assert raw.connections == 1
        finally:
            await h.stop()
            await raw.stop()
            await wh.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
