"""kill -9 at random moments under concurrent writers and readers.

What a client was told must hold after the restart: every acknowledged write is there,
every object a read showed is still there (a read never shows what a crash can take
back), the resourceVersion never goes below any version a client was shown, and a watch
resumed from a shown version gets every event after it or a 410 (never a silent gap:
that is how informers resume).
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from gpuyard.apiserver.testing import start_apiserver_process

from .api import Api, cm

NS = "/api/v1/namespaces/default/configmaps"
ROUNDS = 5


class Seen:
    """What clients were told before the crash."""

    def __init__(self) -> None:
        self.acked: dict[str, int] = {}  # name -> newest acknowledged data["n"]
        self.shown: dict[str, int] = {}  # name -> newest resourceVersion a read showed
        self.versions: list[int] = []  # resourceVersions lists reported

    def show(self, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        rv = int(obj["metadata"]["resourceVersion"])
        self.shown[name] = max(rv, self.shown.get(name, 0))


async def writer(api: Api, seen: Seen, tag: str, tried: list[str]) -> None:
    i = 0
    while True:
        name = f"{tag}-{i}"
        tried.append(name)
        st, body = await api.post(NS, cm(name, {"n": "0"}))
        assert st == 201, body
        seen.acked[name] = 0
        for n in (1, 2):
            st, body = await api.patch(f"{NS}/{name}", {"data": {"n": str(n)}})
            assert st == 200, body
            seen.acked[name] = n
        i += 1


async def lister(api: Api, seen: Seen) -> None:
    while True:
        st, body = await api.get(NS)
        assert st == 200, body
        seen.versions.append(int(body["metadata"]["resourceVersion"]))
        for item in body["items"]:
            seen.show(item)


async def getter(api: Api, seen: Seen, tried: list[str], rng: random.Random) -> None:
    while True:
        if not tried:
            await asyncio.sleep(0.001)
            continue
        # Mostly the newest names: those whose writes are in flight.
        name = tried[-1 - min(len(tried) - 1, int(rng.expovariate(0.5)))]
        st, body = await api.get(f"{NS}/{name}")
        if st == 200:
            seen.show(body)
        else:
            assert st == 404, body


async def crash_round(data_dir: str, rnd: int, rng: random.Random) -> Seen:
    seen = Seen()
    srv = start_apiserver_process(data_dir)
    try:
        api = Api(srv.url, srv.token, ca_file=srv.ca_file)
        tried: list[str] = []
        tasks = [asyncio.ensure_future(writer(api, seen, f"r{rnd}w{w}", tried)) for w in range(4)]
        tasks += [asyncio.ensure_future(lister(api, seen)) for _ in range(2)]
        tasks += [asyncio.ensure_future(getter(api, seen, tried, rng)) for _ in range(4)]
        await asyncio.sleep(rng.uniform(0.5, 2.0))
        for t in tasks:
            if t.done() and t.exception() is not None:
                raise t.exception()  # type: ignore[misc]
        srv.kill9()  # in the middle of everything
        await asyncio.gather(*tasks, return_exceptions=True)
        await api.close()
    finally:
        srv.kill9()
        if srv.proc.stdout is not None:
            srv.proc.stdout.close()
    assert seen.acked, "no write was acknowledged before the crash"
    return seen


async def check_after_restart(data_dir: str, seen: Seen, rng: random.Random) -> None:
    srv = start_apiserver_process(data_dir)
    try:
        api = Api(srv.url, srv.token, ca_file=srv.ca_file)
        try:
            st, body = await api.get(NS)
            assert st == 200
            items = {i["metadata"]["name"]: i for i in body["items"]}
            list_rv = int(body["metadata"]["resourceVersion"])
            lost = [
                n
                for n, v in seen.acked.items()
                if int(items.get(n, {}).get("data", {}).get("n", -1)) < v
            ]
            assert not lost, f"acknowledged writes lost: {lost[:10]}"
            vanished = [n for n in seen.shown if n not in items]
            assert not vanished, f"objects a read showed are gone: {vanished[:10]}"
            older = [
                n
                for n, rv in seen.shown.items()
                if int(items[n]["metadata"]["resourceVersion"]) < rv
            ]
            assert not older, f"objects went back to older versions: {older[:10]}"
            top = max([*seen.versions, *seen.shown.values()])
            assert list_rv >= top, (list_rv, top)
            # Resume watches from versions clients were shown, then write more.
            resumes = sorted({top, *rng.sample(seen.versions, min(3, len(seen.versions)))})
            watches = [
                asyncio.ensure_future(api.watch(NS, 10_000, timeout=5, resourceVersion=str(v)))
                for v in resumes
            ]
            await asyncio.sleep(0.5)
            made = []
            for i in range(50):
                st, obj = await api.post(NS, cm(f"after-{list_rv}-{i}"))
                assert st == 201, obj
                made.append(obj)
            results = await asyncio.gather(*watches)
            st, body = await api.get(NS)
            final = body["items"]
            for v, events in zip(resumes, results, strict=True):
                if events and events[0]["type"] == "ERROR":
                    assert events[0]["object"]["code"] == 410, events[0]
                    continue
                got = {
                    (e["object"]["metadata"]["name"], e["object"]["metadata"]["resourceVersion"])
                    for e in events
                }
                want = {
                    (o["metadata"]["name"], o["metadata"]["resourceVersion"])
                    for o in final
                    if int(o["metadata"]["resourceVersion"]) > v
                }
                assert want <= got, f"watch from {v} missed {sorted(want - got)[:5]}"
        finally:
            await api.close()
    finally:
        srv.kill9()
        if srv.proc.stdout is not None:
            srv.proc.stdout.close()


async def test_kill9_at_random_moments_loses_and_invents_nothing(tmp_path: Any) -> None:
    rng = random.Random(20261202)
    data_dir = str(tmp_path)
    for rnd in range(ROUNDS):
        seen = await crash_round(data_dir, rnd, rng)
        await check_after_restart(data_dir, seen, rng)
