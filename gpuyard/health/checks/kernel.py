"""Kernel-log checks: Xid/SXid events tailed from the kernel log.

`KernelLogTail` reads a log file incrementally, remembering its offset (a file that
shrank was rotated or the host rebooted: it starts again from the top and says so).
`XidTracker` keeps what matters between reads: application-class Xids in a sliding
window (flagged only above a rate), and reset-required / fatal Xids latched until the
GPU is reset (the host reboots or a person clears them). Both are pure apart from the
file read; time is passed in.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from gpuyard.health.checks import Finding, Severity
from gpuyard.health.xid import XidClass, XidEvent, parse_line


class KernelLogTail:
    """New complete lines of a log file since the last call."""

    def __init__(self, path: str | Path, from_end: bool = False, max_read: int = 4 << 20) -> None:
        self.path = Path(path)
        self.offset = 0
        self.inode: int | None = None
        self.max_read = max_read
        self.rotated = False  # set by read_new() when the file was replaced or truncated
        if from_end:
            try:
                st = self.path.stat()
                self.offset, self.inode = st.st_size, st.st_ino
            except OSError:
                pass

    def read_new(self) -> list[str]:
        self.rotated = False
        try:
            st = os.stat(self.path)
        except OSError:
            return []
        if (self.inode is not None and st.st_ino != self.inode) or st.st_size < self.offset:
            self.offset, self.rotated = 0, True
        self.inode = st.st_ino
        if st.st_size == self.offset:
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read(self.max_read)
        end = data.rfind(b"\n")
        if end < 0:
            return []  # a partial line: wait for its end
        self.offset += end + 1
        return data[: end + 1].decode("utf-8", "replace").splitlines()


@dataclass
class XidTracker:
    app_window_s: float = 3600.0
    app_threshold: int = 50  # application-class Xids per window before the node is flagged
    app_times: deque[float] = field(default_factory=deque)
    latched: dict[tuple[str, int, bool], XidEvent] = field(default_factory=dict)
    total: int = 0
    # Faults reported before a restart (from the node's condition), kept until a reset.
    restored: list[Finding] = field(default_factory=list)

    def observe(self, events: list[XidEvent], now: float) -> None:
        for ev in events:
            self.total += 1
            if ev.cls in (XidClass.RESET, XidClass.FATAL):
                self.latched[(ev.pci, ev.code, ev.sxid)] = ev
            else:
                self.app_times.append(now)

    def observe_lines(self, lines: list[str], now: float) -> list[XidEvent]:
        events = [ev for ev in (parse_line(line) for line in lines) if ev is not None]
        self.observe(events, now)
        return events

    def clear(self) -> None:
        """The GPUs were reset (host rebooted, or a person said so)."""
        self.latched.clear()
        self.app_times.clear()
        self.restored.clear()

    def findings(self, now: float) -> list[Finding]:
        while self.app_times and self.app_times[0] <= now - self.app_window_s:
            self.app_times.popleft()
        out: list[Finding] = list(self.restored) if not self.latched else []
        for ev in self.latched.values():
            fatal = ev.cls == XidClass.FATAL
            out.append(
                Finding(
                    "gpu",
                    Severity.FATAL if fatal else Severity.UNHEALTHY,
                    f"{'SXid' if ev.sxid else 'Xid'}{ev.code}",
                    f"{ev.label} on {ev.pci}: {ev.summary}",
                )
            )
        if len(self.app_times) > self.app_threshold:
            out.append(
                Finding(
                    "gpu",
                    Severity.UNHEALTHY,
                    "XidHighRate",
                    f"{len(self.app_times)} application Xids in {self.app_window_s:.0f}s",
                )
            )
        elif self.app_times:
            out.append(
                Finding(
                    "gpu",
                    Severity.WARN,
                    "XidApp",
                    f"{len(self.app_times)} application Xids in {self.app_window_s:.0f}s",
                )
            )
        return out
