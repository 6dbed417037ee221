# mypy: disable-error-code="union-attr,index,attr-defined,arg-type"
"""The embedded API server decodes bodies as kube-apiserver 1.37 does, by the official API
definitions: wrong types refused (400 on create, 422 `patch` on a patch), unknown fields
by fieldValidation (Strict refuses naming them, Warn drops them with a Warning header that
kubectl prints, Ignore drops them), required fields, the same for custom resources by their
CRD's structural schema; and the per-kind rules: immutable fields, names, annotation size.

Shown with kubectl, the official Python client and raw HTTP."""

from __future__ import annotations

import json
import os
import re
import subprocess
from typing import Any

import aiohttp
import orjson
import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from kubernetes.dynamic import DynamicClient

from gpuyard.apiserver.testing import ServerProcess

from .test_kubectl import KUBECTL, k, kj

NS = "/api/v1/namespaces/default"

POD_TYPO = """
apiVersion: v1
kind: Pod
metadata: {name: typo}
spec:
  bogus: 1
  containers:
  - name: main
    image: nginx:1
    imagee: nginx:1
"""

CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: podgroups.scheduling.x-k8s.io}
spec:
  group: scheduling.x-k8s.io
  scope: Namespaced
  names: {plural: podgroups, singular: podgroup, kind: PodGroup}
  versions:
  - name: v1alpha1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              minMember: {type: integer}
              extra:
                type: object
                x-kubernetes-preserve-unknown-fields: true
          status:
            type: object
            properties:
              phase: {type: string}
"""


# ------------------------------------------------------------------ kubectl


def test_kubectl_unknown_fields_strict_warn_ignore(apiserver: ServerProcess) -> None:
    s = apiserver
    # kubectl's default validation is Strict: refused, naming every unknown field.
    r = k(s, "create", "-f", "-", input=POD_TYPO, check=False)
    assert r.returncode != 0
    assert "Error from server (BadRequest)" in r.stderr, r.stderr
    assert 'Pod in version "v1" cannot be handled as a Pod: strict decoding error' in r.stderr
    assert 'unknown field "spec.bogus"' in r.stderr
    assert 'unknown field "spec.containers[0].imagee"' in r.stderr
    assert k(s, "get", "pods", "-o", "name").stdout.strip() == ""
    # Warn: created without the unknown fields, and kubectl prints the server's warnings.
    r = k(s, "create", "--validate=warn", "-f", "-", input=POD_TYPO)
    assert 'Warning: unknown field "spec.bogus"' in r.stderr, r.stderr
    assert 'Warning: unknown field "spec.containers[0].imagee"' in r.stderr
    pod = kj(s, "pod", "typo")
    assert "bogus" not in pod["spec"]
    assert "imagee" not in pod["spec"]["containers"][0]
    # Ignore: created, unknown fields dropped, nothing said.
    r = k(s, "create", "--validate=false", "-f", "-", input=POD_TYPO.replace("typo", "quiet"))
    assert "Warning" not in r.stderr
    assert "bogus" not in kj(s, "pod", "quiet")["spec"]


def test_kubectl_wrong_types_are_refused(apiserver: ServerProcess) -> None:
    s = apiserver
    r = k(
        s,
        "create",
        "-f",
        "-",
        input=POD_TYPO.replace("  bogus: 1\n", "")
        .replace("    imagee: nginx:1\n", "")
        .replace("image: nginx:1", "image: 5"),
        check=False,
    )
    assert r.returncode != 0
    assert "Go struct field Container.spec.containers.image of type string" in r.stderr, r.stderr
    # The JSON patch of the issue: a number where a ConfigMap holds strings.
    k(s, "create", "configmap", "x", "--from-literal=k=v")
    r = k(
        s,
        "patch",
        "cm",
        "x",
        "--type",
        "json",
        "-p",
        '[{"op":"replace","path":"/data/k","value":1}]',
        check=False,
    )
    assert r.returncode != 0
    assert "is invalid: patch: Invalid value" in r.stderr, r.stderr
    assert "Go struct field ConfigMap.data of type string" in r.stderr
    assert kj(s, "cm", "x")["data"] == {"k": "v"}
    # A bad quantity is not decodable either.
    bad_qty = """
apiVersion: v1
kind: Pod
metadata: {name: q}
spec:
  containers:
  - {name: c, image: x, resources: {limits: {cpu: lots}}}
"""
    r = k(s, "apply", "-f", "-", input=bad_qty, check=False)
    assert r.returncode != 0 and "quantities must match the regular expression" in r.stderr


@pytest.fixture
def api(official_client: client.ApiClient) -> client.ApiClient:
    return official_client  # (conftest.py: the official client for `apiserver`)


def _pod(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "main", "image": "busybox"}], **spec},
    }


def test_official_client_field_validation(api: client.ApiClient) -> None:
    # The typed API refuses unknown fields on the client already; the dynamic client
    # sends plain objects, as kubectl does.
    pods = DynamicClient(api).resources.get(api_version="v1", kind="Pod")

    def create(body: dict[str, Any], mode: str | None = None) -> Any:
        q = [("fieldValidation", mode)] if mode else []
        return pods.create(body=body, namespace="default", query_params=q)

    with pytest.raises(ApiException) as e:
        create(_pod("a", bogus=1), "Strict")
    assert e.value.status == 400
    body = json.loads(e.value.body)
    assert body["reason"] == "BadRequest"
    assert body["message"].endswith('strict decoding error: unknown field "spec.bogus"')
    with pytest.raises(ApiException) as e:
        create(_pod("a"), "Loose")
    assert e.value.status == 422
    assert json.loads(e.value.body)["details"]["causes"][0]["field"] == "fieldValidation"
    # Warn (the default when none is given) and Ignore keep the object, without the field.
    assert "bogus" not in create(_pod("a", bogus=1)).to_dict()["spec"]
    create(_pod("b", bogus=1), "Ignore")
    core = client.CoreV1Api(api)
    assert core.read_namespaced_pod("b", "default").metadata.name == "b"
    # A missing required field is a 422 naming it.
    no_name = _pod("c")
    del no_name["spec"]["containers"][0]["name"]
    with pytest.raises(ApiException) as e:
        create(no_name)
    assert e.value.status == 422
    causes = json.loads(e.value.body)["details"]["causes"]
    assert causes == [
        {
            "reason": "FieldValueRequired",
            "message": "Required value",
            "field": "spec.containers[0].name",
        }
    ]


# ------------------------------------------------------------------ raw HTTP


async def _req(
    s: Any, method: str, path: str, body: Any, ctype: str = "application/json", **q: str
) -> tuple[int, Any, str]:
    import ssl

    ctx = ssl.create_default_context(cadata=s.ca_pem.decode())
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as sess:
        async with sess.request(
            method,
            s.url + path,
            data=orjson.dumps(body),
            params=q,
            headers={"Authorization": f"Bearer {s.token}", "Content-Type": ctype},
        ) as r:
            raw = await r.read()
            return r.status, orjson.loads(raw), r.headers.get("Warning", "")


async def test_types_formats_and_ranges_over_http(apiserver_inproc: Any) -> None:
    s = apiserver_inproc
    cases: list[tuple[dict[str, Any], str]] = [
        (_pod("p1", activeDeadlineSeconds="10"), "of type int64"),
        (_pod("p2", hostNetwork="yes"), "of type bool"),
        (
            _pod(
                "p3", containers=[{"name": "m", "image": "x", "ports": [{"containerPort": 2**31}]}]
            ),
            "number 2147483648",
        ),
        (_pod("p4", containers={"name": "m"}), "of type []v1.Container"),
        (
            _pod("p5", nodeSelector={"a": 1}),
            "Go struct field PodSpec.spec.nodeSelector of type string",
        ),
    ]
    for body, want in cases:
        st, out, _ = await _req(s, "POST", f"{NS}/pods", body)
        assert st == 400 and out["reason"] == "BadRequest", out
        assert want in out["message"], (want, out["message"])
    st, out, _ = await _req(
        s,
        "POST",
        f"{NS}/secrets",
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"k": "%%%"}},
    )
    assert st == 400 and "illegal base64 data" in out["message"]
    st, out, _ = await _req(
        s,
        "POST",
        f"{NS}/pods",
        {**_pod("t"), "metadata": {"name": "t", "creationTimestamp": "yesterday"}},
    )
    assert st == 400 and 'parsing time "yesterday"' in out["message"]
    st, _, _ = await _req(s, "GET", f"{NS}/pods", None)
    # Nothing was stored by any of the refused requests.
    st, listed, _ = await _req(s, "GET", f"{NS}/pods", None)
    assert listed["items"] == []


async def test_warning_header_and_patch_modes(apiserver_inproc: Any) -> None:
    s = apiserver_inproc
    st, _, warn = await _req(s, "POST", f"{NS}/pods", _pod("w", bogus=1))
    assert st == 201
    assert warn == '299 - "unknown field \\"spec.bogus\\""'
    patch = {"spec": {"containers": [{"name": "main", "imagee": "x"}]}}
    st, out, _ = await _req(
        s,
        "PATCH",
        f"{NS}/pods/w",
        patch,
        "application/strategic-merge-patch+json",
        fieldValidation="Strict",
    )
    assert st == 400 and out["message"] == (
        'strict decoding error: unknown field "spec.containers[0].imagee"'
    ), out
    st, out, warn = await _req(
        s, "PATCH", f"{NS}/pods/w", patch, "application/strategic-merge-patch+json"
    )
    assert st == 200 and "imagee" not in out["spec"]["containers"][0]
    assert 'unknown field \\"spec.containers[0].imagee\\"' in warn
    # A field name no header may carry is escaped, not a dropped connection.
    st, _, warn = await _req(s, "POST", f"{NS}/pods", {**_pod("w2"), "x\fé": 1})
    assert st == 201 and warn == '299 - "unknown field \\"x\\\\u000c\\\\u00e9\\""', warn


async def test_a_patch_is_checked_in_what_it_changes(apiserver_inproc: Any) -> None:
    # A patch's unchanged parts are not checked again (they were when stored); what
    # it changes is, in every part of the object it reaches.
    s = apiserver_inproc
    st, _, _ = await _req(s, "POST", f"{NS}/pods", _pod("sp"))
    assert st == 201
    merge = "application/merge-patch+json"
    st, out, _ = await _req(
        s,
        "PATCH",
        f"{NS}/pods/sp/status",
        {"status": {"bogus": 1}},
        merge,
        fieldValidation="Strict",
    )
    assert st == 400 and out["message"] == 'strict decoding error: unknown field "status.bogus"'
    bad_type = {"status": {"containerStatuses": [{"name": "main", "restartCount": "x"}]}}
    st, out, _ = await _req(s, "PATCH", f"{NS}/pods/sp/status", bad_type, merge)
    assert st == 422 and "of type int32" in out["message"], out
    st, out, _ = await _req(s, "PATCH", f"{NS}/pods/sp", {"metadata": {"labels": {"a": 1}}}, merge)
    assert st == 422 and "of type string" in out["message"], out
    st, out, warn = await _req(
        s, "PATCH", f"{NS}/pods/sp/status", {"status": {"phase": "Running", "x": 1}}, merge
    )
    assert st == 200 and out["status"]["phase"] == "Running" and "x" not in out["status"]
    assert warn == '299 - "unknown field \\"status.x\\""', warn
    st, out, _ = await _req(s, "GET", f"{NS}/pods/sp", None)
    assert "labels" not in out["metadata"] and out["status"]["phase"] == "Running"


async def test_custom_resources_prune_by_field_validation(apiserver_inproc: Any) -> None:
    import yaml

    s = apiserver_inproc
    st, _, _ = await _req(
        s, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", yaml.safe_load(CRD)
    )
    assert st == 201
    path = "/apis/scheduling.x-k8s.io/v1alpha1/namespaces/default/podgroups"
    pg = {
        "apiVersion": "scheduling.x-k8s.io/v1alpha1",
        "kind": "PodGroup",
        "metadata": {"name": "g", "labels": {"a": "b"}},
        "spec": {"minMember": 2, "unknown": 1, "extra": {"kept": {"deep": True}}},
    }
    st, out, _ = await _req(s, "POST", path, pg, fieldValidation="Strict")
    assert st == 400 and 'unknown field "spec.unknown"' in out["message"], out
    st, out, warn = await _req(s, "POST", path, pg)
    assert st == 201, out
    assert out["spec"] == {"minMember": 2, "extra": {"kept": {"deep": True}}}
    assert 'unknown field \\"spec.unknown\\"' in warn
    # A controller writing a status field the installed CRD lacks is not broken by it.
    st, out, warn = await _req(
        s,
        "PATCH",
        f"{path}/g/status",
        {"status": {"phase": "Running", "scheduled": 2}},
        "application/merge-patch+json",
    )
    assert st == 200 and out["status"] == {"phase": "Running"}, out
    assert 'unknown field \\"status.scheduled\\"' in warn
    # Types are still validated as the schema says: 422.
    st, out, _ = await _req(
        s, "POST", path, {**pg, "metadata": {"name": "h"}, "spec": {"minMember": "x"}}
    )
    assert st == 422 and out["details"]["causes"][0]["field"] == "spec.minMember"


def test_duplicate_fields_found_by_the_parser_are_reported_by_mode() -> None:
    from gpuyard.apiserver import schemas
    from gpuyard.apiserver.errors import APIError
    from gpuyard.apiserver.resources import Registry

    pods = Registry().get("", "v1", "pods")
    assert pods is not None
    with pytest.raises(APIError) as e:
        schemas.decode(pods, _pod("d", bogus=1), "update", "Strict", ["metadata.name"])
    assert e.value.code == 400 and e.value.message == (
        'Pod in version "v1" cannot be handled as a Pod: strict decoding error: '
        'unknown field "spec.bogus", duplicate field "metadata.name"'
    )
    assert schemas.decode(pods, _pod("d"), "patch", "Warn", ["spec.hostname"]) == [
        'duplicate field "spec.hostname"'
    ]
    assert schemas.decode(pods, _pod("d"), "patch", "Ignore", ["spec.hostname"]) == []


def test_kubectl_immutable_fields(apiserver: ServerProcess) -> None:
    s = apiserver
    k(
        s,
        "apply",
        "-f",
        "-",
        input="""
apiVersion: v1
kind: Pod
metadata: {name: bound}
spec:
  nodeName: node-a
  containers:
  - {name: main, image: nginx:1}
""",
    )
    # The image may change; the node a pod is bound to may not.
    k(s, "set", "image", "pod/bound", "main=nginx:2")
    assert kj(s, "pod", "bound")["spec"]["containers"][0]["image"] == "nginx:2"
    r = k(s, "patch", "pod", "bound", "-p", '{"spec":{"nodeName":"node-b"}}', check=False)
    assert r.returncode != 0
    assert "spec.nodeName: Forbidden: pod updates may not change fields" in r.stderr, r.stderr
    r = k(
        s,
        "patch",
        "pod",
        "bound",
        "-p",
        '{"spec":{"containers":[{"name":"main","workingDir":"/x"}]}}',
        check=False,
    )
    assert r.returncode != 0 and "pod updates may not change fields" in r.stderr
    assert kj(s, "pod", "bound")["spec"]["nodeName"] == "node-a"
    # A Deployment's selector cannot move, and must match its template.
    k(
        s,
        "apply",
        "-f",
        "-",
        input="""
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: main, image: nginx:1}
""",
    )
    r = k(
        s,
        "patch",
        "deployment",
        "web",
        "--type",
        "merge",
        "-p",
        '{"spec":{"selector":{"matchLabels":{"app":"other"}},'
        '"template":{"metadata":{"labels":{"app":"other"}}}}}',
        check=False,
    )
    assert r.returncode != 0
    assert "spec.selector: Invalid value" in r.stderr and "field is immutable" in r.stderr
    r = k(
        s,
        "patch",
        "deployment",
        "web",
        "--type",
        "merge",
        "-p",
        '{"spec":{"template":{"metadata":{"labels":{"app":"other"}}}}}',
        check=False,
    )
    assert r.returncode != 0
    assert "`selector` does not match template `labels`" in r.stderr, r.stderr
    # kubectl edit goes through the same rules.
    env = dict(os.environ, KUBE_EDITOR="sed -i -e s/app:\\ web/app:\\ moved/g")
    r2 = subprocess.run(
        [KUBECTL, "--kubeconfig", s.kubeconfig, "edit", "deployment", "web"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert r2.returncode != 0
    assert 'deployments.apps "web" is invalid' in r2.stderr, r2.stderr
    # kubectl keeps the edit with the server's reasons written at its top.
    kept = re.search(r'stored to "([^"]+)"', r2.stderr)
    assert kept is not None, r2.stderr
    with open(kept.group(1)) as f:
        assert "spec.selector: Invalid value" in f.read()
    os.unlink(kept.group(1))
    dep = kj(s, "deployment", "web")
    assert dep["spec"]["selector"] == {"matchLabels": {"app": "web"}}


async def test_names_and_annotation_size(apiserver_inproc: Any) -> None:
    s = apiserver_inproc
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "1web"},
        "spec": {"ports": [{"port": 80}]},
    }
    st, out, _ = await _req(s, "POST", f"{NS}/services", svc)
    assert st == 422 and "DNS-1035 label" in out["message"], out
    st, out, _ = await _req(
        s,
        "POST",
        f"{NS}/configmaps",
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "Bad-"}},
    )
    assert st == 422
    assert "metadata.generateName" in [c["field"] for c in out["details"]["causes"]], out
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "system:Controller:x"},
        "rules": [],
    }
    st, out, _ = await _req(s, "POST", "/apis/rbac.authorization.k8s.io/v1/clusterroles", role)
    assert st == 201, out
    big = {"a": "x" * (256 * 1024)}
    st, out, _ = await _req(
        s,
        "POST",
        f"{NS}/configmaps",
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "annotations": big}},
    )
    assert st == 422, out
    assert out["details"]["causes"][0] == {
        "reason": "FieldValueTooLong",
        "message": "Too long: must have at most 262144 bytes",
        "field": "metadata.annotations",
    }


async def test_more_immutable_fields(apiserver_inproc: Any) -> None:
    s = apiserver_inproc
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "frozen"}}
    st, _, _ = await _req(
        s, "POST", f"{NS}/configmaps", {**cm, "data": {"a": "1"}, "immutable": True}
    )
    assert st == 201
    st, out, _ = await _req(
        s, "PATCH", f"{NS}/configmaps/frozen", {"data": {"a": "2"}}, "application/merge-patch+json"
    )
    assert st == 422 and out["details"]["causes"][0]["field"] == "data", out
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "n"},
        "spec": {"podCIDR": "10.0.0.0/24"},
    }
    st, _, _ = await _req(s, "POST", "/api/v1/nodes", node)
    assert st == 201
    st, out, _ = await _req(
        s,
        "PATCH",
        "/api/v1/nodes/n",
        {"spec": {"podCIDR": "10.0.1.0/24"}},
        "application/merge-patch+json",
    )
    assert st == 422 and out["details"]["causes"][0]["field"] == "spec.podCIDR", out
    # Changing what may change still works on both.
    st, _, _ = await _req(
        s,
        "PATCH",
        "/api/v1/nodes/n",
        {"spec": {"unschedulable": True}},
        "application/merge-patch+json",
    )
    assert st == 200
    pc = {
        "apiVersion": "scheduling.k8s.io/v1",
        "kind": "PriorityClass",
        "metadata": {"name": "p"},
        "value": 5,
    }
    st, _, _ = await _req(s, "POST", "/apis/scheduling.k8s.io/v1/priorityclasses", pc)
    assert st == 201
    st, out, _ = await _req(
        s,
        "PATCH",
        "/apis/scheduling.k8s.io/v1/priorityclasses/p",
        {"value": 6},
        "application/merge-patch+json",
    )
    assert st == 422 and out["details"]["causes"][0]["field"] == "value"


async def test_service_rolebinding_and_pod_tolerations(apiserver_inproc: Any) -> None:
    s = apiserver_inproc
    merge = "application/merge-patch+json"
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80}]},
    }
    assert (await _req(s, "POST", f"{NS}/services", svc))[0] == 201
    st, out, _ = await _req(
        s, "PATCH", f"{NS}/services/web", {"spec": {"clusterIP": "10.96.0.11"}}, merge
    )
    assert st == 422 and out["details"]["causes"][0]["field"] == "spec.clusterIP", out
    # A replace that leaves clusterIP out keeps the allocated one, as Kubernetes does.
    st, out, _ = await _req(
        s, "PUT", f"{NS}/services/web", {**svc, "spec": {"ports": [{"port": 81}]}}
    )
    assert st == 200 and out["spec"]["clusterIP"] == "10.96.0.10", out
    rb = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "rb"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "a"},
        "subjects": [{"kind": "User", "name": "u", "apiGroup": "rbac.authorization.k8s.io"}],
    }
    rbs = "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings"
    assert (await _req(s, "POST", rbs, rb))[0] == 201
    st, out, _ = await _req(s, "PATCH", f"{rbs}/rb", {"roleRef": {"name": "b"}}, merge)
    assert st == 422 and "cannot change roleRef" in out["message"], out
    # Tolerations may be added to a pod, not taken away.
    tol = {"key": "gpuyard.io/team", "operator": "Exists"}
    st, created, _ = await _req(s, "POST", f"{NS}/pods", _pod("t", tolerations=[tol]))
    assert st == 201
    # The stored list holds the DefaultTolerationSeconds ones too: a new list keeps them.
    stored = created["spec"]["tolerations"]
    more = [*stored, {"key": "x", "operator": "Exists"}]
    st, _, _ = await _req(s, "PATCH", f"{NS}/pods/t", {"spec": {"tolerations": more}}, merge)
    assert st == 200
    st, out, _ = await _req(s, "PATCH", f"{NS}/pods/t", {"spec": {"tolerations": [tol]}}, merge)
    assert st == 422 and out["details"]["causes"][0]["field"] == "spec.tolerations", out
    st, out, _ = await _req(
        s, "PATCH", f"{NS}/pods/t", {"spec": {"terminationGracePeriodSeconds": 5}}, merge
    )
    assert st == 422, out


NON_STRUCTURAL = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: gadgets.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {plural: gadgets, singular: gadget, kind: Gadget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {minimum: 1}
              tags: {type: array}
              both:
                type: object
                properties: {a: {type: string}}
                additionalProperties: {type: string}
              loose: {type: object, x-kubernetes-preserve-unknown-fields: false}
"""


def test_kubectl_refuses_non_structural_crds_and_defaults_by_schema(
    apiserver: ServerProcess,
) -> None:
    s = apiserver
    r = k(s, "apply", "-f", "-", input=NON_STRUCTURAL, check=False)
    assert r.returncode != 0
    assert 'The CustomResourceDefinition "gadgets.example.com" is invalid' in r.stderr, r.stderr
    base = "spec.validation.openAPIV3Schema.properties[spec].properties"
    for want in (
        f"{base}[size].type: Required value: must not be empty for specified object fields",
        f"{base}[tags].items: Required value: must be specified",
        f"{base}[both].additionalProperties: Forbidden: additionalProperties and properties "
        "are mutual exclusive",
        f"{base}[loose].x-kubernetes-preserve-unknown-fields: Invalid value: false: must be "
        "true or undefined",
    ):
        assert want in r.stderr, (want, r.stderr)
    assert k(s, "get", "crd", "-o", "name").stdout.strip() == ""
    # Without a schema at all: refused too.
    no_schema = NON_STRUCTURAL.split("    schema:")[0]
    r = k(s, "apply", "-f", "-", input=no_schema, check=False)
    assert r.returncode != 0
    assert "spec.versions[0].schema.openAPIV3Schema: Required value: schemas are required" in (
        r.stderr
    ), r.stderr
    # A structural one with defaults: custom objects get them.
    good = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: gadgets.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {plural: gadgets, singular: gadget, kind: Gadget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer, default: 3}
              policy:
                type: object
                default: {}
                properties:
                  mode: {type: string, default: Fair}
"""
    k(s, "apply", "-f", "-", input=good)
    k(s, "wait", "--for=condition=Established", "crd/gadgets.example.com", "--timeout=20s")
    k(
        s,
        "apply",
        "-f",
        "-",
        input="apiVersion: example.com/v1\nkind: Gadget\nmetadata: {name: g}\nspec: {}\n",
    )
    assert kj(s, "gadget", "g")["spec"] == {"size": 3, "policy": {"mode": "Fair"}}


async def test_closed_value_sets(apiserver_inproc: Any) -> None:
    s = apiserver_inproc
    st, out, _ = await _req(s, "POST", f"{NS}/pods", _pod("r", restartPolicy="Sometimes"))
    assert st == 422, out
    assert out["details"]["causes"] == [
        {
            "reason": "FieldValueNotSupported",
            "message": 'Unsupported value: "Sometimes": supported values: "Always", "Never", '
            '"OnFailure"',
            "field": "spec.restartPolicy",
        }
    ]
    dep = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d"},
        "spec": {
            "selector": {"matchLabels": {"app": "d"}},
            "template": {
                "metadata": {"labels": {"app": "d"}},
                "spec": {
                    "containers": [{"name": "m", "image": "x", "imagePullPolicy": "Sometimes"}]
                },
            },
        },
    }
    st, out, _ = await _req(s, "POST", "/apis/apps/v1/namespaces/default/deployments", dep)
    assert st == 422, out
    assert [c["field"] for c in out["details"]["causes"]] == [
        "spec.template.spec.containers[0].imagePullPolicy"
    ]
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "n"},
        "spec": {"taints": [{"key": "k", "effect": "NoSchedul"}]},
    }
    st, out, _ = await _req(s, "POST", "/api/v1/nodes", node)
    assert st == 422 and out["details"]["causes"][0]["field"] == "spec.taints[0].effect", out
    # An empty value is left to defaulting.
    st, _, _ = await _req(s, "POST", f"{NS}/pods", _pod("e", dnsPolicy=""))
    assert st == 201


async def test_selectors_of_replicasets_statefulsets_and_jobs_cannot_move(
    apiserver_inproc: Any,
) -> None:
    """As a Deployment's: a merge patch moving the selector (and the template's labels
    with it) is refused naming the field, and the object is unchanged."""
    s = apiserver_inproc
    template = {
        "metadata": {"labels": {"app": "a"}},
        "spec": {"containers": [{"name": "c", "image": "nginx"}]},
    }
    apps = "/apis/apps/v1/namespaces/default"
    batch = "/apis/batch/v1/namespaces/default"
    objs = [
        (f"{apps}/replicasets", "ReplicaSet", "apps/v1", {}),
        (f"{apps}/statefulsets", "StatefulSet", "apps/v1", {"serviceName": "a"}),
        (f"{batch}/jobs", "Job", "batch/v1", {"manualSelector": True}),
    ]
    for path, kind, av, extra in objs:
        tmpl = template
        if kind == "Job":
            tmpl = {**template, "spec": {**template["spec"], "restartPolicy": "Never"}}
        body = {
            "apiVersion": av,
            "kind": kind,
            "metadata": {"name": "sel"},
            "spec": {"selector": {"matchLabels": {"app": "a"}}, "template": tmpl, **extra},
        }
        st, made, _ = await _req(s, "POST", path, body)
        assert st == 201, made
        moved = {
            "spec": {
                "selector": {"matchLabels": {"app": "b"}},
                "template": {"metadata": {"labels": {"app": "b"}}},
            }
        }
        st, out, _ = await _req(s, "PATCH", f"{path}/sel", moved, "application/merge-patch+json")
        assert st == 422 and out["reason"] == "Invalid", (kind, out)
        causes = {(c["field"], c["message"].rpartition(": ")[2]) for c in out["details"]["causes"]}
        want = ("spec.selector", "field is immutable")
        if kind == "StatefulSet":
            want = (
                "spec",
                "updates to statefulset spec for fields other than 'replicas', 'ordinals', "
                "'template', 'updateStrategy', 'revisionHistoryLimit', "
                "'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
            )
        assert want in causes, (kind, out)
        st, now, _ = await _req(s, "GET", f"{path}/sel", None)
        assert now["spec"]["selector"] == {"matchLabels": {"app": "a"}}, (kind, now)
