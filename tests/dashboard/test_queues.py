"""A browser's queue of changes is bounded: at most one pending value per row, and past
its limit the backlog is dropped for a fresh snapshot."""

from __future__ import annotations

from gpuyard.dashboard.hub import Subscriber


def test_a_slow_browser_keeps_one_value_per_row() -> None:
    s = Subscriber(max_pending=100)
    assert s.take() == (True, {})  # a snapshot first
    for i in range(10_000):  # the same 50 nodes change over and over
        s.offer({"nodes": {f"n{i % 50}": {"state": "free", "v": i}}})
    assert s.count == 50
    resync, delta = s.take()
    assert not resync
    assert len(delta["nodes"]) == 50
    assert delta["nodes"]["n7"]["v"] == 9957  # the newest value of each
    assert s.take() == (False, {})


def test_too_far_behind_starts_over_from_a_snapshot() -> None:
    s = Subscriber(max_pending=100)
    s.take()
    for i in range(1000):  # 1000 distinct rows: more than it may hold
        s.offer({"nodes": {f"n{i}": {"v": i}}})
        assert s.count <= 100
    resync, delta = s.take()
    assert resync and delta == {} and s.dropped_batches >= 1
    s.offer({"nodes": {"n1": None}})  # deletions travel as None
    assert s.take() == (False, {"nodes": {"n1": None}})
