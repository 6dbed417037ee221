"""The live scheduler on `gpuyard up`: gangs all-or-nothing, readable reasons, node loss."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from gpuyard.cluster.testing import ClusterProcess
from gpuyard.kube.resources import EVENTS, NODES, POD_GROUPS, PODS
from tests.scheduling.live import until


def gang(
    name: str, n: int, gpus: int = 8, ns: str = "default", **extra: Any
) -> list[dict[str, Any]]:
    pg = {
        "apiVersion": "scheduling.x-k8s.io/v1alpha1",
        "kind": "PodGroup",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"minMember": n, **extra},
    }
    pods = [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{name}-{i}",
                "namespace": ns,
                "labels": {"scheduling.x-k8s.io/pod-group": name},
            },
            "spec": {
                "schedulerName": "gpuyard-scheduler",
                "containers": [
                    {
                        "name": "w",
                        "image": "trainer",
                        "resources": {"limits": {"nvidia.com/gpu": gpus}},
                    }
                ],
            },
        }
        for i in range(n)
    ]
    return [pg, *pods]


def single(name: str, gpus: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "schedulerName": "gpuyard-scheduler",
            "containers": [
                {"name": "w", "image": "x", "resources": {"limits": {"nvidia.com/gpu": gpus}}}
            ],
        },
    }


@pytest.mark.slow
def test_gang_and_singles_on_a_96_node_cluster(make_cluster: Callable[..., ClusterProcess]) -> None:
    c = make_cluster(nodes=96, args=["--components", "scheduler"])

    async def scenario() -> None:
        async with c.client() as k:
            for obj in gang("train", 64):
                await k.create(obj)
            await asyncio.gather(*(k.create(single(f"sweep-{i}")) for i in range(200)))

            async def all_bound() -> bool:
                pods = (await k.list(PODS, "default"))["items"]
                return len(pods) == 264 and all(p["spec"].get("nodeName") for p in pods)

            await until(all_bound, 60)
            pods = (await k.list(PODS, "default"))["items"]
            train_nodes = {
                p["spec"]["nodeName"] for p in pods if p["metadata"]["name"].startswith("train-")
            }
            assert len(train_nodes) == 64, "whole-node workers, one per node"
            sweep_nodes = {
                p["spec"]["nodeName"] for p in pods if p["metadata"]["name"].startswith("sweep-")
            }
            assert not (train_nodes & sweep_nodes)
            assert len(sweep_nodes) == 25, "200 one-GPU pods packed onto 25 nodes"

            async def group_running() -> bool:
                pg = await k.get(POD_GROUPS, "train", "default")
                return (pg.get("status") or {}).get("phase") == "Running" and pg["status"][
                    "running"
                ] == 64

            await until(group_running, 30)

    asyncio.run(scenario())
    out = c.kubectl("get", "podgroups.scheduling.x-k8s.io").stdout
    assert "train" in out


def test_gang_that_cannot_fit_binds_nothing_and_says_why(
    make_cluster: Callable[..., ClusterProcess],
) -> None:
    c = make_cluster(nodes=4, args=["--components", "scheduler"])

    async def scenario() -> None:
        async with c.client() as k:
            for obj in gang("huge", 6):
                await k.create(obj)
            for obj in gang("fits", 3):
                await k.create(obj)

            async def event() -> str | None:
                evs = (await k.list(EVENTS, "default"))["items"]
                for e in evs:
                    # Pods arrive one by one: earlier Events may say the gang still
                    # waits for members; wait for the one about fitting.
                    if (
                        e["involvedObject"]["name"] == "huge"
                        and e["reason"] == "Unschedulable"
                        and "needs 6 pods" in e["message"]
                    ):
                        return str(e["message"])
                return None

            msg = await until(event, 30)
            assert msg.startswith("gang huge needs 6 pods at once; 4 fit on 4 nodes"), msg
            await asyncio.sleep(1.0)
            pods = {p["metadata"]["name"]: p for p in (await k.list(PODS, "default"))["items"]}
            assert not any(pods[f"huge-{i}"]["spec"].get("nodeName") for i in range(6))
            cond = [
                x
                for x in pods["huge-0"]["status"].get("conditions", [])
                if x["type"] == "PodScheduled"
            ]
            assert cond and cond[0]["status"] == "False" and cond[0]["reason"] == "Unschedulable"
            # The gang that fits is not starved by reservations of the one that cannot:
            # it is older-first, and 'huge' holds only nodes it could use.
            assert sum(1 for i in range(3) if pods[f"fits-{i}"]["spec"].get("nodeName")) in (0, 3)

    asyncio.run(scenario())


def test_node_failure_midway_pods_on_it_are_evicted_and_others_keep_running(
    make_cluster: Callable[..., ClusterProcess],
) -> None:
    c = make_cluster(nodes=6, args=["--components", "scheduler"])

    async def scenario() -> None:
        async with c.client() as k:
            for obj in gang("job", 4):
                await k.create(obj)

            async def bound() -> list[dict[str, Any]] | None:
                pods = (await k.list(PODS, "default"))["items"]
                ok = len(pods) == 4 and all(p["status"].get("phase") == "Running" for p in pods)
                return pods if ok else None

            pods = await until(bound, 30)
            victim = pods[0]["spec"]["nodeName"]
            c.fault("node-down", victim)

            async def evicted() -> bool:
                p = await k.get(PODS, pods[0]["metadata"]["name"], "default")
                return bool(p["metadata"].get("deletionTimestamp"))

            await until(evicted, 20)
            others = [await k.get(PODS, p["metadata"]["name"], "default") for p in pods[1:]]
            assert all(o["status"]["phase"] == "Running" for o in others)

    asyncio.run(scenario())


def test_mig_rdma_pod_waits_naming_the_resource_and_binds_once_a_node_has_it(
    make_cluster: Callable[..., ClusterProcess],
) -> None:
    c = make_cluster(nodes=2, args=["--components", "scheduler"])
    mig, rdma = "nvidia.com/mig-1g.10gb", "rdma/hca"
    pod = single("mig")
    pod["spec"]["containers"][0]["resources"] = {"limits": {mig: 7, rdma: 1}}

    async def scenario() -> None:
        async with c.client() as k:
            await k.create(pod)

            async def waits_for(resource: str) -> str | None:
                for e in (await k.list(EVENTS, "default"))["items"]:
                    if (
                        e["involvedObject"]["name"] == "mig"
                        and e["reason"] == "FailedScheduling"
                        and f"Insufficient {resource}" in e["message"]
                    ):
                        return str(e["message"])
                return None

            msg = await until(lambda: waits_for(mig), 30)
            assert "2 Insufficient nvidia.com/mig-1g.10gb" in msg, msg
            assert not (await k.get(PODS, "mig", "default"))["spec"].get("nodeName")

            nodes = sorted(n["metadata"]["name"] for n in (await k.list(NODES))["items"])

            async def advertise(node: str, amounts: dict[str, str]) -> None:
                # What a device plugin's kubelet reports: capacity and allocatable.
                n = await k.get(NODES, node)
                st = n["status"]
                body = {
                    "status": {
                        "capacity": {**st["capacity"], **amounts},
                        "allocatable": {**st["allocatable"], **amounts},
                    }
                }
                await k.patch_status(NODES, node, body)

            # MIG slices alone are not enough: the reason now names the RDMA device.
            await advertise(nodes[0], {mig: "7"})
            await until(lambda: waits_for(rdma), 30)
            assert not (await k.get(PODS, "mig", "default"))["spec"].get("nodeName")

            await advertise(nodes[1], {mig: "7", rdma: "1"})

            async def bound() -> str | None:
                p = await k.get(PODS, "mig", "default")
                return p["spec"].get("nodeName")

            assert await until(bound, 30) == nodes[1]

    asyncio.run(scenario())


def test_pod_affinity_anti_affinity_and_spread_across_zones(
    make_cluster: Callable[..., ClusterProcess],
) -> None:
    """Zone-level pod affinity (with a namespaceSelector), anti-affinity and topology
    spread through the live scheduler; a pod they leave nowhere to go says why."""
    c = make_cluster(nodes=6, args=["--components", "scheduler", "--rack-size", "1"])
    zone = "topology.kubernetes.io/zone"

    def pod(name: str, ns: str = "default", app: str = "", **spec: Any) -> dict[str, Any]:
        p = single(name)
        p["metadata"]["namespace"] = ns
        if app:
            p["metadata"]["labels"] = {"app": app}
        p["spec"].update(spec)
        return p

    def term(app: str, **extra: Any) -> dict[str, Any]:
        return {"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": zone, **extra}

    async def scenario() -> None:
        async with c.client() as k:
            nodes = {n["metadata"]["name"]: n for n in (await k.list(NODES))["items"]}
            zone_of = {name: n["metadata"]["labels"][zone] for name, n in nodes.items()}
            assert len(set(zone_of.values())) == 3, zone_of
            await k.create(
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": "team-x", "labels": {"team": "x"}},
                }
            )
            await k.create(pod("anchor", "team-x", "db"))

            async def node_of(name: str, ns: str = "default") -> str | None:
                return (await k.get(PODS, name, ns))["spec"].get("nodeName")

            anchor_zone = zone_of[await until(lambda: node_of("anchor", "team-x"))]
            near = {
                "podAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": [
                        term("db", namespaceSelector={"matchLabels": {"team": "x"}})
                    ]
                }
            }
            far = {
                "podAntiAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": [
                        term("db", namespaceSelector={})
                    ]
                }
            }
            await k.create(pod("near", affinity=near))
            await k.create(pod("far", affinity=far))
            assert zone_of[await until(lambda: node_of("near"))] == anchor_zone
            assert zone_of[await until(lambda: node_of("far"))] != anchor_zone
            spread = [
                {
                    "maxSkew": 1,
                    "topologyKey": zone,
                    "whenUnsatisfiable": "DoNotSchedule",
                    "labelSelector": {"matchLabels": {"app": "s"}},
                }
            ]
            for i in range(3):
                await k.create(pod(f"s{i}", app="s", topologySpreadConstraints=spread))
            placed = [zone_of[await until(lambda i=i: node_of(f"s{i}"))] for i in range(3)]
            assert sorted(placed) == sorted(set(zone_of.values())), placed
            # kept out of the anchor's zone by anti-affinity, and held to it by its selector
            await k.create(pod("blocked", affinity=far, nodeSelector={zone: anchor_zone}))

            async def reason() -> str | None:
                for e in (await k.list(EVENTS, "default"))["items"]:
                    if (
                        e["involvedObject"]["name"] == "blocked"
                        and e["reason"] == "FailedScheduling"
                    ):
                        return str(e["message"])
                return None

            msg = await until(reason)
            assert "node(s) didn't match pod anti-affinity rules" in msg, msg
            assert not await node_of("blocked")

    asyncio.run(scenario())
