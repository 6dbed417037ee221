"""Bodies that would make the API server build something huge or deep, or store a
number it cannot keep exactly, are refused while they are parsed: a YAML alias bomb is
413, deep nesting, integers beyond int64, non-finite floats and lone surrogates are
400. Nothing is stored and the server's memory stays where it was."""

from __future__ import annotations

import http.client
import json
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpuyard.apiserver.testing import ServerProcess
from gpuyard.k8s import decode

CM = "/api/v1/namespaces/default/configmaps"

# "billion laughs" in 296 bytes or so: 9**9 copies of "lol" once expanded
BOMB = (
    "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bomb}\ndata:\n  k: &a lol\n"
    "  x: {a: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
    + "".join(
        f"    , {c}: &{c} [" + ",".join([f"*{p}"] * 9) + "]\n"
        for p, c in zip("bcdefgh", "cdefghi", strict=True)
    )
    + "  }\n"
)


def raw(
    srv: ServerProcess, method: str, target: str, body: bytes = b"", ctype: str = ""
) -> tuple[int, Any]:
    u = urlsplit(srv.url)
    conn = http.client.HTTPSConnection(u.hostname, u.port, context=srv.ssl_context(), timeout=60)
    try:
        h = dict(srv.headers)
        if ctype:
            h["Content-Type"] = ctype
        conn.request(method, target, body=body or None, headers=h)
        r = conn.getresponse()
        data = r.read()
        try:
            return r.status, json.loads(data)
        except ValueError:
            return r.status, data
    finally:
        conn.close()


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def stored(srv: ServerProcess) -> list[str]:
    st, out = raw(srv, "GET", CM)
    assert st == 200
    return sorted(i["metadata"]["name"] for i in out["items"])


def nested_json(depth: int) -> bytes:
    return b'{"metadata":{"name":"deep"},"data":{"k":"v"},"x":' + b"[" * depth + b"]" * depth + b"}"


def test_alias_bomb_is_refused_without_expanding(apiserver: ServerProcess) -> None:
    assert len(BOMB) < 512
    before = rss_mib(apiserver.pid)
    for _ in range(4):
        st, out = raw(apiserver, "POST", CM, BOMB.encode(), "application/yaml")
        assert st == 413, out
        assert out["kind"] == "Status" and out["reason"] == "RequestEntityTooLarge"
        assert "alias" in out["message"]
    st, out = raw(
        apiserver, "POST", CM, b"metadata: {name: ok}\ndata: {a: &x v, b: *x}\n", "application/yaml"
    )
    assert st == 201 and out["data"] == {"a": "v", "b": "v"}
    assert stored(apiserver) == ["ok"]
    # as an apply patch too
    st, out = raw(
        apiserver,
        "PATCH",
        CM + "/ok?fieldManager=t",
        BOMB.replace("bomb", "ok").encode(),
        "application/apply-patch+yaml",
    )
    assert st == 413, out
    assert rss_mib(apiserver.pid) - before < 100


@pytest.mark.parametrize("depth", [101, 254, 1024, 5000])
def test_deep_json_is_400(apiserver: ServerProcess, depth: int) -> None:
    st, out = raw(apiserver, "POST", CM, nested_json(depth), "application/json")
    assert st == 400, out
    assert "nested" in out["message"] or "nesting" in out["message"]
    st, out = raw(apiserver, "POST", CM, nested_json(depth).replace(b"[", b"- ", 0), "")
    assert st < 500
    assert stored(apiserver) == []


def test_nesting_within_the_limit_is_stored_and_served(apiserver: ServerProcess) -> None:
    d = decode.MAX_DEPTH - 3  # the object, "x" and the innermost list are levels too
    st, out = raw(apiserver, "POST", CM, nested_json(d), "application/json")
    assert st in (201, 400), out  # a ConfigMap has no field x: dropped or refused, never 500
    yaml_body = b"metadata: {name: y}\ndata: {k: v}\n"
    st, out = raw(apiserver, "POST", CM, yaml_body, "application/yaml")
    assert st == 201


@pytest.mark.parametrize("depth", [500, 5000])
def test_deep_yaml_is_400(apiserver: ServerProcess, depth: int) -> None:
    body = b"metadata: {name: deep}\nx:\n  " + b"- " * depth + b"v\n"
    st, out = raw(apiserver, "POST", CM, body, "application/yaml")
    assert st == 400, out
    body = b"metadata: {name: deep}\nx: " + b"[" * depth + b"]" * depth + b"\n"
    st, out = raw(apiserver, "POST", CM, body, "application/yaml")
    assert st == 400, out
    assert stored(apiserver) == []


@pytest.mark.parametrize(
    ("body", "ctype"),
    [
        (
            b'{"metadata":{"name":"n","labels":{"a":"b"}},"x":100000000000000000000}',
            "application/json",
        ),
        (b'{"metadata":{"name":"n"},"x":9223372036854775808}', "application/json"),
        (b'{"metadata":{"name":"n"},"x":-9223372036854775809}', "application/json"),
        (b"metadata: {name: n}\nx: 99999999999999999999\n", "application/yaml"),
        (b"metadata: {name: n}\nx: .inf\n", "application/yaml"),
        (b"metadata: {name: n}\nx: .nan\n", "application/yaml"),
        (b'{"metadata":{"name":"n"},"x":1e400}', "application/json"),
        (b'{"metadata":{"name":"n\\ud800"}}', "application/json"),
        (b'{"metadata":{"name":"n"},"data":{"k":"\xff"}}', "application/json"),
        (b'metadata: {name: n}\ndata: {k: "\\ud800"}\n', "application/yaml"),
        (b"metadata: {name: n}\ndata: {k: \xff}\n", "application/yaml"),
        (b"metadata: {name: n}\ndata: {k: !!python/name:os.system x}\n", "application/yaml"),
    ],
)
def test_numbers_and_strings_that_cannot_be_kept_are_400(
    apiserver: ServerProcess, body: bytes, ctype: str
) -> None:
    st, out = raw(apiserver, "POST", CM, body, ctype)
    assert st == 400, out
    assert out["reason"] == "BadRequest" and out["message"]
    assert stored(apiserver) == []


def test_patches_are_decoded_with_the_same_limits(apiserver: ServerProcess) -> None:
    st, _ = raw(
        apiserver, "POST", CM, b'{"metadata":{"name":"p"},"data":{"k":"v"}}', "application/json"
    )
    assert st == 201
    cases = [
        (b'{"data":{"k":"\\udc00"}}', "application/merge-patch+json"),
        (b'{"data":{"k":"\\ud800"}}', "application/strategic-merge-patch+json"),
        (
            b'[{"op":"add","path":"/data/n","value":100000000000000000000}]',
            "application/json-patch+json",
        ),
        (b'{"data":{"k":' + b"[" * 300 + b"]" * 300 + b"}}", "application/merge-patch+json"),
        (
            b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"p"},'
            b'"data":{"k":"\\ud800"}}',
            "application/apply-patch+yaml",
        ),
        (
            b'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: p}\ndata: {k: "\\udfff"}\n',
            "application/apply-patch+yaml",
        ),
    ]
    for body, ctype in cases:
        st, out = raw(apiserver, "PATCH", CM + "/p?fieldManager=t", body, ctype)
        assert st == 400, (ctype, body[:60], out)
    st, out = raw(apiserver, "GET", CM + "/p")
    assert out["data"] == {"k": "v"}


def test_decode_keeps_int64_and_yaml_as_kubernetes_reads_it() -> None:
    assert decode.loads_json(b"9223372036854775807") == 2**63 - 1
    assert decode.loads_json(b"-9223372036854775808") == -(2**63)
    assert decode.loads_json(b'{"a":"123456789012345678901234"}') == {
        "a": "123456789012345678901234"
    }
    assert decode.loads_json(b"1e20") == 1e20  # a float literal stays a float
    doc = decode.loads_yaml(
        "t: 2026-12-03T00:00:00Z\n1: one\ntrue: yes\nh: 0x10\nbase: &b {x: 1}\nm: {<<: *b, y: 2}\n"
    )
    assert doc == {
        "t": "2026-12-03T00:00:00Z",
        "1": "one",
        "true": True,
        "h": 16,
        "base": {"x": 1},
        "m": {"x": 1, "y": 2},
    }
    doc["m"]["x"] = 5
    assert doc["base"] == {"x": 1}  # aliases are copies, not shared objects
    with pytest.raises(decode.DecodeError) as ei:
        decode.loads_yaml(BOMB)
    assert ei.value.code == 413
    with pytest.raises(decode.DecodeError):
        decode.loads_yaml("a: &a [*a]\n")
    assert decode.loads_yaml_all("a: 1\n---\nb: 2\n") == [{"a": 1}, {"b": 2}]


def _depth(v: Any) -> int:
    if isinstance(v, dict):
        return 1 + max(map(_depth, v.values()), default=0)
    if isinstance(v, list):
        return 1 + max(map(_depth, v), default=0)
    return 0


_tricky = st.text(alphabet='[]{}"\\ab', max_size=6)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    shape=st.lists(st.sampled_from(["list", "dict"]), min_size=90, max_size=110),
    noise=_tricky,
)
def test_json_depth_limit_is_exact(shape: list[str], noise: str) -> None:
    v: Any = noise
    for kind in shape:
        v = [noise, v, {"s": noise}] if kind == "list" else {"k" + noise: v, "n": [noise]}
    body = orjson.dumps(v)
    if _depth(v) <= decode.MAX_DEPTH:
        assert decode.loads_json(body) == v
    else:
        with pytest.raises(decode.DecodeError):
            decode.loads_json(body)
