# mypy: disable-error-code="union-attr,index,attr-defined,arg-type,assignment,misc,call-overload"
# (the client's generated models make every field Optional and CustomObjectsApi returns object)
"""The official `kubernetes` Python client against the embedded API server: lists with
selectors, watches (and resuming one from a resourceVersion), the three patch types,
binding, eviction and CustomObjectsApi CRUD on a CRD made in the test."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from kubernetes import client, utils, watch
from kubernetes.client.rest import ApiException

from .api import crd as make_crd

NS = "default"


@pytest.fixture
def api(official_client: client.ApiClient) -> client.ApiClient:
    return official_client  # (conftest.py: the official client for `apiserver`)


def pod(name: str, labels: dict[str, str] | None = None, node: str | None = None) -> Any:
    spec: dict[str, Any] = {
        "containers": [{"name": "main", "image": "busybox", "env": [{"name": "A", "value": "1"}]}]
    }
    if node:
        spec["nodeName"] = node
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": spec,
    }


def node(name: str) -> Any:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"gpuyard.io/pool": "gpu"}},
        "status": {
            "capacity": {"cpu": "8", "memory": "64Gi", "pods": "110"},
            "allocatable": {"cpu": "8", "memory": "64Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
        },
    }


def names(items: list[Any]) -> list[str]:
    return sorted(i.metadata.name for i in items)


def test_list_with_label_and_field_selectors(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    core.create_node(node("n1"))
    for i, team in enumerate(["vision", "vision", "speech"]):
        core.create_namespaced_pod(NS, pod(f"p{i}", {"team": team, "idx": str(i)}))
    core.create_namespaced_pod(NS, pod("bound", {"team": "speech"}, node="n1"))
    got = core.list_namespaced_pod(NS, label_selector="team=vision")
    assert names(got.items) == ["p0", "p1"]
    got = core.list_namespaced_pod(NS, label_selector="team in (speech),idx")
    assert names(got.items) == ["p2"]
    got = core.list_namespaced_pod(NS, label_selector="team!=vision")
    assert names(got.items) == ["bound", "p2"]
    assert names(core.list_pod_for_all_namespaces(field_selector="spec.nodeName=n1").items) == [
        "bound"
    ]
    got = core.list_namespaced_pod(NS, field_selector="metadata.name=p1")
    assert names(got.items) == ["p1"]
    # paging: limit + continue walks every item once
    seen: list[str] = []
    cont = None
    while True:
        page = core.list_namespaced_pod(NS, limit=2, _continue=cont)
        seen += [p.metadata.name for p in page.items]
        cont = page.metadata._continue
        if not cont:
            break
    assert sorted(seen) == ["bound", "p0", "p1", "p2"]
    assert int(page.metadata.resource_version) > 0
    # a typed read has the client's model types filled in
    p = core.read_namespaced_pod("p0", NS)
    assert p.spec.containers[0].env[0].name == "A" and p.status.phase == "Pending"


def test_watch_and_resume_from_resource_version(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_pod(NS, pod("w0", {"app": "w"}))
    lst = core.list_namespaced_pod(NS, label_selector="app=w")
    rv = lst.metadata.resource_version

    def changes() -> None:
        time.sleep(0.3)
        core.create_namespaced_pod(NS, pod("w1", {"app": "w"}))
        core.create_namespaced_pod(NS, pod("other", {"app": "x"}))
        core.patch_namespaced_pod("w0", NS, {"metadata": {"labels": {"seen": "yes"}}})
        core.delete_namespaced_pod("w1", NS, grace_period_seconds=0)

    t = threading.Thread(target=changes)
    t.start()
    w = watch.Watch()
    events: list[tuple[str, str]] = []
    last_rv = rv
    for ev in w.stream(
        core.list_namespaced_pod,
        NS,
        label_selector="app=w",
        resource_version=rv,
        timeout_seconds=10,
    ):
        obj = ev["object"]
        events.append((ev["type"], obj.metadata.name))
        last_rv = obj.metadata.resource_version
        if ev["type"] == "DELETED":
            w.stop()
    t.join(10)
    assert events[0] == ("ADDED", "w1")
    assert ("MODIFIED", "w0") in events and events[-1] == ("DELETED", "w1")
    assert all(name != "other" for _, name in events)

    # Resume after the last seen revision: only what happened since comes.
    core.create_namespaced_pod(NS, pod("w2", {"app": "w"}))
    w2 = watch.Watch()
    resumed = []
    for ev in w2.stream(
        core.list_namespaced_pod,
        NS,
        label_selector="app=w",
        resource_version=last_rv,
        timeout_seconds=5,
    ):
        resumed.append((ev["type"], ev["object"].metadata.name))
        w2.stop()
    assert resumed == [("ADDED", "w2")]

    # Resuming from the very first revision replays history (or answers 410 Gone), but
    # never silently skips events.
    w3 = watch.Watch()
    try:
        first = next(
            iter(w3.stream(core.list_namespaced_pod, NS, resource_version="1", timeout_seconds=3))
        )
        assert first["type"] in ("ADDED", "MODIFIED", "DELETED", "ERROR")
    except ApiException as exc:
        assert exc.status == 410
    finally:
        w3.stop()


def test_patch_types(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_pod(NS, pod("p", {"a": "1"}))
    # strategic merge (the client's default for dicts): containers merged by name (a pod's
    # spec may change only in its images)
    core.patch_namespaced_pod(
        "p", NS, {"spec": {"containers": [{"name": "main", "image": "busybox:2"}]}}
    )
    p = core.read_namespaced_pod("p", NS)
    assert p.spec.containers[0].image == "busybox:2"
    assert [e.name for e in p.spec.containers[0].env] == ["A"]
    # JSON patch (a list body)
    core.patch_namespaced_pod(
        "p", NS, [{"op": "replace", "path": "/metadata/labels/a", "value": "2"}]
    )
    assert core.read_namespaced_pod("p", NS).metadata.labels == {"a": "2"}
    # merge patch: lists replaced whole, null deletes
    core.patch_namespaced_pod(
        "p",
        NS,
        {"metadata": {"labels": {"a": None, "b": "3"}}},
        _content_type="application/merge-patch+json",
    )
    assert core.read_namespaced_pod("p", NS).metadata.labels == {"b": "3"}
    # a JSON patch that fails its test op changes nothing
    with pytest.raises(ApiException) as exc:
        core.patch_namespaced_pod(
            "p", NS, [{"op": "test", "path": "/metadata/labels/b", "value": "nope"}]
        )
    assert exc.value.status in (409, 422)
    assert core.read_namespaced_pod("p", NS).metadata.labels == {"b": "3"}


def test_binding_and_eviction(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    core.create_node(node("n1"))
    core.create_namespaced_pod(NS, pod("b"))
    body = client.V1Binding(
        metadata=client.V1ObjectMeta(name="b"),
        target=client.V1ObjectReference(api_version="v1", kind="Node", name="n1"),
    )
    # The client cannot decode Binding's answer (a Status) into V1Binding; read it raw.
    r = core.create_namespaced_pod_binding("b", NS, body, _preload_content=False)
    assert r.status == 201
    assert json.loads(r.data)["kind"] == "Status"
    assert core.read_namespaced_pod("b", NS).spec.node_name == "n1"
    with pytest.raises(ApiException) as exc:
        core.create_namespaced_pod_binding("b", NS, body, _preload_content=False)
    assert exc.value.status == 409, "a bound pod cannot be bound again"

    core.create_namespaced_pod(NS, pod("e"))
    ev = client.V1Eviction(metadata=client.V1ObjectMeta(name="e", namespace=NS))
    r = core.create_namespaced_pod_eviction("e", NS, ev, _preload_content=False)
    assert r.status in (200, 201)
    # an unbound pod goes at once; a bound one would be deleted gracefully
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            p = core.read_namespaced_pod("e", NS)
        except ApiException as e:
            assert e.status == 404
            break
        if p.metadata.deletion_timestamp:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the evicted pod is neither gone nor terminating")
    with pytest.raises(ApiException) as exc:
        core.create_namespaced_pod_eviction("missing", NS, ev)
    assert exc.value.status == 404


CRD = make_crd(
    "Gizmo",
    {
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "required": ["size"],
                "properties": {
                    "size": {"type": "integer", "minimum": 1},
                    "mode": {"type": "string", "enum": ["fast", "slow"]},
                },
            },
            "status": {
                "type": "object",
                "properties": {"ready": {"type": "boolean"}},
            },
        },
    },
    subresources={"status": {}},
)


def test_custom_objects_crud(api: client.ApiClient) -> None:
    ext = client.ApiextensionsV1Api(api)
    ext.create_custom_resource_definition(CRD)
    deadline = time.monotonic() + 10
    while True:
        crd = ext.read_custom_resource_definition("gizmos.example.com")
        conds = {c.type: c.status for c in (crd.status.conditions or [])}
        if conds.get("Established") == "True":
            break
        assert time.monotonic() < deadline, "CRD never Established"
        time.sleep(0.1)
    co = client.CustomObjectsApi(api)
    args = ("example.com", "v1", NS, "gizmos")
    g = {"apiVersion": "example.com/v1", "kind": "Gizmo", "metadata": {"name": "g1"}}
    created = co.create_namespaced_custom_object(*args, dict(g, spec={"size": 2, "mode": "fast"}))
    assert created["metadata"]["uid"] and created["spec"]["size"] == 2
    co.create_namespaced_custom_object(
        *args, {**g, "metadata": {"name": "g2", "labels": {"k": "v"}}, "spec": {"size": 1}}
    )
    assert [i["metadata"]["name"] for i in co.list_namespaced_custom_object(*args)["items"]] == [
        "g1",
        "g2",
    ]
    only = co.list_namespaced_custom_object(*args, label_selector="k=v")["items"]
    assert [i["metadata"]["name"] for i in only] == ["g2"]
    all_ns = co.list_cluster_custom_object("example.com", "v1", "gizmos")["items"]
    assert len(all_ns) == 2
    # schema validation: invalid objects are refused with 422 and nothing is stored
    for bad in ({"size": 0}, {"size": 1, "mode": "warp"}, {"mode": "fast"}, {"size": "two"}):
        with pytest.raises(ApiException) as exc:
            co.create_namespaced_custom_object(
                *args, {**g, "metadata": {"name": "bad"}, "spec": bad}
            )
        assert exc.value.status == 422, bad
    with pytest.raises(ApiException):
        co.get_namespaced_custom_object(*args, "bad")
    # merge patch (the client's default for custom objects), replace, status
    co.patch_namespaced_custom_object(*args, "g1", {"spec": {"mode": "slow"}})
    got = co.get_namespaced_custom_object(*args, "g1")
    assert got["spec"] == {"size": 2, "mode": "slow"}
    got["spec"]["size"] = 5
    co.replace_namespaced_custom_object(*args, "g1", got)
    stale = dict(got)  # the old resourceVersion
    with pytest.raises(ApiException) as exc:
        co.replace_namespaced_custom_object(*args, "g1", stale)
    assert exc.value.status == 409
    co.patch_namespaced_custom_object_status(*args, "g1", {"status": {"ready": True}})
    got = co.get_namespaced_custom_object(*args, "g1")
    assert got["status"] == {"ready": True} and got["spec"]["size"] == 5
    co.delete_namespaced_custom_object(*args, "g1")
    with pytest.raises(ApiException) as exc:
        co.get_namespaced_custom_object(*args, "g1")
    assert exc.value.status == 404


def test_delete_answers_parse_as_their_models(api: client.ApiClient) -> None:
    """A delete answers a Status (most kinds) or the object (pods, serviceaccounts, ...):
    the client's typed models read both."""
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map(
        NS, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="c"))
    )
    raw = core.delete_namespaced_config_map("c", NS, _preload_content=False)
    st = json.loads(raw.data)
    assert raw.status == 200 and st["kind"] == "Status" and st["status"] == "Success"
    assert st["details"]["kind"] == "configmaps" and st["details"]["name"] == "c"
    core.create_namespaced_service_account(
        NS, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="sa"))
    )
    sa = core.delete_namespaced_service_account("sa", NS)
    assert isinstance(sa, client.V1ServiceAccount) and sa.metadata.name == "sa"


def _labels_template(app: str) -> Any:
    return {
        "metadata": {"labels": {"app": app}},
        "spec": {"containers": [{"name": "main", "image": "busybox"}]},
    }


def test_new_objects_come_with_their_status(api: client.ApiClient) -> None:
    """Objects nothing has reconciled yet carry the status kube-apiserver writes for
    them: a Service's empty load balancer, zero counts a DaemonSet's and a
    ReplicationController's models require (the client refuses a status without them)."""
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    svc = core.create_namespaced_service(
        NS, {"metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}]}}
    )
    assert svc.status is not None and svc.status.load_balancer is not None
    assert core.read_namespaced_service("web", NS).status.load_balancer.ingress is None
    sel = {"matchLabels": {"app": "agent"}}
    ds = apps.create_namespaced_daemon_set(
        NS,
        {
            "metadata": {"name": "agent"},
            "spec": {"selector": sel, "template": _labels_template("agent")},
        },
    )
    assert (ds.status.number_ready, ds.status.desired_number_scheduled) == (0, 0)
    assert apps.list_namespaced_daemon_set(NS).items[0].status.number_misscheduled == 0
    rc = core.create_namespaced_replication_controller(
        NS,
        {
            "metadata": {"name": "old"},
            "spec": {
                "replicas": 2,
                "selector": {"app": "old"},
                "template": _labels_template("old"),
            },
        },
    )
    assert rc.status.replicas == 0 and rc.status.ready_replicas is None
    dep = apps.create_namespaced_deployment(
        NS,
        {
            "metadata": {"name": "d"},
            "spec": {"selector": {"matchLabels": {"app": "d"}}, "template": _labels_template("d")},
        },
    )
    assert dep.status is not None and dep.status.replicas is None
    cm = core.create_namespaced_config_map(NS, {"metadata": {"name": "plain"}})
    assert "status" not in json.loads(
        core.read_namespaced_config_map("plain", NS, _preload_content=False).data
    )  # a kind without a status gets none
    assert cm.metadata.name == "plain"


def test_error_bodies_end_as_kube_apiserver_writes_them(api: client.ApiClient) -> None:
    """An answer's JSON ends with the newline kube-apiserver's encoder writes, which
    the client keeps in `ApiException.body` and in the messages of `create_from_yaml`;
    /version is written as it is."""
    core = client.CoreV1Api(api)
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "twice"}}
    core.create_namespaced_config_map(NS, body)
    with pytest.raises(ApiException) as exc:
        core.create_namespaced_config_map(NS, body)
    assert exc.value.body.endswith('"code":409}\n')
    assert json.loads(exc.value.body)["reason"] == "AlreadyExists"
    with pytest.raises(utils.FailToCreateError) as failed:
        utils.create_from_dict(api, body, namespace=NS)
    assert str(failed.value) == f"Error from server (Conflict): {exc.value.body}"
    got = core.read_namespaced_config_map("twice", NS, _preload_content=False).data
    assert got.endswith(b"}\n") and json.loads(got)["metadata"]["name"] == "twice"
    # lists too, with items or none, the newline written once
    lst = core.list_namespaced_config_map(NS, _preload_content=False).data
    assert lst.endswith(b"]}\n") and not lst.endswith(b"\n\n"), lst[-40:]
    assert "twice" in {i["metadata"]["name"] for i in json.loads(lst)["items"]}
    none = core.list_namespaced_config_map(NS, label_selector="no=such", _preload_content=False)
    assert none.data.endswith(b'"items":[]}\n'), none.data
    version = client.VersionApi(api).get_code(_preload_content=False).data
    assert version.endswith(b"}") and json.loads(version)["major"] == "1"
