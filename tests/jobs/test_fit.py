""" "Can never fit": a job bigger than anything the node pools and the autoscaler can
ever offer, told apart from a busy cluster (pure parts, then on `gpuyard up` through
gpuyard submit, gpuyard jobs and kubectl describe)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from gpuyard.cluster.testing import ClusterProcess
from gpuyard.jobs.fit import never_fits
from gpuyard.k8s.autoscaler import group_max_sizes
from tests.jobs.test_e2e import ARGS, get, job_yaml, submit, wait_for


def node(name: str, gpus: int, pool: str = "gpu") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"gpuyard.io/pool": pool}},
        "status": {"allocatable": {"nvidia.com/gpu": str(gpus), "cpu": "96"}},
    }


NODES = [node(f"n{i}", 8) for i in range(4)] + [node("c0", 0, "cpu")]
STATUS = yaml.safe_dump({"nodeGroups": [{"name": "gpu", "health": {"minSize": 0, "maxSize": 24}}]})


def test_more_gpus_per_worker_than_any_node_has() -> None:
    why = never_fits(2, 16, NODES, {})
    assert why == ("can never fit: each worker asks for 16 GPUs and the largest node offers 8")


def test_more_workers_than_the_pools_can_ever_hold() -> None:
    sizes = group_max_sizes({"data": {"status": STATUS}})
    assert sizes == {"gpu": 24}
    why = never_fits(256, 8, NODES, sizes)
    assert why is not None and why.startswith("can never fit: 256 workers of 8 GPUs")
    assert "top out at 24 nodes of 8 GPUs (gpu): room for 24" in why
    # What the autoscaler can add counts: 24 fit, though only 4 nodes exist now.
    assert never_fits(24, 8, NODES, sizes) is None
    assert never_fits(48, 4, NODES, sizes) is None
    assert never_fits(49, 4, NODES, sizes) is not None
    # Without an autoscaler only the nodes there are count.
    assert never_fits(5, 8, NODES, {}) is not None
    assert never_fits(4, 8, NODES, {}) is None


def test_unknown_shapes_and_cpu_jobs_are_never_called_impossible() -> None:
    assert never_fits(10, 0, NODES, {}) is None
    assert never_fits(3, 8, [], {}) is None
    # A group with no node yet has an unknown shape: nothing is claimed from it.
    cpu_only = [node("c0", 0, "cpu")]
    assert never_fits(3, 8, cpu_only, {"gpu": 10}) is not None  # largest node: 0 GPUs
    assert (
        group_max_sizes({"data": {"status": "not: [valid"}}) == {} and group_max_sizes(None) == {}
    )


def test_never_fit_is_said_in_jobs_and_describe(
    make_cluster: Callable[..., ClusterProcess], tmp_path: Path
) -> None:
    c = make_cluster(nodes=2, args=ARGS)
    assert submit(c, tmp_path, job_yaml("wide", 2, gpus=16)).returncode == 0
    assert submit(c, tmp_path, job_yaml("many", 3, gpus=8)).returncode == 0

    def reason(name: str) -> str:
        return str((get(c, "trainingjob", name).get("status") or {}).get("reason", ""))

    wait_for(lambda: reason("wide") == "CanNeverFit" and reason("many") == "CanNeverFit", 60)
    wide = get(c, "trainingjob", "wide")["status"]
    assert wide["message"] == (
        "can never fit: each worker asks for 16 GPUs and the largest node offers 8"
    )
    many = get(c, "trainingjob", "many")["status"]["message"]
    assert many.startswith("can never fit: 3 workers of 8 GPUs") and "room for 2" in many
    out = c.gpuyard("jobs", "--kubeconfig", c.kubeconfig).stdout
    row = next(line for line in out.splitlines() if line.startswith("wide"))
    assert "can never fit" in row, out
    desc = wait_for(
        lambda: (
            (d := c.kubectl("describe", "trainingjob", "wide").stdout)
            and "CanNeverFit" in d.split("Events:")[-1]
            and d
        ),
        30,
    )
    assert "can never fit" in desc.split("Events:")[-1]
    pod = wait_for(
        lambda: (
            (d := c.kubectl("describe", "pod", "wide-worker-0").stdout)
            and "can never fit" in d.split("Events:")[-1]
            and d
        ),
        30,
    )
    assert "Events:  <none>" not in pod and "CanNeverFit" in pod


def test_what_the_autoscaler_can_add_counts(
    make_cluster: Callable[..., ClusterProcess], tmp_path: Path
) -> None:
    c = make_cluster(nodes=2, args=[*ARGS, "--autoscale", "gpu=0:3"])
    wait_for(
        lambda: c.kubectl("get", "configmap", "-n", "kube-system", check=False).stdout.count(
            "cluster-autoscaler-status"
        ),
        60,
    )
    assert submit(c, tmp_path, job_yaml("huge", 256, gpus=8)).returncode == 0
    assert submit(c, tmp_path, job_yaml("grows", 3, gpus=8)).returncode == 0

    def status(name: str) -> dict[str, Any]:
        return get(c, "trainingjob", name).get("status") or {}

    wait_for(lambda: status("huge").get("reason") == "CanNeverFit", 60)
    assert (
        "the node pools top out at 3 nodes of 8 GPUs (gpu): room for 3"
        in (status("huge")["message"])
    )
    # Three workers fit once the autoscaler adds a node (two are there now): they wait
    # for room like on a busy cluster, never "can never fit".
    wait_for(lambda: len(get(c, "pods", "-l", "gpuyard.io/job=grows")["items"]) == 3, 60)
    wait_for(lambda: status("grows").get("reason") not in (None, "", "Waiting"), 60)
    assert status("grows")["reason"] != "CanNeverFit", status("grows")
    assert "can never fit" not in str(status("grows").get("message"))
