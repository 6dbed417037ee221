"""Active GPU test pods, shared by the preflight and periodic controllers (pure).

A test pod runs `gpuyard gpu-test` on one node: bound with spec.nodeName, tolerating
the preflight or testing taint, asking for all of the node's GPUs, owned by the Node
(so it goes when the node goes). Its JSON report comes back as the container's
termination message (containerStatuses[].state.terminated.message). `outcome` reads a
finished pod; `gpu_test_condition` turns a report into the node's GPUTestPassed
condition, which the health controller turns into a taint (through the brake) when it
is False.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from gpuyard.health.gputest import first_failing_check
from gpuyard.health.verdict import GPU_TEST_CONDITION, Condition, sanitize_label_value
from gpuyard.kube.objects import (
    is_pod_terminal,
    name_of,
    node_allocatable,
    parse_time,
)
from gpuyard.names import (
    ANN_SIM_DURATION,
    PRIORITY_HIGH,
    RESOURCE_GPU,
    TAINT_PREFLIGHT,
    TAINT_TESTING,
    TAINT_UNHEALTHY,
)

LABEL_TEST = "gpuyard.io/health-test"  # "preflight" | "periodic"
ANN_TEST_NODE = "gpuyard.io/test-node"
# The GPU image (deploy/images/gpu.Dockerfile: CUDA PyTorch with NCCL + gpuyard), whose
# `gpuyard gpu-test` runs on a real GPU; the control-plane image has no PyTorch.
DEFAULT_IMAGE = "ghcr.io/gpuyard/gpuyard-gpu:0.1.0"


@dataclass(frozen=True)
class ActiveTestConfig:
    namespace: str = "gpuyard-system"
    image: str = DEFAULT_IMAGE
    sim_duration_s: float = 2.0  # only read by the embedded cluster's simulated kubelet
    extra_args: tuple[str, ...] = ()


def _pod_name(kind: str, node: str, attempt: int) -> str:
    base = f"{kind}-{node}"
    if len(base) > 240:
        import hashlib

        base = f"{kind}-{hashlib.sha1(node.encode()).hexdigest()[:16]}"
    return f"{base}-{attempt}"


def make_test_pod(
    node: dict[str, Any], kind: str, attempt: int, cfg: ActiveTestConfig
) -> dict[str, Any]:
    name = name_of(node)
    gpus = node_allocatable(node).get(RESOURCE_GPU, 0)
    args = ["gpuyard", "gpu-test", "--termination-log", "/dev/termination-log"]
    if gpus:
        args += ["--expected-gpus", str(gpus)]
    args += list(cfg.extra_args)
    resources: dict[str, Any] = {}
    if gpus:
        resources = {"limits": {RESOURCE_GPU: str(gpus)}, "requests": {RESOURCE_GPU: str(gpus)}}
    meta = node.get("metadata") or {}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": _pod_name(kind, name, attempt),
            "namespace": cfg.namespace,
            "labels": {LABEL_TEST: kind},
            "annotations": {ANN_TEST_NODE: name, ANN_SIM_DURATION: str(cfg.sim_duration_s)},
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "name": name,
                    "uid": meta.get("uid", ""),
                    "controller": False,
                    "blockOwnerDeletion": False,
                }
            ],
        },
        "spec": {
            "nodeName": name,
            "restartPolicy": "Never",
            "priorityClassName": PRIORITY_HIGH,
            "tolerations": [
                {"key": TAINT_PREFLIGHT, "operator": "Exists"},
                {"key": TAINT_TESTING, "operator": "Exists"},
                {"key": TAINT_UNHEALTHY, "operator": "Exists", "effect": "NoSchedule"},
            ],
            "containers": [
                {
                    "name": "gpu-test",
                    "image": cfg.image,
                    "command": args,
                    "resources": resources,
                    "terminationMessagePath": "/dev/termination-log",
                    "terminationMessagePolicy": "FallbackToLogsOnError",
                }
            ],
        },
    }


def tested_node(pod: dict[str, Any]) -> str:
    ann = (pod.get("metadata") or {}).get("annotations") or {}
    return str(ann.get(ANN_TEST_NODE) or (pod.get("spec") or {}).get("nodeName") or "")


@dataclass(frozen=True)
class Outcome:
    finished: bool
    passed: bool = False
    exit_code: int | None = None
    report: dict[str, Any] | None = None
    failing_check: str = ""
    could_not_run: bool = False
    why: str = ""  # why it could not run


# Exit codes that mean the test never ran: gpu-test's own "could not run" (no PyTorch,
# no GPU, bad flags), and the shell's "not executable" / "command not found" (an image
# without gpuyard). Container runtime reasons that mean the same.
COULD_NOT_RUN_CODES = {2: "gpu-test exited 2", 126: "not executable", 127: "command not found"}
COULD_NOT_RUN_REASONS = ("ContainerCannotRun", "StartError")


def outcome(pod: dict[str, Any]) -> Outcome:
    """What a test pod says: still running, passed, or failed (with the failing check)."""
    if not is_pod_terminal(pod):
        return Outcome(False)
    st = pod.get("status") or {}
    term: dict[str, Any] = {}
    for cs in st.get("containerStatuses") or []:
        term = ((cs.get("state") or {}).get("terminated")) or {}
        if term:
            break
    code = term.get("exitCode")
    if code is None:
        code = 0 if st.get("phase") == "Succeeded" else 1
    report: dict[str, Any] | None = None
    msg = term.get("message")
    if msg:
        try:
            parsed = json.loads(msg)
            report = parsed if isinstance(parsed, dict) else None
        except ValueError:
            report = None
    if report is not None and "exit_code" in report:
        code = int(report["exit_code"])
    passed = code == 0 and (report is None or bool(report.get("ok", True)))
    if passed:
        return Outcome(True, True, code, report)
    reason = str(term.get("reason") or st.get("reason") or "")
    if report is not None:
        check = first_failing_check(report)
        why = str(report.get("could_not_run") or "")
    else:
        check = reason or "gpu-test"
        why = COULD_NOT_RUN_CODES.get(code, "") if isinstance(code, int) else ""
        if reason in COULD_NOT_RUN_REASONS:
            why = f"{reason}: {term.get('message') or ''}".strip(": ")
    return Outcome(True, False, code, report, check, could_not_run=bool(why), why=why[:400])


COULD_NOT_RUN_REASON = "GPUTestCouldNotRun"


def gpu_test_condition(kind: str, out: Outcome) -> Condition:
    """GPUTestPassed: True (passed), False (ran and failed: the health controller taints
    the node), Unknown (could not run: says nothing about the hardware, so no taint)."""
    if out.passed:
        return Condition(GPU_TEST_CONDITION, "True", "GPUTestPassed", f"{kind} gpu-test passed")
    if out.could_not_run:
        return Condition(
            GPU_TEST_CONDITION,
            "Unknown",
            COULD_NOT_RUN_REASON,
            f"{kind} gpu-test could not run: {out.why}"[:900],
        )
    failed = ", ".join((out.report or {}).get("failed", [])[:8]) or out.failing_check
    reason = "GPUTest" + "".join(
        p.capitalize() for p in out.failing_check.replace("-", "_").split("_")
    )
    return Condition(
        GPU_TEST_CONDITION,
        "False",
        sanitize_label_value(reason),
        f"{kind} gpu-test failed: {failed}"[:900],
    )


def timeout_condition(kind: str, attempts: int) -> Condition:
    return Condition(
        GPU_TEST_CONDITION,
        "False",
        "GPUTestTimeout",
        f"{kind} gpu-test did not finish in {attempts} attempt(s)",
    )


def pod_age(pod: dict[str, Any], now: float) -> float:
    t = parse_time((pod.get("metadata") or {}).get("creationTimestamp"))
    return 0.0 if t is None else now - t.timestamp()


async def create_test_pod(client: Any, pod: dict[str, Any]) -> dict[str, Any]:
    """Create the pod; where the cluster lacks gpuyard's PriorityClasses, without one."""
    from gpuyard.kube.errors import Forbidden
    from gpuyard.kube.resources import PODS

    ns = pod["metadata"]["namespace"]
    try:
        out: dict[str, Any] = await client.create(pod, ns, res=PODS)
    except Forbidden as exc:
        if "PriorityClass" not in str(exc):
            raise
        bare = {**pod, "spec": {k: v for k, v in pod["spec"].items() if k != "priorityClassName"}}
        out = await client.create(bare, ns, res=PODS)
    return out
