"""Bad requests over real HTTPS to the server process: each gets a Status with the right
code (never a 500), the server keeps serving, and what is stored does not change."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import urllib3
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpuyard.apiserver.testing import ServerProcess, run_apiserver_process

NS = "/api/v1/namespaces/default"


class Http:
    def __init__(self, srv: ServerProcess) -> None:
        self.url = srv.url
        self.headers = srv.headers
        self.pool = urllib3.PoolManager(ca_certs=srv.ca_file, cert_reqs="CERT_REQUIRED")

    def req(
        self, method: str, path: str, body: Any = None, ctype: str = "application/json"
    ) -> tuple[int, Any]:
        h = dict(self.headers)
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else orjson.dumps(body)
            h["Content-Type"] = ctype
        r = self.pool.request(method, self.url + path, body=data, headers=h, timeout=30)
        try:
            return r.status, orjson.loads(r.data)
        except orjson.JSONDecodeError:
            return r.status, r.data

    def snapshot(self) -> list[Any]:
        """Everything a user could see changing, without resourceVersions of lists."""
        out = []
        for path in (f"{NS}/pods", f"{NS}/configmaps", "/api/v1/nodes", "/api/v1/namespaces"):
            st, lst = self.req("GET", path)
            assert st == 200, lst
            out.append(sorted(orjson.dumps(i, option=orjson.OPT_SORT_KEYS) for i in lst["items"]))
        return out


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the module (starting one per case would dominate the run time);
    each test re-seeds the objects it looks at."""
    with run_apiserver_process(str(tmp_path_factory.mktemp("bad-input")), in_memory=True) as srv:
        yield srv


@pytest.fixture
def http(server: ServerProcess) -> Iterator[Http]:
    h = Http(server)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "labels": {"a": "1"}},
        "spec": {"containers": [{"name": "c", "image": "x"}]},
    }
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "v"}}
    for path, body in ((f"{NS}/pods/p", pod), (f"{NS}/configmaps/c", cm)):
        assert h.req("DELETE", path + "?gracePeriodSeconds=0")[0] in (200, 404)
        collection = path.rsplit("/", 1)[0]
        assert h.req("POST", collection, body)[0] == 201
    try:
        yield h
    finally:
        h.pool.clear()


def is_status(body: Any, code: int) -> bool:
    return (
        isinstance(body, dict)
        and body.get("kind") == "Status"
        and body.get("status") == "Failure"
        and body.get("code") == code
        and bool(body.get("message"))
    )


GOOD_POD: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "q"},
    "spec": {"containers": [{"name": "c", "image": "x"}]},
}


def with_meta(**md: Any) -> dict[str, Any]:
    return {**GOOD_POD, "metadata": {**GOOD_POD["metadata"], **md}}


CASES: list[tuple[str, str, str, Any, str, int]] = [
    # (what, method, path, body, content type, code)
    ("malformed JSON", "POST", f"{NS}/pods", b'{"metadata": {', "application/json", 400),
    ("JSON not an object", "POST", f"{NS}/pods", b"[1, 2]", "application/json", 400),
    ("malformed YAML", "POST", f"{NS}/pods", b"metadata: [\n  - :", "application/yaml", 400),
    ("binary garbage", "POST", f"{NS}/pods", b"\xff\xfe\x00garbage", "application/json", 400),
    (
        "wrong kind",
        "POST",
        f"{NS}/pods",
        {**GOOD_POD, "kind": "ConfigMap"},
        "application/json",
        400,
    ),
    (
        "wrong apiVersion",
        "POST",
        f"{NS}/pods",
        {**GOOD_POD, "apiVersion": "apps/v1"},
        "application/json",
        400,
    ),
    (
        "namespace mismatch",
        "POST",
        f"{NS}/pods",
        with_meta(namespace="other"),
        "application/json",
        400,
    ),
    ("invalid name", "POST", f"{NS}/pods", with_meta(name="Bad_Name"), "application/json", 422),
    ("name too long", "POST", f"{NS}/pods", with_meta(name="a" * 254), "application/json", 422),
    (
        "invalid label",
        "POST",
        f"{NS}/pods",
        with_meta(labels={"bad key!": "v"}),
        "application/json",
        422,
    ),
    (
        "invalid namespace name",
        "POST",
        "/api/v1/namespaces",
        {"metadata": {"name": "a.b"}},
        "application/json",
        422,
    ),
    (
        "pod without containers",
        "POST",
        f"{NS}/pods",
        {**GOOD_POD, "spec": {}},
        "application/json",
        422,
    ),
    (
        "bad quantity (not decodable, as in kube-apiserver)",
        "POST",
        f"{NS}/pods",
        {
            **GOOD_POD,
            "spec": {
                "containers": [
                    {"name": "c", "image": "x", "resources": {"limits": {"cpu": "lots"}}}
                ]
            },
        },
        "application/json",
        400,
    ),
    (
        "existing name",
        "POST",
        f"{NS}/configmaps",
        {"metadata": {"name": "c"}},
        "application/json",
        409,
    ),
    (
        "put name mismatch",
        "PUT",
        f"{NS}/configmaps/c",
        {"metadata": {"name": "d"}},
        "application/json",
        400,
    ),
    (
        "stale resourceVersion",
        "PUT",
        f"{NS}/configmaps/c",
        {"metadata": {"name": "c", "resourceVersion": "1"}, "data": {"k": "changed"}},
        "application/json",
        409,
    ),
    (
        "json patch on a missing path",
        "PATCH",
        f"{NS}/configmaps/c",
        [{"op": "replace", "path": "/data/nope/x", "value": 1}],
        "application/json-patch+json",
        422,
    ),
    (
        "json patch not a list",
        "PATCH",
        f"{NS}/configmaps/c",
        {"op": "add"},
        "application/json-patch+json",
        400,
    ),
    (
        "unsupported patch type",
        "PATCH",
        f"{NS}/configmaps/c",
        {"data": {"k": "x"}},
        "text/plain",
        415,
    ),
    (
        "patch of a missing object",
        "PATCH",
        f"{NS}/configmaps/zz",
        {},
        "application/merge-patch+json",
        404,
    ),
    ("unknown resource", "GET", "/api/v1/frobnicators", None, "", 404),
    ("unknown group", "GET", "/apis/nope.example.com/v1/things", None, "", 404),
    ("unknown path", "GET", "/definitely/not/here", None, "", 404),
    ("bad label selector", "GET", f"{NS}/pods?labelSelector=a%20in%20(", None, "", 400),
    ("bad field selector", "GET", f"{NS}/pods?fieldSelector=spec.nope%3Dx", None, "", 400),
    ("method not allowed", "POST", f"{NS}/pods/p", GOOD_POD, "application/json", 405),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "ctype", "code"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_bad_requests_get_a_status_and_change_nothing(
    http: Http, method: str, path: str, body: Any, ctype: str, code: int
) -> None:
    before = http.snapshot()
    st, answer = http.req(method, path, body, ctype)
    assert st == code and is_status(answer, code), (st, answer)
    assert http.snapshot() == before
    assert http.req("GET", f"{NS}/configmaps/c")[1]["data"] == {"k": "v"}


def test_oversize_body_is_413(http: Http) -> None:
    before = http.snapshot()
    big = {"metadata": {"name": "big"}, "data": {"k": "x" * (4 * 1024 * 1024)}}
    st, answer = http.req("POST", f"{NS}/configmaps", big)
    assert st == 413 and is_status(answer, 413), (st, str(answer)[:200])
    assert http.snapshot() == before


def test_missing_or_wrong_token_is_401(http: Http) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        r = http.pool.request("GET", http.url + f"{NS}/pods", headers=headers, timeout=30)
        assert r.status == 401 and is_status(orjson.loads(r.data), 401)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=10),
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=16,
)
bodies = (
    st.binary(max_size=200)
    | json_values.map(orjson.dumps)
    | st.fixed_dictionaries(
        {"metadata": st.fixed_dictionaries({"name": st.sampled_from(["p", "c", "n"])})},
        optional={"kind": json_values, "apiVersion": json_values, "spec": json_values},
    ).map(orjson.dumps)
)
TARGETS = [
    ("POST", f"{NS}/pods", "application/json"),
    ("POST", f"{NS}/configmaps", "application/yaml"),
    ("PUT", f"{NS}/pods/p", "application/json"),
    ("PATCH", f"{NS}/pods/p", "application/strategic-merge-patch+json"),
    ("PATCH", f"{NS}/configmaps/c", "application/json-patch+json"),
    ("PATCH", f"{NS}/configmaps/c", "application/apply-patch+yaml"),
    ("POST", f"{NS}/pods/p/eviction", "application/json"),
    ("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", "application/json"),
]


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(target=st.sampled_from(TARGETS), body=bodies)
def test_random_bodies_never_500(http: Http, target: tuple[str, str, str], body: bytes) -> None:
    method, path, ctype = target
    st_, answer = http.req(method, path, body, ctype)
    assert st_ < 500, answer
    if st_ >= 400:
        assert is_status(answer, st_), answer
    # the server keeps serving and the two seeded objects are still there
    code, p = http.req("GET", f"{NS}/pods/p")
    assert code in (200, 404)  # a random body may legitimately evict or patch it
    assert http.req("GET", "/api/v1/nodes")[0] == 200
