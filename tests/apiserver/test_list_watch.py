"""List (selectors, paging) and watch (resume, 410, bookmarks, selectors) semantics."""

from __future__ import annotations

import asyncio
from typing import Any

from gpuyard.apiserver.server import APIServer

from .api import Api, cm, pod

NS = "/api/v1/namespaces/default"


async def _pods(api: Api) -> None:
    specs = [
        ("a", {"app": "web", "tier": "fe"}, "n1"),
        ("b", {"app": "web"}, "n2"),
        ("c", {"app": "db"}, ""),
        ("d", {}, ""),
    ]
    for name, labels, node in specs:
        p = pod(name, labels)
        if node:
            p["spec"]["nodeName"] = node
        st, _ = await api.post(f"{NS}/pods", p)
        assert st == 201


async def _names(api: Api, path: str = f"{NS}/pods", **q: Any) -> list[str]:
    st, body = await api.get(path, **q)
    assert st == 200, body
    return [i["metadata"]["name"] for i in body["items"]]


async def test_label_selectors(api: Api) -> None:
    await _pods(api)
    assert await _names(api, labelSelector="app=web") == ["a", "b"]
    assert await _names(api, labelSelector="app!=web") == ["c", "d"]
    assert await _names(api, labelSelector="app in (db,web),tier") == ["a"]
    assert await _names(api, labelSelector="app notin (web)") == ["c", "d"]
    assert await _names(api, labelSelector="!app") == ["d"]
    st, err = await api.get(f"{NS}/pods", labelSelector="a in (")
    assert st == 400


async def test_field_selectors(api: Api) -> None:
    await _pods(api)
    assert await _names(api, fieldSelector="spec.nodeName=n1") == ["a"]
    assert await _names(api, "/api/v1/pods", fieldSelector="spec.nodeName=") == ["c", "d"]
    assert await _names(api, fieldSelector="spec.nodeName!=,metadata.name!=a") == ["b"]
    assert await _names(api, fieldSelector="status.phase=Pending") == ["a", "b", "c", "d"]
    assert await _names(
        api, fieldSelector="spec.schedulerName=default-scheduler,metadata.name==c"
    ) == ["c"]
    st, err = await api.get(f"{NS}/pods", fieldSelector="spec.bogus=1")
    assert st == 400 and err["message"] == '"spec.bogus" is not a known field selector'
    await api.post("/api/v1/nodes", {"metadata": {"name": "n1"}, "spec": {"unschedulable": True}})
    await api.post("/api/v1/nodes", {"metadata": {"name": "n2"}})
    assert await _names(api, "/api/v1/nodes", fieldSelector="spec.unschedulable=false") == ["n2"]


async def test_paging_keeps_resource_version(api: Api) -> None:
    for i in range(7):
        await api.post(f"{NS}/configmaps", cm(f"c{i}"))
    seen: list[str] = []
    st, page = await api.get(f"{NS}/configmaps", limit=3)
    rv = page["metadata"]["resourceVersion"]
    seen += [i["metadata"]["name"] for i in page["items"]]
    await api.post(f"{NS}/configmaps", cm("zz"))  # a write between pages
    while page["metadata"].get("continue"):
        st, page = await api.get(
            f"{NS}/configmaps", limit=3, **{"continue": page["metadata"]["continue"]}
        )
        assert st == 200
        assert page["metadata"]["resourceVersion"] == rv
        seen += [i["metadata"]["name"] for i in page["items"]]
    assert seen[:7] == [f"c{i}" for i in range(7)]
    st, err = await api.get(f"{NS}/configmaps", limit=3, **{"continue": "garbage!"})
    assert st == 400


async def test_continue_token_expires(apiserver_inproc: APIServer, api: Api) -> None:
    for i in range(4):
        await api.post(f"{NS}/configmaps", cm(f"c{i}"))
    _, page = await api.get(f"{NS}/configmaps", limit=2)
    coll = apiserver_inproc.store.coll(("", "configmaps"))
    coll.log_size = 2
    for i in range(5):  # push old events out of the log
        await api.patch(f"{NS}/configmaps/c0", {"data": {"i": str(i)}})
    st, err = await api.get(
        f"{NS}/configmaps", limit=2, **{"continue": page["metadata"]["continue"]}
    )
    assert st == 410 and err["reason"] == "Expired"


async def test_watch_initial_state_then_changes(api: Api) -> None:
    await api.post(f"{NS}/configmaps", cm("a"))

    async def writes() -> None:
        await asyncio.sleep(0.2)
        await api.post(f"{NS}/configmaps", cm("b"))
        await api.patch(f"{NS}/configmaps/a", {"data": {"x": "1"}})
        await api.delete(f"{NS}/configmaps/b")

    t = asyncio.create_task(writes())
    events = await api.watch(f"{NS}/configmaps", 4)
    await t
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "a"),
        ("ADDED", "b"),
        ("MODIFIED", "a"),
        ("DELETED", "b"),
    ]
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events[1:]]
    assert rvs == sorted(rvs)


async def test_watch_resumes_from_resource_version(api: Api) -> None:
    _, a = await api.post(f"{NS}/configmaps", cm("a"))
    rv = a["metadata"]["resourceVersion"]
    await api.post(f"{NS}/configmaps", cm("b"))
    await api.patch(f"{NS}/configmaps/a", {"data": {"x": "1"}})
    events = await api.watch(f"{NS}/configmaps", 2, timeout=2, resourceVersion=rv)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "b"),
        ("MODIFIED", "a"),
    ]


async def test_watch_too_old_is_410_in_stream(apiserver_inproc: APIServer, api: Api) -> None:
    _, a = await api.post(f"{NS}/configmaps", cm("a"))
    apiserver_inproc.store.coll(("", "configmaps")).log_size = 3
    for i in range(6):
        await api.patch(f"{NS}/configmaps/a", {"data": {"i": str(i)}})
    events = await api.watch(
        f"{NS}/configmaps", 1, timeout=2, resourceVersion=a["metadata"]["resourceVersion"]
    )
    assert len(events) == 1 and events[0]["type"] == "ERROR"
    st = events[0]["object"]
    assert st["code"] == 410 and st["reason"] == "Expired"
    assert st["message"].startswith("too old resource version")


async def test_watch_selector_transitions(api: Api) -> None:
    _, a = await api.post(f"{NS}/configmaps", cm("a", labels={"k": "v"}))

    async def writes() -> None:
        await asyncio.sleep(0.2)
        await api.patch(f"{NS}/configmaps/a", {"metadata": {"labels": {"k": "other"}}})
        await api.post(f"{NS}/configmaps", cm("ignored"))
        await api.patch(f"{NS}/configmaps/a", {"metadata": {"labels": {"k": "v"}}})

    t = asyncio.create_task(writes())
    events = await api.watch(f"{NS}/configmaps", 3, labelSelector="k=v")
    await t
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "a"),
        ("DELETED", "a"),
        ("ADDED", "a"),
    ]


async def test_watch_single_object_by_name_and_timeout(api: Api) -> None:
    await api.post(f"{NS}/configmaps", cm("a"))
    await api.post(f"{NS}/configmaps", cm("b"))
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    events = await api.watch(
        f"{NS}/configmaps", 10, timeout=5, fieldSelector="metadata.name=b", timeoutSeconds=1
    )
    assert [e["object"]["metadata"]["name"] for e in events] == ["b"]
    assert loop.time() - t0 < 3  # the server ended the stream after timeoutSeconds


async def test_bookmarks_and_send_initial_events(api: Api) -> None:
    await api.post(f"{NS}/configmaps", cm("a"))
    events = await api.watch(
        f"{NS}/configmaps",
        3,
        timeout=3,
        allowWatchBookmarks=True,
        sendInitialEvents=True,
        resourceVersionMatch="NotOlderThan",
    )
    assert events[0]["type"] == "ADDED"
    bm = events[1]
    assert bm["type"] == "BOOKMARK"
    assert bm["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
    assert bm["object"]["kind"] == "ConfigMap"
    # periodic bookmark (the in-process fixture uses a 0.5 s interval)
    assert events[2]["type"] == "BOOKMARK"
    assert int(events[2]["object"]["metadata"]["resourceVersion"]) >= int(
        bm["object"]["metadata"]["resourceVersion"]
    )


async def test_slow_watcher_is_closed(apiserver_inproc: APIServer) -> None:
    srv = apiserver_inproc
    srv.store.watch_buffer = 5
    r = await srv.dispatch(
        "GET", f"{NS}/configmaps", {"watch": "true", "resourceVersion": str(srv.store.rev)}
    )
    it = r.body.__aiter__()  # type: ignore[union-attr]
    for i in range(10):  # nobody reads: the buffer overflows
        await srv.dispatch(
            "POST", f"{NS}/configmaps", {}, {}, __import__("orjson").dumps(cm(f"c{i}"))
        )
    chunks = [c async for c in it]
    assert chunks == []  # closed without delivering a partial history
    assert not srv.store.coll(("", "configmaps")).watchers


async def test_watcher_removed_when_client_goes(apiserver_inproc: APIServer, api: Api) -> None:
    coll = apiserver_inproc.store.coll(("", "configmaps"))
    events = await api.watch(f"{NS}/configmaps", 1, timeout=0.5)
    assert events == []
    for _ in range(100):
        if not coll.watchers:
            break
        await asyncio.sleep(0.02)
    assert not coll.watchers


async def test_node_pinned_watches_and_lists(api: Api) -> None:
    """Per-node watches (indexed) see a pod arrive on their node and leave the pending set."""
    await api.post(f"{NS}/pods", pod("p"))

    async def writes() -> None:
        await asyncio.sleep(0.3)
        await api.post(f"{NS}/pods/p/binding", {"target": {"name": "n1"}})
        await api.delete(f"{NS}/pods/p", gracePeriodSeconds=0)

    t = asyncio.create_task(writes())
    on_n1, pending, on_n2 = await asyncio.gather(
        api.watch("/api/v1/pods", 2, timeout=3, fieldSelector="spec.nodeName=n1"),
        api.watch("/api/v1/pods", 2, timeout=3, fieldSelector="spec.nodeName="),
        api.watch("/api/v1/pods", 1, timeout=1.5, fieldSelector="spec.nodeName=n2"),
    )
    await t
    assert [e["type"] for e in on_n1] == ["ADDED", "DELETED"]
    assert on_n1[0]["object"]["spec"]["nodeName"] == "n1"
    assert [e["type"] for e in pending] == ["ADDED", "DELETED"]
    assert on_n2 == []
    await api.post(f"{NS}/pods", pod("q", nodeName="n3"))
    await api.post(f"{NS}/pods", pod("r"))
    assert await _names(api, "/api/v1/pods", fieldSelector="spec.nodeName=n3") == ["q"]
    assert await _names(api, "/api/v1/pods", fieldSelector="spec.nodeName=") == ["r"]
    assert await _names(api, fieldSelector="metadata.name=r") == ["r"]
    assert await _names(api, "/api/v1/pods", fieldSelector="metadata.name=r") == ["r"]


async def test_watch_of_untouched_resource_from_list_version(api: Api) -> None:
    """List an empty, never-written resource; writes elsewhere; then watch from the list's
    version: no spurious 410."""
    _, lst = await api.get("/apis/apps/v1/namespaces/default/daemonsets")
    rv = lst["metadata"]["resourceVersion"]
    await api.post(f"{NS}/configmaps", cm("other"))
    events = await api.watch(
        "/apis/apps/v1/namespaces/default/daemonsets", 1, timeout=0.7, resourceVersion=rv
    )
    assert events == []


async def test_partial_object_metadata(api: Api) -> None:
    await api.post(f"{NS}/configmaps", cm("a", {"secret": "x"}, labels={"k": "v"}))
    acc = {
        "Accept": "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,"
        "application/json"
    }
    st, lst = await api.get(f"{NS}/configmaps", headers=acc)
    assert st == 200 and lst["kind"] == "PartialObjectMetadataList"
    assert lst["items"][0]["metadata"]["labels"] == {"k": "v"}
    assert "data" not in lst["items"][0]
    st, one = await api.get(
        f"{NS}/configmaps/a",
        headers={"Accept": "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"},
    )
    assert one["kind"] == "PartialObjectMetadata" and "data" not in one
