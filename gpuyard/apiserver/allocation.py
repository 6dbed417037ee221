"""Cluster IPs and node ports of Services, allocated as kube-apiserver allocates them.

The embedded cluster is single-stack IPv4 with the service range of a kubeadm cluster
(`SERVICE_CIDR`, 10.96.0.0/12) and the default node-port range 30000-32767. A Service
that asks for an address or port gets it if it is free and in range, else a 422 naming
the field; one that does not gets a free one (addresses at random from the dynamic part
of the range, above the band kept for static choices, as kube-apiserver does). What is
taken is read from the Services themselves (writes in flight included), so nothing is
kept that could drift from the store. Pure: the caller passes the other Services.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterable
from typing import Any

Obj = dict[str, Any]
Cause = dict[str, str]

SERVICE_CIDR = ipaddress.IPv4Network("10.96.0.0/12")
NODE_PORTS = (30000, 32767)
_SIZE = SERVICE_CIDR.num_addresses - 2  # without the network and broadcast addresses
_STATIC_BAND = min(max(16, _SIZE // 16), 256)


def _cause(field: str, message: str, reason: str = "FieldValueInvalid") -> Cause:
    return {"reason": reason, "message": message, "field": field}


def _go_strings(values: list[Any]) -> str:
    return "[]string{" + ", ".join(f'"{v}"' for v in values) + "}"


def _ips_of(services: Iterable[Obj]) -> set[str]:
    out: set[str] = set()
    for s in services:
        spec = s.get("spec") or {}
        for ip in spec.get("clusterIPs") or [spec.get("clusterIP")]:
            if isinstance(ip, str) and ip and ip != "None":
                out.add(ip)
    return out


def _ports_of(services: Iterable[Obj]) -> set[int]:
    out: set[int] = set()
    for s in services:
        for p in (s.get("spec") or {}).get("ports") or ():
            if isinstance(p, dict) and isinstance(p.get("nodePort"), int) and p["nodePort"]:
                out.add(p["nodePort"])
    return out


def _free_ip(taken: set[str]) -> str | None:
    base = int(SERVICE_CIDR.network_address) + 1
    lo, hi = _STATIC_BAND, _SIZE - 1  # offsets from base: the dynamic part first
    for _ in range(64):
        ip = str(ipaddress.IPv4Address(base + random.randint(lo, hi)))
        if ip not in taken:
            return ip
    for off in list(range(lo, hi + 1)) + list(range(0, lo)):
        ip = str(ipaddress.IPv4Address(base + off))
        if ip not in taken:
            return ip
    return None


def _check_ip(ip: str, taken: set[str]) -> str | None:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return f"failed to allocate IP {ip}: must be a valid IP address"
    if addr not in SERVICE_CIDR or addr in (
        SERVICE_CIDR.network_address,
        SERVICE_CIDR.broadcast_address,
    ):
        return (
            f"failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. "
            f"The range of valid IPs is {SERVICE_CIDR}"
        )
    if str(addr) in taken:
        return f"failed to allocate IP {ip}: provided IP is already allocated"
    return None


def service_defaults(spec: Obj, old: Obj | None, others: list[Obj]) -> list[Cause]:
    """Fill in a Service's clusterIP(s), IP families and node ports (spec in place), from
    the stored spec on an update; returns the causes of a refusal."""
    typ = spec.get("type") or "ClusterIP"
    if typ == "ExternalName":
        return []
    old = (
        old
        if isinstance(old, dict) and (old.get("type") or "ClusterIP") != "ExternalName"
        else None
    )
    if old is not None:
        for k in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"):
            if not spec.get(k) and old.get(k):
                spec[k] = old[k]
    causes: list[Cause] = []
    causes += _families(spec)
    if causes:
        return causes
    causes += _cluster_ip(spec, old, others)
    causes += _node_ports(spec, old, others)
    return causes


def _families(spec: Obj) -> list[Cause]:
    policy = spec.get("ipFamilyPolicy")
    headless = spec.get("clusterIP") == "None" or (spec.get("clusterIPs") or [None])[0] == "None"
    if not policy:
        policy = spec["ipFamilyPolicy"] = (
            "RequireDualStack" if headless and not spec.get("selector") else "SingleStack"
        )
    if policy == "RequireDualStack" and not headless:
        return [
            _cause(
                "spec.ipFamilyPolicy",
                'Invalid value: "RequireDualStack": this cluster is not configured for '
                "dual-stack services",
            )
        ]
    fams = spec.get("ipFamilies")
    if not fams:
        spec["ipFamilies"] = ["IPv4"]
        return []
    for i, f in enumerate(fams):
        if f != "IPv4":
            return [
                _cause(
                    f"spec.ipFamilies[{i}]", f'Invalid value: "{f}": not configured on this cluster'
                )
            ]
    return []


def _cluster_ip(spec: Obj, old: Obj | None, others: list[Obj]) -> list[Cause]:
    ip, ips = spec.get("clusterIP"), spec.get("clusterIPs")
    if ips and not ip:
        ip = spec["clusterIP"] = ips[0]
    if ip and ips and ips[0] != ip:
        return [
            _cause(
                "spec.clusterIPs[0]",
                f"Invalid value: {_go_strings(ips)}: must be empty or the same value as "
                "spec.clusterIP",
            )
        ]
    if ip == "None":
        spec["clusterIPs"] = ["None"]
        return []
    if old is not None and ip and ip == old.get("clusterIP"):
        spec["clusterIPs"] = [ip]
        return []
    taken = _ips_of(others)
    if ip:
        why = _check_ip(ip, taken)
        if why:
            return [_cause("spec.clusterIPs", f"Invalid value: {_go_strings([ip])}: {why}")]
        spec["clusterIPs"] = [str(ipaddress.ip_address(ip))]
        spec["clusterIP"] = spec["clusterIPs"][0]
        return []
    free = _free_ip(taken)
    if free is None:
        return [
            _cause(
                "spec.clusterIPs",
                "Invalid value: []string{}: failed to allocate a serviceIP: range is full",
            )
        ]
    spec["clusterIP"] = free
    spec["clusterIPs"] = [free]
    return []


def _node_ports(spec: Obj, old: Obj | None, others: list[Obj]) -> list[Cause]:
    typ = spec.get("type") or "ClusterIP"
    ports = [p for p in spec.get("ports") or () if isinstance(p, dict)]
    wants = typ == "NodePort" or (
        typ == "LoadBalancer" and spec.get("allocateLoadBalancerNodePorts") is not False
    )
    if not wants:
        # A type change away from node ports drops those the update left as they were.
        before = {p.get("nodePort") for p in (old or {}).get("ports") or () if isinstance(p, dict)}
        refused: list[Cause] = []
        if typ == "ClusterIP":
            for i, p in enumerate(ports):
                if p.get("nodePort") and p["nodePort"] in before:
                    del p["nodePort"]
                elif p.get("nodePort"):
                    refused.append(
                        _cause(
                            f"spec.ports[{i}].nodePort",
                            "Forbidden: may not be used when `type` is 'ClusterIP'",
                            "FieldValueForbidden",
                        )
                    )
        return refused
    taken = _ports_of(others)
    kept: dict[tuple[Any, Any], int] = {}
    if old is not None:
        for p in old.get("ports") or ():
            if isinstance(p, dict) and p.get("nodePort"):
                kept[(p.get("port"), p.get("protocol") or "TCP")] = p["nodePort"]
    out: list[Cause] = []
    mine: set[int] = set()
    lo, hi = NODE_PORTS
    for i, p in enumerate(ports):
        np = p.get("nodePort")
        if not np:
            np = kept.get((p.get("port"), p.get("protocol") or "TCP"))
            if np:
                p["nodePort"] = np
        if np:
            if np in set(kept.values()) and np not in mine:
                mine.add(np)
                continue
            if not lo <= np <= hi:
                why = (
                    "provided port is not in the valid range. The range of valid ports is "
                    f"{lo}-{hi}"
                )
            elif np in taken or np in mine:
                why = "provided port is already allocated"
            else:
                mine.add(np)
                continue
            out.append(_cause(f"spec.ports[{i}].nodePort", f"Invalid value: {np}: {why}"))
    if out:
        return out
    for p in ports:
        if not p.get("nodePort"):
            free = _free_port(taken | mine)
            if free is None:
                return [
                    _cause(
                        "spec.ports", "Invalid value: failed to allocate a nodePort: range is full"
                    )
                ]
            p["nodePort"] = free
            mine.add(free)
    return out


def _free_port(taken: set[int]) -> int | None:
    lo, hi = NODE_PORTS
    for _ in range(64):
        p = random.randint(lo, hi)
        if p not in taken:
            return p
    for p in range(lo, hi + 1):
        if p not in taken:
            return p
    return None
