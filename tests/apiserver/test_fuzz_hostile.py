"""Seeded fuzzing of the API server with hostile requests: paths with encoded
separators, empty and dot segments, any method, content type and body (JSON objects,
junk bytes, deep nesting, alias bombs, huge integers, lone surrogates). Every answer
is below 500, and no object changes unless the request named it.

GPUYARD_FUZZ_EXAMPLES raises the number of examples (default 150); the seed is fixed,
so a failure reproduces."""

from __future__ import annotations

import asyncio
import http.client
import os
import re
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote, urlencode

import orjson
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from gpuyard.apiserver.server import APIServer

EXAMPLES = int(os.environ.get("GPUYARD_FUZZ_EXAMPLES", "150"))
NS = "fz"
CMS = [f"cm{i}" for i in range(4)]
NODES = [f"n{i}" for i in range(3)]
COLLECTIONS = {
    f"/api/v1/namespaces/{NS}/configmaps": ("configmaps", CMS),
    "/api/v1/nodes": ("nodes", NODES),
}
_PLAIN = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")


class Loop:
    """The server in a thread of its own, listening (plain HTTP on 127.0.0.1): the
    fuzzed requests go over a socket with their paths exactly as generated."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.srv = APIServer(None, tls=False)
        self.run(self.srv.start())
        self.port = self.srv.port
        self.run(
            self.srv.dispatch(
                "POST", "/api/v1/namespaces", body=orjson.dumps({"metadata": {"name": NS}})
            )
        )

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    def http(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            h = {"Authorization": f"Bearer {self.srv.token}", **headers}
            conn.putrequest(method, target, skip_accept_encoding=True)
            for k, v in h.items():
                conn.putheader(k, v)
            conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            r = conn.getresponse()
            if method == "HEAD":
                return r.status, b""
            return r.status, r.read()
        finally:
            conn.close()

    def close(self) -> None:
        self.run(self.srv.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def server() -> Iterator[Loop]:
    s = Loop()
    try:
        yield s
    finally:
        s.close()


async def restore(srv: APIServer) -> dict[tuple[str, str], str]:
    """Make sure every object exists; the resourceVersion of each, by (kind, name)."""
    out: dict[tuple[str, str], str] = {}
    for coll, (kind, names) in COLLECTIONS.items():
        for n in names:
            r = await srv.dispatch("GET", f"{coll}/{n}")
            if r.status == 404:
                body = {"metadata": {"name": n, "labels": {"fuzz": "yes"}}}
                r = await srv.dispatch("POST", coll, body=orjson.dumps(body))
                assert r.status == 201, r.body
            obj = orjson.loads(r.body)
            if obj["metadata"].get("finalizers") or obj["metadata"].get("deletionTimestamp"):
                await srv.dispatch(
                    "PATCH",
                    f"{coll}/{n}",
                    headers={"Content-Type": "application/merge-patch+json"},
                    body=b'{"metadata":{"finalizers":null}}',
                )
                return await restore(srv)
        r = await srv.dispatch("GET", coll)
        assert r.status == 200, r.body
        for item in orjson.loads(r.body)["items"]:
            out[(kind, item["metadata"]["name"])] = item["metadata"]["resourceVersion"]
    return out


# ------------------------------------------------------------------ strategies

name_parts = st.one_of(
    st.sampled_from(
        [
            *CMS,
            *NODES,
            "",
            ".",
            "..",
            "%2E",
            "%2e%2E",
            "%2F",
            "%2f",
            "%3F",
            "%3f",
            "%23",
            "%00",
            "%zz",
            "%",
            "%C3%28",
            "%FF",
            "a%2Fb",
            "cm0%2F..",
            "%3F/../cm1",
            "cm1/..",
            "./cm1",
            "/",
            "//",
            "cm1/",
            "cm1//status",
            "cm1/status",
            "cm1/status/",
            "%252F",
            "cm1?x",
            "n1/status",
            "%63m1",
            "watch",
            "status",
        ]
    ),
    st.text(alphabet="ab%2F3E./?#-", max_size=8),
)
# writes, and deletes most of all, are where a misread path loses data
methods = st.sampled_from(
    ["GET", "POST", "PUT", "PATCH", "DELETE", "DELETE", "DELETE", "PATCH", "HEAD", "OPTIONS"]
)
ctypes = st.sampled_from(
    [
        "application/json",
        "application/yaml",
        "application/merge-patch+json",
        "application/strategic-merge-patch+json",
        "application/json-patch+json",
        "application/apply-patch+yaml",
        "application/vnd.kubernetes.protobuf",
        "text/plain",
        "",
        "application/x-junk",
    ]
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=8),
    lambda kids: (
        st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids, max_size=3)
    ),
    max_leaves=10,
)
BOMB = b"a: &a [x,x,x,x,x,x,x,x,x]\n" + b"".join(
    f"{c}: &{c} [".encode() + b",".join([f"*{p}".encode()] * 9) + b"]\n"
    for p, c in zip("abcdefgh", "bcdefghi", strict=True)
)
bodies = st.one_of(
    st.builds(
        lambda meta, rest: orjson.dumps({"metadata": meta, **rest}),
        st.fixed_dictionaries(
            {},
            optional={
                "name": st.sampled_from([*CMS, "new", "", "a/b"]),
                "labels": json_values,
                "finalizers": json_values,
            },
        ),
        st.dictionaries(
            st.sampled_from(["data", "spec", "status", "kind", "apiVersion"]),
            json_values,
            max_size=3,
        ),
    ),
    st.binary(max_size=64),
    st.sampled_from(
        [
            b"",
            BOMB,
            b"[" * 3000 + b"]" * 3000,
            b"x:\n  " + b"- " * 3000 + b"v\n",
            b'{"metadata":{"name":"cm1"},"data":{"k":100000000000000000000}}',
            b'{"metadata":{"name":"cm1"},"data":{"k":"\\ud800"}}',
            b"metadata: {name: cm1}\ndata: {k: 99999999999999999999}\n",
            b'[{"op":"remove","path":"/metadata"}]',
            b'[{"op":"replace","path":"/metadata/name","value":"cm2"}]',
            b'{"metadata":{"finalizers":["x/y"]}}',
            b'{"kind":"DeleteOptions","propagationPolicy":"Orphan"}',
        ]
    ),
)
queries = st.fixed_dictionaries(
    {},
    optional={
        "dryRun": st.sampled_from(["All", "x"]),
        "fieldManager": st.sampled_from(["m", ""]),
        "propagationPolicy": st.sampled_from(["Foreground", "Orphan", "x"]),
        "gracePeriodSeconds": st.sampled_from(["0", "-1", "abc"]),
    },
)


def named(coll: str, part: str | None) -> str | None:
    """The object a path names, read naively (decoded once, plain segments only)."""
    if part is None:
        return None
    first = part.split("/")[0]
    name = unquote(first)
    return name if _PLAIN.fullmatch(name) and "%" not in name else None


@seed(20261203)
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
@given(
    coll=st.sampled_from(sorted(COLLECTIONS)),
    part=st.one_of(name_parts, name_parts, st.none()),
    method=methods,
    ctype=ctypes,
    body=bodies,
    query=queries,
)
def test_hostile_requests_never_500_and_touch_only_what_they_name(
    server: Loop,
    coll: str,
    part: str | None,
    method: str,
    ctype: str,
    body: bytes,
    query: dict[str, str],
) -> None:
    srv = server.srv
    if part is None and method == "DELETE":
        method = "GET"  # deletecollection on the exact collection path may delete all
    path = coll if part is None else f"{coll}/{part}"
    before = server.run(restore(srv))
    headers = {"Content-Type": ctype} if ctype else {}

    target_path = path + ("?" + urlencode(query) if query else "")
    status, answer = server.http(method, target_path, headers, body)
    assert status < 500, (method, target_path, status, answer[:300])
    after = _versions(server)
    kind = COLLECTIONS[coll][0]
    target = named(coll, part)
    for key, rv in before.items():
        if key == (kind, target):
            continue
        assert after.get(key) == rv, (method, target_path, key, status, answer[:300])


def _versions(server: Loop) -> dict[tuple[str, str], str]:
    async def go() -> dict[tuple[str, str], str]:
        out: dict[tuple[str, str], str] = {}
        for coll, (kind, _) in COLLECTIONS.items():
            r = await server.srv.dispatch("GET", coll)
            assert r.status == 200
            for item in orjson.loads(r.body)["items"]:
                out[(kind, item["metadata"]["name"])] = item["metadata"]["resourceVersion"]
        return out

    return server.run(go())
