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
