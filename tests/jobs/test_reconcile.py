"""TrainingJob pure parts: validation, the children it gets, restart decisions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from gpuyard.jobs.reconcile import LABEL_GEN, Observed, hostfile, reconcile, worker_pod
from gpuyard.jobs.spec import JobSpec, validate_job

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def job(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "gpuyard.io/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {
            "name": "llm",
            "namespace": "vision",
            "uid": "u1",
            "creationTimestamp": "2026-01-01T00:00:00Z",
        },
        "spec": {
            "replicas": 3,
            "template": {"spec": {"containers": [{"name": "t", "image": "img"}]}},
            **spec,
        },
    }


def pods_of(
    j: dict[str, Any], phase: str = "Running", gen: int = 0, node: str = "n{}"
) -> list[dict[str, Any]]:
    js = JobSpec.of(j)
    out = []
    for i in range(js.replicas):
        p = worker_pod(j, js, i, gen)
        p["spec"]["nodeName"] = node.format(i)
        p["status"] = {"phase": phase}
        out.append(p)
    return out


def test_every_example_is_a_valid_job() -> None:
    files = sorted(EXAMPLES.glob("*.yaml"))
    assert len(files) >= 3
    docs = [d for f in files for d in yaml.safe_load_all(f.read_text()) if d]
    jobs = [d for d in docs if d.get("kind") == "TrainingJob"]  # not Teams, not shapes
    assert len(jobs) >= 102
    for d in jobs:
        assert validate_job(d) == [], d["metadata"]["name"]
    from gpuyard.teams.assign import parse_team

    teams = [parse_team(d) for d in docs if d.get("kind") == "Team"]
    assert sum(t.wanted for t in teams) == 80  # examples/teams.yaml: 80 of 120 nodes


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"replicas": "four"}, "spec.replicas: Invalid value: 'four': must be of type integer"),
        ({"replicas": 0}, "spec.replicas: Invalid value: 0: must be greater than or equal to 1"),
        ({"restartPolicy": "Sometimes"}, "spec.restartPolicy: Unsupported value: 'Sometimes'"),
        ({"replcas": 3}, 'spec.replcas: unknown field "spec.replcas"'),
        (
            {"template": {"spec": {"containers": [{"name": "t"}]}}},
            "spec.template.spec.containers[0].image: Required value",
        ),
        (
            {
                "template": {
                    "spec": {
                        "containers": [
                            {"name": "t", "image": "i", "resources": {"requests": {"cpu": "lots"}}}
                        ]
                    }
                }
            },
            "spec.template.spec.containers[0].resources.requests.cpu: Invalid value: 'lots'",
        ),
        ({"priorityClassName": "Urgent!"}, "spec.priorityClassName: Invalid value: 'Urgent!'"),
        (
            {"template": {"spec": {"containers": []}}},
            "spec.template.spec.containers: Invalid value",
        ),
    ],
)
def test_bad_jobs_get_one_line_naming_the_field(change: dict[str, Any], message: str) -> None:
    errors = validate_job(job(**change))
    assert errors and errors[0].startswith(message), errors


def test_missing_replicas_and_wrong_kind() -> None:
    j = job()
    del j["spec"]["replicas"]
    j["kind"] = "Job"
    errors = validate_job(j)
    assert "kind: must be TrainingJob, not 'Job'" in errors
    assert "spec.replicas: Required value" in errors


def test_new_job_gets_its_children_and_workers_with_rank_env() -> None:
    j = job(gpusPerReplica=4)
    act = reconcile(Observed(j, [], now=0.0))
    kinds = [o["kind"] for o in act.create]
    assert kinds.count("Pod") == 3 and {"PodGroup", "Service", "ConfigMap"} <= set(kinds)
    pg = next(o for o in act.create if o["kind"] == "PodGroup")
    assert pg["spec"]["minMember"] == 3
    w1 = next(o for o in act.create if o["metadata"]["name"] == "llm-worker-1")
    env = {e["name"]: e["value"] for e in w1["spec"]["containers"][0]["env"]}
    assert env == {
        "RANK": "1",
        "WORLD_SIZE": "3",
        "LOCAL_WORLD_SIZE": "4",
        "MASTER_ADDR": "llm-worker-0.llm.vision.svc",
        "MASTER_PORT": "29500",
        "GPUYARD_JOB": "llm",
        "GPUYARD_HOSTFILE": "/etc/gpuyard/hostfile",
    }
    assert w1["spec"]["schedulerName"] == "gpuyard-scheduler"
    assert w1["metadata"]["labels"]["scheduling.x-k8s.io/pod-group"] == "llm"
    assert w1["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 4
    assert all(o["metadata"]["ownerReferences"][0]["uid"] == "u1" for o in act.create)
    assert hostfile(JobSpec.of(j)).splitlines() == [
        f"llm-worker-{i}.llm.vision.svc slots=4" for i in range(3)
    ]
    assert act.status and act.status["phase"] == "Pending"


def test_all_running_sets_running_and_start_time() -> None:
    j = job()
    act = reconcile(Observed(j, pods_of(j), now=100.0, have={"podgroup", "service", "configmap"}))
    assert not act.create and not act.delete
    assert (
        act.status is not None
        and act.status["phase"] == "Running"
        and act.status["runningWorkers"] == 3
    )
    assert act.status["startTime"]


def test_failed_worker_restarts_the_whole_gang_then_backoff_limit_fails_it() -> None:
    j = job(backoffLimit=1)
    pods = pods_of(j)
    pods[1]["status"] = {
        "phase": "Failed",
        "containerStatuses": [{"state": {"terminated": {"exitCode": 137}}}],
    }
    act = reconcile(Observed(j, pods, now=1.0, have={"podgroup", "service", "configmap"}))
    assert sorted(n for n, _ in act.delete) == ["llm-worker-0", "llm-worker-1", "llm-worker-2"]
    assert (
        act.status is not None
        and act.status["phase"] == "Restarting"
        and act.status["restarts"] == 1
    )
    assert "llm-worker-1 failed on n1 (exit code 137)" in act.events[0][2]
    j["status"] = act.status
    # The new generation is created once the old workers are gone.
    act2 = reconcile(Observed(j, [], now=2.0, have={"podgroup", "service", "configmap"}))
    new = [o for o in act2.create if o["kind"] == "Pod"]
    assert len(new) == 3 and all(o["metadata"]["labels"][LABEL_GEN] == "1" for o in new)
    j["status"] = act2.status or j["status"]
    again = pods_of(j, gen=1)
    again[0]["status"] = {"phase": "Failed"}
    act3 = reconcile(Observed(j, again, now=3.0, have={"podgroup", "service", "configmap"}))
    assert act3.status is not None and act3.status["phase"] == "Failed"
    assert act3.status["reason"] == "BackoffLimitExceeded"


def test_lost_node_is_a_gang_failure_and_its_pods_are_force_deleted() -> None:
    j = job()
    act = reconcile(
        Observed(
            j,
            pods_of(j),
            now=1.0,
            node_ready=lambda n: n != "n2",
            have={"podgroup", "service", "configmap"},
        )
    )
    assert ("llm-worker-2", True) in act.delete and ("llm-worker-0", False) in act.delete
    assert act.status is not None and "llm-worker-2 lost: node n2" in act.status["message"]


def test_all_succeeded_is_success_and_never_policy_fails_at_once() -> None:
    j = job()
    act = reconcile(
        Observed(
            j, pods_of(j, phase="Succeeded"), now=1.0, have={"podgroup", "service", "configmap"}
        )
    )
    assert (
        act.status is not None
        and act.status["phase"] == "Succeeded"
        and act.status["completionTime"]
    )
    j2 = job(restartPolicy="Never")
    pods = pods_of(j2)
    pods[0]["status"] = {"phase": "Failed"}
    act2 = reconcile(Observed(j2, pods, now=1.0, have={"podgroup", "service", "configmap"}))
    assert (
        act2.status is not None
        and act2.status["phase"] == "Failed"
        and act2.status["restarts"] == 0
    )


def test_waiting_job_carries_the_schedulers_reason_and_nothing_changes_twice() -> None:
    j = job()
    pods = pods_of(j, phase="Pending", node="")
    for p in pods:
        p["status"]["conditions"] = [
            {
                "type": "PodScheduled",
                "status": "False",
                "message": "gang llm needs 3 pods at once; 1 fit on 1 node",
            }
        ]
    act = reconcile(Observed(j, pods, now=1.0, have={"podgroup", "service", "configmap"}))
    assert act.status is not None and act.status["message"].startswith("gang llm needs 3 pods")
    j["status"] = act.status
    assert (
        reconcile(Observed(j, pods, now=2.0, have={"podgroup", "service", "configmap"})).status
        is None
    )


def test_deadline_fails_the_job() -> None:
    j = job(activeDeadlineSeconds=60)
    j["status"] = {"phase": "Running", "startTime": "2026-01-01T00:00:00Z"}
    act = reconcile(
        Observed(j, pods_of(j), now=1767225600.0 + 61, have={"podgroup", "service", "configmap"})
    )
    assert act.status is not None and act.status["reason"] == "DeadlineExceeded"
    assert len(act.delete) == 3


def test_every_error_is_reported_not_only_the_first() -> None:
    j = job()
    del j["spec"]["replicas"]
    j["spec"]["replica"] = 4
    assert validate_job(j) == [
        "spec.replicas: Required value",
        'spec.replica: unknown field "spec.replica"',
    ]
    j = job(replicas="lots")
    del j["spec"]["template"]
    assert validate_job(j) == [
        "spec.template: Required value",
        "spec.replicas: Invalid value: 'lots': must be of type integer",
    ]


def test_quantities_the_api_server_accepts_pass() -> None:
    for q in ("500m", "16Gi", 4, "1e3", "0.5", "+2k"):
        c = {"name": "t", "image": "i", "resources": {"limits": {"cpu": q, "memory": q}}}
        assert validate_job(job(template={"spec": {"containers": [c]}})) == [], q


def test_invalid_job_that_reached_the_controller_gets_status_and_one_event() -> None:
    c = {"name": "t", "image": "i", "resources": {"requests": {"cpu": "lots"}}}
    j = job(replicas="four", template={"spec": {"containers": [c]}})
    act = reconcile(Observed(job=j, pods=[], now=1000.0))
    assert act.create == [] and act.status is not None
    st = act.status
    assert st["phase"] == "Pending" and st["reason"] == "InvalidSpec"
    assert "spec.replicas: Invalid value: 'four'" in st["message"]
    assert "spec.template.spec.containers[0].resources.requests.cpu" in st["message"]
    assert act.events == [("Warning", "InvalidSpec", st["message"])]
    scheduled = next(x for x in st["conditions"] if x["type"] == "Scheduled")
    assert scheduled["reason"] == "InvalidSpec" and scheduled["message"] == st["message"]
    again = reconcile(Observed(job={**j, "status": st}, pods=[], now=1001.0))
    assert again.status is None and again.events == [] and again.create == []


def test_refused_workers_are_reported_in_the_jobs_field_and_nothing_is_created() -> None:
    from gpuyard.jobs.spec import refusal

    why = refusal("pods is forbidden: no PriorityClass with name gpuyard-urgent was found")
    assert why.startswith("spec.priorityClassName: ")
    j = job(priorityClassName="gpuyard-urgent")
    act = reconcile(Observed(job=j, pods=[], now=1000.0, refused=why))
    assert act.create == [] and act.status is not None
    assert act.status["reason"] == "WorkersRefused" and why in act.status["message"]
    assert act.events == [("Warning", "WorkersRefused", act.status["message"])]
    fine = reconcile(Observed(job={**j, "status": act.status}, pods=[], now=1001.0))
    assert any(o["kind"] == "Pod" for o in fine.create)
    assert refusal("x", [{"field": "spec.containers[0].image", "message": "Required value"}]) == (
        "spec.template.spec.containers[0].image: Required value"
    )


def test_workers_carry_the_jobs_time_limit_for_the_scheduler() -> None:
    from gpuyard import names
    from gpuyard.scheduling.state import ClusterState

    j = job(activeDeadlineSeconds=5400)
    pod = worker_pod(j, JobSpec.of(j), 0, 0)
    assert pod["metadata"]["annotations"][names.ANN_EXPECTED_RUNTIME] == "5400s"
    info = ClusterState().add_pod(pod)
    assert info is not None and info.runtime == 5400.0  # what the scheduler reads
    assert names.ANN_EXPECTED_RUNTIME not in (
        worker_pod(job(), JobSpec.of(job()), 0, 0)["metadata"].get("annotations") or {}
    )


def test_upstream_or_scheduler_plugins_podgroup_by_what_the_cluster_serves() -> None:
    j = job(requiredTopology="gpuyard.io/rack")
    act = reconcile(Observed(j, [], now=0.0, upstream_served=True))
    pg = next(o for o in act.create if o["kind"] == "PodGroup")
    assert pg["apiVersion"] == "scheduling.k8s.io/v1beta1"
    assert pg["spec"] == {
        "schedulingPolicy": {"gang": {"minCount": 3}},
        "schedulingConstraints": {"topology": [{"key": "gpuyard.io/rack"}]},
    }
    w0 = next(o for o in act.create if o["metadata"]["name"] == "llm-worker-0")
    assert w0["spec"]["schedulingGroup"] == {"podGroupName": "llm"}
    assert "scheduling.x-k8s.io/pod-group" not in w0["metadata"]["labels"]
    # an older cluster: the scheduler-plugins PodGroup, the topology as Kueue's annotation
    act = reconcile(Observed(j, [], now=0.0))
    pg = next(o for o in act.create if o["kind"] == "PodGroup")
    assert pg["apiVersion"] == "scheduling.x-k8s.io/v1alpha1" and pg["spec"] == {"minMember": 3}
    assert pg["metadata"]["annotations"] == {
        "kueue.x-k8s.io/podset-required-topology": "gpuyard.io/rack"
    }
    w0 = next(o for o in act.create if o["metadata"]["name"] == "llm-worker-0")
    assert "schedulingGroup" not in w0["spec"]
    assert w0["metadata"]["labels"]["scheduling.x-k8s.io/pod-group"] == "llm"
    # the field decides; a schedule timeout (scheduler-plugins only) keeps that API
    forced = reconcile(
        Observed(job(podGroupAPI="scheduler-plugins"), [], 0.0, upstream_served=True)
    )
    assert next(o for o in forced.create if o["kind"] == "PodGroup")["spec"] == {"minMember": 3}
    timed = reconcile(Observed(job(scheduleTimeoutSeconds=60), [], 0.0, upstream_served=True))
    assert next(o for o in timed.create if o["kind"] == "PodGroup")["spec"]["minMember"] == 3
    errors = validate_job(job(podGroupAPI="upstream", scheduleTimeoutSeconds=60))
    assert errors == [
        "spec.scheduleTimeoutSeconds: the upstream PodGroup has no schedule timeout; use "
        "podGroupAPI scheduler-plugins or leave it out"
    ]
    assert validate_job(job(podGroupAPI="volcano"))[0].startswith("spec.podGroupAPI: ")
