"""Prometheus metrics of the TrainingJob controller: jobs by phase, gang restarts by
cause (causes.Cause.kind: what took the worker), preemptions, and how long a job took
from creation to all of its workers running. In the process's default registry, made
once; the controller feeds them only after its status write succeeded, so a restart
counts once."""

from __future__ import annotations

from collections import Counter as Tally
from typing import Any

PHASES = ("Pending", "Scheduling", "Running", "Restarting", "Succeeded", "Failed")
# Seconds from a job's creation to all of its workers running: a few seconds for an
# idle cluster up to days in a busy one.
TIME_TO_RUN_BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 86400, 7 * 86400)

_metrics: Any = None


class JobMetrics:
    def __init__(self, registry: Any = None) -> None:
        from prometheus_client import REGISTRY, Counter, Gauge, Histogram

        r = registry or REGISTRY
        self.jobs = Gauge(
            "gpuyard_trainingjobs", "TrainingJobs by status.phase", ["phase"], registry=r
        )
        self.restarts = Counter(
            "gpuyard_trainingjob_restarts",
            "gang restarts charged against backoffLimit, by what took the worker"
            " (failure, node-unhealthy, node-lost, eviction, deletion)",
            ["cause"],
            registry=r,
        )
        self.preemptions = Counter(
            "gpuyard_trainingjob_preemptions",
            "gangs preempted by the scheduler (not charged as restarts)",
            registry=r,
        )
        self.time_to_run = Histogram(
            "gpuyard_trainingjob_time_to_run_seconds",
            "seconds from a job's creation to all of its workers running (first time)",
            buckets=TIME_TO_RUN_BUCKETS,
            registry=r,
        )
        self._phase: dict[str, str] = {}  # "ns/name" -> phase last seen
        self._count: Tally[str] = Tally()
        for p in PHASES:
            self.jobs.labels(p).set(0)

    def seen(self, key: str, phase: str | None) -> None:
        """The job `key` is in `phase` (None: it is gone)."""
        old = self._phase.pop(key, None)
        if old is not None:
            self._count[old] -= 1
            self.jobs.labels(old).set(self._count[old])
        if phase is not None:
            self._phase[key] = phase
            self._count[phase] += 1
            self.jobs.labels(phase).set(self._count[phase])


def process_metrics() -> JobMetrics:
    global _metrics
    if _metrics is None:
        _metrics = JobMetrics()
    return _metrics
