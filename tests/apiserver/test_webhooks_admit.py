"""gpuyard.apiserver.webhooks on its own: rule and selector matching, answers, refusals,
failure policies, timeouts and reinvocation against small HTTPS webhook servers."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
from aiohttp import web

from gpuyard.apiserver import webhooks as wh
from gpuyard.apiserver.resources import Resource
from gpuyard.apiserver.tls import server_tls

PODS = Resource("", "v1", "Pod", "pods", "pod", True, subresources=("status", "binding"))
NODES = Resource("", "v1", "Node", "nodes", "node", False)
DEPLOY = Resource("apps", "v1", "Deployment", "deployments", "deployment", True)

Answer = Callable[[dict[str, Any]], dict[str, Any]]


def attrs(res: Resource = PODS, op: str = "CREATE", **kw: Any) -> wh.AdmissionAttributes:
    return wh.AdmissionAttributes(operation=op, resource=res, namespace="default", **kw)


def rule(**kw: Any) -> dict[str, Any]:
    r = {"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}
    r.update(kw)
    return r


def pod(labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": "p", "namespace": "default", "labels": labels or {}}}


@pytest.mark.parametrize(
    ("r", "a", "want"),
    [
        (rule(), attrs(), True),
        (rule(), attrs(op="UPDATE"), False),
        (rule(operations=["*"]), attrs(op="DELETE"), True),
        (rule(), attrs(res=NODES), False),
        (rule(resources=["*"]), attrs(res=NODES), True),
        (rule(resources=["*"]), attrs(sub_resource="status"), False),
        (rule(resources=["pods/*"]), attrs(sub_resource="status"), True),
        (rule(resources=["pods/status"]), attrs(sub_resource="status"), True),
        (rule(resources=["pods/status"]), attrs(), False),
        (rule(resources=["*/*"]), attrs(sub_resource="binding"), True),
        (rule(apiGroups=["apps"], resources=["deployments"]), attrs(res=DEPLOY), True),
        (rule(resources=["deployments"]), attrs(res=DEPLOY), False),
        (rule(apiGroups=["*"], apiVersions=["*"], resources=["*"]), attrs(res=DEPLOY), True),
        (rule(resources=["*"], scope="Namespaced"), attrs(res=NODES), False),
        (rule(resources=["*"], scope="Cluster"), attrs(res=NODES), True),
        (rule(resources=["*"], scope="Cluster"), attrs(), False),
        ({"operations": "CREATE"}, attrs(), False),
    ],
)
def test_rule_matching(r: dict[str, Any], a: wh.AdmissionAttributes, want: bool) -> None:
    assert wh.rule_matches(r, a) is want


def test_namespace_and_object_selectors() -> None:
    hook = {
        "rules": [rule()],
        "namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "Exists"}]},
        "objectSelector": {"matchLabels": {"app": "x"}},
    }
    a_team = attrs(namespace_labels={"team": "a"})
    assert wh.webhook_matches(hook, a_team, pod({"app": "x"}), None)
    assert not wh.webhook_matches(hook, attrs(), pod({"app": "x"}), None)
    assert not wh.webhook_matches(hook, a_team, pod({"app": "y"}), None)
    # an update matches when either the new or the old object carries the labels
    assert wh.webhook_matches(hook, a_team, pod({"app": "y"}), pod({"app": "x"}))
    # namespaceSelector does not restrict cluster-scoped objects
    nodes_hook = dict(hook, rules=[rule(resources=["nodes"])], objectSelector=None)
    assert wh.webhook_matches(nodes_hook, attrs(res=NODES), {"metadata": {"name": "n"}}, None)
    # a malformed selector never matches and never raises
    bad = dict(hook, objectSelector={"matchExpressions": [{"key": "a", "operator": "Bogus"}]})
    assert not wh.webhook_matches(bad, a_team, pod({"app": "x"}), None)


def test_answers_are_read_strictly() -> None:
    obj = pod()
    ops = [{"op": "add", "path": "/metadata/labels/a", "value": "1"}]
    good = {
        "response": {
            "uid": "u",
            "allowed": True,
            "patchType": "JSONPatch",
            "patch": base64.b64encode(orjson.dumps(ops)).decode(),
            "warnings": ["careful"],
        }
    }
    new, warnings, changed = wh.apply_response(good, "u", obj)
    assert new is not None and new["metadata"]["labels"] == {"a": "1"} and changed
    assert obj["metadata"]["labels"] == {}  # the input is not modified
    assert warnings == ["careful"]
    with pytest.raises(wh.WebhookError):
        wh.apply_response({"response": dict(good["response"], uid="other")}, "u", obj)
    with pytest.raises(wh.WebhookError):
        wh.apply_response({"response": dict(good["response"], patch="not base64!")}, "u", obj)
    bad_path = [{"op": "replace", "path": "/spec/nothing", "value": 1}]
    with pytest.raises(wh.WebhookError):
        wh.apply_response(
            {
                "response": dict(
                    good["response"], patch=base64.b64encode(orjson.dumps(bad_path)).decode()
                )
            },
            "u",
            obj,
        )
    with pytest.raises(wh.AdmissionDenied) as denied:
        wh.apply_response(
            {"response": {"uid": "u", "allowed": False, "status": {"code": 422, "message": "no"}}},
            "u",
            obj,
        )
    assert denied.value.code == 422 and denied.value.message == "no"
    with pytest.raises(wh.WebhookError):
        wh.apply_response([], "u", obj)


class Server:
    """An HTTPS webhook with its own CA; `answer` decides each response."""

    def __init__(self, answer: Answer, delay: float = 0.0) -> None:
        self.answer = answer
        self.delay = delay
        self.ctx, self.ca = server_tls(None, "127.0.0.1")
        self.seen: list[dict[str, Any]] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def handle(self, request: web.Request) -> web.Response:
        review = await request.json()
        self.seen.append(review)
        if self.delay:
            await asyncio.sleep(self.delay)
        resp = self.answer(review["request"])
        resp.setdefault("uid", review["request"]["uid"])
        return web.json_response({"apiVersion": "admission.k8s.io/v1", "response": resp})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/m", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=self.ctx)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    def hook(self, name: str, **kw: Any) -> dict[str, Any]:
        h = {
            "name": name,
            "clientConfig": {
                "url": f"https://127.0.0.1:{self.port}/m",
                "caBundle": base64.b64encode(self.ca).decode(),
            },
            "rules": [rule(operations=["CREATE", "UPDATE"])],
            "timeoutSeconds": 2,
        }
        h.update(kw)
        return h


def label_adder(key: str, value: str) -> Answer:
    def answer(req: dict[str, Any]) -> dict[str, Any]:
        labels = req["object"]["metadata"].get("labels") or {}
        if labels.get(key) == value:
            return {"allowed": True}
        ops = [{"op": "add", "path": f"/metadata/labels/{key}", "value": value}]
        return {
            "allowed": True,
            "patchType": "JSONPatch",
            "patch": base64.b64encode(orjson.dumps(ops)).decode(),
        }

    return answer


@pytest.fixture
async def servers() -> AsyncIterator[list[Server]]:
    made: list[Server] = []
    try:
        yield made
    finally:
        for s in made:
            await s.stop()
        await wh.close()


async def start(servers: list[Server], answer: Answer, delay: float = 0.0) -> Server:
    s = Server(answer, delay)
    await s.start()
    servers.append(s)
    return s


def cfg(name: str, *hooks: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": name}, "webhooks": list(hooks)}


async def test_mutation_order_and_review_contents(servers: list[Server]) -> None:
    a = await start(servers, label_adder("a", "1"))
    b = await start(servers, label_adder("b", "2"))
    # configurations run by name: "x-first" before "y-second"
    configs = [cfg("y-second", b.hook("b.example.com")), cfg("x-first", a.hook("a.example.com"))]
    obj, warnings = await wh.admit(configs, attrs(name="p"), pod({"app": "x"}), None)
    assert obj["metadata"]["labels"] == {"app": "x", "a": "1", "b": "2"}
    assert warnings == []
    assert "b" not in (b.seen[0]["request"]["object"]["metadata"]["labels"])
    assert b.seen[0]["request"]["object"]["metadata"]["labels"]["a"] == "1"
    req = a.seen[0]["request"]
    assert req["operation"] == "CREATE" and req["namespace"] == "default"
    assert req["kind"] == {"group": "", "version": "v1", "kind": "Pod"}
    assert req["resource"] == {"group": "", "version": "v1", "resource": "pods"}
    assert req["oldObject"] is None and req["dryRun"] is False


async def test_reinvocation_if_needed(servers: list[Server]) -> None:
    a = await start(servers, label_adder("a", "1"))
    b = await start(servers, label_adder("b", "2"))
    configs = [
        cfg("1", a.hook("a.example.com", reinvocationPolicy="IfNeeded")),
        cfg("2", b.hook("b.example.com")),
    ]
    obj, _ = await wh.admit(configs, attrs(), pod(), None)
    assert obj["metadata"]["labels"] == {"a": "1", "b": "2"}
    assert len(a.seen) == 2 and len(b.seen) == 1
    assert a.seen[1]["request"]["object"]["metadata"]["labels"]["b"] == "2"
    # Never (the default): no second call
    a.seen.clear()
    configs[0]["webhooks"][0].pop("reinvocationPolicy")
    await wh.admit(configs, attrs(), pod(), None)
    assert len(a.seen) == 1


async def test_refusal_carries_code_and_message(servers: list[Server]) -> None:
    s = await start(
        servers,
        lambda req: {"allowed": False, "status": {"code": 403, "message": "team quota used"}},
    )
    with pytest.raises(wh.AdmissionDenied) as exc:
        await wh.admit([cfg("c", s.hook("q.example.com"))], attrs(), pod(), None)
    assert exc.value.code == 403
    assert "q.example.com" in exc.value.message and "team quota used" in exc.value.message


async def test_failure_policies_timeout_and_wrong_ca(servers: list[Server]) -> None:
    slow = await start(servers, label_adder("a", "1"), delay=1.5)
    hook = slow.hook("slow.example.com", timeoutSeconds=1)
    with pytest.raises(wh.AdmissionDenied) as exc:
        await wh.admit([cfg("c", hook)], attrs(), pod(), None)
    assert exc.value.code == 500 and "failed calling webhook" in exc.value.message
    obj, _ = await wh.admit([cfg("c", dict(hook, failurePolicy="Ignore"))], attrs(), pod(), None)
    assert obj == pod()

    # a server whose certificate the caBundle does not sign is refused
    other = await start(servers, label_adder("a", "1"))
    wrong = other.hook("w.example.com", clientConfig=dict(other.hook("x")["clientConfig"]))
    wrong["clientConfig"]["caBundle"] = base64.b64encode(slow.ca).decode()
    with pytest.raises(wh.AdmissionDenied):
        await wh.admit([cfg("c", wrong)], attrs(), pod(), None)
    assert other.seen == []

    # nothing listening
    port = other.port
    await other.stop()
    gone = slow.hook("gone.example.com")
    gone["clientConfig"]["url"] = f"https://127.0.0.1:{port}/m"
    with pytest.raises(wh.AdmissionDenied):
        await wh.admit([cfg("c", gone)], attrs(), pod(), None)


async def test_unmatched_requests_make_no_calls(servers: list[Server]) -> None:
    s = await start(servers, label_adder("a", "1"))
    configs = [cfg("c", s.hook("a.example.com"))]
    obj, _ = await wh.admit(configs, attrs(op="DELETE"), None, pod())
    obj2, _ = await wh.admit(configs, attrs(res=NODES), {"metadata": {"name": "n"}}, None)
    assert obj is None and obj2 == {"metadata": {"name": "n"}}
    assert s.seen == []
