"""CustomResourceDefinitions: serving, status subresource, scope, validation, removal."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from .api import Api
from .api import crd as api_crd

CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


def crd(scope: str = "Namespaced", plural: str = "widgets", kind: str = "Widget") -> dict[str, Any]:
    assert plural == kind.lower() + "s"
    return api_crd(
        kind,
        {
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["size"],
                    "properties": {"size": {"type": "integer", "minimum": 1}},
                },
                "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            },
        },
        scope=scope,
        short_names=["wd"] if plural == "widgets" else [],
        subresources={"status": {}},
        additionalPrinterColumns=[{"name": "Size", "type": "integer", "jsonPath": ".spec.size"}],
    )


def widget(name: str, size: int = 3) -> dict[str, Any]:
    return {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": name},
        "spec": {"size": size},
    }


W = "/apis/example.com/v1/namespaces/default/widgets"


async def test_crd_makes_resource_servable(api: Api) -> None:
    assert (await api.get(W))[0] == 404
    st, c = await api.post(CRD_PATH, crd())
    assert st == 201
    conds = {x["type"]: x["status"] for x in c["status"]["conditions"]}
    assert conds == {"NamesAccepted": "True", "Established": "True"}
    st, disc = await api.get("/apis/example.com/v1")
    assert st == 200
    res = {r["name"]: r for r in disc["resources"]}
    assert res["widgets"]["kind"] == "Widget" and res["widgets"]["shortNames"] == ["wd"]
    assert "widgets/status" in res
    _, groups = await api.get("/apis")
    assert "example.com" in {g["name"] for g in groups["groups"]}

    st, w = await api.post(W, widget("w1"))
    assert st == 201 and w["metadata"]["generation"] == 1
    st, lst = await api.get(W)
    assert st == 200 and lst["kind"] == "WidgetList" and len(lst["items"]) == 1
    st, lst = await api.get("/apis/example.com/v1/widgets")
    assert len(lst["items"]) == 1

    # status subresource: main resource ignores status, /status ignores spec
    w["status"] = {"phase": "Ready"}
    w["spec"]["size"] = 5
    _, w2 = await api.put(f"{W}/w1", w)
    assert "status" not in w2 and w2["spec"]["size"] == 5 and w2["metadata"]["generation"] == 2
    w2["status"] = {"phase": "Ready"}
    w2["spec"]["size"] = 9
    st, w3 = await api.put(f"{W}/w1/status", w2)
    assert st == 200 and w3["status"] == {"phase": "Ready"} and w3["spec"]["size"] == 5

    # merge patch works, strategic merge patch is refused for custom resources
    st, _ = await api.patch(f"{W}/w1", {"metadata": {"labels": {"a": "b"}}})
    assert st == 200
    st, err = await api.patch(
        f"{W}/w1", {"spec": {"size": 2}}, ctype="application/strategic-merge-patch+json"
    )
    assert st == 415 and err["reason"] == "UnsupportedMediaType"


async def test_cluster_scoped_crd(api: Api) -> None:
    await api.post(CRD_PATH, crd("Cluster", "gadgets", "Gadget"))
    body = widget("g1")
    body["kind"] = "Gadget"
    st, g = await api.post("/apis/example.com/v1/gadgets", body)
    assert st == 201 and "namespace" not in g["metadata"]
    assert (await api.get("/apis/example.com/v1/namespaces/default/gadgets"))[0] == 404


async def test_crd_deletion_removes_resource_and_objects(api: Api) -> None:
    await api.post(CRD_PATH, crd())
    await api.post(W, widget("w1"))
    st, _ = await api.delete(f"{CRD_PATH}/widgets.example.com")
    assert st == 200
    for _ in range(50):
        if (await api.get(W))[0] == 404:
            break
        await asyncio.sleep(0.02)
    assert (await api.get(W))[0] == 404
    await api.post(CRD_PATH, crd())
    _, lst = await api.get(W)
    assert lst["items"] == []


async def test_bad_crd_is_refused(api: Api) -> None:
    bad = crd()
    bad["metadata"]["name"] = "wrong.name"
    st, err = await api.post(CRD_PATH, bad)
    assert st == 422 and err["reason"] == "Invalid"
    bad = crd()
    bad["spec"]["scope"] = "Galaxy"
    assert (await api.post(CRD_PATH, bad))[0] == 422
    assert (await api.get("/apis/example.com/v1"))[0] == 404


async def test_schema_validation(api: Api) -> None:
    await api.post(CRD_PATH, crd())
    st, err = await api.post(W, widget("bad", size=0))
    assert st == 422 and err["reason"] == "Invalid"
    body = widget("bad2")
    del body["spec"]["size"]
    st, err = await api.post(W, body)
    assert st == 422
    assert (await api.get(f"{W}/bad"))[0] == 404


async def test_conditions_move_only_on_a_transition(api: Api) -> None:
    """An update of an established CRD keeps its conditions' lastTransitionTime, so writing
    it back unchanged is no write; a status sent with a create is the server's to set."""
    sent = crd()
    sent["status"] = {
        "conditions": [
            {"type": "Established", "status": "True", "lastTransitionTime": "2000-01-01T00:00:00Z"}
        ]
    }
    st, c = await api.post(CRD_PATH, sent)
    assert st == 201
    first = {x["type"]: x["lastTransitionTime"] for x in c["status"]["conditions"]}
    assert set(first) == {"NamesAccepted", "Established"}
    assert "2000-01-01T00:00:00Z" not in first.values()
    # Times are whole seconds: let the clock pass the creation's second.
    while time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) in first.values():
        await asyncio.sleep(0.05)
    c["metadata"]["labels"] = {"a": "b"}
    st, c2 = await api.put(f"{CRD_PATH}/widgets.example.com", c)
    assert st == 200
    assert {x["type"]: x["lastTransitionTime"] for x in c2["status"]["conditions"]} == first
    st, c3 = await api.put(f"{CRD_PATH}/widgets.example.com", c2)
    assert st == 200 and c3["metadata"]["resourceVersion"] == c2["metadata"]["resourceVersion"]
