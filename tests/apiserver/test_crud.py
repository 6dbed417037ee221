"""Create, read, update, delete semantics over HTTP."""

from __future__ import annotations

import orjson
import yaml

from .api import Api, cm, pod

NS = "/api/v1/namespaces/default"


async def test_default_namespaces_exist(api: Api) -> None:
    st, body = await api.get("/api/v1/namespaces")
    assert st == 200
    names = {i["metadata"]["name"] for i in body["items"]}
    assert {"default", "kube-system", "kube-public", "kube-node-lease"} <= names
    assert body["kind"] == "NamespaceList"


async def test_create_sets_server_fields_and_get_returns_it(api: Api) -> None:
    st, obj = await api.post(f"{NS}/configmaps", cm("a", {"k": "v"}))
    assert st == 201
    md = obj["metadata"]
    assert md["uid"] and md["creationTimestamp"] and "generation" not in md
    assert md["namespace"] == "default" and int(md["resourceVersion"]) > 0
    st, got = await api.get(f"{NS}/configmaps/a")
    assert st == 200 and got == obj
    st, err = await api.post(f"{NS}/configmaps", cm("a"))
    assert st == 409 and err["reason"] == "AlreadyExists"
    assert err["message"] == 'configmaps "a" already exists'


async def test_generate_name(api: Api) -> None:
    body = cm("")
    body["metadata"] = {"generateName": "gen-"}
    st1, a = await api.post(f"{NS}/configmaps", body)
    st2, b = await api.post(f"{NS}/configmaps", body)
    assert st1 == st2 == 201
    assert a["metadata"]["name"].startswith("gen-") and len(a["metadata"]["name"]) > 4
    assert a["metadata"]["name"] != b["metadata"]["name"]


async def test_namespace_must_exist(api: Api) -> None:
    st, err = await api.post("/api/v1/namespaces/nope/configmaps", cm("a"))
    assert st == 404 and err["reason"] == "NotFound"
    assert err["message"] == 'namespaces "nope" not found'


async def test_update_conflict_on_stale_resource_version(api: Api) -> None:
    _, obj = await api.post(f"{NS}/configmaps", cm("a", {"k": "1"}))
    stale = dict(obj)
    obj["data"] = {"k": "2"}
    st, new = await api.put(f"{NS}/configmaps/a", obj)
    assert st == 200 and new["data"] == {"k": "2"}
    assert int(new["metadata"]["resourceVersion"]) > int(stale["metadata"]["resourceVersion"])
    stale["data"] = {"k": "3"}
    st, err = await api.put(f"{NS}/configmaps/a", stale)
    assert st == 409 and err["reason"] == "Conflict"
    assert "the object has been modified" in err["message"]
    _, now = await api.get(f"{NS}/configmaps/a")
    assert now["data"] == {"k": "2"}


async def test_status_subresource_separation_and_generation(api: Api) -> None:
    _, p = await api.post(f"{NS}/pods", pod("p"))
    assert p["status"]["phase"] == "Pending" and p["metadata"]["generation"] == 1
    # The main resource ignores status; a spec change bumps generation.
    p["status"] = {"phase": "Running"}
    p["spec"]["activeDeadlineSeconds"] = 100
    st, p2 = await api.put(f"{NS}/pods/p", p)
    assert st == 200
    assert p2["status"]["phase"] == "Pending" and p2["metadata"]["generation"] == 2
    # /status ignores everything but status; generation unchanged.
    p2["status"] = {"phase": "Running"}
    p2["metadata"]["labels"] = {"x": "y"}
    p2["spec"]["activeDeadlineSeconds"] = 5
    st, p3 = await api.put(f"{NS}/pods/p/status", p2)
    assert st == 200, p3
    assert p3["status"]["phase"] == "Running"
    assert p3["spec"]["activeDeadlineSeconds"] == 100
    assert not p3["metadata"].get("labels")
    assert p3["metadata"]["generation"] == 2


async def test_merge_patch_and_json_patch(api: Api) -> None:
    await api.post(f"{NS}/configmaps", cm("a", {"k": "1"}))
    st, obj = await api.patch(f"{NS}/configmaps/a", {"metadata": {"labels": {"l": "v"}}})
    assert st == 200 and obj["metadata"]["labels"] == {"l": "v"}
    st, obj = await api.patch(
        f"{NS}/configmaps/a",
        [{"op": "replace", "path": "/data/k", "value": "2"}],
        ctype="application/json-patch+json",
    )
    assert st == 200 and obj["data"]["k"] == "2"
    st, err = await api.patch(f"{NS}/configmaps/a", b"{}", ctype="text/weird")
    assert st == 415 and err["reason"] == "UnsupportedMediaType"
    st, err = await api.patch(f"{NS}/configmaps/missing", {"data": {}})
    assert st == 404


async def test_yaml_body(api: Api) -> None:
    body = yaml.safe_dump(cm("y", {"a": "b"})).encode()
    st, obj = await api.post(f"{NS}/configmaps", body, ctype="application/yaml")
    assert st == 201 and obj["data"] == {"a": "b"}


async def test_dry_run_stores_nothing(api: Api) -> None:
    st, obj = await api.post(f"{NS}/configmaps", cm("d"), dryRun="All")
    assert st == 201 and obj["metadata"]["name"] == "d"
    assert (await api.get(f"{NS}/configmaps/d"))[0] == 404
    await api.post(f"{NS}/configmaps", cm("d", {"a": "1"}))
    _, obj = await api.get(f"{NS}/configmaps/d")
    obj["data"] = {"a": "2"}
    st, _ = await api.put(f"{NS}/configmaps/d", obj, dryRun="All")
    assert st == 200
    st, _ = await api.delete(f"{NS}/configmaps/d", dryRun="All")
    assert st == 200
    _, now = await api.get(f"{NS}/configmaps/d")
    assert now["data"] == {"a": "1"}
    assert (await api.post(f"{NS}/configmaps", cm("e"), dryRun="Bogus"))[0] == 400


async def test_delete_and_deletecollection(api: Api) -> None:
    for i in range(3):
        await api.post(f"{NS}/configmaps", cm(f"c{i}", labels={"grp": "x" if i else "y"}))
    st, _ = await api.delete(f"{NS}/configmaps/c0")
    assert st == 200
    assert (await api.get(f"{NS}/configmaps/c0"))[0] == 404
    assert (await api.delete(f"{NS}/configmaps/c0"))[0] == 404
    st, out = await api.delete(f"{NS}/configmaps", labelSelector="grp=x")
    assert st == 200 and len(out["items"]) == 2
    _, lst = await api.get(f"{NS}/configmaps")
    assert lst["items"] == []


async def test_errors_are_status_objects(api: Api) -> None:
    st, err = await api.get("/api/v1/nonsense")
    assert st == 404 and err["kind"] == "Status" and err["code"] == 404
    st, err = await api.get("/nothing/here")
    assert st == 404 and err["kind"] == "Status"
    st, err = await api.req("PUT", f"{NS}/configmaps", cm("x"))
    assert st == 405 and err["reason"] == "MethodNotAllowed"
    st, err = await api.post(f"{NS}/configmaps", b"{not json", ctype="application/json")
    assert st == 400 and err["reason"] == "BadRequest"
    st, err = await api.post(f"{NS}/configmaps", {"kind": "Pod", "metadata": {"name": "x"}})
    assert st == 400
    st, err = await api.post(f"{NS}/configmaps", b"[1,2]", ctype="application/json")
    assert st == 400
    st, err = await api.put(f"{NS}/configmaps/x", cm("y"))
    assert st == 400  # name in body differs from URL


async def test_auth_required_and_open_health(api: Api) -> None:
    st, err = await api.get("/api/v1/namespaces", token=None)
    assert st == 401 and err["reason"] == "Unauthorized"
    st, _ = await api.get("/api/v1/namespaces", token="wrong")
    assert st == 401
    st, body = await api.get("/readyz", token=None)
    assert st == 200 and body == b"ok"
    st, ver = await api.get("/version", token=None)
    assert st == 200 and ver["major"] == "1"


async def test_oversize_body_refused(api: Api) -> None:
    big = cm("big", {"x": "a" * (3 * 1024 * 1024 + 10)})
    st, err = await api.post(f"{NS}/configmaps", orjson.dumps(big))
    assert st == 413 and err["kind"] == "Status"
    huge = cm("huge", {"x": "a" * (6 * 1024 * 1024)})
    st, err = await api.post(f"{NS}/configmaps", orjson.dumps(huge))
    assert st == 413
    assert (await api.get(f"{NS}/configmaps/big"))[0] == 404
    assert (await api.get("/readyz"))[0] == 200


async def test_discovery(api: Api) -> None:
    st, apis = await api.get("/api")
    assert st == 200 and apis["versions"] == ["v1"]
    # A client that asks for aggregated discovery first (as kubectl does) gets it; one
    # that asks for plain JSON gets the legacy APIGroupList.
    st, agg = await api.get(
        "/apis",
        headers={
            "Accept": "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
            "application/json"
        },
    )
    assert st == 200 and agg["kind"] == "APIGroupDiscoveryList"
    st, groups = await api.get("/apis", headers={"Accept": "application/json"})
    assert st == 200 and groups["kind"] == "APIGroupList"
    names = {g["name"] for g in groups["groups"]}
    assert {"apps", "policy", "coordination.k8s.io", "apiextensions.k8s.io"} <= names
    assert names == {g["metadata"]["name"] for g in agg["items"]}
    st, core = await api.get("/api/v1")
    res = {r["name"]: r for r in core["resources"]}
    assert res["pods/eviction"]["group"] == "policy" and res["pods/eviction"]["kind"] == "Eviction"
    assert res["pods"]["shortNames"] == ["po"] and res["pods"]["namespaced"]
    assert "pods/binding" in res and "nodes/status" in res
    st, lease = await api.get("/apis/coordination.k8s.io/v1")
    assert st == 200 and lease["resources"][0]["kind"] == "Lease"


async def test_metrics_count_requests_by_user_agent(api: Api) -> None:
    await api.get("/api/v1/namespaces", headers={"User-Agent": "tester/1.0"})
    st, text = await api.get("/metrics")
    assert st == 200
    t = text.decode()
    assert 'apiserver_requests_by_user_agent_total{user_agent="tester/1.0",verb="list"} 1.0' in t
    assert 'apiserver_request_total{code="200",resource="namespaces",verb="list"}' in t
    assert 'apiserver_storage_objects{resource="namespaces"} 4.0' in t


async def test_priority_class_sets_pod_priority(api: Api) -> None:
    st, _ = await api.post(
        "/apis/scheduling.k8s.io/v1/priorityclasses",
        {
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass",
            "metadata": {"name": "hi"},
            "value": 1000,
        },
    )
    assert st == 201
    st, p = await api.post(f"{NS}/pods", pod("p", priorityClassName="hi"))
    assert st == 201 and p["spec"]["priority"] == 1000
    st, err = await api.post(f"{NS}/pods", pod("q", priorityClassName="nope"))
    assert st == 403
