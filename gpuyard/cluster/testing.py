"""Run `gpuyard up` as a subprocess for end-to-end tests and benchmarks.

    with run_cluster_process(tmp_dir, nodes=4, args=["--node-grace", "3"]) as c:
        c.kubectl("get", "nodes")           # CompletedProcess, check=True
        async with c.client() as client: ...   # gpuyard.kube.Client on its kubeconfig
        c.fault("node-down", "gpu-node-0001")

The process runs in its own session on a free port; it is killed with its whole
process group when the block ends, even on failure, and when the process that
started it ends, even by SIGTERM (gpuyard.childgroups). Its log is `c.log_path`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpuyard import childgroups


@dataclass
class ClusterProcess:
    data_dir: Path
    proc: subprocess.Popen[bytes]
    log_path: Path
    url: str = ""
    metrics_url: str = ""  # every component's /metrics (empty when not served)

    @property
    def kubeconfig(self) -> str:
        return str(self.data_dir / "kubeconfig")

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": self.kubeconfig}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kubectl(
        self, *args: str, check: bool = True, timeout: float = 60, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        exe = shutil.which("kubectl", path=os.path.dirname(sys.executable)) or "kubectl"
        return subprocess.run(
            [exe, "--kubeconfig", self.kubeconfig, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
            input=input,
        )

    def gpuyard(
        self, *args: str, check: bool = False, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gpuyard.cli", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
            env=self.env,
        )

    def fault(self, kind: str, node: str, *args: str) -> subprocess.CompletedProcess[str]:
        return self.gpuyard("fault", kind, node, *args, "--kubeconfig", self.kubeconfig, check=True)

    def client(self, component: str = "test") -> Any:
        from gpuyard.kube.client import Client

        return Client.from_kubeconfig(self.kubeconfig, component=component)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            self.proc.wait(10)
        childgroups.release(self.proc.pid)

    def terminate(self, timeout: float = 15, sig: int = signal.SIGTERM) -> int:
        """Stop the whole process group with `sig` (SIGINT: as Ctrl-C in a terminal)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return -9
        childgroups.release(self.proc.pid)
        return code


async def _all_ready(kubeconfig: str, n: int) -> bool:
    from gpuyard.kube.client import Client
    from gpuyard.kube.objects import is_node_ready
    from gpuyard.kube.resources import NODES

    async with Client.from_kubeconfig(kubeconfig, component="test") as c:
        items = (await c.list(NODES))["items"]
        return sum(1 for x in items if is_node_ready(x)) >= n


def start_cluster_process(
    data_dir: str | Path,
    nodes: int = 4,
    args: list[str] | None = None,
    ready_nodes: int | None = None,
    timeout: float = 90,
) -> ClusterProcess:
    data = Path(data_dir)
    data.mkdir(parents=True, exist_ok=True)
    log_path = data / "up.log"
    cmd = [
        sys.executable,
        "-m",
        "gpuyard.cli",
        "up",
        "--nodes",
        str(nodes),
        "--data-dir",
        str(data),
        "--port",
        "0",
        *(args or []),
    ]
    with log_path.open("ab") as logf:
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
    childgroups.adopt(proc.pid)
    c = ClusterProcess(data, proc, log_path)
    state = data / "up.json"
    deadline = time.monotonic() + timeout
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"gpuyard up exited with {proc.returncode}:\n{c.log()[-3000:]}")
            if state.exists():
                with contextlib.suppress(ValueError, OSError):
                    info = json.loads(state.read_text())
                    if info.get("pid") == proc.pid:
                        c.url = info["url"]
                        c.metrics_url = info.get("metrics") or ""
                        break
            if time.monotonic() > deadline:
                raise TimeoutError(f"gpuyard up did not start:\n{c.log()[-3000:]}")
            time.sleep(0.1)
        want = nodes if ready_nodes is None else ready_nodes
        while not asyncio.run(_all_ready(c.kubeconfig, want)):
            if time.monotonic() > deadline:
                raise TimeoutError("nodes did not become Ready")
            time.sleep(0.2)
    except BaseException:
        c.kill()
        raise
    return c


@contextlib.contextmanager
def run_cluster_process(
    data_dir: str | Path, nodes: int = 4, args: list[str] | None = None, **kw: Any
) -> Iterator[ClusterProcess]:
    c = start_cluster_process(data_dir, nodes, args, **kw)
    try:
        yield c
    finally:
        c.kill()


def wait_for(
    fn: Callable[[], Any], timeout: float = 30, what: str = "the condition", every: float = 0.3
) -> Any:
    """Call `fn` until it returns something true (which is returned), or fail after
    `timeout` seconds naming `what` and the last value seen."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")
