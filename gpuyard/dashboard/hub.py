"""The dashboard's hub: watches (shared informers), the current rows of every section,
and what changed, fanned out to each connected browser.

Informer handlers only mark what is dirty (a node, a job, the teams); one flush task
wakes on that, waits `coalesce_s` so a burst of events becomes one batch, recomputes
the dirty rows with `gpuyard.dashboard.model`, and hands each subscriber the rows that
really changed. A subscriber's queue holds at most one pending value per row (a newer
value replaces an older one), so a slow browser costs at most one copy of the
cluster's rows; past `max_pending` rows it is told to start over from a snapshot
instead. Nothing here polls the API server.

In `gpuyard up` the hub runs on the dashboard's own loop (a thread, see
`gpuyard.dashboard.server`) with its informers as views of the process's shared
watches, fed across threads (see `gpuyard.kube.informer`): the process's loop, busy
with the simulated kubelets, only hands each watch event over, and marking, batching,
recomputing and sending happen on the dashboard's loop. `client_loop` names the loop
the client belongs to, where the hub's own requests go. A hub may also live on another
loop than the server that reads it: a subscriber's queue takes a lock, and it is woken
on its own loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from gpuyard import names
from gpuyard.dashboard import model
from gpuyard.kube import objects as o
from gpuyard.kube.errors import NotFound
from gpuyard.kube.informer import Informer, InformerFactory, informer_maker
from gpuyard.kube.resources import (
    CONFIGMAPS,
    EVENTS,
    NAMESPACES,
    NODES,
    POD_GROUPS,
    PODS,
    TEAMS,
    TRAINING_JOBS,
)

log = logging.getLogger(__name__)

SECTIONS = ("nodes", "jobs", "teams", "events", "brake", "network")
HEALTH_NAMESPACE = "gpuyard-system"
BRAKE_CONFIGMAP = "gpuyard-health-brake"
INDEX_GANG = "gang"
INDEX_JOB = "job"
Rows = dict[str, dict[str, Any]]
Delta = dict[str, dict[str, Any]]  # section -> key -> row (None: gone)


class Subscriber:
    """One browser's queue: the newest value of each changed row, bounded."""

    def __init__(self, max_pending: int) -> None:
        self.max_pending = max_pending
        self.pending: dict[str, dict[str, Any]] = {}
        self.count = 0
        self.resync = True  # the first thing a subscriber gets is a snapshot
        self.wake = asyncio.Event()
        self.wake.set()
        self.dropped_batches = 0
        self.closed = False
        self._lock = threading.Lock()
        try:  # the loop that reads it (wake is set there)
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None

    def offer(self, delta: Delta) -> None:
        with self._lock:
            if self.resync:
                return  # a snapshot is coming anyway
            for section, rows in delta.items():
                have = self.pending.setdefault(section, {})
                for key, row in rows.items():
                    if key not in have:
                        self.count += 1
                    have[key] = row
            if self.count > self.max_pending:
                # too far behind: forget the backlog and start again from a snapshot
                self.pending.clear()
                self.count = 0
                self.resync = True
                self.dropped_batches += 1
        self.notify()

    def notify(self) -> None:
        """Wake the reader, from its own loop's thread or any other."""
        loop = self._loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is None or running is loop:
            self.wake.set()
        else:
            with contextlib.suppress(RuntimeError):  # its loop has closed: nobody reads
                loop.call_soon_threadsafe(self.wake.set)

    def take(self) -> tuple[bool, Delta]:
        """(resync?, rows changed since the last take)."""
        with self._lock:
            resync, delta = self.resync, self.pending
            self.resync, self.pending, self.count = False, {}, 0
            self.wake.clear()
        return resync, delta


class Hub:
    """Rows of every section, kept current from watches. `start()`, then `subscribe()`."""

    def __init__(
        self,
        client: Any,
        factory: InformerFactory | None = None,
        *,
        coalesce_s: float = 0.1,
        max_pending: int = 50_000,
        max_events: int = 200,
        network: Callable[[], Rows] | None = None,
        network_every_s: float = 5.0,
        client_loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.client = client
        self.client_loop = client_loop
        make = informer_maker(client, factory)
        self.nodes: Informer = make(NODES, name="dashboard-nodes")
        self.pods: Informer = make(PODS, name="dashboard-pods")
        self.namespaces: Informer = make(NAMESPACES, name="dashboard-namespaces")
        self.jobs: Informer = make(TRAINING_JOBS, name="dashboard-trainingjobs")
        self.gangs: Informer = make(POD_GROUPS, name="dashboard-podgroups")
        self.teams: Informer = make(TEAMS, name="dashboard-teams")
        self.events: Informer = make(EVENTS, name="dashboard-events")
        self.brake: Informer = make(
            CONFIGMAPS,
            HEALTH_NAMESPACE,
            field_selector=f"metadata.name={BRAKE_CONFIGMAP}",
            name="dashboard-brake",
        )
        self.pods.add_index(
            INDEX_GANG,
            lambda p: (
                f"{o.namespace_of(p)}/{g}"
                if (g := o.labels_of(p).get(names.POD_GROUP_LABEL))
                else None
            ),
        )
        self.pods.add_index(
            INDEX_JOB,
            lambda p: (
                f"{o.namespace_of(p)}/{j}" if (j := o.labels_of(p).get(model.LABEL_JOB)) else None
            ),
        )
        self.coalesce_s = coalesce_s
        self.max_pending = max_pending
        self.max_events = max_events
        self.network_fn = network
        self.network_every_s = network_every_s
        self.rows: dict[str, Rows] = {s: {} for s in SECTIONS}
        self._events: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._dirty_nodes: set[str] = set()
        self._dirty_jobs: set[str] = set()  # "ns/name" of a TrainingJob or PodGroup
        self._dirty_teams = False
        self._dirty_brake = False
        self._all_dirty = True
        self._event_delta: dict[str, Any] = {}
        self._wake = asyncio.Event()
        self._subscribers: set[Subscriber] = set()
        self._tasks: list[asyncio.Task[Any]] = []
        self.ready = asyncio.Event()
        self.flushes = 0
        self.flush_seconds = 0.0
        self.last_flush_s = 0.0
        self._resyncs_of_gone = 0  # resyncs of subscribers that have left
        self.missing: list[str] = []  # informers of kinds the cluster does not serve

    @property
    def informers(self) -> list[Informer]:
        return [
            self.nodes,
            self.pods,
            self.namespaces,
            self.jobs,
            self.gangs,
            self.teams,
            self.events,
            self.brake,
        ]

    # ------------------------------------------------------------ lifecycle

    async def start(self, sync_timeout: float | None = 60.0) -> None:
        from gpuyard.dashboard import metrics

        metrics.track(hub=self)
        h = self._handlers
        if self._client_elsewhere():
            own = [i.name for i in self.informers if i.source is None]
            if own:  # its own watches would use the client on this loop's thread
                raise ValueError(
                    f"a hub on another loop than its client's reads through views of "
                    f"shared watches; these are not views: {', '.join(own)}"
                )
        self.nodes.add_handler(*h(lambda n: self._mark_node(o.name_of(n))))
        self.pods.add_handler(*h(self._mark_pod))
        self.namespaces.add_handler(*h(lambda _ns: self._mark_all()))
        self.jobs.add_handler(*h(lambda j: self._mark_job(o.key_of(j))))
        self.gangs.add_handler(*h(self._mark_gang))
        self.teams.add_handler(*h(lambda _t: self._mark_teams()))
        self.events.add_handler(self._on_event, lambda _old, new: self._on_event(new), None)
        self.brake.add_handler(*h(lambda _c: self._mark_brake()))
        for inf in self.informers:
            if inf in (self.jobs, self.gangs, self.teams) and not await self._served(inf):
                # a cluster without gpuyard's CRDs: that table stays empty, and no
                # informer retries a 404 forever
                log.info("dashboard: the cluster serves no %s; not shown", inf.name)
                self.missing.append(inf.name)
                continue
            inf.start()
        self._tasks.append(asyncio.create_task(self._flush_loop(), name="dashboard-flush"))
        if self.network_fn is not None:
            self._tasks.append(asyncio.create_task(self._network_loop(), name="dashboard-net"))
        # The core kinds must sync; gpuyard's own kinds may be missing on a cluster
        # without its CRDs (their informers keep retrying, their tables stay empty).
        await asyncio.wait_for(
            asyncio.gather(self.nodes.wait_synced(), self.pods.wait_synced()), sync_timeout
        )
        self._all_dirty = True
        self._wake.set()
        # ... and the rows are built from them before anyone is told the address: a
        # browser (or a test) asking at once gets the whole cluster, not an empty map
        await asyncio.wait_for(self.ready.wait(), sync_timeout)

    def _client_elsewhere(self) -> bool:
        loop = self.client_loop
        return loop is not None and loop is not asyncio.get_running_loop()

    async def _request(self, method: str, path: str) -> Any:
        """client.request on the client's own loop."""
        coro = self.client.request(method, path)
        if not self._client_elsewhere():
            return await coro
        assert self.client_loop is not None
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.client_loop))

    async def _served(self, inf: Informer) -> bool:
        """Whether the API server lists the informer's resource in its discovery."""
        res = inf.res
        if res is None or not res.group:
            return True
        try:
            doc = await self._request("GET", f"/apis/{res.group}/{res.version}")
        except NotFound:  # no such group
            return False
        except Exception:  # not answering yet: the informer retries as it would
            return True
        return any(r.get("name") == res.plural for r in (doc or {}).get("resources") or [])

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()
        for inf in self.informers:
            await inf.stop()
        for s in list(self._subscribers):
            s.closed = True
            s.notify()

    # ------------------------------------------------------------ subscribers

    def subscribe(self) -> Subscriber:
        s = Subscriber(self.max_pending)
        self._subscribers.add(s)
        return s

    def unsubscribe(self, s: Subscriber) -> None:
        if s in self._subscribers:
            self._subscribers.discard(s)
            self._resyncs_of_gone += s.dropped_batches

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    @property
    def resyncs(self) -> int:
        return self._resyncs_of_gone + sum(s.dropped_batches for s in self._subscribers)

    def pending_rows(self) -> int:
        return sum(s.count for s in self._subscribers)

    def snapshot(self) -> dict[str, Any]:
        return {
            "nodes": list(self.rows["nodes"].values()),
            "jobs": list(self.rows["jobs"].values()),
            "teams": list(self.rows["teams"].values()),
            "events": list(self.rows["events"].values()),
            "brake": self.rows["brake"].get("brake") or model.brake_row(None),
            "network": list(self.rows["network"].values()),
            "states": list(model.STATES),
        }

    # ------------------------------------------------------------ node details

    def node_detail(self, name: str) -> dict[str, Any] | None:
        node = self.nodes.get(name)
        if node is None:
            return None
        return model.node_detail(node, self.pods.by_node(name), self._namespace_teams())

    # ------------------------------------------------------------ marking

    @staticmethod
    def _handlers(fn: Callable[[Any], None]) -> tuple[Any, Any, Any]:
        def upd(old: Any, new: Any) -> None:
            fn(old)
            fn(new)

        return fn, upd, fn

    def _poke(self) -> None:
        self._wake.set()

    def _mark_all(self) -> None:
        self._all_dirty = True
        self._poke()

    def _mark_node(self, name: str) -> None:
        self._dirty_nodes.add(name)
        self._poke()

    def _mark_job(self, key: str) -> None:
        self._dirty_jobs.add(key)
        self._poke()

    def _mark_teams(self) -> None:
        self._dirty_teams = True
        self._poke()

    def _mark_brake(self) -> None:
        self._dirty_brake = True
        self._poke()

    def _mark_pod(self, pod: Any) -> None:
        node = (pod.get("spec") or {}).get("nodeName")
        if node:
            self._dirty_nodes.add(node)
        labels = o.labels_of(pod)
        ns = o.namespace_of(pod)
        for key in (labels.get(names.POD_GROUP_LABEL), labels.get(model.LABEL_JOB)):
            if key:
                self._dirty_jobs.add(f"{ns}/{key}")
        self._poke()

    def _mark_gang(self, gang: Any) -> None:
        self._dirty_jobs.add(o.key_of(gang))
        self._poke()

    def _on_event(self, ev: Any) -> None:
        if not model.is_node_event(ev):
            return
        key = str((ev.get("metadata") or {}).get("uid") or o.key_of(ev))
        row = {"id": key, **model.event_row(ev)}
        self._events[key] = row
        self._events.move_to_end(key)
        self._event_delta[key] = row
        while len(self._events) > self.max_events:
            old, _ = self._events.popitem(last=False)
            self._event_delta[old] = None
        self._poke()

    # ------------------------------------------------------------ recomputing

    def _namespace_teams(self) -> dict[str, str]:
        out = {}
        for ns in self.namespaces.list():
            t = o.labels_of(ns).get(names.LABEL_TEAM)
            if t:
                out[o.name_of(ns)] = t
        return out

    def _set(self, delta: Delta, section: str, key: str, row: dict[str, Any] | None) -> None:
        rows = self.rows[section]
        if row is None:
            if rows.pop(key, None) is not None:
                delta.setdefault(section, {})[key] = None
        elif rows.get(key) != row:
            rows[key] = row
            delta.setdefault(section, {})[key] = row

    def _recompute(self) -> Delta:
        delta: Delta = {}
        nst = self._namespace_teams()
        if self._all_dirty:
            self._all_dirty = False
            self._dirty_nodes |= set(self.rows["nodes"]) | {o.name_of(n) for n in self.nodes.list()}
            self._dirty_jobs |= (
                set(self.rows["jobs"]) | set(self.jobs.cache) | set(self.gangs.cache)
            )
            self._dirty_teams = self._dirty_brake = True
        dirty, self._dirty_nodes = self._dirty_nodes, set()
        for name in dirty:
            node = self.nodes.get(name)
            nrow = None if node is None else model.node_summary(node, self.pods.by_node(name), nst)
            self._set(delta, "nodes", name, nrow)
        jobs, self._dirty_jobs = self._dirty_jobs, set()
        for key in jobs:
            job = self.jobs.cache.get(key)
            gang = self.gangs.cache.get(key)
            row: dict[str, Any] | None = None
            if job is not None:
                pods = self.pods.by_index(INDEX_JOB, key) or self.pods.by_index(INDEX_GANG, key)
                row = model.job_row(job, gang, pods, nst)
            elif gang is not None and not model.owned_by_job(gang):
                row = model.gang_row(gang, self.pods.by_index(INDEX_GANG, key), nst)
            self._set(delta, "jobs", key, row)
        if self._dirty_teams:
            self._dirty_teams = False
            seen = set()
            for t in self.teams.list():
                seen.add(o.name_of(t))
                self._set(delta, "teams", o.name_of(t), model.team_row(t))
            for gone in set(self.rows["teams"]) - seen:
                self._set(delta, "teams", gone, None)
        if self._dirty_brake:
            self._dirty_brake = False
            self._set(
                delta,
                "brake",
                "brake",
                model.brake_row(self.brake.get(BRAKE_CONFIGMAP, HEALTH_NAMESPACE)),
            )
        if self._event_delta:
            evd, self._event_delta = self._event_delta, {}
            for key, row in evd.items():
                self._set(delta, "events", key, row)
        return delta

    def publish(self, delta: Delta) -> None:
        if not delta:
            return
        for s in list(self._subscribers):
            s.offer(delta)

    async def _flush_loop(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(self.coalesce_s)
            self._wake.clear()
            t0 = time.perf_counter()
            try:
                delta = self._recompute()
            except Exception:  # a bug in a row must not stop the dashboard
                log.exception("dashboard: recomputing rows failed")
                continue
            self.last_flush_s = time.perf_counter() - t0
            self.flush_seconds += self.last_flush_s
            self.flushes += 1
            self.publish(delta)
            if self.nodes.has_synced and self.pods.has_synced:
                self.ready.set()

    async def _network_loop(self) -> None:
        assert self.network_fn is not None
        while True:
            try:
                rows = await asyncio.to_thread(self.network_fn)
            except Exception as exc:  # an unreachable metrics address: say so, go on
                log.debug("dashboard: network rates unavailable: %s", exc)
                rows = {}
            delta: Delta = {}
            for key, row in rows.items():
                self._set(delta, "network", key, row)
            for gone in set(self.rows["network"]) - set(rows):
                self._set(delta, "network", gone, None)
            self.publish(delta)
            await asyncio.sleep(self.network_every_s)
