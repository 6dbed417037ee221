"""Periodic active GPU tests on idle nodes.

Instead of a CronJob that lands wherever it lands, this controller picks idle nodes
(nothing but balloon pods, DaemonSet pods and our own test pods running), least
recently tested first, holds each with the `gpuyard.io/testing` taint (NoSchedule)
while its test pod runs, and releases it. It is rate-limited (`max_concurrent` at
once, `max_starts_per_hour`) and never touches a busy node: after tainting it checks
the node's pods again and lets go if work arrived in between. Balloon pods on the
node (gpuyard's own, in gpuyard-system) are deleted so the test gets the GPUs (the
balloon controller puts them back elsewhere). A pass records gpuyard.io/last-tested; a failure also sets
GPUTestPassed=False, which the health controller turns into an unhealthy taint through
the brake. Metric: the share of nodes tested in the last 7 days.

`pick` and `finish_plan` are pure; `run_periodic` is the live loop.
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
from gpuyard.kube.objects import (
    find_taint,
    is_node_ready,
    is_pod_terminal,
    parse_time,
    without_taint,
)
from gpuyard.names import (
    PRIORITY_BALLOON,
    PRIORITY_CLASSES,
    TAINT_NOT_READY,
    TAINT_PREFLIGHT,
    TAINT_TESTING,
    TAINT_UNHEALTHY,
    TAINT_UNREACHABLE,
)

log = logging.getLogger("gpuyard.health.periodic")

KIND = "periodic"
ANN_LAST_TESTED = "gpuyard.io/last-tested"
ANN_LAST_RESULT = "gpuyard.io/last-test-result"
ANN_TESTING_SINCE = "gpuyard.io/testing-since"
WEEK_S = 7 * 86400.0
BLOCKING_TAINTS = (
    TAINT_PREFLIGHT,
    TAINT_UNHEALTHY,
    TAINT_TESTING,
    TAINT_UNREACHABLE,
    TAINT_NOT_READY,
)


@dataclass(frozen=True)
class PeriodicConfig:
    retest_after_s: float = 6 * 86400.0  # so every idle node is tested within a week
    max_concurrent: int = 5
    max_starts_per_hour: int = 60
    timeout_s: float = 900.0
    pods: ActiveTestConfig = field(default_factory=ActiveTestConfig)


# Where gpuyard's balloon controller runs its balloons (gpuyard.balloons.sizing.NAMESPACE),
# the only namespace where the health controllers may delete pods (their Role in
# gpuyard/health/deploy.yaml): a low-priority pod anywhere else is someone's work, so
# its node is not idle.
BALLOON_NAMESPACE = "gpuyard-system"


def is_balloon(pod: Mapping[str, Any]) -> bool:
    if (pod.get("metadata") or {}).get("namespace") != BALLOON_NAMESPACE:
        return False
    spec = pod.get("spec") or {}
    if spec.get("priorityClassName") == PRIORITY_BALLOON:
        return True
    prio = spec.get("priority")
    return isinstance(prio, int) and prio <= PRIORITY_CLASSES[PRIORITY_BALLOON]


def _ignorable(pod: Mapping[str, Any]) -> bool:
    meta = pod.get("metadata") or {}
    if any(o.get("kind") == "DaemonSet" for o in meta.get("ownerReferences") or []):
        return True
    return (meta.get("labels") or {}).get(LABEL_TEST) is not None


def is_idle(pods_on_node: list[Mapping[str, Any]]) -> bool:
    """Nothing but balloons (and DaemonSet / test pods) running on the node."""
    return all(is_pod_terminal(dict(p)) or is_balloon(p) or _ignorable(p) for p in pods_on_node)


def last_tested(node: Mapping[str, Any]) -> float:
    ann = (node.get("metadata") or {}).get("annotations") or {}
    t = parse_time(ann.get(ANN_LAST_TESTED))
    return t.timestamp() if t else 0.0


def share_tested_recently(nodes: Mapping[str, Mapping[str, Any]], now: float) -> float:
    if not nodes:
        return 0.0
    return sum(1 for n in nodes.values() if now - last_tested(n) < WEEK_S) / len(nodes)


def eligible(
    node: Mapping[str, Any], pods_on_node: list[Mapping[str, Any]], now: float, cfg: PeriodicConfig
) -> bool:
    n = dict(node)
    if not is_node_ready(n) or (n.get("spec") or {}).get("unschedulable"):
        return False
    if any(find_taint(n, key) for key in BLOCKING_TAINTS):
        return False
    if now - last_tested(node) < cfg.retest_after_s:
        return False
    return is_idle(pods_on_node)


def pick(
    nodes: Mapping[str, Mapping[str, Any]],
    pods_by_node: Mapping[str, list[Mapping[str, Any]]],
    running_tests: int,
    starts_last_hour: int,
    now: float,
    cfg: PeriodicConfig,
) -> list[str]:
    """Nodes to start testing now: eligible, least recently tested first, within the
    concurrency and hourly limits."""
    room = min(cfg.max_concurrent - running_tests, cfg.max_starts_per_hour - starts_last_hour)
    if room <= 0:
        return []
    cands = [
        (last_tested(n), name)
        for name, n in nodes.items()
        if eligible(n, pods_by_node.get(name, []), now, cfg)
    ]
    cands.sort()
    return [name for _, name in cands[:room]]


@dataclass(frozen=True)
class Finish:
    node: str
    pod: dict[str, Any] | None
    result: str  # "pass" | "fail" | "could-not-run" | "timeout"
    condition: Condition


def finish_plan(
    nodes: Mapping[str, Mapping[str, Any]],
    test_pods: Mapping[str, Mapping[str, Any]],
    now: float,
    cfg: PeriodicConfig,
) -> list[Finish]:
    out: list[Finish] = []
    seen: set[str] = set()
    for pod in test_pods.values():
        p = dict(pod)
        node = tested_node(p)
        seen.add(node)
        res = outcome(p)
        if res.finished:
            result = "pass" if res.passed else "could-not-run" if res.could_not_run else "fail"
            out.append(Finish(node, p, result, gpu_test_condition(KIND, res)))
        elif pod_age(p, now) > cfg.timeout_s:
            out.append(Finish(node, p, "timeout", timeout_condition(KIND, 1)))
    # A node held for testing with no test pod (we restarted mid-way): let it go.
    for name, n in nodes.items():
        if name in seen or not find_taint(dict(n), TAINT_TESTING):
            continue
        ann = (n.get("metadata") or {}).get("annotations") or {}
        since = parse_time(ann.get(ANN_TESTING_SINCE))
        if since is None or now - since.timestamp() > 60:
            out.append(Finish(name, None, "orphan", Condition("", "", "", "")))
    return out


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


async def _set_testing(
    client: Any, name: str, on: bool, now: float, extra_ann: dict[str, str | None] | None = None
) -> dict[str, Any]:
    from gpuyard.kube.resources import NODES

    for _ in range(5):
        fresh = await client.get(NODES, name)
        taints = without_taint((fresh.get("spec") or {}).get("taints"), TAINT_TESTING)
        if on:
            taints.append({"key": TAINT_TESTING, "effect": "NoSchedule"})
        ann: dict[str, str | None] = {ANN_TESTING_SINCE: _iso(now) if on else None}
        ann.update(extra_ann or {})
        body = {
            "metadata": {
                "resourceVersion": fresh["metadata"]["resourceVersion"],
                "annotations": ann,
            },
            "spec": {"taints": taints},
        }
        try:
            out: dict[str, Any] = await client.patch(NODES, name, body)
            return out
        except kubeio.Conflict:
            await asyncio.sleep(0.05)
    raise kubeio.Conflict(409, "Conflict", f"node {name}: testing taint kept conflicting", None)


async def start_test(client: Any, name: str, now: float, cfg: PeriodicConfig) -> bool:
    """Hold the node, check it is still idle, clear balloons, start the test pod."""
    from gpuyard.kube.resources import PODS

    node = await _set_testing(client, name, True, now)
    pods = (await client.list(PODS, None, field_selector=f"spec.nodeName={name}"))["items"]
    if not is_idle(pods):
        await _set_testing(client, name, False, now)
        return False
    for p in pods:
        if is_balloon(p) and not is_pod_terminal(p):
            m = p["metadata"]
            await client.delete_if_exists(PODS, m["name"], m["namespace"])
    attempt = int(now)
    pod = make_test_pod(node, KIND, attempt, cfg.pods)
    await create_test_pod(client, pod)
    await kubeio.record(
        client,
        node,
        "Normal",
        "PeriodicTestStarted",
        f"gpu-test {pod['metadata']['name']} on idle node",
    )
    return True


async def finish_test(client: Any, f: Finish, now: float) -> None:
    from gpuyard.kube.resources import PODS

    ann: dict[str, str | None] = {}
    if f.result != "orphan":
        ann = {ANN_LAST_TESTED: _iso(now), ANN_LAST_RESULT: f.result}
        await kubeio.write_node_conditions(client, f.node, [f.condition])
    try:
        node = await _set_testing(client, f.node, False, now, ann)
    except kubeio.NotFound:
        node = {"metadata": {"name": f.node}}
    if f.pod is not None:
        m = f.pod["metadata"]
        await client.delete_if_exists(PODS, m["name"], m["namespace"], grace_period_seconds=0)
    if f.result != "orphan":
        await kubeio.record(
            client,
            node,
            "Normal" if f.result == "pass" else "Warning",
            "PeriodicTest" + "".join(w.capitalize() for w in f.result.split("-")),
            f.condition.message,
        )


_SHARE_GAUGE: Any = None


def _share_gauge() -> Any:
    global _SHARE_GAUGE
    if _SHARE_GAUGE is None:
        from prometheus_client import Gauge

        _SHARE_GAUGE = Gauge(
            "gpuyard_health_tested_share_7d",
            "share of nodes that passed or ran an active GPU test in 7 days",
        )
    return _SHARE_GAUGE


async def run_periodic(
    client: Any,
    stop: asyncio.Event,
    cfg: PeriodicConfig | None = None,
    period_s: float = 5.0,
    informers: InformerFactory | None = None,
) -> None:
    """Start and finish periodic tests. `informers`: share the watches with the rest of
    the process."""
    from gpuyard.kube.resources import PODS

    cfg = cfg or PeriodicConfig()
    await kubeio.ensure_namespace(client, cfg.pods.namespace)
    shared = informers
    nodes = kubeio.Cache(client, kubeio.NODES, factory=shared)
    all_pods = kubeio.Cache(client, PODS, field_selector="spec.nodeName!=", factory=shared)
    tests = kubeio.Cache(
        client, PODS, cfg.pods.namespace, label_selector=f"{LABEL_TEST}={KIND}", factory=shared
    )
    caches = (nodes, all_pods, tests)
    for c in caches:
        c.start()
    starts: list[float] = []
    done: set[str] = set()  # test pods already finished (the cache may lag behind)
    try:
        for c in caches:
            await c.wait_synced()
        while not stop.is_set():
            now = time.time()
            live = {k: v for k, v in tests.items.items() if k not in done}
            done &= set(tests.items)
            for f in finish_plan(nodes.items, live, now, cfg):
                try:
                    await finish_test(client, f, now)
                    if f.pod is not None:
                        done.add(kubeio.Cache.key(f.pod))
                    if f.result != "orphan":
                        health_metrics().test_done(KIND, f.result, f.pod, now)
                except Exception as exc:
                    log.info("periodic finish %s: %s", f.node, exc)
            by_node: dict[str, list[Mapping[str, Any]]] = {}
            for p in all_pods.items.values():
                by_node.setdefault((p.get("spec") or {}).get("nodeName", ""), []).append(p)
            starts = [t for t in starts if now - t < 3600]
            running = sum(1 for p in live.values() if not is_pod_terminal(p))
            for name in pick(nodes.items, by_node, running, len(starts), now, cfg):
                try:
                    if await start_test(client, name, now, cfg):
                        starts.append(now)
                except Exception as exc:
                    log.info("periodic start %s: %s", name, exc)
            _share_gauge().set(share_tested_recently(nodes.items, now))
            try:
                await asyncio.wait_for(stop.wait(), period_s)
            except TimeoutError:
                pass
    finally:
        for c in caches:
            await c.stop()
