"""Mutating webhooks on subresource writes, over HTTPS: a webhook whose rule names
`deployments/status` mutates a status write (the AdmissionReview says subResource
status), one on `deployments` is not called for it, and what a webhook changes outside
the status through /status is dropped, as kube-apiserver's status strategy drops it."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
from aiohttp import web

from .api import Api, pod
from .test_admission_policy import deploy
from .test_crd import CRD_PATH, W, crd, widget
from .test_webhook import WH, Hook

DEPLOYS = "/apis/apps/v1/namespaces/default/deployments"
PODS = "/api/v1/namespaces/default/pods"
CONDITION = {"type": "Audited", "status": "True", "reason": "SeenByWebhook"}
ENV = {"name": "DEBUG_BY", "value": "webhook"}


def _status_ops(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """Add a status condition, set the replicas to 7 and add a label."""
    ops: list[dict[str, Any]] = []
    if "status" not in obj:
        ops.append({"op": "add", "path": "/status", "value": {}})
    if "conditions" not in (obj.get("status") or {}):
        ops.append({"op": "add", "path": "/status/conditions", "value": []})
    ops.append({"op": "add", "path": "/status/conditions/-", "value": CONDITION})
    ops.append({"op": "replace", "path": "/spec/replicas", "value": 7})
    return ops + _label_ops(obj)


def _label_ops(obj: dict[str, Any]) -> list[dict[str, Any]]:
    ops: list[dict[str, Any]] = []
    if not (obj.get("metadata") or {}).get("labels"):
        ops.append({"op": "add", "path": "/metadata/labels", "value": {}})
    ops.append({"op": "add", "path": "/metadata/labels/mutated", "value": "yes"})
    return ops


def _debug_ops(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """Give the last ephemeral container an env var; also set a pod deadline and a label."""
    last = len(obj["spec"]["ephemeralContainers"]) - 1
    return [
        {"op": "add", "path": f"/spec/ephemeralContainers/{last}/env", "value": [ENV]},
        {"op": "add", "path": "/spec/activeDeadlineSeconds", "value": 5},
        *_label_ops(obj),
    ]


def _widget_ops(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """Mark a custom object's status audited; also resize its spec."""
    ops: list[dict[str, Any]] = []
    if "status" not in obj:
        ops.append({"op": "add", "path": "/status", "value": {}})
    ops.append({"op": "add", "path": "/status/audited", "value": True})
    ops.append({"op": "replace", "path": "/spec/size", "value": 9})
    return ops


def _cap_ops(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """Cap a Scale's replicas at 4."""
    if obj["spec"].get("replicas", 0) <= 4:
        return []
    return [{"op": "replace", "path": "/spec/replicas", "value": 4}]


class StatusHook(Hook):
    """Answers every review with the JSONPatch that `ops` makes of its object (by
    default `_status_ops`); records each review it gets."""

    ops: Callable[[dict[str, Any]], list[dict[str, Any]]] = staticmethod(_status_ops)

    async def handle(self, request: web.Request) -> web.Response:
        review = await request.json()
        self.requests.append(review)
        req = review["request"]
        ops = self.ops(req["object"])
        return web.json_response(
            {
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "response": {
                    "uid": req["uid"],
                    "allowed": True,
                    "patchType": "JSONPatch",
                    "patch": base64.b64encode(orjson.dumps(ops)).decode(),
                },
            }
        )


@pytest.fixture
async def status_hook() -> AsyncIterator[StatusHook]:
    h = StatusHook()
    await h.start()
    try:
        yield h
    finally:
        await h.stop()


def config(h: Hook, name: str, resources: list[str], group: str = "apps") -> dict[str, Any]:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [
            {
                "name": f"{name}.example.com",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 5,
                "clientConfig": {
                    "url": f"https://127.0.0.1:{h.port}/mutate",
                    "caBundle": base64.b64encode(h.ca).decode(),
                },
                "rules": [
                    {
                        "operations": ["UPDATE"],
                        "apiGroups": [group],
                        "apiVersions": ["v1"],
                        "resources": resources,
                    }
                ],
            }
        ],
    }


async def test_a_status_webhook_mutates_status_writes_and_only_their_status(
    api: Api, status_hook: StatusHook
) -> None:
    code, out = await api.post(DEPLOYS, deploy("web", 1))
    assert code == 201, out
    code, out = await api.post(WH, config(status_hook, "status-audit", ["deployments/status"]))
    assert code == 201, out

    code, out = await api.patch(f"{DEPLOYS}/web/status", {"status": {"observedGeneration": 1}})
    assert code == 200, out
    assert out["status"]["observedGeneration"] == 1
    assert CONDITION in out["status"]["conditions"]
    # the webhook also set spec.replicas and a label: a status write changes neither
    assert out["spec"]["replicas"] == 1
    assert "mutated" not in (out["metadata"].get("labels") or {})
    code, stored = await api.get(f"{DEPLOYS}/web")
    assert code == 200
    assert CONDITION in stored["status"]["conditions"]
    assert stored["spec"]["replicas"] == 1
    assert stored["metadata"]["generation"] == out["metadata"]["generation"]
    assert "mutated" not in (stored["metadata"].get("labels") or {})

    assert len(status_hook.requests) == 1
    req = status_hook.requests[0]["request"]
    assert req["operation"] == "UPDATE"
    assert req["resource"] == {"group": "apps", "version": "v1", "resource": "deployments"}
    assert req["subResource"] == "status" and req["requestSubResource"] == "status"
    assert req["object"]["status"]["observedGeneration"] == 1
    assert "observedGeneration" not in (req["oldObject"].get("status") or {})

    # a write of the object itself is not a status write: this webhook is not called
    code, out = await api.patch(f"{DEPLOYS}/web", {"metadata": {"labels": {"tier": "a"}}})
    assert code == 200, out
    assert len(status_hook.requests) == 1
    assert out["spec"]["replicas"] == 1

    # a full PUT of the status is mutated the same way
    code, stored = await api.get(f"{DEPLOYS}/web")
    stored["status"] = {"observedGeneration": 2}
    code, out = await api.put(f"{DEPLOYS}/web/status", stored)
    assert code == 200, out
    assert out["status"]["conditions"] == [CONDITION]
    assert out["spec"]["replicas"] == 1
    assert len(status_hook.requests) == 2


async def test_a_webhook_on_the_object_is_not_called_for_its_status(
    api: Api, status_hook: StatusHook
) -> None:
    code, out = await api.post(DEPLOYS, deploy("api", 2))
    assert code == 201, out
    code, out = await api.post(WH, config(status_hook, "object-only", ["deployments"]))
    assert code == 201, out

    code, out = await api.patch(f"{DEPLOYS}/api/status", {"status": {"observedGeneration": 1}})
    assert code == 200, out
    assert status_hook.requests == []
    assert "conditions" not in out["status"]

    # the same webhook is live for writes of the object (and sets its replicas there)
    code, out = await api.patch(f"{DEPLOYS}/api", {"metadata": {"labels": {"tier": "b"}}})
    assert code == 200, out
    assert len(status_hook.requests) == 1
    assert "subResource" not in status_hook.requests[0]["request"]
    assert out["spec"]["replicas"] == 7
    assert out["metadata"]["labels"]["mutated"] == "yes"
    # status is the status subresource's to write: not changed through the object
    assert "conditions" not in out["status"]


async def test_an_ephemeral_containers_webhook_changes_only_ephemeral_containers(
    api: Api, status_hook: StatusHook
) -> None:
    status_hook.ops = _debug_ops  # an instance attribute: not bound as a method
    code, out = await api.post(PODS, pod("p"))
    assert code == 201, out
    code, out = await api.post(
        WH, config(status_hook, "debug-env", ["pods/ephemeralcontainers"], group="")
    )
    assert code == 201, out
    # a write of the pod itself is not covered by that rule
    code, out = await api.patch(f"{PODS}/p", {"metadata": {"labels": {"a": "b"}}})
    assert code == 200, out
    assert status_hook.requests == [] and out["metadata"]["labels"] == {"a": "b"}

    eph = {"name": "dbg", "image": "busybox"}
    code, out = await api.patch(
        f"{PODS}/p/ephemeralcontainers",
        {"spec": {"ephemeralContainers": [eph]}},
        "application/strategic-merge-patch+json",
    )
    assert code == 200, out
    assert [c.get("env") for c in out["spec"]["ephemeralContainers"]] == [[ENV]]
    # the deadline and the label the webhook also set are not the subresource's to write
    assert "activeDeadlineSeconds" not in out["spec"]
    assert out["metadata"]["labels"] == {"a": "b"}
    _, stored = await api.get(f"{PODS}/p")
    assert stored["spec"]["ephemeralContainers"][0]["env"] == [ENV]
    assert "activeDeadlineSeconds" not in stored["spec"]
    req = status_hook.requests[0]["request"]
    assert req["subResource"] == "ephemeralcontainers"
    assert [c["name"] for c in req["object"]["spec"]["ephemeralContainers"]] == ["dbg"]


async def test_a_custom_objects_status_webhook(api: Api, status_hook: StatusHook) -> None:
    status_hook.ops = _widget_ops  # an instance attribute: not bound as a method
    code, out = await api.post(CRD_PATH, crd())
    assert code == 201, out
    code, out = await api.post(W, widget("w1", size=3))
    assert code == 201, out
    code, out = await api.post(
        WH, config(status_hook, "widget-audit", ["*/status"], group="example.com")
    )
    assert code == 201, out
    code, out = await api.patch(f"{W}/w1/status", {"status": {"phase": "Ready"}})
    assert code == 200, out
    assert out["status"] == {"phase": "Ready", "audited": True}
    assert out["spec"] == {"size": 3}
    _, stored = await api.get(f"{W}/w1")
    assert stored["status"] == {"phase": "Ready", "audited": True} and stored["spec"]["size"] == 3
    req = status_hook.requests[0]["request"]
    assert req["resource"]["resource"] == "widgets" and req["subResource"] == "status"
    # `*/status` does not cover a write of the object
    code, out = await api.patch(f"{W}/w1", {"spec": {"size": 4}})
    assert code == 200, out
    assert len(status_hook.requests) == 1 and out["spec"]["size"] == 4


async def test_a_scale_webhook_sees_the_scale_and_sets_its_replicas(
    api: Api, status_hook: StatusHook
) -> None:
    status_hook.ops = _cap_ops  # an instance attribute: not bound as a method
    code, out = await api.post(DEPLOYS, deploy("big", 1))
    assert code == 201, out
    code, out = await api.post(WH, config(status_hook, "cap", ["deployments/scale"]))
    assert code == 201, out
    code, out = await api.patch(f"{DEPLOYS}/big/scale", {"spec": {"replicas": 10}})
    assert code == 200, out
    assert out["kind"] == "Scale" and out["spec"]["replicas"] == 4
    _, stored = await api.get(f"{DEPLOYS}/big")
    assert stored["spec"]["replicas"] == 4
    req = status_hook.requests[0]["request"]
    assert req["kind"] == {"group": "autoscaling", "version": "v1", "kind": "Scale"}
    assert req["resource"] == {"group": "apps", "version": "v1", "resource": "deployments"}
    assert req["subResource"] == "scale"
    assert req["object"]["spec"] == {"replicas": 10}
    assert req["oldObject"]["kind"] == "Scale" and req["oldObject"]["spec"] == {"replicas": 1}
    # within the cap the webhook changes nothing
    code, out = await api.put(f"{DEPLOYS}/big/scale", dict(out, spec={"replicas": 3}))
    assert code == 200, out
    assert out["spec"]["replicas"] == 3 and len(status_hook.requests) == 2
