"""Simulated pod traffic for `gpuyard up`: the same counters as the kernel's, from rates.

A simulated pod says what it sends with the annotation ``gpuyard.io/sim-traffic``, such as
``internet=100Mbit,cluster=1Gbit`` (classes node, zone, cluster, internet; rates as in
gpuyard.io/internet-egress-bandwidth). While the pod runs, its ``out`` counters grow at
those rates, capped by its internet egress limit as the shaper would cap it; ``in`` counters
stay at zero. A pod that stops or goes away loses its counters, as its kernel rules would.
`SimTraffic` is pure bookkeeping (time is passed in by the caller); `SimAccounting` is a
simulated node's kernel for the node agent's own loop, which `gpuyard up` runs once per
simulated node (gpuyard.cluster.simnetd), and `attach` serves all their counters on the
cluster's metrics address.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from gpuyard.network import bandwidth, desired
from gpuyard.network.classes import CLASSES, DIRECTIONS
from gpuyard.network.nft import Count, PodRule

ANNOTATION = "gpuyard.io/sim-traffic"
PACKET = 1500  # bytes per simulated packet


def parse(value: str) -> dict[str, int]:
    """``internet=100Mbit,cluster=1Gbit`` -> class -> bits per second; ValueError naming
    the part that is wrong."""
    rates: dict[str, int] = {}
    for part in (p.strip() for p in str(value).split(",")):
        if not part:
            continue
        cls, sep, rate = part.partition("=")
        cls = cls.strip()
        if not sep or cls not in CLASSES:
            raise ValueError(
                f"{part!r}: write CLASS=RATE with CLASS one of {', '.join(CLASSES)}, "
                "such as internet=100Mbit"
            )
        if cls in rates:
            raise ValueError(f"{part!r}: class {cls} given twice")
        rates[cls] = bandwidth.parse(rate)
    return rates


class SimTraffic:
    """The counters of simulated pods; ``observe`` with the pods as they are now."""

    def __init__(self) -> None:
        # pod key -> (rule, class -> bytes per second, last time, class -> bytes so far)
        self._pods: dict[str, tuple[PodRule, dict[str, float], float, dict[str, float]]] = {}

    def observe(self, pods: Iterable[Mapping[str, Any]], now: float) -> None:
        seen = set()
        for pod in pods:
            meta, status = pod.get("metadata") or {}, pod.get("status") or {}
            value = (meta.get("annotations") or {}).get(ANNOTATION)
            ip = desired.pod_ips(pod)
            host = (pod.get("spec") or {}).get("hostNetwork")
            if value is None or not ip or host or status.get("phase") != "Running":
                continue
            try:
                bits = parse(value)
            except ValueError:
                continue
            limit = desired.limit_of(pod)
            if limit and "internet" in bits:
                bits["internet"] = min(bits["internet"], limit)
            rule = PodRule(meta.get("namespace", ""), meta.get("name", ""), ip, meta.get("uid", ""))
            key = rule.id
            seen.add(key)
            old = self._pods.get(key)
            totals = self._advance(old, now) if old else {}
            self._pods[key] = (rule, {c: b / 8 for c, b in bits.items()}, now, totals)
        for key in set(self._pods) - seen:
            del self._pods[key]

    @staticmethod
    def _advance(
        entry: tuple[PodRule, dict[str, float], float, dict[str, float]], now: float
    ) -> dict[str, float]:
        _, rates, since, totals = entry
        dt = max(0.0, now - since)
        return {c: totals.get(c, 0.0) + rates.get(c, 0.0) * dt for c in set(totals) | set(rates)}

    def read(self, now: float) -> list[Count]:
        out = []
        for entry in self._pods.values():
            rule, totals = entry[0], self._advance(entry, now)
            for cls in CLASSES:
                for direction in DIRECTIONS:
                    n = int(totals.get(cls, 0.0)) if direction == "out" else 0
                    out.append(Count(rule, cls, direction, -(-n // PACKET), n))
        return out


class SimAccounting:
    """A simulated node's kernel, for the node agent's own loop (gpuyard.network.agent):
    it holds the rules the agent syncs, and counts for each at the rates of its pod's
    gpuyard.io/sim-traffic, looked up in ``pods`` (the agent's cache of its node's pods,
    set once the agent is made). Traffic is classed by the annotation, not by address:
    the ranges the agent would install are not needed."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.pods: Any = None  # an Informer of the node's pods
        self.traffic = SimTraffic()
        self.rules: dict[str, PodRule] = {}

    def ensure(self, ranges: Any) -> None:
        return None

    def owned(self) -> dict[str, PodRule]:
        return dict(self.rules)

    def sync(
        self, desired: list[PodRule], current: Mapping[str, PodRule] | None = None
    ) -> dict[str, list[PodRule]]:
        """Hold exactly ``desired``; the pods' rates are read again (an annotation may
        have changed). Returns the changes, as the kernel engine does."""
        have = self.rules if current is None else current
        want = {r.id: r for r in desired}
        changes = {
            "added": [r for k, r in want.items() if k not in have],
            "removed": [r for k, r in have.items() if k not in want],
            "updated": [r for k, r in want.items() if k in have and have[k] != r],
        }
        self.rules = want
        pods = []
        for r in desired:
            pod = self.pods.get(r.name, r.namespace) if self.pods is not None else None
            if pod is not None:
                pods.append(pod)
        self.traffic.observe(pods, self.clock())
        return changes

    def read(self) -> list[Count]:
        return self.traffic.read(self.clock())


# `gpuyard up`: one collector in the process's default registry (served on the cluster's
# metrics address), reading the counters of the simulated nodes' agents attached now.
# [agents() of the cluster: NetAgents over SimAccounting, teams() of the cluster]
_attached: list[Any] = [None, None]
_registered: list[bool] = [False]


def attach(
    agents: Callable[[], Iterable[Any]] | None,
    teams: Callable[[], Iterable[Mapping[str, Any]]] | None = None,
) -> None:
    """Serve the counters of the node agents ``agents()`` (None: stop serving any),
    labelled with the team of each namespace from ``teams()`` (the Teams'
    spec.namespaces)."""
    if not _registered[0]:
        from prometheus_client import REGISTRY

        from gpuyard.network.metrics import AccountingCollector

        REGISTRY.register(AccountingCollector(_read, _teams, _unaccounted))
        _registered[0] = True
    _attached[0], _attached[1] = agents, teams


def _agents() -> list[Any]:
    agents = _attached[0]
    return list(agents()) if agents is not None else []


def _unaccounted() -> list[tuple[str, str, str]]:
    return sorted(x for a in _agents() for x in a.unaccounted())


def _teams() -> dict[str, str]:
    teams = _attached[1]
    return desired.teams_of(teams()) if teams is not None else {}


def _read() -> list[Count]:
    return [c for a in _agents() for c in a.engine.read()]
