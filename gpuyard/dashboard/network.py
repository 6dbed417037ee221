"""Network by namespace for the dashboard: rates from the node agents' counters
(`gpuyard_pod_network_bytes_total` on their /metrics, as `gpuyard network top` reads
them), the difference between two reads divided by the time between them."""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

from gpuyard.network.top import _read as read_counters


class NetworkRates:
    """Call it every few seconds: namespace -> its row (bits per second out to the
    internet, in the cluster, in; bytes sent so far). The first call has no rates yet."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        self._last: tuple[float, dict[str, dict[str, float]]] | None = None

    def __call__(self) -> dict[str, dict[str, Any]]:
        now = time.monotonic()
        by_ns: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        for (namespace, _pod, _team), cols in read_counters(self.urls).items():
            for col, v in cols.items():
                by_ns[namespace][col] += v
        last, self._last = self._last, (now, by_ns)
        out: dict[str, dict[str, Any]] = {}
        for ns, cols in by_ns.items():
            dt = (now - last[0]) if last else 0.0
            before = last[1].get(ns, {}) if last else {}

            def rate(
                col: str, cols: dict[str, float] = cols, before: Any = before, dt: float = dt
            ) -> int:
                if dt <= 0:
                    return 0
                return round(max(0.0, cols.get(col, 0.0) - before.get(col, 0.0)) * 8 / dt)

            out[ns] = {
                "namespace": ns,
                "internetBitsPerSecond": rate("internet"),
                "clusterBitsPerSecond": rate("cluster"),
                "inBitsPerSecond": rate("in"),
                "sentBytes": int(cols.get("internet", 0.0) + cols.get("cluster", 0.0)),
            }
        return out
