"""The preflight plan: one pod per new node, concurrency cap, pass/fail/timeout/retry."""

from __future__ import annotations

import json
from typing import Any

from gpuyard.health.preflight import ANN_ATTEMPTS, PreflightConfig, plan
from gpuyard.health.testpods import LABEL_TEST, make_test_pod, outcome

CFG = PreflightConfig(max_concurrent=2, timeout_s=100, retries=1)


def node(name: str, attempts: int = 0, created: str = "2026-01-01T00:00:00Z") -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "uid": f"uid-{name}",
            "creationTimestamp": created,
            "labels": {"gpuyard.io/preflight": "true"},
            "annotations": {ANN_ATTEMPTS: str(attempts)} if attempts else {},
        },
        "spec": {"taints": [{"key": "gpuyard.io/preflight", "effect": "NoSchedule"}]},
        "status": {
            "allocatable": {"nvidia.com/gpu": "8"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def pod_for(
    n: dict[str, Any],
    attempt: int,
    phase: str = "Running",
    report: dict[str, Any] | None = None,
    code: int = 0,
    created: str = "2026-01-01T00:00:00Z",
) -> dict[str, Any]:
    p = make_test_pod(n, "preflight", attempt, CFG.pods)
    p["metadata"]["annotations"]["gpuyard.io/test-attempt"] = str(attempt)
    p["metadata"]["creationTimestamp"] = created
    p["status"] = {"phase": phase}
    if phase in ("Succeeded", "Failed"):
        p["status"]["containerStatuses"] = [
            {
                "name": "gpu-test",
                "state": {
                    "terminated": {
                        "exitCode": code,
                        "message": json.dumps(report) if report else "",
                    }
                },
            }
        ]
    return p


T0 = 1767225600.0  # 2026-01-01T00:00:00Z


def test_test_pod_shape() -> None:
    p = make_test_pod(node("gpu-1"), "preflight", 1, CFG.pods)
    assert p["spec"]["nodeName"] == "gpu-1"
    assert p["metadata"]["labels"] == {LABEL_TEST: "preflight"}
    assert {"key": "gpuyard.io/preflight", "operator": "Exists"} in p["spec"]["tolerations"]
    c = p["spec"]["containers"][0]
    assert c["command"][:2] == ["gpuyard", "gpu-test"] and "--expected-gpus" in c["command"]
    assert c["resources"]["limits"] == {"nvidia.com/gpu": "8"}
    assert p["metadata"]["ownerReferences"][0]["kind"] == "Node"


def test_new_nodes_get_pods_up_to_the_cap_oldest_first() -> None:
    nodes = {n: node(n, created=f"2026-01-01T00:00:0{i}Z") for i, n in enumerate(["c", "a", "b"])}
    acts = plan(nodes, {}, T0, CFG)
    creates = [a.node for a in acts if a.kind == "create"]
    assert creates == ["c", "a"]
    assert [a.attempt for a in acts if a.kind == "attempt"] == [1, 1]
    # with the two running, nothing more starts
    pods = {
        f"ns/{a.pod['metadata']['name']}": a.pod | {"status": {"phase": "Running"}}
        for a in acts
        if a.kind == "create" and a.pod
    }
    nodes["c"] = node("c", 1)
    nodes["a"] = node("a", 1)
    acts = plan(nodes, pods, T0 + 1, CFG)
    assert acts == []


def test_pass_and_fail() -> None:
    n1, n2 = node("n1", 1), node("n2", 1)
    ok = {"ok": True, "exit_code": 0, "failed": [], "checks": []}
    bad = {
        "ok": False,
        "exit_code": 1,
        "failed": ["matmul.gpu3"],
        "checks": [{"name": "matmul", "gpu": 3, "ok": False}],
    }
    pods = {"a": pod_for(n1, 1, "Succeeded", ok), "b": pod_for(n2, 1, "Failed", bad, 1)}
    acts = {a.node: a for a in plan({"n1": n1, "n2": n2}, pods, T0 + 10, CFG)}
    assert acts["n1"].kind == "pass" and acts["n1"].condition.status == "True"  # type: ignore[union-attr]
    assert acts["n2"].kind == "fail"
    assert acts["n2"].condition.reason == "GPUTestMatmul"  # type: ignore[union-attr]
    assert acts["n2"].detail == "matmul.gpu3"


def test_timeout_retries_then_fails() -> None:
    n = node("n", 1)
    acts = plan({"n": n}, {"p": pod_for(n, 1)}, T0 + 101, CFG)
    assert [a.kind for a in acts] == ["delete", "attempt", "create"]
    assert acts[2].attempt == 2
    n = node("n", 2)
    acts = plan({"n": n}, {"p": pod_for(n, 2)}, T0 + 101, CFG)
    assert [a.kind for a in acts] == ["delete", "fail"]
    assert acts[1].condition.reason == "GPUTestTimeout"  # type: ignore[union-attr]


def test_could_not_run_retries() -> None:
    n = node("n", 1)
    rep = {"ok": False, "exit_code": 2, "could_not_run": "no CUDA", "failed": [], "checks": []}
    acts = plan({"n": n}, {"p": pod_for(n, 1, "Failed", rep, 2)}, T0 + 5, CFG)
    assert [a.kind for a in acts] == ["delete", "attempt", "create"]


def test_termination_message_outcome_without_report() -> None:
    p = pod_for(node("n"), 1, "Failed", None, 137)
    out = outcome(p)
    assert out.finished and not out.passed and out.exit_code == 137


def test_nodes_without_label_ignored() -> None:
    n = node("n")
    n["metadata"]["labels"] = {}
    assert plan({"n": n}, {}, T0, CFG) == []


def test_could_not_run_after_retries_is_not_a_failure() -> None:
    n = node("n", 2)
    rep = {"ok": False, "exit_code": 2, "could_not_run": "PyTorch is not installed"}
    rep.update(failed=[], checks=[])
    acts = plan({"n": n}, {"p": pod_for(n, 2, "Failed", rep, 2)}, T0 + 5, CFG)
    assert [a.kind for a in acts] == ["could-not-run"]
    cond = acts[0].condition
    assert cond is not None and (cond.status, cond.reason) == ("Unknown", "GPUTestCouldNotRun")
    assert "PyTorch is not installed" in cond.message
    assert acts[0].detail == "PyTorch is not installed"


def test_image_without_gpuyard_could_not_run_but_a_crash_failed() -> None:
    n = node("n", 2)
    acts = plan({"n": n}, {"p": pod_for(n, 2, "Failed", None, 127)}, T0 + 5, CFG)
    assert [a.kind for a in acts] == ["could-not-run"]
    assert acts[0].detail == "command not found"
    # A test that ran and died (killed, segfault) is a failure, as is a failed check.
    acts = plan({"n": n}, {"p": pod_for(n, 2, "Failed", None, 139)}, T0 + 5, CFG)
    assert [a.kind for a in acts] == ["fail"]
    rep = {"ok": False, "exit_code": 1, "failed": ["matmul.gpu0"]}
    rep["checks"] = [{"name": "matmul", "gpu": 0, "ok": False}]
    acts = plan({"n": n}, {"p": pod_for(n, 2, "Failed", rep, 1)}, T0 + 5, CFG)
    assert [a.kind for a in acts] == ["fail"]
    assert acts[0].condition is not None and acts[0].condition.status == "False"
