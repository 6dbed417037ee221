"""The agent's Prometheus counters: bytes and packets per pod, class and direction."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from gpuyard.network.nft import Count

LABELS = ["namespace", "pod", "team", "class", "direction"]


class AccountingCollector(Collector):
    """Reads the kernel counters at scrape time (one read per scrape for the whole node);
    ``teams`` maps a namespace to its team ("" where none)."""

    def __init__(
        self,
        read: Callable[[], Iterable[Count]],
        teams: Callable[[], Mapping[str, str]],
        unaccounted: Callable[[], Iterable[tuple[str, str, str]]] = lambda: (),
    ):
        self.read = read
        self.teams = teams
        # (namespace, pod, reason) of the node's pods that get no counters of their own
        self.unaccounted = unaccounted

    def collect(self):
        b = CounterMetricFamily(
            "gpuyard_pod_network_bytes",
            "Bytes a pod sent (out) or received (in), by destination class",
            labels=LABELS,
        )
        p = CounterMetricFamily(
            "gpuyard_pod_network_packets",
            "Packets a pod sent (out) or received (in), by destination class",
            labels=LABELS,
        )
        teams = self.teams()
        for c in self.read():
            labels = [
                c.pod.namespace,
                c.pod.name,
                teams.get(c.pod.namespace, ""),
                c.cls,
                c.direction,
            ]
            b.add_metric(labels, c.bytes)
            p.add_metric(labels, c.packets)
        yield b
        yield p
        u = GaugeMetricFamily(
            "gpuyard_pod_network_unaccounted",
            "Pods whose traffic is not counted per pod (1), and why: hostNetwork pods share "
            "the node's address, so their traffic is the node's own",
            labels=["namespace", "pod", "team", "reason"],
        )
        for ns, pod, reason in self.unaccounted():
            u.add_metric([ns, pod, teams.get(ns, ""), reason], 1)
        yield u
