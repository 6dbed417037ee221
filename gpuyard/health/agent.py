"""The node health agent: runs the passive checks on a node and reports verdicts.

`NodeChecker` holds one node's sources (GPU, disk, network, kernel log), its Xid
tracker and its health state; `tick(now)` runs the checks and returns the verdict
(conditions to write and Events, only on change). It is driven two ways:

- `run_host_agent`: the DaemonSet on a real cluster (`gpuyard health agent --node
  NAME`): reads the real host (NVML, statvfs, /proc/mounts, TCP peers,
  /sys/class/infiniband, the kernel log), reads only its own Node by name, and
  writes only when something changed.
- `SimAgents`: the embedded cluster's agents, one task in the `gpuyard up` process
  iterating over every simulated node's host directory DATA/hosts/<node>/ (kern.log,
  gpus.json, disk.json, net.json). A host's files are parsed again only when they
  changed (size and mtime), so an idle cluster of 7,500 nodes costs little.

Agents never taint: they write the GPUHealthy / DiskHealthy / NetworkHealthy
conditions and Events; the health controller turns conditions into taints through the
cluster-wide brake (see controller.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from gpuyard.health.checks import Finding, Severity
from gpuyard.health.checks.disk import DiskSource, HostDiskSource, JsonDiskSource, Mount, check_disk
from gpuyard.health.checks.gpu import GpuSource, JsonGpuSource, NvmlGpuSource, check_gpus
from gpuyard.health.checks.kernel import KernelLogTail, XidTracker
from gpuyard.health.checks.net import HostNetSource, JsonNetSource, NetSource, check_network
from gpuyard.health.verdict import (
    CONDITION_TYPES,
    FATAL_PREFIX,
    AreaState,
    Condition,
    Event,
    NodeHealth,
    Verdict,
    VerdictConfig,
    decide,
)

log = logging.getLogger("gpuyard.health.agent")


@dataclass(frozen=True)
class AgentConfig:
    interval_s: float = 10.0
    expected_gpus: int | None = None  # None: the node's nvidia.com/gpu capacity / all seen
    min_free_fraction: float = 0.05
    min_free_bytes: int = 50 << 30
    max_unreachable_fraction: float = 0.0
    xid_window_s: float = 3600.0
    xid_threshold: int = 50
    verdict: VerdictConfig = field(default_factory=VerdictConfig)


class Writer(Protocol):
    """Where verdicts go (the API through gpuyard.kube, or a recorder in tests)."""

    async def write_conditions(self, node: str, changed: list[Condition]) -> bool | None:
        """Write the changed conditions; False if the node does not exist (yet)."""
        ...

    async def event(self, node: str, ev: Event) -> None: ...


def health_from_node(node: dict[str, Any], now: float) -> NodeHealth:
    """Seed an agent's state from the conditions already on the Node, so a restarted
    agent does not write what is already there (and keeps a fault it reported)."""
    conds = {c.get("type"): c for c in (node.get("status") or {}).get("conditions") or []}
    areas: dict[str, AreaState] = {}
    for area, ctype in CONDITION_TYPES.items():
        c = conds.get(ctype)
        if not c:
            areas[area] = AreaState()
            continue
        status = str(c.get("status", "Unknown"))
        msg = str(c.get("message", ""))
        sev = Severity.OK
        if status == "False":
            sev = Severity.FATAL if msg.startswith(FATAL_PREFIX) else Severity.UNHEALTHY
        areas[area] = AreaState(
            status=status,
            severity=sev,
            reason=str(c.get("reason", "")),
            message=msg,
            last_bad=now if status == "False" else None,
            reported=True,
        )
    return NodeHealth(areas)


class _Cached:
    """Re-reads a file-backed source only when the file's (mtime, size) changed."""

    def __init__(self, path: Path, read: Callable[[], Any], empty: Any) -> None:
        self.path, self._read, self._empty = path, read, empty
        self._sig: tuple[int, int] | None = None
        self.value: Any = empty
        self.error = ""

    def get(self) -> Any:
        try:
            st = os.stat(self.path)
        except OSError:
            self._sig, self.value, self.error = None, self._empty, f"{self.path} missing"
            return self.value
        sig = (st.st_mtime_ns, st.st_size)
        if sig != self._sig:
            try:
                self.value, self.error = self._read(), ""
            except (OSError, ValueError) as exc:  # half-written or bad file: keep last value
                self.error = f"{self.path.name}: {exc}"
                return self.value
            self._sig = sig
        return self.value


class NodeChecker:
    """One node's checks and health state."""

    def __init__(
        self,
        node: str,
        gpu: GpuSource | None,
        disk: DiskSource | None,
        net: NetSource | None,
        kern_log: str | Path | None,
        cfg: AgentConfig = AgentConfig(),
        tail_from_end: bool = True,
    ) -> None:
        self.node = node
        self.gpu, self.disk, self.net = gpu, disk, net
        self.cfg = cfg
        self.tail = KernelLogTail(kern_log, from_end=tail_from_end) if kern_log else None
        self.xids = XidTracker(app_window_s=cfg.xid_window_s, app_threshold=cfg.xid_threshold)
        self.health = NodeHealth()
        self.expected_gpus = cfg.expected_gpus
        self._said_unavailable: set[str] = set()
        self.last_findings: list[Finding] = []
        self.host_dir: Path | None = None  # simulated hosts: boot and down markers live here
        self._boot: int | None = None
        self.last_write = float("-inf")

    def seed(self, node_obj: dict[str, Any], now: float) -> None:
        self.health = health_from_node(node_obj, now)
        if self.expected_gpus is None:
            cap = ((node_obj.get("status") or {}).get("capacity") or {}).get("nvidia.com/gpu")
            if cap is not None:
                try:
                    self.expected_gpus = int(cap)
                except ValueError:
                    pass
        # A fatal or reset-class Xid the node already carries stays until the GPU is reset.
        gpu = self.health.areas.get("gpu")
        if gpu and gpu.status == "False" and gpu.reason.lstrip("S").startswith("Xid"):
            msg = gpu.message.removeprefix(FATAL_PREFIX)
            self.xids.restored = [Finding("gpu", gpu.severity, gpu.reason, msg)]

    def _gpu_findings(self) -> tuple[list[Finding], str | None]:
        if self.gpu is None:
            return [], None
        ok, why = self.gpu.available()
        if not ok:
            if why not in self._said_unavailable:
                self._said_unavailable.add(why)
                log.warning("%s: %s; checking the rest", self.node, why)
            return [], why
        gpus = self.gpu.read()
        if self.expected_gpus is None and gpus:
            self.expected_gpus = len(gpus)
        return check_gpus(gpus, self.expected_gpus), None

    def _disk_mounts(self) -> list[Mount]:
        return self.disk.read() if self.disk is not None else []

    async def check(self, now: float) -> tuple[list[Finding], dict[str, str]]:
        unavailable: dict[str, str] = {}
        findings, why = self._gpu_findings()
        if why:
            unavailable["gpu"] = why
        if self.host_dir is not None:
            try:
                boot = os.stat(self.host_dir / "boot").st_mtime_ns
            except OSError:
                boot = None
            if boot is not None and self._boot is not None and boot != self._boot:
                self.xids.clear()  # the simulated host rebooted: its GPUs were reset
            self._boot = boot
        if self.tail is not None:
            lines = self.tail.read_new()
            if self.tail.rotated:  # new boot: GPUs were reset
                self.xids.clear()
            self.xids.observe_lines(lines, now)
        findings += self.xids.findings(now)
        findings += check_disk(
            self._disk_mounts(), self.cfg.min_free_fraction, self.cfg.min_free_bytes
        )
        if self.net is not None:
            status = await self.net.read()
            findings += check_network(status, self.cfg.max_unreachable_fraction)
        self.last_findings = findings
        return findings, unavailable

    def drifted(self, node_obj: dict[str, Any]) -> bool:
        """Whether the Node's health conditions differ from what this agent reported
        (someone replaced the condition list, or marked it Unknown)."""
        conds = {c.get("type"): c for c in (node_obj.get("status") or {}).get("conditions") or []}
        for area, st in self.health.areas.items():
            if not st.reported:
                continue
            c = conds.get(CONDITION_TYPES[area])
            if c is None or (c.get("status"), c.get("reason", ""), c.get("message", "")) != (
                st.status,
                st.reason,
                st.message,
            ):
                return True
        return False

    def unreport(self) -> None:
        """Forget that the conditions were written (so the next tick writes them)."""
        self.health = NodeHealth(
            {a: replace(s, reported=False) for a, s in self.health.areas.items()}
        )

    async def tick(self, now: float) -> Verdict:
        findings, unavailable = await self.check(now)
        self.health, verdict = decide(findings, self.health, now, self.cfg.verdict, unavailable)
        return verdict


class _CachedGpu:
    def __init__(self, path: Path) -> None:
        self.src = JsonGpuSource(path)
        self.cache = _Cached(path, self.src.read, [])

    def available(self) -> tuple[bool, str]:
        return self.src.available()

    def read(self) -> list[Any]:
        return list(self.cache.get())


class _CachedDisk:
    def __init__(self, path: Path) -> None:
        self.cache = _Cached(path, JsonDiskSource(path).read, [])

    def read(self) -> list[Mount]:
        return list(self.cache.get())


class _CachedNet:
    def __init__(self, path: Path) -> None:
        from gpuyard.health.checks.net import NetStatus

        self.cache = _Cached(path, JsonNetSource(path).read_sync, NetStatus({}, []))

    async def read(self) -> Any:
        return self.cache.get()


def sim_checker(node: str, host_dir: str | Path, cfg: AgentConfig = AgentConfig()) -> NodeChecker:
    """A checker reading a simulated host's directory through the double sources."""
    d = Path(host_dir)
    ch = NodeChecker(
        node,
        _CachedGpu(d / "gpus.json"),
        _CachedDisk(d / "disk.json"),
        _CachedNet(d / "net.json"),
        d / "kern.log",
        cfg,
    )
    ch.host_dir = d
    return ch


def host_checker(
    node: str,
    cfg: AgentConfig = AgentConfig(),
    disk_paths: list[str] | None = None,
    peers: list[str] | None = None,
    ib_root: str = "/sys/class/infiniband",
    kern_log: str | None = "/var/log/kern.log",
) -> NodeChecker:
    """A checker reading the real host."""
    return NodeChecker(
        node,
        NvmlGpuSource(),
        HostDiskSource(disk_paths or ["/"]),
        HostNetSource(peers or [], ib_root=ib_root),
        kern_log if kern_log and Path(kern_log).exists() else None,
        cfg,
    )


# --------------------------------------------------------------------- the drivers


@dataclass
class AgentStats:
    ticks: int = 0
    writes: int = 0
    events: int = 0
    drift: int = 0  # times a node's conditions were found changed by someone else
    cpu_s: float = 0.0


async def apply_verdict(
    writer: Writer, checker: NodeChecker, verdict: Verdict, stats: AgentStats
) -> None:
    node = checker.node
    if verdict.changed:
        ok = await writer.write_conditions(node, verdict.changed)
        stats.writes += 1
        checker.last_write = time.monotonic()
        if ok is False:  # no such Node yet: report again on the next check
            checker.unreport()
            return
    for ev in verdict.events:
        await writer.event(node, ev)
        stats.events += 1


def _rv(obj: dict[str, Any]) -> int | None:
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion", ""))
    except (TypeError, ValueError):
        return None


class SimAgents:
    """Every simulated node's agent as one task over DATA/hosts/<node>/."""

    def __init__(
        self,
        hosts_dir: str | Path,
        writer: Writer,
        cfg: AgentConfig = AgentConfig(),
        clock: Callable[[], float] = time.time,
        seed: Callable[[], Awaitable[dict[str, dict[str, Any]]]] | None = None,
        node_view: Callable[[str], dict[str, Any] | None] | None = None,
        drift_grace_s: float = 30.0,
        batch: int = 200,
    ) -> None:
        self.hosts_dir = Path(hosts_dir)
        self.node_view = node_view  # the latest Node objects (e.g. a shared watch cache)
        self.drift_grace_s = drift_grace_s
        # Nodes checked between yields to the event loop. In a busy process each yield
        # waits behind other tasks, which stretches a pass well beyond its CPU time.
        self.batch = batch
        self.writer = writer
        self.cfg = cfg
        self.clock = clock
        self.seed = seed
        self.checkers: dict[str, NodeChecker] = {}
        self.stats = AgentStats()
        self._seeded: dict[str, dict[str, Any]] | None = None

    def discover(self) -> None:
        try:
            names = [p.name for p in self.hosts_dir.iterdir() if p.is_dir()]
        except OSError:
            return
        # A host the autoscaler removed has no node any more, and no agent.
        names = [n for n in names if not (self.hosts_dir / n / "removed").exists()]
        for name in names:
            if name not in self.checkers:
                ch = sim_checker(name, self.hosts_dir / name, self.cfg)
                node = (self._seeded or {}).get(name)
                if node is not None:
                    ch.seed(node, self.clock())
                self.checkers[name] = ch
        for gone in set(self.checkers) - set(names):
            del self.checkers[gone]

    async def tick_all(self, batch: int | None = None) -> None:
        """One pass over all nodes; yields to the loop between batches."""
        batch = batch or self.batch
        if self._seeded is None and self.seed is not None:
            try:
                self._seeded = await self.seed()
            except Exception as exc:  # the API may not be up yet: try next pass
                log.warning("health agents: cannot read nodes yet: %s", exc)
                return
        self.discover()
        t_cpu = time.process_time()
        for i, (name, ch) in enumerate(list(self.checkers.items())):
            if ch.host_dir is not None and (ch.host_dir / "down").exists():
                continue  # the simulated node is down: so is its agent
            try:
                self._check_drift(ch)
                verdict = await ch.tick(self.clock())
                self.stats.ticks += 1
                await apply_verdict(self.writer, ch, verdict, self.stats)
            except Exception as exc:  # one node's failure must not stop the others
                log.warning("health agent %s: %s", name, exc)
            if i % batch == batch - 1:
                await asyncio.sleep(0)
        self.stats.cpu_s += time.process_time() - t_cpu

    def _check_drift(self, ch: NodeChecker) -> None:
        if self.node_view is None:
            return
        node = self.node_view(ch.node)
        if node is None:
            return
        # Compare only with a view at least as new as our last write; without
        # resourceVersions to go by, give the watch a grace period instead.
        written = getattr(self.writer, "last_rv", {}).get(ch.node)
        seen = _rv(node)
        if written is not None and seen is not None:
            if seen < written:
                return
        elif time.monotonic() - ch.last_write < self.drift_grace_s:
            return
        if ch.drifted(node):
            self.stats.drift += 1
            ch.unreport()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            started = time.monotonic()
            await self.tick_all()
            left = self.cfg.interval_s - (time.monotonic() - started)
            try:
                await asyncio.wait_for(stop.wait(), max(left, 0.05))
            except TimeoutError:
                pass


async def run_host_agent(
    checker: NodeChecker,
    writer: Writer,
    get_node: Callable[[], Awaitable[dict[str, Any]]],
    stop: asyncio.Event,
    cfg: AgentConfig = AgentConfig(),
    resync_s: float = 300.0,
) -> AgentStats:
    """The DaemonSet loop on a real host: seed from its own Node, then check every
    interval and write only on change."""
    stats = AgentStats()
    checker.seed(await get_node(), time.time())
    last_get = time.monotonic()
    while not stop.is_set():
        try:
            if time.monotonic() - last_get > resync_s:  # rarely: did someone drop ours?
                last_get = time.monotonic()
                if checker.drifted(await get_node()):
                    stats.drift += 1
                    checker.unreport()
            verdict = await checker.tick(time.time())
            stats.ticks += 1
            await apply_verdict(writer, checker, verdict, stats)
        except Exception as exc:
            log.warning("health agent %s: %s", checker.node, exc)
        try:
            await asyncio.wait_for(stop.wait(), cfg.interval_s)
        except TimeoutError:
            pass
    return stats


def with_interval(cfg: AgentConfig, interval_s: float) -> AgentConfig:
    return replace(cfg, interval_s=interval_s)
