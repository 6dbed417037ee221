"""Disk checks: free space under a threshold and filesystems mounted read-only.

`HostDiskSource` reads the real host (os.statvfs on the configured mount points,
read-only flags from /proc/mounts); `JsonDiskSource` reads a simulated host's
disk.json. `check_disk` is pure.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from gpuyard.health.checks import Finding, Severity


@dataclass(frozen=True)
class Mount:
    path: str
    total: int  # bytes
    free: int  # bytes available to unprivileged users
    read_only: bool = False


class DiskSource(Protocol):
    def read(self) -> list[Mount]: ...


def check_disk(
    mounts: list[Mount], min_free_fraction: float = 0.05, min_free_bytes: int = 50 << 30
) -> list[Finding]:
    """A mount is full when its free space is under both the fraction and the floor
    (a 100 TB volume with 2% free is not full); read-only mounts are unhealthy."""
    out: list[Finding] = []
    for m in mounts:
        if m.read_only:
            out.append(
                Finding("disk", Severity.UNHEALTHY, "DiskReadOnly", f"{m.path} is read-only")
            )
        if m.total > 0:
            frac = m.free / m.total
            if frac < min_free_fraction and m.free < max(min_free_bytes, 0):
                out.append(
                    Finding(
                        "disk",
                        Severity.UNHEALTHY,
                        "DiskFull",
                        f"{m.path}: {m.free / 2**30:.1f} GiB free of {m.total / 2**30:.1f} GiB "
                        f"({frac:.1%})",
                    )
                )
    return out


def read_only_mounts(proc_mounts: str) -> dict[str, bool]:
    """mount point -> read-only, from the text of /proc/mounts (last mount wins)."""
    out: dict[str, bool] = {}
    for line in proc_mounts.splitlines():
        parts = line.split()
        if len(parts) >= 4:
            point = parts[1].replace("\\040", " ")
            out[point] = "ro" in parts[3].split(",")
    return out


def _mount_point_of(path: str, points: dict[str, bool]) -> str:
    p = os.path.abspath(path)
    best = "/"
    for mp in points:
        if (p == mp or p.startswith(mp.rstrip("/") + "/")) and len(mp) > len(best):
            best = mp
    return best


def read_only_superblocks(mountinfo: str) -> dict[str, bool]:
    """mount point -> its filesystem is read-only, from /proc/self/mountinfo's super
    options (the field after " - fstype source"). A filesystem the kernel remounted
    read-only after errors is "ro" there; a read-only bind mount of a writable one (how
    the agent's DaemonSet mounts the host's /) is "ro" only in the per-mount options,
    which are not read: that is not a disk fault."""
    out: dict[str, bool] = {}
    for line in mountinfo.splitlines():
        head, sep, tail = line.partition(" - ")
        parts, rest = head.split(), tail.split()
        if sep and len(parts) >= 5 and len(rest) >= 3:
            point = parts[4].replace("\\040", " ")
            out[point] = "ro" in rest[2].split(",")
    return out


class HostDiskSource:
    def __init__(
        self,
        paths: list[str] | None = None,
        proc_mounts: str = "/proc/mounts",
        mountinfo: str = "/proc/self/mountinfo",
    ) -> None:
        self.paths = paths or ["/"]
        self.proc_mounts = proc_mounts
        self.mountinfo = mountinfo

    def read(self) -> list[Mount]:
        superblocks = True
        try:
            points = read_only_superblocks(Path(self.mountinfo).read_text())
        except OSError:
            points = {}
        if not points:
            superblocks = False
            try:
                points = read_only_mounts(Path(self.proc_mounts).read_text())
            except OSError:
                points = {}
        out = []
        for path in self.paths:
            st = os.statvfs(path)
            ro = points.get(_mount_point_of(path, points), False) if points else False
            if not superblocks:  # statvfs sees the mount's flag, not the filesystem's
                ro = ro or bool(st.f_flag & os.ST_RDONLY)
            out.append(Mount(path, st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize, ro))
        return out


def mounts_from_json(data: Any) -> list[Mount]:
    items = data.get("mounts", []) if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise ValueError("disk.json: expected a list of mounts or {'mounts': [...]}")
    out = []
    for d in items:
        total = int(d.get("total", d.get("total_bytes", d.get("size", 0))) or 0)
        free = d.get("free", d.get("free_bytes", d.get("available")))
        if free is None and "used" in d:
            free = total - int(d["used"])
        out.append(
            Mount(
                str(d.get("path", d.get("mount", "/"))),
                total,
                int(free or 0),
                bool(d.get("read_only", d.get("readonly", d.get("ro", False)))),
            )
        )
    return out


class JsonDiskSource:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def read(self) -> list[Mount]:
        if not self.path.exists():
            return []
        return mounts_from_json(json.loads(self.path.read_bytes()))
