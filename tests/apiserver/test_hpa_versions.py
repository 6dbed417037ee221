"""HorizontalPodAutoscaler in both served versions: stored as autoscaling/v2, readable,
writable and watchable as autoscaling/v1 with the fields mapped as kube maps them
(targetCPUUtilizationPercentage, the autoscaling.alpha.kubernetes.io annotations),
with each version's defaults (real kubectl, the official client, raw HTTP)."""

from __future__ import annotations

import json
from typing import Any

from kubernetes import client, config

from gpuyard.apiserver.testing import ServerProcess

from .api import Api
from .kubectl import kubectl

V1 = "/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers"
V2 = "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers"
TARGET = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}


def _kubectl(srv: ServerProcess, *args: str, stdin: str | None = None) -> str:
    return kubectl(srv, *args, stdin=stdin).stdout


def test_kubectl_autoscale_then_read_in_v1_and_v2(apiserver: ServerProcess) -> None:
    _kubectl(apiserver, "create", "deployment", "web", "--image=nginx")
    _kubectl(apiserver, "autoscale", "deployment", "web", "--max=5", "--cpu-percent=60")
    v2 = json.loads(
        _kubectl(apiserver, "get", "horizontalpodautoscalers.v2.autoscaling", "web", "-o", "json")
    )
    assert v2["apiVersion"] == "autoscaling/v2"
    assert v2["spec"]["metrics"] == [
        {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 60},
            },
        }
    ]
    v1 = json.loads(
        _kubectl(apiserver, "get", "horizontalpodautoscalers.v1.autoscaling", "web", "-o", "json")
    )
    assert v1["apiVersion"] == "autoscaling/v1"
    assert v1["spec"] == {
        "scaleTargetRef": TARGET,
        "minReplicas": 1,
        "maxReplicas": 5,
        "targetCPUUtilizationPercentage": 60,
    }
    assert v1["metadata"]["resourceVersion"] == v2["metadata"]["resourceVersion"]
    # kubectl apply of a v1 manifest changes the same object.
    manifest = {
        "apiVersion": "autoscaling/v1",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web"},
        "spec": {"scaleTargetRef": TARGET, "maxReplicas": 8, "targetCPUUtilizationPercentage": 70},
    }
    _kubectl(apiserver, "apply", "-f", "-", stdin=json.dumps(manifest))
    v2 = json.loads(
        _kubectl(apiserver, "get", "horizontalpodautoscalers.v2.autoscaling", "web", "-o", "json")
    )
    assert v2["spec"]["maxReplicas"] == 8
    assert v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 70


def test_official_client_v2_fields_survive_a_v1_round_trip(apiserver: ServerProcess) -> None:
    api = config.new_client_from_config(config_file=apiserver.kubeconfig)
    try:
        v2 = client.AutoscalingV2Api(api)
        v1 = client.AutoscalingV1Api(api)
        body = {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "mem"},
            "spec": {
                "scaleTargetRef": TARGET,
                "maxReplicas": 4,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {"type": "Utilization", "averageUtilization": 50},
                        },
                    },
                    {
                        "type": "Pods",
                        "pods": {
                            "metric": {"name": "queue_depth"},
                            "target": {"type": "AverageValue", "averageValue": "10"},
                        },
                    },
                ],
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}},
            },
        }
        v2.create_namespaced_horizontal_pod_autoscaler("default", body)
        old = v1.read_namespaced_horizontal_pod_autoscaler("mem", "default")
        assert old.spec.target_cpu_utilization_percentage == 50
        ann = old.metadata.annotations
        assert json.loads(ann["autoscaling.alpha.kubernetes.io/metrics"]) == [
            {"type": "Pods", "pods": {"metricName": "queue_depth", "targetAverageValue": "10"}}
        ]
        behavior = json.loads(ann["autoscaling.alpha.kubernetes.io/behavior"])
        assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 60
        assert behavior["scaleUp"]["selectPolicy"] == "Max"  # v2's defaults, as stored
        # A v1 client changes what it knows; what it does not know is kept.
        old.spec.max_replicas = 9
        v1.replace_namespaced_horizontal_pod_autoscaler("mem", "default", old)
        new = v2.read_namespaced_horizontal_pod_autoscaler("mem", "default")
        assert new.spec.max_replicas == 9
        assert [m.type for m in new.spec.metrics] == ["Resource", "Pods"]
        assert new.spec.metrics[1].pods.metric.name == "queue_depth"
        assert new.spec.behavior.scale_down.stabilization_window_seconds == 60
        assert not (new.metadata.annotations or {})  # the annotations are not stored
        # A v1 status write maps to v2's current metrics.
        v1.patch_namespaced_horizontal_pod_autoscaler_status(
            "mem",
            "default",
            {
                "status": {
                    "currentReplicas": 2,
                    "desiredReplicas": 3,
                    "currentCPUUtilizationPercentage": 41,
                }
            },
        )
        st = v2.read_namespaced_horizontal_pod_autoscaler("mem", "default").status
        assert st.current_replicas == 2 and st.desired_replicas == 3
        assert st.current_metrics[0].resource.name == "cpu"
        assert st.current_metrics[0].resource.current.average_utilization == 41
    finally:
        api.close()


async def test_lists_watches_patches_and_deletes_answer_in_the_asked_version(api: Api) -> None:
    body = {
        "apiVersion": "autoscaling/v1",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "h"},
        "spec": {"scaleTargetRef": TARGET, "maxReplicas": 3},
    }
    st, out = await api.post(V1, body)
    assert st == 201, out
    assert out["apiVersion"] == "autoscaling/v1" and "metrics" not in out["spec"]
    # v2's default (no metrics: CPU at 80%) shows in both versions.
    _, v2 = await api.get(f"{V2}/h")
    assert v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 80
    assert out["spec"]["targetCPUUtilizationPercentage"] == 80
    _, lst = await api.get(V1)
    assert lst["apiVersion"] == "autoscaling/v1"
    assert [i["apiVersion"] for i in lst["items"]] == ["autoscaling/v1"]
    assert lst["items"][0]["spec"]["targetCPUUtilizationPercentage"] == 80
    rv = lst["metadata"]["resourceVersion"]

    st, out = await api.patch(
        f"{V1}/h",
        [{"op": "replace", "path": "/spec/targetCPUUtilizationPercentage", "value": 55}],
        "application/json-patch+json",
    )
    assert st == 200 and out["spec"]["targetCPUUtilizationPercentage"] == 55, out
    st, out = await api.patch(f"{V1}/h", {"spec": {"maxReplicas": 6}}, fieldManager="t")
    assert st == 200 and out["spec"]["maxReplicas"] == 6, out
    events = await api.watch(V1, 2, timeout=3, resourceVersion=rv)
    assert [e["type"] for e in events] == ["MODIFIED", "MODIFIED"]
    assert all(e["object"]["apiVersion"] == "autoscaling/v1" for e in events)
    assert events[0]["object"]["spec"]["targetCPUUtilizationPercentage"] == 55
    initial = await api.watch(V1, 1, timeout=3)
    assert initial[0]["type"] == "ADDED"
    assert initial[0]["object"]["spec"]["targetCPUUtilizationPercentage"] == 55

    # A v1 field of the wrong type, and a bad conversion annotation, are refused.
    st, err = await api.patch(f"{V1}/h", {"spec": {"targetCPUUtilizationPercentage": "x"}})
    assert st == 422 and err["reason"] == "Invalid", err
    bad = {
        **body,
        "metadata": {
            "name": "bad",
            "annotations": {"autoscaling.alpha.kubernetes.io/metrics": "not json"},
        },
    }
    st, err = await api.post(V1, bad)
    assert st == 422 and "autoscaling.alpha.kubernetes.io/metrics" in err["message"], err
    assert (await api.get(f"{V2}/bad"))[0] == 404

    st, out = await api.delete(f"{V1}/h")
    assert st == 200, out
    if out["kind"] != "Status":
        assert out["apiVersion"] == "autoscaling/v1", out
    assert (await api.get(f"{V2}/h"))[0] == 404


async def test_managed_fields_record_the_version_the_client_wrote(api: Api) -> None:
    body = {
        "apiVersion": "autoscaling/v1",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "mf"},
        "spec": {"scaleTargetRef": TARGET, "maxReplicas": 3, "targetCPUUtilizationPercentage": 50},
    }
    st, out = await api.post(V1, body, fieldManager="one")
    assert st == 201, out
    (entry,) = out["metadata"]["managedFields"]
    assert (entry["manager"], entry["apiVersion"]) == ("one", "autoscaling/v1")
    # The fields are those of the version written: v1's, not the stored v2's metrics.
    assert "f:targetCPUUtilizationPercentage" in entry["fieldsV1"]["f:spec"], entry
    assert "f:metrics" not in entry["fieldsV1"]["f:spec"], entry
    # A v2 write records v2; a later v1 update keeps v1; v2 reads show the same entries.
    st, out = await api.patch(f"{V2}/mf", {"spec": {"minReplicas": 2}}, fieldManager="two")
    assert st == 200, out
    st, out = await api.put(
        f"{V1}/mf",
        {**body, "spec": {**body["spec"], "minReplicas": 2, "maxReplicas": 4}},
        fieldManager="three",
    )
    assert st == 200, out
    _, v2 = await api.get(f"{V2}/mf")
    versions = {e["manager"]: e["apiVersion"] for e in v2["metadata"]["managedFields"]}
    assert versions == {
        "one": "autoscaling/v1",
        "two": "autoscaling/v2",
        "three": "autoscaling/v1",
    }, v2["metadata"]["managedFields"]
    three = next(e for e in v2["metadata"]["managedFields"] if e["manager"] == "three")
    assert three["fieldsV1"] == {"f:spec": {"f:maxReplicas": {}}}, three
    # Server-side apply through v1 records v1 too.
    applied = {**body, "spec": {**body["spec"], "maxReplicas": 7}}
    st, out = await api.patch(
        f"{V1}/mf", applied, "application/apply-patch+yaml", fieldManager="four", force=True
    )
    assert st == 200, out
    four = next(e for e in out["metadata"]["managedFields"] if e["manager"] == "four")
    assert (four["operation"], four["apiVersion"]) == ("Apply", "autoscaling/v1"), four


async def test_managed_fields_stay_in_their_version_and_are_judged_in_it(api: Api) -> None:
    """As kube-apiserver's field manager does: entries are never rewritten into another
    version, but a write's changes are worked out for each entry in the entry's own
    version: a v2 apply that changes the CPU target conflicts with the v1 manager that
    owns targetCPUUtilizationPercentage, and a v2 update takes that field from it."""
    body = {
        "apiVersion": "autoscaling/v1",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "own"},
        "spec": {"scaleTargetRef": TARGET, "maxReplicas": 3, "targetCPUUtilizationPercentage": 50},
    }
    st, out = await api.post(V1, body, fieldManager="one")
    assert st == 201, out

    def cpu(percent: int) -> list[dict[str, Any]]:
        target = {"type": "Utilization", "averageUtilization": percent}
        return [{"type": "Resource", "resource": {"name": "cpu", "target": target}}]

    config = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "own"},
        "spec": {"scaleTargetRef": TARGET, "maxReplicas": 3, "metrics": cpu(70)},
    }
    apply = "application/apply-patch+yaml"
    st, err = await api.patch(f"{V2}/own", config, apply, fieldManager="two")
    assert st == 409, err
    assert err["message"] == (
        'Apply failed with 1 conflict: conflict with "one" using autoscaling/v1 at '
        f"{out['metadata']['managedFields'][0]['time']}: .spec.targetCPUUtilizationPercentage"
    ), err
    assert err["details"]["causes"] == [
        {
            "reason": "FieldManagerConflict",
            "message": f'conflict with "one" using autoscaling/v1 at '
            f"{out['metadata']['managedFields'][0]['time']}",
            "field": ".spec.targetCPUUtilizationPercentage",
        }
    ], err
    # An update through v2 by another manager takes the field from "one" (in v1 terms);
    # "one" keeps the rest, still recorded in v1.
    st, out = await api.patch(f"{V2}/own", {"spec": {"metrics": cpu(80)}}, fieldManager="three")
    assert st == 200, out
    _, v1 = await api.get(f"{V1}/own")
    entries = {(e["manager"], e["apiVersion"]): e for e in v1["metadata"]["managedFields"]}
    assert set(entries) == {("one", "autoscaling/v1"), ("three", "autoscaling/v2")}, entries
    one = entries[("one", "autoscaling/v1")]["fieldsV1"]["f:spec"]
    assert "f:targetCPUUtilizationPercentage" not in one and "f:maxReplicas" in one, one
    assert entries[("three", "autoscaling/v2")]["fieldsV1"] == {"f:spec": {"f:metrics": {}}}
    # Now the apply conflicts with "three" only, in v2; forced, it takes the field.
    st, out = await api.patch(f"{V2}/own", config, apply, fieldManager="two")
    assert st == 409, out
    assert [c["message"].split(" using ")[0] for c in out["details"]["causes"]] == [
        'conflict with "three"'
    ], out
    st, out = await api.patch(f"{V2}/own", config, apply, fieldManager="two", force=True)
    assert st == 200, out
    _, v1 = await api.get(f"{V1}/own")
    assert v1["spec"]["targetCPUUtilizationPercentage"] == 70
    # An updater writing through both versions has an entry per version, as in kube.
    st, out = await api.patch(f"{V1}/own", {"spec": {"minReplicas": 2}}, fieldManager="one")
    assert st == 200, out
    st, out = await api.patch(f"{V2}/own", {"spec": {"minReplicas": 3}}, fieldManager="one")
    assert st == 200, out
    ones = [e for e in out["metadata"]["managedFields"] if e["manager"] == "one"]
    assert [e["apiVersion"] for e in ones] == ["autoscaling/v1", "autoscaling/v2"], ones
    assert "f:minReplicas" not in ones[0]["fieldsV1"]["f:spec"], ones
    assert ones[1]["fieldsV1"] == {"f:spec": {"f:minReplicas": {}}}, ones


async def test_an_applier_changing_version_has_what_it_dropped_pruned(api: Api) -> None:
    """kube prunes an applier's fields of its last apply in that apply's version: applied
    through v1 with a CPU target, then through v2 without metrics, the target goes
    (and v2's default, 80% CPU, takes its place), unless another v1 manager holds it."""
    v1_config = {
        "apiVersion": "autoscaling/v1",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "prune"},
        "spec": {"scaleTargetRef": TARGET, "maxReplicas": 3, "targetCPUUtilizationPercentage": 50},
    }
    apply = "application/apply-patch+yaml"
    st, out = await api.patch(f"{V1}/prune", v1_config, apply, fieldManager="ops")
    assert st == 201, out
    v2_config = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "prune"},
        "spec": {"scaleTargetRef": TARGET, "maxReplicas": 4},
    }
    st, out = await api.patch(f"{V2}/prune", v2_config, apply, fieldManager="ops")
    assert st == 200, out
    assert out["spec"]["maxReplicas"] == 4
    assert out["spec"]["metrics"] == [
        {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 80},
            },
        }
    ], out["spec"]
    (ops,) = [e for e in out["metadata"]["managedFields"] if e["manager"] == "ops"]
    assert (ops["operation"], ops["apiVersion"]) == ("Apply", "autoscaling/v2"), ops
    # Held by another v1 applier too, the target stays.
    st, out = await api.patch(f"{V1}/prune", v1_config, apply, fieldManager="ops", force=True)
    assert st == 200, out
    # "keeper" applies the same target: both own it (shared ownership, no conflict)
    st, out = await api.patch(f"{V1}/prune", v1_config, apply, fieldManager="keeper")
    assert st == 200, out
    same = {**v2_config, "spec": {**v2_config["spec"], "maxReplicas": 3}}  # keeper's too
    st, out = await api.patch(f"{V2}/prune", same, apply, fieldManager="ops")
    assert st == 200, out
    _, v1 = await api.get(f"{V1}/prune")
    assert v1["spec"]["targetCPUUtilizationPercentage"] == 50, v1["spec"]
