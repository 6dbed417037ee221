"""Fixtures for the client-layer tests: `kube`, a Client on the `apiserver` fixture."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from gpuyard.kube.client import Client


@pytest.fixture
async def kube(apiserver: Any) -> AsyncIterator[Client]:
    c = Client.from_kubeconfig(apiserver.kubeconfig, component="test")
    try:
        yield c
    finally:
        await c.close()


def cm(name: str, ns: str = "default", **data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns},
        "data": dict(data),
    }


def pod(name: str, ns: str = "default", node: str = "", labels: dict | None = None) -> dict:
    p: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels or {}},
        "spec": {"containers": [{"name": "main", "image": "busybox"}]},
    }
    if node:
        p["spec"]["nodeName"] = node
    return p
