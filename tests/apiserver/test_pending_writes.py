"""Answers given while another write of the same object waits for its commit.

Reads show only committed state, so no answer may reveal a pending write either: a
create that collides with an uncommitted create is answered 409 only once a GET shows
the object (and succeeds when that commit fails), and a patch that names no
resourceVersion is re-applied when another writer got there first, never refused with
409 (as kube-apiserver retries a patch on a conflict). The commit is held back with a
gate, so each race happens every time."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from gpuyard.apiserver.handlers import Response
from gpuyard.apiserver.server import APIServer

CMS = "/api/v1/namespaces/default/configmaps"
NODE = "/api/v1/nodes/n1"
MERGE = {"Content-Type": "application/merge-patch+json"}
STRATEGIC = {"Content-Type": "application/strategic-merge-patch+json"}


class Gate:
    """Holds every commit of the store until opened; `fail` makes the next one fail."""

    def __init__(self, srv: APIServer) -> None:
        db = srv.store._db
        assert db is not None
        self.real = db.write
        self.open = threading.Event()
        self.open.set()
        self.fail = False
        db.write = self.write  # type: ignore[method-assign]

    def write(self, ops: Any, rev: int) -> None:
        self.open.wait(10)
        if self.fail:
            self.fail = False
            raise sqlite3.OperationalError("disk I/O error")
        self.real(ops, rev)


@pytest.fixture
async def srv(tmp_path: Any) -> AsyncIterator[APIServer]:
    s = APIServer(str(tmp_path), tls=False)
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


def _cm(name: str, **data: str) -> bytes:
    return orjson.dumps(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}
    )


async def _until_pending(srv: APIServer, ck: tuple[str, str], key: str) -> None:
    for _ in range(500):
        if srv.store.pending(ck, key):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"no write of {key} became pending")


async def test_a_create_colliding_with_an_uncommitted_one_answers_once_it_is_committed(
    srv: APIServer,
) -> None:
    gate = Gate(srv)
    gate.open.clear()
    first = asyncio.create_task(srv.dispatch("POST", CMS, body=_cm("twin", n="1")))
    await _until_pending(srv, ("", "configmaps"), "default/twin")
    second = asyncio.create_task(srv.dispatch("POST", CMS, body=_cm("twin", n="2")))
    await asyncio.sleep(0.3)
    assert not second.done(), "answered while the object it collides with is uncommitted"
    assert (await srv.dispatch("GET", f"{CMS}/twin")).status == 404
    gate.open.set()
    r2: Response = await asyncio.wait_for(second, 10)
    assert r2.status == 409, r2.body
    # Whoever is told it exists can read it.
    got = await srv.dispatch("GET", f"{CMS}/twin")
    assert got.status == 200 and orjson.loads(got.body)["data"] == {"n": "1"}
    assert (await first).status == 201


async def test_a_create_behind_an_uncommitted_one_that_fails_succeeds(srv: APIServer) -> None:
    gate = Gate(srv)
    gate.open.clear()
    gate.fail = True
    first = asyncio.create_task(srv.dispatch("POST", CMS, body=_cm("lost", n="1")))
    await _until_pending(srv, ("", "configmaps"), "default/lost")
    second = asyncio.create_task(srv.dispatch("POST", CMS, body=_cm("lost", n="2")))
    await asyncio.sleep(0.1)
    gate.open.set()
    r1, r2 = await asyncio.wait_for(asyncio.gather(first, second), 10)
    assert r1.status == 500, r1.body
    assert r2.status == 201, r2.body
    got = await srv.dispatch("GET", f"{CMS}/lost")
    assert orjson.loads(got.body)["data"] == {"n": "2"}


async def test_a_patch_racing_other_writers_is_applied_not_refused(srv: APIServer) -> None:
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}}
    assert (await srv.dispatch("POST", "/api/v1/nodes", body=orjson.dumps(node))).status == 201
    gate = Gate(srv)
    gate.open.clear()

    def cond(t: str, status: str) -> bytes:
        c = {"type": t, "status": status, "reason": "R", "message": "m"}
        return orjson.dumps({"status": {"conditions": [c]}})

    status = f"{NODE}/status"
    # w1 is pending; p2 writes exactly what w1 does (nothing new: it waits to answer);
    # w3 comes after p2 and before w1's commit.
    w1 = asyncio.create_task(
        srv.dispatch("PATCH", status, headers=STRATEGIC, body=cond("A", "True"))
    )
    await _until_pending(srv, ("", "nodes"), "n1")
    p2 = asyncio.create_task(
        srv.dispatch("PATCH", status, headers=STRATEGIC, body=cond("A", "True"))
    )
    await asyncio.sleep(0.2)
    w3 = asyncio.create_task(
        srv.dispatch("PATCH", status, headers=STRATEGIC, body=cond("B", "True"))
    )
    await asyncio.sleep(0.2)
    gate.open.set()
    answers = await asyncio.wait_for(asyncio.gather(w1, p2, w3), 10)
    assert [a.status for a in answers] == [200, 200, 200], [a.body for a in answers]
    got = orjson.loads((await srv.dispatch("GET", NODE)).body)
    assert {c["type"]: c["status"] for c in got["status"]["conditions"]} == {
        "A": "True",
        "B": "True",
    }

    # A patch that names a resourceVersion is still refused when it is not the newest.
    old_rv = got["metadata"]["resourceVersion"]
    await srv.dispatch("PATCH", NODE, headers=MERGE, body=b'{"metadata":{"labels":{"x":"1"}}}')
    stale = orjson.dumps({"metadata": {"resourceVersion": old_rv, "labels": {"x": "2"}}})
    r = await srv.dispatch("PATCH", NODE, headers=MERGE, body=stale)
    assert r.status == 409, r.body
