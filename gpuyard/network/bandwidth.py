"""Bandwidth values of the annotation ``gpuyard.io/internet-egress-bandwidth`` (bits per second)."""

from __future__ import annotations

import re

ANNOTATION = "gpuyard.io/internet-egress-bandwidth"
_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(bit|bps)?\s*$")
LOWEST = 100_000  # 100kbit: below that TCP cannot keep a connection alive through the shaper
HIGHEST = 400 * 10**9  # 400Gbit: the fastest NIC a node has


def parse(value: str) -> int:
    """``2Gbit``, ``500Mbit``, ``1.5G`` -> bits per second; a clear ValueError otherwise."""
    m = _RE.match(value) if isinstance(value, str) else None
    if m is None:
        raise ValueError(
            f"{value!r} is not a bandwidth: write a number and a unit such as 2Gbit, 500Mbit or 100kbit"
        )
    if m.group(3) == "bps":
        raise ValueError(f"{value!r}: write bits per second as bit (2Gbit), not bps")
    bits = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if not LOWEST <= bits <= HIGHEST:
        raise ValueError(f"{value!r}: a bandwidth must lie between 100kbit and 400Gbit")
    return bits
