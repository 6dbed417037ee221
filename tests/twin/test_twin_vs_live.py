"""The twin and the live scheduler, given the same arrivals on the same 16 nodes, bind
the same pods to the same nodes in the same order.

The live side is `gpuyard up` with no components, and a `Scheduler` started in the test
once every object exists (its first pass sees the whole queue, as the twin's pass at
t=0 does). Round 1 fills the cluster: a high-priority gang first, then normal work by
age (a gang that does not fit holds a reservation), low priority last. Round 2 ends
one gang (its pods deleted live; its duration ends in the twin); the oldest waiting gang
takes exactly the nodes it frees, so partial frees on the live side cannot change the
outcome.

No pod says how long it runs (the twin replays with runtimes=False), and both sides run
with starve_after=0, so a gang that does not fit holds its reservation at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from gpuyard import names
from gpuyard.cluster.shapes import default_shapes, expand
from gpuyard.cluster.testing import ClusterProcess
from gpuyard.kube.resources import NODES, POD_GROUPS, PODS
from gpuyard.scheduling.policy import PolicyConfig
from gpuyard.scheduling.scheduler import Scheduler
from gpuyard.twin.engine import Engine
from gpuyard.twin.traces import TraceJob

PRIO = names.PRIORITY_CLASSES
LONG = 10_000.0

# name, replicas, GPUs per replica, priority class, duration in the twin. Names sort in
# arrival order, so the live scheduler's listing order is the arrival order too.
WORKLOAD: list[tuple[str, int, int, str, float]] = [
    ("a-short", 4, 8, names.PRIORITY_NORMAL, 100.0),
    ("b-big", 8, 8, names.PRIORITY_NORMAL, LONG),
    ("c-high", 3, 8, names.PRIORITY_HIGH, LONG),
    ("d-one", 1, 2, names.PRIORITY_LOW, LONG),
    ("e-two", 1, 4, names.PRIORITY_NORMAL, LONG),
    ("f-late", 4, 8, names.PRIORITY_NORMAL, LONG),
    ("g-later", 4, 8, names.PRIORITY_NORMAL, LONG),
    ("h-small", 1, 1, names.PRIORITY_NORMAL, LONG),
]


def objects(name: str, replicas: int, gpus: int, pclass: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    labels = {}
    if replicas > 1:
        out.append(
            {
                "apiVersion": "scheduling.x-k8s.io/v1alpha1",
                "kind": "PodGroup",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"minMember": replicas},
            }
        )
        labels = {names.POD_GROUP_LABEL: name}
    for i in range(replicas):
        out.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"{name}-{i}", "namespace": "default", "labels": labels},
                "spec": {
                    "schedulerName": names.SCHEDULER_NAME,
                    "priorityClassName": pclass,
                    "containers": [
                        {
                            "name": "w",
                            "image": "trainer",
                            "resources": {"limits": {names.RESOURCE_GPU: gpus}},
                        }
                    ],
                },
            }
        )
    return out


def twin_bindings() -> list[tuple[float, str, str]]:
    jobs = [
        TraceJob(name, 0.0, dur, replicas=r, gpus=g, cpu_milli=0, memory=0, priority=PRIO[pc])
        for name, r, g, pc, dur in WORKLOAD
    ]
    eng = Engine(expand(default_shapes(16)), jobs, "gpuyard", record_bindings=True, runtimes=False)
    eng.cfg = replace(eng.cfg, starve_after=0.0)
    eng.run()
    assert eng.bindings is not None
    # twin pod keys are default/NAME-gGEN-I; live ones default/NAME-I
    return [(t, key.replace("-g0-", "-"), node) for t, key, node in eng.bindings]


async def wait_for(fn: Callable[[], Any], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not await fn():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.1)


def test_twin_and_live_scheduler_bind_in_the_same_order(
    make_cluster: Callable[..., ClusterProcess],
) -> None:
    twin = twin_bindings()
    round1 = [(k, n) for t, k, n in twin if t == 0.0]
    round2 = [(k, n) for t, k, n in twin if t == 100.0]
    # What the policy should do here, so the comparison below means something:
    assert [k for k, _ in round1[:3]] == [f"default/c-high-{i}" for i in range(3)]
    short_nodes = {n for k, n in round1 if k.startswith("default/a-short-")}
    assert sorted(k for k, _ in round2) == [f"default/f-late-{i}" for i in range(4)]
    assert {n for _, n in round2} == short_nodes
    early = [k for t, k, _ in twin if t <= 100.0]
    assert not any(k.startswith(("default/g-later", "default/h-s")) for k in early)
    # d-one is low priority: preemptible, it may use a node the waiting gang holds
    assert "default/d-one-0" in dict(round1)

    c = make_cluster(nodes=16, args=["--components", "none"])

    async def scenario() -> list[tuple[str, str]]:
        async with c.client() as k:
            live_nodes = {
                n["metadata"]["name"]: n["metadata"]["labels"]
                for n in (await k.list(NODES))["items"]
            }
            for s in expand(default_shapes(16)):  # the twin's nodes are the live ones
                labels = live_nodes[s.name]
                assert labels[names.LABEL_RACK] == s.rack
                assert labels[names.LABEL_ZONE] == s.zone
            for name, r, g, pc, _ in WORKLOAD:
                for obj in objects(name, r, g, pc):
                    await k.create(obj)
            sched = Scheduler(k, PolicyConfig(starve_after=0.0), leader_elect=False, freeze_gc=0)
            live: list[tuple[str, str]] = []
            run_once = sched.run_once

            async def recording() -> Any:
                d = await run_once()
                live.extend(d.bindings)
                return d

            sched.run_once = recording  # type: ignore[method-assign]
            stop = asyncio.Event()
            task = asyncio.create_task(sched.run(stop))
            try:

                async def bound(count: int) -> bool:
                    pods = (await k.list(PODS, "default"))["items"]
                    return sum(1 for p in pods if p["spec"].get("nodeName")) >= count

                await wait_for(lambda: bound(len(round1)))
                await asyncio.sleep(1.0)  # nothing more binds
                assert live == round1
                for i in range(4):
                    await k.delete(PODS, f"a-short-{i}", "default", grace_period_seconds=0)

                async def all_gone() -> bool:
                    pods = (await k.list(PODS, "default"))["items"]
                    return not any(p["metadata"]["name"].startswith("a-short") for p in pods)

                await wait_for(all_gone)
                await wait_for(lambda: bound(len(round1) - 4 + len(round2)))
                await asyncio.sleep(1.0)
                pg = await k.get(POD_GROUPS, "g-later", "default")
                assert (pg.get("status") or {}).get("phase") != "Running"
            finally:
                stop.set()
                await asyncio.wait_for(task, 30)
            return live

    live = asyncio.run(scenario())
    assert live == round1 + round2
