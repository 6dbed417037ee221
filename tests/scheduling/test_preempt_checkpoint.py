"""Checkpoint-aware preemption (issue 17): among victims of one priority, the units
that lose the least work go first: GPU-seconds since the checkpoint they resume from,
said by the trainer in the `gpuyard.io/last-checkpoint` annotation on its pod. A unit
that never checkpoints loses all it did since it started (status.startTime, or when
the policy bound it), on the same scale; one that says neither goes last; priority
still comes first."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from gpuyard import names
from gpuyard.cluster.testing import ClusterProcess, wait_for
from gpuyard.scheduling.policy import PolicyConfig, schedule
from gpuyard.scheduling.scheduler import _same_for_scheduling
from gpuyard.scheduling.state import ClusterState, GroupInfo

GPU = names.RESOURCE_GPU
NOW = 1_800_000_000.0


def state(nodes: int) -> ClusterState:
    s = ClusterState()
    for i in range(nodes):
        s.add_node_fast(f"n{i}", {"cpu": 96_000, "memory": 2**40, GPU: 8})
    return s


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def bound_pod(
    name: str, node: str, checkpoint: str | None, gpus: int = 8, started: str | None = None
) -> dict[str, Any]:
    md: dict[str, Any] = {"name": name, "namespace": "a", "uid": name}
    if checkpoint is not None:
        md["annotations"] = {names.ANN_LAST_CHECKPOINT: checkpoint}
    status: dict[str, Any] = {"phase": "Running"}
    if started is not None:
        status["startTime"] = started
    return {
        "metadata": md,
        "spec": {
            "nodeName": node,
            "priority": 0,
            "schedulerName": names.SCHEDULER_NAME,
            "containers": [{"name": "t", "resources": {"limits": {GPU: str(gpus)}}}],
        },
        "status": status,
    }


def victims(s: ClusterState, now: float = NOW) -> list[str]:
    return sorted(e.pod for e in schedule(s, now, PolicyConfig()).evictions)


def test_the_pod_that_checkpointed_last_is_preempted_not_the_first_by_name() -> None:
    s = state(2)
    s.add_pod(bound_pod("low-a", "n0", rfc3339(NOW - 3600)))  # an hour of work to lose
    s.add_pod(bound_pod("low-b", "n1", rfc3339(NOW - 60)))  # a minute
    s.add_pod_fast("b/urgent", {GPU: 8}, priority=1000)
    d = schedule(s, NOW, PolicyConfig())
    assert [e.pod for e in d.evictions] == ["a/low-b"]
    # The reason says what it loses: 8 GPUs for a minute.
    assert d.evictions[0].reason.endswith(
        f"; it loses 8 GPU-min since its checkpoint at {rfc3339(NOW - 60)}"
    ), d.evictions[0].reason


def test_a_pod_that_says_nothing_or_nonsense_goes_after_one_that_says() -> None:
    s = state(3)
    s.add_pod(bound_pod("low-a", "n0", None))
    s.add_pod(bound_pod("low-b", "n1", "yesterday"))  # not a time: says nothing
    s.add_pod(bound_pod("low-c", "n2", rfc3339(NOW - 36_000)))  # ten hours ago
    assert s.pods["a/low-b"].checkpoint is None
    s.add_pod_fast("b/urgent", {GPU: 8}, priority=1000)
    assert victims(s) == ["a/low-c"]


def test_a_pod_that_never_checkpoints_loses_the_work_since_it_started() -> None:
    """A trainer that never checkpoints and started a minute ago loses a minute; one
    that checkpointed an hour ago loses an hour. The minute goes first, and says so."""
    s = state(2)
    s.add_pod(bound_pod("low-a", "n0", rfc3339(NOW - 3600), started=rfc3339(NOW - 7200)))
    s.add_pod(bound_pod("low-b", "n1", None, started=rfc3339(NOW - 60)))
    s.add_pod_fast("b/urgent", {GPU: 8}, priority=1000)
    d = schedule(s, NOW, PolicyConfig())
    assert [e.pod for e in d.evictions] == ["a/low-b"]
    assert d.evictions[0].reason.endswith(
        f"; it loses 8 GPU-min since it started at {rfc3339(NOW - 60)}"
    ), d.evictions[0].reason


def test_a_checkpoint_from_before_the_start_counts_from_the_start() -> None:
    """A checkpoint older than the pod's start (the one it resumed from) does not make
    it lose the work of its earlier run: low-a started 10 minutes ago from a checkpoint
    of yesterday; low-b checkpointed 30 minutes ago."""
    s = state(2)
    s.add_pod(bound_pod("low-a", "n0", rfc3339(NOW - 86_400), started=rfc3339(NOW - 600)))
    s.add_pod(bound_pod("low-b", "n1", rfc3339(NOW - 1800), started=rfc3339(NOW - 7200)))
    s.add_pod_fast("b/urgent", {GPU: 8}, priority=1000)
    assert victims(s) == ["a/low-a"]


def test_a_gang_that_never_checkpoints_counts_from_its_last_member_start() -> None:
    """The gang runs once its last member started; its work since then is what it
    loses: x (16 GPUs for 5 minutes, 4,800 GPU-s) goes before y (8 GPUs that
    checkpointed an hour ago, 28,800 GPU-s), though x says no checkpoint."""
    s = state(3)
    s.set_group(GroupInfo("a/x", min_member=2))
    for i, ago in enumerate((3600, 300)):
        s.add_pod(
            {
                **bound_pod(f"x-{i}", f"n{i}", None, started=rfc3339(NOW - ago)),
                "metadata": {
                    "name": f"x-{i}",
                    "namespace": "a",
                    "uid": f"x-{i}",
                    "labels": {names.POD_GROUP_LABEL: "x"},
                },
            }
        )
    assert s.pods["a/x-0"].group == "a/x"
    gang(s, "y", ["n2"], NOW - 3600)
    s.add_pod_fast("b/urgent", {GPU: 8}, priority=1000)
    assert victims(s) == ["a/x-0", "a/x-1"]


def test_without_checkpoints_the_order_is_as_before_by_name() -> None:
    s = state(2)
    s.add_pod(bound_pod("low-a", "n0", None))
    s.add_pod(bound_pod("low-b", "n1", None))
    s.add_pod_fast("b/urgent", {GPU: 8}, priority=1000)
    assert victims(s) == ["a/low-a"]


def test_priority_comes_before_the_work_lost() -> None:
    s = state(2)
    s.add_pod_fast("a/balloon", {GPU: 8}, priority=-5, node="n0")  # says nothing
    s.add_pod_fast("a/low", {GPU: 8}, priority=0, node="n1", checkpoint=NOW - 1)
    s.add_pod_fast("b/urgent", {GPU: 8}, priority=1000)
    assert victims(s) == ["a/balloon"]


def gang(s: ClusterState, name: str, nodes: list[str], checkpoint: float | None) -> None:
    s.set_group(GroupInfo(f"a/{name}", min_member=len(nodes)))
    for i, n in enumerate(nodes):
        s.add_pod_fast(f"a/{name}-{i}", {GPU: 8}, group=f"a/{name}", node=n, checkpoint=checkpoint)


def test_work_lost_is_gpu_seconds_a_big_gang_that_just_saved_goes_before_a_small_one() -> None:
    def preempted(small_saved_ago: float) -> list[str]:
        s = state(5)
        gang(s, "big", ["n0", "n1", "n2", "n3"], NOW - 300)  # 4 x 8 GPUs x 5 min: 9,600
        gang(s, "small", ["n4"], NOW - small_saved_ago)  # 8 GPUs x the time since
        s.add_pod_fast("b/urgent", {GPU: 8}, priority=1000)
        return victims(s)

    # three hours unsaved on one node (86,400 GPU-s) loses more than the big gang would
    assert preempted(3 * 3600) == [f"a/big-{i}" for i in range(4)]
    assert preempted(60) == ["a/small-0"]  # a minute (480 GPU-s) loses less


def test_a_gang_resumes_from_the_oldest_checkpoint_its_workers_report() -> None:
    s = state(4)
    s.set_group(GroupInfo("a/x", min_member=2))
    s.add_pod_fast("a/x-0", {GPU: 8}, group="a/x", node="n0", checkpoint=NOW - 60)
    s.add_pod_fast("a/x-1", {GPU: 8}, group="a/x", node="n1", checkpoint=NOW - 7200)
    gang(s, "y", ["n2", "n3"], NOW - 1800)  # y loses 30 min, x two hours
    s.set_group(GroupInfo("b/u", min_member=2))
    for i in range(2):
        s.add_pod_fast(f"b/u-{i}", {GPU: 8}, priority=1000, group="b/u")
    assert victims(s) == ["a/y-0", "a/y-1"]


def test_the_scheduler_sees_a_new_checkpoint_on_a_running_pod() -> None:
    old = bound_pod("w", "n0", rfc3339(NOW - 600))
    new = json.loads(json.dumps(old))
    new["metadata"]["annotations"][names.ANN_LAST_CHECKPOINT] = rfc3339(NOW)
    assert not _same_for_scheduling(old, new)
    other = json.loads(json.dumps(old))
    other["metadata"]["annotations"]["note"] = "x"  # other annotations change nothing
    assert _same_for_scheduling(old, other)


def test_a_new_checkpoint_reaches_the_victim_index_from_the_annotation_or_the_twin() -> None:
    """The live scheduler reads a new checkpoint from the pod's annotation (add_pod); the
    twin says it with ClusterState.set_checkpoint, in place. Either way a victim index
    made by an earlier pass takes the pod that now loses the least."""

    def second_victim(how: str) -> list[str]:
        s = state(3)
        s.add_pod(bound_pod("low-a", "n0", rfc3339(NOW - 60)))
        s.add_pod(bound_pod("low-b", "n1", rfc3339(NOW - 600)))
        s.add_pod(bound_pod("low-c", "n2", rfc3339(NOW - 900)))
        s.add_pod_fast("b/first", {GPU: 8}, priority=1000)
        assert victims(s) == ["a/low-a"]  # the index exists from here on
        s.remove_pod("a/low-a")  # it left
        s.bind("b/first", "n0")
        if how == "annotation":
            s.add_pod(bound_pod("low-c", "n2", rfc3339(NOW - 5)))
        else:
            s.set_checkpoint("a/low-c", NOW - 5)
        s.add_pod_fast("b/second", {GPU: 8}, priority=1000)
        return victims(s)

    assert second_victim("annotation") == second_victim("twin") == ["a/low-c"]


def _job(name: str, priority: str) -> str:
    return json.dumps(
        {
            "apiVersion": "gpuyard.io/v1alpha1",
            "kind": "TrainingJob",
            "metadata": {"name": name},
            "spec": {
                "replicas": 1,
                "gpusPerReplica": 8,
                "priorityClassName": priority,
                "template": {
                    "spec": {
                        "containers": [
                            {
                                "name": "trainer",
                                "image": "pytorch/pytorch:2.5.0-cuda12.4-cudnn9-runtime",
                                "resources": {"requests": {"cpu": "4", "memory": "32Gi"}},
                            }
                        ]
                    }
                },
            },
        }
    )


def test_on_a_cluster_the_job_that_checkpointed_last_is_the_one_preempted(
    make_cluster: Callable[..., ClusterProcess],
) -> None:
    c = make_cluster(nodes=2)

    def status(name: str) -> dict[str, Any]:
        out = c.kubectl("get", "trainingjob", name, "-o", "json").stdout
        return json.loads(out).get("status") or {}

    for name in ("ckpt-a", "ckpt-b"):
        c.kubectl("apply", "-f", "-", input=_job(name, "gpuyard-low"))
    for name in ("ckpt-a", "ckpt-b"):
        wait_for(lambda n=name: status(n).get("phase") == "Running", 60, f"{name} Running")
    running_at = time.time()
    # A checkpoint counts from when the job started: ckpt-b's must come after its
    # start (the annotations' times are whole seconds).
    time.sleep(1.5)
    # The trainers say when they last saved: ckpt-a an hour ago (before it started: it
    # loses all it did since it started), ckpt-b just now (ckpt-a comes first by name,
    # so name order alone would take it).
    now = time.time()
    assert now >= running_at + 1.5
    for name, ago in (("ckpt-a", 3600), ("ckpt-b", 0)):
        c.kubectl(
            "annotate",
            "pod",
            f"{name}-worker-0",
            "--overwrite",
            f"{names.ANN_LAST_CHECKPOINT}={rfc3339(now - ago)}",
        )
    time.sleep(1)  # the scheduler's watch brings the annotations
    c.kubectl("apply", "-f", "-", input=_job("urgent", "gpuyard-high"))
    st = wait_for(
        lambda: (s := status("ckpt-b")).get("reason") == "Preempted" and s, 60, "ckpt-b preempted"
    )
    assert "preempted by gang urgent" in st["message"], st
    assert "GPU-min since its checkpoint at" in st["message"], st
    wait_for(lambda: status("urgent").get("phase") == "Running", 60, "urgent Running")
    a = status("ckpt-a")
    assert a["phase"] == "Running" and not a.get("preemptions"), a
