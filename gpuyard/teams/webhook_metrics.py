"""Prometheus metrics of the team admission webhook: how long each AdmissionReview took
to answer (by operation) and the pods it refused (by reason: the decision's category, or
no-team-table / bad-review when it could not decide). In the process's default registry,
made once."""

from __future__ import annotations

from typing import Any

_metrics: Any = None

# every reason a refusal is counted under (series made up front, so a rate reads 0)
REASONS = (
    "bad-bandwidth-annotation",
    "any-team-toleration",
    "other-team-toleration",
    "no-team-table",
    "bad-review",
)


class AdmissionMetrics:
    def __init__(self, registry: Any = None) -> None:
        from prometheus_client import REGISTRY, Counter, Histogram

        r = registry or REGISTRY
        self.duration = Histogram(
            "gpuyard_webhook_admission_duration_seconds",
            "time the team webhook took to answer an AdmissionReview, by operation",
            ["operation"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )
        self.refusals = Counter(
            "gpuyard_webhook_admission_refusals",
            "AdmissionReviews the team webhook refused, by reason",
            ["reason"],
            registry=r,
        )
        for reason in REASONS:
            self.refusals.labels(reason)

    def observe(self, operation: str, seconds: float, refused: str) -> None:
        self.duration.labels(operation or "unknown").observe(seconds)
        if refused:
            self.refusals.labels(refused).inc()


def process_metrics() -> AdmissionMetrics:
    global _metrics
    if _metrics is None:
        _metrics = AdmissionMetrics()
    return _metrics
