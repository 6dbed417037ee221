"""End to end on `gpuyard up` (a subprocess; faults injected with `gpuyard fault`):
a slow GPU fails preflight while a healthy node passes; an injected Xid 79 taints its
node NoExecute; a full disk taints with the disk reason and clears after recovery;
faults on 20% of the nodes trip the brake, which a person resets.

A TrainingJob worker on an Xid 79 node restarts elsewhere (below); the node's
replacement by the autoscaler and its preflight are in test_replacement.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gpuyard.cluster.shapes import default_shapes
from gpuyard.cluster.testing import ClusterProcess, start_cluster_process
from gpuyard.kube.resources import CONFIGMAPS, EVENTS, NODES
from tests.metrics.scrape import scrape, value

FAST = [
    "--lease-seconds",
    "1",
    "--node-grace",
    "5",
    "--start-delay",
    "0.2",
    "--set",
    "health_interval_s=0.5",
    "--set",
    "health_quiet_s=2",
]


def _start(
    tmp_path: Path, nodes: int, args: list[str], slow: dict[str, float] | None = None
) -> ClusterProcess:
    data = tmp_path / "c"
    for name, factor in (slow or {}).items():  # a host that is slow from the start
        host = data / "hosts" / name
        host.mkdir(parents=True)
        product = default_shapes(1)[0].gpu_product
        (host / "gpus.json").write_text(
            json.dumps(
                {
                    "gpus": [
                        {
                            "index": i,
                            "pci": f"0000:{0x18 + 0x10 * i:02x}:00.0",
                            "product": product,
                            "present": True,
                            "perf_factor": factor if i == 2 else 1.0,
                        }
                        for i in range(8)
                    ]
                }
            )
        )
    return start_cluster_process(data, nodes, [*FAST, *args])


@pytest.fixture
def preflight_cluster(tmp_path: Path) -> Iterator[ClusterProcess]:
    c = _start(
        tmp_path, 5, ["--preflight", "--set", "health_max_share=1.0"], slow={"gpu-node-0001": 0.5}
    )
    try:
        yield c
    finally:
        c.kill()


@pytest.fixture
def ten_nodes(tmp_path: Path) -> Iterator[ClusterProcess]:
    c = _start(tmp_path, 10, [])
    try:
        yield c
    finally:
        c.kill()


def _taint(node: dict[str, Any], key: str) -> tuple[str, str] | None:
    for t in (node.get("spec") or {}).get("taints") or []:
        if t["key"] == key:
            return (t.get("value", ""), t["effect"])
    return None


def _refused(c: ClusterProcess) -> list[tuple[str, str, Any]]:
    """What the API server refused gpuyard's ServiceAccounts (health runs as
    gpuyard-health, under the install's roles): (user, verb, objectRef) per 403."""
    out = []
    for line in (c.data_dir / "audit.log").read_text().splitlines():
        e = json.loads(line) if line.strip() else {}
        user = (e.get("user") or {}).get("username", "")
        if (e.get("responseStatus") or {}).get("code") == 403 and user.startswith(
            "system:serviceaccount:gpuyard-system:"
        ):
            out.append((user, e["verb"], e.get("objectRef")))
    return out


async def _until(pred: Any, timeout: float = 40.0) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        got = await pred()
        if got:
            return got
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.2)


@pytest.mark.slow
async def test_preflight_xid_and_disk_on_gpuyard_up(preflight_cluster: ClusterProcess) -> None:
    c = preflight_cluster
    async with c.client() as k:

        async def preflight_done() -> Any:
            n0, n1 = await k.get(NODES, "gpu-node-0000"), await k.get(NODES, "gpu-node-0001")
            return (
                _taint(n0, "gpuyard.io/preflight") is None
                and _taint(n1, "gpuyard.io/unhealthy") is not None
            ) and (n0, n1)

        try:
            n0, n1 = await _until(preflight_done, 60)
        except AssertionError:
            print(c.log()[-4000:])
            raise
        assert n0["metadata"]["annotations"]["gpuyard.io/preflight-result"] == "pass"
        assert "gpuyard.io/preflight" not in n0["metadata"]["labels"]
        assert _taint(n1, "gpuyard.io/unhealthy") == ("GPUTestMatmul", "NoSchedule")
        assert "matmul.gpu2" in n1["metadata"]["annotations"]["gpuyard.io/preflight-detail"]

        c.fault("gpu-xid", "gpu-node-0002", "--gpu", "3", "--xid", "79")
        c.fault("disk-full", "gpu-node-0003")

        async def tainted() -> bool:
            n2, n3 = await k.get(NODES, "gpu-node-0002"), await k.get(NODES, "gpu-node-0003")
            return _taint(n2, "gpuyard.io/unhealthy") == ("Xid79", "NoExecute") and _taint(
                n3, "gpuyard.io/unhealthy"
            ) == ("DiskFull", "NoSchedule")

        try:
            await _until(tainted)
        except AssertionError:
            for nm in ("gpu-node-0002", "gpu-node-0003"):
                n = await k.get(NODES, nm)
                print(
                    nm,
                    n["spec"].get("taints"),
                    n["metadata"].get("annotations"),
                    [(x["type"], x["status"], x.get("reason")) for x in n["status"]["conditions"]],
                )
            print(c.log()[-5000:])
            raise
        out = c.kubectl("get", "node", "gpu-node-0003", "-o", "json")
        conds = {x["type"]: x for x in json.loads(out.stdout)["status"]["conditions"]}
        assert conds["DiskHealthy"]["status"] == "False"
        assert conds["DiskHealthy"]["reason"] == "DiskFull"
        assert conds["Ready"]["status"] == "True"

        c.fault("clear", "gpu-node-0003")

        async def cleared() -> bool:
            return _taint(await k.get(NODES, "gpu-node-0003"), "gpuyard.io/unhealthy") is None

        await _until(cleared)
        # The Xid 79 stays until the GPU is reset: the node is still out.
        assert _taint(await k.get(NODES, "gpu-node-0002"), "gpuyard.io/unhealthy") == (
            "Xid79",
            "NoExecute",
        )
        evs = (await k.list(EVENTS, "default"))["items"]
        reasons = {e["reason"] for e in evs}
        assert {"GPUUnhealthy", "DiskUnhealthy", "DiskRecovered", "NodeTainted"} <= reasons
        # preflight pods created and deleted, taints, Events: none of it refused
        assert _refused(c) == []


@pytest.mark.slow
async def test_faults_on_a_fifth_of_nodes_trip_the_brake(ten_nodes: ClusterProcess) -> None:
    c = ten_nodes
    async with c.client() as k:
        c.fault("disk-full", "gpu-node-0004")
        c.fault("disk-full", "gpu-node-0007")

        async def tripped() -> Any:
            cm = await k.get_or_none(CONFIGMAPS, "gpuyard-health-brake", "gpuyard-system")
            return cm if cm and cm["data"].get("state") == "tripped" else None

        cm = await _until(tripped)
        assert "limit 1" in cm["data"]["message"]
        nodes = (await k.list(NODES))["items"]
        assert sum(1 for n in nodes if _taint(n, "gpuyard.io/unhealthy")) == 1
        evs = (await k.list(EVENTS, "gpuyard-system"))["items"]
        assert any(e["reason"] == "HealthBrakeTripped" for e in evs)
        # and on gpuyard up's metrics address: the brake holds one node's taint back
        assert c.metrics_url

        async def brake(tripped: float, held: float) -> Any:
            s = await asyncio.to_thread(scrape, c.metrics_url)
            got = (
                value(s, "gpuyard_health_brake_tripped"),
                value(s, "gpuyard_health_brake_held_nodes"),
                value(s, "gpuyard_health_brake_trips_total"),
            )
            return got if got == (tripped, held, 1.0) else None

        await _until(lambda: brake(1.0, 1.0))

        out = c.gpuyard("health", "brake", "reset", "--kubeconfig", c.kubeconfig)
        assert out.returncode == 0, out.stderr

        async def both() -> bool:
            nodes = (await k.list(NODES))["items"]
            return sum(1 for n in nodes if _taint(n, "gpuyard.io/unhealthy")) == 2

        await _until(both)
        await _until(lambda: brake(0.0, 0.0))  # reset: nothing held, still one trip
        assert _refused(c) == []  # the brake's ConfigMap and its Events included


@pytest.fixture
def three_nodes(tmp_path: Path) -> Iterator[ClusterProcess]:
    c = _start(tmp_path, 3, ["--set", "health_max_share=1.0"])
    try:
        yield c
    finally:
        c.kill()


@pytest.mark.slow
async def test_taint_survives_node_down_and_up(three_nodes: ClusterProcess) -> None:
    c = three_nodes
    async with c.client() as k:
        c.fault("gpu-xid", "gpu-node-0000", "--gpu", "0", "--xid", "48")

        async def tainted() -> bool:
            n = await k.get(NODES, "gpu-node-0000")
            # The Xid line and NVML's ECC counter tell the same story; either names it.
            return _taint(n, "gpuyard.io/unhealthy") in (
                ("Xid48", "NoExecute"),
                ("GPUUncorrectableECC", "NoExecute"),
            )

        await _until(tainted)
        c.fault("node-down", "gpu-node-0000")

        async def unknown() -> bool:
            n = await k.get(NODES, "gpu-node-0000")
            return any(
                x["type"] == "Ready" and x["status"] != "True" for x in n["status"]["conditions"]
            )

        await _until(unknown)
        await asyncio.sleep(1.0)
        assert await tainted()  # stale health is left alone while the node is away
        c.fault("node-up", "gpu-node-0000")

        async def back() -> bool:
            n = await k.get(NODES, "gpu-node-0000")
            conds = {x["type"]: x for x in n["status"]["conditions"]}
            return (
                conds.get("Ready", {}).get("status") == "True"
                and conds.get("GPUHealthy", {}).get("status") == "False"
                and conds["GPUHealthy"].get("message", "").startswith("fatal: ")
            )

        await _until(back, 60)
        assert await tainted()


@pytest.fixture
def jobs_cluster(tmp_path: Path) -> Iterator[ClusterProcess]:
    c = _start(
        tmp_path, 4, ["--components", "scheduler,jobs,health", "--set", "health_max_share=1.0"]
    )
    try:
        yield c
    finally:
        c.kill()


@pytest.mark.slow
async def test_xid79_under_a_training_job_restarts_its_gang_elsewhere(
    jobs_cluster: ClusterProcess, tmp_path: Path
) -> None:
    from gpuyard.kube.resources import PODS, TRAINING_JOBS

    c = jobs_cluster
    job = {
        "apiVersion": "gpuyard.io/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": "llm", "namespace": "default"},
        "spec": {
            "replicas": 2,
            "gpusPerReplica": 8,
            "backoffLimit": 3,
            "template": {"spec": {"containers": [{"name": "t", "image": "img"}]}},
        },
    }
    async with c.client() as k:
        await k.create(job, "default", res=TRAINING_JOBS)

        async def running_pods() -> Any:
            tj = await k.get(TRAINING_JOBS, "llm", "default")
            pods = (await k.list(PODS, "default", label_selector="gpuyard.io/job=llm"))["items"]
            live = [
                p
                for p in pods
                if p["status"].get("phase") == "Running"
                and not p["metadata"].get("deletionTimestamp")
            ]
            return (tj.get("status") or {}).get("phase") == "Running" and len(live) == 2 and live

        pods = await _until(running_pods, 60)
        node = pods[0]["spec"]["nodeName"]
        c.fault("gpu-xid", node, "--gpu", "1", "--xid", "79")

        async def tainted() -> bool:
            n = await k.get(NODES, node)
            return _taint(n, "gpuyard.io/unhealthy") == ("Xid79", "NoExecute")

        await _until(tainted)

        async def elsewhere() -> Any:
            tj = await k.get(TRAINING_JOBS, "llm", "default")
            live = await running_pods()
            return (
                live
                and (tj.get("status") or {}).get("restarts", 0) >= 1
                and node not in {p["spec"]["nodeName"] for p in live}
            )

        await _until(elsewhere, 60)

        # Why, in the Events: the taint manager's eviction, or, where the job controller
        # restarted the gang first (it sees the NoExecute taint too), its restart naming
        # the unhealthy node. Events are written after the action: waited for.
        async def said_why() -> bool:
            evs = (await k.list(EVENTS, "default"))["items"]
            return any(
                e["reason"] == "TaintManagerEviction"
                or (
                    e["reason"] == "RestartingGang"
                    and f"node {node} is unhealthy" in e.get("message", "")
                )
                for e in evs
            )

        await _until(said_why, 20)
