"""Network checks: reachability of configured peers and InfiniBand port state.

`HostNetSource` reads the real host: a TCP connect with a short timeout to each peer
(host:port) and the port files under /sys/class/infiniband/*/ports/*/ (state such as
"4: ACTIVE", phys_state such as "5: LinkUp"; the root is configurable so tests can use a
fake /sys tree). `JsonNetSource` reads a simulated host's net.json. `check_network`
is pure.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from gpuyard.cliargs import ENDPOINT
from gpuyard.health.checks import Finding, Severity


@dataclass(frozen=True)
class IbPort:
    device: str
    port: str
    state: str  # e.g. "ACTIVE", "DOWN", "INIT"
    phys_state: str  # e.g. "LinkUp", "Disabled", "Polling"


@dataclass
class NetStatus:
    peers: dict[str, bool]  # peer -> reachable
    ib_ports: list[IbPort]


class NetSource(Protocol):
    async def read(self) -> NetStatus: ...


def check_network(status: NetStatus, max_unreachable_fraction: float = 0.0) -> list[Finding]:
    out: list[Finding] = []
    down = sorted(p for p, ok in status.peers.items() if not ok)
    if status.peers and len(down) / len(status.peers) > max_unreachable_fraction:
        shown = ", ".join(down[:5]) + (f" and {len(down) - 5} more" if len(down) > 5 else "")
        out.append(
            Finding(
                "network",
                Severity.UNHEALTHY,
                "PeersUnreachable",
                f"{len(down)} of {len(status.peers)} peers unreachable: {shown}",
            )
        )
    bad = [p for p in status.ib_ports if p.state.upper() != "ACTIVE" or p.phys_state != "LinkUp"]
    if bad:
        out.append(
            Finding(
                "network",
                Severity.UNHEALTHY,
                "InfiniBandDown",
                "; ".join(f"{p.device} port {p.port}: {p.state}/{p.phys_state}" for p in bad[:4]),
            )
        )
    return out


def _sysfs_value(text: str) -> str:
    """ "4: ACTIVE" -> "ACTIVE"."""
    text = text.strip()
    return text.split(":", 1)[1].strip() if ":" in text else text


def read_ib_ports(root: str | Path = "/sys/class/infiniband") -> list[IbPort]:
    base = Path(root)
    out: list[IbPort] = []
    if not base.is_dir():
        return out
    for dev in sorted(base.iterdir()):
        ports = dev / "ports"
        if not ports.is_dir():
            continue
        for port in sorted(ports.iterdir(), key=lambda p: p.name):
            try:
                state = _sysfs_value((port / "state").read_text())
                phys = _sysfs_value((port / "phys_state").read_text())
            except OSError:
                continue
            out.append(IbPort(dev.name, port.name, state, phys))
    return out


def _peer(peer: str) -> tuple[str, int]:
    """HOST and PORT of a peer, as `--peer` takes it; ValueError names a bad one."""
    try:
        return ENDPOINT.split(peer)
    except ValueError as exc:
        raise ValueError(f"peer {exc}") from None


async def tcp_reachable(peer: str, timeout: float = 1.0) -> bool:
    host, port = _peer(peer)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError):
        return False
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    return True


class HostNetSource:
    def __init__(
        self,
        peers: list[str] | None = None,
        ib_root: str | Path = "/sys/class/infiniband",
        timeout: float = 1.0,
    ) -> None:
        self.peers = list(peers or [])
        for p in self.peers:  # bad configuration fails at start, not mid-run
            _peer(p)
        self.ib_root = ib_root
        self.timeout = timeout

    async def read(self) -> NetStatus:
        results = await asyncio.gather(*(tcp_reachable(p, self.timeout) for p in self.peers))
        return NetStatus(dict(zip(self.peers, results, strict=True)), read_ib_ports(self.ib_root))


def net_from_json(data: Any) -> NetStatus:
    if not isinstance(data, dict):
        raise ValueError("net.json: expected an object")
    peers_raw = data.get("peers", {})
    if isinstance(peers_raw, list):
        peers = {
            str(p.get("peer", p.get("name", p.get("address", i)))): bool(p.get("reachable", True))
            for i, p in enumerate(peers_raw)
        }
    else:
        peers = {str(k): bool(v) for k, v in dict(peers_raw).items()}
    if "reachable" in data and isinstance(data["reachable"], bool) and not peers:
        peers = {"network": data["reachable"]}
    if data.get("partitioned"):
        peers = {k: False for k in peers} or {"network": False}
    ports_raw = data.get("infiniband", data.get("ib_ports", data.get("ib", [])))
    ports = []
    for i, p in enumerate(ports_raw or []):
        ports.append(
            IbPort(
                str(p.get("device", p.get("name", f"mlx5_{i}"))),
                str(p.get("port", 1)),
                _sysfs_value(str(p.get("state", "ACTIVE"))),
                _sysfs_value(str(p.get("phys_state", "LinkUp"))),
            )
        )
    return NetStatus(peers, ports)


class JsonNetSource:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    async def read(self) -> NetStatus:
        return self.read_sync()

    def read_sync(self) -> NetStatus:
        if not self.path.exists():
            return NetStatus({}, [])
        return net_from_json(json.loads(self.path.read_bytes()))
