"""Informers against the embedded API server: adds/updates/deletes reach the cache and
the handlers, indexes follow the objects, and the informer recovers from 410 Gone and
from a server restart by relisting (deletes made while it was blind are delivered)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable
from typing import Any

import pytest

from gpuyard.apiserver.testing import run_apiserver_process, start_apiserver_process
from gpuyard.kube.client import Client
from gpuyard.kube.errors import NotFound
from gpuyard.kube.informer import Informer, InformerFactory
from gpuyard.kube.resources import CONFIGMAPS, PODS, Res

from .conftest import cm, pod


async def eventually(pred: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def on_add(self, obj: dict) -> None:
        self.events.append(("add", obj["metadata"]["name"]))

    async def on_update(self, old: dict, new: dict) -> None:  # async handlers work too
        await asyncio.sleep(0)
        self.events.append(("update", new["metadata"]["name"]))

    def on_delete(self, obj: dict) -> None:
        self.events.append(("delete", obj["metadata"]["name"]))


async def test_informer_sees_adds_updates_deletes_and_indexes(kube: Client) -> None:
    await kube.create(pod("pre", node="n1"))
    rec = Recorder()
    inf = Informer(kube, PODS, "default")
    inf.add_handler(rec.on_add, rec.on_update, rec.on_delete)
    async with inf:
        await inf.wait_synced(10)
        assert inf.has_synced
        assert [p["metadata"]["name"] for p in inf.by_node("n1")] == ["pre"]
        await kube.create(pod("a"))
        await kube.create(pod("other-ns", ns="kube-system"))  # not watched
        await kube.bind(await kube.get(PODS, "a", "default"), "n2")
        await kube.delete(PODS, "pre", "default", grace_period_seconds=0)
        await eventually(lambda: ("delete", "pre") in rec.events and len(inf.by_node("n2")) == 1)
        await inf.wait_idle(5)
        assert rec.events[0] == ("add", "pre")
        assert ("add", "a") in rec.events and ("update", "a") in rec.events
        assert all(name != "other-ns" for _, name in rec.events)
        assert inf.get("a", "default") is not None and inf.get("pre", "default") is None
        assert inf.by_node("n1") == []
        assert [p["metadata"]["name"] for p in inf.by_namespace("default")] == ["a"]
        # the cached object matches what the server has now
        server_a = await kube.get(PODS, "a", "default")
        assert (
            inf.get("a", "default")["metadata"]["resourceVersion"]
            == (  # type: ignore[index]
                server_a["metadata"]["resourceVersion"]
            )
        )


async def test_handler_added_after_sync_replays_and_errors_do_not_stop_it(kube: Client) -> None:
    for i in range(3):
        await kube.create(cm(f"c{i}"))
    inf = Informer(kube, CONFIGMAPS, "default")
    async with inf:
        await inf.wait_synced(10)
        seen: list[str] = []

        def boom(obj: dict) -> None:
            raise RuntimeError("handler bug")

        inf.add_handler(on_add=boom)
        inf.add_handler(on_add=lambda o: seen.append(o["metadata"]["name"]))
        await kube.create(cm("c3"))
        await eventually(lambda: "c3" in seen)
        assert sorted(seen) == ["c0", "c1", "c2", "c3"]
        assert inf.handler_errors >= 4


async def test_label_selected_informer_and_shared_factory(kube: Client) -> None:
    factory = InformerFactory(kube)
    a = factory.informer(PODS, label_selector="app=web")
    assert factory.informer(PODS, label_selector="app=web") is a
    assert factory.informer(PODS) is not a
    factory.start()
    try:
        await factory.wait_synced(10)
        await kube.create(pod("w", labels={"app": "web"}))
        await kube.create(pod("d", labels={"app": "db"}))
        everything = factory.informer(PODS)
        await eventually(lambda: len(everything.cache) == 2)
        await eventually(lambda: len(a.cache) == 1)
        assert list(a.cache) == ["default/w"]
    finally:
        await factory.stop()


class GatedTransport:
    """Wraps a transport; while closed, new watch requests wait for the gate."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.open = asyncio.Event()
        self.open.set()
        self.waiting = 0

    async def request(
        self, method: str, path: str, query: Any, headers: Any, body: Any, **kw: Any
    ) -> Any:
        if kw.get("stream") and not self.open.is_set():
            self.waiting += 1
            await self.open.wait()
        return await self.inner.request(method, path, query, headers, body, **kw)

    async def close(self) -> None:
        await self.inner.close()


async def test_informer_relists_after_410_and_delivers_missed_deletes(tmp_path: Any) -> None:
    with run_apiserver_process(
        str(tmp_path), in_memory=True, extra_args=("--watch-log", "3")
    ) as srv:
        writer = Client.from_kubeconfig(srv.kubeconfig)
        reader = Client.from_kubeconfig(srv.kubeconfig)
        gate = GatedTransport(reader._transport)
        reader._transport = gate
        rec = Recorder()
        inf = Informer(reader, CONFIGMAPS, "default", watch_timeout_s=1)
        inf.add_handler(rec.on_add, rec.on_update, rec.on_delete)
        try:
            for i in range(3):
                await writer.create(cm(f"k{i}"))
            async with inf:
                await inf.wait_synced(10)
                assert inf.relists == 1
                gate.open.clear()
                # wait for the current watch to time out and the next one to block
                await eventually(lambda: gate.waiting >= 1, timeout=10)
                await writer.delete(CONFIGMAPS, "k0", "default")
                await writer.patch(CONFIGMAPS, "k1", {"data": {"v": "2"}}, "default")
                for i in range(3, 10):  # push the informer's RV out of the watch log
                    await writer.create(cm(f"k{i}"))
                gate.open.set()
                await eventually(lambda: inf.relists >= 2)
                want = {f"default/k{i}" for i in range(1, 10)}
                await eventually(lambda: set(inf.cache) == want)
                await inf.wait_idle(5)
                assert ("delete", "k0") in rec.events
                assert ("update", "k1") in rec.events
                assert inf.cache["default/k1"]["data"] == {"v": "2"}
                assert type(inf.last_error).__name__ == "Gone"
        finally:
            await writer.close()
            await reader.close()


async def test_informer_converges_after_server_restart(tmp_path: Any) -> None:
    """kill -9 the server, change things while it is down-then-up on the same port;
    the informer relists and converges, delivering the delete it missed."""
    data = str(tmp_path / "data")
    srv = start_apiserver_process(data)
    port = srv.url.rsplit(":", 1)[1]
    srv2 = None
    try:
        c = Client.from_kubeconfig(srv.kubeconfig)
        inf = Informer(c, CONFIGMAPS, "default", backoff_base=0.05, backoff_max=0.3)
        rec = Recorder()
        inf.add_handler(rec.on_add, rec.on_update, rec.on_delete)
        await c.create(cm("keep"))
        await c.create(cm("drop"))
        async with inf:
            await inf.wait_synced(10)
            await c.create(cm("probe"))  # seen only through the watch: it is live
            await eventually(lambda: "default/probe" in inf.cache)
            await c.delete(CONFIGMAPS, "probe", "default")
            await eventually(lambda: "default/probe" not in inf.cache)
            await asyncio.to_thread(srv.kill9)
            srv2 = await asyncio.to_thread(start_apiserver_process, data, False, ("--port", port))
            # a second client (the informer's may be backing off) makes changes
            async with Client.from_kubeconfig(srv2.kubeconfig) as c2:
                await c2.delete(CONFIGMAPS, "drop", "default")
                await c2.create(cm("new"))
            await eventually(lambda: set(inf.cache) == {"default/keep", "default/new"}, 20)
            await inf.wait_idle(5)
            assert ("delete", "drop") in rec.events and ("add", "new") in rec.events
            assert inf.relists >= 2  # the broken watch led to a relist
        await c.close()
    finally:
        for s in (srv, srv2):
            if s is not None:
                try:
                    os.killpg(s.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                s.proc.wait(10)
                if s.proc.stdout is not None:
                    s.proc.stdout.close()


async def test_informer_in_process_and_bookmarks_keep_its_version_fresh(
    apiserver_inproc: Any,
) -> None:
    """The embedded cluster's components use the in-process transport; an informer on
    a quiet resource still moves its resourceVersion forward through bookmarks."""
    c = Client.in_process(apiserver_inproc)
    rec = Recorder()
    inf = Informer(c, CONFIGMAPS, "default")
    inf.add_handler(rec.on_add, rec.on_update, rec.on_delete)
    async with inf:
        await inf.wait_synced(10)
        await c.create(cm("x"))
        await eventually(lambda: "default/x" in inf.cache)
        rv_after_x = int(inf.resource_version)
        for i in range(5):  # changes elsewhere: the global resourceVersion moves on
            await c.create(pod(f"p{i}"))
        latest = int((await c.list(PODS, "default"))["metadata"]["resourceVersion"])
        await eventually(lambda: int(inf.resource_version) >= latest, timeout=5)
        assert int(inf.resource_version) > rv_after_x
        assert set(inf.cache) == {"default/x"}  # bookmarks add nothing to the cache
        await c.delete(CONFIGMAPS, "x", "default")
        await eventually(lambda: not inf.cache)
        await inf.wait_idle(5)
        assert rec.events == [("add", "x"), ("delete", "x")]


async def test_views_share_one_watch_and_keep_their_own_handlers(kube: Client) -> None:
    """InformerFactory(views=True): each informer() is a view of its own (own cache of
    what its label selector selects, own handlers, own stop) over one list+watch."""
    factory = InformerFactory(kube, views=True)
    web = factory.informer(PODS, label_selector="app=web", name="a")
    every = factory.informer(PODS, name="b")
    assert web is not every and web.source is every.source
    seen: list[tuple[str, str]] = []
    web.add_handler(
        lambda o: seen.append(("add", o["metadata"]["name"])),
        None,
        lambda o: seen.append(("delete", o["metadata"]["name"])),
    )
    await kube.create(pod("w", labels={"app": "web"}))
    web.start()
    every.start()
    try:
        await web.wait_synced(10)
        await every.wait_synced(10)
        await kube.create(pod("d", labels={"app": "db"}))
        await eventually(lambda: len(every.cache) == 2)
        assert list(web.cache) == ["default/w"]
        # labels changing out of the selection: a delete for the view that selected it
        p = await kube.get(PODS, "w", "default")
        p["metadata"]["labels"] = {"app": "other"}
        await kube.update(p)
        await eventually(lambda: ("delete", "w") in seen)
        assert not web.cache and len(every.cache) == 2
        # a view stopped leaves the watch to the others
        await web.stop()
        await kube.create(pod("x", labels={"app": "web"}))
        await eventually(lambda: len(every.cache) == 3)
        assert ("add", "x") not in seen
        # a field selection the view makes itself: still the one watch
        bound = factory.informer(PODS, field_selector="spec.nodeName!=")
        bound.start()
        await bound.wait_synced(10)
        assert not bound.cache
        await kube.create(pod("on-n1", node="n1"))
        await eventually(lambda: list(bound.cache) == ["default/on-n1"])
        await bound.stop()
        assert len(factory.informers) == 1  # one watch of pods in all
    finally:
        await every.stop()
        await factory.stop()


async def test_an_api_not_served_is_said_once_and_picked_up_once_served(
    apiserver_inproc: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """An informer of a kind whose CRD is not installed (an optional API) says so once,
    at INFO, instead of a warning at every retry; once the CRD is installed it lists
    and watches the kind like any other."""
    c = Client.in_process(apiserver_inproc)
    gadgets = Res("example.com", "v1", "gadgets", True, "Gadget")
    inf = Informer(c, gadgets, backoff_base=0.05, backoff_max=0.1)
    try:
        with caplog.at_level(logging.INFO, logger="gpuyard.kube.informer"):
            async with inf:
                await eventually(lambda: inf.relists == 0 and isinstance(inf.last_error, NotFound))
                await asyncio.sleep(0.5)  # several retries
                assert not inf.has_synced
                await c.create(_crd("gadgets", "Gadget"))
                await inf.wait_synced(10)
                obj = {"apiVersion": "example.com/v1", "kind": "Gadget"}
                await c.create({**obj, "metadata": {"name": "g", "namespace": "default"}})
                await eventually(lambda: "default/g" in inf.cache)
        lines = [(r.levelname, r.getMessage()) for r in caplog.records]
        assert lines == [
            ("INFO", "informer gadgets: the cluster serves no gadgets.example.com/v1; "
             "watched once it does"),
            ("INFO", "informer gadgets: gadgets.example.com/v1 is served now"),
        ], lines  # fmt: skip
    finally:
        await c.close()


def _crd(plural: str, kind: str) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": plural, "singular": kind.lower(), "kind": kind},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }
