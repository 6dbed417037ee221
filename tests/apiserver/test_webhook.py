"""Mutating admission webhooks called over HTTPS (a test webhook server with its own CA)."""

from __future__ import annotations

import base64
import ssl
import tempfile
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import web

from gpuyard.apiserver.tls import make_ca_and_cert

from .api import Api, pod

NS = "/api/v1/namespaces/default"
WH = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"


class Hook:
    def __init__(self) -> None:
        self.ca, cert, key = make_ca_and_cert(["127.0.0.1"])
        d = tempfile.mkdtemp(prefix="gpuyard-webhook-")
        self.cert_file, self.key_file = f"{d}/tls.crt", f"{d}/tls.key"
        with open(self.cert_file, "wb") as f:
            f.write(cert)
        with open(self.key_file, "wb") as f:
            f.write(key)
        self.requests: list[dict[str, Any]] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def handle(self, request: web.Request) -> web.Response:
        review = await request.json()
        self.requests.append(review)
        req = review["request"]
        labels = (req["object"].get("metadata") or {}).get("labels")
        ops: list[dict[str, Any]] = []
        if not labels:
            ops.append({"op": "add", "path": "/metadata/labels", "value": {}})
        ops.append({"op": "add", "path": "/metadata/labels/mutated", "value": "yes"})
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

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/mutate", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.cert_file, self.key_file)
        site = web.TCPSite(self.runner, "127.0.0.1", self.port, ssl_context=ctx)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@pytest.fixture
async def hook() -> AsyncIterator[Hook]:
    h = Hook()
    await h.start()
    try:
        yield h
    finally:
        await h.stop()


def config(h: Hook, policy: str) -> dict[str, Any]:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "labeler"},
        "webhooks": [
            {
                "name": "labeler.example.com",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "failurePolicy": policy,
                "timeoutSeconds": 2,
                "clientConfig": {
                    "url": f"https://127.0.0.1:{h.port}/mutate",
                    "caBundle": base64.b64encode(h.ca).decode(),
                },
                "rules": [
                    {
                        "operations": ["CREATE"],
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "resources": ["pods"],
                    }
                ],
            }
        ],
    }


async def test_webhook_mutates_and_failure_policy(api: Api, hook: Hook) -> None:
    st, _ = await api.post(WH, config(hook, "Fail"))
    assert st == 201
    st, p = await api.post(f"{NS}/pods", pod("p1", {"app": "x"}))
    assert st == 201, p
    _, stored = await api.get(f"{NS}/pods/p1")
    assert stored["metadata"]["labels"] == {"app": "x", "mutated": "yes"}
    assert hook.requests[0]["request"]["operation"] == "CREATE"
    # configmaps are not matched by the rules
    st, c = await api.post(f"{NS}/configmaps", {"metadata": {"name": "c"}})
    assert st == 201 and not c["metadata"].get("labels")

    await hook.stop()
    st, err = await api.post(f"{NS}/pods", pod("p2"))
    assert st >= 400 and err["kind"] == "Status"
    assert (await api.get(f"{NS}/pods/p2"))[0] == 404

    _, cfg = await api.get(f"{WH}/labeler")
    cfg["webhooks"][0]["failurePolicy"] = "Ignore"
    assert (await api.put(f"{WH}/labeler", cfg))[0] == 200
    st, p3 = await api.post(f"{NS}/pods", pod("p3"))
    assert st == 201 and "mutated" not in (p3["metadata"].get("labels") or {})
