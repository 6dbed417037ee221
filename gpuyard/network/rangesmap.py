"""The pod ranges by zone, published once for every node's netd.

Every netd classes its pods' traffic by the pod ranges of the nodes (gpuyard.network.classes):
its own node's, those of nodes in other zones, every node's. Watching every Node from every
node would fan each node status update out to every agent (at 7,500 nodes, some 25 updates a
second to 7,500 watches). Instead one leader-elected controller of `gpuyard controllers`
watches the Nodes and writes one ConfigMap, gpuyard-system/gpuyard-network-ranges:

- ``zones``: JSON, zone -> the pod ranges of its nodes, collapsed (adjacent node ranges merge,
  so a zone's usually stays a few ranges however many nodes it has);
- ``unzoned``: JSON, the collapsed pod ranges of the nodes without a zone label.

It writes only when that content changes (a node status update changes nothing there), at most
once every ``interval`` seconds, with resourceVersion-guarded updates (a conflict re-reads).
Each netd watches that one ConfigMap and its own Node, and ``ranges_from`` gives the same
Ranges as ``desired.ranges_for`` over all the nodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from gpuyard import names
from gpuyard.kube.errors import AlreadyExists, ApiError, Conflict
from gpuyard.kube.informer import Informer
from gpuyard.kube.resources import CONFIGMAPS, NODES
from gpuyard.kube.waits import woken
from gpuyard.network.classes import Ranges
from gpuyard.network.desired import _pod_cidrs, _zone

log = logging.getLogger("gpuyard.network.ranges")

NAME = names.NETWORK_RANGES_CONFIGMAP
NAMESPACE = names.NAMESPACE

Obj = Mapping[str, Any]
Net = ipaddress.IPv4Network | ipaddress.IPv6Network


def _collapse(nets: Iterable[Net]) -> list[str]:
    nets = list(nets)
    out: list[str] = []
    for version in (4, 6):
        same = [n for n in nets if n.version == version]
        out += [str(n) for n in ipaddress.collapse_addresses(same)]  # type: ignore[type-var]
    return out


def _valid(cidrs: Iterable[str]) -> list[Net]:
    out = []
    for c in cidrs:
        try:
            out.append(ipaddress.ip_network(c, strict=False))
        except (TypeError, ValueError):
            continue  # not a range: nothing the kernel could match
    return out


def content(nodes: Iterable[Obj]) -> dict[str, str]:
    """The ConfigMap's data for these nodes (canonical: equal content, equal strings)."""
    zones: dict[str, list[Net]] = {}
    unzoned: list[Net] = []
    for n in nodes:
        cidrs = _valid(_pod_cidrs(n))
        zone = _zone(n)
        if zone:
            zones.setdefault(zone, []).extend(cidrs)
        else:
            unzoned.extend(cidrs)
    by_zone = {z: _collapse(c) for z, c in sorted(zones.items())}
    return {
        "zones": json.dumps(by_zone, sort_keys=True, separators=(",", ":")),
        "unzoned": json.dumps(_collapse(unzoned), separators=(",", ":")),
    }


def parse(data: Mapping[str, Any]) -> tuple[dict[str, list[str]], list[str]]:
    """(zone -> ranges, ranges without a zone) of a ConfigMap's data; ValueError if it is
    not what `content` writes."""
    try:
        zones = json.loads(data.get("zones") or "{}")
        unzoned = json.loads(data.get("unzoned") or "[]")
    except (TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{NAMESPACE}/{NAME}: not JSON: {exc}") from None
    if not isinstance(zones, dict) or not isinstance(unzoned, list):
        raise ValueError(f"{NAMESPACE}/{NAME}: zones must be an object, unzoned a list")
    for v in [unzoned, *zones.values()]:
        if not isinstance(v, list) or not all(isinstance(c, str) for c in v):
            raise ValueError(f"{NAMESPACE}/{NAME}: ranges must be lists of strings")
    return zones, unzoned


def ranges_from(data: Mapping[str, Any] | None, node: Obj, service_cidrs: Iterable[str]) -> Ranges:
    """The node's Ranges from the published ConfigMap's data and its own Node: what
    desired.ranges_for gives over all the nodes. Without the ConfigMap (None), only the
    node's own ranges and the services'."""
    own = _pod_cidrs(node)
    if data is None:
        return Ranges.of(own, [], own + list(service_cidrs))
    zones, unzoned = parse(data)
    mine = _zone(node)
    other = [c for z, cs in zones.items() if mine and z != mine for c in cs]
    every = [c for cs in zones.values() for c in cs] + unzoned + own + list(service_cidrs)
    return Ranges.of(own, other, every)


def _key(node: Obj) -> tuple[str, tuple[str, ...]]:
    return _zone(node), tuple(_pod_cidrs(node))


class RangesPublisher:
    """Watches the Nodes, keeps gpuyard-system/gpuyard-network-ranges up to date."""

    def __init__(self, client: Any, interval: float = 3.0) -> None:
        self.client = client
        self.interval = interval
        self.nodes = Informer(client, NODES, name="network-ranges-nodes")
        self._dirty = asyncio.Event()
        self._written: dict[str, str] | None = None
        self.writes = 0
        self.conflicts = 0

    def _changed(self, *_: Any) -> None:
        self._dirty.set()

    def _updated(self, old: Obj, new: Obj) -> None:
        if _key(old) != _key(new):  # a status update: nothing of ours changed
            self._dirty.set()

    async def publish(self) -> bool:
        """Write the content if it differs from what is there; True if it wrote."""
        data = content(self.nodes.list())
        if data == self._written:
            return False
        for _ in range(5):
            cur = await self.client.get_or_none(CONFIGMAPS, NAME, NAMESPACE)
            if cur is None:
                obj = {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {
                        "name": NAME,
                        "namespace": NAMESPACE,
                        "labels": {"app.kubernetes.io/part-of": "gpuyard"},
                    },
                    "data": data,
                }
                try:
                    await self.client.create(obj)
                except AlreadyExists:
                    self.conflicts += 1
                    continue
            elif (cur.get("data") or {}) == data:
                self._written = data
                return False
            else:
                # the resourceVersion read stays in the object: a write in between is a 409
                try:
                    await self.client.replace({**cur, "data": data})
                except Conflict:
                    self.conflicts += 1
                    continue
            self._written = data
            self.writes += 1
            log.info(
                "network ranges: %d zone(s), %d bytes", len(json.loads(data["zones"])), _size(data)
            )
            return True
        raise RuntimeError(f"{NAMESPACE}/{NAME}: conflicts on every try")

    async def run(self, stop: asyncio.Event) -> None:
        self.nodes.add_handler(self._changed, self._updated, self._changed)
        self.nodes.start()
        try:
            await self.nodes.wait_synced()
            self._dirty.set()
            while await woken(self._dirty, stop):
                self._dirty.clear()
                try:
                    await self.publish()
                except (ApiError, OSError, RuntimeError) as exc:
                    log.warning("network ranges: write failed, retrying: %s", exc)
                    self._dirty.set()
                # at most one write per interval: a burst of node changes is one write
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.interval)
        finally:
            await self.nodes.stop()


def _size(data: Mapping[str, str]) -> int:
    return sum(len(k) + len(v) for k, v in data.items())


async def run(client: Any, stop: asyncio.Event) -> None:
    """`gpuyard controllers` entry point."""
    await RangesPublisher(client).run(stop)
