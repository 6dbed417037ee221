"""The simulated kubelet against the embedded API server (in process, persistent): a pod
whose Running status write is refused (here the disk is full for a moment, 507) is
started again once writes are accepted, instead of staying Pending forever."""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
from typing import Any

from gpuyard.apiserver.server import APIServer
from gpuyard.cluster.shapes import default_shapes
from gpuyard.cluster.sim import SimCluster, SimConfig
from gpuyard.kube.client import Client
from gpuyard.kube.resources import PODS


async def test_a_refused_start_is_tried_again(tmp_path: Any) -> None:
    srv = APIServer(str(tmp_path / "api"), port=0, bookmark_interval=0.5)
    await srv.start()
    db = srv.store._db
    assert db is not None
    real = db.write
    refused: list[int] = []

    def write(ops: Any, rev: int) -> None:
        # The first commit holding the pod's Running status hits a full disk.
        if not refused and any(o[0] == "pods" and o[3] and b'"Running"' in o[3] for o in ops):
            refused.append(rev)
            raise sqlite3.OperationalError("database or disk is full")
        real(ops, rev)

    db.write = write  # type: ignore[method-assign]
    srv.store.probe_interval = 0.2
    client = Client.from_kubeconfig(srv.kubeconfig_path, component="test")
    sim = SimCluster(
        client, tempfile.mkdtemp(dir=tmp_path), default_shapes(1), SimConfig(start_delay=0.05)
    )
    try:
        await sim.start()
        node = next(iter(sim.nodes))
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"nodeName": node, "containers": [{"name": "main", "image": "busybox"}]},
        }
        await client.create(pod)
        for _ in range(200):
            got = await client.get(PODS, "p", "default")
            if (got.get("status") or {}).get("phase") == "Running":
                break
            await asyncio.sleep(0.05)
        assert refused, "the Running status write was never refused: the test proves nothing"
        assert got["status"]["phase"] == "Running", got.get("status")
        assert got["status"]["containerStatuses"][0]["ready"] is True
    finally:
        await sim.stop()
        await client.close()
        await srv.stop()
