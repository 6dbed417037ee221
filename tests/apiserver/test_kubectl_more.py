"""More real-kubectl workflows against the embedded API server: a cluster-scoped custom
resource through client- and server-side apply, explain (OpenAPI v3), diff, namespaces,
imperative commands (run, set image, create configmap) and custom columns."""

from __future__ import annotations

import json

from gpuyard.apiserver.testing import ServerProcess

from .test_kubectl import k, kj

RACK_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: racks.example.com}
spec:
  group: example.com
  scope: Cluster
  names: {plural: racks, singular: rack, kind: Rack, shortNames: [rk]}
  versions:
  - name: v1
    served: true
    storage: true
    additionalPrinterColumns:
    - {name: Slots, type: integer, jsonPath: .spec.slots}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              slots: {type: integer, minimum: 1}
              tags: {type: array, items: {type: string}}
"""

RACK = "apiVersion: example.com/v1\nkind: Rack\nmetadata: {{name: r1}}\nspec: {spec}\n"


def test_cluster_scoped_custom_resource_apply(apiserver: ServerProcess) -> None:
    s = apiserver
    k(s, "apply", "-f", "-", input=RACK_CRD)
    k(s, "wait", "--for=condition=Established", "crd/racks.example.com", "--timeout=10s")
    assert "racks" in k(s, "api-resources", "--api-group=example.com").stdout
    k(s, "apply", "-f", "-", input=RACK.format(spec="{slots: 4, tags: [a, b]}"))
    rows = k(s, "get", "rk").stdout.splitlines()
    assert rows[0].split() == ["NAME", "SLOTS", "AGE"] and rows[1].split()[:2] == ["r1", "4"]
    # client-side apply drops a field the last applied configuration had
    k(s, "apply", "-f", "-", input=RACK.format(spec="{slots: 5}"))
    assert kj(s, "rack", "r1")["spec"] == {"slots": 5}
    # server-side apply by another manager, then a schema violation changes nothing
    k(
        s,
        "apply",
        "--server-side",
        "--field-manager=ops",
        "--force-conflicts",
        "-f",
        "-",
        input=RACK.format(spec="{slots: 6}"),
    )
    shown = json.loads(k(s, "get", "rack", "r1", "-o", "json", "--show-managed-fields").stdout)
    assert shown["spec"]["slots"] == 6
    assert "ops" in [m["manager"] for m in shown["metadata"]["managedFields"]]
    bad = k(s, "apply", "-f", "-", input=RACK.format(spec="{slots: 0}"), check=False)
    assert bad.returncode != 0 and "slots" in bad.stderr
    assert kj(s, "rack", "r1")["spec"]["slots"] == 6
    explained = k(s, "explain", "racks.spec").stdout
    assert "slots" in explained and "<integer>" in explained
    k(s, "delete", "-f", "-", input=RACK_CRD)
    gone = k(s, "get", "racks", check=False)
    assert gone.returncode != 0


def test_explain_diff_and_namespaces(apiserver: ServerProcess) -> None:
    s = apiserver
    assert "containers" in k(s, "explain", "pods.spec").stdout
    k(s, "create", "namespace", "team-a")
    k(s, "create", "configmap", "c1", "-n", "team-a", "--from-literal=a=b")
    assert k(s, "get", "cm", "-n", "team-a").stdout.splitlines()[1].split()[:2] == ["c1", "1"]
    cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c1, namespace: team-a}\ndata: {a: c}\n"
    diff = k(s, "diff", "-f", "-", input=cm, check=False)
    assert diff.returncode == 1, diff.stderr  # 1: there are differences
    assert "-  a: b" in diff.stdout and "+  a: c" in diff.stdout
    assert kj(s, "cm", "c1", "-n", "team-a")["data"] == {"a": "b"}, "diff is a dry run"
    assert k(s, "describe", "ns", "team-a").stdout.startswith("Name:")
    k(s, "delete", "ns", "team-a", "--timeout=20s")
    assert "team-a" not in k(s, "get", "ns", "-o", "name").stdout
    assert k(s, "get", "cm", "-A", "-o", "name").stdout.count("configmap/c1") == 0


def test_imperative_pod_commands(apiserver: ServerProcess) -> None:
    s = apiserver
    k(s, "run", "x", "--image=busybox", "--labels=app=x")
    k(s, "set", "image", "pod/x", "x=busybox:2")
    out = k(
        s,
        "get",
        "pod",
        "x",
        "-o",
        "custom-columns=NAME:.metadata.name,IMG:.spec.containers[0].image",
    ).stdout.split()
    assert out == ["NAME", "IMG", "x", "busybox:2"]
    assert (
        k(s, "get", "pods", "-l", "app=x", "-o", "jsonpath={.items[0].metadata.name}").stdout == "x"
    )
    assert k(s, "get", "--raw", "/healthz").stdout.strip() == "ok"


def test_create_deployment_imperatively(apiserver: ServerProcess) -> None:
    s = apiserver
    k(s, "create", "deployment", "d", "--image=nginx", "--replicas=2")
    k(s, "scale", "deployment", "d", "--replicas=3")
    assert kj(s, "deploy", "d")["spec"]["replicas"] == 3
