"""Periodic active tests against the embedded API server: an idle node (only a balloon)
is held with the testing taint, its balloon cleared, tested and released with
last-tested recorded; a busy node is never touched; a failing test marks the node."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from gpuyard.health.periodic import ANN_LAST_TESTED, PeriodicConfig, run_periodic
from gpuyard.kube.client import Client
from gpuyard.kube.resources import NODES, PODS, PRIORITY_CLASSES

from .hostfiles import make_host, write_gpus
from .test_component import _taint, _until, fake_kubelet


async def _pod(c: Client, name: str, node: str, prio: str) -> None:
    await c.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {
                "nodeName": node,
                "priorityClassName": prio,
                "containers": [{"name": "c", "image": "x"}],
            },
        },
        "default",
        res=PODS,
    )
    await c.patch_status(PODS, name, {"status": {"phase": "Running"}}, "default")


async def test_periodic_tests_idle_nodes_only(apiserver_inproc: Any, tmp_path: Path) -> None:
    c = Client.from_kubeconfig(apiserver_inproc.kubeconfig_path, component="health-test")
    hosts = tmp_path / "hosts"
    stop = asyncio.Event()
    tasks: list[asyncio.Task[Any]] = []
    try:
        for name, value in [
            ("gpuyard-balloon", -1000),
            ("gpuyard-normal", 1000),
            ("gpuyard-high", 10000),
        ]:
            await c.create(
                {
                    "apiVersion": "scheduling.k8s.io/v1",
                    "kind": "PriorityClass",
                    "metadata": {"name": name},
                    "value": value,
                },
                res=PRIORITY_CLASSES,
            )
        for name in ["idle", "busy", "sick"]:
            make_host(hosts, name)
            await c.create(
                {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}, res=NODES
            )
            await c.patch_status(
                NODES,
                name,
                {
                    "status": {
                        "allocatable": {"nvidia.com/gpu": "8"},
                        "conditions": [{"type": "Ready", "status": "True"}],
                    }
                },
            )
        write_gpus(hosts / "sick", [{"index": i, "perf_factor": 0.3} for i in range(8)])
        await _pod(c, "balloon-1", "idle", "gpuyard-balloon")
        await _pod(c, "train-1", "busy", "gpuyard-normal")
        cfg = PeriodicConfig(max_concurrent=2, max_starts_per_hour=10, timeout_s=60)
        tasks = [
            asyncio.create_task(run_periodic(c, stop, cfg, period_s=0.2)),
            asyncio.create_task(fake_kubelet(c, hosts, stop)),
        ]

        async def tested() -> Any:
            idle, sick = await c.get(NODES, "idle"), await c.get(NODES, "sick")
            ann_i = idle["metadata"].get("annotations") or {}
            ann_s = sick["metadata"].get("annotations") or {}
            return ANN_LAST_TESTED in ann_i and ANN_LAST_TESTED in ann_s and (idle, sick)

        idle, sick = await _until(tested, 30)
        assert idle["metadata"]["annotations"]["gpuyard.io/last-test-result"] == "pass"
        assert _taint(idle, "gpuyard.io/testing") is None
        assert sick["metadata"]["annotations"]["gpuyard.io/last-test-result"] == "fail"
        cond = next(x for x in sick["status"]["conditions"] if x["type"] == "GPUTestPassed")
        assert cond["status"] == "False" and cond["reason"] == "GPUTestMatmul"
        busy = await c.get(NODES, "busy")
        assert ANN_LAST_TESTED not in (busy["metadata"].get("annotations") or {})
        assert _taint(busy, "gpuyard.io/testing") is None
        assert await c.get_or_none(PODS, "train-1", "default") is not None
        balloon = await c.get_or_none(PODS, "balloon-1", "default")
        assert balloon is None or balloon["metadata"].get("deletionTimestamp")
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)
        await c.close()
