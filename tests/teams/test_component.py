"""install_webhook: creates the MutatingWebhookConfiguration, replaces it when the URL
or CA changed (a restarted `gpuyard up` listens on a new port), writes nothing otherwise."""

from __future__ import annotations

import base64
from typing import Any

from gpuyard.kube.client import Client
from gpuyard.teams.component import MWC, install_webhook
from gpuyard.teams.webhook import CONFIG_NAME


async def test_install_webhook_creates_updates_and_leaves_alone(apiserver_inproc: Any) -> None:
    async with Client.in_process(apiserver_inproc) as k:
        await install_webhook(k, "https://127.0.0.1:1111/mutate-pods", b"CA-ONE")
        first = await k.get(MWC, CONFIG_NAME)
        cc = first["webhooks"][0]["clientConfig"]
        assert cc["url"].endswith(":1111/mutate-pods")
        assert base64.b64decode(cc["caBundle"]) == b"CA-ONE"
        assert first["webhooks"][0]["failurePolicy"] == "Fail"

        await install_webhook(k, "https://127.0.0.1:1111/mutate-pods", b"CA-ONE")
        same = await k.get(MWC, CONFIG_NAME)
        assert same["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]

        await install_webhook(k, "https://127.0.0.1:2222/mutate-pods", b"CA-TWO")
        moved = await k.get(MWC, CONFIG_NAME)
        cc = moved["webhooks"][0]["clientConfig"]
        assert cc["url"].endswith(":2222/mutate-pods")
        assert base64.b64decode(cc["caBundle"]) == b"CA-TWO"
        assert len((await k.list(MWC))["items"]) == 1
