"""Health checks: pure functions from what a source reports to findings.

Each area (gpu, disk, network) has a source interface with a real implementation
(NVML, statvfs and /proc/mounts, TCP connects and /sys/class/infiniband) and a double
that reads a simulated host's JSON files; the check functions themselves do no I/O.
A `Finding` says what is wrong, how bad it is, and the reason that ends up in the node
condition and the `gpuyard.io/unhealthy` taint.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

AREAS = ("gpu", "disk", "network")


class Severity(IntEnum):
    OK = 0
    WARN = 1  # reported in the condition message, no taint
    UNHEALTHY = 2  # taint NoSchedule
    FATAL = 3  # taint NoExecute


@dataclass(frozen=True)
class Finding:
    area: str  # one of AREAS
    severity: Severity
    reason: str  # CamelCase; also a valid label value (the taint's value)
    message: str

    def to_dict(self) -> dict[str, object]:
        return {
            "area": self.area,
            "severity": self.severity.name.lower(),
            "reason": self.reason,
            "message": self.message,
        }


def worst(findings: list[Finding]) -> Finding | None:
    """The most severe finding (first of equals), or None if all are below WARN."""
    best: Finding | None = None
    for f in findings:
        if f.severity > Severity.OK and (best is None or f.severity > best.severity):
            best = f
    return best
