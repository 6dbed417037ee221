"""A component reading through the process's shared watches (`gpuyard up`) is held to
its own RBAC: its view gets the objects only once its own identity may list and
watch them, as its own informer would on a real cluster."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from gpuyard.apiserver.authn import AUTHENTICATED, UserInfo
from gpuyard.kube.client import Client
from gpuyard.kube.errors import Forbidden
from gpuyard.kube.informer import InformerFactory, informer_maker
from gpuyard.kube.resources import PODS

from .conftest import pod

RBAC = "rbac.authorization.k8s.io/v1"


def role(verbs: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": RBAC,
        "kind": "ClusterRole",
        "metadata": {"name": "pod-reader"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": verbs}],
    }


async def test_a_view_reads_only_what_its_own_identity_may(
    apiserver_inproc: Any, caplog: pytest.LogCaptureFixture
) -> None:
    admin = Client.in_process(apiserver_inproc, component="cluster")
    user = UserInfo(
        "system:serviceaccount:default:reader", ("system:serviceaccounts", AUTHENTICATED)
    )
    reader = Client.in_process(apiserver_inproc, component="reader", user=user)
    factory = InformerFactory(admin, views=True)
    try:
        await admin.create(pod("p1"))
        # list but not watch: the view waits, saying what is missing, and holds nothing
        await admin.create(role(["get", "list"]))
        await admin.create(
            {
                "apiVersion": RBAC,
                "kind": "ClusterRoleBinding",
                "metadata": {"name": "pod-reader"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "pod-reader",
                },
                "subjects": [{"kind": "User", "name": user.name}],
            }
        )
        mine = informer_maker(reader, factory)(PODS, name="reader-pods")
        theirs = factory.informer(PODS, name="cluster-pods")  # the factory's own identity
        assert mine.source is theirs.source  # still the one watch
        with caplog.at_level(logging.WARNING, logger="gpuyard.kube.informer"):
            mine.start()
            theirs.start()
            await theirs.wait_synced(10)
            with pytest.raises(asyncio.TimeoutError):
                await mine.wait_synced(1.5)
        assert not mine.cache and "default/p1" in theirs.cache
        assert isinstance(mine.last_error, Forbidden)
        assert "reader may not watch pods" in str(mine.last_error)
        assert any("may not watch pods" in r.getMessage() for r in caplog.records)
        # granted watch: the view syncs from the shared watch and follows it
        r = await admin.get(("rbac.authorization.k8s.io/v1", "ClusterRole"), "pod-reader")
        r["rules"][0]["verbs"] = ["get", "list", "watch"]
        await admin.replace(r)
        await mine.wait_synced(15)
        assert "default/p1" in mine.cache
        await admin.create(pod("p2"))
        for _ in range(100):
            if "default/p2" in mine.cache:
                break
            await asyncio.sleep(0.05)
        assert "default/p2" in mine.cache
        await mine.stop()
        await theirs.stop()
    finally:
        await factory.stop()
        await reader.close()
        await admin.close()
