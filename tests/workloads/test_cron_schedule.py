"""CronJob schedules as kube-controller-manager reads them (gpuyard.k8s.cron): the most
recent run due since the last one, the next one, descriptors, @every, time zones, and
the schedules Kubernetes refuses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from gpuyard.k8s import cron

T0 = datetime(2026, 1, 1, 0, 5, 0, tzinfo=UTC)


def test_latest_is_the_most_recent_due_run_only() -> None:
    s = cron.parse("*/5 * * * *")
    # an hour of missed runs: only the most recent starts
    assert s.latest(T0 - timedelta(hours=1), T0 + timedelta(seconds=59)) == T0
    assert s.latest(T0 - timedelta(minutes=3), T0 - timedelta(seconds=1)) is None
    assert s.latest(T0, T0 + timedelta(minutes=4)) is None  # the last run is not due again
    assert s.next(T0) == T0 + timedelta(minutes=5)
    assert s.next(T0 - timedelta(seconds=1)) == T0


def test_descriptors_and_every() -> None:
    assert cron.parse("@hourly").next(T0) == datetime(2026, 1, 1, 1, 0, tzinfo=UTC)
    assert cron.parse("@weekly").next(T0) == datetime(2026, 1, 4, tzinfo=UTC)  # a Sunday
    every = cron.parse("@every 1m30s")
    assert every.latest(T0, T0 + timedelta(minutes=4)) == T0 + timedelta(minutes=3)
    assert every.next(T0 + timedelta(minutes=4), T0) == T0 + timedelta(minutes=4, seconds=30)
    assert cron.parse("0 0 30 2 *").next(T0) is None  # never: February has no 30th


def test_schedule_is_read_in_its_time_zone() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    now = datetime(2026, 7, 1, 6, 0, tzinfo=UTC).astimezone(berlin)  # 08:00 there
    nine = cron.parse("0 9 * * *").next(now)
    assert nine is not None and nine.astimezone(UTC) == datetime(2026, 7, 1, 7, 0, tzinfo=UTC)
    assert cron.zone("Europe/Berlin") == berlin and cron.zone(None) is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty spec string"),
        ("TZ=UTC 0 * * * *", "cannot use TZ or CRON_TZ in schedule, use timeZone field instead"),
        ("* * * * * *", "expected exactly 5 fields, found 6: [* * * * * *]"),
        ("@often", "unrecognized descriptor: @often"),
        ("@every soon", 'failed to parse duration @every soon: time: invalid duration "soon"'),
    ],
)
def test_refused_schedules_say_why(text: str, message: str) -> None:
    with pytest.raises(ValueError) as err:
        cron.parse(text)
    assert str(err.value) == message


def test_out_of_range_fields_and_unknown_zones_are_refused() -> None:
    for bad in ("60 * * * *", "* 24 * * *", "*/0 * * * *", "* * * * funday"):
        with pytest.raises(ValueError):
            cron.parse(bad)
    for zone in ("Mars/Olympus", "", "../etc/passwd"):
        with pytest.raises(ValueError, match="unknown time zone"):
            cron.zone(zone)
