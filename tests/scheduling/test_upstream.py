"""The upstream PodGroup in the scheduler's group model: what a pod names, minCount,
disruption mode, priority, and the conditions the scheduler writes."""

from __future__ import annotations

from typing import Any

from gpuyard.scheduling import upstream
from gpuyard.scheduling.state import ClusterState


def pg(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "scheduling.k8s.io/v1beta1",
        "kind": "PodGroup",
        "metadata": {"name": "g", "namespace": "ns"},
        "spec": spec,
    }


def test_pods_join_by_label_or_scheduling_group() -> None:
    s = ClusterState()
    for name, md, spec in (
        ("a", {"labels": {"scheduling.x-k8s.io/pod-group": "x"}}, {}),
        ("b", {}, {"schedulingGroup": {"podGroupName": "g"}}),
        ("c", {}, {"schedulingGroup": {}}),
    ):
        pod = {
            "metadata": {"name": name, "namespace": "ns", **md},
            "spec": {"schedulerName": "gpuyard-scheduler", "containers": [{"name": "w"}], **spec},
        }
        s.add_pod(pod)
        assert upstream.group_key(pod) == s.pods[f"ns/{name}"].group
    assert [s.pods[f"ns/{n}"].group for n in "abc"] == ["ns/x", "ns/g", None]
    assert set(s.members["ns/g"]) == {"ns/b"}


def test_min_count_mode_and_priority() -> None:
    classes = {"high": 1000}
    gang = pg(schedulingPolicy={"gang": {"minCount": 8}}, disruptionMode={"all": {}})
    info = upstream.group_info(gang, classes)
    assert (info.key, info.min_member, info.priority) == ("ns/g", 8, None)
    assert upstream.disrupts_all(gang)
    assert not upstream.disrupts_all(pg(disruptionMode={"single": {}}))
    assert upstream.min_count(pg(schedulingPolicy={"basic": {}})) == 1
    assert upstream.min_count(pg(schedulingPolicy={"gang": {"minCount": 0}})) == 1
    assert upstream.group_info(pg(priorityClassName="high"), classes).priority == 1000
    assert upstream.group_info(pg(priorityClassName="high", priority=5), classes).priority == 5
    assert upstream.group_info(pg(priorityClassName="nope"), classes).priority is None


def test_conditions_written_only_on_change_and_initially_scheduled_stays() -> None:
    g = pg(schedulingPolicy={"gang": {"minCount": 2}})
    conds, changed = upstream.conditions(g, 0, "gang g needs 2 pods at once; 1 fit")
    assert changed
    (c,) = conds
    assert (c["type"], c["status"], c["reason"]) == (
        "PodGroupInitiallyScheduled",
        "False",
        "Unschedulable",
    )
    g["status"] = {"conditions": conds}
    assert upstream.conditions(g, 0, "gang g needs 2 pods at once; 1 fit") == (conds, False)
    conds, changed = upstream.conditions(g, 0, None, error="binding refused")
    assert changed and conds[0]["reason"] == "SchedulerError"
    conds, changed = upstream.conditions(g, 2, None)
    assert changed and conds[0]["status"] == "True"
    g["status"] = {"conditions": conds}
    # Members leaving later do not unsay it; a preemption adds DisruptionTarget.
    conds, changed = upstream.conditions(g, 0, "gang g needs 2", preempted="preempted by x")
    assert changed and conds[0]["status"] == "True"
    assert (conds[1]["type"], conds[1]["reason"]) == ("DisruptionTarget", "PreemptionByScheduler")
