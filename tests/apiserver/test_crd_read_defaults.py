"""Custom objects pruned and defaulted by their CRD's schema on every path: on read (GET,
LIST, WATCH's initial events, /scale) by the schema of now, and on create, update,
patch, server-side apply, /status and a mutating webhook's answer (raw HTTP)."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import orjson
import pytest
from aiohttp import web

from .api import Api, crd
from .test_webhook import Hook

CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
G = "/apis/example.com/v1/namespaces/default/gadgets"


def gadget_crd(spec_props: dict[str, Any]) -> dict[str, Any]:
    return crd(
        "Gadget",
        {
            "type": "object",
            "properties": {
                "spec": {"type": "object", "properties": spec_props},
                "status": {"type": "object", "properties": {"replicas": {"type": "integer"}}},
            },
        },
        subresources={
            "status": {},
            "scale": {
                "specReplicasPath": ".spec.replicas",
                "statusReplicasPath": ".status.replicas",
            },
        },
    )


BASE = {"size": {"type": "integer"}, "legacy": {"type": "string"}}
LATER = {
    "size": {"type": "integer"},
    "color": {"type": "string", "default": "blue"},
    "replicas": {"type": "integer", "default": 2},
}


def gadget(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "example.com/v1",
        "kind": "Gadget",
        "metadata": {"name": name},
        "spec": {"size": 1, **spec},
    }


async def _install(api: Api, props: dict[str, Any]) -> None:
    st, cur = await api.get(f"{CRDS}/gadgets.example.com")
    if st == 404:
        st, out = await api.post(CRDS, gadget_crd(props))
        assert st == 201, out
        return
    new = gadget_crd(props)
    new["metadata"]["resourceVersion"] = cur["metadata"]["resourceVersion"]
    st, out = await api.put(f"{CRDS}/gadgets.example.com", new)
    assert st == 200, out


async def test_reads_default_and_prune_by_the_schema_of_now(api: Api) -> None:
    await _install(api, BASE)
    st, old = await api.post(G, gadget("old", legacy="kept then dropped"))
    assert st == 201, old
    assert old["spec"] == {"size": 1, "legacy": "kept then dropped"}
    rv = old["metadata"]["resourceVersion"]

    # The CRD gains defaults and loses `legacy`: reads show the object by that schema.
    await _install(api, LATER)
    want = {"size": 1, "color": "blue", "replicas": 2}
    st, got = await api.get(f"{G}/old")
    assert st == 200 and got["spec"] == want, got
    assert got["metadata"]["resourceVersion"] == rv  # read, not written back
    st, lst = await api.get(G)
    assert [o["spec"] for o in lst["items"]] == [want]
    events = await api.watch(G, 1, timeout=3)
    assert events and events[0]["type"] == "ADDED" and events[0]["object"]["spec"] == want
    st, sc = await api.get(f"{G}/old/scale")
    assert st == 200 and sc["spec"]["replicas"] == 2  # the defaulted spec.replicas

    # The CRD changes back: the same stored revision reads by that schema again.
    await _install(api, BASE)
    st, got = await api.get(f"{G}/old")
    assert got["spec"] == {"size": 1, "legacy": "kept then dropped"}
    await _install(api, LATER)

    # A watch from now on shows it so too when the stored object goes.
    _, two = await api.post(G, gadget("two"))
    await _install(api, {"size": {"type": "integer"}, "shade": {"type": "string", "default": "x"}})
    _, now = await api.get(G)
    watching = asyncio.create_task(
        api.watch(G, 1, timeout=5, resourceVersion=now["metadata"]["resourceVersion"])
    )
    await asyncio.sleep(0.3)
    st, gone = await api.delete(f"{G}/two")
    assert st == 200, gone
    (ev,) = await watching
    assert ev["type"] == "DELETED" and ev["object"]["spec"] == {"size": 1, "shade": "x"}, ev
    await _install(api, LATER)

    # A write starts from what a read shows: a label patch stores the defaults too.
    st, out = await api.patch(f"{G}/old", {"metadata": {"labels": {"a": "b"}}})
    assert st == 200 and out["spec"] == want, out
    assert out["metadata"]["resourceVersion"] != rv
    await _install(api, {"size": {"type": "integer"}})  # without defaults now
    _, got = await api.get(f"{G}/old")
    assert got["spec"] == {"size": 1}  # color and replicas were written, then pruned


async def test_status_write_keeps_the_defaulted_spec(api: Api) -> None:
    await _install(api, BASE)
    assert (await api.post(G, gadget("g")))[0] == 201
    await _install(api, LATER)
    _, cur = await api.get(f"{G}/g")
    cur["status"] = {"replicas": 1}
    st, out = await api.put(f"{G}/g/status", cur)
    assert st == 200, out
    assert out["spec"] == {"size": 1, "color": "blue", "replicas": 2}
    assert out["status"] == {"replicas": 1}


WRITES = ["create", "update", "merge-patch", "json-patch", "apply-create", "apply", "status"]


@pytest.mark.parametrize("path", WRITES)
async def test_every_write_path_prunes_and_defaults(api: Api, path: str) -> None:
    await _install(api, LATER)
    body = gadget("w", bogus="x")
    body["status"] = {"replicas": 3, "bogus": "y"}
    q = {"fieldValidation": "Ignore"}
    if path != "create" and path != "apply-create":
        st, out = await api.post(G, gadget("w"))
        assert st == 201, out
    if path == "create":
        st, out = await api.post(G, body, **q)
    elif path == "update":
        _, cur = await api.get(f"{G}/w")
        body["metadata"]["resourceVersion"] = cur["metadata"]["resourceVersion"]
        st, out = await api.put(f"{G}/w", body, **q)
    elif path == "merge-patch":
        st, out = await api.patch(f"{G}/w", {"spec": {"bogus": "x", "color": None}}, **q)
    elif path == "json-patch":
        ops = [{"op": "add", "path": "/spec/bogus", "value": "x"}]
        st, out = await api.patch(f"{G}/w", ops, "application/json-patch+json", **q)
    elif path in ("apply-create", "apply"):
        st, out = await api.patch(
            f"{G}/w", body, "application/apply-patch+yaml", fieldManager="t", force=True, **q
        )
    else:
        _, cur = await api.get(f"{G}/w")
        cur["spec"]["bogus"] = "x"
        cur["status"] = {"replicas": 3, "bogus": "y"}
        st, out = await api.put(f"{G}/w/status", cur, **q)
    assert st in (200, 201), out
    _, got = await api.get(f"{G}/w")
    for seen in (out, got):
        assert seen["spec"] == {"size": 1, "color": "blue", "replicas": 2}, seen
        assert "bogus" not in (seen.get("status") or {}), seen
    # Under Strict the same unknown field is refused, naming it.
    st, err = await api.patch(f"{G}/w", {"spec": {"bogus": "x"}}, fieldValidation="Strict")
    assert st == 400 and 'unknown field "spec.bogus"' in err["message"], err


class _Adder(Hook):
    """A mutating webhook that adds a field the Gadget schema lacks, and clears one."""

    async def handle(self, request: web.Request) -> web.Response:
        review = await request.json()
        self.requests.append(review)
        ops = [
            {"op": "add", "path": "/spec/bogus", "value": "from the webhook"},
            {"op": "remove", "path": "/spec/color"},
        ]
        return web.json_response(
            {
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "response": {
                    "uid": review["request"]["uid"],
                    "allowed": True,
                    "patchType": "JSONPatch",
                    "patch": base64.b64encode(orjson.dumps(ops)).decode(),
                },
            }
        )


async def test_a_mutating_webhooks_answer_is_pruned_and_defaulted(api: Api) -> None:
    await _install(api, LATER)
    hook = _Adder()
    await hook.start()
    try:
        cfg = {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": "adder"},
            "webhooks": [
                {
                    "name": "adder.example.com",
                    "sideEffects": "None",
                    "admissionReviewVersions": ["v1"],
                    "timeoutSeconds": 2,
                    "clientConfig": {
                        "url": f"https://127.0.0.1:{hook.port}/mutate",
                        "caBundle": base64.b64encode(hook.ca).decode(),
                    },
                    "rules": [
                        {
                            "operations": ["CREATE"],
                            "apiGroups": ["example.com"],
                            "apiVersions": ["v1"],
                            "resources": ["gadgets"],
                        }
                    ],
                }
            ],
        }
        st, out = await api.post(
            "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations", cfg
        )
        assert st == 201, out
        st, out = await api.post(G, gadget("m", color="red"), fieldValidation="Strict")
        assert st == 201, out
        assert hook.requests, "the webhook was not called"
        # The webhook's unknown field is dropped (not an error, even under Strict) and
        # the field it removed gets its default again.
        assert out["spec"] == {"size": 1, "color": "blue", "replicas": 2}, out
    finally:
        await hook.stop()
