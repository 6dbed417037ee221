"""What a node's agent wants in the kernel, from the Kubernetes objects it sees (pure).

- ranges_for(node, nodes, service_cidrs): the node's own pod ranges, the pod ranges of nodes
  in another zone (label topology.kubernetes.io/zone), and every pod range plus services
  (IPv4 and IPv6 alike: spec.podCIDRs of a dual-stack node holds one of each);
- pod_rules(pods, node, previous): one PodRule per running pod with an IP on this node
  (all of status.podIPs; hostNetwork pods have the node's address: never a rule of theirs),
  and the uplink HTB class of each pod limited by gpuyard.io/internet-egress-bandwidth
  (its class number kept across calls while it stays limited; pods without the
  annotation get none). A bad value (the webhook refuses them) leaves the pod unshaped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from gpuyard import names
from gpuyard.network import bandwidth
from gpuyard.network.classes import Ranges, join_ips
from gpuyard.network.nft import CLASS_MASK, PodRule

Obj = Mapping[str, Any]


def _pod_cidrs(node: Obj) -> list[str]:
    spec = node.get("spec") or {}
    return list(spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else []))


def _zone(node: Obj) -> str:
    return ((node.get("metadata") or {}).get("labels") or {}).get(names.LABEL_ZONE, "")


def ranges_for(node: Obj, nodes: Iterable[Obj], service_cidrs: Iterable[str]) -> Ranges:
    nodes = list(nodes)
    mine = _zone(node)
    other = [c for n in nodes if mine and _zone(n) and _zone(n) != mine for c in _pod_cidrs(n)]
    every = [c for n in nodes for c in _pod_cidrs(n)] + _pod_cidrs(node) + list(service_cidrs)
    return Ranges.of(_pod_cidrs(node), other, every)


def pod_ips(pod: Obj) -> str:
    """The pod's addresses (status.podIPs, else status.podIP), canonical; "" if none."""
    status = pod.get("status") or {}
    ips = [p.get("ip", "") for p in status.get("podIPs") or [] if isinstance(p, Mapping)]
    if not ips and status.get("podIP"):
        ips = [status["podIP"]]
    try:
        return join_ips(ips)
    except ValueError:  # not an address: nothing the kernel could match
        return ""


def teams_of(teams: Iterable[Obj]) -> dict[str, str]:
    """namespace -> team, from the Teams' spec.namespaces (the metrics' team label)."""
    out: dict[str, str] = {}
    for t in teams:
        name = (t.get("metadata") or {}).get("name", "")
        for ns in (t.get("spec") or {}).get("namespaces") or []:
            if isinstance(ns, str):
                out[ns] = name
    return out


def host_network_pods(pods: Iterable[Obj], node: str | None = None) -> list[tuple[str, str, str]]:
    """(namespace, name, "hostNetwork") of the running hostNetwork pods (on ``node``): they
    have the node's address, so they get no rules and their traffic is the node's."""
    out = []
    for pod in pods:
        meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
        phase = (pod.get("status") or {}).get("phase")
        if not spec.get("hostNetwork") or (node is not None and spec.get("nodeName") != node):
            continue
        if phase in ("Succeeded", "Failed"):
            continue
        out.append((meta.get("namespace", ""), meta.get("name", ""), "hostNetwork"))
    return sorted(out)


def limit_of(pod: Obj) -> int:
    """The pod's internet egress limit in bits per second; 0: none (or a value refused)."""
    value = ((pod.get("metadata") or {}).get("annotations") or {}).get(bandwidth.ANNOTATION)
    if value is None:
        return 0
    try:
        return bandwidth.parse(value)
    except ValueError:
        return 0


def pod_rules(
    pods: Iterable[Obj], node: str, previous: Mapping[str, PodRule] | None = None
) -> tuple[list[PodRule], dict[int, int]]:
    """(the rules for the node's pods, tclass -> bits per second for the shaper)."""
    previous = previous or {}
    rules, shaping = [], {}
    pending = []
    for pod in pods:
        meta, spec, status = (
            pod.get("metadata") or {},
            pod.get("spec") or {},
            pod.get("status") or {},
        )
        ip = pod_ips(pod)
        if spec.get("nodeName") != node or not ip or spec.get("hostNetwork"):
            continue
        if status.get("phase") in ("Succeeded", "Failed"):
            continue
        rule = PodRule(meta.get("namespace", ""), meta.get("name", ""), ip, meta.get("uid", ""))
        limit = limit_of(pod)
        old = previous.get(rule.id)
        if limit and old and old.tclass:
            rule = PodRule(rule.namespace, rule.name, ip, rule.uid, old.tclass)
            shaping[old.tclass] = limit
        elif limit:
            pending.append((rule, limit))
            continue
        rules.append(rule)
    kept = set(shaping)
    free = (c for c in range(1, CLASS_MASK) if c not in kept)
    for rule, limit in pending:
        tclass = next(free)
        rules.append(PodRule(rule.namespace, rule.name, rule.ip, rule.uid, tclass))
        shaping[tclass] = limit
    return rules, shaping
