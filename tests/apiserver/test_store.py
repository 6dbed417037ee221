"""The store: group commit, durability before acknowledgement and before watchers."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from typing import Any

from gpuyard.apiserver.selectors import Filter
from gpuyard.apiserver.store import Store

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
    assert store.get(CK, "default/a") is not None  # but conflicts are already checked
    gate.set()
    await asyncio.wait_for(task, 5)
    assert len(w.buf) == 1 and b'"ADDED"' in w.buf[0]
    await store.close()


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
