"""What counts as a restart (gpuyard.jobs.causes): one rule, and every restart or
preemption says its cause, in the job's status, history and Event."""

from __future__ import annotations

from typing import Any

from gpuyard.jobs.reconcile import Observed, reconcile
from gpuyard.k8s.disruption import (
    DELETION_BY_TAINT_MANAGER,
    EVICTION_BY_EVICTION_API,
    PREEMPTION_BY_SCHEDULER,
    disruption_condition,
)
from tests.jobs.test_reconcile import job, pods_of


def running(j: dict[str, Any]) -> dict[str, Any]:
    j["status"] = {"phase": "Running", "runningWorkers": 3, "restarts": 0, "generation": 0}
    return j


def node(
    name: str,
    *,
    ready: str = "True",
    taint: dict[str, Any] | None = None,
    conditions: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {"taints": [taint] if taint else []},
        "status": {
            "conditions": [
                {
                    "type": "Ready",
                    "status": ready,
                    "message": "Kubelet stopped posting node status.",
                },
                *(conditions or []),
            ]
        },
    }


def decide(
    j: dict[str, Any],
    pods: list[dict[str, Any]],
    nodes: dict[str, Any],
    gone: list[dict[str, Any]] | None = None,
) -> Any:
    def ready(n: str) -> bool:
        nd = nodes.get(n)
        return (
            nd is not None
            and nd["status"]["conditions"][0]["status"] == "True"
            and not [t for t in nd["spec"]["taints"] if t.get("effect") == "NoExecute"]
        )

    return reconcile(
        Observed(
            job=j,
            pods=pods,
            now=100.0,
            node_ready=ready,
            have={"podgroup", "service", "configmap"},
            gone=gone or [],
            node_of=nodes.get,
        )
    )


def healthy(*names: str) -> dict[str, Any]:
    return {n: node(n) for n in names}


def test_a_worker_lost_with_an_xid_node_is_a_restart_and_says_xid_79() -> None:
    j = running(job())
    pods = pods_of(j)
    nodes = healthy("n0", "n1")
    nodes["n2"] = node(
        "n2",
        taint={"key": "gpuyard.io/unhealthy", "value": "Xid79", "effect": "NoExecute"},
        conditions=[
            {
                "type": "GPUHealthy",
                "status": "False",
                "reason": "Xid79",
                "message": "fatal: Xid 79 on 0000:38:00: GPU has fallen off the bus",
            }
        ],
    )
    gone = pods.pop(2)  # the taint manager deleted it: only its last state is known
    gone["status"]["conditions"] = [
        disruption_condition(
            DELETION_BY_TAINT_MANAGER, "node n2 has the taint gpuyard.io/unhealthy=Xid79:NoExecute"
        )
    ]
    act = decide(j, pods, nodes, gone=[gone])
    st = act.status
    assert st["phase"] == "Restarting" and st["restarts"] == 1
    assert "llm-worker-2" in st["message"] and "Xid 79" in st["message"]
    assert "GPU has fallen off the bus" in st["message"]
    assert st["history"][-1]["reason"] == "RestartingGang"
    assert "Xid 79" in st["history"][-1]["cause"] and st["history"][-1]["generation"] == 0
    assert [e[1] for e in act.events] == ["RestartingGang"] and "Xid 79" in act.events[0][2]
    assert act.ended == ("restart", "node-unhealthy")  # the restarts metric's cause


def test_a_lost_node_is_a_restart_and_says_the_node_was_lost() -> None:
    j = running(job())
    nodes = healthy("n0", "n1")
    nodes["n2"] = node("n2", ready="Unknown")
    act = decide(j, pods_of(j), nodes)
    assert act.status["restarts"] == 1
    assert "llm-worker-2 lost: node n2 was lost (Ready=Unknown" in act.status["message"]
    assert act.ended == ("restart", "node-lost")


def test_a_deleted_worker_is_a_restart_and_says_so() -> None:
    j = running(job())
    pods = pods_of(j)
    gone = pods.pop(1)
    act = decide(j, pods, healthy("n0", "n1", "n2"), gone=[gone])
    assert act.status["restarts"] == 1
    assert act.status["message"].startswith("llm-worker-1 deleted from node n1")
    assert act.ended == ("restart", "deletion")


def _terminated(pod: dict[str, Any], code: int, finished: str) -> dict[str, Any]:
    pod["status"]["phase"] = "Failed"
    pod["status"]["containerStatuses"] = [
        {"name": "t", "state": {"terminated": {"exitCode": code, "finishedAt": finished}}}
    ]
    return pod


def test_a_deleted_worker_seen_failed_by_its_sigterm_says_it_was_deleted() -> None:
    # `kubectl delete pod` at 10:00:00 with 30 s of grace: the kubelet's SIGTERM ends it
    # (143) and it is Failed before it is removed; that state, when seen, says deleted.
    j = running(job())
    pods = pods_of(j)
    gone = _terminated(pods.pop(1), 143, "2026-01-01T10:00:01Z")
    gone["metadata"]["deletionTimestamp"] = "2026-01-01T10:00:30Z"
    gone["metadata"]["deletionGracePeriodSeconds"] = 30
    act = decide(j, pods, healthy("n0", "n1", "n2"), gone=[gone])
    assert act.status["restarts"] == 1
    assert act.status["message"].startswith("llm-worker-1 deleted from node n1"), act.status
    assert act.ended == ("restart", "deletion")


def test_a_worker_that_failed_before_it_was_deleted_says_its_exit_code() -> None:
    j = running(job())
    pods = pods_of(j)
    gone = _terminated(pods.pop(1), 1, "2026-01-01T09:59:59Z")
    gone["metadata"]["deletionTimestamp"] = "2026-01-01T10:00:30Z"
    gone["metadata"]["deletionGracePeriodSeconds"] = 30
    act = decide(j, pods, healthy("n0", "n1", "n2"), gone=[gone])
    assert act.status["message"].startswith("llm-worker-1 failed on n1 (exit code 1)")
    assert act.ended == ("restart", "failure")


def test_a_worker_drained_off_its_node_is_a_restart_and_says_drain() -> None:
    j = running(job())
    pods = pods_of(j)
    gone = pods.pop(1)
    gone.setdefault("status", {})["conditions"] = [
        disruption_condition(EVICTION_BY_EVICTION_API, "Eviction API: evicting from node n1")
    ]
    nodes = healthy("n0", "n1", "n2")
    nodes["n1"]["spec"]["unschedulable"] = True  # kubectl drain cordons first
    act = decide(j, pods, nodes, gone=[gone])
    assert act.status["restarts"] == 1
    assert act.status["message"].startswith(
        "llm-worker-1 evicted from node n1 by the Eviction API (drain)"
    )
    assert act.ended == ("restart", "eviction")
    nodes["n1"]["spec"]["unschedulable"] = False  # evicted without a cordon: no "drain"
    act = decide(j, pods, nodes, gone=[gone])
    assert act.status["message"].startswith("llm-worker-1 evicted from node n1 by the Eviction API")
    assert "(drain)" not in act.status["message"]


def test_a_preempted_gang_waits_and_is_not_charged() -> None:
    j = running(job())
    pods = pods_of(j)
    for p in pods:
        p["status"]["conditions"] = [
            disruption_condition(
                PREEMPTION_BY_SCHEDULER,
                "preempted by gang big (priority 1000); evicting whole gang llm",
            )
        ]
        p["metadata"]["deletionTimestamp"] = "2026-01-01T00:01:00Z"
    act = decide(j, pods, healthy("n0", "n1", "n2"))
    st = act.status
    assert st["phase"] == "Pending" and st["reason"] == "Preempted"
    assert st["restarts"] == 0 and st["preemptions"] == 1 and st["generation"] == 1
    assert "preempted by gang big" in st["message"] and "not charged" in st["message"]
    assert st["history"][-1]["reason"] == "Preempted"
    assert act.ended == ("preempted", "")  # counted as a preemption, not a restart
    # Waiting for the new gang, the job still says it was preempted (not Restarting).
    j["status"] = st
    nxt = pods_of(j, phase="Pending", gen=1, node="")
    for p in nxt:
        p["status"]["conditions"] = [
            {
                "type": "PodScheduled",
                "status": "False",
                "message": "gang llm needs 3 pods at once; 0 fit on 0 nodes",
            }
        ]
    again = decide(j, nxt, healthy("n0", "n1", "n2"))
    assert again.status["phase"] == "Pending" and again.status["reason"] == "Preempted"
    assert "preempted by gang big" in again.status["message"]
    assert "needs 3 pods at once" in again.status["message"]
    assert again.ended is None  # the preemption was counted once, by the pass that saw it


def test_a_fault_beside_a_preemption_is_charged() -> None:
    j = running(job())
    pods = pods_of(j)
    pods[0]["status"]["conditions"] = [
        disruption_condition(PREEMPTION_BY_SCHEDULER, "preempted by x")
    ]
    pods[0]["metadata"]["deletionTimestamp"] = "2026-01-01T00:01:00Z"
    pods[1]["status"]["phase"] = "Failed"
    act = decide(j, pods, healthy("n0", "n1", "n2"))
    assert act.status["restarts"] == 1 and act.status["phase"] == "Restarting"
    assert act.status["message"].startswith("llm-worker-1 failed on n1")
    assert act.ended == ("restart", "failure")


def test_history_keeps_the_last_ten() -> None:
    j = running(job(backoffLimit=50))
    for k in range(12):
        j["status"]["generation"] = k
        pods = pods_of(j, gen=k)
        pods[0]["status"]["phase"] = "Failed"
        j["status"] = {
            **decide(j, pods, healthy("n0", "n1", "n2")).status,
            "phase": "Running",
            "runningWorkers": 3,
        }
    hist = j["status"]["history"]
    assert len(hist) == 10 and [h["generation"] for h in hist] == list(range(2, 12))
    assert j["status"]["restarts"] == 12


def test_a_preempted_gang_seen_only_once_gone_waits_and_is_not_made_again() -> None:
    # The scheduler marked and evicted every worker, and the simulated kubelet removed
    # them, before the controller looked: only their last states are known (none cached).
    j = running(job())
    gone = pods_of(j)
    for p in gone:
        p["status"]["conditions"] = [
            disruption_condition(
                PREEMPTION_BY_SCHEDULER,
                "preempted by gang big (priority 1000); evicting whole gang llm",
            )
        ]
        p["metadata"]["deletionTimestamp"] = "2026-01-01T00:01:00Z"
    act = decide(j, [], healthy("n0", "n1", "n2"), gone=gone)
    st = act.status
    assert st["phase"] == "Pending" and st["reason"] == "Preempted", st
    assert st["restarts"] == 0 and st["preemptions"] == 1 and st["generation"] == 1
    assert "preempted by gang big" in st["message"]
    # No worker of the preempted gang is made again: the next gang comes next pass.
    assert not [p for p in act.create if p["kind"] == "Pod"]
    assert [e[1] for e in act.events] == ["Preempted"]


def test_a_lone_worker_deleted_before_it_was_seen_is_a_restart() -> None:
    j = job(replicas=1)
    j["status"] = {"phase": "Running", "runningWorkers": 1, "restarts": 0, "generation": 0}
    gone = pods_of(j)
    act = decide(j, [], healthy("n0"), gone=gone)
    assert act.status["restarts"] == 1 and act.status["phase"] == "Restarting"
    assert act.status["message"].startswith("llm-worker-0 deleted from node n0")
    assert not [p for p in act.create if p["kind"] == "Pod"]


def test_a_finished_worker_deleted_before_its_gang_ends_is_not_run_again() -> None:
    j = running(job())
    pods = pods_of(j)
    done = pods.pop(2)  # it finished, and someone deleted it (kubectl delete pod)
    done["status"]["phase"] = "Succeeded"
    act = decide(j, pods, healthy("n0", "n1", "n2"), gone=[done])
    assert not [p for p in act.create if p["kind"] == "Pod"], act.create
    assert act.status is None or act.status["restarts"] == 0
    for p in pods:
        p["status"]["phase"] = "Succeeded"
    act = decide(j, pods, healthy("n0", "n1", "n2"), gone=[done])
    assert act.status["phase"] == "Succeeded", act.status
