"""`gpuyard controllers --only teams` manages team nodes on any API server (here the
embedded one, without simulated kubelets)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from typing import Any

from gpuyard import names
from gpuyard.apiserver.testing import ServerProcess
from gpuyard.kube.client import Client
from gpuyard.kube.resources import NODES, TEAMS


def node(i: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": f"n{i}",
            "labels": {
                names.LABEL_POOL: "gpu",
                names.LABEL_RACK: f"r{i // 2}",
                names.LABEL_ZONE: f"z{i % 2}",
            },
        },
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }


def test_controllers_process_assigns_team_nodes(apiserver: ServerProcess) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpuyard.cli", "controllers", "--only", "teams"]
        + ["--no-leader-elect", "--install-crds", "--kubeconfig", apiserver.kubeconfig],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    async def scenario() -> None:
        async with Client.from_kubeconfig(apiserver.kubeconfig) as k:
            for i in range(8):
                await k.create(node(i))
            deadline = time.monotonic() + 30
            while True:
                try:
                    await k.list(TEAMS)
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)
            await k.create(
                {
                    "apiVersion": names.API_VERSION,
                    "kind": "Team",
                    "metadata": {"name": "a"},
                    "spec": {"capacity": {"gpu": 3}},
                }
            )
            while True:
                items = (await k.list(NODES))["items"]
                owners = Counter(
                    n["metadata"].get("labels", {}).get(names.LABEL_TEAM) for n in items
                )
                st = (await k.get(TEAMS, "a")).get("status") or {}
                if owners["a"] == 3 and st.get("healthy") == 3:
                    break
                assert time.monotonic() < deadline, owners
                await asyncio.sleep(0.2)
            mine = [n for n in items if n["metadata"].get("labels", {}).get(names.LABEL_TEAM)]
            assert len({n["metadata"]["labels"][names.LABEL_ZONE] for n in mine}) == 2
            # Raising the count past the pool: a shortfall, never more nodes than exist.
            await k.patch(TEAMS, "a", {"spec": {"capacity": {"gpu": 10}}})
            while True:
                st = (await k.get(TEAMS, "a")).get("status") or {}
                if st.get("shortfall") == 2:
                    break
                assert time.monotonic() < deadline, st
                await asyncio.sleep(0.2)
            assert st["assigned"] == 8 and "10 nodes wanted, 8" in st["reason"]
            # A malformed spec changes nothing and says why in the status.
            await k.patch(TEAMS, "a", {"spec": {"capacity": {"gpu": "ten"}}})
            while True:
                st = (await k.get(TEAMS, "a")).get("status") or {}
                if "invalid spec" in st.get("reason", ""):
                    break
                assert time.monotonic() < deadline, st
                await asyncio.sleep(0.2)
            assert "spec.capacity.gpu" in st["reason"] and "last valid spec" in st["reason"]
            items = (await k.list(NODES))["items"]
            assert all(n["metadata"]["labels"].get(names.LABEL_TEAM) == "a" for n in items)

    try:
        asyncio.run(scenario())
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
