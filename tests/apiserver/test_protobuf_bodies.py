"""Protobuf request bodies, as kubectl's typed clients send them (every `kubectl create`
subcommand of a built-in kind, and the Eviction of `kubectl drain`)."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
from typing import Any

import orjson
import pytest

from gpuyard.apiserver import protobuf, tls

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
    return _key((num << 3) | 2) + _ld(payload)


def _key(k: int) -> bytes:
    out = b""
    while k >= 0x80:
        out += bytes([(k & 0x7F) | 0x80])
        k >>= 7
    return out + bytes([k])


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


def test_embedded_structs_decode_into_their_parent() -> None:
    """Go's embedded structs (a Volume's VolumeSource, a key selector's
    LocalObjectReference, a Probe's handler) have no JSON name: their fields are the
    parent's, as kube-apiserver's JSON of the same object shows."""
    volume = _f(1, b"cfg") + _f(2, _f(19, _f(1, _f(1, b"settings"))))
    env = _f(1, b"MODE") + _f(3, _f(3, _f(1, _f(1, b"settings")) + _f(2, b"mode")))
    probe = _f(1, _f(2, _f(1, b"/ready"))) + bytes([4 << 3, 5])
    container = _f(1, b"c") + _f(2, b"nginx") + _f(7, env) + _f(11, probe)
    raw = _f(1, _f(1, b"p")) + _f(2, _f(1, volume) + _f(2, container))
    obj = protobuf.decode(protobuf.MAGIC + _f(1, _f(1, b"v1") + _f(2, b"Pod")) + _f(2, raw))
    assert obj["spec"]["volumes"] == [{"name": "cfg", "configMap": {"name": "settings"}}]
    (c,) = obj["spec"]["containers"]
    assert c["env"] == [
        {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}}
    ]
    assert c["readinessProbe"] == {"httpGet": {"path": "/ready"}, "periodSeconds": 5}


def test_unknown_kind_and_garbage_refused() -> None:
    for api_version, kind in ((b"example.com/v1", b"Widget"), (b"apps/v1", b"NoSuchKind")):
        env = protobuf.MAGIC + _f(1, _f(1, api_version) + _f(2, kind)) + _f(2, b"")
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


TYPED_CREATES: list[tuple[list[str], str, Any]] = [
    (
        ["deployment", "web", "--image=nginx:1.27", "--replicas=0", "--port=80"],
        "deployment/web",
        lambda o: (
            o["spec"]["replicas"] == 0  # a pointer's zero that was sent is kept
            and o["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] == 80
            and "hostNetwork" not in o["spec"]["template"]["spec"]
        ),  # omitempty zero left out
    ),
    (
        ["job", "train", "--image=busybox", "--", "sh", "-c", "echo hi"],
        "job/train",
        lambda o: (
            o["spec"]["template"]["spec"]["containers"][0]["command"] == ["sh", "-c", "echo hi"]
        ),
    ),
    (
        ["cronjob", "nightly", "--image=busybox", "--schedule=0 3 * * *"],
        "cronjob/nightly",
        lambda o: o["spec"]["schedule"] == "0 3 * * *",
    ),
    (
        ["service", "clusterip", "websvc", "--tcp=80:8080"],
        "service/websvc",
        lambda o: (
            o["spec"]["ports"][0]["port"] == 80 and o["spec"]["ports"][0]["targetPort"] == 8080
        ),  # IntOrString as its int
    ),
    (
        ["service", "nodeport", "np", "--tcp=80:8080"],
        "service/np",
        lambda o: (
            o["spec"]["type"] == "NodePort"
            and 30000 <= o["spec"]["ports"][0]["nodePort"] <= 32767  # allocated
            and o["spec"]["clusterIP"] != ""
        ),
    ),
    (
        ["service", "loadbalancer", "lb", "--tcp=443:8443"],
        "service/lb",
        lambda o: (
            o["spec"]["type"] == "LoadBalancer"
            and 30000 <= o["spec"]["ports"][0]["nodePort"] <= 32767
            and o["status"] == {"loadBalancer": {}}
        ),
    ),
    (
        ["service", "externalname", "ext", "--external-name=db.example.com"],
        "service/ext",
        lambda o: (
            o["spec"]["type"] == "ExternalName"
            and o["spec"]["externalName"] == "db.example.com"
            and "clusterIP" not in o["spec"]  # none allocated for an ExternalName
        ),
    ),
    (
        ["ingress", "web-ing", "--rule=example.com/api*=websvc:80"],
        "ingress/web-ing",
        lambda o: (
            o["spec"]["rules"][0]["host"] == "example.com"
            and o["spec"]["rules"][0]["http"]["paths"][0]
            == {
                "path": "/api",
                "pathType": "Prefix",
                "backend": {"service": {"name": "websvc", "port": {"number": 80}}},
            }
        ),
    ),
    (
        [
            "secret",
            "docker-registry",
            "regcred",
            "--docker-server=registry.example.com",
            "--docker-username=u",
            "--docker-password=p",
        ],
        "secret/regcred",
        lambda o: (
            o["type"] == "kubernetes.io/dockerconfigjson"
            and "registry.example.com"
            in orjson.loads(base64.b64decode(o["data"][".dockerconfigjson"]))["auths"]
        ),
    ),
    (
        ["role", "reader", "--verb=get,list", "--resource=pods"],
        "role/reader",
        lambda o: o["rules"][0]["verbs"] == ["get", "list"],
    ),
    (
        ["rolebinding", "reader-b", "--role=reader", "--user=alice"],
        "rolebinding/reader-b",
        lambda o: o["roleRef"]["name"] == "reader" and o["subjects"][0]["name"] == "alice",
    ),
    (
        ["clusterrole", "nodes-reader", "--verb=get", "--resource=nodes"],
        "clusterrole/nodes-reader",
        lambda o: o["rules"][0]["resources"] == ["nodes"],
    ),
    (
        ["pdb", "web-pdb", "--selector=app=web", "--min-available=50%"],
        "pdb/web-pdb",
        lambda o: o["spec"]["minAvailable"] == "50%",  # IntOrString as its string
    ),
    (
        ["quota", "gpus", "--hard=requests.nvidia.com/gpu=8,pods=100"],
        "resourcequota/gpus",
        lambda o: o["spec"]["hard"] == {"requests.nvidia.com/gpu": "8", "pods": "100"},
    ),
    (
        ["priorityclass", "batch-low", "--value=100", "--description=low"],
        "priorityclass/batch-low",
        lambda o: o["value"] == 100 and o["description"] == "low",
    ),
    (
        ["secret", "generic", "creds", "--from-literal=token=s3cret"],
        "secret/creds",
        lambda o: o["data"] == {"token": "czNjcmV0"},  # bytes as base64
    ),
    (
        ["configmap", "cfg", "--from-literal=a=b"],
        "configmap/cfg",
        lambda o: o["data"] == {"a": "b"},
    ),
    (["namespace", "team-b"], "namespace/team-b", lambda o: o["metadata"]["name"] == "team-b"),
    (
        ["serviceaccount", "runner"],
        "serviceaccount/runner",
        lambda o: o["kind"] == "ServiceAccount",
    ),
]


@pytest.mark.skipif(KUBECTL is None, reason="kubectl not installed")
def test_every_typed_create_sends_protobuf_and_is_stored(apiserver: Any, tmp_path: Any) -> None:
    # a certificate and key for `kubectl create secret tls`, which checks that they pair
    _, cert, key = tls.make_ca_and_cert(["web.example.com"])
    (tmp_path / "tls.crt").write_bytes(cert)
    (tmp_path / "tls.key").write_bytes(key)
    tls_secret = (
        ["secret", "tls", "web-tls", f"--cert={tmp_path}/tls.crt", f"--key={tmp_path}/tls.key"],
        "secret/web-tls",
        lambda o: (
            o["type"] == "kubernetes.io/tls"
            and base64.b64decode(o["data"]["tls.crt"]) == cert
            and base64.b64decode(o["data"]["tls.key"]) == key
        ),
    )
    for args, ref, check in [*TYPED_CREATES, tls_secret]:
        r = _kubectl(apiserver, "-v=8", "create", *args)
        assert r.returncode == 0, (args, r.stderr[-2000:])
        assert "Content-Type: application/vnd.kubernetes.protobuf" in r.stderr, "sent protobuf"
        got = _kubectl(apiserver, "get", ref, "-o", "json")
        assert got.returncode == 0, got.stderr
        obj = orjson.loads(got.stdout)
        assert check(obj), (ref, obj)
        assert "generateName" not in obj["metadata"]


def test_mangled_bodies_are_refused_cleanly() -> None:
    """Seeded: bytes of a valid Deployment body flipped, cut or repeated either decode or
    raise ProtobufError (a 400), never anything else."""
    import random

    meta = _f(1, b"web") + _f(11, _f(1, b"app") + _f(2, b"web"))
    container = _f(1, b"c") + _f(2, b"nginx")
    template = _f(2, _f(2, container))
    spec = bytes([0x08, 0x03]) + _f(3, template)
    raw = _f(1, meta) + _f(2, spec)
    good = protobuf.MAGIC + _f(1, _f(1, b"apps/v1") + _f(2, b"Deployment")) + _f(2, raw)
    obj = protobuf.decode(good)
    assert obj["spec"]["replicas"] == 3
    assert obj["spec"]["template"]["spec"]["containers"] == [{"name": "c", "image": "nginx"}]
    rng = random.Random(15)
    for _ in range(2000):
        b = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            op = rng.random()
            i = rng.randrange(len(protobuf.MAGIC), len(b))
            if op < 0.5:
                b[i] = rng.randrange(256)
            elif op < 0.8:
                del b[i:]
                if len(b) <= len(protobuf.MAGIC):
                    break
            else:
                b[i:i] = b[i : i + rng.randint(1, 8)]
        try:
            out = protobuf.decode(bytes(b))
        except protobuf.ProtobufError:
            continue
        assert isinstance(out, dict) and out["kind"]
