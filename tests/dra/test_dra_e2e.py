"""Dynamic Resource Allocation on `gpuyard up`, through kubectl: the simulated nodes
publish their GPUs in ResourceSlices, a DeviceClass selects them, and a gang of 16
pods each claiming 8 GPUs of one model inside one NVLink clique (a
ResourceClaimTemplate with a CEL selector and matchAttribute) is allocated all at
once or not at all; the claims show their devices and are given back when the pods
go."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from gpuyard.cluster.testing import ClusterProcess, wait_for

PRODUCT = "NVIDIA-H100-80GB-HBM3"


def template() -> dict[str, Any]:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {"name": "eight-h100"},
        "spec": {
            "spec": {
                "devices": {
                    "requests": [
                        {
                            "name": "gpus",
                            "exactly": {
                                "deviceClassName": "gpu.nvidia.com",
                                "count": 8,
                                "selectors": [
                                    {
                                        "cel": {
                                            "expression": "device.attributes"
                                            f'["gpu.nvidia.com"].productName == "{PRODUCT}"'
                                        }
                                    }
                                ],
                            },
                        }
                    ],
                    "constraints": [{"matchAttribute": "gpu.nvidia.com/cliqueId"}],
                }
            }
        },
    }


def worker(i: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"w-{i}"},
        "spec": {
            "schedulerName": "gpuyard-scheduler",
            "schedulingGroup": {"podGroupName": "train"},
            "resourceClaims": [{"name": "gpus", "resourceClaimTemplateName": "eight-h100"}],
            "containers": [
                {
                    "name": "w",
                    "image": "trainer",
                    "resources": {"claims": [{"name": "gpus"}]},
                }
            ],
        },
    }


def podgroup() -> dict[str, Any]:
    return {
        "apiVersion": "scheduling.k8s.io/v1beta1",
        "kind": "PodGroup",
        "metadata": {"name": "train"},
        "spec": {"schedulingPolicy": {"gang": {"minCount": 16}}},
    }


def blocker() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "blocker"},
        "spec": {
            "schedulerName": "gpuyard-scheduler",
            "containers": [
                {"name": "b", "image": "x", "resources": {"limits": {"nvidia.com/gpu": 1}}}
            ],
        },
    }


def apply(c: ClusterProcess, *objs: dict[str, Any]) -> None:
    c.kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objs)}),
    )


def get(c: ClusterProcess, *what: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(c.kubectl("get", *what, "-o", "json").stdout)["items"]
    return items


def test_a_dra_gang_is_allocated_at_once_and_released(
    make_cluster: Callable[..., ClusterProcess],
) -> None:
    c = make_cluster(nodes=16, args=["--components", "scheduler,workloads"])
    # Every GPU node publishes its 8 GPUs; the driver's DeviceClass is there.
    slices = wait_for(lambda: len(get(c, "resourceslices")) == 16 and get(c, "resourceslices"))
    devices = {(s["spec"]["nodeName"], d["name"]): d for s in slices for d in s["spec"]["devices"]}
    assert len(devices) == 128
    some = next(iter(devices.values()))
    assert some["attributes"]["productName"] == {"string": PRODUCT}
    assert some["capacity"]["memory"] == {"value": "80Gi"}
    assert "cliqueId" in some["attributes"]
    assert get(c, "deviceclasses")[0]["metadata"]["name"] == "gpu.nvidia.com"
    explained = c.kubectl("explain", "resourceclaims.spec.devices.constraints").stdout
    assert "matchAttribute" in explained

    # One GPU of one node is taken through the extended resource: 15 nodes have 8 free
    # GPUs, so the gang of 16 must not start, and no claim may be allocated.
    apply(c, blocker())
    wait_for(lambda: get(c, "pods")[0]["spec"].get("nodeName"), what="the blocker bound")
    apply(c, template(), podgroup(), *(worker(i) for i in range(16)))
    claims = wait_for(
        lambda: len(get(c, "resourceclaims")) == 16 and get(c, "resourceclaims"),
        what="a claim for every worker from the template",
    )
    for cl in claims:
        ref = cl["metadata"]["ownerReferences"][0]
        assert ref["kind"] == "Pod" and ref["controller"] is True
        assert cl["metadata"]["name"].startswith(f"{ref['name']}-gpus-")
        assert cl["metadata"]["annotations"]["resource.kubernetes.io/pod-claim-name"] == "gpus"
    reason = wait_for(
        lambda: next(
            (
                cond.get("message") or ""
                for pg in get(c, "podgroups.scheduling.k8s.io")
                for cond in (pg.get("status") or {}).get("conditions") or ()
                if cond["type"] == "PodGroupInitiallyScheduled" and cond["status"] == "False"
            ),
            "",
        ),
        what="the gang's reason",
    )
    assert "needs 16 pods at once; 15 fit on 15 nodes" in reason
    assert not any((cl.get("status") or {}).get("allocation") for cl in get(c, "resourceclaims"))
    assert not any(
        p["spec"].get("nodeName") for p in get(c, "pods") if p["metadata"]["name"] != "blocker"
    )

    # The blocker goes: all 16 are placed at once, each claim on its pod's node.
    c.kubectl("delete", "pod", "blocker", "--wait=false")
    pods = wait_for(
        lambda: (
            (ps := [p for p in get(c, "pods") if p["metadata"]["name"].startswith("w-")])
            and all(p["spec"].get("nodeName") for p in ps)
            and ps
        ),
        timeout=60,
        what="the gang bound",
    )
    node_of = {p["metadata"]["name"]: p["spec"]["nodeName"] for p in pods}
    uid_of = {p["metadata"]["name"]: p["metadata"]["uid"] for p in pods}
    assert len(set(node_of.values())) == 16
    taken: set[tuple[str, str]] = set()
    for cl in get(c, "resourceclaims"):
        pod = cl["metadata"]["ownerReferences"][0]["name"]
        st = cl["status"]
        assert st["reservedFor"] == [{"resource": "pods", "name": pod, "uid": uid_of[pod]}]
        terms = st["allocation"]["nodeSelector"]["nodeSelectorTerms"]
        assert terms[0]["matchFields"][0]["values"] == [node_of[pod]]
        results = st["allocation"]["devices"]["results"]
        assert len(results) == 8
        cliques = set()
        for r in results:
            assert r["driver"] == "gpu.nvidia.com" and r["request"] == "gpus"
            assert r["pool"] == node_of[pod]
            dev = devices[(r["pool"], r["device"])]
            assert dev["attributes"]["productName"]["string"] == PRODUCT
            cliques.add(dev["attributes"]["cliqueId"]["string"])
            assert (r["pool"], r["device"]) not in taken
            taken.add((r["pool"], r["device"]))
        assert len(cliques) == 1
    # The claim's devices show through kubectl as a user reads them.
    shown = c.kubectl(
        "describe", "resourceclaim", get(c, "resourceclaims")[0]["metadata"]["name"]
    ).stdout
    assert "gpu-7" in shown and "Reserved For" in shown
    # A pod asking for a GPU through the extended resource finds none free.
    apply(c, blocker())
    wait_for(
        lambda: (
            "nvidia.com/gpu" in c.kubectl("describe", "pod", "blocker").stdout
            and "fits on no node" in c.kubectl("describe", "pod", "blocker").stdout
        ),
        what="the blocker pending for GPUs",
    )

    # The workers go: their claims are given back (deleted with their pods), and the
    # extended-resource pod gets its GPU.
    c.kubectl("delete", "pods", *[f"w-{i}" for i in range(16)], "--wait=false")
    wait_for(lambda: not get(c, "resourceclaims"), timeout=60, what="the claims gone")
    wait_for(
        lambda: any(
            p["spec"].get("nodeName") for p in get(c, "pods") if p["metadata"]["name"] == "blocker"
        ),
        timeout=60,
        what="the blocker bound once the claims were released",
    )


def test_a_claim_shared_by_a_podgroup_is_made_once_and_allocated_once(
    make_cluster: Callable[..., ClusterProcess],
) -> None:
    c = make_cluster(nodes=2, args=["--components", "scheduler,workloads"])
    wait_for(lambda: len(get(c, "resourceslices")) == 2, what="the slices")
    shared = template()
    shared["metadata"]["name"] = "two-gpus"
    req = shared["spec"]["spec"]["devices"]["requests"][0]["exactly"]
    req["count"] = 2
    entry = {"name": "nvlink", "resourceClaimTemplateName": "two-gpus"}
    group = podgroup()
    group["spec"]["schedulingPolicy"]["gang"]["minCount"] = 3
    group["spec"]["resourceClaims"] = [entry]
    pods = []
    for i in range(3):
        p = worker(i)
        p["spec"]["resourceClaims"] = [entry]
        p["spec"]["containers"][0]["resources"] = {"claims": [{"name": "nvlink"}]}
        pods.append(p)
    apply(c, shared, group, *pods)
    placed = wait_for(
        lambda: (
            (ps := get(c, "pods"))
            and len(ps) == 3
            and all(p["spec"].get("nodeName") for p in ps)
            and ps
        ),
        what="the gang bound",
    )
    claims = get(c, "resourceclaims")
    assert len(claims) == 1, [cl["metadata"]["name"] for cl in claims]
    cl = claims[0]
    assert cl["metadata"]["ownerReferences"][0]["kind"] == "PodGroup"
    assert cl["metadata"]["name"].startswith("train-nvlink-")
    nodes = {p["spec"]["nodeName"] for p in placed}
    assert len(nodes) == 1  # node-local devices: everyone sharing them is on their node
    st = cl["status"]
    assert len(st["allocation"]["devices"]["results"]) == 2
    assert sorted(r["name"] for r in st["reservedFor"]) == ["w-0", "w-1", "w-2"]
    for p in placed:
        assert p["status"]["resourceClaimStatuses"] == [
            {"name": "nvlink", "resourceClaimName": cl["metadata"]["name"]}
        ]
    pg = get(c, "podgroups.scheduling.k8s.io")[0]
    assert pg["status"]["resourceClaimStatuses"] == [
        {"name": "nvlink", "resourceClaimName": cl["metadata"]["name"]}
    ]
    # The pods end: the claim is no one's any more and its devices go back.
    c.kubectl("delete", "pods", "w-0", "w-1", "w-2", "--wait=false")
    wait_for(
        lambda: not (get(c, "resourceclaims")[0].get("status") or {}).get("allocation"),
        timeout=60,
        what="the shared claim given back",
    )
