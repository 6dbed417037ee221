"""Durations written by people: `30d`, `4h`, `20m`, `90s`, `1.5h`, `2h30m`. Used by
the twin's failure specs and by the runtime annotation pods carry
(`gpuyard.io/expected-runtime`, read by the scheduler's reservations)."""

from __future__ import annotations

import re

UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
MAX_SECONDS = float(2**32)  # about 136 years
_PART = r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([a-z]*)"
_WHOLE = re.compile(rf"\s*(?:{_PART}\s*)+")
_PARTS = re.compile(_PART)


def parse_duration(text: str) -> float:
    """A finite number of seconds, at most MAX_SECONDS; every number needs its unit
    (s, m, h or d: a bare number could mean any of them)."""
    parts = _PARTS.findall(text) if _WHOLE.fullmatch(text) else []
    if not parts or any(unit not in UNITS for _, unit in parts):
        raise ValueError(
            f"not a duration: {text!r} (a number and a unit: s, m, h or d; e.g. 30d, 4h, 20m, "
            "90s, 2h30m)"
        )
    seconds = sum(float(num) * UNITS[unit] for num, unit in parts)
    if not seconds <= MAX_SECONDS:  # also NaN and inf
        raise ValueError(f"duration {text!r} is longer than {MAX_SECONDS:.0f} s")
    return seconds
