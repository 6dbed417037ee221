"""CronJob schedules as Kubernetes reads them: five cron fields (minute hour day-of-month
month day-of-week, with names, ranges, steps and lists), the descriptors @yearly,
@annually, @monthly, @weekly, @daily, @midnight and @hourly, and `@every <duration>`
(Go duration units h, m, s, ms, us, ns). A `TZ=` or `CRON_TZ=` prefix is refused: the
zone belongs in spec.timeZone. Field parsing and iteration are croniter's.

`parse(text)` raises ValueError with the reason; `Schedule.latest(after, now)` is the
most recent scheduled time in (after, now], `Schedule.next(now)` the first after now.
Times are timezone-aware datetimes; the schedule is read in their zone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, CroniterError, croniter

DESCRIPTORS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_GO_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_GO_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(h|ms|us|µs|ns|m|s)")


def _go_duration(text: str) -> float:
    parts = _GO_PART.findall(text)
    if not text or "".join(n + u for n, u in parts) != text:
        raise ValueError(f'failed to parse duration @every {text}: time: invalid duration "{text}"')
    return sum(float(n) * _GO_UNITS[u] for n, u in parts)


@dataclass(frozen=True)
class Schedule:
    text: str
    expr: str = ""  # five cron fields; empty for @every
    every_s: float = 0.0  # @every's interval (whole seconds, at least 1)

    def latest(self, after: datetime, now: datetime) -> datetime | None:
        """The most recent scheduled time t with after < t <= now, or None."""
        if now <= after:
            return None
        if self.every_s:
            # @every counts from `after` (the last run, or the CronJob's creation)
            n = int((now - after).total_seconds() // self.every_s)
            return after + timedelta(seconds=n * self.every_s) if n else None
        try:
            start = now.replace(microsecond=0) + timedelta(seconds=1)  # get_prev is strict
            t = croniter(self.expr, start).get_prev(datetime)
        except CroniterBadDateError:
            return None
        t = t.replace(microsecond=0)
        return t if after < t <= now else None

    def next(self, now: datetime, after: datetime | None = None) -> datetime | None:
        """The first scheduled time after `now` (None: never, as "0 0 30 2 *")."""
        if self.every_s:
            base = after or now
            n = int((now - base).total_seconds() // self.every_s) + 1
            return base + timedelta(seconds=n * self.every_s)
        try:
            t: datetime = croniter(self.expr, now).get_next(datetime)
        except CroniterBadDateError:
            return None
        return t


def parse(text: str) -> Schedule:
    s = text.strip()
    if not s:
        raise ValueError("empty spec string")
    head = s.split(None, 1)[0]
    if head.startswith(("TZ=", "CRON_TZ=")):
        raise ValueError("cannot use TZ or CRON_TZ in schedule, use timeZone field instead")
    if s.startswith("@"):
        if s.startswith("@every "):
            secs = _go_duration(s[len("@every ") :].strip())
            return Schedule(text, every_s=max(1.0, float(int(secs))))
        if s not in DESCRIPTORS:
            raise ValueError(f"unrecognized descriptor: {s}")
        return Schedule(text, expr=DESCRIPTORS[s])
    fields = s.split()
    if len(fields) != 5:
        raise ValueError(f"expected exactly 5 fields, found {len(fields)}: [{' '.join(fields)}]")
    try:
        croniter(s)
    except (CroniterError, ValueError, KeyError) as exc:
        raise ValueError(str(exc) or "unparseable schedule") from None
    return Schedule(text, expr=s)


def zone(name: str | None) -> ZoneInfo | None:
    """spec.timeZone's zone (None: the local one); ValueError for an unknown name."""
    if name is None:
        return None
    if not name or name != name.strip() or name.startswith("/") or ".." in name:
        raise ValueError(f"unknown time zone {name}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name}") from None
