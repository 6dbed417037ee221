"""Protobuf request bodies, as kubectl's typed clients send them (create cm/ns/secret,
and the Eviction of `kubectl drain`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from typing import Any

import orjson
import pytest

from gpuyard.apiserver import protobuf

KUBECTL = shutil.which("kubectl", path=os.path.dirname(sys.executable)) or shutil.which("kubectl")


def _ld(b: bytes) -> bytes:
    n = len(b)
    out = b""
    while True:
        if n < 0x80:
            return out + bytes([n]) + b
        out += bytes([(n & 0x7F) | 0x80])
        n >>= 7


def _f(num: int, payload: bytes) -> bytes:
    return bytes([(num << 3) | 2]) + _ld(payload)


def test_decode_configmap_message() -> None:
    meta = _f(1, b"cfg") + _f(11, _f(1, b"app") + _f(2, b"web"))
    raw = _f(1, meta) + _f(2, _f(1, b"k") + _f(2, b"v")) + _f(3, _f(1, b"b") + _f(2, b"\x00\x01"))
    env = protobuf.MAGIC + _f(1, _f(1, b"v1") + _f(2, b"ConfigMap")) + _f(2, raw)
    obj = protobuf.decode(env)
    assert obj == {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cfg", "labels": {"app": "web"}},
        "data": {"k": "v"},
        "binaryData": {"b": "AAE="},
    }


def test_unknown_kind_and_garbage_refused() -> None:
    env = protobuf.MAGIC + _f(1, _f(1, b"apps/v1") + _f(2, b"Deployment")) + _f(2, b"")
    with pytest.raises(protobuf.ProtobufError):
        protobuf.decode(env)
    with pytest.raises(protobuf.ProtobufError):
        protobuf.decode(b"not protobuf")
    with pytest.raises(protobuf.ProtobufError):
        protobuf.decode(protobuf.MAGIC + b"\x0a\xff\xff")


def _kubectl(srv: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [KUBECTL or "kubectl", "--kubeconfig", srv.kubeconfig, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.skipif(KUBECTL is None, reason="kubectl not installed")
def test_kubectl_typed_creates_and_drain(apiserver: Any) -> None:
    r = _kubectl(apiserver, "create", "configmap", "c1", "--from-literal=a=b")
    assert r.returncode == 0, r.stderr
    r = _kubectl(apiserver, "create", "namespace", "team-a")
    assert r.returncode == 0, r.stderr
    r = _kubectl(apiserver, "create", "secret", "generic", "s1", "--from-literal=x=y")
    assert r.returncode == 0, r.stderr
    r = _kubectl(apiserver, "get", "configmap", "c1", "-o", "json")
    got = orjson.loads(r.stdout)
    assert got["data"] == {"a": "b"}
    assert "generateName" not in got["metadata"]  # empty protobuf strings are omitted
    r = _kubectl(apiserver, "auth", "can-i", "create", "pods")
    assert r.returncode == 0 and r.stdout.strip() == "yes", r.stderr
    r = _kubectl(apiserver, "get", "secret", "s1", "-o", "jsonpath={.data.x}")
    assert r.stdout == "eQ=="
    manifest = (
        "apiVersion: v1\nkind: Node\nmetadata: {name: n1}\n---\n"
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p1, namespace: default}\n"
        "spec: {nodeName: n1, containers: [{name: c, image: x}]}\n"
    )
    r = subprocess.run(
        [
            KUBECTL or "kubectl",
            "--kubeconfig",
            apiserver.kubeconfig,
            "create",
            "--validate=false",
            "-f",
            "-",
        ],
        input=manifest,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    r = _kubectl(
        apiserver,
        "patch",
        "pod",
        "p1",
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status":{"phase":"Succeeded"}}',
    )
    assert r.returncode == 0, r.stderr
    # drain evicts through pods/eviction (a protobuf Eviction body); a finished pod goes
    r = subprocess.run(
        [
            KUBECTL or "kubectl",
            "--kubeconfig",
            apiserver.kubeconfig,
            "drain",
            "n1",
            "--force",
            "--timeout=20s",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    r = _kubectl(apiserver, "get", "node", "n1", "-o", "jsonpath={.spec.unschedulable}")
    assert r.stdout == "true"
    r = _kubectl(apiserver, "get", "pods", "-o", "name")
    assert r.stdout.strip() == ""
