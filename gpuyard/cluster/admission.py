"""The simulated kubelet's admission: whether a pod bound to a node may start there, as
a real kubelet decides before it runs a pod (and whoever bound it, a scheduler or a
user who set spec.nodeName, does not matter).

A real kubelet runs the scheduler's general checks against its own view of the node
and the pods it already admitted, in this order, and refuses on the first that fails:

- every resource the pod requests (cpu, memory, pods, nvidia.com/gpu, extended
  resources, hugepages-*, ephemeral-storage) fits the node's allocatable minus what
  its admitted pods request: reason OutOf<resource>;
- the node selector and required node affinity match the node: reason NodeAffinity;
- spec.nodeName is this node: reason NodeName;
- no admitted pod binds one of the pod's host ports (same protocol and port, on the
  same address or where either is 0.0.0.0): reason NodePorts;
- every NoExecute taint of the node is tolerated (the kubelet looks only at
  NoExecute): reason TaintToleration.

A refused pod ends in phase Failed with that reason and "Pod was rejected: ..." as its
message, and never runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gpuyard.kube import objects as o

Port = tuple[str, str, int]  # (hostIP, protocol, hostPort)


@dataclass(frozen=True)
class Refusal:
    reason: str
    message: str


def pod_ports(pod: Mapping[str, Any]) -> tuple[Port, ...]:
    """The host ports a pod's containers bind (an empty hostIP is 0.0.0.0)."""
    got = set()
    for c in (pod.get("spec") or {}).get("containers") or ():
        for port in c.get("ports") or ():
            hp = port.get("hostPort")
            if hp:
                got.add((port.get("hostIP") or "0.0.0.0", port.get("protocol") or "TCP", int(hp)))
    return tuple(sorted(got))


def _clash(a: Port, b: Port) -> bool:
    return a[1] == b[1] and a[2] == b[2] and (a[0] == b[0] or "0.0.0.0" in (a[0], b[0]))


def admit(
    pod: Mapping[str, Any],
    node: Mapping[str, Any],
    allocatable: Mapping[str, int],
    used: Mapping[str, int],
    ports_bound: Iterable[Port],
) -> Refusal | None:
    """None: the kubelet admits the pod; else why it refuses. `allocatable` is the
    node's (scheduler units: milli-cpu, bytes, counts), `used` what its admitted pods
    request, `ports_bound` the host ports they bind."""
    req = o.pod_requests(pod)
    req["pods"] = 1
    for r in sorted(req, key=lambda r: (r != "cpu", r != "memory", r)):
        want = req[r]
        if want and used.get(r, 0) + want > allocatable.get(r, 0):
            return Refusal(
                f"OutOf{r}",
                f"Pod was rejected: Node didn't have enough resource: {r}, requested: {want}, "
                f"used: {used.get(r, 0)}, capacity: {allocatable.get(r, 0)}",
            )
    if not o.node_matches_pod(pod, node):
        return Refusal(
            "NodeAffinity",
            "Pod was rejected: Predicate NodeAffinity failed: node(s) didn't match Pod's "
            "node affinity/selector",
        )
    spec = pod.get("spec") or {}
    if spec.get("nodeName") and spec.get("nodeName") != o.name_of(node):
        return Refusal("NodeName", "Pod was rejected: Predicate NodeName failed")
    mine = pod_ports(pod)
    if mine:
        bound = list(ports_bound)
        if any(_clash(a, b) for a in mine for b in bound):
            return Refusal(
                "NodePorts",
                "Pod was rejected: Predicate NodePorts failed: node(s) didn't have free ports "
                "for the requested pod ports",
            )
    for t in (node.get("spec") or {}).get("taints") or ():
        if t.get("effect") == o.NO_EXECUTE and not o.tolerates(spec.get("tolerations"), t):
            return Refusal(
                "TaintToleration",
                "Pod was rejected: Predicate TaintToleration failed: node(s) had untolerated "
                f"taint {{{t.get('key')}: {t.get('value') or ''}}}",
            )
    return None
