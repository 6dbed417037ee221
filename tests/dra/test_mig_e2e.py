"""MIG partitionable devices on `gpuyard up --mig`, through kubectl: claims for 1g
slices fill one GPU of a node, a claim for whole GPUs then never gets that GPU (so 8
whole GPUs cannot be had there), and when the slices' pods go, their counters come back
and the GPU is handed out whole."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gpuyard.cluster.testing import ClusterProcess, wait_for

from .test_dra_e2e import apply, blocker, get


def template(name: str, cls: str, count: int, selector: str | None = None) -> dict[str, Any]:
    exactly: dict[str, Any] = {"deviceClassName": cls, "count": count}
    if selector:
        exactly["selectors"] = [{"cel": {"expression": selector}}]
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {"name": name},
        "spec": {"spec": {"devices": {"requests": [{"name": "r", "exactly": exactly}]}}},
    }


def user(name: str, tmpl: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "schedulerName": "gpuyard-scheduler",
            "resourceClaims": [{"name": "r", "resourceClaimTemplateName": tmpl}],
            "containers": [{"name": "c", "image": "x", "resources": {"claims": [{"name": "r"}]}}],
        },
    }


def test_slices_fill_a_gpu_and_whole_gpus_never_share_it(
    make_cluster: Callable[..., ClusterProcess],
) -> None:
    c = make_cluster(nodes=2, args=["--mig", "--components", "scheduler,workloads"])
    slices = wait_for(lambda: len(get(c, "resourceslices")) == 6 and get(c, "resourceslices"))
    devices = {
        (s["spec"]["pool"]["name"], d["name"]): d
        for s in slices
        for d in s["spec"].get("devices", ())
    }
    assert len(devices) == 2 * 8 * 15
    assert {d["metadata"]["name"] for d in get(c, "deviceclasses")} == {
        "gpu.nvidia.com",
        "mig.nvidia.com",
    }
    # One node is full through the extended resource: the slices must go to the other.
    ext8 = blocker()
    ext8["metadata"]["name"] = "ext8"
    ext8["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = 8
    apply(c, ext8)
    full = wait_for(
        lambda: get(c, "pods")[0]["spec"].get("nodeName"), what="the 8-GPU extended pod bound"
    )
    one_g = 'device.attributes["gpu.nvidia.com"].profile == "1g.10gb"'
    apply(
        c,
        template("one-g", "mig.nvidia.com", 1, one_g),
        template("whole-8", "gpu.nvidia.com", 8),
        template("whole-7", "gpu.nvidia.com", 7),
        *(user(f"small-{i}", "one-g") for i in range(7)),
    )

    def placed(prefix: str, n: int) -> list[dict[str, Any]] | None:
        ps = [p for p in get(c, "pods") if p["metadata"]["name"].startswith(prefix)]
        return ps if len(ps) == n and all(p["spec"].get("nodeName") for p in ps) else None

    def results() -> dict[str, list[dict[str, Any]]]:
        """Each pod's claim's allocated devices."""
        return {
            cl["metadata"]["ownerReferences"][0]["name"]: cl["status"]["allocation"]["devices"][
                "results"
            ]
            for cl in get(c, "resourceclaims")
            if (cl.get("status") or {}).get("allocation")
        }

    smalls = wait_for(lambda: placed("small-", 7), timeout=60, what="the 1g pods bound")
    node = {p["spec"]["nodeName"] for p in smalls}
    assert len(node) == 1 and node != {full}
    (node_a,) = node
    parents = set()
    allocated = results()
    for p in smalls:
        (r,) = allocated[p["metadata"]["name"]]
        dev = devices[(r["pool"], r["device"])]
        assert dev["attributes"]["profile"] == {"string": "1g.10gb"}
        parents.add((r["pool"], dev["attributes"]["parentIndex"]["int"]))
    assert parents == {(node_a, 0)}  # seven 1g slices: all of GPU 0

    # GPU 0 is all slices: 8 whole GPUs cannot be had on that node, 7 can, without it.
    apply(c, user("whole-8", "whole-8"))
    why = wait_for(
        lambda: next(
            (
                cond.get("message")
                for cond in (
                    get(c, "pods", "--field-selector", "metadata.name=whole-8")[0].get("status")
                    or {}
                ).get("conditions")
                or ()
                if cond["type"] == "PodScheduled"
                and cond["status"] == "False"
                # a first pass may only be waiting for the claim to be made from its template
                and "waiting for the ResourceClaim" not in (cond.get("message") or "")
            ),
            None,
        ),
        what="the 8-GPU pod's reason",
    )
    assert "fits on no node of 2; 2 lack nvidia.com/gpu" in why, why
    apply(c, user("whole-7", "whole-7"))
    (w7,) = wait_for(lambda: placed("whole-7", 1), timeout=60, what="the 7-GPU pod bound")
    assert w7["spec"]["nodeName"] == node_a
    got = results()["whole-7"]
    assert sorted(r["device"] for r in got) == [f"gpu-{i}" for i in range(1, 8)]

    # The slices and the 7 go: their counters come back, and all 8 GPUs are had whole.
    c.kubectl("delete", "pod", "whole-7", *(f"small-{i}" for i in range(7)), "--wait=false")
    (w8,) = wait_for(lambda: placed("whole-8", 1), timeout=60, what="the 8-GPU pod bound")
    assert w8["spec"]["nodeName"] == node_a
    assert sorted(r["device"] for r in results()["whole-8"]) == sorted(f"gpu-{i}" for i in range(8))
