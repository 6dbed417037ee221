"""Periodic active tests against the embedded API server, run as the health controllers'
ServiceAccount with the install's roles (gpuyard manifests): an idle node (only a
balloon) is held with the testing taint, its balloon cleared, tested and released with
last-tested recorded; a busy node is never touched, nor one running someone's
low-priority pod outside gpuyard's namespace; a failing test marks the node; nothing
the periodic asks is refused."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

import pytest

from gpuyard import manifests
from gpuyard.cluster import identities
from gpuyard.health.periodic import ANN_LAST_TESTED, PeriodicConfig, run_periodic
from gpuyard.kube.client import Client
from gpuyard.kube.resources import NODES, PODS, PRIORITY_CLASSES

from .hostfiles import make_host, write_gpus
from .test_component import _taint, _until, fake_kubelet


def _periodic_results(result: str) -> float:
    """gpuyard_health_gpu_tests_total{kind="periodic", result=...} in this process."""
    from prometheus_client import REGISTRY

    got = REGISTRY.get_sample_value(
        "gpuyard_health_gpu_tests_total", {"kind": "periodic", "result": result}
    )
    return got or 0.0


async def _pod(c: Client, name: str, node: str, prio: str, ns: str = "default") -> None:
    await c.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "nodeName": node,
                "priorityClassName": prio,
                "containers": [{"name": "c", "image": "x"}],
            },
        },
        ns,
        res=PODS,
    )
    await c.patch_status(PODS, name, {"status": {"phase": "Running"}}, ns)


async def _as_health(c: Client, server: Any) -> Client:
    """A client as gpuyard-health, under the roles `gpuyard manifests` installs."""
    await identities.install(c)
    tr = await c.request(
        "POST",
        f"/api/v1/namespaces/{manifests.NAMESPACE}/serviceaccounts/gpuyard-health/token",
        body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}},
    )
    return Client.in_process(server, token=tr["status"]["token"], component="health-periodic")


async def test_periodic_tests_idle_nodes_only(
    apiserver_inproc: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gpuyard")
    c = Client.from_kubeconfig(apiserver_inproc.kubeconfig_path, component="health-test")
    hosts = tmp_path / "hosts"
    stop = asyncio.Event()
    tasks: list[asyncio.Task[Any]] = []
    health: Client | None = None
    try:
        health = await _as_health(c, apiserver_inproc)
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
        for name in ["idle", "busy", "sick", "lent"]:
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
        await _pod(c, "balloon-1", "idle", "gpuyard-balloon", manifests.NAMESPACE)
        await _pod(c, "train-1", "busy", "gpuyard-normal")
        await _pod(c, "scavenger-1", "lent", "gpuyard-balloon")  # not gpuyard's balloon
        cfg = PeriodicConfig(max_concurrent=2, max_starts_per_hour=10, timeout_s=60)
        before = {r: _periodic_results(r) for r in ("pass", "fail")}
        tasks = [
            asyncio.create_task(run_periodic(health, stop, cfg, period_s=0.2)),
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
        for name in ("busy", "lent"):
            n = await c.get(NODES, name)
            assert ANN_LAST_TESTED not in (n["metadata"].get("annotations") or {}), name
            assert _taint(n, "gpuyard.io/testing") is None, name
        assert await c.get_or_none(PODS, "train-1", "default") is not None
        scavenger = await c.get_or_none(PODS, "scavenger-1", "default")
        assert scavenger is not None and not scavenger["metadata"].get("deletionTimestamp")
        balloon = await c.get_or_none(PODS, "balloon-1", manifests.NAMESPACE)
        assert balloon is None or balloon["metadata"].get("deletionTimestamp")
        # each result counted once on the process's metrics (what /metrics serves)

        async def counted() -> bool:
            return all(_periodic_results(r) - before[r] == 1 for r in ("pass", "fail"))

        await _until(counted, 10)
        refused = [r.getMessage() for r in caplog.records if "forbidden" in r.getMessage().lower()]
        assert refused == []
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)
        if health is not None:
            await health.close()
        await c.close()
