# mypy: disable-error-code="union-attr,attr-defined"
"""Request paths are parsed once, from the raw (percent-encoded) target: an encoded
"/" or "?", an empty, "." or ".." segment or a trailing slash never turns an item
request into a collection request. Shown with raw HTTP (the bytes an attacker
sends), the official Python client and kubectl."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from gpuyard.apiserver import paths
from gpuyard.apiserver.testing import ServerProcess

KUBECTL = shutil.which("kubectl", path=os.path.dirname(sys.executable)) or "kubectl"
NS = "pc"
CM = f"/api/v1/namespaces/{NS}/configmaps"


def raw(srv: ServerProcess, method: str, target: str, body: bytes = b"") -> tuple[int, Any]:
    """One request with the target exactly as given (no client-side normalization)."""
    u = urlsplit(srv.url)
    conn = http.client.HTTPSConnection(u.hostname, u.port, context=srv.ssl_context(), timeout=30)
    try:
        h = dict(srv.headers)
        if body:
            h["Content-Type"] = "application/json"
        conn.request(method, target, body=body or None, headers=h)
        r = conn.getresponse()
        data = r.read()
        try:
            return r.status, json.loads(data)
        except ValueError:
            return r.status, data
    finally:
        conn.close()


def names(srv: ServerProcess, path: str) -> list[str]:
    st, out = raw(srv, "GET", path)
    assert st == 200, out
    return sorted(i["metadata"]["name"] for i in out["items"])


@pytest.fixture
def populated(apiserver: ServerProcess) -> Iterator[ServerProcess]:
    st, out = raw(
        apiserver, "POST", "/api/v1/namespaces", json.dumps({"metadata": {"name": NS}}).encode()
    )
    assert st == 201, out
    for i in range(5):
        body = {"metadata": {"name": f"cm{i}"}, "data": {"k": str(i)}}
        st, out = raw(apiserver, "POST", CM, json.dumps(body).encode())
        assert st == 201, out
    for i in range(3):
        body = {"metadata": {"name": f"n{i}"}}
        st, out = raw(apiserver, "POST", "/api/v1/nodes", json.dumps(body).encode())
        assert st == 201, out
    yield apiserver


ALL_CMS = [f"cm{i}" for i in range(5)]


@pytest.mark.parametrize(
    "target",
    [
        f"{CM}/%3F",
        f"{CM}/%3f",
        f"{CM}/%2F",
        f"{CM}/%2f",
        f"{CM}//",
        f"{CM}/",
        f"{CM}/%3F/../x",
        f"{CM}/cm0/..",
        f"{CM}/./cm0",
        f"{CM}/%2E%2E",
        f"{CM}/%3F?dryRun=All",
        f"{CM}/%23",
        f"{CM}/%00",
        f"{CM}/%zz",
        f"{CM}/%C3%28",
        f"/api/v1/namespaces/{NS}//configmaps",
        "/api/v1/namespaces/%2F/configmaps",
        f"/api/v1//namespaces/{NS}/configmaps",
    ],
)
def test_item_delete_never_reaches_the_collection(populated: ServerProcess, target: str) -> None:
    st, out = raw(populated, "DELETE", target)
    assert st in (400, 404), (st, out)
    assert out["kind"] == "Status" and out["code"] == st
    assert out["message"]  # names the problem
    assert names(populated, CM) == ALL_CMS
    st, out = raw(populated, "GET", target)
    assert st in (400, 404), (st, out)


@pytest.mark.parametrize("target", ["/api/v1/nodes/%3F", "/api/v1/nodes/", "/api/v1/nodes//"])
def test_node_delete_with_encoded_or_empty_name(populated: ServerProcess, target: str) -> None:
    st, out = raw(populated, "DELETE", target)
    assert st in (400, 404), (st, out)
    assert names(populated, "/api/v1/nodes") == ["n0", "n1", "n2"]


def test_segments_are_decoded_exactly_once(populated: ServerProcess) -> None:
    st, out = raw(populated, "GET", f"{CM}/%63m1")  # %63 is "c"
    assert st == 200 and out["metadata"]["name"] == "cm1"
    st, out = raw(populated, "DELETE", f"{CM}/%2563m1")  # the name "%63m1": no such object
    assert st == 404, out
    assert names(populated, CM) == ALL_CMS


def test_the_collection_path_still_lists_and_deletes(populated: ServerProcess) -> None:
    st, _ = raw(populated, "DELETE", f"{CM}/cm0")
    assert st == 200
    st, _ = raw(populated, "DELETE", f"{CM}?labelSelector=nope%3Dx")
    assert st == 200
    assert names(populated, CM) == ALL_CMS[1:]
    st, out = raw(populated, "DELETE", CM)
    assert st == 200, out
    assert names(populated, CM) == []


@pytest.mark.parametrize("target", ["/api/", "/apis/", "/api/v1/", "/apis/apps/", "/apis/apps/v1/"])
def test_discovery_with_a_trailing_slash_still_answers(
    apiserver: ServerProcess, target: str
) -> None:
    st, out = raw(apiserver, "GET", target)
    assert st == 200, out


def test_dry_run_delete_of_an_encoded_question_mark_crd(apiserver: ServerProcess) -> None:
    crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    before = names(apiserver, crds)
    st, out = raw(apiserver, "DELETE", f"{crds}/%3F?dryRun=All")
    assert st in (400, 404), (st, out)
    assert names(apiserver, crds) == before


def test_official_client_empty_name_deletes_nothing(populated: ServerProcess) -> None:
    api = config.new_client_from_config(config_file=populated.kubeconfig)
    try:
        core = client.CoreV1Api(api)
        with pytest.raises(ApiException) as ei:
            core.delete_namespaced_config_map(name="", namespace=NS)
        assert ei.value.status == 404
        with pytest.raises(ApiException) as ei:
            core.delete_namespaced_config_map(name="?", namespace=NS)
        assert ei.value.status in (400, 404)
        with pytest.raises(ApiException) as ei:
            core.delete_namespaced_config_map(name="a/b", namespace=NS)
        assert ei.value.status in (400, 404)
        with pytest.raises(ApiException):
            core.delete_node(name="")
        got = sorted(c.metadata.name for c in core.list_namespaced_config_map(NS).items)
        assert got == ALL_CMS
        assert sorted(n.metadata.name for n in core.list_node().items) == ["n0", "n1", "n2"]
        core.delete_namespaced_config_map(name="cm4", namespace=NS)
        got = sorted(c.metadata.name for c in core.list_namespaced_config_map(NS).items)
        assert got == ALL_CMS[:4]
    finally:
        api.close()


@pytest.mark.parametrize("target", [f"{CM}/%3F", f"{CM}/%2F", f"{CM}/", f"{CM}/x/../"])
def test_kubectl_raw_delete_deletes_nothing(populated: ServerProcess, target: str) -> None:
    r = subprocess.run(
        [KUBECTL, "--kubeconfig", populated.kubeconfig, "delete", "--raw", target],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert names(populated, CM) == ALL_CMS, (r.returncode, r.stdout, r.stderr)


def test_kubectl_delete_by_name_with_separators(populated: ServerProcess) -> None:
    for name in ("?", "a/b", "%3F"):
        r = subprocess.run(
            [KUBECTL, "--kubeconfig", populated.kubeconfig, "-n", NS, "delete", "configmap", name],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode != 0, r.stdout
    assert names(populated, CM) == ALL_CMS


# ------------------------------------------------------------------ the parser itself


@pytest.mark.parametrize(
    ("target", "code"),
    [
        ("/api/v1/nodes/%3F", 400),
        ("/api/v1/nodes/a%2Fb", 400),
        ("/api/v1/nodes//", 400),
        ("/api/v1/nodes/", 404),
        ("/api/v1/nodes/./x", 400),
        ("/api/v1/nodes/%2e", 400),
        ("/api/v1/nodes/x/..", 400),
        ("/api/v1/nodes/%G0", 400),
        ("/api/v1/nodes/%FF", 400),
        ("api/v1/nodes", 400),
        ("/api/v1/watch/", 404),
    ],
)
def test_parse_refuses(target: str, code: int) -> None:
    with pytest.raises(paths.PathError) as ei:
        paths.parse(target)
    assert ei.value.code == code
    assert "path" in ei.value.message or "find" in ei.value.message


def test_parse_routes() -> None:
    r = paths.parse("/api/v1/namespaces/default/pods/p%2Dx/status")
    assert (r.kind, r.namespace, r.plural, r.name, r.sub) == (
        "resource",
        "default",
        "pods",
        "p-x",
        "status",
    )
    r = paths.parse("/apis/apps/v1/watch/namespaces/default/deployments")
    assert (r.group, r.version, r.plural, r.name, r.watch) == (
        "apps",
        "v1",
        "deployments",
        None,
        True,
    )
    r = paths.parse("/api/v1/namespaces/ns1/finalize")
    assert (r.plural, r.name, r.sub, r.namespace) == ("namespaces", "ns1", "finalize", None)
    assert paths.parse("/api/").kind == "api"
    assert paths.parse("/openapi/v3/apis/apps/v1").other == "/openapi/v3/apis/apps/v1"
    assert paths.split_target("/api/v1/nodes?limit=1&x=%2F") == (
        "/api/v1/nodes",
        {"limit": "1", "x": "/"},
    )
