"""The loop every workload controller runs: a set of object keys to reconcile, filled by
informer handlers and drained in coalesced bursts; a failed reconcile is retried after a
second; writes go through a bounded semaphore and are counted. A pass that took long
(a DaemonSet's on thousands of nodes while their pods start) is followed by a pause as
long, up to PACE_MAX_S, so one controller's passes take at most about half of the
process's event loop from the API server and kubelets sharing it.

A controller subclasses `Controller`, names what it reconciles (`what`, for logs), lists
its informers (`informers()`), registers its handlers (`_wire()`) and implements
`reconcile(key)`; `run(stop)` does the rest.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from gpuyard.kube import objects as o
from gpuyard.kube.errors import ApiError, NotFound
from gpuyard.kube.resources import PODS
from gpuyard.kube.waits import woken

log = logging.getLogger("gpuyard.cluster.workloads")

WRITES_IN_FLIGHT = 64  # writes one controller has in flight at once
PACE_MAX_S = 0.5  # the longest pause a slow pass earns before the next one


class Controller:
    what = "object"  # what a key names, in log lines
    coalesce_s = 0.02  # how long a burst of events is gathered before a pass
    retry_s = 1.0  # how long a reconcile that failed waits before it is retried

    def __init__(self) -> None:
        self._queue: set[str] = set()
        self._wake = asyncio.Event()
        self._sem = asyncio.Semaphore(WRITES_IN_FLIGHT)
        self.writes = 0
        # key -> names of pods this controller deleted that its cache may still show
        self._dels: dict[str, set[str]] = {}

    client: Any

    def informers(self) -> tuple[Any, ...]:
        raise NotImplementedError

    def _wire(self) -> None:
        raise NotImplementedError

    async def reconcile(self, key: str) -> None:
        raise NotImplementedError

    def enqueue(self, key: str) -> None:
        self._queue.add(key)
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        self._wire()
        infs = self.informers()
        for inf in infs:
            inf.start()
        try:
            for inf in infs:
                await inf.wait_synced()
            pause = self.coalesce_s
            while await woken(self._wake, stop):
                await asyncio.sleep(pause)  # coalesce a burst of events
                self._wake.clear()
                keys, self._queue = self._queue, set()
                t0 = time.monotonic()
                await asyncio.gather(*(self._reconcile_safe(k) for k in keys))
                pause = max(self.coalesce_s, min(PACE_MAX_S, time.monotonic() - t0))
        finally:
            for inf in infs:
                await inf.stop()

    async def _reconcile_safe(self, key: str) -> None:
        try:
            await self.reconcile(key)
        except (ApiError, OSError) as exc:
            log.warning("%s %s: %s; will retry", self.what, key, exc)
            asyncio.get_running_loop().call_later(self.retry_s, self.enqueue, key)

    async def _write(self, coro: Any) -> Any:
        async with self._sem:
            out = await coro
        self.writes += 1
        return out

    async def _delete_pods(self, key: str, ns: str, pods: list[dict[str, Any]]) -> None:
        """Delete `pods` of the object `key`, remembering each name in `_dels` until the
        cache shows it gone (a pod already gone is not an error)."""

        async def one(pod: dict[str, Any]) -> None:
            name = o.name_of(pod)
            self._dels.setdefault(key, set()).add(name)
            try:
                await self._write(self.client.delete(PODS, name, ns))
            except NotFound:
                pass

        await asyncio.gather(*(one(p) for p in pods))
