"""Informers: list then watch one resource into a local, indexed cache.

`Informer(client, PODS, namespace=None, label_selector=..., field_selector=...)` keeps
`cache` (key "ns/name" or "name" -> object) current from one list and then a watch,
with indexes by namespace and by `spec.nodeName` plus any `add_index(name, fn)`.
Handlers `on_add(obj)`, `on_update(old, new)`, `on_delete(obj)` (plain functions or
coroutines) run from a queue on a separate task, so a slow handler never stalls the
watch. Cached objects and the objects handed to handlers are shared: treat them as
read-only (copy before changing). When the watch ends with 410 Gone or breaks, the informer relists and diffs
the result against its cache, so deletes that happened while it was blind are still
delivered; so does a watch that the server closes long before its timeout (a
restarted or overloaded server). A watch that ends at its timeout resumes from the
last resourceVersion without a relist. Bookmarks keep its resourceVersion fresh; errors back off exponentially.

`InformerFactory(client)` hands out one shared informer per (resource, namespace,
selectors), so components in one process never watch the same thing twice.
`InformerFactory(client, views=True)` goes further, for components that each keep
their own handlers, indexes and start/stop (the components of `gpuyard up`): every
`informer(...)` call gets a view of its own (`Informer(..., source=...)`) over one
list+watch per resource (in every namespace; a view of one namespace keeps its own); a view with a label selector caches only the
objects it selects (an object whose labels change in or out of the selection is added
to or deleted from it), and stopping a view detaches it and leaves the watch to the
others. A field selector on VIEW_FIELDS (=, ==, !=) is evaluated by the view too; any
other still gets a watch of its own.

A view may run on another event loop (thread) than its source, as the dashboard of
`gpuyard up` does on its own loop: the source is started, its objects copied and the
view's tap added on the source's loop in one step (nothing missed, nothing seen
twice), and its changes cross over in batches, applied in the watch's order. A tap is
called as the source's cache changes, before the source's handlers run, so the source's
loop only appends each change to a queue; the view's indexes and handlers run on the
view's loop. The view's client (its access check) is also used on the source's
loop, where the factory's client lives.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import logging
import random
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gpuyard.kube.errors import Forbidden, Gone, NotFound
from gpuyard.kube.objects import key_of, parse_label_selector, requirements_match

if TYPE_CHECKING:
    from gpuyard.kube.client import Client, ResLike

from gpuyard.kube.resources import BUILTIN, Res

log = logging.getLogger(__name__)

Obj = dict[str, Any]
Objs = list[Obj]
IndexFn = Callable[[Obj], "Iterable[str] | str | None"]

INDEX_NAMESPACE = "namespace"
INDEX_NODE = "node"


def _ns_index(obj: Obj) -> str | None:
    return (obj.get("metadata") or {}).get("namespace") or None


def _node_index(obj: Obj) -> str | None:
    return (obj.get("spec") or {}).get("nodeName") or None


def _rv(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


@dataclass
class _Handlers:
    on_add: Callable[..., Any] | None
    on_update: Callable[..., Any] | None
    on_delete: Callable[..., Any] | None


class Cache:
    """Objects by key with secondary indexes. Pure data structure."""

    def __init__(self) -> None:
        self.objects: dict[str, Obj] = {}
        self._index_fns: dict[str, IndexFn] = {}
        self._indexes: dict[str, dict[str, set[str]]] = {}
        self.add_index(INDEX_NAMESPACE, _ns_index)
        self.add_index(INDEX_NODE, _node_index)

    def add_index(self, name: str, fn: IndexFn) -> None:
        """Index objects by `fn(obj)` (a value, several values, or None)."""
        self._index_fns[name] = fn
        idx: dict[str, set[str]] = {}
        self._indexes[name] = idx
        for key, obj in self.objects.items():
            for v in self._values(fn, obj):
                idx.setdefault(v, set()).add(key)

    @staticmethod
    def _values(fn: IndexFn, obj: Obj) -> Iterable[str]:
        return Cache._as_values(fn(obj))

    @staticmethod
    def _as_values(v: Any) -> Iterable[str]:
        if v is None:
            return ()
        if isinstance(v, str):
            return (v,)
        return v  # type: ignore[no-any-return]

    def _unindex(self, key: str, obj: Obj) -> None:
        for name, fn in self._index_fns.items():
            idx = self._indexes[name]
            for v in self._values(fn, obj):
                keys = idx.get(v)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del idx[v]

    def _index(self, key: str, obj: Obj) -> None:
        for name, fn in self._index_fns.items():
            idx = self._indexes[name]
            for v in self._values(fn, obj):
                idx.setdefault(v, set()).add(key)

    def put(self, obj: Obj) -> Obj | None:
        """Insert or replace; returns the previous object."""
        key = key_of(obj)
        old = self.objects.get(key)
        self.objects[key] = obj
        if old is None:
            self._index(key, obj)
            return None
        # A new version of an object mostly keeps its index values (its namespace, its
        # node, its owner): those indexes are left as they are.
        for name, fn in self._index_fns.items():
            was, now = fn(old), fn(obj)
            if was == now and (was is None or isinstance(was, str)):
                continue
            idx = self._indexes[name]
            for v in self._as_values(was):
                keys = idx.get(v)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del idx[v]
            for v in self._as_values(now):
                idx.setdefault(v, set()).add(key)
        return old

    def remove(self, key: str) -> Obj | None:
        old = self.objects.pop(key, None)
        if old is not None:
            self._unindex(key, old)
        return old

    def replace_all(self, objs: Iterable[Obj]) -> None:
        self.objects = {key_of(o): o for o in objs}
        for name in list(self._index_fns):
            self.add_index(name, self._index_fns[name])

    def get(self, key: str) -> Obj | None:
        return self.objects.get(key)

    def keys_by(self, index: str, value: str) -> set[str]:
        if index not in self._indexes:
            raise KeyError(f"no index named {index!r}")
        return set(self._indexes[index].get(value, ()))

    def by_index(self, index: str, value: str) -> list[Obj]:
        """Objects whose index value is `value` (sorted by key, for stable output)."""
        return [self.objects[k] for k in sorted(self.keys_by(index, value))]

    def index_values(self, index: str) -> list[str]:
        return sorted(self._indexes[index])

    def __len__(self) -> int:
        return len(self.objects)


class Informer:
    """List+watch cache of one resource. Call `start()`, then `await wait_synced()`."""

    def __init__(
        self,
        client: Client,
        res: ResLike,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        page_size: int = 500,
        watch_timeout_s: int = 300,
        backoff_base: float = 0.2,
        backoff_max: float = 10.0,
        name: str | None = None,
        source: Informer | None = None,
        check_access: bool = False,
        source_loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.client = client
        # a view: fed by `source`'s watch instead of one of its own
        self.source = source
        # the loop the source runs on (where not yet started); a view started on
        # another loop is fed across threads (see the module docstring)
        self.source_loop = source_loop
        self._loop: asyncio.AbstractEventLoop | None = None  # where start() ran
        # (deleted?, object) handed over by the source's loop
        self._inbox: collections.deque[tuple[bool, Obj]] = collections.deque()
        self._inbox_open = False
        self._inbox_posted = False
        # a view for another identity than the source's: it gets the objects only once
        # its own client may list and watch them (see `_may_read`)
        self.check_access = check_access and source is not None
        self._selects = None if not label_selector else parse_label_selector(label_selector)
        self._fields = field_terms(field_selector) if source is not None else None
        self._fwd: _Handlers | None = None
        self._tap: Callable[[bool, Obj], None] | None = None
        self._res_like = res
        self.res: Res | None = res if isinstance(res, Res) else None
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.page_size = page_size
        self.watch_timeout_s = watch_timeout_s
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.name = name or (f"{res.plural}" if isinstance(res, Res) else str(res))
        self.store = Cache()
        self.resource_version = ""
        self.relists = 0
        self.watch_restarts = 0
        self.events_seen = 0
        self.handler_errors = 0
        self.last_error: BaseException | None = None
        # the API answered that it serves no such resource (said once, at INFO)
        self.unserved = False
        self._handlers: list[_Handlers] = []
        # called with (deleted?, object) as the cache changes (views on other loops)
        self._taps: list[Callable[[bool, Obj], None]] = []
        # events for the handlers, in order; _wake is set when there are some
        self._queue: collections.deque[tuple[str, Any, Any]] = collections.deque()
        self._wake = asyncio.Event()
        self._synced = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._dispatch_task: asyncio.Task[None] | None = None
        self._processed = 0
        self._enqueued = 0
        self._idle = asyncio.Event()
        self._idle.set()

    # ------------------------------------------------------------ cache access

    @property
    def cache(self) -> dict[str, Obj]:
        return self.store.objects

    def add_index(self, name: str, fn: IndexFn) -> None:
        self.store.add_index(name, fn)

    def get(self, name: str, namespace: str | None = None) -> Obj | None:
        return self.store.get(f"{namespace}/{name}" if namespace else name)

    def list(self) -> Objs:
        return list(self.store.objects.values())

    def by_index(self, index: str, value: str) -> Objs:
        return self.store.by_index(index, value)

    def by_namespace(self, namespace: str) -> Objs:
        return self.store.by_index(INDEX_NAMESPACE, namespace)

    def by_node(self, node: str) -> Objs:
        return self.store.by_index(INDEX_NODE, node)

    # ------------------------------------------------------------ handlers

    def add_handler(
        self,
        on_add: Callable[..., Any] | None = None,
        on_update: Callable[..., Any] | None = None,
        on_delete: Callable[..., Any] | None = None,
    ) -> None:
        """Register handlers. A handler added after sync first gets on_add for every
        cached object."""
        h = _Handlers(on_add, on_update, on_delete)
        self._handlers.append(h)
        if self._synced.is_set() and on_add is not None:
            for obj in list(self.store.objects.values()):
                self._enqueue("replay", obj, h)

    def _enqueue(self, kind: str, a: Any, b: Any = None) -> None:
        self._enqueued += 1
        self._idle.clear()
        self._queue.append((kind, a, b))
        self._wake.set()

    def _failed(self, e: Exception) -> None:
        # a handler's bug must not kill the informer
        self.handler_errors += 1
        log.exception("informer %s: handler failed: %s", self.name, e)

    async def _dispatch(self) -> None:
        """Hand each queued event to the handlers, in order. A handler is called as it
        is (most return None); one that returns an awaitable is awaited before the next
        one runs. Thousands of events a second pass here, once per view of a watch."""
        queue = self._queue
        while True:
            if not queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            kind, a, b = queue.popleft()
            handlers: tuple[_Handlers, ...] = (b,) if kind == "replay" else tuple(self._handlers)
            for h in handlers:
                fn = (
                    h.on_update
                    if kind == "update"
                    else h.on_delete
                    if kind == "delete"
                    else h.on_add
                )
                if fn is None:
                    continue
                try:
                    res = fn(a, b) if kind == "update" else fn(a)
                    if res is not None and inspect.isawaitable(res):
                        await res
                except Exception as e:
                    self._failed(e)
            self._processed += 1
            if self._processed >= self._enqueued:
                self._idle.set()

    async def wait_idle(self, timeout: float | None = None) -> None:
        """Wait until every queued event has been handed to the handlers."""
        await asyncio.wait_for(self._idle.wait(), timeout)

    # ------------------------------------------------------------ lifecycle

    @property
    def has_synced(self) -> bool:
        return self._synced.is_set()

    async def wait_synced(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self._synced.wait(), timeout)

    def start(self) -> Informer:
        if self._task is None:
            self._stopping = False
            self._loop = asyncio.get_running_loop()
            self._dispatch_task = asyncio.get_running_loop().create_task(self._dispatch())
            run = self._run() if self.source is None else self._follow()
            self._task = asyncio.get_running_loop().create_task(run)
        return self

    async def stop(self) -> None:
        self._stopping = True
        if self.source is not None and self._fwd is not None:
            with contextlib.suppress(ValueError):
                self.source._handlers.remove(self._fwd)
            self._fwd = None
        if self.source is not None and self._tap is not None:
            self._detach(self.source, self._tap)
            self._tap = None
        self._inbox_open = False
        self._inbox.clear()
        for t in (self._task, self._dispatch_task):
            if t is not None:
                t.cancel()
        for t in (self._task, self._dispatch_task):
            if t is not None:
                try:
                    await t
                except (asyncio.CancelledError, Exception):
                    pass
        self._task = None
        self._dispatch_task = None

    async def __aenter__(self) -> Informer:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------ list + watch

    async def _relist(self) -> None:
        lst = await self.client.list(
            self._res_like,
            self.namespace,
            label_selector=self.label_selector,
            field_selector=self.field_selector,
            limit=self.page_size,
        )
        self.relists += 1
        items: list[Obj] = lst.get("items") or []
        old = self.store.objects
        fresh = {key_of(o): o for o in items}
        taps = self._taps
        for key, obj in fresh.items():
            prev = old.get(key)
            if prev is None:
                self._enqueue("add", obj)
            elif _rv(prev) != _rv(obj):
                self._enqueue("update", prev, obj)
            else:
                continue
            for tap in taps:
                tap(False, obj)
        for key, prev in old.items():
            if key not in fresh:
                self._enqueue("delete", prev)
                for tap in taps:
                    tap(True, prev)
        self.store.replace_all(items)
        self.resource_version = str((lst.get("metadata") or {}).get("resourceVersion") or "")
        self._synced.set()

    def _apply(self, etype: str, obj: Obj) -> None:
        self.events_seen += 1
        rv = _rv(obj)
        if rv:
            self.resource_version = rv
        if etype == "BOOKMARK":
            return
        if etype in ("ADDED", "MODIFIED"):
            old = self.store.put(obj)
            if old is None:
                self._enqueue("add", obj)
            else:
                self._enqueue("update", old, obj)
            for tap in self._taps:
                tap(False, obj)
        elif etype == "DELETED":
            old = self.store.remove(key_of(obj))
            gone = obj if obj.get("metadata") else old
            self._enqueue("delete", gone)
            if gone is not None:
                for tap in self._taps:
                    tap(True, gone)

    # ------------------------------------------------------------ a view of a source

    def _selected(self, obj: Obj) -> bool:
        if self.namespace and (obj.get("metadata") or {}).get("namespace") != self.namespace:
            return False
        if self._fields and not fields_match(self._fields, obj):
            return False
        if self._selects is None:
            return True
        return requirements_match(self._selects, (obj.get("metadata") or {}).get("labels"))

    def _view_put(self, obj: Obj) -> None:
        key = key_of(obj)
        had = self.store.get(key)
        if self._selected(obj):
            self.store.put(obj)
            if had is None:
                self._enqueue("add", obj)
            else:
                self._enqueue("update", had, obj)
        elif had is not None:
            self.store.remove(key)
            self._enqueue("delete", had)

    def _view_delete(self, obj: Obj) -> None:
        old = self.store.remove(key_of(obj))
        if old is not None:
            self._enqueue("delete", obj if obj.get("metadata") else old)

    def _home(self) -> asyncio.AbstractEventLoop | None:
        """The source's loop where it is not this one's (a view across threads)."""
        src = self.source
        home = (src._loop if src is not None else None) or self.source_loop
        if home is None or home is asyncio.get_running_loop():
            return None
        return home

    def _detach(self, src: Informer, tap: Callable[[bool, Obj], None]) -> None:
        def remove() -> None:
            with contextlib.suppress(ValueError):
                src._taps.remove(tap)

        home = self._home()
        if home is None:
            remove()
        else:
            with contextlib.suppress(RuntimeError):  # its loop has closed: nothing to do
                home.call_soon_threadsafe(remove)

    async def _follow(self) -> None:
        """A view: take the source's objects and events (its handlers run in order,
        so this view sees them in the watch's order)."""
        src = self.source
        assert src is not None
        home = self._home()
        if home is not None:
            await self._follow_across(src, home)
            return
        if self.check_access:
            await self._until_allowed()
        src.start()
        await src.wait_synced()
        self._fwd = _Handlers(
            lambda obj: self._view_put(obj),
            lambda old, new: self._view_put(new),
            lambda obj: self._view_delete(obj),
        )
        src._handlers.append(self._fwd)
        for obj in list(src.store.objects.values()):
            if self._selected(obj):
                old = self.store.put(obj)
                self._enqueue(
                    "add" if old is None else "update", *((obj,) if old is None else (old, obj))
                )
        self.resource_version = src.resource_version
        self._synced.set()
        await asyncio.Event().wait()  # until stopped

    async def _follow_across(self, src: Informer, home: asyncio.AbstractEventLoop) -> None:
        """A view on another loop than its source's (see the module docstring)."""
        if self.check_access:  # the client's requests go where the client lives
            await _on_loop(home, self._until_allowed())
        here = asyncio.get_running_loop()
        inbox = self._inbox

        def tap(deleted: bool, obj: Obj) -> None:  # on the source's loop
            inbox.append((deleted, obj))
            if not self._inbox_posted:
                self._inbox_posted = True
                with contextlib.suppress(RuntimeError):  # this view's loop has closed
                    here.call_soon_threadsafe(self._drain_inbox)

        self._tap = tap  # (stop() takes it away again, even before it is added)

        async def attach() -> tuple[list[Obj], str]:  # on the source's loop
            src.start()
            await src.wait_synced()
            src._taps.append(tap)
            return list(src.store.objects.values()), src.resource_version

        objs, rv = await _on_loop(home, attach())
        for obj in objs:
            if self._selected(obj):
                old = self.store.put(obj)
                self._enqueue(
                    "add" if old is None else "update", *((obj,) if old is None else (old, obj))
                )
        self.resource_version = rv
        self._inbox_open = True
        self._drain_inbox()  # what came while the copy crossed over
        self._synced.set()
        await asyncio.Event().wait()  # until stopped

    def _drain_inbox(self) -> None:
        """Apply the events the source's loop handed over, in their order."""
        self._inbox_posted = False  # (before taking: a later event posts again)
        if not self._inbox_open:
            return
        inbox = self._inbox
        while inbox:
            deleted, obj = inbox.popleft()
            if deleted:
                self._view_delete(obj)
            else:
                self._view_put(obj)

    async def _until_allowed(self) -> None:
        """Wait (retrying with backoff, as an informer whose list answers 403 does)
        until this view's client may list and watch what the source watches: a
        component reading through a shared watch is held to its own RBAC."""
        failures = 0
        while True:
            try:
                denied = await self._may_read()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the review itself failed: retry like a list would
                denied = f"{type(e).__name__}: {e}"
            if not denied:
                return
            self.last_error = Forbidden(403, "Forbidden", denied, {})
            if failures == 0:
                log.warning("informer %s: %s", self.name, denied)
            await asyncio.sleep(self._delay(failures))
            failures += 1

    async def _may_read(self) -> str:
        """'' when this view's client may list and watch the resource, else why not
        (from SelfSubjectAccessReviews, so it holds on any cluster)."""
        if self.res is None:
            self.res = await self.client.resource(self._res_like)
        res = self.res
        for verb in ("list", "watch"):
            attrs = {"verb": verb, "group": res.group, "resource": res.plural}
            if self.namespace:
                attrs["namespace"] = self.namespace
            review = await self.client.request(
                "POST",
                "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                body={
                    "apiVersion": "authorization.k8s.io/v1",
                    "kind": "SelfSubjectAccessReview",
                    "spec": {"resourceAttributes": attrs},
                },
            )
            st = review.get("status") or {}
            if not st.get("allowed"):
                where = f" in namespace {self.namespace}" if self.namespace else ""
                why = st.get("reason") or st.get("evaluationError") or "no role allows it"
                return (
                    f"{self.client.component or 'this client'} may not {verb} "
                    f"{res.plural}{'.' + res.group if res.group else ''}{where}: {why}"
                )
        return ""

    def _what(self) -> str:
        """The resource as `kubectl api-resources` names it (plural.group/version)."""
        res = self.res
        if res is None:
            return str(self._res_like)
        return f"{res.plural}.{res.group}/{res.version}" if res.group else res.plural

    def _delay(self, failures: int) -> float:
        d = min(self.backoff_base * (2 ** min(failures, 16)), self.backoff_max)
        return d * (0.5 + random.random() / 2)

    async def _run(self) -> None:
        need_list = True
        failures = 0
        gones = 0
        loop = asyncio.get_running_loop()
        while not self._stopping:
            try:
                if self.res is None:
                    self.res = await self.client.resource(self._res_like)
                if need_list:
                    await self._relist()
                    need_list = False
                    if self.unserved:
                        self.unserved = False
                        log.info("informer %s: %s is served now", self.name, self._what())
                started = loop.time()
                async for etype, obj in self.client.watch(
                    self.res,
                    self.namespace,
                    label_selector=self.label_selector,
                    field_selector=self.field_selector,
                    resource_version=self.resource_version or None,
                    allow_bookmarks=True,
                    timeout_seconds=self.watch_timeout_s,
                ):
                    self._apply(etype, obj)
                    failures = gones = 0
                self.watch_restarts += 1
                if loop.time() - started < self.watch_timeout_s * 0.5:
                    # Closed long before its timeout: the server went away or dropped us
                    # (a slow watcher). Its history may be gone: relist, after a pause
                    # if this keeps happening.
                    need_list = True
                    failures += 1
                    await asyncio.sleep(self._delay(failures - 1) if failures > 1 else 0)
                # else: a normal end at timeoutSeconds; resume from our resourceVersion.
            except asyncio.CancelledError:
                raise
            except Gone as e:
                # Expired resourceVersion: relist at once, unless it keeps happening.
                self.last_error = e
                need_list = True
                gones += 1
                if gones > 1:
                    await asyncio.sleep(self._delay(gones - 2))
            except NotFound as e:
                # The API serves no such resource (an optional API: a CRD not installed,
                # a kind this cluster's version lacks). Said once, not warned at every
                # retry; it is looked for again at the backoff's pace, so an API that
                # appears later (its CRD installed) is picked up.
                self.last_error = e
                need_list = True
                if not self.unserved:
                    self.unserved = True
                    log.info(
                        "informer %s: the cluster serves no %s; watched once it does",
                        self.name,
                        self._what(),
                    )
                await asyncio.sleep(self._delay(failures))
                failures += 1
            except Exception as e:  # KubeError, OSError, TimeoutError, ...
                # A broken connection or server error: relist after a backoff, so
                # changes made while we were blind (deletes included) are seen.
                self.last_error = e
                need_list = True
                log.warning("informer %s: %s: %s", self.name, type(e).__name__, e)
                await asyncio.sleep(self._delay(failures))
                failures += 1


async def _on_loop(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any]) -> Any:
    """Await coro on another thread's loop (cancelled there if cancelled here)."""
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))


# Fields a view can select on itself (the field selectors components use); a view with
# any other field selector is not made: the component gets a watch of its own.
VIEW_FIELDS = ("metadata.name", "metadata.namespace", "spec.nodeName", "status.phase")
FieldTerm = tuple[str, bool, str]  # (path, equal?, value)


def field_terms(selector: str | None) -> list[FieldTerm] | None:
    """A field selector as terms a view evaluates (None: one a view cannot)."""
    if not selector:
        return []
    out: list[FieldTerm] = []
    for part in selector.split(","):
        part = part.strip()
        if "!=" in part:
            path, _, value = part.partition("!=")
            eq = False
        elif "==" in part:
            path, _, value = part.partition("==")
            eq = True
        elif "=" in part:
            path, _, value = part.partition("=")
            eq = True
        else:
            return None
        path = path.strip()
        if path not in VIEW_FIELDS:
            return None
        out.append((path, eq, value.strip()))
    return out


def fields_match(terms: list[FieldTerm], obj: Obj) -> bool:
    for path, eq, value in terms:
        top, _, key = path.partition(".")
        got = str((obj.get(top) or {}).get(key) or "")
        if (got == value) != eq:
            return False
    return True


class InformerFactory:
    """One shared informer per (resource, namespace, label selector, field selector);
    with `views=True`, a view of its own per call over one watch per (resource,
    namespace) (see the module docstring)."""

    def __init__(self, client: Client, views: bool = False, **informer_kw: Any) -> None:
        self.client = client
        self.views = views
        # the loop its informers run on (where made in one): views started on another
        # loop are fed across threads
        try:
            self.loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self.loop = None
        self.informer_kw = informer_kw
        self._informers: dict[tuple[Any, ...], Informer] = {}

    def informer(
        self,
        res: ResLike,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        name: str | None = None,
        client: Client | None = None,
    ) -> Informer:
        """`client`: the identity the view reads as (a component's own client); the
        view gets the objects only once that client may list and watch them, so a
        component is held to its own RBAC though the watch is the factory's."""
        if isinstance(res, tuple) and res in BUILTIN:
            res = BUILTIN[res]
        if self.views and field_terms(field_selector) is not None:
            reader = client or self.client
            return Informer(
                reader,
                res,
                namespace,
                label_selector=label_selector,
                field_selector=field_selector,
                name=name,
                # one watch of the resource in every namespace; the view keeps its own
                source=self._shared(res, None, None, None),
                check_access=reader is not self.client,
                source_loop=self.loop,
            )
        return self._shared(res, namespace, label_selector, field_selector)

    def _shared(
        self,
        res: ResLike,
        namespace: str | None,
        label_selector: str | None,
        field_selector: str | None,
    ) -> Informer:
        key = (res, namespace, label_selector or "", field_selector or "")
        inf = self._informers.get(key)
        if inf is None:
            inf = Informer(
                self.client,
                res,
                namespace,
                label_selector=label_selector,
                field_selector=field_selector,
                **self.informer_kw,
            )
            self._informers[key] = inf
        return inf

    def start(self) -> None:
        for inf in self._informers.values():
            inf.start()

    async def wait_synced(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(
            asyncio.gather(*(i.wait_synced() for i in self._informers.values())), timeout
        )

    async def stop(self) -> None:
        for inf in self._informers.values():
            await inf.stop()

    @property
    def informers(self) -> list[Informer]:
        return list(self._informers.values())


def informer_maker(client: Client, factory: InformerFactory | None) -> Callable[..., Informer]:
    """How a component makes its informers: its own (`Informer(client, ...)`), or, when
    it runs in a process that shares watches, views from that process's factory. Both
    take (res, namespace=None, *, label_selector=, field_selector=, name=)."""

    def own(res: ResLike, namespace: str | None = None, **kw: Any) -> Informer:
        return Informer(client, res, namespace, **kw)

    if factory is None or not factory.views:
        return own

    def view(res: ResLike, namespace: str | None = None, **kw: Any) -> Informer:
        # a field selection a view cannot make itself is a watch of the component's own
        if field_terms(kw.get("field_selector")) is None:
            return own(res, namespace, **kw)
        return factory.informer(res, namespace, client=client, **kw)

    return view
