"""The dashboard's Prometheus metrics, read from the live hubs and authorities of the
process at each scrape (in `gpuyard up` on its one metrics address; `gpuyard dashboard`
serves them at /metrics behind the same sign-in):

- gpuyard_dashboard_clients: browsers following the event stream;
- gpuyard_dashboard_pending_rows: changed rows waiting in their queues;
- gpuyard_dashboard_resyncs_total: times a browser fell so far behind that its backlog
  was dropped for a fresh snapshot;
- gpuyard_dashboard_rows{section}: rows shown (nodes, jobs, teams, events, network);
- gpuyard_dashboard_flushes_total, gpuyard_dashboard_flush_seconds_total: batches of
  changes computed and the time spent on them;
- gpuyard_dashboard_credential_reviews_total: credentials checked with the API server
  (TokenReview and SubjectAccessReviews; cached answers are not counted).
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

_lock = threading.Lock()
_hubs: weakref.WeakSet[Any] = weakref.WeakSet()
_authorities: weakref.WeakSet[Any] = weakref.WeakSet()
_registered: set[int] = set()


def track(hub: Any = None, authority: Any = None, registry: Any = None) -> None:
    """Count `hub` and `authority` in the process's metrics (registered once)."""
    with _lock:
        if hub is not None:
            _hubs.add(hub)
        if authority is not None:
            _authorities.add(authority)
    register(registry)


def register(registry: Any = None) -> None:
    from prometheus_client import REGISTRY

    reg = registry or REGISTRY
    with _lock:
        if id(reg) in _registered:
            return
        _registered.add(id(reg))
    reg.register(_Collector())


class _Collector:
    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        with _lock:
            hubs, auths = list(_hubs), list(_authorities)
        clients = GaugeMetricFamily(
            "gpuyard_dashboard_clients", "Browsers following the dashboard's event stream"
        )
        pending = GaugeMetricFamily(
            "gpuyard_dashboard_pending_rows", "Changed rows waiting in browsers' queues"
        )
        resyncs = CounterMetricFamily(
            "gpuyard_dashboard_resyncs",
            "Browsers that fell so far behind that their backlog was dropped for a snapshot",
        )
        rows = GaugeMetricFamily(
            "gpuyard_dashboard_rows", "Rows the dashboard shows", labels=["section"]
        )
        flushes = CounterMetricFamily(
            "gpuyard_dashboard_flushes", "Batches of changes computed and sent"
        )
        flush_s = CounterMetricFamily(
            "gpuyard_dashboard_flush_seconds", "Time spent computing batches of changes"
        )
        reviews = CounterMetricFamily(
            "gpuyard_dashboard_credential_reviews",
            "Credentials checked with the API server (cached answers not counted)",
        )
        by_section: dict[str, int] = {}
        for h in hubs:
            for section, r in h.rows.items():
                by_section[section] = by_section.get(section, 0) + len(r)
        clients.add_metric([], sum(h.subscribers for h in hubs))
        pending.add_metric([], sum(h.pending_rows() for h in hubs))
        resyncs.add_metric([], sum(h.resyncs for h in hubs))
        for section, n in sorted(by_section.items()):
            rows.add_metric([section], n)
        flushes.add_metric([], sum(h.flushes for h in hubs))
        flush_s.add_metric([], sum(h.flush_seconds for h in hubs))
        reviews.add_metric([], sum(a.reviews for a in auths))
        yield from (clients, pending, resyncs, rows, flushes, flush_s, reviews)
