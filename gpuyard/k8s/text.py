"""Text for people: how kubectl prints an object's age."""

from __future__ import annotations

from datetime import UTC, datetime


def age(ts: str | None, now: datetime | None = None) -> str:
    if not ts:
        return "<unknown>"
    try:
        t = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return "<invalid>"
    s = int(((now or datetime.now(UTC)) - t).total_seconds())
    if s < 0:
        s = 0
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = m // 60
    if h < 48:
        return f"{h}h"
    d = h // 24
    return f"{d}d" if d < 365 * 2 else f"{d // 365}y"
