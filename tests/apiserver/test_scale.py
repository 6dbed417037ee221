"""The /scale subresource through real kubectl and raw HTTP: Deployments, ReplicaSets,
StatefulSets and custom kinds whose CRD declares subresources.scale."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from typing import Any

from gpuyard.apiserver.testing import ServerProcess

from .test_kubectl import k

DEPLOY = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
    matchExpressions: [{key: tier, operator: In, values: [front, edge]}]
  template:
    metadata: {labels: {app: web, tier: front}}
    spec: {containers: [{name: c, image: nginx}]}
"""

STS = """
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 1
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec: {containers: [{name: c, image: postgres}]}
"""

RS = """
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: rs1}
spec:
  replicas: 1
  selector: {matchLabels: {app: rs1}}
  template:
    metadata: {labels: {app: rs1}}
    spec: {containers: [{name: c, image: nginx}]}
"""

CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: groups.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {plural: groups, singular: group, kind: Group}
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      status: {}
      scale: {specReplicasPath: .spec.size, statusReplicasPath: .status.size,
              labelSelectorPath: .status.selector}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec: {type: object, properties: {size: {type: integer}}}
          status: {type: object, properties: {size: {type: integer}, selector: {type: string}}}
"""


def http(srv: ServerProcess, method: str, path: str, body: Any = None, ctype: str = "") -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(srv.url + path, data=data, method=method)
    req.add_header("Authorization", f"Bearer {srv.token}")
    if ctype or data is not None:
        req.add_header("Content-Type", ctype or "application/json")
    ctx = ssl.create_default_context(cafile=srv.ca_file)
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_kubectl_scale_builtin_workloads(apiserver: ServerProcess) -> None:
    s = apiserver
    for text in (DEPLOY, STS, RS):
        k(s, "apply", "-f", "-", input=text)
    k(s, "scale", "deployment/web", "--replicas=5")
    k(s, "scale", "statefulset/db", "--replicas=3")
    k(s, "scale", "rs/rs1", "--replicas=0")
    get = json.loads(k(s, "get", "deploy/web", "-o", "json").stdout)
    assert get["spec"]["replicas"] == 5
    assert json.loads(k(s, "get", "sts/db", "-o", "json").stdout)["spec"]["replicas"] == 3
    assert json.loads(k(s, "get", "rs/rs1", "-o", "json").stdout)["spec"]["replicas"] == 0
    # --current-replicas is a precondition kubectl checks through the Scale
    r = k(s, "scale", "deployment/web", "--current-replicas=2", "--replicas=1", check=False)
    assert r.returncode != 0
    assert json.loads(k(s, "get", "deploy/web", "-o", "json").stdout)["spec"]["replicas"] == 5

    st, sc = http(s, "GET", "/apis/apps/v1/namespaces/default/deployments/web/scale")
    assert st == 200 and sc["kind"] == "Scale" and sc["apiVersion"] == "autoscaling/v1"
    assert sc["spec"] == {"replicas": 5}
    assert sc["status"]["selector"] == "app=web,tier in (edge,front)"
    assert sc["metadata"]["resourceVersion"] == get["metadata"]["resourceVersion"]
    # a stale resourceVersion is a conflict; a negative count is invalid; nothing changes
    sc["spec"]["replicas"] = 7
    sc["metadata"]["resourceVersion"] = "1"
    st, out = http(s, "PUT", "/apis/apps/v1/namespaces/default/deployments/web/scale", sc)
    assert st == 409 and out["reason"] == "Conflict"
    st, out = http(
        s,
        "PATCH",
        "/apis/apps/v1/namespaces/default/deployments/web/scale",
        {"spec": {"replicas": -1}},
        "application/merge-patch+json",
    )
    assert st == 422 and out["details"]["causes"][0]["field"] == "spec.replicas", out
    assert json.loads(k(s, "get", "deploy/web", "-o", "json").stdout)["spec"]["replicas"] == 5
    # scale is not a subresource of kinds that have none
    k(s, "create", "configmap", "c1")
    st, out = http(s, "GET", "/api/v1/namespaces/default/configmaps/c1/scale")
    assert st == 404


def test_kubectl_scale_custom_resource(apiserver: ServerProcess) -> None:
    s = apiserver
    k(s, "apply", "-f", "-", input=CRD)
    k(s, "wait", "--for=condition=Established", "crd/groups.example.com", "--timeout=10s")
    res = json.loads(k(s, "get", "--raw", "/apis/example.com/v1").stdout)["resources"]
    subs = {r["name"]: r for r in res}
    assert (
        subs["groups/scale"]["kind"] == "Scale" and subs["groups/scale"]["group"] == "autoscaling"
    )
    k(
        s,
        "apply",
        "-f",
        "-",
        input="apiVersion: example.com/v1\nkind: Group\nmetadata: {name: g}\nspec: {size: 1}\n",
    )
    http(
        s,
        "PATCH",
        "/apis/example.com/v1/namespaces/default/groups/g/status",
        {"status": {"size": 1, "selector": "app=g"}},
        "application/merge-patch+json",
    )
    k(s, "scale", "group/g", "--replicas=4")
    obj = json.loads(k(s, "get", "group/g", "-o", "json").stdout)
    assert obj["spec"]["size"] == 4 and obj["status"]["size"] == 1
    st, sc = http(s, "GET", "/apis/example.com/v1/namespaces/default/groups/g/scale")
    assert st == 200 and sc["spec"]["replicas"] == 4
    assert sc["status"] == {"replicas": 1, "selector": "app=g"}


def test_status_subresource_of_builtin_kinds(apiserver: ServerProcess) -> None:
    """Every built-in with a status subresource separates spec and status writes."""
    s = apiserver
    k(
        s,
        "apply",
        "-f",
        "-",
        input="apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: cj}\nspec:\n"
        "  schedule: '*/5 * * * *'\n  jobTemplate: {spec: {template: {spec: {restartPolicy: Never,"
        " containers: [{name: c, image: busybox}]}}}}\n",
    )
    base = "/apis/batch/v1/namespaces/default/cronjobs/cj"
    st, out = http(
        s,
        "PATCH",
        base + "/status",
        {"spec": {"suspend": True}, "status": {"lastScheduleTime": "2026-01-01T00:00:00Z"}},
        "application/merge-patch+json",
    )
    assert st == 200, out
    assert out["status"]["lastScheduleTime"] == "2026-01-01T00:00:00Z"
    assert not out["spec"].get("suspend"), "a status write leaves the spec"
    st, out = http(
        s, "PATCH", base, {"spec": {"suspend": True}, "status": {}}, "application/merge-patch+json"
    )
    assert st == 200 and out["spec"]["suspend"] is True
    assert out["status"]["lastScheduleTime"] == "2026-01-01T00:00:00Z", "a spec write leaves status"
    st, out = http(s, "GET", base + "/status")
    assert st == 200 and out["kind"] == "CronJob"


def test_scale_is_admitted_as_the_scale_subresource(apiserver: ServerProcess) -> None:
    """kubectl scale is an UPDATE of deployments/scale with an autoscaling/v1 Scale:
    a policy on that subresource sees the Scale, one on deployments does not see it."""
    from .test_admission_policy import binding, deploy, policy

    s = apiserver
    on_scale = policy(
        "scale-cap",
        {
            "expression": "object.metadata.name != 'capped' || object.spec.replicas <= 3",
            "message": "at most 3",
        },
        {
            "expression": "object.kind == 'Scale' && request.kind.kind == 'Scale' && "
            "request.kind.group == 'autoscaling' && request.subResource == 'scale' && "
            "request.resource.resource == 'deployments' && oldObject.kind == 'Scale'",
            "message": "not a Scale",
        },
        rule={
            "apiGroups": ["apps"],
            "apiVersions": ["v1"],
            "operations": ["UPDATE"],
            "resources": ["deployments/scale"],
        },
    )
    frozen = policy(
        "frozen", {"expression": "object.metadata.name != 'capped'", "message": "frozen"}
    )
    frozen["spec"]["matchConstraints"]["resourceRules"][0]["operations"] = ["UPDATE"]
    docs = [on_scale, binding("scale-cap", "scale-cap"), frozen, binding("frozen", "frozen")]
    k(s, "apply", "-f", "-", input="\n---\n".join(json.dumps(d) for d in docs))
    try:
        k(s, "apply", "-f", "-", input=json.dumps(deploy("capped", 1)))
        r = k(s, "scale", "deployment/capped", "--replicas=5", check=False)
        assert r.returncode != 0 and "at most 3" in r.stderr, r.stderr
        k(s, "scale", "deployment/capped", "--replicas=2")  # not seen by `frozen`
        got = json.loads(k(s, "get", "deploy/capped", "-o", "json", "--show-managed-fields").stdout)
        assert got["spec"]["replicas"] == 2
        # the write is recorded as the scale subresource's
        assert {
            "subresource": "scale",
            "fieldsV1": {"f:spec": {"f:replicas": {}}},
        }.items() <= next(
            e for e in got["metadata"]["managedFields"] if e.get("subresource") == "scale"
        ).items(), got["metadata"]["managedFields"]
        r = k(s, "label", "deployment/capped", "x=y", check=False)
        assert r.returncode != 0 and "frozen" in r.stderr, r.stderr  # `frozen` is active
    finally:
        k(s, "delete", "validatingadmissionpolicybinding", "scale-cap", "frozen")
        k(s, "delete", "validatingadmissionpolicy", "scale-cap", "frozen")
