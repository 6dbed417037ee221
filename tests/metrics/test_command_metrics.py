"""`gpuyard scheduler`, `gpuyard controllers` and `gpuyard health controller` run on
their own (against `gpuyard up`'s API server) serve /metrics on --metrics-port: a gang
too big for the free GPUs shows under its reason, a team's nodes and GPUs are counted, an Xid
fault raises the unhealthy node count, and each counts its API requests."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gpuyard.cluster.testing import ClusterProcess, run_cluster_process, wait_for
from tests.metrics.scrape import scrape, value
from tests.metrics.test_up_metrics import FAST
from tests.scheduling.live import pod


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _command(c: ClusterProcess, *args: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = _free_port()
    log = c.data_dir / f"{args[0]}-{port}.log"
    with log.open("wb") as f:
        proc = subprocess.Popen(
            # who may read them is tests/metrics/test_metrics_auth.py's business
            [
                sys.executable,
                "-m",
                "gpuyard.cli",
                *args,
                "--metrics-port",
                str(port),
                "--metrics-auth",
                "off",
            ],  # fmt: skip
            stdout=f,
            stderr=subprocess.STDOUT,
            env=c.env,
        )
    try:
        yield f"http://127.0.0.1:{port}/metrics", proc
    finally:
        proc.kill()
        proc.wait(10)


def _scrape_when_up(url: str, proc: subprocess.Popen[bytes]) -> Any:
    def up() -> Any:
        assert proc.poll() is None, f"{proc.args} exited with {proc.returncode}"
        try:
            return scrape(url)
        except OSError:
            return None

    return wait_for(up, 30, f"{url} to answer")


def _requests(s: Any, component: str) -> float:
    return sum(
        v
        for (n, labels), v in s.items()
        if n == "gpuyard_api_requests_total" and ("component", component) in labels
    )


def test_commands_serve_their_metrics(tmp_path: Path) -> None:
    args = [*FAST, "--components", "health"]
    with (
        run_cluster_process(tmp_path / "c", nodes=2, args=args) as c,
        _command(c, "scheduler", "--no-leader-elect") as (sched_url, sched),
        _command(c, "controllers", "--no-leader-elect") as (ctl_url, ctl),
        _command(c, "health", "controller") as (health_url, health),
    ):
        for url, proc in ((sched_url, sched), (ctl_url, ctl), (health_url, health)):
            _scrape_when_up(url, proc)

        async def scenario() -> None:
            async with c.client() as k:
                await k.create(
                    {
                        "apiVersion": "gpuyard.io/v1alpha1",
                        "kind": "Team",
                        "metadata": {"name": "vision"},
                        "spec": {"capacity": {"gpu": 1}},
                    }
                )
                await k.create(
                    {
                        "apiVersion": "scheduling.x-k8s.io/v1alpha1",
                        "kind": "PodGroup",
                        "metadata": {"name": "big", "namespace": "default"},
                        "spec": {"minMember": 3},
                    }
                )
                # 24 GPUs of a 16-GPU cluster: two of its pods fit, not all three
                for i in range(3):
                    await k.create(pod(f"big-{i}", "big", gpus=8, priorityClassName="gpuyard-low"))

        asyncio.run(scenario())

        def gang_pending() -> Any:
            s = scrape(sched_url)
            return (
                value(s, "gpuyard_scheduler_pending_gangs", reason="InsufficientCapacity") == 1
                and s
            )

        s = wait_for(gang_pending, 30, "the gang pending for lack of capacity")
        assert value(s, "gpuyard_scheduler_unschedulable_pods", reason="InsufficientCapacity") == 3
        assert _requests(s, "scheduler") > 0

        def team_counted() -> Any:
            s = scrape(ctl_url)
            return value(s, "gpuyard_team_gpus", team="vision", state="assigned") == 8 and s

        s = wait_for(team_counted, 30, "team vision's 8 GPUs")
        assert value(s, "gpuyard_team_gpus", team="vision", state="idle") == 8
        assert value(s, "gpuyard_team_nodes", team="vision", state="assigned") == 1
        assert _requests(s, "controllers") > 0

        assert value(scrape(health_url), "gpuyard_health_unhealthy_nodes") == 0
        c.fault("gpu-xid", "gpu-node-0000", "--gpu", "1", "--xid", "79")
        wait_for(
            lambda: value(scrape(health_url), "gpuyard_health_unhealthy_nodes") == 1,
            30,
            "the health controller's unhealthy node count to rise to 1",
        )
        assert _requests(scrape(health_url), "health-controller") > 0
