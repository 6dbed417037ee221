"""NVIDIA Xid and NVSwitch SXid kernel-log lines: parsing and classification.

The NVIDIA driver reports GPU faults to the kernel log as lines such as

    [ 1234.567890] NVRM: Xid (PCI:0000:3b:00): 79, pid=1234, name=python, GPU has fallen off the bus.
    Nov 29 00:00:01 gpu-17 kernel: NVRM: Xid (PCI:0000:3b:00): 48, pid='<unknown>', name=<unknown>, DBE (double bit error) ECC error ...
    nvidia-nvswitch0: SXid (PCI:0000:05:00.0): 12028, Non-fatal, Link 32 egress non-posted PRIV error

with or without a dmesg timestamp, a `dmesg -T` date, or a syslog / journald prefix.
`parse_line` finds the record in any of them; `classify` maps the code to what a node
operator does about it, after NVIDIA's published Xid catalog:

- APP: caused by the application or recovered by restarting it (13, 31, 43, 45, ...);
  counted, and a node is flagged only when they come at a high rate.
- RESET: the GPU needs a reset before it can be trusted again (row remap pending,
  NVLink error, GSP timeouts, ...): the node is taken out of scheduling (NoSchedule).
- FATAL: the GPU is gone or its memory is corrupt (79 fallen off the bus, 48/95
  uncorrectable ECC, 64 row remap failure, ...): running work is evicted (NoExecute).

Codes missing from the table are UNKNOWN and treated like APP (counted, flagged on a
high rate): a driver that invents a new code must not take the fleet down.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum


class XidClass(StrEnum):
    APP = "app"
    RESET = "reset"
    FATAL = "fatal"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class XidInfo:
    code: int
    cls: XidClass
    summary: str


def _t(cls: XidClass, rows: dict[int, str]) -> dict[int, XidInfo]:
    return {code: XidInfo(code, cls, text) for code, text in rows.items()}


# Our own summary of the published meanings (facts, not the catalog's text).
XID_TABLE: dict[int, XidInfo] = {
    **_t(
        XidClass.APP,
        {
            8: "GPU stopped processing (channel idle timeout)",
            12: "driver error handling a GPU exception",
            13: "graphics engine exception (often an out-of-range access by the app)",
            31: "GPU memory page fault (usually an illegal address in the app)",
            32: "invalid or corrupted push buffer stream",
            42: "video processor exception",
            43: "GPU stopped processing: the app hit a fault and its channel was reset",
            45: "preemptive cleanup after an earlier error or a killed app",
            68: "video decoder exception",
            69: "graphics engine class error",
            109: "context switch timeout",
        },
    ),
    **_t(
        XidClass.RESET,
        {
            38: "driver firmware error",
            46: "GPU stopped processing and could not recover",
            56: "display engine error",
            57: "error programming video memory interface",
            61: "internal micro-controller breakpoint or warning",
            62: "internal micro-controller halt",
            63: "row remapping or page retirement event: reset the GPU to apply it",
            65: "video processor exception needing a reset",
            74: "NVLink error",
            92: "high single-bit ECC error rate",
            94: "contained uncorrectable ECC error: reset the GPU to remap the row",
            119: "GSP RPC timeout",
            120: "GSP firmware error",
            121: "C2C link error",
            122: "SPI PMU RPC read failure",
            123: "SPI PMU RPC write failure",
            137: "NVLink FLA privilege error",
            144: "NVLink SAW error",
            145: "NVLink RLW error",
            146: "NVLink TLW error",
            147: "NVLink TREX error",
            148: "NVLink NVLPW control error",
            149: "NVLink NETIR error",
            150: "NVLink MSE error",
        },
    ),
    **_t(
        XidClass.FATAL,
        {
            48: "double-bit (uncorrectable) ECC error",
            64: "row remapping failure: memory is bad",
            79: "GPU has fallen off the bus",
            95: "uncontained uncorrectable ECC error",
            140: "unrecovered ECC error",
            143: "GPU initialization failure",
        },
    ),
}

# Xid 154 carries the driver's own recovery verdict in its message.
_RECOVERY_ACTION = re.compile(r"to\s+0x([0-9a-fA-F]+)")
_RECOVERY_CLASS = {0: XidClass.APP, 1: XidClass.RESET, 2: XidClass.FATAL, 3: XidClass.RESET}


def classify(code: int, message: str = "") -> XidInfo:
    """The class of Xid `code` (the message matters only for 154, recovery action)."""
    if code == 154:
        m = _RECOVERY_ACTION.search(message)
        action = int(m.group(1), 16) if m else 1
        cls = _RECOVERY_CLASS.get(action, XidClass.RESET)
        return XidInfo(154, cls, f"GPU recovery action changed ({message.strip()[:80]})")
    info = XID_TABLE.get(code)
    if info is None:
        return XidInfo(code, XidClass.UNKNOWN, "Xid not in gpuyard's table")
    return info


def classify_sxid(code: int, message: str) -> XidInfo:
    """NVSwitch SXids carry their severity in the message: "Fatal" needs the switch
    (and so the node's fabric) reset; "Non-fatal" ones are counted."""
    head = message.strip().lower()
    if head.startswith("fatal") or ", fatal" in head[:40]:
        return XidInfo(code, XidClass.FATAL, "NVSwitch fatal error")
    if head.startswith("non-fatal") or head.startswith("nonfatal"):
        return XidInfo(code, XidClass.APP, "NVSwitch non-fatal error")
    return XidInfo(code, XidClass.UNKNOWN, "NVSwitch error of unstated severity")


@dataclass(frozen=True)
class XidEvent:
    """One Xid or SXid record found in a kernel-log line."""

    code: int
    pci: str  # "0000:3b:00" as logged
    message: str  # the free text after the code (pid/name fields removed)
    cls: XidClass
    summary: str
    sxid: bool = False
    switch: int | None = None  # nvswitch index for SXid
    pid: str | None = None
    process: str | None = None
    timestamp: str | None = None  # as found in the line's prefix, if any

    @property
    def label(self) -> str:
        return f"{'SXid' if self.sxid else 'Xid'} {self.code}"


_XID = re.compile(
    r"NVRM: Xid \((?:PCI:)?(?P<pci>[0-9A-Fa-f:.]+)\):\s*(?P<code>\d+)\s*,?\s*(?P<rest>.*)$"
)
_SXID = re.compile(
    r"nvidia-nvswitch(?P<sw>\d+): SXid \((?:PCI:)?(?P<pci>[0-9A-Fa-f:.]+)\):\s*(?P<code>\d+)"
    r"\s*,?\s*(?P<rest>.*)$"
)
_PID = re.compile(r"^pid=(?P<pid>'[^']*'|\S*?)\s*(?:,\s*|$)")
_NAME = re.compile(r"^name=(?P<name>.*?)(?:,\s*|$)")
_TS_PREFIXES = (
    re.compile(r"^\[\s*(?P<ts>\d+\.\d+)\]"),  # dmesg: seconds since boot
    re.compile(r"^\[(?P<ts>[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d [\d:]{8} \d{4})\]"),  # dmesg -T
    re.compile(r"^(?P<ts>\d{4}-\d{2}-\d{2}T[\d:.]+(?:Z|[+-]\d{2}:?\d{2})?)"),  # ISO / journald
    re.compile(r"^(?P<ts>[A-Z][a-z]{2} [ \d]\d [\d:]{8})"),  # syslog
)


def _timestamp(line: str) -> str | None:
    for rx in _TS_PREFIXES:
        m = rx.match(line)
        if m:
            return m.group("ts")
    return None


def parse_line(line: str) -> XidEvent | None:
    """The Xid/SXid record in one kernel-log line, or None if it holds none."""
    if "Xid" not in line:
        return None
    line = line.rstrip("\r\n")
    m = _XID.search(line)
    if m:
        rest = m.group("rest").strip()
        pid = name = None
        pm = _PID.match(rest)
        if pm:
            pid, rest = pm.group("pid").strip("'"), rest[pm.end() :]
            nm = _NAME.match(rest)
            if nm:
                name, rest = nm.group("name"), rest[nm.end() :]
        code = int(m.group("code"))
        info = classify(code, rest)
        return XidEvent(
            code=code,
            pci=m.group("pci"),
            message=rest.strip(),
            cls=info.cls,
            summary=info.summary,
            pid=pid,
            process=name,
            timestamp=_timestamp(line),
        )
    m = _SXID.search(line)
    if m:
        code = int(m.group("code"))
        rest = m.group("rest").strip()
        info = classify_sxid(code, rest)
        return XidEvent(
            code=code,
            pci=m.group("pci"),
            message=rest,
            cls=info.cls,
            summary=info.summary,
            sxid=True,
            switch=int(m.group("sw")),
            timestamp=_timestamp(line),
        )
    return None


def parse_lines(text: str) -> list[XidEvent]:
    out = []
    for line in text.splitlines():
        ev = parse_line(line)
        if ev is not None:
            out.append(ev)
    return out


def format_xid_line(pci: str, code: int, message: str, uptime: float = 0.0) -> str:
    """A kernel-log line in the driver's format (for tests and simulated hosts)."""
    return f"[{uptime:12.6f}] NVRM: Xid (PCI:{pci}): {code}, pid='<unknown>', name=<unknown>, {message}"
