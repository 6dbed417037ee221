"""Built-in defaults as kube-apiserver sets them, seen by real kubectl and raw HTTP: a
pod's, a Service's (cluster IPs and node ports allocated without duplicates), a
Deployment's and a DaemonSet's (pod template included), a Namespace's; the kinds not
served yet (StatefulSet, ReplicaSet, Job, CronJob, PVC) through the defaulter itself."""

from __future__ import annotations

import ipaddress
import json
import subprocess
from typing import Any

import pytest

from gpuyard.apiserver import defaults
from gpuyard.apiserver.resources import Resource
from gpuyard.apiserver.testing import ServerProcess

from .test_kubectl import KUBECTL, k, kj

POD = """
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  containers:
  - name: latest
    image: nginx
    ports: [{containerPort: 80}]
    resources: {limits: {cpu: "1", memory: 1Gi}}
    readinessProbe: {httpGet: {port: 80}}
  - {name: tagged, image: "registry.local:5000/team/app:1.2"}
  - {name: untagged-port, image: "registry.local:5000/team/app"}
  - {name: digest, image: "app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}
  volumes:
  - {name: scratch}
  - {name: conf, configMap: {name: c}}
"""


def test_pod_gets_kube_apiserver_defaults_and_kubectl_debug_does_not_crash(
    apiserver: ServerProcess,
) -> None:
    s = apiserver
    k(s, "apply", "-f", "-", input=POD)
    pod = kj(s, "pod", "p")
    spec = pod["spec"]
    for key, want in {
        "restartPolicy": "Always",
        "dnsPolicy": "ClusterFirst",
        "schedulerName": "default-scheduler",
        "securityContext": {},
        "terminationGracePeriodSeconds": 30,
        "enableServiceLinks": True,
        "priority": 0,
        "preemptionPolicy": "PreemptLowerPriority",
    }.items():
        assert spec[key] == want, (key, spec)
    c = {x["name"]: x for x in spec["containers"]}
    assert {n: x["imagePullPolicy"] for n, x in c.items()} == {
        "latest": "Always",
        "tagged": "IfNotPresent",
        "untagged-port": "Always",
        "digest": "IfNotPresent",
    }
    for x in c.values():
        assert x["terminationMessagePath"] == "/dev/termination-log"
        assert x["terminationMessagePolicy"] == "File"
    main = c["latest"]
    assert main["resources"]["requests"] == {"cpu": "1", "memory": "1Gi"}
    assert main["ports"][0]["protocol"] == "TCP"
    assert main["readinessProbe"] == {
        "httpGet": {"port": 80, "path": "/", "scheme": "HTTP"},
        "timeoutSeconds": 1,
        "periodSeconds": 10,
        "successThreshold": 1,
        "failureThreshold": 3,
    }
    vols = {v["name"]: v for v in spec["volumes"]}
    assert vols["scratch"]["emptyDir"] == {}
    assert vols["conf"]["configMap"]["defaultMode"] == 0o644
    tolerations = {t["key"]: t for t in spec["tolerations"]}
    for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
        assert tolerations[key] == {
            "key": key,
            "operator": "Exists",
            "effect": "NoExecute",
            "tolerationSeconds": 300,
        }
    assert pod["status"] == {"phase": "Pending", "qosClass": "Burstable"}
    # A pod that already tolerates everything gets no extra tolerations.
    k(
        s,
        "run",
        "q",
        "--image=busybox:1",
        "--overrides",
        json.dumps({"spec": {"tolerations": [{"operator": "Exists"}]}}),
    )
    assert kj(s, "pod", "q")["spec"]["tolerations"] == [{"operator": "Exists"}]

    # kubectl debug reads spec.securityContext: it crashed on a pod without one. A copy
    # of the pod with a debug container is made; an ephemeral container (a subresource
    # not served here) is refused in words, not with a crash.
    def debug(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [KUBECTL, "--kubeconfig", s.kubeconfig, "debug", "p", "--image=busybox", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )

    r = debug("--copy-to=p2", "--", "true")
    assert r.returncode == 0 and "panic" not in r.stderr, r.stderr
    copy = kj(s, "pod", "p2")
    assert len(copy["spec"]["containers"]) == 5 and copy["spec"]["securityContext"] == {}
    r = debug("-c", "dbg", "--", "true")
    assert "panic" not in r.stderr and "nil pointer" not in r.stderr, r.stderr
    # pods/ephemeralcontainers is served (test_ephemeral_containers.py has its rules)
    assert r.returncode == 0, r.stderr
    assert [c["name"] for c in kj(s, "pod", "p")["spec"]["ephemeralContainers"]] == ["dbg"]


def test_update_defaults_again_and_admission_defaults_stay(apiserver: ServerProcess) -> None:
    s = apiserver
    k(s, "apply", "-f", "-", input=POD)
    pod = kj(s, "pod", "p")
    # A replace of the stored object with an image changed and a defaulted field left
    # out keeps the default (the decoder sets it again), so the pod update is allowed.
    del pod["spec"]["containers"][1]["terminationMessagePath"]
    del pod["spec"]["securityContext"]
    pod["spec"]["containers"][1]["image"] = "registry.local:5000/team/app:1.3"
    k(s, "replace", "-f", "-", input=json.dumps(pod))
    again = kj(s, "pod", "p")
    assert again["spec"]["containers"][1]["terminationMessagePath"] == "/dev/termination-log"
    assert again["spec"]["securityContext"] == {}


SERVICE = """
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  selector: {{app: web}}
  ports: [{{port: 80}}]
  {extra}
"""


def _svc(s: ServerProcess, name: str, extra: str = "", check: bool = True) -> Any:
    r = k(s, "apply", "-f", "-", input=SERVICE.format(name=name, extra=extra), check=check)
    return r if not check else kj(s, "service", name)


def test_service_defaults_and_cluster_ips_without_duplicates(apiserver: ServerProcess) -> None:
    s = apiserver
    seen = set()
    cidr = ipaddress.ip_network("10.96.0.0/12")
    for i in range(5):
        svc = _svc(s, f"s{i}")
        spec = svc["spec"]
        assert ipaddress.ip_address(spec["clusterIP"]) in cidr, spec
        assert spec["clusterIPs"] == [spec["clusterIP"]]
        seen.add(spec["clusterIP"])
        assert spec["type"] == "ClusterIP"
        assert spec["sessionAffinity"] == "None"
        assert spec["internalTrafficPolicy"] == "Cluster"
        assert spec["ipFamilies"] == ["IPv4"] and spec["ipFamilyPolicy"] == "SingleStack"
        assert spec["ports"] == [{"port": 80, "protocol": "TCP", "targetPort": 80}]
        assert "nodePort" not in spec["ports"][0]
    assert len(seen) == 5
    taken = sorted(seen)[0]
    # Asking for a taken address, or one outside the range: 422 naming spec.clusterIPs.
    for ip, why in ((taken, "provided IP is already allocated"), ("10.0.0.7", "valid range")):
        r = _svc(s, "clash", f"clusterIP: {ip}", check=False)
        assert r.returncode != 0 and "spec.clusterIPs" in r.stderr and why in r.stderr, r.stderr
    assert "clash" not in k(s, "get", "services", "-o", "name").stdout
    # A free address asked for is granted; a headless Service gets none.
    free = str(ipaddress.ip_address(taken) + 1)
    if free in seen:
        free = str(ipaddress.ip_address(taken) + 7)
    assert _svc(s, "mine", f"clusterIP: {free}")["spec"]["clusterIPs"] == [free]
    headless = _svc(s, "headless", "clusterIP: None")["spec"]
    assert headless["clusterIPs"] == ["None"] and headless["ipFamilyPolicy"] == "SingleStack"
    # Deleting a Service frees its address for the next one that asks for it.
    k(s, "delete", "service", "mine")
    assert _svc(s, "again", f"clusterIP: {free}")["spec"]["clusterIP"] == free


NODE_PORT = """
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  type: NodePort
  selector: {{app: web}}
  ports: [{{port: 80, nodePort: {port}}}]
"""


def test_node_ports_allocated_in_range_without_duplicates(apiserver: ServerProcess) -> None:
    s = apiserver
    a = _svc(s, "np-a", "type: NodePort")["spec"]
    port = a["ports"][0]["nodePort"]
    assert 30000 <= port <= 32767 and a["externalTrafficPolicy"] == "Cluster"
    b = _svc(s, "np-b", "type: NodePort")["spec"]["ports"][0]["nodePort"]
    assert b != port and 30000 <= b <= 32767
    r = k(s, "apply", "-f", "-", input=NODE_PORT.format(name="np-c", port=port), check=False)
    assert r.returncode != 0, r.stdout
    assert "spec.ports[0].nodePort" in r.stderr and "already allocated" in r.stderr, r.stderr
    lb = _svc(s, "lb", "type: LoadBalancer")["spec"]
    assert lb["allocateLoadBalancerNodePorts"] is True and lb["ports"][0]["nodePort"]
    # Back to ClusterIP: the node port the update left as it was goes.
    back = kj(s, "service", "np-a")
    back["spec"]["type"] = "ClusterIP"
    back["spec"].pop("externalTrafficPolicy")
    k(s, "replace", "-f", "-", input=json.dumps(back))
    assert "nodePort" not in kj(s, "service", "np-a")["spec"]["ports"][0]


DEPLOYMENT = """
apiVersion: apps/v1
kind: {kind}
metadata: {{name: d}}
spec:
  selector: {{matchLabels: {{app: d}}}}
  template:
    metadata: {{labels: {{app: d}}}}
    spec:
      containers: [{{name: c, image: "nginx:1", resources: {{limits: {{cpu: "1"}}}}}}]
"""


def test_deployment_and_daemonset_defaults_with_their_pod_template(
    apiserver: ServerProcess,
) -> None:
    s = apiserver
    k(s, "apply", "-f", "-", input=DEPLOYMENT.format(kind="Deployment"))
    d = kj(s, "deployment", "d")["spec"]
    assert d["replicas"] == 1
    assert d["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
    }
    assert d["revisionHistoryLimit"] == 10 and d["progressDeadlineSeconds"] == 600
    tpl = d["template"]["spec"]
    assert tpl["restartPolicy"] == "Always" and tpl["securityContext"] == {}
    assert tpl["containers"][0]["imagePullPolicy"] == "IfNotPresent"
    assert tpl["containers"][0]["terminationMessagePath"] == "/dev/termination-log"
    # Pod-only defaults stay off templates, as kube-apiserver keeps them.
    assert "enableServiceLinks" not in tpl and "tolerations" not in tpl
    assert "requests" not in tpl["containers"][0]["resources"]
    k(s, "apply", "-f", "-", input=DEPLOYMENT.format(kind="DaemonSet"))
    ds = kj(s, "daemonset", "d")["spec"]
    assert ds["updateStrategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0},
    }
    assert ds["revisionHistoryLimit"] == 10
    assert ds["template"]["spec"]["dnsPolicy"] == "ClusterFirst"


def test_namespace_finalizer_and_name_label(apiserver: ServerProcess) -> None:
    s = apiserver
    k(s, "create", "namespace", "team-a")
    ns = kj(s, "namespace", "team-a")
    assert ns["spec"] == {"finalizers": ["kubernetes"]}
    assert ns["status"] == {"phase": "Active"}
    assert ns["metadata"]["labels"]["kubernetes.io/metadata.name"] == "team-a"
    # The name label is set again on every write.
    k(s, "label", "namespace", "team-a", "kubernetes.io/metadata.name-")
    assert kj(s, "namespace", "team-a")["metadata"]["labels"]["kubernetes.io/metadata.name"] == (
        "team-a"
    )


def _res(group: str, kind: str, plural: str) -> Resource:
    return Resource(group, "v1", kind, plural, kind.lower(), True)


TEMPLATE = {"spec": {"containers": [{"name": "c", "image": "x:1"}], "restartPolicy": "Never"}}


@pytest.mark.parametrize(
    ("group", "kind", "plural", "spec", "want"),
    [
        (
            "apps",
            "StatefulSet",
            "statefulsets",
            {"template": TEMPLATE},
            {
                "replicas": 1,
                "podManagementPolicy": "OrderedReady",
                "revisionHistoryLimit": 10,
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
                "persistentVolumeClaimRetentionPolicy": {
                    "whenDeleted": "Retain",
                    "whenScaled": "Retain",
                },
            },
        ),
        ("apps", "ReplicaSet", "replicasets", {"template": TEMPLATE}, {"replicas": 1}),
        (
            "batch",
            "Job",
            "jobs",
            {"template": TEMPLATE},
            {
                "completions": 1,
                "parallelism": 1,
                "backoffLimit": 6,
                "completionMode": "NonIndexed",
                "suspend": False,
                "podReplacementPolicy": "TerminatingOrFailed",
            },
        ),
        (
            "batch",
            "Job",
            "jobs",
            {"template": TEMPLATE, "parallelism": 4, "backoffLimitPerIndex": 1},
            {"parallelism": 4, "backoffLimit": 2**31 - 1},
        ),
        (
            "batch",
            "CronJob",
            "cronjobs",
            {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": TEMPLATE}}},
            {
                "concurrencyPolicy": "Allow",
                "suspend": False,
                "successfulJobsHistoryLimit": 3,
                "failedJobsHistoryLimit": 1,
            },
        ),
        (
            "",
            "PersistentVolumeClaim",
            "persistentvolumeclaims",
            {"accessModes": ["ReadWriteOnce"]},
            {"volumeMode": "Filesystem"},
        ),
    ],
)
def test_defaults_of_kinds_not_served_yet(
    group: str, kind: str, plural: str, spec: dict[str, Any], want: dict[str, Any]
) -> None:
    obj = {"apiVersion": f"{group}/v1" if group else "v1", "kind": kind, "metadata": {}}
    obj["spec"] = json.loads(json.dumps(spec))
    defaults.apply(_res(group, kind, plural), obj)
    for key, value in want.items():
        assert obj["spec"][key] == value, (key, obj["spec"])
    # Every pod template inside gets the PodSpec and Container defaults.
    tpl = obj["spec"].get("template") or obj["spec"].get("jobTemplate", {}).get("spec", {}).get(
        "template"
    )
    if tpl:
        assert tpl["spec"]["restartPolicy"] == "Never"
        assert tpl["spec"]["terminationGracePeriodSeconds"] == 30
        assert tpl["spec"]["containers"][0]["imagePullPolicy"] == "IfNotPresent"


def test_pods_get_the_global_default_priority_class_of_the_moment(
    apiserver: ServerProcess,
) -> None:
    """The Priority admission plugin's default follows the PriorityClasses as they are
    created and deleted (the server remembers the last default it found)."""

    def pod(name: str) -> dict[str, Any]:
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "x"}]},
        }
        out = k(apiserver, "create", "-f", "-", "-o", "json", input=json.dumps(body)).stdout
        return dict(json.loads(out)["spec"])

    def priority_class(name: str, value: int, **extra: Any) -> None:
        body = {
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass",
            "metadata": {"name": name},
            "value": value,
            **extra,
        }
        k(apiserver, "create", "-f", "-", input=json.dumps(body))

    defaults_now = [
        p["metadata"]["name"]
        for p in kj(apiserver, "priorityclasses")["items"]
        if p.get("globalDefault")
    ]
    for name in defaults_now:  # start from a cluster without a default
        k(apiserver, "delete", "priorityclass", name)
    p0 = pod("p0")
    assert p0["priority"] == 0 and "priorityClassName" not in p0
    assert p0["preemptionPolicy"] == "PreemptLowerPriority"
    priority_class("plain", 10)  # not a default: changes nothing
    p1 = pod("p1")
    assert p1["priority"] == 0 and "priorityClassName" not in p1
    priority_class("team-default", 1000, globalDefault=True, preemptionPolicy="Never")
    p2 = pod("p2")
    assert (p2["priorityClassName"], p2["priority"], p2["preemptionPolicy"]) == (
        "team-default",
        1000,
        "Never",
    )
    k(apiserver, "delete", "priorityclass", "team-default")
    p3 = pod("p3")
    assert p3["priority"] == 0 and "priorityClassName" not in p3
    priority_class("later-default", 7, globalDefault=True)
    p4 = pod("p4")
    assert (p4["priorityClassName"], p4["priority"], p4["preemptionPolicy"]) == (
        "later-default",
        7,
        "PreemptLowerPriority",
    )
