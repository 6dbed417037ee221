"""The health component as `gpuyard up` runs it, against the embedded API server, with
simulated hosts and a stand-in kubelet that finishes gpu-test pods with the report
`simulate_report` gives (as the simulated kubelet does): Xid 79 -> NoExecute taint,
disk full -> NoSchedule taint cleared after recovery, preflight pass and a slow GPU
failing preflight."""

from __future__ import annotations

import asyncio
import contextlib
import json
import types
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gpuyard.health import component, gputest
from gpuyard.health.xid import format_xid_line
from gpuyard.kube.client import Client
from gpuyard.kube.objects import is_pod_terminal
from gpuyard.kube.resources import NODES, PODS

from .hostfiles import make_host, write_disk, write_gpus


async def _until(pred: Any, timeout: float = 20.0) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        got = await pred()
        if got:
            return got
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.1)


async def fake_kubelet(c: Client, hosts: Path, stop: asyncio.Event) -> None:
    """Finish gpu-test pods with the simulated report in the termination message."""
    done: set[str] = set()
    while not stop.is_set():
        for p in (await c.list(PODS, "gpuyard-system"))["items"]:
            name = p["metadata"]["name"]
            if name in done or is_pod_terminal(p) or p["metadata"].get("deletionTimestamp"):
                continue
            node = p["spec"]["nodeName"]
            report, code = gputest.simulate_report(hosts / node, 8)
            status = {
                "phase": "Succeeded" if code == 0 else "Failed",
                "containerStatuses": [
                    {
                        "name": "gpu-test",
                        "ready": False,
                        "restartCount": 0,
                        "image": "x",
                        "imageID": "",
                        "state": {
                            "terminated": {
                                "exitCode": code,
                                "reason": "Completed" if code == 0 else "Error",
                                "message": gputest.compact(report),
                            }
                        },
                    }
                ],
            }
            await c.patch_status(PODS, name, {"status": status}, "gpuyard-system")
            done.add(name)
        await asyncio.sleep(0.2)


def _node(name: str, preflight: bool) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": {}}
    spec: dict[str, Any] = {}
    if preflight:
        meta["labels"]["gpuyard.io/preflight"] = "true"
        spec["taints"] = [{"key": "gpuyard.io/preflight", "effect": "NoSchedule"}]
    return {"apiVersion": "v1", "kind": "Node", "metadata": meta, "spec": spec}


@pytest.fixture
def max_share(request: pytest.FixtureRequest) -> float:
    return float(getattr(request, "param", 0.5))


@pytest.fixture
def n_nodes(request: pytest.FixtureRequest) -> int:
    return int(getattr(request, "param", 6))


@pytest.fixture
async def env(
    apiserver_inproc: Any, tmp_path: Path, max_share: float, n_nodes: int
) -> AsyncIterator[tuple[Client, Path]]:
    c = Client.from_kubeconfig(apiserver_inproc.kubeconfig_path, component="health-test")
    hosts = tmp_path / "hosts"
    for i in range(n_nodes):
        name = f"node-{i}"
        make_host(hosts, name)
        await c.create(_node(name, preflight=i < 2), res=NODES)
        await c.patch_status(
            NODES,
            name,
            {
                "status": {
                    "capacity": {"nvidia.com/gpu": "8"},
                    "allocatable": {"nvidia.com/gpu": "8"},
                    "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
                }
            },
        )
    # node-1's GPU 2 runs at half speed: it must fail preflight.
    write_gpus(
        hosts / "node-1", [{"index": i, "perf_factor": 0.5 if i == 2 else 1.0} for i in range(8)]
    )
    stop = asyncio.Event()
    ctx = types.SimpleNamespace(
        client=c,
        data_dir=str(tmp_path),
        stop=stop,
        options={"health_interval_s": 0.3, "health_quiet_s": 1.0, "health_max_share": max_share},
    )
    tasks = [
        asyncio.create_task(component.run(ctx)),
        asyncio.create_task(fake_kubelet(c, hosts, stop)),
    ]
    try:
        yield c, hosts
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)
        await c.close()


def _taint(node: dict[str, Any], key: str) -> tuple[str, str] | None:
    for t in (node.get("spec") or {}).get("taints") or []:
        if t["key"] == key:
            return (t.get("value", ""), t["effect"])
    return None


async def test_faults_taint_and_recover_and_preflight(env: tuple[Client, Path]) -> None:
    c, hosts = env

    # Preflight: node-0 passes, node-1 (slow GPU) fails with the failing check.
    async def preflight_done() -> Any:
        n0, n1 = await c.get(NODES, "node-0"), await c.get(NODES, "node-1")
        ok = (
            _taint(n0, "gpuyard.io/preflight") is None
            and _taint(n1, "gpuyard.io/unhealthy") is not None
        )
        return ok and (n0, n1)

    n0, n1 = await _until(preflight_done, 30)
    assert "gpuyard.io/preflight" not in n0["metadata"]["labels"]
    assert n0["metadata"]["annotations"]["gpuyard.io/preflight-result"] == "pass"
    assert _taint(n1, "gpuyard.io/unhealthy") == ("GPUTestMatmul", "NoSchedule")
    assert n1["metadata"]["annotations"]["gpuyard.io/preflight-result"] == "fail"
    assert "matmul.gpu2" in n1["metadata"]["annotations"]["gpuyard.io/preflight-detail"]
    assert _taint(n1, "gpuyard.io/preflight") is not None  # still out of service

    # Xid 79 -> NoExecute; disk full -> NoSchedule.
    with open(hosts / "node-3" / "kern.log", "a") as f:
        f.write(format_xid_line("0000:13:00", 79, "GPU has fallen off the bus.") + "\n")
    write_disk(hosts / "node-4", free=1 << 20)

    async def both() -> bool:
        n3, n4 = await c.get(NODES, "node-3"), await c.get(NODES, "node-4")
        return _taint(n3, "gpuyard.io/unhealthy") == ("Xid79", "NoExecute") and _taint(
            n4, "gpuyard.io/unhealthy"
        ) == ("DiskFull", "NoSchedule")

    await _until(both)
    n4 = await c.get(NODES, "node-4")
    disk = next(x for x in n4["status"]["conditions"] if x["type"] == "DiskHealthy")
    assert disk["status"] == "False" and disk["reason"] == "DiskFull"
    assert any(x["type"] == "Ready" for x in n4["status"]["conditions"])

    write_disk(hosts / "node-4", free=500 << 30)

    async def cleared() -> bool:
        return _taint(await c.get(NODES, "node-4"), "gpuyard.io/unhealthy") is None

    await _until(cleared)
    # Xid 79 stays until the GPU is reset.
    assert _taint(await c.get(NODES, "node-3"), "gpuyard.io/unhealthy") == ("Xid79", "NoExecute")
    assert json.dumps(n4)  # plain dicts on the wire


@pytest.mark.parametrize(("max_share", "n_nodes"), [(0.05, 20)], indirect=True)
async def test_faults_on_a_fifth_of_nodes_trip_the_brake(env: tuple[Client, Path]) -> None:
    from gpuyard.health.controller import BRAKE_CONFIGMAP, NAMESPACE
    from gpuyard.kube.resources import CONFIGMAPS

    c, hosts = env

    # The two preflight nodes finish first (node-1 fails and takes the one taint the
    # 5% brake allows in 20 nodes); then 4 more nodes (20%) lose their disks at once.
    async def one_tainted() -> bool:
        nodes = (await c.list(NODES))["items"]
        return sum(1 for n in nodes if _taint(n, "gpuyard.io/unhealthy")) == 1

    await _until(one_tainted, 30)
    for i in range(2, 6):
        write_disk(hosts / f"node-{i}", free=1 << 20)

    async def tripped() -> Any:
        cm = await c.get_or_none(CONFIGMAPS, BRAKE_CONFIGMAP, NAMESPACE)
        return cm if cm and cm["data"]["state"] == "tripped" else None

    cm = await _until(tripped)
    assert "limit 1" in cm["data"]["message"]
    await asyncio.sleep(1.0)
    nodes = (await c.list(NODES))["items"]
    assert sum(1 for n in nodes if _taint(n, "gpuyard.io/unhealthy")) == 1
    held = set(cm["data"]["held"].split(","))
    assert {f"node-{i}" for i in range(2, 6)} <= held
    # Conditions still say what is wrong, for a person to look at.
    n2 = await c.get(NODES, "node-2")
    assert any(
        x["type"] == "DiskHealthy" and x["status"] == "False" for x in n2["status"]["conditions"]
    )


async def test_parts_share_one_watch_per_kind_of_object(
    apiserver_inproc: Any, tmp_path: Path
) -> None:
    """Controller, agents, preflight and periodic tests watch through one informer
    factory: all nodes (controller, agents and periodic tests alike), nodes in
    preflight, bound pods, and the test pods of each kind: five watches in all, not
    one per part that reads them."""
    c = Client.from_kubeconfig(apiserver_inproc.kubeconfig_path, component="health-test")
    hosts = tmp_path / "hosts"
    make_host(hosts, "node-0")
    await c.create(_node("node-0", preflight=False), res=NODES)
    stop = asyncio.Event()
    ctx = types.SimpleNamespace(
        client=c,
        data_dir=str(tmp_path),
        stop=stop,
        options={"health_interval_s": 0.3, "health_periodic": True},
    )
    task = asyncio.create_task(component.run(ctx))
    try:

        async def watching() -> bool:
            return c.requests.by_verb["watch"] >= 5

        await _until(watching)
        await asyncio.sleep(1.0)  # every part has started by now
        assert c.requests.by_verb["watch"] == 5
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)
        await c.close()
