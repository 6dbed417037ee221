"""Fields given twice in one create or update body, by fieldValidation, as kube-apiserver
treats them: Strict refuses with 400 naming each (`strict decoding error: duplicate field
"spec.containers[0].image"`), Warn stores the last value and says so in a Warning header,
Ignore stores the last value silently. Raw HTTP (kubectl never sends a duplicate: it
decodes manifests itself), JSON and YAML bodies, built-in and custom kinds; and the
decoder's own answers, including bodies written to hide a duplicate from its fast check."""

from __future__ import annotations

import ssl
from typing import Any

import aiohttp
import orjson
import pytest

from gpuyard.k8s import decode

from .api import crd

NS = "/api/v1/namespaces/default"

POD = (
    b'{"apiVersion":"v1","kind":"Pod","metadata":{"name":"%s"},"spec":{"containers":'
    b'[{"name":"c","image":"busybox:1","image":"busybox:2"}],"restartPolicy":"Never"}}'
)
POD_YAML = b"""apiVersion: v1
kind: Pod
metadata:
  name: %s
  labels: {app: a, app: b}
spec:
  containers:
  - name: c
    image: busybox:1
"""


async def _send(
    s: Any, method: str, path: str, body: bytes, ctype: str = "application/json", **q: str
) -> tuple[int, Any, str]:
    ctx = ssl.create_default_context(cadata=s.ca_pem.decode())
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as sess:
        async with sess.request(
            method,
            s.url + path,
            data=body,
            params=q,
            headers={"Authorization": f"Bearer {s.token}", "Content-Type": ctype},
        ) as r:
            return r.status, orjson.loads(await r.read()), r.headers.get("Warning", "")


async def test_duplicate_fields_by_field_validation(apiserver_inproc: Any) -> None:
    s = apiserver_inproc
    st, out, _ = await _send(s, "POST", f"{NS}/pods", POD % b"strict", fieldValidation="Strict")
    assert st == 400 and out["reason"] == "BadRequest", out
    assert out["message"] == (
        'Pod in version "v1" cannot be handled as a Pod: strict decoding error: '
        'duplicate field "spec.containers[0].image"'
    )
    st, _, _ = await _send(s, "GET", f"{NS}/pods/strict", b"")
    assert st == 404  # nothing stored
    st, out, warn = await _send(s, "POST", f"{NS}/pods", POD % b"warn", fieldValidation="Warn")
    assert st == 201, out
    assert warn == '299 - "duplicate field \\"spec.containers[0].image\\""', warn
    assert out["spec"]["containers"][0]["image"] == "busybox:2"  # the last one is kept
    st, out, warn = await _send(s, "POST", f"{NS}/pods", POD % b"dflt")  # Warn by default
    assert st == 201 and "duplicate field" in warn, warn
    st, out, warn = await _send(s, "POST", f"{NS}/pods", POD % b"ign", fieldValidation="Ignore")
    assert st == 201 and warn == "" and out["spec"]["containers"][0]["image"] == "busybox:2"
    # YAML bodies, and a duplicate next to an unknown field: both named.
    body = POD_YAML % b"y" + b"  bogus: 1\n"
    st, out, _ = await _send(
        s, "POST", f"{NS}/pods", body, "application/yaml", fieldValidation="Strict"
    )
    assert st == 400, out
    assert 'unknown field "spec.bogus"' in out["message"], out
    assert 'duplicate field "metadata.labels.app"' in out["message"], out
    # An update (PUT) body is checked the same way.
    st, cur, _ = await _send(s, "GET", f"{NS}/pods/ign", b"")
    raw = orjson.dumps(cur)
    twice = raw.replace(
        b'"restartPolicy":"Never"', b'"restartPolicy":"Never","restartPolicy":"Never"'
    )
    assert twice != raw
    st, out, _ = await _send(s, "PUT", f"{NS}/pods/ign", twice, fieldValidation="Strict")
    assert st == 400 and 'duplicate field "spec.restartPolicy"' in out["message"], out
    st, out, warn = await _send(s, "PUT", f"{NS}/pods/ign", twice)
    assert st == 200 and "spec.restartPolicy" in warn, (out, warn)


CRD = crd(
    "Widget",
    {
        "type": "object",
        "properties": {"spec": {"type": "object", "properties": {"size": {"type": "integer"}}}},
    },
)


async def test_duplicate_fields_of_custom_objects(apiserver_inproc: Any) -> None:
    import asyncio

    s = apiserver_inproc
    crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    st, out, _ = await _send(s, "POST", crds, orjson.dumps(CRD))
    assert st == 201, out
    path = "/apis/example.com/v1/namespaces/default/widgets"
    body = (
        b'{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"name":"w"},'
        b'"spec":{"size":1,"size":2}}'
    )
    for _ in range(50):  # the new kind is served once the CRD is established
        st, out, _ = await _send(s, "POST", path, body, fieldValidation="Strict")
        if st != 404:
            break
        await asyncio.sleep(0.1)
    assert st == 400 and 'duplicate field "spec.size"' in out["message"], out
    st, out, warn = await _send(s, "POST", path, body, fieldValidation="Warn")
    assert st == 201 and out["spec"]["size"] == 2 and 'duplicate field \\"spec.size\\"' in warn


@pytest.mark.parametrize(
    ("body", "want"),
    [
        (b'{"a":1,"b":2}', []),
        (b'{"a":1,"a":2}', ["a"]),
        (b'{"a" : 1, "a"\n:2}', ["a"]),  # whitespace before the colons
        (b'{"x":"k:v","a":1,"a":2}', ["a"]),  # colons inside strings
        # A \u003a colon in a string would balance the lost key's colon in the counts.
        (b'{"x":"\\u003a","a":1,"a":2}', ["a"]),
        (b'{"x":"\\"a\\":","a":1}', []),
        (b'{"l":[{"k":1},{"k":1,"k":2}],"m":{"q":{"r":1,"r":1}}}', ["l[1].k", "m.q.r"]),
    ],
)
def test_decoder_names_every_duplicate(body: bytes, want: list[str]) -> None:
    dups: list[str] = []
    v = decode.loads_json(body, duplicates=dups)
    assert dups == want
    assert v == orjson.loads(body)  # the last value is the one kept, as orjson keeps it


def test_decoder_names_yaml_duplicates() -> None:
    dups: list[str] = []
    v = decode.loads_yaml(
        "spec:\n  containers:\n  - {name: a}\n  - name: b\n    image: x\n    image: y\n",
        duplicates=dups,
    )
    assert dups == ["spec.containers[1].image"]
    assert v["spec"]["containers"][1]["image"] == "y"
