"""The preflight gate: new nodes are tested before they take work.

Nodes register with the `gpuyard.io/preflight` taint and label (kubelet's
--register-with-taints, or the simulated nodes' option). For each such node this
controller runs one test pod (`gpuyard gpu-test`, bound with spec.nodeName, tolerating
the taint), at most `max_concurrent` at once across the cluster, oldest node first,
and reads the JSON report from the pod's termination message:

- pass: remove the preflight taint and label, annotate the node with the result and
  time (gpuyard.io/preflight-result, gpuyard.io/preflight-time), GPUTestPassed=True;
- fail: annotate the result and the failing checks, drop the label (no retry loop),
  and set GPUTestPassed=False with the failing check as reason, which the health
  controller turns into `gpuyard.io/unhealthy=GPUTest<Check>` (through the brake); the
  preflight taint stays, so the node takes no work even while the brake holds;
- timeout: delete the pod and retry, up to `retries` times, then fail with
  GPUTestTimeout;
- could not run (gpu-test's exit 2 / `could_not_run` in its report: no PyTorch, no
  driver or GPU; or an image without gpuyard): retry likewise, then say so and stop:
  gpuyard.io/preflight-result=could-not-run with the reason in preflight-detail,
  GPUTestPassed=Unknown (reason GPUTestCouldNotRun), a PreflightCouldNotRun Warning
  Event, the label dropped and the preflight taint KEPT. That is not a hardware
  verdict, so no unhealthy taint follows; fix the test image (or driver) and label the
  node `gpuyard.io/preflight=true` again to rerun it.

`plan` is pure (nodes + test pods + now -> actions); `run_preflight` is the live loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gpuyard.health import kubeio
from gpuyard.health.metrics import health_metrics
from gpuyard.health.testpods import (
    LABEL_TEST,
    ActiveTestConfig,
    Outcome,
    create_test_pod,
    gpu_test_condition,
    make_test_pod,
    outcome,
    pod_age,
    tested_node,
    timeout_condition,
)
from gpuyard.health.verdict import Condition
from gpuyard.kube.informer import InformerFactory
from gpuyard.kube.objects import is_node_ready, is_pod_terminal, labels_of, parse_time
from gpuyard.names import LABEL_PREFLIGHT, TAINT_PREFLIGHT

log = logging.getLogger("gpuyard.health.preflight")

KIND = "preflight"
ANN_RESULT = "gpuyard.io/preflight-result"
ANN_TIME = "gpuyard.io/preflight-time"
ANN_DETAIL = "gpuyard.io/preflight-detail"
ANN_ATTEMPTS = "gpuyard.io/preflight-attempts"


@dataclass(frozen=True)
class PreflightConfig:
    max_concurrent: int = 10
    timeout_s: float = 900.0
    retries: int = 1  # extra attempts after a timeout or a test that could not run
    pods: ActiveTestConfig = field(default_factory=ActiveTestConfig)


@dataclass(frozen=True)
class Action:
    kind: str  # "create" | "delete" | "pass" | "fail" | "could-not-run" | "attempt"
    node: str
    pod: dict[str, Any] | None = None
    condition: Condition | None = None
    detail: str = ""
    attempt: int = 0


def _attempts(node: Mapping[str, Any]) -> int:
    ann = (node.get("metadata") or {}).get("annotations") or {}
    try:
        return int(ann.get(ANN_ATTEMPTS, "0"))
    except ValueError:
        return 0


def _created(node: Mapping[str, Any]) -> float:
    t = parse_time((node.get("metadata") or {}).get("creationTimestamp"))
    return t.timestamp() if t else 0.0


def _detail(out: Outcome) -> str:
    failed = ",".join((out.report or {}).get("failed", [])[:10])
    return (failed or out.failing_check)[:250]


def plan(
    nodes: Mapping[str, Mapping[str, Any]],
    pods: Mapping[str, Mapping[str, Any]],
    now: float,
    cfg: PreflightConfig,
) -> list[Action]:
    """What to do next. nodes: by name; pods: this controller's test pods by key."""
    actions: list[Action] = []
    by_node: dict[str, list[Mapping[str, Any]]] = {}
    for pod in pods.values():
        by_node.setdefault(tested_node(dict(pod)), []).append(pod)
    running = sum(1 for p in pods.values() if not is_pod_terminal(dict(p)))
    waiting: list[tuple[float, str]] = []
    for name, node in nodes.items():
        if LABEL_PREFLIGHT not in labels_of(dict(node)):
            continue
        attempts = _attempts(node)
        mine = by_node.get(name, [])
        current = [
            p
            for p in mine
            if ((p.get("metadata") or {}).get("annotations") or {}).get("gpuyard.io/test-attempt")
            == str(attempts)
        ]
        for p in mine:  # leftovers of earlier attempts
            if p not in current:
                actions.append(Action("delete", name, pod=dict(p)))
        if not current:
            if is_node_ready(dict(node)) or not (node.get("status") or {}).get("conditions"):
                waiting.append((_created(node), name))
            continue
        pod = dict(current[0])
        out = outcome(pod)
        if out.finished and out.passed:
            actions.append(Action("pass", name, pod=pod, condition=gpu_test_condition(KIND, out)))
        elif out.finished:
            if out.could_not_run and attempts <= cfg.retries:
                actions.append(Action("delete", name, pod=pod))
                waiting.append((_created(node), name))
            elif out.could_not_run:
                actions.append(
                    Action(
                        "could-not-run",
                        name,
                        pod=pod,
                        condition=gpu_test_condition(KIND, out),
                        detail=out.why[:250],
                    )
                )
            else:
                actions.append(
                    Action(
                        "fail",
                        name,
                        pod=pod,
                        condition=gpu_test_condition(KIND, out),
                        detail=_detail(out),
                    )
                )
        elif pod_age(pod, now) > cfg.timeout_s:
            actions.append(Action("delete", name, pod=pod))
            if attempts <= cfg.retries:
                waiting.append((_created(node), name))
            else:
                actions.append(
                    Action(
                        "fail",
                        name,
                        condition=timeout_condition(KIND, attempts),
                        detail="timeout",
                    )
                )
                running -= 1
    waiting.sort()
    slots = max(cfg.max_concurrent - running, 0)
    for _, name in waiting[:slots]:
        attempt = _attempts(nodes[name]) + 1
        pod = make_test_pod(dict(nodes[name]), KIND, attempt, cfg.pods)
        pod["metadata"]["annotations"]["gpuyard.io/test-attempt"] = str(attempt)
        actions.append(Action("attempt", name, attempt=attempt))
        actions.append(Action("create", name, pod=pod, attempt=attempt))
    return actions


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


async def apply(client: Any, nodes: Mapping[str, Any], a: Action, now: float) -> None:
    from gpuyard.kube.objects import without_taint
    from gpuyard.kube.resources import NODES, PODS

    node = nodes.get(a.node) or {}
    if a.kind == "attempt":
        await client.patch(
            NODES, a.node, {"metadata": {"annotations": {ANN_ATTEMPTS: str(a.attempt)}}}
        )
    elif a.kind == "create" and a.pod is not None:
        await create_test_pod(client, a.pod)
    elif a.kind == "delete" and a.pod is not None:
        m = a.pod["metadata"]
        await client.delete_if_exists(PODS, m["name"], m["namespace"], grace_period_seconds=0)
    elif a.kind == "pass":
        fresh = await client.get(NODES, a.node)
        taints = without_taint((fresh.get("spec") or {}).get("taints"), TAINT_PREFLIGHT)
        await client.patch(
            NODES,
            a.node,
            {
                "metadata": {
                    "resourceVersion": fresh["metadata"]["resourceVersion"],
                    "labels": {LABEL_PREFLIGHT: None},
                    "annotations": {
                        ANN_RESULT: "pass",
                        ANN_TIME: _iso(now),
                        ANN_DETAIL: None,
                        ANN_ATTEMPTS: None,
                    },
                },
                "spec": {"taints": taints},
            },
        )
        if a.condition is not None:
            await kubeio.write_node_conditions(client, a.node, [a.condition])
        await kubeio.record(client, fresh, "Normal", "PreflightPassed", "gpu-test passed")
        if a.pod is not None:
            m = a.pod["metadata"]
            await client.delete_if_exists(PODS, m["name"], m["namespace"])
    elif a.kind == "fail":
        if a.condition is not None:
            await kubeio.write_node_conditions(client, a.node, [a.condition])
        await client.patch(
            NODES,
            a.node,
            {
                "metadata": {
                    "labels": {LABEL_PREFLIGHT: None},
                    "annotations": {ANN_RESULT: "fail", ANN_TIME: _iso(now), ANN_DETAIL: a.detail},
                }
            },
        )
        msg = a.condition.message if a.condition else a.detail
        await kubeio.record(
            client, node or {"metadata": {"name": a.node}}, "Warning", "PreflightFailed", msg
        )
        if a.pod is not None:
            m = a.pod["metadata"]
            await client.delete_if_exists(PODS, m["name"], m["namespace"])
    elif a.kind == "could-not-run":
        # Not a hardware verdict: the preflight taint stays (the node is untested),
        # GPUTestPassed goes Unknown (never False, so no unhealthy taint).
        if a.condition is not None:
            await kubeio.write_node_conditions(client, a.node, [a.condition])
        await client.patch(
            NODES,
            a.node,
            {
                "metadata": {
                    "labels": {LABEL_PREFLIGHT: None},
                    "annotations": {
                        ANN_RESULT: "could-not-run",
                        ANN_TIME: _iso(now),
                        ANN_DETAIL: a.detail,
                        ANN_ATTEMPTS: None,
                    },
                }
            },
        )
        msg = (a.condition.message if a.condition else a.detail) + (
            f"; the {TAINT_PREFLIGHT} taint stays: fix the test image or driver, then"
            f" label the node {LABEL_PREFLIGHT}=true to rerun"
        )
        await kubeio.record(
            client,
            node or {"metadata": {"name": a.node}},
            "Warning",
            "PreflightCouldNotRun",
            msg,
        )
        if a.pod is not None:
            m = a.pod["metadata"]
            await client.delete_if_exists(PODS, m["name"], m["namespace"])


def _count(a: Action, nodes: Mapping[str, Any], counted: dict[str, str], now: float) -> None:
    """Count a test's end once (a lagging cache can show the same end again)."""
    if a.kind not in ("pass", "fail", "could-not-run"):
        return
    result = "timeout" if a.kind == "fail" and a.detail == "timeout" else a.kind
    which = (
        f"{_attempts(nodes.get(a.node) or {})}/{((a.pod or {}).get('metadata') or {}).get('uid')}"
    )
    if counted.get(a.node) == which:
        return
    if len(counted) > 100_000:
        counted.clear()
    counted[a.node] = which
    health_metrics().test_done(KIND, result, a.pod, now)


async def run_preflight(
    client: Any,
    stop: asyncio.Event,
    cfg: PreflightConfig | None = None,
    period_s: float = 1.0,
    informers: InformerFactory | None = None,
) -> None:
    """Test new nodes before they take work. `informers`: share the watches with the
    rest of the process."""
    from gpuyard.kube.resources import PODS

    cfg = cfg or PreflightConfig()
    await kubeio.ensure_namespace(client, cfg.pods.namespace)
    shared = informers
    nodes = kubeio.Cache(client, kubeio.NODES, label_selector=LABEL_PREFLIGHT, factory=shared)
    pods = kubeio.Cache(
        client, PODS, cfg.pods.namespace, label_selector=f"{LABEL_TEST}={KIND}", factory=shared
    )
    nodes.start()
    pods.start()
    try:
        await nodes.wait_synced()
        await pods.wait_synced()
        started: dict[str, float] = {}  # node -> when we last started a test pod there
        counted: dict[str, str] = {}  # node -> the test last counted in the metrics
        while not stop.is_set():
            now = time.time()
            snapshot_nodes, snapshot_pods = dict(nodes.items), dict(pods.items)
            for a in plan(snapshot_nodes, snapshot_pods, now, cfg):
                if a.kind in ("attempt", "create") and now - started.get(a.node, -1e9) < 10:
                    continue  # our caches may not show that pod yet
                if a.kind == "create":
                    started[a.node] = now
                try:
                    await apply(client, snapshot_nodes, a, now)
                except Exception as exc:  # the next pass works from fresh state
                    log.info("preflight %s %s: %s", a.kind, a.node, exc)
                    break
                _count(a, snapshot_nodes, counted, now)
            try:
                await asyncio.wait_for(nodes.changed(stop), period_s * 5)
            except TimeoutError:
                pass
            await asyncio.sleep(period_s)
    finally:
        await nodes.stop()
        await pods.stop()
