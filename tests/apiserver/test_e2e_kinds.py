# mypy: disable-error-code="union-attr,index,attr-defined,arg-type"
"""End to end over many built-in kinds with clients nobody here wrote: for each kind the
official Python client (its dynamic client, found through discovery) creates, gets,
lists by label, watches, merge-, strategic-merge- and JSON-patches, applies server-side
and deletes an object, and every answer must deserialize into the client's own typed
model (which refuses missing required fields); then kubectl applies the same manifests
with its default validation, lists each kind, patches with --type json and deletes."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from typing import Any

import pytest
import yaml
from kubernetes import client, dynamic, watch
from kubernetes.client.rest import ApiException

from gpuyard.apiserver.testing import ServerProcess

from .kubectl import kubectl as run_kubectl

NS = "default"
POD_SPEC = {"containers": [{"name": "c", "image": "busybox"}]}
TEMPLATE = {"metadata": {"labels": {"app": "e2e"}}, "spec": POD_SPEC}
SELECTOR = {"matchLabels": {"app": "e2e"}}
RULES = [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]


def _m(api_version: str, kind: str, name: str, **body: Any) -> dict[str, Any]:
    return {"apiVersion": api_version, "kind": kind, "metadata": {"name": name}, **body}


MANIFESTS: list[dict[str, Any]] = [
    _m("v1", "ConfigMap", "e2e-cm", data={"k": "v"}),
    _m("v1", "Secret", "e2e-secret", stringData={"k": "v"}),
    _m("v1", "ServiceAccount", "e2e-sa"),
    _m("v1", "Service", "e2e-svc", spec={"selector": {"app": "e2e"}, "ports": [{"port": 80}]}),
    _m("v1", "Pod", "e2e-pod", spec=POD_SPEC),
    _m("v1", "PodTemplate", "e2e-podtemplate", template=TEMPLATE),
    _m(
        "v1",
        "ReplicationController",
        "e2e-rc",
        spec={"replicas": 0, "selector": {"app": "e2e"}, "template": TEMPLATE},
    ),
    _m("v1", "LimitRange", "e2e-lr", spec={"limits": [{"type": "Container"}]}),
    _m("v1", "ResourceQuota", "e2e-quota", spec={"hard": {"pods": "10"}}),
    _m(
        "v1",
        "PersistentVolumeClaim",
        "e2e-pvc",
        spec={"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    ),
    _m(
        "v1",
        "PersistentVolume",
        "e2e-pv",
        spec={
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "hostPath": {"path": "/tmp/e2e"},
        },
    ),
    _m(
        "apps/v1",
        "Deployment",
        "e2e-deploy",
        spec={"replicas": 0, "selector": SELECTOR, "template": TEMPLATE},
    ),
    _m(
        "apps/v1",
        "ReplicaSet",
        "e2e-rs",
        spec={"replicas": 0, "selector": SELECTOR, "template": TEMPLATE},
    ),
    _m(
        "apps/v1",
        "StatefulSet",
        "e2e-sts",
        spec={"replicas": 0, "serviceName": "e2e", "selector": SELECTOR, "template": TEMPLATE},
    ),
    _m("apps/v1", "DaemonSet", "e2e-ds", spec={"selector": SELECTOR, "template": TEMPLATE}),
    _m(
        "batch/v1",
        "Job",
        "e2e-job",
        spec={"suspend": True, "template": {"spec": {**POD_SPEC, "restartPolicy": "Never"}}},
    ),
    _m(
        "batch/v1",
        "CronJob",
        "e2e-cron",
        spec={
            "schedule": "*/5 * * * *",
            "suspend": True,
            "jobTemplate": {"spec": {"template": {"spec": {**POD_SPEC, "restartPolicy": "Never"}}}},
        },
    ),
    _m(
        "autoscaling/v2",
        "HorizontalPodAutoscaler",
        "e2e-hpa",
        spec={
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "e2e-deploy"},
            "maxReplicas": 3,
        },
    ),
    _m(
        "policy/v1",
        "PodDisruptionBudget",
        "e2e-pdb",
        spec={"minAvailable": 1, "selector": SELECTOR},
    ),
    _m("rbac.authorization.k8s.io/v1", "Role", "e2e-role", rules=RULES),
    _m(
        "rbac.authorization.k8s.io/v1",
        "RoleBinding",
        "e2e-rb",
        roleRef={"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "e2e-role"},
        subjects=[{"kind": "ServiceAccount", "name": "e2e-sa", "namespace": NS}],
    ),
    _m("rbac.authorization.k8s.io/v1", "ClusterRole", "e2e-cr", rules=RULES),
    _m(
        "rbac.authorization.k8s.io/v1",
        "ClusterRoleBinding",
        "e2e-crb",
        roleRef={"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "e2e-cr"},
        subjects=[{"kind": "ServiceAccount", "name": "e2e-sa", "namespace": NS}],
    ),
    _m("networking.k8s.io/v1", "NetworkPolicy", "e2e-np", spec={"podSelector": {}}),
    _m(
        "networking.k8s.io/v1",
        "Ingress",
        "e2e-ing",
        spec={"defaultBackend": {"service": {"name": "e2e-svc", "port": {"number": 80}}}},
    ),
    _m("networking.k8s.io/v1", "IngressClass", "e2e-ic", spec={"controller": "example.com/ic"}),
    _m("scheduling.k8s.io/v1", "PriorityClass", "e2e-pc", value=1000),
    _m("storage.k8s.io/v1", "StorageClass", "e2e-sc", provisioner="example.com/sc"),
    _m("storage.k8s.io/v1", "CSIDriver", "e2e.example.com", spec={}),
    _m("node.k8s.io/v1", "RuntimeClass", "e2e-rtc", handler="runc"),
    _m(
        "coordination.k8s.io/v1",
        "Lease",
        "e2e-lease",
        spec={"holderIdentity": "me", "leaseDurationSeconds": 15},
    ),
    _m(
        "discovery.k8s.io/v1",
        "EndpointSlice",
        "e2e-eps",
        addressType="IPv4",
        endpoints=[{"addresses": ["10.0.0.1"]}],
    ),
    _m(
        "events.k8s.io/v1",
        "Event",
        "e2e-event",
        eventTime="2026-01-01T00:00:00.000000Z",
        reportingController="example.com/e2e",
        reportingInstance="e2e",
        action="Testing",
        reason="Testing",
        type="Normal",
        regarding={"kind": "ConfigMap", "name": "e2e-cm", "namespace": NS},
    ),
    _m(
        "admissionregistration.k8s.io/v1",
        "ValidatingAdmissionPolicy",
        "e2e-vap",
        spec={
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": ["example.com"],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE"],
                        "resources": ["nothings"],
                    }
                ]
            },
            "validations": [{"expression": "true"}],
        },
    ),
    _m("resource.k8s.io/v1", "DeviceClass", "e2e-dc", spec={}),
    _m(
        "resource.k8s.io/v1",
        "ResourceClaim",
        "e2e-claim",
        spec={"devices": {"requests": [{"name": "gpu", "exactly": {"deviceClassName": "e2e-dc"}}]}},
    ),
    _m(
        "flowcontrol.apiserver.k8s.io/v1",
        "PriorityLevelConfiguration",
        "e2e-plc",
        spec={
            "type": "Limited",
            "limited": {"nominalConcurrencyShares": 5, "limitResponse": {"type": "Reject"}},
        },
    ),
]


def _model_names(api_version: str, kind: str) -> list[str]:
    group, _, version = api_version.rpartition("/")
    v = version[0].upper() + version[1:]
    names = [f"{v}{kind}"]
    if group:
        prefix = group.split(".")[0]
        names.insert(0, f"{prefix[0].upper()}{prefix[1:]}{v}{kind}")
    return names


def _typed(api: client.ApiClient, obj: Any) -> Any:
    """The answer as the client's typed model: raises for what the model refuses."""
    for name in _model_names(obj["apiVersion"], obj["kind"]):
        if hasattr(client, name):
            return api.deserialize(json.dumps(obj), name, "application/json")
    raise AssertionError(f"the client has no model for {obj['apiVersion']} {obj['kind']}")


def _ids(m: dict[str, Any]) -> str:
    return f"{m['apiVersion']}/{m['kind']}"


@pytest.mark.parametrize("manifest", MANIFESTS, ids=_ids)
def test_official_client_lifecycle_of_each_kind(
    official_client: client.ApiClient, manifest: dict[str, Any]
) -> None:
    api = official_client
    dyn = dynamic.DynamicClient(api)
    r = dyn.resources.get(api_version=manifest["apiVersion"], kind=manifest["kind"])
    ns = NS if r.namespaced else None
    name = manifest["metadata"]["name"]
    body = json.loads(json.dumps(manifest))
    body["metadata"]["labels"] = {"e2e": "yes"}

    created = r.create(body=body, namespace=ns).to_dict()
    _typed(api, created)
    got = r.get(name=name, namespace=ns).to_dict()
    assert got["metadata"]["uid"] == created["metadata"]["uid"]
    _typed(api, got)
    listed = r.get(namespace=ns, label_selector="e2e=yes").to_dict()
    assert [i["metadata"]["name"] for i in listed["items"]] == [name]
    for item in listed["items"]:
        _typed(api, {"apiVersion": manifest["apiVersion"], "kind": manifest["kind"], **item})
    assert r.get(namespace=ns, label_selector="e2e=no").to_dict()["items"] == []

    # A watch from the list's resourceVersion sees the patches below.
    events: list[dict[str, Any]] = []
    w = watch.Watch()

    def run() -> None:
        for ev in dyn.watch(
            r,
            namespace=ns,
            label_selector="e2e=yes",
            resource_version=listed["metadata"]["resourceVersion"],
            timeout=10,
            watcher=w,
        ):
            events.append(ev)
            if len(events) >= 3:
                w.stop()

    th = threading.Thread(target=run, daemon=True)
    th.start()

    out = r.patch(
        name=name,
        namespace=ns,
        body={"metadata": {"labels": {"merge": "1"}}},
        content_type="application/merge-patch+json",
    ).to_dict()
    assert out["metadata"]["labels"]["merge"] == "1"
    out = r.patch(
        name=name,
        namespace=ns,
        body={"metadata": {"annotations": {"smp": "1"}}},
        content_type="application/strategic-merge-patch+json",
    ).to_dict()
    assert out["metadata"]["annotations"]["smp"] == "1"
    out = r.patch(
        name=name,
        namespace=ns,
        body=[{"op": "add", "path": "/metadata/labels/json", "value": "1"}],
        content_type="application/json-patch+json",
    ).to_dict()
    assert out["metadata"]["labels"] == {"e2e": "yes", "merge": "1", "json": "1"}
    _typed(api, out)
    th.join(15)
    assert [e["type"] for e in events] == ["MODIFIED"] * 3, events
    assert events[-1]["raw_object"]["metadata"]["labels"]["json"] == "1"

    # Server-side apply by another manager adds its field; a conflicting one is a 409.
    applied = r.server_side_apply(
        body={
            "apiVersion": manifest["apiVersion"],
            "kind": manifest["kind"],
            "metadata": {"name": name, "labels": {"applied": "yes"}},
        },
        name=name,
        namespace=ns,
        field_manager="e2e-apply",
    ).to_dict()
    assert applied["metadata"]["labels"]["applied"] == "yes"
    assert "e2e-apply" in [m["manager"] for m in applied["metadata"]["managedFields"]]
    _typed(api, applied)
    with pytest.raises(ApiException) as exc:
        r.server_side_apply(
            body={
                "apiVersion": manifest["apiVersion"],
                "kind": manifest["kind"],
                "metadata": {"name": name, "labels": {"applied": "other"}},
            },
            name=name,
            namespace=ns,
            field_manager="e2e-rival",
        )
    assert exc.value.status == 409, exc.value.body

    r.delete(name=name, namespace=ns, body={"gracePeriodSeconds": 0})
    with pytest.raises(ApiException) as gone:
        for _ in range(50):
            r.get(name=name, namespace=ns)
            time.sleep(0.1)
    assert gone.value.status == 404, gone.value


def test_kubectl_over_the_same_kinds(apiserver: ServerProcess, tmp_path: Any) -> None:
    def kubectl(*args: str) -> subprocess.CompletedProcess[str]:
        return run_kubectl(apiserver, *args)

    path = tmp_path / "all.yaml"
    path.write_text(yaml.safe_dump_all(MANIFESTS))
    kubectl("apply", "-f", str(path))  # default validation: OpenAPI from the server
    kubectl("apply", "--server-side", "-f", str(path))
    for m in MANIFESTS:
        group = m["apiVersion"].rpartition("/")[0]
        kind = m["kind"].lower() + (f".{group}" if group else "")
        name = m["metadata"]["name"]
        assert kubectl("get", kind, name, "-o", "name").stdout.strip().endswith("/" + name)
        row = kubectl("get", kind, name, "--no-headers").stdout  # the kind's table
        want = "configmap/e2e-cm" if m["kind"] == "Event" else name
        assert want in row.split(), (kind, row)
        kubectl(
            "patch",
            kind,
            name,
            "--type",
            "json",
            "-p",
            json.dumps([{"op": "add", "path": "/metadata/labels", "value": {"patched": "yes"}}]),
        )
        got = json.loads(kubectl("get", kind, name, "-o", "json").stdout)
        assert got["metadata"]["labels"] == {"patched": "yes"}, (kind, got["metadata"])
    kubectl("delete", "-f", str(path), "--wait=false")
