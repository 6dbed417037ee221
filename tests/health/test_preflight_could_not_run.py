"""Preflight when `gpuyard gpu-test` cannot run: the real command (this venv has no
PyTorch, so it really cannot) writes its termination message; a stand-in kubelet hands
that message and exit code back on every test pod. The health component (preflight and
health controller, as `gpuyard up` runs them) must say so on the node and in an Event,
keep the preflight taint, and never call it a hardware failure."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from gpuyard.health import component
from gpuyard.kube.client import Client
from gpuyard.kube.objects import is_pod_terminal
from gpuyard.kube.resources import EVENTS, NODES, PODS

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("torch") is not None, reason="PyTorch is installed here"
)


def _real_gpu_test(tmp_path: Path) -> tuple[int, str]:
    log = tmp_path / "termination-log"
    out = subprocess.run(
        [sys.executable, "-m", "gpuyard.cli", "gpu-test", "--termination-log", str(log)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=120,
    )
    assert "could not run: PyTorch is not installed" in out.stderr
    return out.returncode, log.read_text()


async def _kubelet(c: Client, code: int, message: str, stop: asyncio.Event) -> None:
    done: set[str] = set()
    while not stop.is_set():
        for p in (await c.list(PODS, "gpuyard-system"))["items"]:
            name = p["metadata"]["name"]
            if name in done or is_pod_terminal(p) or p["metadata"].get("deletionTimestamp"):
                continue
            term = {"exitCode": code, "reason": "Error", "message": message}
            cs = {"name": "gpu-test", "ready": False, "restartCount": 0, "image": "x"}
            cs.update(imageID="", state={"terminated": term})
            status = {"phase": "Failed", "containerStatuses": [cs]}
            await c.patch_status(PODS, name, {"status": status}, "gpuyard-system")
            done.add(name)
        await asyncio.sleep(0.2)


async def test_preflight_says_gpu_test_could_not_run(apiserver_inproc: Any, tmp_path: Path) -> None:
    code, message = _real_gpu_test(tmp_path)
    assert code == 2

    c = Client.from_kubeconfig(apiserver_inproc.kubeconfig_path, component="health-test")
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "new-node", "labels": {"gpuyard.io/preflight": "true"}},
        "spec": {"taints": [{"key": "gpuyard.io/preflight", "effect": "NoSchedule"}]},
    }
    await c.create(node, res=NODES)
    ready = [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]
    gpus = {"nvidia.com/gpu": "8"}
    await c.patch_status(
        NODES,
        "new-node",
        {"status": {"capacity": gpus, "allocatable": gpus, "conditions": ready}},
    )
    stop = asyncio.Event()
    ctx = types.SimpleNamespace(
        client=c,
        data_dir=str(tmp_path),
        stop=stop,
        options={"health_interval_s": 0.3, "health_quiet_s": 1.0, "health_max_share": 1.0},
    )
    tasks = [
        asyncio.create_task(component.run(ctx)),
        asyncio.create_task(_kubelet(c, code, message, stop)),
    ]
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while True:
            n = await c.get(NODES, "new-node")
            ann = n["metadata"].get("annotations") or {}
            if ann.get("gpuyard.io/preflight-result"):
                break
            assert loop.time() < deadline, "preflight gave no result"
            await asyncio.sleep(0.2)
        await asyncio.sleep(2.0)  # time for the health controller to act, were it to
        n = await c.get(NODES, "new-node")
        pods = (await c.list(PODS, "gpuyard-system"))["items"]
        events = (await c.list(EVENTS, "default"))["items"]
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)
        await c.close()

    ann = n["metadata"]["annotations"]
    assert ann["gpuyard.io/preflight-result"] == "could-not-run"
    assert ann["gpuyard.io/preflight-detail"] == "PyTorch is not installed"
    taints = {t["key"]: t for t in n["spec"]["taints"]}
    assert "gpuyard.io/preflight" in taints  # still untested: takes no work
    assert "gpuyard.io/unhealthy" not in taints  # and not called broken
    assert "gpuyard.io/preflight" not in n["metadata"]["labels"]  # relabel to rerun
    cond = next(x for x in n["status"]["conditions"] if x["type"] == "GPUTestPassed")
    assert (cond["status"], cond["reason"]) == ("Unknown", "GPUTestCouldNotRun")
    assert "PyTorch is not installed" in cond["message"]
    mine = [e for e in events if (e.get("involvedObject") or {}).get("name") == "new-node"]
    reasons = [e["reason"] for e in mine]
    assert "PreflightCouldNotRun" in reasons and "PreflightFailed" not in reasons
    ev = next(e for e in mine if e["reason"] == "PreflightCouldNotRun")
    assert ev["type"] == "Warning" and "PyTorch is not installed" in ev["message"]
    assert not [p for p in pods if not p["metadata"].get("deletionTimestamp")]
