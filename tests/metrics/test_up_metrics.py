"""`gpuyard up` serves every component's metrics on one address, printed in its
banner; after a scenario the series a person looks at say what happened: a gang that
lacks GPUs is pending under InsufficientGPU, a preemption counts once, an Xid fault
raises the unhealthy node count, and the API requests are counted per component."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from gpuyard.cluster.testing import run_cluster_process, wait_for
from gpuyard.kube.resources import PODS
from tests.metrics.scrape import names, scrape, value
from tests.scheduling.live import pod

COUNT = "gpuyard_webhook_admission_duration_seconds_count"
TEAM = """
apiVersion: v1
kind: Namespace
metadata: {name: ml}
---
apiVersion: gpuyard.io/v1alpha1
kind: Team
metadata: {name: research}
spec: {capacity: {gpu: 1}, namespaces: [ml]}
"""
FAST = [
    "--lease-seconds", "1", "--start-delay", "0.1",
    "--set", "health_interval_s=0.5", "--set", "health_quiet_s=2",
]  # fmt: skip


def test_up_metrics_after_a_scenario(tmp_path: Path) -> None:
    with run_cluster_process(tmp_path / "c", nodes=2, args=FAST) as c:
        assert c.metrics_url.startswith("http://127.0.0.1:")
        wait_for(lambda: c.metrics_url in c.log(), 10, "the metrics address in the banner")
        s = scrape(c.metrics_url)
        # every component's families are on the one address
        for fam in (
            "gpuyard_scheduler_bindings_total",
            "gpuyard_health_unhealthy_nodes",
            "gpuyard_api_requests_total",
        ):
            assert fam in names(s), fam

        async def scenario() -> None:
            async with c.client() as k:
                for i in range(2):  # both nodes full of low-priority work
                    await k.create(pod(f"low-{i}", gpus=8, priorityClassName="gpuyard-low"))
                await k.create(
                    {
                        "apiVersion": "scheduling.x-k8s.io/v1alpha1",
                        "kind": "PodGroup",
                        "metadata": {"name": "big", "namespace": "default"},
                        "spec": {"minMember": 3},
                    }
                )
                for i in range(3):  # 24 GPUs: more than the cluster has
                    await k.create(pod(f"big-{i}", "big", gpus=8, priorityClassName="gpuyard-low"))

        asyncio.run(scenario())

        def gang_pending() -> Any:
            s = scrape(c.metrics_url)
            g = value(s, "gpuyard_scheduler_pending_gangs", reason="InsufficientGPU")
            p = value(s, "gpuyard_scheduler_unschedulable_pods", reason="InsufficientGPU")
            return (g, p) if g == 1 and p == 3 else None

        wait_for(gang_pending, 30, "the gang pending for lack of GPUs")

        async def urgent() -> None:
            async with c.client() as k:
                await k.create(pod("urgent", gpus=8, priorityClassName="gpuyard-high"))

        asyncio.run(urgent())

        async def urgent_bound() -> bool:
            async with c.client() as k:
                p = await k.get(PODS, "urgent", "default")
                return bool(p["spec"].get("nodeName"))

        wait_for(lambda: asyncio.run(urgent_bound()), 30, "the urgent pod bound")
        s = scrape(c.metrics_url)
        assert value(s, "gpuyard_scheduler_preemptions_total", cause="priority") == 1
        assert (value(s, "gpuyard_scheduler_preemptions_total", cause="reclaim") or 0) == 0
        # the urgent pod's wait is in the histogram of lone 8-GPU pods
        waits = [
            v
            for (n, labels), v in s.items()
            if n == "gpuyard_scheduler_queue_wait_seconds_count" and ("size", "2-8") in labels
        ]
        assert sum(waits) >= 3  # two low pods and the urgent one
        sched_requests = sum(
            v
            for (n, labels), v in s.items()
            if n == "gpuyard_api_requests_total" and ("component", "scheduler") in labels
        )
        assert sched_requests >= 3  # at least its three bindings

        assert value(s, "gpuyard_health_unhealthy_nodes") == 0
        c.fault("gpu-xid", "gpu-node-0001", "--gpu", "2", "--xid", "79")

        def unhealthy() -> Any:
            return value(scrape(c.metrics_url), "gpuyard_health_unhealthy_nodes") == 1

        wait_for(unhealthy, 30, "the unhealthy node count to rise to 1")

        # the team webhook runs in a process of its own: its series are on the one
        # address too, and count the review of a pod in a team's namespace
        refusals = "gpuyard_webhook_admission_refusals_total"
        assert value(s, refusals, reason="bad-bandwidth-annotation") == 0  # made up front
        assert (value(s, COUNT, operation="CREATE") or 0) == 0
        c.kubectl("apply", "-f", "-", input=TEAM)

        def ns_labelled() -> bool:
            return "gpuyard.io/team" in c.kubectl("get", "ns", "ml", "--show-labels").stdout

        wait_for(ns_labelled, 30, "the team's namespace labelled")
        c.kubectl("run", "p", "-n", "ml", "--image", "busybox")
        wait_for(
            lambda: (value(scrape(c.metrics_url), COUNT, operation="CREATE") or 0) >= 1,
            30,
            "the webhook's review of the pod counted on gpuyard up's metrics address",
        )
