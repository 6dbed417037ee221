"""Revisioned object store of the embedded API server, with watch fan-out and persistence.

- Every write takes the next value of one global revision counter; that value is the
  object's resourceVersion (a string on the wire).
- Objects live in memory as their serialized JSON bytes (`Entry.raw`), plus the few
  things lists and watches filter on (labels, selectable fields), so that a list is a
  byte concatenation and a watch event is serialized once for every watcher.
- Each collection keeps a bounded log of recent events for resuming watches; asking
  for a version older than that log is answered with 410 Expired.
- With a data directory, every write goes to SQLite (one row per key holding its current
  state, plus the revision counter) and is acknowledged only after its transaction
  commits. Writes waiting at the same time share one commit (group commit). WAL with
  synchronous=NORMAL: a committed transaction is in the WAL file once `commit()`
  returns, so it survives the process being killed (kill -9); an operating-system crash
  or power loss can lose the last transactions unless `fsync=True` (synchronous=FULL).
- Reads (GET, lists, watches, the indexes) show only committed state: a write is
  checked against the newest state, pending writes included (`latest`), but it reaches
  the collections, the indexes and the watchers when its transaction has committed, in
  revision order. So no client is ever shown an object or a resourceVersion that a
  crash could take back, and a restart never reuses a version anyone saw.
- A failed commit (disk full, I/O error) fails its writes and every write queued behind
  them (they may build on them) and leaves memory exactly as it was: the revision
  counter goes back to the last committed one. On no space left the store turns
  read-only (writes answered 507 at once) and probes the disk until writes fit again;
  it also opens read-only when the disk is full at start.
"""

from __future__ import annotations

import asyncio
import bisect
import errno
import itertools
import logging
import os
import sqlite3
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from gpuyard.apiserver.selectors import Filter, fields_of, supported_fields
from gpuyard.k8s.jsonbytes import dumps_kept

CollKey = tuple[str, str]  # (group, plural)


class StoreError(Exception):
    """A store-level refusal; the server turns it into a Status."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message


log = logging.getLogger("gpuyard.apiserver.store")

# Free space a full disk must have again before the store accepts writes after a
# refusal (so it does not flap between read-only and writable on every small free).
MIN_FREE_BYTES = 256 * 1024


class StorageFailure(Exception):
    """The durable copy could not be written: nothing of the write was kept. Not a
    StoreError, so code that treats a StoreError as "not there" or "conflict" lets it
    through to the client."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message


def _is_no_space(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return True
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF == sqlite3.SQLITE_FULL:
        return True
    return "disk is full" in str(exc) or "No space left" in str(exc)


def _is_read_only(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return True
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF == sqlite3.SQLITE_READONLY:
        return True
    return "readonly database" in str(exc)


def storage_error(exc: BaseException) -> StorageFailure:
    """The Status a failed commit is answered with: the cause named, and that nothing
    was stored."""
    if isinstance(exc, StorageFailure):
        return exc
    if _is_no_space(exc):
        return StorageFailure(
            507, "InsufficientStorage", "storage: no space left on device; the write was not stored"
        )
    if _is_read_only(exc):
        return StorageFailure(
            500,
            "InternalError",
            "storage: the data directory is not writable (read-only file system or "
            "permissions); the write was not stored",
        )
    return StorageFailure(500, "InternalError", f"storage: {exc}; the write was not stored")


def private_dir(path: str) -> None:
    """Make a data directory readable by its owner only (it holds Secrets)."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    try:
        if os.stat(path).st_mode & 0o077:
            os.chmod(path, 0o700)
    except OSError as exc:  # not ours, or read-only: the open says what is wrong
        log.warning("cannot make %s private: %s", path, exc)


def _private_file(path: str) -> None:
    """Create the file 0600 if missing; make it 0600 if it exists with wider modes."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


class Entry:
    """The stored state of one object."""

    __slots__ = ("rv", "raw", "namespace", "name", "labels", "fields", "uid", "owners")

    def __init__(
        self,
        rv: int,
        raw: bytes,
        namespace: str,
        name: str,
        labels: dict[str, str] | None,
        fields: dict[str, str] | None,
        uid: str,
        owners: tuple[str, ...],
    ) -> None:
        self.rv = rv
        self.raw = raw
        self.namespace = namespace
        self.name = name
        self.labels = labels
        self.fields = fields
        self.uid = uid
        self.owners = owners

    def obj(self) -> dict[str, Any]:
        """A fresh, mutable copy of the object."""
        out: dict[str, Any] = orjson.loads(self.raw)
        return out

    def matches(self, flt: Filter) -> bool:
        return flt.trivial or flt.matches(self.namespace, self.name, self.labels, self.fields)


def make_key(namespace: str, name: str) -> str:
    return f"{namespace}/{name}" if namespace else name


# Per kind, the field paths grouped by the object holding them: (path to that object,
# ((field, key in it, value when absent), ...)), so a pod's eight fields cost two walks
# (spec, status) instead of eight, and an Event's eleven two (involvedObject, the top).
_FieldPlan = tuple[tuple[tuple[str, ...], tuple[tuple[str, str, str], ...]], ...]
_FIELD_PLANS: dict[tuple[str, str], _FieldPlan | None] = {}


def _field_plan(group: str, plural: str) -> _FieldPlan | None:
    names_ = supported_fields(group, plural)[2:]  # after metadata.name, metadata.namespace
    groups: dict[tuple[str, ...], list[tuple[str, str, str]]] = {}
    for p in names_:
        *holder, last = p.split(".")
        absent = "false" if p in ("spec.unschedulable", "spec.hostNetwork") else ""
        groups.setdefault(tuple(holder), []).append((p, last, absent))
    return tuple((holder, tuple(leaves)) for holder, leaves in groups.items())


def _fields(group: str, plural: str, obj: dict[str, Any]) -> dict[str, str] | None:
    """`selectors.fields_of`, with each kind's field paths split and grouped once (every
    write of a pod computes eight of these; the generic walk was a tenth of a write's
    cost). The fields keep the order of `supported_fields` within each holder."""
    key = (group, plural)
    try:
        plan = _FIELD_PLANS[key]
    except KeyError:
        plan = _FIELD_PLANS[key] = _field_plan(group, plural)
    if plan is None:
        return fields_of(group, plural, obj)
    if not plan:
        return None
    out: dict[str, str] = {}
    for holder, leaves in plan:
        cur: Any = obj
        for part in holder:
            cur = cur.get(part)
            if not isinstance(cur, dict):
                cur = None
                break
        if cur is None:
            for name, _, absent in leaves:
                out[name] = absent
            continue
        for name, last, absent in leaves:
            v = cur.get(last)
            if type(v) is dict and name == "source":
                v = v.get("component")  # an Event's source is its source.component
            if v is None:
                out[name] = absent
            elif type(v) is str:
                out[name] = v
            elif v is True:
                out[name] = "true"
            elif v is False:
                out[name] = "false"
            else:
                out[name] = str(v)
    return out


def _entry_for(group: str, plural: str, obj: dict[str, Any], raw: bytes, rv: int) -> Entry:
    md = obj.get("metadata") or {}
    return Entry(
        rv,
        raw,
        md.get("namespace") or "",
        md.get("name") or "",
        md.get("labels") or None,
        _fields(group, plural, obj),
        md.get("uid") or "",
        tuple(o.get("uid", "") for o in md.get("ownerReferences") or () if isinstance(o, dict)),
    )


class Event:
    """One change, serialized once per watch event type it may be shown as while it is
    offered to the watchers (`forget_lines` after: the log keeps the entry, not a
    second copy of its encoding in each line)."""

    __slots__ = ("rv", "type", "entry", "prev", "_lines")

    def __init__(self, rv: int, type_: str, entry: Entry, prev: Entry | None) -> None:
        self.rv = rv
        self.type = type_
        self.entry = entry
        self.prev = prev
        self._lines: dict[str, bytes] | None = None

    def line(self, type_: str | None = None) -> bytes:
        t = type_ or self.type
        lines = self._lines
        if lines is None:
            lines = self._lines = {}
        b = lines.get(t)
        if b is None:
            b = b'{"type":"' + t.encode() + b'","object":' + self.entry.raw + b"}\n"
            lines[t] = b
        return b

    def line_for(self, flt: Filter) -> bytes | None:
        """The line a watcher with this filter sees, or None (with the Kubernetes rule:
        an object that stops matching is shown DELETED, one that starts matching ADDED)."""
        if flt.trivial:
            return self.line()
        new_m = self.entry.matches(flt)
        if self.type != "MODIFIED":
            return self.line() if new_m else None
        old_m = self.prev is not None and self.prev.matches(flt)
        if new_m:
            return self.line() if old_m else self.line("ADDED")
        return self.line("DELETED") if old_m else None

    def forget_lines(self) -> None:
        """Drop the lines made so far (watchers keep what they were given)."""
        self._lines = None


class Watcher:
    """A subscriber to one collection, with its own bounded buffer."""

    __slots__ = (
        "flt",
        "buf",
        "size",
        "limit",
        "waiter",
        "closed",
        "overflowed",
        "min_rv",
        "index_key",
        "timer",
    )

    def __init__(self, flt: Filter, limit: int) -> None:
        self.flt = flt
        self.buf: deque[bytes] = deque()
        self.size = 0
        self.limit = limit
        self.waiter: asyncio.Future[None] | None = None
        self.closed = False
        self.overflowed = False
        self.min_rv = 0  # events at or below this were already delivered (list/backlog)
        self.index_key: tuple[str, str] | None = None
        self.timer: asyncio.TimerHandle | None = None  # ends a wait (see wait)

    def offer(self, ev: Event) -> None:
        if self.closed or ev.rv <= self.min_rv:
            return
        line = ev.line_for(self.flt)
        if line is not None:
            self.push(line)

    def push(self, line: bytes) -> None:
        """Buffer one line for the client (the watch is closed when the buffer is full)."""
        if self.size >= self.limit:
            # Too slow: close the watch; the client will relist.
            self.closed = True
            self.overflowed = True
            self.buf.clear()
        else:
            self.buf.append(line)
            self.size += 1
        f = self.waiter
        if f is not None and not f.done():
            f.set_result(None)

    def drain(self) -> list[bytes]:
        out = list(self.buf)
        self.buf.clear()
        self.size = 0
        return out

    def close(self) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        f = self.waiter
        if f is not None and not f.done():
            f.set_result(None)

    async def wait(self, timeout: float) -> bool:
        """Wait until there is something to read or the watch closed; False when the
        timeout came first. (A bare future: cheaper than an Event under wait_for, which
        matters with hundreds of watchers and thousands of events a second.)

        The timer outlives the wait: a later wait keeps it while it is due no later
        than its own timeout, so a wait may end early (the caller reads its clock and
        waits again) but never late. A timer armed and cancelled per wait was a fifth
        of the cost of waking a watcher for an event."""
        if self.buf or self.closed:
            return True
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self.waiter = fut
        t = self.timer
        if t is None or t.when() > loop.time() + timeout:
            if t is not None:
                t.cancel()
            self.timer = loop.call_later(timeout, self._expire)
        try:
            await fut
        finally:
            self.waiter = None
        return bool(self.buf) or self.closed

    def _expire(self) -> None:
        self.timer = None
        self._wake()

    def stop_timer(self) -> None:
        t = self.timer
        if t is not None:
            t.cancel()
            self.timer = None


_UNSEEN = b"<unseen>"  # never a line: each ends with a newline


def _fan_out(ev: Event, watchers: Iterable[Watcher]) -> None:
    """Offer `ev` to each watcher, its line found once per distinct filter: watchers
    of one namespace or selector (every client's informer of a kind) share one match
    and one line instead of each checking the event again."""
    lines: dict[tuple[Any, ...], bytes | None] = {}
    rv = ev.rv
    for w in watchers:
        if w.closed or rv <= w.min_rv:
            continue
        k = w.flt.key
        line = lines.get(k, _UNSEEN)
        if line is _UNSEEN:
            line = lines[k] = ev.line_for(w.flt)
        if line is not None:
            w.push(line)


INDEX_FIELD = "spec.nodeName"  # pods by node: every kubelet lists and watches this way


def _node_of(e: Entry | None) -> str | None:
    if e is None or e.fields is None:
        return None
    return e.fields.get(INDEX_FIELD)


class Collection:
    """All objects of one (group, plural), its event log and its watchers.

    Watchers whose selector pins spec.nodeName or metadata.name to one value are kept in
    an index, so an event is offered only to the watchers it can concern (7,500
    kubelets each watching their own node's pods must not cost 7,500 filter checks per
    pod change). Items are indexed by spec.nodeName for the same kind of lists.
    """

    def __init__(self, key: CollKey, log_size: int, start_rv: int) -> None:
        self.key = key
        self.items: dict[str, Entry] = {}
        self.log: deque[Event] = deque()
        self.log_size = log_size
        self.compacted_rv = start_rv  # events at or before this are not in the log
        self.watchers: set[Watcher] = set()  # not indexed
        self.by_field: dict[tuple[str, str], set[Watcher]] = {}
        self.by_node: dict[str, set[str]] = {}  # spec.nodeName -> keys
        self._sorted: list[str] | None = None  # cached key order, reset when keys change

    def sorted_keys(self) -> list[str]:
        if self._sorted is None:
            self._sorted = sorted(self.items)
        return self._sorted

    def all_watchers(self) -> list[Watcher]:
        out = list(self.watchers)
        for ws in self.by_field.values():
            out.extend(ws)
        return out

    def add_watcher(self, w: Watcher) -> None:
        k = w.flt.index_key()
        w.index_key = k
        if k is None:
            self.watchers.add(w)
        else:
            self.by_field.setdefault(k, set()).add(w)

    def remove_watcher(self, w: Watcher) -> None:
        k = w.index_key
        if k is None:
            self.watchers.discard(w)
            return
        ws = self.by_field.get(k)
        if ws is not None:
            ws.discard(w)
            if not ws:
                del self.by_field[k]

    def index_item(self, key: str, old: Entry | None, new: Entry | None) -> None:
        if old is None or new is None:
            self._sorted = None
        a, b = _node_of(old), _node_of(new)
        if a == b:
            return
        if a is not None:
            keys = self.by_node.get(a)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self.by_node[a]
        if b is not None:
            self.by_node.setdefault(b, set()).add(key)

    def publish(self, ev: Event) -> None:
        log = self.log
        log.append(ev)
        if len(log) > self.log_size:
            self.compacted_rv = log.popleft().rv
        if self.watchers:
            _fan_out(ev, tuple(self.watchers))
        if self.by_field:
            by = self.by_field
            targets: set[Watcher] = set()
            for e in (ev.entry, ev.prev):
                if e is None:
                    continue
                ws = by.get(("metadata.name", e.name))
                if ws:
                    targets.update(ws)
                node = _node_of(e)
                if node is not None:
                    ws = by.get((INDEX_FIELD, node))
                    if ws:
                        targets.update(ws)
            for w in targets:
                w.offer(ev)
        ev.forget_lines()  # the log keeps each revision's entry, not its lines too


class _SQLite:
    """The durable copy: one row per key with its current state, plus the revision."""

    def __init__(self, path: str, fsync: bool = False) -> None:
        self.path = path
        self.read_only = False  # no space: refuse writes until probe() succeeds
        try:
            if not os.path.exists(path):
                _private_file(path)
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(path + suffix) and os.stat(path + suffix).st_mode & 0o077:
                    os.chmod(path + suffix, 0o600)
        except OSError as exc:
            if not (_is_no_space(exc) and os.path.exists(path)):
                raise StorageFailure(
                    500, "InternalError", f"cannot open the store {path}: {exc}"
                ) from exc
        try:
            self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: durable against process kill -9 (see module docstring);
            # FULL also against power loss, at the price of an fsync per commit.
            self.db.execute(f"PRAGMA synchronous={'FULL' if fsync else 'NORMAL'}")
        except sqlite3.Error as exc:
            raise StorageFailure(
                500, "InternalError", f"cannot open the store {path}: {exc}"
            ) from exc
        try:
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS objects (coll TEXT NOT NULL, key TEXT NOT NULL, "
                "rv INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (coll, key)) WITHOUT ROWID"
            )
            self.db.execute("CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER)")
        except sqlite3.Error as exc:
            if not _is_no_space(exc):
                raise StorageFailure(
                    500, "InternalError", f"cannot open the store {path}: {exc}"
                ) from exc
            self.read_only = True
            self._rollback()
        if not self.read_only and not self.probe():
            self.read_only = True

    def _rollback(self) -> None:
        if self.db.in_transaction:
            try:
                self.db.execute("ROLLBACK")
            except sqlite3.Error:
                pass

    def load(self) -> tuple[int, list[tuple[str, str, int, bytes]]]:
        try:
            row = self.db.execute("SELECT v FROM meta WHERE k='revision'").fetchone()
            rows = self.db.execute("SELECT coll, key, rv, data FROM objects").fetchall()
        except sqlite3.OperationalError as exc:
            if self.read_only and "no such table" in str(exc):
                return 0, []  # a new store on a full disk: empty until there is space
            raise
        rev = int(row[0]) if row else 0
        return rev, rows

    def probe(self) -> bool:
        """Whether writes fit again: some free space, and a real (tiny) commit works."""
        try:
            st = os.statvfs(os.path.dirname(self.path) or ".")
            if st.f_bavail * st.f_frsize < MIN_FREE_BYTES:
                return False
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS objects (coll TEXT NOT NULL, key TEXT NOT NULL, "
                "rv INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (coll, key)) WITHOUT ROWID"
            )
            self.db.execute("CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER)")
            self.db.execute("INSERT OR REPLACE INTO meta VALUES ('probe', 0)")
            self.db.execute("COMMIT")
            return True
        except (OSError, sqlite3.Error):
            self._rollback()
            return False

    def write(self, ops: list[tuple[str, str, int, bytes | None]], rev: int) -> None:
        db = self.db
        db.execute("BEGIN")
        try:
            puts = [(c, k, rv, d) for c, k, rv, d in ops if d is not None]
            dels = [(c, k) for c, k, _, d in ops if d is None]
            if puts:
                db.executemany("INSERT OR REPLACE INTO objects VALUES (?,?,?,?)", puts)
            if dels:
                db.executemany("DELETE FROM objects WHERE coll=? AND key=?", dels)
            db.execute("INSERT OR REPLACE INTO meta VALUES ('revision', ?)", (rev,))
            db.execute("COMMIT")
        except BaseException:
            # SQLite may have rolled back already (it does on SQLITE_FULL): a ROLLBACK
            # then would fail and hide the cause.
            self._rollback()
            raise

    def close(self) -> None:
        self.db.close()


# A write waiting for its commit: (collection, key, rv, stored bytes or None for a
# delete, the new entry or None, its event, its future).
_Pending = tuple[CollKey, str, int, "bytes | None", "Entry | None", Event, "asyncio.Future[None]"]


def _coll_name(key: CollKey) -> str:
    return f"{key[1]}.{key[0]}" if key[0] else key[1]


def _coll_key(name: str) -> CollKey:
    plural, _, group = name.partition(".")
    return (group, plural)


class Store:
    """The revisioned store. All methods run on the event loop; writes are awaited
    until durable (immediately when in memory)."""

    def __init__(
        self,
        data_dir: str | None = None,
        log_size: int = 50_000,
        watch_buffer: int = 20_000,
        *,
        fsync: bool = False,
        probe_interval: float = 2.0,
    ) -> None:
        self.rev = 0  # the newest revision handed out (pending writes included)
        self.start_rv = 0
        self.log_size = log_size
        self.watch_buffer = watch_buffer
        self.probe_interval = probe_interval
        self.colls: dict[CollKey, Collection] = {}
        self.owner_index: dict[str, set[tuple[CollKey, str]]] = {}
        self.uids: dict[str, tuple[CollKey, str]] = {}
        self._db: _SQLite | None = None
        self._pending: list[_Pending] = []
        # The newest pending (not yet committed) write of each key: (rv, entry or None
        # for a delete, its future). Writers check against it; readers never see it.
        self._overlay: dict[tuple[CollKey, str], tuple[int, Entry | None, asyncio.Future[None]]]
        self._overlay = {}
        self._overlay_n: dict[CollKey, int] = {}  # overlay keys per collection
        self._committer: asyncio.Task[None] | None = None
        self._prober: asyncio.Task[None] | None = None
        self.published_rv = 0  # the newest committed revision: what reads report
        self.listeners: list[Callable[[CollKey, Event], None]] = []
        if data_dir is not None:
            try:
                private_dir(data_dir)
            except OSError as exc:
                raise StorageFailure(
                    500, "InternalError", f"cannot create the data directory {data_dir}: {exc}"
                ) from exc
            self._db = _SQLite(os.path.join(data_dir, "store.db"), fsync=fsync)
            rev, rows = self._db.load()
            for coll, key, rv, data in rows:
                ck = _coll_key(coll)
                obj = orjson.loads(data)
                e = _entry_for(ck[0], ck[1], obj, bytes(data), rv)
                self.coll(ck).items[key] = e
                self.coll(ck).index_item(key, None, e)
                self._index_owners(ck, key, None, e)
                rev = max(rev, rv)
            self.rev = rev
            for c in self.colls.values():
                c.compacted_rv = rev
            if self._db.read_only:
                log.warning(
                    "the disk of %s is full: serving reads only until there is space again",
                    data_dir,
                )
        self.published_rv = self.rev
        # Events before this revision (before a restart) are unknown to every collection.
        # A collection first touched later has missed nothing since: any change to it
        # would have created it.
        self.start_rv = self.rev

    @property
    def read_only(self) -> bool:
        """True while writes are refused for want of space."""
        return self._db is not None and self._db.read_only

    @property
    def persistent(self) -> bool:
        return self._db is not None

    def coll(self, key: CollKey) -> Collection:
        c = self.colls.get(key)
        if c is None:
            c = self.colls[key] = Collection(key, self.log_size, self.start_rv)
        return c

    # -- reads ----------------------------------------------------------------------

    def get(self, ck: CollKey, key: str) -> Entry | None:
        """The committed state of one object."""
        c = self.colls.get(ck)
        return c.items.get(key) if c else None

    def latest(self, ck: CollKey, key: str) -> Entry | None:
        """The newest state of one object, pending writes included: what a write is
        checked against and builds on (never shown to a reader)."""
        p = self._overlay.get((ck, key))
        if p is not None:
            return p[1]
        c = self.colls.get(ck)
        return c.items.get(key) if c else None

    def pending(self, ck: CollKey, key: str) -> bool:
        """Whether a write of this key waits for its commit."""
        p = self._overlay.get((ck, key))
        return p is not None and not p[2].done()

    async def committed(self, ck: CollKey, key: str) -> Entry | None:
        """The committed state of one object once no write of it is pending: what a
        request that writes nothing answers with."""
        await self.settled(ck, key)
        return self.get(ck, key)

    async def settled(self, ck: CollKey, key: str) -> None:
        """Wait until no write of this key is pending (committed or failed)."""
        while (p := self._overlay.get((ck, key))) is not None and not p[2].done():
            try:
                await asyncio.shield(p[2])
            except Exception:
                pass

    def newest(self, ck: CollKey) -> list[Entry]:
        """Every object of a collection in its newest state, pending writes included
        (what an allocation must not hand out twice; never shown to a reader)."""
        c = self.colls.get(ck)
        if not self._overlay_n.get(ck):  # no write of it pending: the committed items
            return list(c.items.values()) if c else []
        items = dict(c.items) if c else {}
        for (pck, key), (_rv, e, _fut) in self._overlay.items():
            if pck != ck:
                continue
            if e is None:
                items.pop(key, None)
            else:
                items[key] = e
        return list(items.values())

    def entries(self, ck: CollKey, flt: Filter | None = None) -> Iterable[Entry]:
        c = self.colls.get(ck)
        if c is None:
            return ()
        if flt is None or flt.trivial:
            return c.items.values()
        return (e for e in self._candidates(c, flt) if e.matches(flt))

    def _candidates(self, c: Collection, flt: Filter) -> Iterable[Entry]:
        """Entries that may match: narrowed by the name or node index when it can."""
        name = flt.eq("metadata.name")
        if name is not None and (flt.namespace is not None or flt.cluster_scoped):
            e = c.items.get(make_key(flt.namespace or "", name))
            return (e,) if e is not None else ()
        node = flt.eq(INDEX_FIELD)
        if node is not None and c.key == ("", "pods"):
            items = c.items
            return [items[k] for k in c.by_node.get(node, ()) if k in items]
        return c.items.values()

    def list_sorted(
        self, ck: CollKey, flt: Filter, start_after: str = "", limit: int = 0
    ) -> tuple[list[Entry], str]:
        """Entries in key order; with a limit, also the last key returned when more remain."""
        c = self.colls.get(ck)
        if c is None:
            return [], ""
        items = c.items
        keys = (
            c.sorted_keys()
            if flt.trivial
            else sorted(make_key(e.namespace, e.name) for e in self._candidates(c, flt))
        )
        start = bisect.bisect_right(keys, start_after) if start_after else 0
        out: list[Entry] = []
        for k in itertools.islice(keys, start, None):
            e = items[k]
            if flt.trivial or e.matches(flt):
                if limit and len(out) >= limit:
                    return out, _key_of(out[-1])
                out.append(e)
        return out, ""

    def dependents(self, owner_uid: str) -> list[tuple[CollKey, str]]:
        return list(self.owner_index.get(owner_uid, ()))

    # -- writes ---------------------------------------------------------------------

    def _index_owners(self, ck: CollKey, key: str, old: Entry | None, new: Entry | None) -> None:
        if old is not None and new is None:
            self.uids.pop(old.uid, None)
        if new is not None:
            self.uids[new.uid] = (ck, key)
        if old is not None:
            for u in old.owners:
                s = self.owner_index.get(u)
                if s is not None:
                    s.discard((ck, key))
                    if not s:
                        del self.owner_index[u]
        if new is not None:
            for u in new.owners:
                self.owner_index.setdefault(u, set()).add((ck, key))

    def put_nowait(
        self,
        ck: CollKey,
        obj: dict[str, Any],
        *,
        create: bool = False,
        expect_rv: int | None = None,
    ) -> tuple[Entry, asyncio.Future[None] | None]:
        """Store obj (its metadata.resourceVersion is set here). Checks happen at once,
        against the newest state; the returned future (None when in memory) resolves
        when the write is durable and visible, or fails with a StorageFailure."""
        md = obj["metadata"]
        key = make_key(md.get("namespace") or "", md["name"])
        old = self.latest(ck, key)
        if create and old is not None:
            raise StoreError(409, "AlreadyExists", "exists")
        if not create and old is None:
            raise StoreError(404, "NotFound", "not found")
        if expect_rv is not None and old is not None and old.rv != expect_rv:
            raise StoreError(409, "Conflict", "conflict")
        self._check_writable()
        self.rev += 1
        rv = self.rev
        md["resourceVersion"] = str(rv)
        raw = dumps_kept(obj)  # kept as long as this revision is: at its own size
        e = _entry_for(ck[0], ck[1], obj, raw, rv)
        ev = Event(rv, "ADDED" if old is None else "MODIFIED", e, old)
        return e, self._persist(ck, key, rv, raw, e, ev)

    def delete_nowait(
        self, ck: CollKey, key: str, expect_rv: int | None = None
    ) -> tuple[Entry, asyncio.Future[None] | None]:
        old = self.latest(ck, key)
        if old is None:
            raise StoreError(404, "NotFound", "not found")
        if expect_rv is not None and old.rv != expect_rv:
            raise StoreError(409, "Conflict", "conflict")
        self._check_writable()
        self.rev += 1
        rv = self.rev
        obj = old.obj()
        obj["metadata"]["resourceVersion"] = str(rv)
        raw = dumps_kept(obj)  # kept as long as this revision is: at its own size
        e = Entry(rv, raw, old.namespace, old.name, old.labels, old.fields, old.uid, old.owners)
        ev = Event(rv, "DELETED", e, old)
        return e, self._persist(ck, key, rv, None, None, ev)

    async def put(
        self,
        ck: CollKey,
        obj: dict[str, Any],
        *,
        create: bool = False,
        expect_rv: int | None = None,
    ) -> Entry:
        e, fut = self.put_nowait(ck, obj, create=create, expect_rv=expect_rv)
        if fut is not None:
            await fut
        return e

    async def delete(self, ck: CollKey, key: str, expect_rv: int | None = None) -> Entry:
        e, fut = self.delete_nowait(ck, key, expect_rv)
        if fut is not None:
            await fut
        return e

    def _check_writable(self) -> None:
        if self._db is not None and self._db.read_only:
            self._start_probe()
            raise StorageFailure(
                507,
                "InsufficientStorage",
                "storage: no space left on device; the server is read-only until there "
                "is space again; the write was not stored",
            )

    def _persist(
        self, ck: CollKey, key: str, rv: int, raw: bytes | None, new: Entry | None, ev: Event
    ) -> asyncio.Future[None] | None:
        if self._db is None:
            self._apply(ck, key, new, ev)
            return None
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((ck, key, rv, raw, new, ev, fut))
        if (ck, key) not in self._overlay:
            self._overlay_n[ck] = self._overlay_n.get(ck, 0) + 1
        self._overlay[(ck, key)] = (rv, new, fut)
        if self._committer is None or self._committer.done():
            self._committer = asyncio.get_running_loop().create_task(self._commit_loop())
        return fut

    def _apply(self, ck: CollKey, key: str, new: Entry | None, ev: Event) -> None:
        """A committed write reaches memory: items, indexes, then the watchers."""
        c = self.coll(ck)
        old = c.items.get(key)
        if new is None:
            c.items.pop(key, None)
        else:
            c.items[key] = new
        c.index_item(key, old, new)
        self._index_owners(ck, key, old, new)
        self.published_rv = ev.rv
        c.publish(ev)
        for fn in self.listeners:
            fn(ck, ev)

    async def _commit_loop(self) -> None:
        assert self._db is not None
        while self._pending:
            # Yield once so writes issued in the same loop iteration join this batch.
            await asyncio.sleep(0)
            batch, self._pending = self._pending, []
            ops = [(_coll_name(p[0]), p[1], p[2], p[3]) for p in batch]
            try:
                await asyncio.to_thread(self._db.write, ops, batch[-1][2])
            except Exception as exc:  # disk full, I/O error: nothing of it was kept
                self._fail(batch, exc)
                continue
            overlay = self._overlay
            for ck, key, rv, _, new, ev, _ in batch:
                self._apply(ck, key, new, ev)
                cur = overlay.get((ck, key))
                if cur is not None and cur[0] == rv:
                    del overlay[(ck, key)]
                    self._overlay_n[ck] -= 1
            for p in batch:
                if not p[6].done():
                    p[6].set_result(None)

    def _fail(self, batch: list[_Pending], exc: BaseException) -> None:
        """A commit failed: fail its writes and all queued behind them (they were
        checked against, and may build on, the failed ones), and forget them: memory
        is as it was at the last commit, the revision counter included."""
        err = storage_error(exc)
        queued, self._pending = self._pending, []
        self._overlay.clear()
        self._overlay_n.clear()
        self.rev = self.published_rv
        if err.code == 507 and self._db is not None and not self._db.read_only:
            log.error("storage: no space left on device: read-only until there is space")
            self._db.read_only = True
            self._start_probe()
        else:
            log.error("storage: commit failed: %s", exc)
        for p in (*batch, *queued):
            fut = p[6]
            if not fut.done():
                fut.set_exception(StorageFailure(err.code, err.reason, err.message))

    def _start_probe(self) -> None:
        if self._prober is None or self._prober.done():
            self._prober = asyncio.get_running_loop().create_task(self._probe_loop())

    async def _probe_loop(self) -> None:
        db = self._db
        while db is not None and db is self._db and db.read_only:
            await asyncio.sleep(self.probe_interval)
            if db is self._db and not self._pending and await asyncio.to_thread(db.probe):
                db.read_only = False
                log.warning("storage: there is space again: writes are accepted")

    async def flush(self) -> None:
        while self._committer is not None and not self._committer.done():
            await asyncio.shield(self._committer)

    async def close(self) -> None:
        await self.flush()
        if self._prober is not None:
            self._prober.cancel()
        for c in self.colls.values():
            for w in c.all_watchers():
                w.close()
        if self._db is not None:
            self._db.close()
            self._db = None

    # -- watch ----------------------------------------------------------------------

    def watch(
        self, ck: CollKey, flt: Filter, since_rv: int | None
    ) -> tuple[Watcher, list[bytes] | None]:
        """Subscribe. With since_rv, also the buffered lines after it, or None if that
        version is older than the log (the caller answers 410 Expired)."""
        c = self.coll(ck)
        w = Watcher(flt, self.watch_buffer)
        backlog: list[bytes] | None = []
        if since_rv is not None:
            w.min_rv = since_rv
            if since_rv < c.compacted_rv:
                return w, None
            assert backlog is not None
            for ev in c.log:
                if ev.rv > since_rv:
                    line = ev.line_for(flt)
                    ev.forget_lines()
                    if line is not None:
                        backlog.append(line)
        c.add_watcher(w)
        return w, backlog

    def unwatch(self, ck: CollKey, w: Watcher) -> None:
        c = self.colls.get(ck)
        if c is not None:
            c.remove_watcher(w)
        w.closed = True
        w.stop_timer()

    def compacted_rv(self, ck: CollKey) -> int:
        return self.coll(ck).compacted_rv


def _key_of(e: Entry) -> str:
    return make_key(e.namespace, e.name)
