"""A new user's first hour (issue 19), through the commands as a user types them, on
`gpuyard up`: kubectl explain describes every field, the server and kubelets report
Kubernetes 1.37 (no skew warning), the start logs no warning of an optional API it does
not serve, a Team's capacity is counted in nodes (GPUs refused
with a message, the old spelling kept), a preempted job waits uncharged, help texts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gpuyard.cluster.testing import ClusterProcess, wait_for

ROOT = Path(__file__).resolve().parents[1]


def gpuyard(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gpuyard", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env or dict(os.environ),
        cwd=ROOT,
    )


def test_help_has_examples_and_every_flag_says_what_it_does() -> None:
    top = gpuyard("--help").stdout
    assert "examples:" in top and "gpuyard submit -f examples/ddp.yaml" in top
    assert "dispatcher" not in top and "module" not in top
    twin = gpuyard("twin", "--help").stdout
    for flag in ("--nodes", "--days", "--jobs", "--seed", "--policy", "--quiet"):
        text = twin.split(flag, 1)[1].split("\n  -", 1)[0]
        assert len(text.split()) > 2, (flag, text)
    assert "run: replay" in twin and "synth:" in twin
    assert "default 6443" in gpuyard("up", "--help").stdout
    for cmd in ("nodes", "status"):
        out = gpuyard(cmd, "-n", "x")
        assert out.returncode == 2 and "unrecognized arguments: -n" in out.stderr


def test_kubectl_explain_describes_every_field_and_versions_agree(
    make_cluster: Callable[..., ClusterProcess],
) -> None:
    c = make_cluster(nodes=2)
    for what in ("team.spec", "trainingjob.spec"):
        out = c.kubectl("explain", what).stdout
        assert "<no description>" not in out, out
        fields = out.split("FIELDS:", 1)[1]
        assert fields.count("<") >= 3
    out = c.kubectl("explain", "trainingjob.spec.backoffLimit").stdout
    assert "Preemption" in out and "not charged" in out
    assert "never GPUs" in c.kubectl("explain", "team.spec.capacity").stdout
    ver = c.kubectl("version", "-o", "json")
    assert json.loads(ver.stdout)["serverVersion"]["minor"] == "37"
    assert "WARNING" not in ver.stderr, ver.stderr
    nodes = json.loads(c.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    assert {n["status"]["nodeInfo"]["kubeletVersion"] for n in nodes} == {"v1.37.0-gpuyard"}
    # the start is quiet: an optional API the cluster does not serve (Volcano's
    # PodGroups) is one line, not a warning at every retry of its informer
    log = c.log()
    assert "gpuyard.kube.informer WARNING" not in log, log[-3000:]
    unserved = "informer podgroups: the cluster serves no podgroups.scheduling.volcano.sh"
    assert log.count(unserved) == 1, log[-3000:]


def _team(name: str, capacity: Any) -> str:
    return json.dumps(
        {
            "apiVersion": "gpuyard.io/v1alpha1",
            "kind": "Team",
            "metadata": {"name": name},
            "spec": {"namespaces": [name], "capacity": capacity},
        }
    )


def test_team_capacity_is_whole_nodes_and_gpus_are_refused_with_a_message(
    make_cluster: Callable[..., ClusterProcess],
) -> None:
    c = make_cluster(nodes=6)

    def status(name: str) -> dict[str, Any]:
        out = c.kubectl("get", "team", name, "-o", "json").stdout
        return json.loads(out).get("status") or {}

    c.kubectl("apply", "-f", "-", input=_team("vision", {"gpu": {"nodes": 2}}))
    c.kubectl("apply", "-f", "-", input=_team("old", {"gpu": 1}))  # the older spelling
    wait_for(lambda: status("vision").get("assigned") == 2, 60, "vision's 2 nodes")
    wait_for(lambda: status("old").get("assigned") == 1, 60, "old's 1 node")
    c.kubectl("apply", "-f", "-", input=_team("gpus", {"gpu": {"gpus": 16}}))
    st = wait_for(lambda: status("gpus").get("reason") and status("gpus"), 60, "a reason")
    assert "capacity is counted in whole nodes, not GPUs" in st["reason"], st
    assert not st.get("assigned")
    labels = [
        n["metadata"]["labels"].get("gpuyard.io/team")
        for n in json.loads(c.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    ]
    assert sorted(x for x in labels if x) == ["old", "vision", "vision"]
    # gpuyard jobs names the Team that owns the namespace.
    c.kubectl("create", "namespace", "vision")
    job = (ROOT / "examples" / "sweep.yaml").read_text().split("\n---\n", 1)[0]
    env = c.env
    sub = subprocess.run(
        [sys.executable, "-m", "gpuyard", "submit", "-n", "vision", "-f", "-"],
        input=job,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert sub.returncode == 0, sub.stderr
    out = gpuyard("jobs", "-n", "vision", env=env).stdout
    row = next(ln for ln in out.splitlines() if ln.startswith("sweep-000"))
    assert row.split()[1] == "vision", out


def test_a_preempted_job_waits_uncharged_and_says_by_whom(
    make_cluster: Callable[..., ClusterProcess],
) -> None:
    c = make_cluster(nodes=2)
    env = c.env
    low = (ROOT / "examples" / "sweep.yaml").read_text().split("\n---\n", 1)[0]
    low = low.replace("gpusPerReplica: 1", "gpusPerReplica: 8").replace(
        "replicas: 1", "replicas: 2"
    )
    c.kubectl("apply", "-f", "-", input=low)

    def job(name: str) -> dict[str, Any]:
        return json.loads(c.kubectl("get", "trainingjob", name, "-o", "json").stdout)

    wait_for(lambda: (job("sweep-000").get("status") or {}).get("phase") == "Running", 60, "low")
    high = low.replace("sweep-000", "urgent").replace("gpuyard-low", "gpuyard-high")
    c.kubectl("apply", "-f", "-", input=high)
    st = wait_for(
        lambda: (s := job("sweep-000").get("status") or {}).get("reason") == "Preempted" and s,
        60,
        "sweep-000 preempted",
    )
    assert st["phase"] == "Pending" and st["restarts"] == 0 and st["preemptions"] == 1
    assert "preempted by gang urgent" in st["message"]
    wait_for(lambda: (job("urgent").get("status") or {}).get("phase") == "Running", 60, "urgent")
    time.sleep(1)
    out = gpuyard("describe", "job", "sweep-000", env=env).stdout
    assert "Preemptions:  1 (not charged as restarts)" in out and "Restarts:     0 of 3" in out
    assert "Preempted" in out.split("History:", 1)[1]
    jobs = gpuyard("jobs", env=env).stdout
    row = next(ln for ln in jobs.splitlines() if ln.startswith("sweep-000"))
    assert " Pending " in row and "Restarting" not in row and "preempted by gang urgent" in row


def test_deleting_a_worker_restarts_its_gang_once_and_charges_no_one_else(
    make_cluster: Callable[..., ClusterProcess],
) -> None:
    c = make_cluster(nodes=3)
    env = c.env
    first = (ROOT / "examples" / "sweep.yaml").read_text().split("\n---\n", 1)[0]
    big = (
        first.replace("sweep-000", "big")
        .replace("gpuyard-low", "gpuyard-normal")
        .replace("replicas: 1", "replicas: 2")
        .replace("gpusPerReplica: 1", "gpusPerReplica: 8")
    )
    c.kubectl("apply", "-f", "-", input=big)

    def job(name: str) -> dict[str, Any]:
        return json.loads(c.kubectl("get", "trainingjob", name, "-o", "json").stdout)

    def status(name: str) -> dict[str, Any]:
        return job(name).get("status") or {}

    wait_for(lambda: status("big").get("phase") == "Running", 60, "big Running")
    # Low-priority sweeps fill the third node and wait for more.
    docs = (ROOT / "examples" / "sweep.yaml").read_text().split("\n---\n")[:12]
    c.kubectl("apply", "-f", "-", input="\n---\n".join(docs))
    wait_for(
        lambda: sum(status(f"sweep-{i:03d}").get("phase") == "Running" for i in range(12)) == 8,
        60,
        "8 sweeps Running on the free node",
    )
    c.kubectl("delete", "pod", "big-worker-1", "--wait=false")
    st = wait_for(lambda: (s := status("big")).get("restarts") == 1 and s, 60, "big restarted")
    assert "big-worker-1 deleted from node" in st["history"][-1]["cause"], st
    wait_for(lambda: status("big").get("phase") == "Running", 90, "big Running again")
    time.sleep(2)
    assert status("big")["restarts"] == 1
    for i in range(12):
        s = status(f"sweep-{i:03d}")
        assert s.get("restarts", 0) == 0 and s.get("phase") != "Restarting", (i, s)
    out = gpuyard("describe", "job", "big", env=env).stdout
    assert "Restarts:     1 of 3" in out and "deleted from node" in out.split("History:", 1)[1]
