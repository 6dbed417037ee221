"""Destination classes of a pod's traffic, and the address ranges that define them.

A packet a pod sends (or receives) is counted in exactly one class, tried in this order:
``node`` (the node's own pod range), ``zone`` (pod ranges of nodes in another zone),
``cluster`` (every pod range and the service range), ``internet`` (everything else).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

CLASSES = ("node", "zone", "cluster", "internet")
DIRECTIONS = ("out", "in")


def _nets(cidrs: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """IPv4 and IPv6 ranges alike (dual-stack clusters have both), canonical, collapsed
    (adjacent and nested ranges merged: the same addresses in fewer ranges) and sorted."""
    nets = [ipaddress.ip_network(c, strict=False) for c in cidrs]
    out: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for version in (4, 6):
        out += ipaddress.collapse_addresses(n for n in nets if n.version == version)  # type: ignore[type-var]
    return tuple(str(n) for n in out)


def join_ips(ips: list[str] | tuple[str, ...]) -> str:
    """A pod's addresses (status.podIPs: one per family) as one canonical string, IPv4 first:
    the form PodRule.ip holds and the kernel's maps give back."""
    addrs = {ipaddress.ip_address(a) for a in ips if a}
    return ",".join(str(a) for a in sorted(addrs, key=lambda a: (a.version, a)))


@dataclass(frozen=True)
class Ranges:
    """The ranges the agent of one node needs: its pod range, the other zones', the cluster's."""

    node: tuple[str, ...] = ()
    zone: tuple[str, ...] = ()
    cluster: tuple[str, ...] = ()

    @classmethod
    def of(cls, node: list[str], zone: list[str], cluster: list[str]) -> Ranges:
        return cls(node=_nets(node), zone=_nets(zone), cluster=_nets(cluster))

    def classify(self, addr: str) -> str:
        """The class of traffic to (or from) ``addr``, as the kernel rules decide it."""
        ip = ipaddress.ip_address(addr)
        for name in ("node", "zone", "cluster"):
            if any(ip in ipaddress.ip_network(n) for n in getattr(self, name)):
                return name
        return "internet"


@dataclass(frozen=True)
class PodKey:
    namespace: str
    name: str
    ip: str
    uid: str = ""
    labels: dict = field(default_factory=dict, compare=False, hash=False)
