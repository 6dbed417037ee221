"""pods/ephemeralcontainers: `kubectl debug` adds a debug container through it; only that
field changes, additions only, each container checked; a pod or a pod template cannot
be made with one and an update of the pod itself keeps the stored list (real kubectl
and raw HTTP)."""

from __future__ import annotations

import json
from typing import Any

from gpuyard.apiserver.testing import ServerProcess

from .api import Api, pod
from .kubectl import kubectl

P = "/api/v1/namespaces/default/pods"
SMP = "application/strategic-merge-patch+json"


def test_kubectl_debug_adds_an_ephemeral_container(apiserver: ServerProcess) -> None:
    kubectl(apiserver, "run", "web", "--image=nginx")
    before = json.loads(kubectl(apiserver, "get", "pod", "web", "-o", "json").stdout)
    out = kubectl(
        apiserver, "debug", "web", "--image=busybox", "-c", "dbg", "--target=web", "--quiet"
    )
    assert out.returncode == 0, out.stderr
    after = json.loads(kubectl(apiserver, "get", "pod", "web", "-o", "json").stdout)
    (eph,) = after["spec"]["ephemeralContainers"]
    assert eph["name"] == "dbg" and eph["image"] == "busybox"
    assert eph["targetContainerName"] == "web"
    assert eph["terminationMessagePath"] == "/dev/termination-log"  # defaulted
    # Nothing else changed.
    for k in ("containers", "nodeName", "restartPolicy"):
        assert after["spec"].get(k) == before["spec"].get(k)
    assert after["metadata"]["labels"] == before["metadata"]["labels"]
    # A second debug container is added beside it; the same name again is refused.
    kubectl(apiserver, "debug", "web", "--image=alpine", "-c", "dbg2", "--quiet")
    names = [
        c["name"]
        for c in json.loads(kubectl(apiserver, "get", "pod", "web", "-o", "json").stdout)["spec"][
            "ephemeralContainers"
        ]
    ]
    assert names == ["dbg", "dbg2"]
    again = kubectl(apiserver, "debug", "web", "--image=busybox", "-c", "web", check=False)
    assert again.returncode != 0
    assert 'spec.ephemeralContainers[2].name: Duplicate value: "web"' in again.stderr
    # Discovery lists the subresource as kube does.
    res = json.loads(kubectl(apiserver, "get", "--raw", "/api/v1").stdout)["resources"]
    sub = next(r for r in res if r["name"] == "pods/ephemeralcontainers")
    assert sub["kind"] == "Pod" and sorted(sub["verbs"]) == ["get", "patch", "update"]


def _eph(name: str, **more: Any) -> dict[str, Any]:
    return {"name": name, "image": "busybox", **more}


async def test_only_additions_and_valid_containers(api: Api) -> None:
    st, out = await api.post(P, pod("p"))
    assert st == 201, out
    sub = f"{P}/p/ephemeralcontainers"
    st, out = await api.patch(sub, {"spec": {"ephemeralContainers": [_eph("dbg")]}}, SMP)
    assert st == 200, out
    rv = out["metadata"]["resourceVersion"]
    # Anything but ephemeralContainers in the body is not written.
    _, cur = await api.get(f"{P}/p")
    cur["metadata"]["labels"] = {"changed": "yes"}
    cur["spec"]["activeDeadlineSeconds"] = 5
    cur["status"] = {"phase": "Succeeded"}
    cur["spec"]["ephemeralContainers"].append(_eph("dbg2"))
    st, out = await api.put(sub, cur)
    assert st == 200, out
    assert [c["name"] for c in out["spec"]["ephemeralContainers"]] == ["dbg", "dbg2"]
    assert not out["metadata"].get("labels") and "activeDeadlineSeconds" not in out["spec"]
    assert (out.get("status") or {}).get("phase") != "Succeeded"
    assert out["metadata"]["resourceVersion"] != rv
    # A stale resourceVersion is a conflict.
    cur["metadata"]["resourceVersion"] = rv
    st, err = await api.put(sub, cur)
    assert st == 409 and err["reason"] == "Conflict", err

    async def refused(body: Any, ctype: str = SMP) -> list[tuple[str, str, str]]:
        st, err = await api.patch(sub, body, ctype)
        assert st == 422, err
        assert err["reason"] == "Invalid" and err["details"]["kind"] == "Pod"
        return [(c["field"], c["reason"], c["message"]) for c in err["details"]["causes"]]

    # Removing or changing an existing one is forbidden.
    causes = await refused(
        [{"op": "remove", "path": "/spec/ephemeralContainers/1"}], "application/json-patch+json"
    )
    assert causes == [
        (
            "spec.ephemeralContainers",
            "FieldValueForbidden",
            'Forbidden: existing ephemeral containers "dbg2" may not be removed',
        )
    ]
    causes = await refused(
        [{"op": "replace", "path": "/spec/ephemeralContainers/0/image", "value": "alpine"}],
        "application/json-patch+json",
    )
    assert causes == [
        (
            "spec.ephemeralContainers[0]",
            "FieldValueForbidden",
            'Forbidden: existing ephemeral containers "dbg" may not be changed',
        )
    ]
    # A new one: a name taken by a container, fields it may not have, an unknown target.
    bad = _eph("c", ports=[{"containerPort": 80}], targetContainerName="nope")
    causes = await refused({"spec": {"ephemeralContainers": [bad]}})
    assert ("spec.ephemeralContainers[2].name", "FieldValueDuplicate", 'Duplicate value: "c"') in (
        causes
    )
    assert (
        "spec.ephemeralContainers[2].ports",
        "FieldValueForbidden",
        "Forbidden: cannot be set for an Ephemeral Container",
    ) in causes
    assert (
        "spec.ephemeralContainers[2].targetContainerName",
        "FieldValueNotFound",
        'Not found: "nope"',
    ) in causes
    causes = await refused({"spec": {"ephemeralContainers": [{"name": "noimage"}]}})
    assert causes == [("spec.ephemeralContainers[2].image", "FieldValueRequired", "Required value")]
    # An unknown field under Strict is refused by decoding, naming it.
    st, err = await api.patch(
        sub,
        {"spec": {"ephemeralContainers": [_eph("x", imagee="typo")]}},
        SMP,
        fieldValidation="Strict",
    )
    assert st == 400 and 'unknown field "spec.ephemeralContainers[2].imagee"' in err["message"]
    _, stored = await api.get(f"{P}/p")
    assert [c["name"] for c in stored["spec"]["ephemeralContainers"]] == ["dbg", "dbg2"]


async def test_not_on_create_nor_in_templates_and_kept_on_pod_update(api: Api) -> None:
    body = pod("born-with-one")
    body["spec"]["ephemeralContainers"] = [_eph("dbg")]
    st, err = await api.post(P, body)
    assert st == 422, err
    assert err["details"]["causes"] == [
        {
            "reason": "FieldValueForbidden",
            "message": "Forbidden: cannot be set on create",
            "field": "spec.ephemeralContainers",
        }
    ]
    deploy = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d"},
        "spec": {
            "selector": {"matchLabels": {"a": "b"}},
            "template": {
                "metadata": {"labels": {"a": "b"}},
                "spec": {
                    "containers": [{"name": "c", "image": "busybox"}],
                    "ephemeralContainers": [_eph("dbg")],
                },
            },
        },
    }
    st, err = await api.post("/apis/apps/v1/namespaces/default/deployments", deploy)
    assert st == 422, err
    assert {
        "reason": "FieldValueForbidden",
        "message": "Forbidden: ephemeral containers not allowed in pod template",
        "field": "spec.template.spec.ephemeralContainers",
    } in err["details"]["causes"]

    assert (await api.post(P, pod("p")))[0] == 201
    st, out = await api.patch(
        f"{P}/p/ephemeralcontainers", {"spec": {"ephemeralContainers": [_eph("dbg")]}}, SMP
    )
    assert st == 200, out
    # An update of the pod itself neither adds, removes nor changes them.
    st, out = await api.patch(
        f"{P}/p", {"metadata": {"labels": {"x": "y"}}, "spec": {"ephemeralContainers": None}}
    )
    assert st == 200, out
    assert [c["name"] for c in out["spec"]["ephemeralContainers"]] == ["dbg"]
    assert out["metadata"]["labels"] == {"x": "y"}
