"""A view on another thread's loop than its source (the dashboard of `gpuyard up` reads
the process's watches so): it gets the source's objects, then its events in order, its
handlers run on its own thread, and stopping it detaches it from the source."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from gpuyard.kube.client import Client
from gpuyard.kube.informer import InformerFactory
from gpuyard.kube.resources import CONFIGMAPS

from .conftest import cm


async def eventually(pred: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


class Elsewhere:
    """An event loop in a thread of its own; `run(coro)` awaits coro there."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    async def run(self, coro: Any) -> Any:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


async def test_a_view_on_another_loop_follows_its_source(apiserver_inproc: Any) -> None:
    client = Client.in_process(apiserver_inproc, component="test")
    factory = InformerFactory(client, views=True)
    near = factory.informer(CONFIGMAPS, name="near")  # the source runs on this loop
    near.start()
    await near.wait_synced(10)
    source = near.source
    assert source is not None
    await client.create(cm("before", a="1"))
    await eventually(lambda: "default/before" in source.cache)
    far_loop = Elsewhere()
    seen: list[tuple[str, str, str]] = []
    threads: set[int] = set()

    def note(kind: str) -> Callable[..., None]:
        def fn(*objs: Any) -> None:
            threads.add(threading.get_ident())
            obj = objs[-1]
            seen.append((kind, obj["metadata"]["name"], (obj.get("data") or {}).get("a", "")))

        return fn

    far = factory.informer(CONFIGMAPS, "default", name="far")
    try:
        far.add_handler(note("add"), note("update"), note("delete"))

        async def start_far() -> None:
            far.start()
            await far.wait_synced(10)

        taps_before = len(source._taps)
        await far_loop.run(start_far())
        assert far.source is source and len(source._taps) == taps_before + 1
        await client.create(cm("b", a="1"))
        await client.patch(CONFIGMAPS, "b", {"data": {"a": "2"}}, "default")
        await client.patch(CONFIGMAPS, "b", {"data": {"a": "3"}}, "default")
        await client.delete(CONFIGMAPS, "before", "default")
        await client.create(cm("c", a="1"))
        await client.create(cm("elsewhere", ns="kube-system"))  # not in the view's namespace

        await eventually(lambda: sorted(far.cache) == ["default/b", "default/c"])
        assert far.cache["default/b"]["data"] == {"a": "3"}
        await far_loop.run(far.wait_idle(10))
        assert seen == [
            ("add", "before", "1"),
            ("add", "b", "1"),
            ("update", "b", "2"),
            ("update", "b", "3"),
            ("delete", "before", "1"),
            ("add", "c", "1"),
        ]
        assert threads == {far_loop.thread.ident}
        # stopped: it leaves the watch to the others, and hears nothing more
        await far_loop.run(far.stop())
        await eventually(lambda: len(source._taps) == taps_before)
        await client.create(cm("after"))
        await eventually(lambda: "default/after" in near.cache)
        await asyncio.sleep(0.1)
        assert "default/after" not in far.cache and len(seen) == 6
    finally:
        await far_loop.run(far.stop())
        far_loop.close()
        await near.stop()
        await factory.stop()
        await client.close()
