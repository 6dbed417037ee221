"""The store: group commit, durability before acknowledgement and before watchers."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from typing import Any

import orjson
import pytest

from gpuyard.apiserver.selectors import Filter
from gpuyard.apiserver.store import StorageFailure, Store, StoreError

CK = ("", "configmaps")


def obj(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "default", "uid": f"u-{name}"},
    }


async def test_group_commit_batches_concurrent_writes(tmp_path: Any) -> None:
    store = Store(str(tmp_path))
    assert store._db is not None
    calls: list[int] = []
    real = store._db.write

    def counting(ops: Any, rev: int) -> None:
        calls.append(len(ops))
        real(ops, rev)

    store._db.write = counting  # type: ignore[method-assign]
    await asyncio.gather(*[store.put(CK, obj(f"c{i}"), create=True) for i in range(200)])
    assert sum(calls) == 200
    assert len(calls) < 50  # many writes share each commit
    await store.close()
    db = sqlite3.connect(str(tmp_path / "store.db"))
    assert db.execute("SELECT count(*) FROM objects").fetchone()[0] == 200
    assert db.execute("SELECT v FROM meta WHERE k='revision'").fetchone()[0] == 200
    db.close()


async def test_watchers_and_writers_wait_for_the_commit(tmp_path: Any) -> None:
    store = Store(str(tmp_path))
    assert store._db is not None
    gate = threading.Event()
    real = store._db.write

    def slow(ops: Any, rev: int) -> None:
        gate.wait(5)
        real(ops, rev)

    store._db.write = slow  # type: ignore[method-assign]
    w, backlog = store.watch(CK, Filter(), store.rev)
    assert backlog == []
    task = asyncio.create_task(store.put(CK, obj("a"), create=True))
    await asyncio.sleep(0.1)
    assert not task.done()  # not acknowledged before the commit
    assert not w.buf  # and not shown to watchers either
    assert store.get(CK, "default/a") is None  # nor to readers
    assert list(store.entries(CK)) == []
    assert store.published_rv == 0
    with pytest.raises(StoreError) as ei:  # but conflicts are already checked
        store.put_nowait(CK, obj("a"), create=True)
    assert ei.value.code == 409
    gate.set()
    await asyncio.wait_for(task, 5)
    assert len(w.buf) == 1 and b'"ADDED"' in w.buf[0]
    assert store.get(CK, "default/a") is not None
    assert store.published_rv == store.rev == 1
    await store.close()


async def test_a_failed_commit_leaves_memory_as_it_was(tmp_path: Any) -> None:
    """A commit that fails (here: the disk is full) fails its writes and those queued
    behind them, shows none of them, and reuses no revision a reader saw."""
    store = Store(str(tmp_path))
    kept = await store.put(CK, obj("kept"), create=True)
    assert store._db is not None
    real = store._db.write
    full = True

    def write(ops: Any, rev: int) -> None:
        if full:
            raise sqlite3.OperationalError("database or disk is full")
        real(ops, rev)

    store._db.write = write  # type: ignore[method-assign]
    w, _ = store.watch(CK, Filter(), store.published_rv)
    a = asyncio.ensure_future(store.put(CK, obj("a"), create=True))
    d = asyncio.ensure_future(store.delete(CK, "default/kept"))
    results = await asyncio.gather(a, d, return_exceptions=True)
    for r in results:
        assert isinstance(r, StorageFailure) and r.code == 507, r
        assert "no space left" in r.message
    assert store.get(CK, "default/a") is None
    assert store.get(CK, "default/kept") is kept
    assert store.latest(CK, "default/kept") is kept
    assert not w.buf
    assert store.rev == store.published_rv == kept.rv
    # Read-only now: refused at once, until a probe finds space.
    assert store.read_only
    with pytest.raises(StorageFailure):
        store.put_nowait(CK, obj("b"), create=True)
    full = False
    store.probe_interval = 0.05
    for _ in range(100):
        if not store.read_only:
            break
        await asyncio.sleep(0.05)
    assert not store.read_only
    b = await store.put(CK, obj("b"), create=True)
    assert b.rv == kept.rv + 1
    await store.close()
    again = Store(str(tmp_path))
    assert sorted(e.name for e in again.entries(CK)) == ["b", "kept"]
    await again.close()


async def test_data_directory_and_files_are_private(tmp_path: Any) -> None:
    d = tmp_path / "data"
    store = Store(str(d))
    await store.put(CK, obj("s"), create=True)
    assert os.stat(d).st_mode & 0o777 == 0o700
    for f in os.listdir(d):
        assert os.stat(d / f).st_mode & 0o077 == 0, f
    await store.close()
    os.chmod(d, 0o755)
    os.chmod(d / "store.db", 0o644)
    again = Store(str(d))
    assert os.stat(d).st_mode & 0o777 == 0o700
    assert os.stat(d / "store.db").st_mode & 0o777 == 0o600
    await again.close()


async def test_reload_restores_items_revision_and_indexes(tmp_path: Any) -> None:
    store = Store(str(tmp_path))
    owner = await store.put(CK, obj("owner"), create=True)
    dep = obj("dep")
    dep["metadata"]["ownerReferences"] = [{"uid": owner.uid, "name": "owner"}]
    await store.put(CK, dep, create=True)
    pod = {
        "metadata": {"name": "p", "namespace": "default", "uid": "up"},
        "spec": {"nodeName": "n1"},
    }
    await store.put(("", "pods"), pod, create=True)
    rev = store.rev
    await store.close()
    again = Store(str(tmp_path))
    assert again.rev == rev
    assert again.dependents(owner.uid) == [(CK, "default/dep")]
    assert [
        e.name
        for e in again.entries(("", "pods"), Filter(None, None, [("spec.nodeName", "=", "n1")]))
    ] == ["p"]
    # watching from before the restart is too old
    _, backlog = again.watch(CK, Filter(), rev - 1)
    assert backlog is None
    await again.close()


async def test_a_stored_object_takes_about_its_encoding_in_memory() -> None:
    """Stored objects are kept at their own size: 300 ConfigMaps of ~700 bytes of JSON
    each add well under 2 KiB apiece (orjson's own bytes carry a 4 KiB buffer or more)."""
    import tracemalloc

    store = Store(None)
    body = {"k": "v" * 600}
    await store.put(CK, {**obj("warm"), "data": body}, create=True)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(300):
            await store.put(CK, {**obj(f"c{i}"), "data": body}, create=True)
        added = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    size = len(store.get(CK, "default/c0").raw)  # type: ignore[union-attr]
    assert 700 <= size < 800
    assert added / 300 < 2 * size, added / 300


async def test_the_watch_log_keeps_one_encoding_of_each_revision() -> None:
    """A watched collection's event log (kept for watches resuming from a revision)
    holds each revision's stored encoding once, not the line sent to watchers too; a
    watch resuming from the log still gets every line."""
    import tracemalloc

    store = Store(None)
    body = {"k": "v" * 600}
    start = store.rev
    live, _ = store.watch(CK, Filter(), start)
    await store.put(CK, {**obj("warm"), "data": body}, create=True)
    live.drain()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(300):
            await store.put(CK, {**obj(f"c{i}"), "data": body}, create=True)
            assert len(live.drain()) == 1  # delivered, then dropped by the watcher
        added = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    size = len(store.get(CK, "default/c0").raw)  # type: ignore[union-attr]
    assert added / 300 < 2 * size, added / 300
    _, backlog = store.watch(CK, Filter(), start)
    assert backlog is not None and len(backlog) == 301
    assert backlog[-1] == b'{"type":"ADDED","object":' + store.get(CK, "default/c299").raw + b"}\n"  # type: ignore[union-attr]


async def test_watchers_sharing_a_filter_share_its_line_and_others_get_their_own() -> None:
    """An event is matched once per distinct filter: watchers with equal selectors get
    the same line, a watcher with another selector its own (an object moving from one
    label to another is DELETED for one, ADDED for the other, MODIFIED for all)."""
    from gpuyard.apiserver.selectors import parse_label_selector

    store = Store(None)
    first = obj("x")
    first["metadata"]["labels"] = {"app": "a"}
    await store.put(CK, first, create=True)
    cur = store.get(CK, "default/x")
    assert cur is not None

    def sel(text: str) -> Filter:
        return Filter("default", parse_label_selector(text))

    a1, _ = store.watch(CK, sel("app=a"), store.rev)
    a2, _ = store.watch(CK, sel("app=a"), store.rev)
    b, _ = store.watch(CK, sel("app=b"), store.rev)
    every, _ = store.watch(CK, Filter(), store.rev)
    other_ns, _ = store.watch(CK, Filter("elsewhere"), store.rev)
    moved = cur.obj()
    moved["metadata"]["labels"] = {"app": "b"}
    await store.put(CK, moved, expect_rv=cur.rv)
    types = {
        name: [orjson.loads(line)["type"] for line in w.drain()]
        for name, w in (("a1", a1), ("a2", a2), ("b", b), ("every", every), ("ns", other_ns))
    }
    assert types == {
        "a1": ["DELETED"],
        "a2": ["DELETED"],
        "b": ["ADDED"],
        "every": ["MODIFIED"],
        "ns": [],
    }


async def test_a_watch_wait_ends_by_its_own_timeout_after_a_longer_one() -> None:
    """A wait never outlasts its timeout, whatever an earlier, longer wait armed."""
    import time

    store = Store(None)
    w, _ = store.watch(CK, Filter(), store.rev)
    waiting = asyncio.ensure_future(w.wait(30.0))
    await asyncio.sleep(0)
    await store.put(CK, obj("a"), create=True)
    assert await waiting is True and len(w.drain()) == 1
    t0 = time.monotonic()
    assert await w.wait(0.2) is False
    assert time.monotonic() - t0 < 5.0
    store.unwatch(CK, w)
    assert w.timer is None
