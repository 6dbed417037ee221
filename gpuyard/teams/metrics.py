"""Prometheus metrics of the teams controller: each team's nodes by state (from the
plan it writes to Team status) and its GPUs, assigned and idle (from the nodes labelled
for it and the pods bound there). In the process's default registry, made once."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from gpuyard import names
from gpuyard.kube import objects as o

_metrics: Any = None


class TeamMetrics:
    def __init__(self, registry: Any = None) -> None:
        from prometheus_client import REGISTRY, Gauge

        r = registry or REGISTRY
        self.nodes = Gauge(
            "gpuyard_team_nodes",
            "a team's nodes by state (wanted, assigned, healthy, in_use, lent_out,"
            " borrowed_in, shortfall), as in its Team status",
            ["team", "state"],
            registry=r,
        )
        self.gpus = Gauge(
            "gpuyard_team_gpus",
            "GPUs of the nodes assigned to a team: allocatable (assigned), requested by"
            " a running pod (in_use) and not (idle)",
            ["team", "state"],
            registry=r,
        )
        self._teams: set[str] = set()

    def update(
        self,
        status: dict[str, Any],
        nodes: Iterable[dict[str, Any]],
        pods_on: Callable[[str], Iterable[dict[str, Any]]],
    ) -> None:
        assigned: dict[str, int] = {t: 0 for t in status}
        idle: dict[str, int] = {t: 0 for t in status}
        for n in nodes:
            team = o.labels_of(n).get(names.LABEL_TEAM)
            if not team:
                continue
            alloc = ((n.get("status") or {}).get("allocatable") or {}).get(names.RESOURCE_GPU)
            gpus = o.quantity_to_int(alloc) if alloc else 0
            used = sum(
                o.pod_requests(p).get(names.RESOURCE_GPU, 0)
                for p in pods_on(o.name_of(n))
                if not o.is_pod_terminal(p)
            )
            assigned[team] = assigned.get(team, 0) + gpus
            idle[team] = idle.get(team, 0) + max(0, gpus - used)
        for team, st in status.items():
            for state, attr in (
                ("wanted", "wanted"),
                ("assigned", "assigned"),
                ("healthy", "healthy"),
                ("in_use", "in_use"),
                ("lent_out", "lent_out"),
                ("borrowed_in", "borrowed_in"),
                ("shortfall", "shortfall"),
            ):
                self.nodes.labels(team, state).set(getattr(st, attr))
        for team in assigned:
            self.gpus.labels(team, "assigned").set(assigned[team])
            self.gpus.labels(team, "idle").set(idle[team])
            self.gpus.labels(team, "in_use").set(assigned[team] - idle[team])
        teams = set(status) | set(assigned)
        for gone in self._teams - teams:  # a deleted team's series go with it
            for state in ("wanted", "assigned", "healthy", "in_use", "lent_out", "borrowed_in",
                          "shortfall"):  # fmt: skip
                self.nodes.remove(gone, state)
            for state in ("assigned", "idle", "in_use"):
                self.gpus.remove(gone, state)
        self._teams = teams


def process_metrics() -> TeamMetrics:
    global _metrics
    if _metrics is None:
        _metrics = TeamMetrics()
    return _metrics
