"""TrainingJobs end to end on `gpuyard up`, through the gpuyard command line and kubectl."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from gpuyard.cluster.testing import ClusterProcess

ARGS = ["--components", "scheduler,jobs"]


def job_yaml(
    name: str,
    replicas: int,
    gpus: int = 8,
    duration: float | None = None,
    exit_code: int = 0,
    **spec: Any,
) -> str:
    ann = {}
    if duration is not None:
        ann = {"gpuyard.io/sim-duration": str(duration), "gpuyard.io/sim-exit-code": str(exit_code)}
    return yaml.safe_dump(
        {
            "apiVersion": "gpuyard.io/v1alpha1",
            "kind": "TrainingJob",
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "gpusPerReplica": gpus,
                "template": {
                    "metadata": {"annotations": ann},
                    "spec": {"containers": [{"name": "t", "image": "img"}]},
                },
                **spec,
            },
        }
    )


def submit(c: ClusterProcess, tmp: Path, text: str) -> Any:
    f = tmp / f"job-{time.monotonic_ns()}.yaml"
    f.write_text(text)
    return c.gpuyard("submit", "-f", str(f), "--kubeconfig", c.kubeconfig)


def get(c: ClusterProcess, *args: str) -> Any:
    return json.loads(c.kubectl("get", *args, "-o", "json").stdout)


def wait_for(fn: Callable[[], Any], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.25)


def phase(c: ClusterProcess, name: str) -> str:
    return str((get(c, "trainingjob", name).get("status") or {}).get("phase", ""))


def test_job_runs_all_workers_at_once_or_none(
    make_cluster: Callable[..., ClusterProcess], tmp_path: Path
) -> None:
    c = make_cluster(nodes=4, args=ARGS)
    assert submit(c, tmp_path, job_yaml("big", 6)).returncode == 0
    assert submit(c, tmp_path, job_yaml("fits", 3)).returncode == 0
    wait_for(lambda: phase(c, "fits") == "Running")
    pods = get(c, "pods", "-l", "gpuyard.io/job=big")["items"]
    assert len(pods) == 6 and not any(p["spec"].get("nodeName") for p in pods), (
        "none of a gang that cannot fit"
    )
    big = get(c, "trainingjob", "big")
    assert big["status"]["phase"] == "Pending"
    out = c.gpuyard("jobs", "--kubeconfig", c.kubeconfig).stdout
    row = next(line for line in out.splitlines() if line.startswith("big"))
    # Four 8-GPU nodes and no autoscaler: six whole-node workers can never fit.
    assert "can never fit: 6 workers of 8 GPUs" in row and "room for 4" in row, out
    env = {
        e["name"]: e["value"]
        for e in get(c, "pod", "fits-worker-2")["spec"]["containers"][0]["env"]
    }
    assert (
        env["RANK"] == "2"
        and env["WORLD_SIZE"] == "3"
        and env["MASTER_ADDR"] == "fits-worker-0.fits.default.svc"
    )
    hostfile = get(c, "configmap", "fits-hostfile")["data"]["hostfile"]
    assert hostfile.splitlines()[0] == "fits-worker-0.fits.default.svc slots=8"


def test_node_loss_restarts_the_gang_and_backoff_limit_fails_it(
    make_cluster: Callable[..., ClusterProcess], tmp_path: Path
) -> None:
    c = make_cluster(nodes=6, args=ARGS)
    submit(c, tmp_path, job_yaml("llm", 3, backoffLimit=1))
    wait_for(lambda: phase(c, "llm") == "Running")
    node = get(c, "pod", "llm-worker-1")["spec"]["nodeName"]
    c.fault("node-down", node)
    wait_for(lambda: (get(c, "trainingjob", "llm").get("status") or {}).get("restarts") == 1, 30)
    wait_for(lambda: phase(c, "llm") == "Running", 30)
    pods = get(c, "pods", "-l", "gpuyard.io/job=llm")["items"]
    assert {p["metadata"]["labels"]["gpuyard.io/job-generation"] for p in pods} == {"1"}
    assert node not in {p["spec"]["nodeName"] for p in pods}
    described = c.gpuyard("describe", "job", "llm", "--kubeconfig", c.kubeconfig).stdout
    assert "RestartingGang" in described and node in described
    # A second loss is one more than backoffLimit allows.
    c.fault("node-down", get(c, "pod", "llm-worker-0")["spec"]["nodeName"])
    wait_for(lambda: phase(c, "llm") == "Failed", 30)
    assert get(c, "trainingjob", "llm")["status"]["reason"] == "BackoffLimitExceeded"


def test_failing_worker_exit_code_and_delete_leaves_nothing(
    make_cluster: Callable[..., ClusterProcess], tmp_path: Path
) -> None:
    c = make_cluster(nodes=4, args=ARGS)
    submit(c, tmp_path, job_yaml("crash", 2, duration=1, exit_code=3, restartPolicy="Never"))
    wait_for(lambda: phase(c, "crash") == "Failed", 30)
    assert "exit code 3" in get(c, "trainingjob", "crash")["status"]["message"]
    submit(c, tmp_path, job_yaml("done", 2, duration=1))
    wait_for(lambda: phase(c, "done") == "Succeeded", 30)
    r = c.gpuyard("delete", "job", "done", "--kubeconfig", c.kubeconfig)
    assert r.returncode == 0
    c.gpuyard("delete", "job", "crash", "--kubeconfig", c.kubeconfig)

    def empty() -> bool:
        for kind in (
            "pods",
            "podgroups.scheduling.x-k8s.io",
            "podgroups.scheduling.k8s.io",
            "services",
            "configmaps",
            "trainingjobs",
        ):
            items = get(c, kind)["items"]
            if [i for i in items if i["metadata"]["name"] != "kube-root-ca.crt"]:
                return False
        return True

    wait_for(empty, 30)


def test_sweep_and_big_job_share_the_cluster_and_bad_files_change_nothing(
    make_cluster: Callable[..., ClusterProcess], tmp_path: Path
) -> None:
    c = make_cluster(nodes=8, args=ARGS)
    submit(c, tmp_path, job_yaml("big", 6))
    sweep = "---\n".join(
        job_yaml(f"sweep-{i}", 1, gpus=1, priorityClassName="gpuyard-low") for i in range(16)
    )
    c.kubectl("apply", "-f", "-", input=sweep)
    wait_for(lambda: phase(c, "big") == "Running", 30)
    wait_for(lambda: all(phase(c, f"sweep-{i}") == "Running" for i in range(16)), 30)
    pods = get(c, "pods")["items"]
    big_nodes = {p["spec"]["nodeName"] for p in pods if p["metadata"]["name"].startswith("big-")}
    sweep_nodes = {
        p["spec"]["nodeName"] for p in pods if p["metadata"]["name"].startswith("sweep-")
    }
    assert len(big_nodes) == 6 and len(sweep_nodes) == 2 and not big_nodes & sweep_nodes
    before = get(c, "trainingjobs")["items"]
    bad = submit(c, tmp_path, job_yaml("broken", 2).replace("replicas: 2", "replicas: two"))
    assert (
        bad.returncode == 2
        and "spec.replicas" in bad.stderr
        and len(bad.stderr.strip().splitlines()) == 1
    )
    bad2 = submit(c, tmp_path, "kind: TrainingJob\nmetadata: {name: x\n")
    assert bad2.returncode == 2 and "not valid YAML" in bad2.stderr
    assert [j["metadata"]["name"] for j in get(c, "trainingjobs")["items"]] == [
        j["metadata"]["name"] for j in before
    ]
    status = c.gpuyard("status", "--kubeconfig", c.kubeconfig, "-o", "json")
    summary = json.loads(status.stdout)
    assert summary["gpus"] == {"total": 64, "allocated": 64, "idle": 0}


def test_unreachable_cluster_is_one_clear_line(tmp_path: Path) -> None:
    cfg = tmp_path / "kubeconfig"
    cfg.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: c, cluster: {server: 'http://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
    )
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-m", "gpuyard.cli", "jobs", "--kubeconfig", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1
    assert r.stderr.startswith("gpuyard jobs: cannot reach the cluster at http://127.0.0.1:9")
    assert len(r.stderr.strip().splitlines()) == 1


def test_job_speaks_the_upstream_gang_api_and_keeps_to_one_rack(
    make_cluster: Callable[..., ClusterProcess], tmp_path: Path
) -> None:
    # 8 nodes in racks of 4
    c = make_cluster(nodes=8, args=[*ARGS, "--rack-size", "4"])
    text = job_yaml("llm", 3, requiredTopology="gpuyard.io/rack")
    assert submit(c, tmp_path, text).returncode == 0
    wait_for(lambda: phase(c, "llm") == "Running")
    pg = get(c, "podgroups.scheduling.k8s.io", "llm")
    assert pg["spec"]["schedulingPolicy"]["gang"]["minCount"] == 3
    assert pg["spec"]["schedulingConstraints"]["topology"] == [{"key": "gpuyard.io/rack"}]
    assert not get(c, "podgroups.scheduling.x-k8s.io")["items"]
    conds = {x["type"]: x["status"] for x in pg["status"]["conditions"]}
    assert conds["PodGroupInitiallyScheduled"] == "True"
    pods = get(c, "pods", "-l", "gpuyard.io/job=llm")["items"]
    assert all(p["spec"]["schedulingGroup"] == {"podGroupName": "llm"} for p in pods)
    nodes = {n["metadata"]["name"]: n["metadata"]["labels"] for n in get(c, "nodes")["items"]}
    assert len({nodes[p["spec"]["nodeName"]]["gpuyard.io/rack"] for p in pods}) == 1
    # a second job of 3 cannot fit the 1 node left in that rack beside it: the other rack
    assert (
        submit(c, tmp_path, job_yaml("two", 3, requiredTopology="gpuyard.io/rack")).returncode == 0
    )
    wait_for(lambda: phase(c, "two") == "Running")
    pods2 = get(c, "pods", "-l", "gpuyard.io/job=two")["items"]
    racks = {nodes[p["spec"]["nodeName"]]["gpuyard.io/rack"] for p in pods2}
    assert len(racks) == 1 and racks != {nodes[pods[0]["spec"]["nodeName"]]["gpuyard.io/rack"]}
    out = c.gpuyard("describe", "job", "llm", "--kubeconfig", c.kubeconfig).stdout
    assert "PodGroup:" in out and "scheduling.k8s.io" in out
