"""gpuyard.apiserver.webhooks under load: kept-alive connections reused, a burst opening
only a few new connections at a time (no storm of TLS handshakes), failures giving
their slot back, the per-call latency observers, and the JSON Patch fast path agreeing
with the jsonpatch library."""

from __future__ import annotations

import asyncio
import base64
import copy
import ssl
import tempfile
import time
from collections.abc import AsyncIterator
from typing import Any

import jsonpatch
import orjson
import pytest
from aiohttp import web

from gpuyard.apiserver import webhooks as wh
from gpuyard.apiserver.resources import Resource
from gpuyard.apiserver.tls import make_ca_and_cert

PODS = Resource("", "v1", "Pod", "pods", "pod", True)
PATCH = base64.b64encode(
    orjson.dumps([{"op": "add", "path": "/metadata/labels/seen", "value": "yes"}])
).decode()


class Hook:
    """An HTTPS webhook that adds a label, answers after `delay` seconds, and counts the
    connections its callers opened."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        ca, cert, key = make_ca_and_cert(["127.0.0.1"])
        self.ca = ca
        d = tempfile.mkdtemp(prefix="gpuyard-test-whpool-")
        with open(f"{d}/c.pem", "wb") as f:
            f.write(cert)
        with open(f"{d}/k.pem", "wb") as f:
            f.write(key)
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(f"{d}/c.pem", f"{d}/k.pem")
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
    gate = wh._pool().gate(h.configs(port)[0]["webhooks"][0]["clientConfig"]["url"], "x")
    assert gate.busy == 0
    # A live webhook is still reached afterwards from the same pool.
    live = await start(hooks)
    outs = await burst(live.configs(), 10)
    assert all(o["metadata"]["labels"] == {"seen": "yes"} for o in outs)


async def test_gate_slots_waiting_cancellation_and_idle_expiry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gate = wh._Gate(limit=2, opening=1)
    assert await gate.acquire() is True  # nothing idle: this call opens one
    second = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0)
    assert not second.done()  # one opening at a time
    gate.release(True, reusable=True)
    assert await second is False  # handed the connection just freed
    third = asyncio.create_task(gate.acquire())
    fourth = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0)
    assert third.done() and await third is True  # under the limit, nothing opening
    assert not fourth.done()  # limit 2 reached
    fourth.cancel()
    with pytest.raises(asyncio.CancelledError):
        await fourth
    gate.release(False, reusable=True)
    gate.release(True, reusable=True)
    assert gate.busy == 0 and len(gate.idle) == 2 and not gate.waiters
    # Idle connections older than the session keeps them are forgotten: opening again.
    monkeypatch.setattr(wh, "KEEPALIVE_S", 2.02)
    await asyncio.sleep(0.05)
    assert await gate.acquire() is True
    assert gate.idle == []


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
        got: Any = wh.apply_patch(copy.deepcopy(DOC), copy.deepcopy(ops))
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
