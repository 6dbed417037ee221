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
    out = []
    for c in cidrs:
        net = ipaddress.ip_network(c, strict=False)
        if net.version != 4:
            raise ValueError(f"{c}: only IPv4 ranges are accounted")
        out.append(str(net))
    return tuple(sorted(set(out)))


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
