"""Simulated kubelet answers on `gpuyard up`, with kubectl: `logs` prints the simulated
container's lines (the gpuyard.io/sim-log annotation, or the generated model), `--tail`
cuts them, `--previous` is refused when nothing restarted, `-f` streams until the pod
ends; `exec` and `port-forward` are refused with a message naming the simulated node."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

from gpuyard.cluster.testing import ClusterProcess, wait_for


def kubectl() -> str:
    return shutil.which("kubectl", path=os.path.dirname(sys.executable)) or "kubectl"


def pod(name: str, annotations: dict[str, str] | None = None) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "annotations": annotations or {}},
            "spec": {"containers": [{"name": "trainer", "image": "pytorch:2"}]},
        }
    )


def running(c: ClusterProcess, name: str) -> bool:
    out = c.kubectl("get", "pod", name, "-o", "json").stdout
    return json.loads(out)["status"].get("phase") == "Running"


def test_logs_tail_previous_and_exec_refused(cluster: ClusterProcess) -> None:
    c = cluster
    lines = "loading data\nepoch 1 loss 0.9\nepoch 2 loss 0.5\nepoch 3 loss 0.2"
    c.kubectl("apply", "-f", "-", input=pod("annotated", {"gpuyard.io/sim-log": lines}))
    c.kubectl("apply", "-f", "-", input=pod("modelled"))
    wait_for(lambda: running(c, "annotated") and running(c, "modelled"))

    assert c.kubectl("logs", "annotated").stdout == lines + "\n"
    assert c.kubectl("logs", "annotated", "--tail", "2").stdout == (
        "epoch 2 loss 0.5\nepoch 3 loss 0.2\n"
    )
    stamped = c.kubectl("logs", "annotated", "--timestamps", "--tail", "1").stdout
    assert stamped.endswith("Z epoch 3 loss 0.2\n") and stamped[:4].isdigit()

    node = json.loads(c.kubectl("get", "pod", "modelled", "-o", "json").stdout)["spec"]["nodeName"]
    first = c.kubectl("logs", "modelled", "-c", "trainer").stdout.splitlines()
    assert (
        first[0]
        == f"[gpuyard-sim] container trainer started (image pytorch:2) on simulated node {node}"
    )

    # -f streams the progress lines as they are written; the client leaving ends it
    proc = subprocess.Popen(
        [kubectl(), "--kubeconfig", c.kubeconfig, "logs", "-f", "modelled"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        seen = [proc.stdout.readline() for _ in range(len(first) + 1)]  # type: ignore[union-attr]
    finally:
        proc.kill()
        proc.wait()
    assert "running," in seen[-1] and "s elapsed" in seen[-1]

    prev = c.kubectl("logs", "annotated", "--previous", check=False)
    assert prev.returncode != 0
    assert 'previous terminated container "trainer" in pod "annotated" not found' in prev.stderr

    bad = c.kubectl("logs", "annotated", "-c", "nope", check=False)
    assert bad.returncode != 0 and "container nope is not valid" in bad.stderr

    ex = c.kubectl("exec", "annotated", "--", "nvidia-smi", check=False)
    assert ex.returncode != 0
    assert "exec is not available" in ex.stderr and "simulated node" in ex.stderr, ex.stderr
    assert "could not find the requested resource" not in ex.stderr
    pf = c.kubectl("port-forward", "pod/annotated", "8080:80", check=False, timeout=20)
    assert pf.returncode != 0 and "port-forward is not available" in pf.stderr, pf.stderr

    missing = c.kubectl("logs", "no-such-pod", check=False)
    assert missing.returncode != 0 and 'pods "no-such-pod" not found' in missing.stderr
