"""batch/v1 Jobs on `gpuyard up`, with kubectl: `create job` runs to completion, an
Indexed Job with 8 completions gives each index one pod, a failing Job stops at its
backoffLimit, a suspended Job makes no pods until resumed."""

from __future__ import annotations

import json
import time
from typing import Any

from gpuyard.cluster.testing import ClusterProcess


def job(c: ClusterProcess, name: str) -> dict[str, Any]:
    return json.loads(c.kubectl("get", "job", name, "-o", "json").stdout)  # type: ignore[no-any-return]


def job_pods(c: ClusterProcess, name: str) -> list[dict[str, Any]]:
    out = c.kubectl("get", "pods", "-l", f"job-name={name}", "-o", "json").stdout
    return json.loads(out)["items"]  # type: ignore[no-any-return]


def wait(c: ClusterProcess, name: str, cond: str = "complete") -> None:
    c.kubectl("wait", f"--for=condition={cond}", f"job/{name}", "--timeout=60s", timeout=90)


def test_create_job_runs_to_completion(cluster: ClusterProcess) -> None:
    cluster.kubectl("create", "job", "hello", "--image=busybox", "--", "echo", "hi")
    wait(cluster, "hello")
    st = job(cluster, "hello")["status"]
    assert st["succeeded"] == 1 and st.get("active", 0) == 0
    assert st["startTime"] and st["completionTime"]
    (p,) = job_pods(cluster, "hello")
    assert p["status"]["phase"] == "Succeeded"
    assert p["metadata"]["ownerReferences"][0]["kind"] == "Job"


def test_indexed_job_with_8_completions(cluster: ClusterProcess) -> None:
    body = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "idx"},
        "spec": {
            "completions": 8,
            "parallelism": 3,
            "completionMode": "Indexed",
            "template": {
                "metadata": {"annotations": {"gpuyard.io/sim-duration": "0.5"}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "c", "image": "busybox"}],
                },
            },
        },
    }
    cluster.kubectl("create", "-f", "-", input=json.dumps(body))
    wait(cluster, "idx")
    st = job(cluster, "idx")["status"]
    assert st["succeeded"] == 8 and st["completedIndexes"] == "0-7"
    pods = job_pods(cluster, "idx")
    done = sorted(
        int(p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"])
        for p in pods
        if p["status"]["phase"] == "Succeeded"
    )
    assert done == list(range(8))  # each index once
    for p in pods:
        i = p["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"]
        assert p["metadata"]["name"].startswith(f"idx-{i}-")


def test_failing_job_stops_at_backoff_limit(cluster: ClusterProcess) -> None:
    body = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "bad"},
        "spec": {
            "backoffLimit": 1,
            "template": {
                "metadata": {
                    "annotations": {
                        "gpuyard.io/sim-duration": "0.3",
                        "gpuyard.io/sim-exit-code": "2",
                    }
                },
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "c", "image": "busybox"}],
                },
            },
        },
    }
    cluster.kubectl("create", "-f", "-", input=json.dumps(body))
    wait(cluster, "bad", "failed")
    st = job(cluster, "bad")["status"]
    assert st["failed"] == 2
    failed = next(c for c in st["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "BackoffLimitExceeded"
    assert len(job_pods(cluster, "bad")) == 2


def test_suspended_job_waits_for_resume(cluster: ClusterProcess) -> None:
    body = json.loads(
        cluster.kubectl(
            "create", "job", "later", "--image=busybox", "--dry-run=client", "-o", "json"
        ).stdout
    )
    body["spec"]["suspend"] = True
    cluster.kubectl("create", "-f", "-", input=json.dumps(body))
    cluster.kubectl("wait", "--for=condition=suspended", "job/later", "--timeout=30s")
    time.sleep(1.5)
    assert job_pods(cluster, "later") == []
    assert job(cluster, "later")["status"].get("active", 0) == 0
    cluster.kubectl("patch", "job", "later", "--type=merge", "-p", '{"spec":{"suspend":false}}')
    wait(cluster, "later")
    assert job(cluster, "later")["status"]["succeeded"] == 1
