"""Request accounting for `gpuyard.kube` clients (DESIGN principle 4).

Every `Client` owns a `RequestCounter`: requests by verb (get, list, watch, create,
update, patch, delete, ...) and by HTTP status class, plus retries. Components report
`per_minute(now)` and export it as Prometheus metrics with `register_prometheus`.
Pure bookkeeping: time is passed in by the caller.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any


class RequestCounter:
    """Counts requests made by one client, by verb and by status code class."""

    def __init__(self, started_at: float) -> None:
        self.started_at = started_at
        self._lock = threading.Lock()
        self.by_verb: Counter[str] = Counter()
        self.by_code: Counter[str] = Counter()
        self.retries = 0

    def record(self, verb: str, status: int) -> None:
        with self._lock:
            self.by_verb[verb] += 1
            self.by_code[f"{status // 100}xx" if status else "error"] += 1

    def record_retry(self) -> None:
        with self._lock:
            self.retries += 1

    @property
    def total(self) -> int:
        return sum(self.by_verb.values())

    def per_minute(self, now: float) -> dict[str, float]:
        """Average requests per minute by verb since `started_at` (at least one second)."""
        minutes = max(now - self.started_at, 1.0) / 60.0
        with self._lock:
            return {verb: n / minutes for verb, n in sorted(self.by_verb.items())}

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "by_verb": dict(self.by_verb),
                "by_code": dict(self.by_code),
                "retries": self.retries,
                "total": sum(self.by_verb.values()),
            }


def register_prometheus(counter: RequestCounter, component: str, registry: Any = None) -> Any:
    """Expose `counter` as `gpuyard_kube_requests_total{component,verb}` (a custom
    collector reading the live counts). Returns the collector."""
    from prometheus_client import REGISTRY
    from prometheus_client.core import CounterMetricFamily

    class _Collector:
        def collect(self) -> Any:
            fam = CounterMetricFamily(
                "gpuyard_kube_requests",
                "Requests made to the Kubernetes API, by verb",
                labels=["component", "verb"],
            )
            for verb, n in counter.snapshot()["by_verb"].items():
                fam.add_metric([component, verb], n)
            yield fam
            retries = CounterMetricFamily(
                "gpuyard_kube_request_retries",
                "Requests to the Kubernetes API retried after 429/5xx",
                labels=["component"],
            )
            retries.add_metric([component], counter.retries)
            yield retries

    collector = _Collector()
    (registry or REGISTRY).register(collector)
    return collector
