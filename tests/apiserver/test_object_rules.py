"""Object rules users meet often, through real kubectl: a workload template's
restartPolicy, port numbers, a pod's activeDeadlineSeconds (added or lowered only), a
Job's template, completions, completionMode and podFailurePolicy, the StatefulSet
fields that may change, and a PersistentVolumeClaim's spec. Each refusal is checked for its code (kubectl's
`Error from server (Invalid)` is a 422 Invalid Status), the field named, and that the
stored object is as it was."""

from __future__ import annotations

import json
from typing import Any

from gpuyard.apiserver.testing import ServerProcess

from .test_kubectl import k, kj


def refused(s: ServerProcess, *args: str, input: str | None = None) -> str:
    r = k(s, *args, input=input, check=False)
    assert r.returncode != 0, r.stdout
    assert "Error from server (Invalid)" in r.stderr or "is invalid" in r.stderr, r.stderr
    return r.stderr


JOB = """
apiVersion: batch/v1
kind: Job
metadata: {{name: {name}}}
spec:
  template:
    spec:
      containers: [{{name: c, image: "busybox:1"}}]
      {restart}
"""


def test_job_rules(apiserver: ServerProcess) -> None:
    s = apiserver
    # No restartPolicy: the PodSpec default (Always) is one a Job may not use.
    err = refused(s, "apply", "-f", "-", input=JOB.format(name="j0", restart=""))
    assert 'spec.template.spec.restartPolicy: Unsupported value: "Always"' in err, err
    assert '"OnFailure", "Never"' in err
    k(s, "apply", "-f", "-", input=JOB.format(name="j", restart="restartPolicy: Never"))
    job = kj(s, "job", "j")
    uid = job["metadata"]["uid"]
    assert job["spec"]["selector"] == {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert labels["batch.kubernetes.io/job-name"] == "j" and labels["controller-uid"] == uid
    for patch, field in (
        (
            {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "b:2"}]}}}},
            "spec.template",
        ),
        ({"spec": {"completions": 3}}, "spec.completions"),
        ({"spec": {"completionMode": "Indexed"}}, "spec.completionMode"),
    ):
        err = refused(s, "patch", "job", "j", "--type", "merge", "-p", json.dumps(patch))
        assert f"{field}: Invalid value" in err and "field is immutable" in err, err
    assert kj(s, "job", "j")["spec"] == job["spec"]
    # What may change does.
    k(s, "patch", "job", "j", "--type", "merge", "-p", '{"spec":{"parallelism":2}}')
    assert kj(s, "job", "j")["spec"]["parallelism"] == 2


def _policy_job(name: str, restart: str, rules: list[Any], **spec: Any) -> str:
    return json.dumps(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name},
            "spec": {
                **spec,
                "podFailurePolicy": {"rules": rules},
                "template": {
                    "spec": {
                        "restartPolicy": restart,
                        "containers": [{"name": "c", "image": "busybox:1"}],
                    }
                },
            },
        }
    )


def test_pod_failure_policy_and_per_index_rules(apiserver: ServerProcess) -> None:
    s = apiserver
    ok = [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]
    err = refused(s, "create", "-f", "-", input=_policy_job("a", "OnFailure", ok))
    assert (
        'spec.template.spec.restartPolicy: Invalid value: "OnFailure": only "Never" is '
        "supported when podFailurePolicy is specified"
    ) in err
    bad = [
        {"action": "Retry", "onExitCodes": {"operator": "In", "values": [1]}},
        {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [0, 3, 2]}},
        {"action": "Count"},
        {
            "action": "FailIndex",
            "onExitCodes": {"operator": "NotIn", "values": [1]},
            "onPodConditions": [{"type": "DisruptionTarget"}],
        },
    ]
    err = refused(s, "create", "-f", "-", input=_policy_job("b", "Never", bad))
    for want in (
        'spec.podFailurePolicy.rules[0].action: Unsupported value: "Retry": supported values: '
        '"Count", "FailIndex", "FailJob", "Ignore"',
        "spec.podFailurePolicy.rules[1].onExitCodes.values[0]: Invalid value: 0: must not be 0 "
        "for the In operator",
        "spec.podFailurePolicy.rules[1].onExitCodes.values[2]: Invalid value: 2: must be ordered",
        "spec.podFailurePolicy.rules[2]: Invalid value: specifying one of OnExitCodes and "
        "OnPodConditions is required",
        'spec.podFailurePolicy.rules[3].action: Invalid value: "FailIndex": requires the '
        "backoffLimitPerIndex to be set",
        "spec.podFailurePolicy.rules[3]: Invalid value: specifying both OnExitCodes and "
        "OnPodConditions is not supported",
    ):
        assert want in err, (want, err)
    err = refused(
        s,
        "create",
        "-f",
        "-",
        input=_policy_job("c", "Never", ok, backoffLimitPerIndex=1, maxFailedIndexes=1),
    )
    assert "spec.backoffLimitPerIndex: Forbidden: requires indexed completion mode" in err
    assert kj(s, "jobs")["items"] == []
    k(s, "create", "-f", "-", input=_policy_job("d", "Never", ok))
    assert kj(s, "job", "d")["spec"]["podReplacementPolicy"] == "Failed"


POD = """
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  {extra}
  containers:
  - name: c
    image: "busybox:1"
    ports: [{{containerPort: {port}}}]
"""


def test_pod_ports_and_active_deadline(apiserver: ServerProcess) -> None:
    s = apiserver
    err = refused(s, "apply", "-f", "-", input=POD.format(name="p0", extra="", port=70000))
    assert (
        "spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 "
        "and 65535, inclusive"
    ) in err, err
    err = refused(
        s,
        "apply",
        "-f",
        "-",
        input=POD.format(name="p0", extra="activeDeadlineSeconds: 0", port=80),
    )
    assert "spec.activeDeadlineSeconds: Invalid value: 0: must be between 1" in err, err
    k(s, "apply", "-f", "-", input=POD.format(name="p", extra="", port=80))

    def deadline(v: Any) -> list[str]:
        return [
            "patch",
            "pod",
            "p",
            "--type",
            "merge",
            "-p",
            json.dumps({"spec": {"activeDeadlineSeconds": v}}),
        ]

    k(s, *deadline(600))  # added
    k(s, *deadline(300))  # lowered
    err = refused(s, *deadline(900))
    assert (
        "spec.activeDeadlineSeconds: Invalid value: 900: must be less than or equal to "
        "previous value"
    ) in err, err
    err = refused(s, *deadline(None))
    assert "spec.activeDeadlineSeconds" in err and "to nil value" in err, err
    assert kj(s, "pod", "p")["spec"]["activeDeadlineSeconds"] == 300


DEPLOYMENT = """
apiVersion: apps/v1
kind: {kind}
metadata: {{name: w}}
spec:
  {extra}
  selector: {{matchLabels: {{app: w}}}}
  template:
    metadata: {{labels: {{app: w}}}}
    spec:
      restartPolicy: {restart}
      containers: [{{name: c, image: "busybox:1"}}]
"""


def test_workload_templates_and_statefulset_fields(apiserver: ServerProcess) -> None:
    s = apiserver
    for kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"):
        err = refused(
            s, "apply", "-f", "-", input=DEPLOYMENT.format(kind=kind, extra="", restart="Never")
        )
        assert (
            'spec.template.spec.restartPolicy: Unsupported value: "Never": supported values: '
            '"Always"'
        ) in err, (kind, err)
    k(
        s,
        "apply",
        "-f",
        "-",
        input=DEPLOYMENT.format(kind="StatefulSet", extra="serviceName: w", restart="Always"),
    )
    before = kj(s, "statefulset", "w")["spec"]
    err = refused(
        s, "patch", "statefulset", "w", "--type", "merge", "-p", '{"spec":{"serviceName":"x"}}'
    )
    assert "spec: Forbidden: updates to statefulset spec for fields other than" in err, err
    assert kj(s, "statefulset", "w")["spec"] == before
    k(s, "scale", "statefulset", "w", "--replicas=3")
    k(s, "patch", "statefulset", "w", "--type", "merge", "-p", '{"spec":{"minReadySeconds":5}}')
    after = kj(s, "statefulset", "w")["spec"]
    assert after["replicas"] == 3 and after["minReadySeconds"] == 5


PVC = """
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 10Gi}}
"""


def test_pvc_spec_immutable_but_a_bound_claim_may_grow(apiserver: ServerProcess) -> None:
    s = apiserver
    k(s, "apply", "-f", "-", input=PVC)
    pvc = kj(s, "pvc", "data")
    assert pvc["spec"]["volumeMode"] == "Filesystem" and pvc["status"]["phase"] == "Pending"

    def storage(v: str) -> list[str]:
        body = {"spec": {"resources": {"requests": {"storage": v}}}}
        return ["patch", "pvc", "data", "--type", "merge", "-p", json.dumps(body)]

    # Unbound: even the request may not change.
    err = refused(s, *storage("20Gi"))
    assert "spec: Forbidden: spec is immutable after creation except resources.requests" in err
    err = refused(
        s,
        "patch",
        "pvc",
        "data",
        "--type",
        "merge",
        "-p",
        '{"spec":{"accessModes":["ReadWriteMany"]}}',
    )
    assert "spec: Forbidden" in err, err
    # Bound (status written as the binder writes it): it may grow, not shrink below
    # its capacity; other spec fields stay fixed.
    status = {"status": {"phase": "Bound", "capacity": {"storage": "10Gi"}}}
    k(
        s,
        "patch",
        "pvc",
        "data",
        "--subresource=status",
        "--type",
        "merge",
        "-p",
        json.dumps(status),
    )
    k(s, *storage("20Gi"))
    assert kj(s, "pvc", "data")["spec"]["resources"]["requests"]["storage"] == "20Gi"
    err = refused(s, *storage("5Gi"))
    assert (
        "spec.resources.requests.storage: Forbidden: field can not be less than status.capacity"
        in err
    ), err
    err = refused(
        s, "patch", "pvc", "data", "--type", "merge", "-p", '{"spec":{"storageClassName":"fast"}}'
    )
    assert "spec: Forbidden" in err, err
    assert kj(s, "pvc", "data")["spec"]["resources"]["requests"]["storage"] == "20Gi"


SERVICE = """
apiVersion: v1
kind: Service
metadata: {{name: s}}
spec:
  selector: {{app: s}}
  ports: {ports}
"""


def test_service_ports(apiserver: ServerProcess) -> None:
    s = apiserver
    for ports, field, why in (
        ("[{port: 70000}]", "spec.ports[0].port", "must be between 1 and 65535, inclusive"),
        ("[{port: 80, targetPort: 70000}]", "spec.ports[0].targetPort", "must be between 1 and"),
        ("[{port: 80}, {port: 81}]", "spec.ports[0].name", "Required value"),
        (
            "[{name: a, port: 80}, {name: b, port: 80}]",
            "spec.ports[1]",
            "Duplicate value",
        ),
        ("[{name: a, port: 80}, {name: a, port: 81}]", "spec.ports[1].name", "Duplicate value"),
    ):
        err = refused(s, "apply", "-f", "-", input=SERVICE.format(ports=ports))
        assert f"{field}: " in err and why in err, (ports, err)
    assert "service/s" not in k(s, "get", "services", "-o", "name").stdout
    k(
        s,
        "apply",
        "-f",
        "-",
        input=SERVICE.format(ports="[{name: a, port: 80}, {name: b, port: 80, protocol: UDP}]"),
    )


GANG_POD = """
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {labels}
spec:
  {group}
  containers: [{{name: c, image: "busybox:1"}}]
"""


def test_pod_names_its_group_one_way(apiserver: ServerProcess) -> None:
    s = apiserver
    both = GANG_POD.format(
        name="both",
        labels='{"scheduling.x-k8s.io/pod-group": "pg-a"}',
        group="schedulingGroup: {podGroupName: pg-b}",
    )
    err = refused(s, "apply", "-f", "-", input=both)
    assert "spec.schedulingGroup: Forbidden" in err, err
    assert "scheduling.x-k8s.io/pod-group" in err and '"pg-a"' in err and '"pg-b"' in err, err
    assert k(s, "get", "pod", "both", check=False).returncode != 0
    # Either way alone is accepted.
    k(
        s,
        "apply",
        "-f",
        "-",
        input=GANG_POD.format(
            name="label", labels='{"scheduling.x-k8s.io/pod-group": "pg-a"}', group=""
        ),
    )
    k(
        s,
        "apply",
        "-f",
        "-",
        input=GANG_POD.format(
            name="upstream", labels="{}", group="schedulingGroup: {podGroupName: pg-b}"
        ),
    )
    assert kj(s, "pod", "upstream")["spec"]["schedulingGroup"] == {"podGroupName": "pg-b"}
    # Adding the label to a pod that names its group in its spec is refused too.
    err = refused(s, "label", "pod", "upstream", "scheduling.x-k8s.io/pod-group=pg-a")
    assert "spec.schedulingGroup: Forbidden" in err, err
    assert "scheduling.x-k8s.io/pod-group" not in kj(s, "pod", "upstream")["metadata"]["labels"]
