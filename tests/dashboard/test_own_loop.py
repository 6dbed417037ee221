"""The dashboard served from a loop of its own (as `gpuyard up` serves it) answers while
the process's loop is busy: its page, the rows and the stream do not queue behind
the simulated kubelets. Credential reviews and node details still run on the hub's
loop, and changes published there reach the stream."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import urllib.request
from typing import Any

from gpuyard.dashboard.auth import Authority
from gpuyard.dashboard.hub import Subscriber
from gpuyard.dashboard.server import Dashboard

TOKEN = "t0ken"


class Reviews:
    """An API server's answers to the Authority: the token names alice, who may look;
    `loops` records where each review ran."""

    def __init__(self) -> None:
        self.loops: list[asyncio.AbstractEventLoop] = []

    async def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.loops.append(asyncio.get_running_loop())
        if obj["kind"] == "TokenReview":
            ok = obj["spec"]["token"] == TOKEN
            return {"status": {"authenticated": ok, "user": {"username": "alice"}}}
        return {"status": {"allowed": True}}


class Rows:
    """The parts of a Hub the server uses, with one node."""

    def __init__(self) -> None:
        self.subs: set[Subscriber] = set()
        self.detail_loops: list[asyncio.AbstractEventLoop] = []

    def snapshot(self) -> dict[str, Any]:
        return {"nodes": [{"name": "n1", "state": "free"}], "jobs": [], "states": ["free"]}

    def subscribe(self) -> Subscriber:
        s = Subscriber(1000)
        self.subs.add(s)
        return s

    def unsubscribe(self, s: Subscriber) -> None:
        self.subs.discard(s)

    def node_detail(self, name: str) -> dict[str, Any] | None:
        self.detail_loops.append(asyncio.get_running_loop())
        return {"name": name} if name == "n1" else None


def _get(url: str) -> tuple[float, bytes]:
    t0 = time.monotonic()
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        body = r.read()
    return time.monotonic() - t0, body


def test_requests_do_not_wait_for_a_busy_process_loop() -> None:
    async def main() -> None:
        here = asyncio.get_running_loop()
        reviews, rows = Reviews(), Rows()
        d = Dashboard(
            rows,  # type: ignore[arg-type]
            Authority(reviews, client_loop=here),
            keepalive_s=60,
            own_loop=True,
        )
        url = await d.start()
        try:
            # sign-in reviews the token on this loop (the client's), once
            took = await asyncio.to_thread(_get, url + "api/whoami")
            assert json.loads(took[1])["user"] == "alice"
            assert reviews.loops and all(lp is here for lp in reviews.loops)
            # a stream, opened now: its first event is the snapshot
            stream = await asyncio.to_thread(
                lambda: urllib.request.urlopen(
                    urllib.request.Request(
                        url + "api/events", headers={"Authorization": f"Bearer {TOKEN}"}
                    ),
                    timeout=30,
                )
            )
            lines: list[bytes] = []

            def read() -> None:
                with contextlib.suppress(OSError, ValueError):  # the stream ends
                    lines.extend(iter(stream.readline, b""))

            reader = threading.Thread(target=read)
            reader.start()
            for _ in range(100):
                if rows.subs:
                    break
                await asyncio.sleep(0.02)
            # this loop now busy for 1.5 s (a burst of kubelet writes): the page's files,
            # the rows and the stream's snapshot come meanwhile, not after it
            got: dict[str, float] = {}

            def browse() -> None:
                for path in ("", "static/app.js", "api/snapshot"):
                    got[path] = _get(url + path)[0]

            browser = threading.Thread(target=browse)
            browser.start()
            time.sleep(1.5)  # blocks this loop, as a long callback would
            browser.join(10)
            assert set(got) == {"", "static/app.js", "api/snapshot"}
            assert max(got.values()) < 1.0, got
            assert any(b"event: snapshot" in ln for ln in lines), lines
            # a change published on this loop (the hub's) reaches the stream
            for s in rows.subs:
                s.offer({"nodes": {"n1": {"name": "n1", "state": "cordoned"}}})
            for _ in range(200):
                if any(b"cordoned" in ln for ln in lines):
                    break
                await asyncio.sleep(0.02)
            assert any(b"event: delta" in ln for ln in lines), lines
            assert any(b"cordoned" in ln for ln in lines), lines
            # a node's details are read on the hub's loop
            _, body = await asyncio.to_thread(_get, url + "api/nodes/n1")
            assert json.loads(body) == {"name": "n1"} and rows.detail_loops == [here]
        finally:
            await d.stop()
        assert d._thread is None  # the server's thread has ended
        await asyncio.to_thread(reader.join, 10)  # its streams with it
        assert not reader.is_alive()
        stream.close()

    asyncio.run(main())


async def test_changes_reach_the_stream_while_the_process_loop_is_busy(
    apiserver_inproc: Any,
) -> None:
    """As in `gpuyard up`: the hub on the dashboard's loop, over views of the process's
    watches. Once the process's watch has handed a change over, the stream carries it
    even while the process's loop is held (a burst of kubelet writes): marking, batching
    and recomputing the rows do not wait for that loop."""
    from gpuyard.dashboard.hub import Hub
    from gpuyard.kube.client import Client
    from gpuyard.kube.informer import InformerFactory
    from gpuyard.kube.resources import NODES

    here = asyncio.get_running_loop()
    client = Client.in_process(apiserver_inproc, component="test")
    for i in range(3):
        await client.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": f"n{i}"}})
    factory = InformerFactory(client, views=True)
    kubelets = factory.informer(NODES, name="kubelets")  # the process's own user of the watch
    kubelets.start()
    await kubelets.wait_synced(10)
    hub = Hub(client, factory, coalesce_s=0.05, client_loop=here)
    d = Dashboard(
        hub,
        Authority(client, client_loop=here),
        keepalive_s=60,
        own_loop=True,
        start_hub=True,
    )
    url = await d.start()
    token = apiserver_inproc.token
    lines: list[tuple[float, bytes]] = []
    stream = await asyncio.to_thread(
        lambda: urllib.request.urlopen(
            urllib.request.Request(
                url + "api/events", headers={"Authorization": f"Bearer {token}"}
            ),
            timeout=30,
        )
    )

    def read() -> None:
        with contextlib.suppress(OSError, ValueError):  # the stream ends
            for ln in iter(stream.readline, b""):
                lines.append((time.monotonic(), ln))

    reader = threading.Thread(target=read)
    reader.start()
    held: list[float] = []

    def hold(_old: Any, new: Any) -> None:
        # after the dashboard's view has had the event: this loop is held for 3 s
        labels = new["metadata"].get("labels") or {}
        if new["metadata"]["name"] == "n1" and labels.get("gpuyard.io/rack") == "r7":
            held.append(time.monotonic())
            time.sleep(3.0)
            held.append(time.monotonic())

    try:
        for _ in range(250):
            if any(b"event: snapshot" in ln for _, ln in lines):
                break
            await asyncio.sleep(0.02)
        assert kubelets.source is not None
        kubelets.source.add_handler(None, hold, None)
        # a node moved to another rack (what the map's tooltip shows)
        await client.patch(NODES, "n1", {"metadata": {"labels": {"gpuyard.io/rack": "r7"}}})
        for _ in range(500):
            if len(held) == 2:
                break
            await asyncio.sleep(0.02)
        assert len(held) == 2, "the change did not reach the process's watch"

        def moved() -> list[float]:
            return [t for t, ln in lines if ln.startswith(b"data:") and b'"rack":"r7"' in ln]

        for _ in range(500):
            if moved():
                break
            await asyncio.sleep(0.02)
        assert moved(), [ln[:200] for _, ln in lines]
        # it came while the loop was held, not after
        at = moved()[0]
        assert at < held[1] - 1.0, (at - held[0], held[1] - held[0])
    finally:
        await d.stop()
        await asyncio.to_thread(reader.join, 10)
        stream.close()
        await kubelets.stop()
        await factory.stop()
        await client.close()
    assert not reader.is_alive()
