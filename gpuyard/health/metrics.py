"""Prometheus metrics of the health components, in the process's default registry,
made once: the controller's view of every node's health conditions (the agents'
verdicts) and of the brake, and the results and durations of the active GPU tests
(preflight on new nodes, periodic on idle ones)."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gpuyard.health.verdict import TAINT_CONDITIONS
from gpuyard.kube.objects import parse_time

# A gpu-test run takes from seconds (a quick check) to tens of minutes (burn-in).
TEST_BUCKETS = (5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600)
STATUSES = ("True", "False", "Unknown")


@dataclass
class HealthMetrics:
    tripped: Any
    held: Any
    tainted: Any
    writes: Any
    trips: Any
    conditions: Any
    verdicts: Any
    tests: Any
    test_duration: Any
    # node -> condition -> (status, reason) last seen, so a verdict counts once
    _seen: dict[str, dict[str, tuple[str, str]]] = field(default_factory=dict)

    def observe_nodes(self, nodes: Mapping[str, Mapping[str, Any]]) -> None:
        """Nodes by health condition and status; a changed verdict counts once.

        Called on every change of the node cache (every half second on a busy cluster), so
        what it remembers is updated in place: a new (status, reason) only where one
        changed. Rebuilding it each call (a dict and three tuples per node) left the
        cyclic collector 30,000 fresh objects a call to walk at 7,500 nodes: most of the
        young-generation collections of `gpuyard up`'s process."""
        by: Tally[tuple[str, str]] = Tally()
        seen = self._seen
        for name, node in nodes.items():
            before = seen.get(name)
            if before is None:
                before = seen[name] = {}
            matched = 0
            for c in (node.get("status") or {}).get("conditions") or ():
                t = c.get("type")
                if t not in TAINT_CONDITIONS:
                    continue
                matched += 1
                s = str(c.get("status") or "Unknown")
                r = str(c.get("reason") or "")
                by[(t, s)] += 1
                old = before.get(t)
                if old is None:
                    # A node (or condition) first seen counts only what is wrong with it.
                    if s != "True":
                        self.verdicts.labels(t, s, r).inc()
                    before[t] = (s, r)
                elif old[0] != s or old[1] != r:
                    self.verdicts.labels(t, s, r).inc()
                    before[t] = (s, r)
            if len(before) > matched:  # a condition gone from the node is forgotten
                now = {
                    c.get("type")
                    for c in (node.get("status") or {}).get("conditions") or ()
                    if c.get("type") in TAINT_CONDITIONS
                }
                for t in [t for t in before if t not in now]:
                    del before[t]
        if len(seen) > len(nodes):  # every node listed is in seen: some are gone
            for name in [n for n in seen if n not in nodes]:
                del seen[name]
        for t in TAINT_CONDITIONS:
            for s in STATUSES:
                self.conditions.labels(t, s).set(by[(t, s)])

    def test_done(self, kind: str, result: str, pod: Mapping[str, Any] | None, now: float) -> None:
        """A gpu-test of `kind` (preflight, periodic) ended with `result`."""
        self.tests.labels(kind, result).inc()
        took = run_seconds(pod, now)
        if took is not None:
            self.test_duration.labels(kind, result).observe(took)


def run_seconds(pod: Mapping[str, Any] | None, now: float) -> float | None:
    """How long a test pod's container ran (started -> finished), else since the pod was
    made (a timeout); None without a pod."""
    if pod is None:
        return None
    for cs in (pod.get("status") or {}).get("containerStatuses") or ():
        term = (cs.get("state") or {}).get("terminated") or {}
        a, b = parse_time(term.get("startedAt")), parse_time(term.get("finishedAt"))
        if a is not None and b is not None:
            return max(0.0, b.timestamp() - a.timestamp())
    made = parse_time((pod.get("metadata") or {}).get("creationTimestamp"))
    return None if made is None else max(0.0, now - made.timestamp())


_METRICS: HealthMetrics | None = None


def health_metrics() -> HealthMetrics:
    global _METRICS
    if _METRICS is None:
        from prometheus_client import Counter, Gauge, Histogram

        _METRICS = HealthMetrics(
            Gauge("gpuyard_health_brake_tripped", "1 while the health brake holds taints back"),
            Gauge("gpuyard_health_brake_held_nodes", "nodes whose taint the brake holds back"),
            Gauge("gpuyard_health_unhealthy_nodes", "nodes with the gpuyard.io/unhealthy taint"),
            Counter("gpuyard_health_taint_writes", "taint changes written by the controller"),
            Counter("gpuyard_health_brake_trips", "times the health brake tripped"),
            Gauge(
                "gpuyard_health_node_conditions",
                "nodes by health condition (GPUHealthy, DiskHealthy, NetworkHealthy,"
                " GPUTestPassed) and status",
                ["condition", "status"],
            ),
            Counter(
                "gpuyard_health_verdicts",
                "health verdicts: a node's health condition changing status or reason",
                ["condition", "status", "reason"],
            ),
            Counter(
                "gpuyard_health_gpu_tests",
                "active GPU tests finished, by kind (preflight, periodic) and result"
                " (pass, fail, could-not-run, timeout)",
                ["kind", "result"],
            ),
            Histogram(
                "gpuyard_health_gpu_test_duration_seconds",
                "how long an active GPU test ran, by kind and result",
                ["kind", "result"],
                buckets=TEST_BUCKETS,
            ),
        )
    return _METRICS
