"""gpuyard.apiserver.tables: the Table columns kubectl prints for pods, nodes, events and
custom resources, row objects per includeObject, ages and the JSONPath subset."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from gpuyard.apiserver.resources import Registry, Resource, resources_from_crd
from gpuyard.apiserver.tables import age, jsonpath, to_table

REG = Registry()


def res(plural: str, group: str = "") -> Resource:
    r = REG.get(group, "v1", plural)
    assert r is not None
    return r


def ts(seconds_ago: int) -> str:
    return (datetime.now(UTC) - timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def columns(t: dict[str, Any], priority: int = 0) -> list[str]:
    return [c["name"] for c in t["columnDefinitions"] if c["priority"] <= priority]


def test_pod_rows() -> None:
    running = {
        "metadata": {"name": "a", "creationTimestamp": ts(30), "labels": {"x": "1"}},
        "spec": {"nodeName": "n1", "containers": [{"name": "c"}, {"name": "d"}]},
        "status": {
            "phase": "Running",
            "podIP": "10.0.0.5",
            "containerStatuses": [
                {"name": "c", "ready": True, "restartCount": 2, "state": {"running": {}}},
                {
                    "name": "d",
                    "ready": False,
                    "restartCount": 1,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                },
            ],
        },
    }
    pending = {"metadata": {"name": "b"}, "spec": {"containers": [{"name": "c"}]}}
    going = {
        "metadata": {"name": "g", "deletionTimestamp": ts(1)},
        "spec": {"containers": [{"name": "c"}]},
        "status": {"phase": "Running"},
    }
    done = {"metadata": {"name": "d"}, "spec": {}, "status": {"phase": "Succeeded"}}
    t = to_table(res("pods"), [running, pending, going, done])
    assert t["kind"] == "Table" and t["apiVersion"] == "meta.k8s.io/v1"
    assert columns(t) == ["Name", "Ready", "Status", "Restarts", "Age"]
    assert {"IP", "Node", "Nominated Node", "Readiness Gates"} <= set(columns(t, 1))
    names = columns(t, 1)
    rows = [dict(zip(names, r["cells"], strict=True)) for r in t["rows"]]
    assert rows[0]["Ready"] == "1/2" and rows[0]["Status"] == "CrashLoopBackOff"
    assert rows[0]["Restarts"] == 3 and rows[0]["IP"] == "10.0.0.5" and rows[0]["Node"] == "n1"
    assert rows[0]["Age"].endswith("s")
    assert rows[1]["Status"] == "Pending" and rows[1]["Node"] == "<none>"
    assert rows[2]["Status"] == "Terminating"
    assert rows[3]["Status"] == "Completed"
    # includeObject: Metadata (default) gives PartialObjectMetadata, Object the object, None none
    assert t["rows"][0]["object"]["kind"] == "PartialObjectMetadata"
    assert t["rows"][0]["object"]["metadata"]["labels"] == {"x": "1"}
    assert to_table(res("pods"), [pending], "Object")["rows"][0]["object"] == pending
    assert "object" not in to_table(res("pods"), [pending], "None")["rows"][0]
    meta = {"resourceVersion": "42", "continue": "abc"}
    assert to_table(res("pods"), [], list_meta=meta)["metadata"] == meta


def test_node_rows() -> None:
    node = {
        "metadata": {
            "name": "gpu-1",
            "creationTimestamp": ts(3 * 3600),
            "labels": {"node-role.kubernetes.io/gpu": "", "node-role.kubernetes.io/worker": ""},
        },
        "spec": {"unschedulable": True},
        "status": {
            "conditions": [{"type": "Ready", "status": "True"}],
            "addresses": [{"type": "InternalIP", "address": "10.1.2.3"}],
            "nodeInfo": {"kubeletVersion": "v1.30.0"},
        },
    }
    t = to_table(res("nodes"), [node, {"metadata": {"name": "bare"}}])
    assert columns(t) == ["Name", "Status", "Roles", "Age", "Version"]
    names = columns(t, 1)
    assert "Internal-IP" in names
    row = dict(zip(names, t["rows"][0]["cells"], strict=True))
    assert row["Status"] == "Ready,SchedulingDisabled"
    assert row["Roles"] == "gpu,worker" and row["Age"] == "3h" and row["Version"] == "v1.30.0"
    assert row["Internal-IP"] == "10.1.2.3"
    bare = dict(zip(names, t["rows"][1]["cells"], strict=True))
    assert bare["Status"] == "Unknown" and bare["Roles"] == "<none>"


def test_custom_resource_printer_columns() -> None:
    crd = {
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "additionalPrinterColumns": [
                        {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
                        {"name": "First", "type": "string", "jsonPath": ".spec.items[0].name"},
                        {"name": "Seen", "type": "date", "jsonPath": ".status.seen"},
                        {"name": "Detail", "type": "string", "jsonPath": ".spec.d", "priority": 1},
                    ],
                    "schema": {"openAPIV3Schema": {"type": "object"}},
                }
            ],
        },
    }
    widgets = resources_from_crd(crd)[0]
    w = {
        "metadata": {"name": "w", "creationTimestamp": ts(90)},
        "spec": {"size": 3, "items": [{"name": "first"}]},
        "status": {"seen": ts(600)},
    }
    t = to_table(widgets, [w])
    assert columns(t) == ["Name", "Size", "First", "Seen", "Age"]
    assert columns(t, 1) == ["Name", "Size", "First", "Seen", "Detail", "Age"]
    assert t["rows"][0]["cells"] == ["w", 3, "first", "10m", "<none>", "90s"]


def test_other_kinds_get_name_and_age() -> None:
    t = to_table(res("limitranges"), [{"metadata": {"name": "s", "creationTimestamp": ts(5)}}])
    assert columns(t) == ["Name", "Age"]
    assert t["rows"][0]["cells"][0] == "s"


def test_age_and_jsonpath() -> None:
    now = datetime(2026, 1, 10, tzinfo=UTC)
    assert age("2026-01-09T23:59:00Z", now) == "60s"
    assert age("2026-01-09T23:55:30Z", now) == "4m30s"
    assert age("2026-01-09T22:00:00Z", now) == "120m"
    assert age("2026-01-08T00:00:00Z", now) == "2d"
    assert age(None, now) == "<unknown>" and age("garbage", now) == "<invalid>"
    obj = {"a": {"b": [{"c": 1}, {"c": 2}]}}
    assert jsonpath(obj, ".a.b[1].c") == 2
    assert jsonpath(obj, "{.a.b[5].c}") is None
    assert jsonpath(obj, ".a.x.y") is None


def test_kubectl_get_workload_tables(apiserver: Any) -> None:
    """kubectl get prints the columns kube-apiserver's printers give the workload kinds
    and secrets, from the server's Table."""
    from .test_kubectl import k
    from .test_scale import DEPLOY, RS, STS

    for text in (DEPLOY, RS, STS):
        k(apiserver, "apply", "-f", "-", input=text)
    k(apiserver, "create", "secret", "generic", "s", "--from-literal=a=b", "--from-literal=c=d")
    head = {
        "deploy": ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        "rs": ["NAME", "DESIRED", "CURRENT", "READY", "AGE"],
        "sts": ["NAME", "READY", "AGE"],
        "secret": ["NAME", "TYPE", "DATA", "AGE"],
    }
    for kind, cols in head.items():
        rows = k(apiserver, "get", kind).stdout.splitlines()
        assert rows[0].split() == cols, (kind, rows)
    assert k(apiserver, "get", "deploy", "web").stdout.splitlines()[1].split()[:4] == [
        "web",
        "0/2",
        "0",
        "0",
    ]
    wide = k(apiserver, "get", "deploy", "web", "-o", "wide").stdout.splitlines()
    assert wide[0].split()[-3:] == ["CONTAINERS", "IMAGES", "SELECTOR"]
    assert wide[1].rstrip().endswith("c   nginx    app=web,tier in (edge,front)") or (
        " nginx " in wide[1] and wide[1].rstrip().endswith("app=web,tier in (edge,front)")
    ), wide
    assert k(apiserver, "get", "secret", "s").stdout.splitlines()[1].split()[:3] == [
        "s",
        "Opaque",
        "2",
    ]
