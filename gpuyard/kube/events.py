"""Kubernetes Events for decisions a person would ask about ("why is my job pending?").

`EventRecorder(client, component).record(obj, "Warning", "Unschedulable", "...")`
creates a core/v1 Event about `obj`, correlated as client-go's EventCorrelator does:
- a recent identical one (same object, type, reason, message) gets its `count` and
  `lastTimestamp` bumped instead of a new Event;
- similar ones (same object, type and reason, other messages) are combined: from the
  10th distinct message within 10 minutes, one Event "(combined from similar events):
  <latest message>" is created and then bumped, not an Event per message;
- a spam filter per involved object (a token bucket of 25, refilled one every 5
  minutes) drops what a hot loop would flood the API server with; dropped events are
  counted in `recorder.dropped`.

`emit(...)` is the fire-and-forget form for code that must not wait: the event joins an
`EventQueue` (the recorder's own, or one several recorders share, such as every
simulated kubelet's) that holds at most `max_queued` events and writes them from a few
sender tasks, at most `qps` a second when a rate is set. An event emitted while the
queue is full is dropped and counted, as client-go's event broadcaster drops events
when its queue is full, so a burst of work (thousands of pods starting) never leaves a
backlog of Event writes behind it.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from gpuyard.kube.errors import KubeError, NotFound
from gpuyard.kube.resources import EVENTS

if TYPE_CHECKING:
    from gpuyard.kube.client import Client

Obj = dict[str, Any]

EVENT_TYPES = ("Normal", "Warning")
# client-go's EventCorrelator: similar events are combined past this many distinct
# messages within the aggregation window, under this prefix
AGGREGATE_MAX_EVENTS = 10
COMBINED_PREFIX = "(combined from similar events): "


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def involved_object(obj: Mapping[str, Any]) -> Obj:
    """The ObjectReference of an object, as Events carry it."""
    m = obj.get("metadata") or {}
    ref: Obj = {
        "apiVersion": obj.get("apiVersion", "v1"),
        "kind": obj.get("kind", ""),
        "name": m.get("name", ""),
    }
    if m.get("namespace"):
        ref["namespace"] = m["namespace"]
    if m.get("uid"):
        ref["uid"] = m["uid"]
    if m.get("resourceVersion"):
        ref["resourceVersion"] = m["resourceVersion"]
    return ref


def build_event(
    involved: Mapping[str, Any],
    type_: str,
    reason: str,
    message: str,
    component: str,
    now: str | None = None,
    wall: float | None = None,
    host: str | None = None,
) -> Obj:
    """A core/v1 Event dict (pure; `now` is the RFC 3339 timestamp to stamp)."""
    if type_ not in EVENT_TYPES:
        raise ValueError(f"event type must be Normal or Warning, not {type_!r}")
    if not reason:
        raise ValueError("event reason must not be empty")
    wall = time.time() if wall is None else wall
    stamp = now or _rfc3339(wall)
    ref = involved_object(involved) if "metadata" in involved else dict(involved)
    ns = ref.get("namespace") or "default"
    name = f"{ref.get('name') or 'object'}.{int(wall * 1e9):x}"
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": ns},
        "involvedObject": ref,
        "type": type_,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": component, **({"host": host} if host else {})},
        "reportingComponent": component,
        **({"reportingInstance": host} if host else {}),
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


@dataclass
class _Seen:
    name: str
    namespace: str
    count: int
    last: float


class _Bucket:
    __slots__ = ("tokens", "stamp")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp


# How long a stopping component lets its queued Events go out before dropping them.
STOP_FLUSH_S = 2.0


class EventQueue:
    """Events emitted and not yet written, bounded; written by at most `senders` tasks,
    at most `qps` a second after a `burst` (qps None: as fast as the senders go)."""

    def __init__(
        self,
        max_queued: int = 1000,
        senders: int = 4,
        qps: float | None = None,
        burst: int = 100,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_queued < 1 or senders < 1:
            raise ValueError("an event queue needs room for one event and one sender")
        if qps is not None and qps <= 0:
            raise ValueError(f"event qps must be positive, not {qps}")
        self.max_queued = max_queued
        self.senders = senders
        self.qps = qps
        self.burst = max(1, burst)
        self.clock = clock
        self.dropped = 0  # emitted while the queue was full
        self._q: deque[tuple[EventRecorder, Obj, str, str, str]] = deque()
        self._workers: set[asyncio.Task[Any]] = set()
        self._tokens = float(self.burst)
        self._stamp = clock()
        self._paused = 0
        self._open = asyncio.Event()  # set while not paused
        self._open.set()

    def __len__(self) -> int:
        return len(self._q)

    def put(self, rec: EventRecorder, obj: Obj, type_: str, reason: str, message: str) -> bool:
        """Queue one event (needs a running event loop); False when it was dropped."""
        if len(self._q) >= self.max_queued:
            self.dropped += 1
            return False
        self._q.append((rec, obj, type_, reason, message))
        if len(self._workers) < self.senders:
            task = asyncio.get_running_loop().create_task(self._send())
            self._workers.add(task)
            task.add_done_callback(self._workers.discard)
        return True

    def pause(self) -> None:
        """Hold queued events back until as many `resume` calls: a component whose own
        writes come first (the scheduler while a pass's bindings are in flight) keeps
        its Events out of their way on a busy API server. Emits still queue, and are
        dropped past the queue's room. An event being written goes on."""
        self._paused += 1
        self._open.clear()

    def resume(self) -> None:
        self._paused = max(0, self._paused - 1)
        if not self._paused:
            self._open.set()

    async def _pace(self) -> None:
        if self.qps is None:
            return
        now = self.clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._stamp) * self.qps)
        self._stamp = now
        self._tokens -= 1.0  # this event's token, taken now, waited for below if owed
        if self._tokens < 0:
            await asyncio.sleep(-self._tokens / self.qps)

    async def _send(self) -> None:
        while self._q:
            if self._paused:
                await self._open.wait()
                continue
            rec, obj, type_, reason, message = self._q.popleft()
            await self._pace()
            await rec.record(obj, type_, reason, message)

    async def flush(self, timeout: float | None = None) -> int:
        """Wait until every queued event is written (or dropped by its recorder); while
        paused, until it is resumed and they are. With `timeout` (a component stopping:
        at 50 a second a full queue takes 20 s), what is not written by then is
        dropped and counted. Returns how many were dropped so."""

        async def drain() -> None:
            while self._workers:
                await asyncio.gather(*list(self._workers), return_exceptions=True)

        try:
            await asyncio.wait_for(drain(), timeout)
            return 0
        except TimeoutError:
            left = len(self._q)
            self._q.clear()
            self.dropped += left
            for t in list(self._workers):
                t.cancel()
            await asyncio.gather(*list(self._workers), return_exceptions=True)
            return left


class EventRecorder:
    """Creates or aggregates Events; rate limited per involved object."""

    def __init__(
        self,
        client: Client,
        component: str,
        *,
        burst: int = 25,
        refill_per_s: float = 1 / 300,
        aggregate_window_s: float = 600.0,
        aggregate_max_events: int = AGGREGATE_MAX_EVENTS,
        max_tracked: int = 4096,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        host: str | None = None,
        queue: EventQueue | None = None,
    ) -> None:
        self.client = client
        # where emit() puts events: this recorder's own, or one shared with others
        self.queue = queue if queue is not None else EventQueue()
        self.component = component
        self.host = host  # source.host: the node a kubelet's events come from
        self.burst = burst
        self.refill_per_s = refill_per_s
        self.aggregate_window_s = aggregate_window_s
        self.aggregate_max_events = aggregate_max_events
        self.max_tracked = max_tracked
        self.clock = clock
        self.wall = wall
        self.dropped = 0
        self.sent = 0
        self._seen: OrderedDict[tuple[Any, ...], _Seen] = OrderedDict()
        self._buckets: OrderedDict[tuple[str, ...], _Bucket] = OrderedDict()
        # (object, type, reason) -> the distinct messages seen and when last
        self._similar: OrderedDict[tuple[Any, ...], tuple[set[str], float]] = OrderedDict()

    def allow(self, ref: Mapping[str, Any], now: float) -> bool:
        """Token bucket per involved object (pure given `now`), keyed as client-go's
        spam filter keys it (the source is the recorder's own)."""
        key = (
            str(ref.get("kind")),
            str(ref.get("namespace", "")),
            str(ref.get("name")),
            str(ref.get("uid", "")),
            str(ref.get("apiVersion", "")),
        )
        b = self._buckets.get(key)
        if b is None:
            b = self._buckets[key] = _Bucket(float(self.burst), now)
            if len(self._buckets) > self.max_tracked:
                self._buckets.popitem(last=False)
        b.tokens = min(float(self.burst), b.tokens + (now - b.stamp) * self.refill_per_s)
        b.stamp = now
        if b.tokens < 1.0:
            return False
        b.tokens -= 1.0
        return True

    async def record(
        self, obj: Mapping[str, Any], type_: str, reason: str, message: str
    ) -> Obj | None:
        """Create (or aggregate into) an Event; None when rate limited or the API failed."""
        ref = involved_object(obj) if "metadata" in obj else dict(obj)
        now = self.clock()
        # As client-go correlates: aggregated first (a dropped event's message counts
        # too), then the spam filter.
        similar = (
            ref.get("kind"),
            ref.get("namespace"),
            ref.get("name"),
            ref.get("uid"),
            type_,
            reason,
        )
        combined = self._aggregate(similar, message, now)
        if combined:
            message = COMBINED_PREFIX + message
            key: tuple[Any, ...] = (*similar, None, None)
        else:
            key = (*similar, ref.get("fieldPath"), message)
        if not self.allow(ref, now):
            self.dropped += 1
            return None
        seen = self._seen.get(key)
        wall = self.wall()
        try:
            if seen is not None and now - seen.last <= self.aggregate_window_s:
                try:
                    change: Obj = {"count": seen.count + 1, "lastTimestamp": _rfc3339(wall)}
                    if combined:
                        change["message"] = message[:1024]  # the latest, as client-go's
                    out = await self.client.patch(EVENTS, seen.name, change, seen.namespace)
                    seen.count += 1
                    seen.last = now
                    self._seen.move_to_end(key)
                    self.sent += 1
                    return out
                except NotFound:
                    self._seen.pop(key, None)
            ev = build_event(ref, type_, reason, message, self.component, wall=wall, host=self.host)
            out = await self.client.create(ev, ev["metadata"]["namespace"])
        except KubeError:
            self.dropped += 1
            return None
        m = out.get("metadata") or ev["metadata"]
        self._seen[key] = _Seen(str(m["name"]), str(m.get("namespace") or "default"), 1, now)
        if len(self._seen) > self.max_tracked:
            self._seen.popitem(last=False)
        self.sent += 1
        return out

    def _aggregate(self, similar: tuple[Any, ...], message: str, now: float) -> bool:
        """Whether an event is combined with its similar ones (same object, type and
        reason): once they have had `aggregate_max_events` distinct messages within
        the window, they are all one combined Event (client-go's EventAggregator)."""
        got = self._similar.get(similar)
        if got is None or now - got[1] > self.aggregate_window_s:
            messages: set[str] = set()
        else:
            messages = got[0]
        messages.add(message)
        self._similar[similar] = (messages, now)
        self._similar.move_to_end(similar)
        if len(self._similar) > self.max_tracked:
            self._similar.popitem(last=False)
        return len(messages) >= self.aggregate_max_events

    def emit(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """Fire and forget (needs a running event loop): queued, or dropped and counted
        when the queue is full. The object's reference is taken now."""
        ref = involved_object(obj) if "metadata" in obj else dict(obj)
        if not self.queue.put(self, ref, type_, reason, message):
            self.dropped += 1

    async def flush(self, timeout: float | None = None) -> int:
        """Wait for events emitted with `emit` to be sent; with `timeout`, drop (and
        count, and return how many) what is not sent by then."""
        return await self.queue.flush(timeout)
