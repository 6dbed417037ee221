"""batch/v1 Job failure handling on `gpuyard up`: podFailurePolicy (FailJob on one
container's exit code, Ignore for a pod evicted through the Eviction API), activeDeadlineSeconds,
ttlSecondsAfterFinished and backoffLimitPerIndex, seen through kubectl and the official
Python client; and the policy's rule matching on pods as a kubelet reports them."""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8sconfig

from gpuyard.cluster.sim import exit_codes, sigterm_exit_codes, termination
from gpuyard.cluster.testing import ClusterProcess, wait_for
from gpuyard.cluster.workloads.podfailure import judge


def job_body(name: str, ann: dict[str, str], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            **spec,
            "template": {
                "metadata": {"annotations": ann},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "busybox"}],
                },
            },
        },
    }


def get_job(c: ClusterProcess, name: str) -> dict[str, Any]:
    return json.loads(c.kubectl("get", "job", name, "-o", "json").stdout)  # type: ignore[no-any-return]


def job_pods(c: ClusterProcess, name: str) -> list[dict[str, Any]]:
    out = c.kubectl("get", "pods", "-l", f"job-name={name}", "-o", "json").stdout
    return json.loads(out)["items"]  # type: ignore[no-any-return]


def condition(job: dict[str, Any], ctype: str) -> dict[str, Any]:
    return next(c for c in job["status"]["conditions"] if c["type"] == ctype)


def wait_job(c: ClusterProcess, name: str, cond: str) -> dict[str, Any]:
    c.kubectl("wait", f"--for=condition={cond}", f"job/{name}", "--timeout=60s", timeout=90)
    return get_job(c, name)


def test_fail_job_rule_on_a_containers_exit_code_fails_at_once(cluster: ClusterProcess) -> None:
    # main exits 42, side 0: the rule naming side does not match, the next one does
    policy = {
        "rules": [
            {
                "action": "Ignore",
                "onExitCodes": {"containerName": "side", "operator": "In", "values": [42]},
            },
            {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [42]}},
        ]
    }
    body = job_body(
        "exit42",
        {"gpuyard.io/sim-duration": "0.3", "gpuyard.io/sim-exit-code": "main=42"},
        backoffLimit=5,
        podFailurePolicy=policy,
    )
    body["spec"]["template"]["spec"]["containers"].append({"name": "side", "image": "busybox"})
    batch = k8s.BatchV1Api(k8sconfig.new_client_from_config(config_file=cluster.kubeconfig))
    batch.create_namespaced_job("default", body)
    job = wait_job(cluster, "exit42", "failed")
    failed = condition(job, "Failed")
    assert failed["reason"] == "PodFailurePolicy"
    (pod,) = job_pods(cluster, "exit42")  # no retry, although backoffLimit is 5
    assert failed["message"] == (
        f"Container main for pod default/{pod['metadata']['name']} failed with exit code 42 "
        "matching FailJob rule at index 1"
    )
    assert job["status"]["failed"] == 1
    assert condition(job, "FailureTarget")["reason"] == "PodFailurePolicy"
    core = k8s.CoreV1Api(k8sconfig.new_client_from_config(config_file=cluster.kubeconfig))
    got = core.read_namespaced_pod(pod["metadata"]["name"], "default")
    assert got.status.phase == "Failed"
    ended = {cs.name: cs.state.terminated for cs in got.status.container_statuses}
    assert (ended["main"].exit_code, ended["main"].reason) == (42, "Error")
    assert (ended["side"].exit_code, ended["side"].reason) == (0, "Completed")


def test_sigterm_exit_code_annotation_sets_how_a_deleted_container_ends() -> None:
    def pod(ann: dict[str, str]) -> dict[str, Any]:
        return {
            "metadata": {
                "name": "p",
                "namespace": "ns",
                "deletionTimestamp": "2026-01-01T10:00:30Z",
                "deletionGracePeriodSeconds": 30,
                "annotations": ann,
            },
            "spec": {"containers": [{"name": "app"}, {"name": "side"}, {"name": "stuck"}]},
        }

    at = datetime(2026, 1, 1, 10, 0, 0, tzinfo=UTC)
    _, codes, _ = termination(pod({"gpuyard.io/sim-stop-seconds": "stuck=never"}), at)
    assert codes == {"app": 143, "side": 143, "stuck": 137}  # without a handler
    ann = {
        "gpuyard.io/sim-stop-seconds": "stuck=never",
        "gpuyard.io/sim-sigterm-exit-code": "app=0",
    }
    _, codes, _ = termination(pod(ann), at)
    assert codes == {"app": 0, "side": 143, "stuck": 137}  # killed at the grace's end
    ann["gpuyard.io/sim-sigterm-exit-code"] = "0"
    assert termination(pod(ann), at)[1] == {"app": 0, "side": 0, "stuck": 137}
    assert sigterm_exit_codes("side=1", ["app", "side"]) == {"app": 143, "side": 1}
    for bad in ("x", "256", "-1", "other=0"):
        try:
            sigterm_exit_codes(bad, ["app", "side"])
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} was taken")


def test_exit_code_annotation_forms() -> None:
    assert exit_codes("42", ["a", "b"]) == {"a": 42, "b": 42}
    assert exit_codes("b=3", ["a", "b"]) == {"a": 0, "b": 3}
    assert exit_codes(" a=1, b=2 ", ["a", "b"]) == {"a": 1, "b": 2}
    for bad, said in (
        ("x", "'x' is not an exit code"),
        ("c=1", "'c=1' names no container of the pod (a, b)"),
        ("a=one", "'one' is not an exit code (container a)"),
    ):
        try:
            exit_codes(bad, ["a", "b"])
        except ValueError as exc:
            assert str(exc) == said
        else:
            raise AssertionError(f"{bad!r} was accepted")


def test_evicted_pod_is_ignored_by_its_rule_and_replaced(cluster: ClusterProcess) -> None:
    policy = {
        "rules": [
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
            {"action": "FailJob", "onExitCodes": {"operator": "NotIn", "values": [0]}},
        ]
    }
    body = job_body("train", {"gpuyard.io/sim-duration": "120"}, podFailurePolicy=policy)
    cluster.kubectl("create", "-f", "-", input=json.dumps(body))

    def running() -> list[dict[str, Any]]:
        return [p for p in job_pods(cluster, "train") if p["status"].get("phase") == "Running"]

    (first,) = wait_for(running, what="the job's pod to run")
    api = k8s.CoreV1Api(k8sconfig.new_client_from_config(config_file=cluster.kubeconfig))
    name = first["metadata"]["name"]
    api.create_namespaced_pod_eviction(
        name,
        "default",
        k8s.V1Eviction(metadata=k8s.V1ObjectMeta(name=name, namespace="default")),
    )
    (second,) = wait_for(
        lambda: [p for p in running() if p["metadata"]["name"] != name],
        what="a replacement pod running",
    )
    assert name not in {p["metadata"]["name"] for p in job_pods(cluster, "train")}

    def settled() -> dict[str, Any] | None:
        st = get_job(cluster, "train")["status"]
        return st if st.get("active") == 1 and st.get("ready") == 1 else None

    st = wait_for(settled, what="the job to count its replacement")
    assert st.get("failed", 0) == 0  # the eviction did not count
    assert not any(c["type"] == "Failed" for c in st.get("conditions") or [])


def test_a_deleted_pod_that_handles_sigterm_succeeds_under_a_failure_policy(
    cluster: ClusterProcess,
) -> None:
    # Its container exits 0 on SIGTERM, 3 s after the pod is deleted. With a
    # podFailurePolicy (podReplacementPolicy Failed) the Job counts the pod by the
    # phase it ends in: Succeeded, so the Job completes; the FailJob rule for non-zero
    # codes does not fire. Without one (TerminatingOrFailed) the deletion itself is a
    # failure, as kube-controller-manager counts it: backoffLimit 0 fails that Job.
    ann = {
        "gpuyard.io/sim-duration": "120",
        "gpuyard.io/sim-sigterm-exit-code": "0",
        "gpuyard.io/sim-stop-seconds": "3",
    }
    policy = {"rules": [{"action": "FailJob", "onExitCodes": {"operator": "NotIn", "values": [0]}}]}
    batch = k8s.BatchV1Api(k8sconfig.new_client_from_config(config_file=cluster.kubeconfig))
    batch.create_namespaced_job("default", job_body("graceful", ann, podFailurePolicy=policy))
    batch.create_namespaced_job("default", job_body("counted", ann, backoffLimit=0))

    def running(name: str) -> list[dict[str, Any]]:
        return [p for p in job_pods(cluster, name) if p["status"].get("phase") == "Running"]

    for name in ("graceful", "counted"):
        (pod,) = wait_for(functools.partial(running, name), what=f"{name}'s pod to run")
        cluster.kubectl("delete", "pod", pod["metadata"]["name"], "--wait=false")
    job = wait_job(cluster, "graceful", "complete")
    assert (job["status"].get("succeeded"), job["status"].get("failed", 0)) == (1, 0)
    assert not any(c["type"] == "Failed" for c in job["status"]["conditions"])
    assert job_pods(cluster, "graceful") == []  # no replacement was started
    job = wait_job(cluster, "counted", "failed")
    assert condition(job, "Failed")["reason"] == "BackoffLimitExceeded"
    wait_for(lambda: job_pods(cluster, "counted") == [], what="the deleted pod to go")
    st = get_job(cluster, "counted")["status"]
    assert (st.get("succeeded", 0), st["failed"]) == (0, 1)  # counted once, as failed


def test_active_deadline_fails_the_job_and_stops_its_pods(cluster: ClusterProcess) -> None:
    body = job_body(
        "slow", {"gpuyard.io/sim-duration": "60"}, activeDeadlineSeconds=2, parallelism=2
    )
    body["spec"]["completions"] = 2
    cluster.kubectl("create", "-f", "-", input=json.dumps(body))
    job = wait_job(cluster, "slow", "failed")
    failed = condition(job, "Failed")
    assert failed["reason"] == "DeadlineExceeded"
    assert failed["message"] == "Job was active longer than specified deadline"
    assert job["status"].get("active", 0) == 0
    wait_for(lambda: job_pods(cluster, "slow") == [], what="the job's pods to be deleted")


def test_ttl_after_finished_deletes_the_job_and_its_pods(cluster: ClusterProcess) -> None:
    batch = k8s.BatchV1Api(k8sconfig.new_client_from_config(config_file=cluster.kubeconfig))
    body = job_body("brief", {"gpuyard.io/sim-duration": "0.3"}, ttlSecondsAfterFinished=2)
    batch.create_namespaced_job("default", body)
    job = wait_job(cluster, "brief", "complete")
    assert job["metadata"]["name"] == "brief"
    assert len(job_pods(cluster, "brief")) == 1  # kept until the TTL runs out

    def gone() -> bool:
        return cluster.kubectl("get", "job", "brief", check=False).returncode != 0

    wait_for(gone, timeout=20, what="the finished job to be deleted")
    wait_for(lambda: job_pods(cluster, "brief") == [], what="its pods to go with it")


def test_backoff_limit_per_index_gives_up_failing_indexes(cluster: ClusterProcess) -> None:
    body = job_body(
        "perindex",
        {"gpuyard.io/sim-duration": "0.3", "gpuyard.io/sim-exit-code": "1"},
        completions=3,
        parallelism=3,
        completionMode="Indexed",
        backoffLimitPerIndex=1,
    )
    cluster.kubectl("create", "-f", "-", input=json.dumps(body))
    job = wait_job(cluster, "perindex", "failed")
    assert condition(job, "Failed")["reason"] == "FailedIndexes"
    st = job["status"]
    assert st["failedIndexes"] == "0-2" and st["failed"] == 6
    tries: dict[str, list[str]] = {}
    for p in job_pods(cluster, "perindex"):
        ann = p["metadata"]["annotations"]
        i = ann["batch.kubernetes.io/job-completion-index"]
        tries.setdefault(i, []).append(ann["batch.kubernetes.io/job-index-failure-count"])
    assert {i: sorted(v) for i, v in tries.items()} == {i: ["0", "1"] for i in "012"}


def _failed_pod(codes: dict[str, int], conds: list[dict[str, str]] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "namespace": "ns"},
        "status": {
            "phase": "Failed",
            "conditions": conds or [],
            "containerStatuses": [
                {"name": n, "state": {"terminated": {"exitCode": c}}} for n, c in codes.items()
            ],
        },
    }


def test_rules_match_in_order_by_exit_code_container_and_condition() -> None:
    policy = {
        "rules": [
            {
                "action": "FailJob",
                "onExitCodes": {"containerName": "main", "operator": "In", "values": [3]},
            },
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
            {"action": "Count", "onExitCodes": {"operator": "NotIn", "values": [1, 2]}},
        ]
    }
    assert judge(_failed_pod({"main": 3}), policy).action == "FailJob"
    # the exit code on another container does not match a rule naming "main"
    assert judge(_failed_pod({"side": 3}), policy).action == "Count"
    evicted = _failed_pod({"main": 1}, [{"type": "DisruptionTarget", "status": "True"}])
    v = judge(evicted, policy)
    assert v.action == "Ignore"
    assert v.message == "Pod ns/p has condition DisruptionTarget matching Ignore rule at index 1"
    # exit code 0 never matches, not even NotIn: a pod failing on another container's 1 counts
    assert judge(_failed_pod({"main": 0, "side": 1}), policy).action == "Count"
    false_cond = _failed_pod({"main": 1}, [{"type": "DisruptionTarget", "status": "False"}])
    assert judge(false_cond, policy).action == "Count"
    assert judge(_failed_pod({"main": 9}), None).action == "Count"
