"""`gpuyard fault` finds the cluster as kubectl and every other gpuyard command do:
--kubeconfig, then $KUBECONFIG, and only then the `gpuyard up` data directory's."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from gpuyard.cluster.testing import ClusterProcess

UNREACHABLE = (
    "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
    "clusters: [{name: c, cluster: {server: 'http://127.0.0.1:9'}}]\n"
    "users: [{name: u, user: {token: t}}]\n"
    "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
)


def test_fault_prefers_kubeconfig_env_over_the_local_data_dir(
    make_cluster: Callable[..., ClusterProcess], tmp_path: Path
) -> None:
    c = make_cluster(nodes=1, args=["--components", "none"])
    work = tmp_path / "work"
    (work / ".gpuyard").mkdir(parents=True)
    (work / ".gpuyard" / "kubeconfig").write_text(UNREACHABLE)
    env = {**os.environ, **(c.env or {}), "KUBECONFIG": c.kubeconfig}

    def fault(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gpuyard.cli", "fault", *args],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=work,
            env={**env, **extra},
        )

    node = c.kubectl("get", "nodes", "-o", "name").stdout.split()[0].split("/")[1]
    r = fault("slow-gpu", node)
    assert r.returncode == 0, r.stderr
    listed = fault("list")
    assert listed.returncode == 0 and node in listed.stdout, listed.stderr
    # kubectl, on the same environment, sees the same cluster.
    k = subprocess.run(
        ["kubectl", "get", "nodes", "-o", "name"],
        capture_output=True,
        text=True,
        env=env,
        cwd=work,
        timeout=60,
    )
    assert f"node/{node}" in k.stdout
    # Without KUBECONFIG the data directory's kubeconfig is the one taken.
    env.pop("KUBECONFIG")
    r = subprocess.run(
        [sys.executable, "-m", "gpuyard.cli", "fault", "list"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=work,
        env=env,
    )
    assert r.returncode != 0 and "cannot reach" in r.stderr and "127.0.0.1" in r.stderr, r.stderr
