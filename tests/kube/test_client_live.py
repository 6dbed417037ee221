"""The Client against the embedded API server: CRUD, patch types, paging, watch,
discovery, subresources, retries, user agent and the in-process transport."""

from __future__ import annotations

import asyncio
import ssl
import urllib.request
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson
import pytest

from gpuyard.apiserver.testing import run_apiserver_process
from gpuyard.kube.client import Client
from gpuyard.kube.errors import AlreadyExists, Conflict, Gone, KubeError, NotFound, ServerError
from gpuyard.kube.resources import CONFIGMAPS, NODES, PODS, Res

from .conftest import cm, pod


async def test_crud_round_trip(kube: Client) -> None:
    created = await kube.create(cm("a", x="1"))
    assert created["metadata"]["uid"] and created["metadata"]["resourceVersion"]
    with pytest.raises(AlreadyExists):
        await kube.create(cm("a"))
    got = await kube.get(("v1", "ConfigMap"), "a", "default")
    assert got["data"] == {"x": "1"}
    got["data"]["x"] = "2"
    replaced = await kube.replace(got)
    assert replaced["data"] == {"x": "2"}
    # got still carries the old resourceVersion: a second replace is stale
    with pytest.raises(Conflict, match="has been modified"):
        await kube.replace(got)
    p = await kube.patch(CONFIGMAPS, "a", {"data": {"y": "3"}}, "default")
    assert p["data"] == {"x": "2", "y": "3"}
    p = await kube.patch(
        CONFIGMAPS, "a", [{"op": "remove", "path": "/data/x"}], "default", patch_type="json"
    )
    assert p["data"] == {"y": "3"}
    with pytest.raises(Conflict):
        await kube.delete(CONFIGMAPS, "a", "default", preconditions={"uid": "not-the-uid"})
    await kube.delete(CONFIGMAPS, "a", "default", preconditions={"uid": created["metadata"]["uid"]})
    with pytest.raises(NotFound):
        await kube.get(CONFIGMAPS, "a", "default")
    assert await kube.get_or_none(CONFIGMAPS, "a", "default") is None
    assert not await kube.delete_if_exists(CONFIGMAPS, "a", "default")


async def test_node_strategic_patch_status_and_bind_evict(kube: Client) -> None:
    await kube.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}})
    n = await kube.patch(NODES, "n1", {"spec": {"unschedulable": True}}, patch_type="strategic")
    assert n["spec"]["unschedulable"] is True
    n = await kube.patch_status(NODES, "n1", {"status": {"capacity": {"nvidia.com/gpu": "8"}}})
    assert n["status"]["capacity"]["nvidia.com/gpu"] == "8"
    created = await kube.create(pod("p1"))
    await kube.bind(created, "n1")
    bound = await kube.get(PODS, "p1", "default")
    assert bound["spec"]["nodeName"] == "n1"
    bound["status"] = {"phase": "Running"}
    st = await kube.update_status(bound)
    assert st["status"]["phase"] == "Running"
    await kube.evict(bound)
    gone_or_deleting = await kube.get_or_none(PODS, "p1", "default")
    assert gone_or_deleting is None or gone_or_deleting["metadata"].get("deletionTimestamp")


async def test_server_side_apply_creates_then_updates(kube: Client) -> None:
    obj = cm("applied", k="v1")
    out = await kube.apply(obj, field_manager="gpuyard-test")
    assert out["data"] == {"k": "v1"}
    out = await kube.apply(cm("applied", k="v2"), field_manager="gpuyard-test")
    assert out["data"] == {"k": "v2"}
    with pytest.raises(ValueError, match="field_manager"):
        await kube.patch(CONFIGMAPS, "applied", obj, "default", patch_type="apply")


async def test_paging_through_1000_objects(kube: Client) -> None:
    names = [f"cm-{i:04d}" for i in range(1000)]
    for i in range(0, 1000, 100):
        await asyncio.gather(*(kube.create(cm(n)) for n in names[i : i + 100]))
    before = kube.requests.snapshot()["by_verb"].get("list", 0)
    lst = await kube.list(CONFIGMAPS, "default", limit=90)
    got = [o["metadata"]["name"] for o in lst["items"]]
    assert sorted(got) == names  # every object exactly once
    assert all(o["kind"] == "ConfigMap" and o["apiVersion"] == "v1" for o in lst["items"])
    assert lst["metadata"]["resourceVersion"]
    assert "continue" not in lst["metadata"]
    assert kube.requests.snapshot()["by_verb"]["list"] - before == 12  # ceil(1000/90)
    pages = [p async for p in kube.list_pages(CONFIGMAPS, "default", limit=400)]
    assert [len(p["items"]) for p in pages] == [400, 400, 200]
    # the list RV is the same on every page
    assert len({p["metadata"]["resourceVersion"] for p in pages}) == 1


async def test_list_selectors(kube: Client) -> None:
    await kube.create(pod("a", labels={"app": "web"}, node="n1"))
    await kube.create(pod("b", labels={"app": "db"}))
    await kube.create(pod("c", ns="kube-system", labels={"app": "web"}))
    web = await kube.list(PODS, label_selector="app=web")  # all namespaces
    assert sorted(p["metadata"]["name"] for p in web["items"]) == ["a", "c"]
    on_n1 = await kube.list(PODS, "default", field_selector="spec.nodeName=n1")
    assert [p["metadata"]["name"] for p in on_n1["items"]] == ["a"]


async def test_watch_resume_from_resource_version(kube: Client) -> None:
    rv0 = (await kube.list(CONFIGMAPS, "default"))["metadata"]["resourceVersion"]
    await kube.create(cm("w1"))
    await kube.create(cm("w2"))
    seen: list[tuple[str, str]] = []
    last_rv = ""
    async for etype, obj in kube.watch(
        CONFIGMAPS, "default", resource_version=rv0, timeout_seconds=1
    ):
        if etype == "BOOKMARK":
            continue
        seen.append((etype, obj["metadata"]["name"]))
        last_rv = obj["metadata"]["resourceVersion"]
        if len(seen) == 2:
            break
    assert seen == [("ADDED", "w1"), ("ADDED", "w2")]
    await kube.create(cm("w3"))
    await kube.delete(CONFIGMAPS, "w1", "default")
    seen = []
    async for etype, obj in kube.watch(
        CONFIGMAPS, "default", resource_version=last_rv, timeout_seconds=1
    ):
        if etype != "BOOKMARK":
            seen.append((etype, obj["metadata"]["name"]))
        if len(seen) == 2:
            break
    assert seen == [("ADDED", "w3"), ("DELETED", "w1")]


async def test_watch_with_too_old_version_raises_gone(tmp_path: Any) -> None:
    with run_apiserver_process(
        str(tmp_path), in_memory=True, extra_args=("--watch-log", "3")
    ) as srv:
        async with Client.from_kubeconfig(srv.kubeconfig) as c:
            rv0 = (await c.list(CONFIGMAPS, "default"))["metadata"]["resourceVersion"]
            for i in range(10):
                await c.create(cm(f"g{i}"))
            with pytest.raises(Gone):
                async for _ in c.watch(
                    CONFIGMAPS, "default", resource_version=rv0, timeout_seconds=2
                ):
                    pass


async def test_discovery_of_a_custom_kind(kube: Client) -> None:
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Cluster",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
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
    await kube.create(crd)
    res = None
    for _ in range(50):  # the CRD may take a moment to be served
        try:
            res = await kube.resource(("example.com/v1", "Widget"))
            break
        except NotFound:
            kube.forget_discovery()
            await asyncio.sleep(0.1)
    assert res == Res("example.com", "v1", "widgets", False, "Widget")
    await kube.create({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}})
    lst = await kube.list(("example.com/v1", "Widget"))
    assert [w["metadata"]["name"] for w in lst["items"]] == ["w"]
    with pytest.raises(NotFound, match="no resource of kind Gadget"):
        await kube.resource(("example.com/v1", "Gadget"))


def test_user_agent_and_request_counts_reach_the_server(apiserver: Any) -> None:
    async def go() -> dict[str, int]:
        async with Client.from_kubeconfig(apiserver.kubeconfig, component="scheduler") as c:
            await c.list(NODES)
            await c.list(NODES)
            await c.create(cm("ua"))
            return dict(c.requests.snapshot()["by_verb"])

    counts = asyncio.run(go())
    assert counts == {"list": 2, "create": 1}
    ctx = ssl.create_default_context(cafile=apiserver.ca_file)
    req = urllib.request.Request(f"{apiserver.url}/metrics", headers=apiserver.headers)
    with urllib.request.urlopen(req, context=ctx, timeout=5) as r:
        text = r.read().decode()
    assert 'user_agent="gpuyard-scheduler/0.1"' in text


class _Scripted:
    """A transport that answers from a script of (status, headers, body)."""

    def __init__(self, script: list[tuple[int, dict[str, str], bytes]]) -> None:
        self.script = script
        self.calls = 0

    async def request(
        self,
        method: str,
        path: str,
        query: Any,
        headers: Any,
        body: Any,
        *,
        stream: bool = False,
        timeout: Any = None,
    ) -> Any:
        status, hdrs, data = self.script[min(self.calls, len(self.script) - 1)]
        self.calls += 1
        return _Resp(status, hdrs, data)

    async def close(self) -> None:
        pass


class _Resp:
    def __init__(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.status, self.headers, self._body = status, headers, body

    async def read(self) -> bytes:
        return self._body

    async def lines(self) -> AsyncIterator[bytes]:
        for line in self._body.splitlines():
            yield line

    async def close(self) -> None:
        pass


def _status(code: int, reason: str) -> bytes:
    return orjson.dumps({"kind": "Status", "code": code, "reason": reason, "message": reason})


async def test_429_and_5xx_are_retried_with_retry_after() -> None:
    ok = orjson.dumps({"kind": "ConfigMap", "metadata": {"name": "x"}})
    t = _Scripted(
        [
            (429, {"Retry-After": "0"}, _status(429, "TooManyRequests")),
            (503, {}, _status(503, "ServiceUnavailable")),
            (200, {}, ok),
        ]
    )
    c = Client("http://unused", transport=t, backoff_base=0.001)
    got = await c.get(CONFIGMAPS, "x", "default")
    assert got["metadata"]["name"] == "x"
    assert t.calls == 3 and c.requests.retries == 2


async def test_retries_are_bounded_and_posts_are_not_retried_on_500() -> None:
    t = _Scripted([(503, {}, _status(503, "ServiceUnavailable"))])
    c = Client("http://unused", transport=t, max_retries=3, backoff_base=0.001)
    with pytest.raises(ServerError) as ei:
        await c.get(CONFIGMAPS, "x", "default")
    assert ei.value.status == 503 and t.calls == 4
    t2 = _Scripted([(500, {}, _status(500, "InternalError"))])
    c2 = Client("http://unused", transport=t2, backoff_base=0.001)
    with pytest.raises(ServerError):
        await c2.create(cm("x"))
    assert t2.calls == 1  # a create that failed with 500 may have been applied


async def test_connection_refused_is_a_clear_error() -> None:
    c = Client("http://127.0.0.1:9", max_retries=1, backoff_base=0.001)
    try:
        with pytest.raises(KubeError, match="GET /api/v1/nodes"):
            await c.list(NODES)
    finally:
        await c.close()


async def test_in_process_transport(apiserver_inproc: Any) -> None:
    c = Client.in_process(apiserver_inproc, component="sim")
    await c.create(cm("ip", a="1"))
    rv = (await c.list(CONFIGMAPS, "default"))["metadata"]["resourceVersion"]
    got = await c.get(CONFIGMAPS, "ip", "default")
    assert got["data"] == {"a": "1"}
    await c.patch(CONFIGMAPS, "ip", {"data": {"a": "2"}}, "default")
    async for etype, obj in c.watch(CONFIGMAPS, "default", resource_version=rv, timeout_seconds=1):
        if etype == "BOOKMARK":
            continue
        assert (etype, obj["data"]) == ("MODIFIED", {"a": "2"})
        break
    else:
        raise AssertionError("no watch event in process")
    with pytest.raises(NotFound):
        await c.get(CONFIGMAPS, "nope", "default")


async def test_connections_are_reused(kube: Client) -> None:
    for i in range(30):
        await kube.create(cm(f"r{i}"))
        await kube.get(CONFIGMAPS, f"r{i}", "default")
    assert kube.requests.total == 60
    assert kube._transport.connections_opened == 1  # type: ignore[attr-defined]
