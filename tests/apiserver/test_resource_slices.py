"""ResourceSlices with partitionable devices (resource.k8s.io/v1 sharedCounters and
consumesCounters) through the API: what a MIG-capable simulated node publishes is
accepted and read back as sent, and slices breaking kube-apiserver's rules are refused
with 422 naming the field, storing nothing."""

from __future__ import annotations

import copy
from typing import Any

from gpuyard.cluster import simdevices
from gpuyard.cluster.shapes import NodeShape

from .api import Api

SLICES = "/apis/resource.k8s.io/v1/resourceslices"
H200 = NodeShape("h200-0", 96_000, 2**40, 8, "NVIDIA-H200-141GB-HBM3", mig=True)


def mig_slices() -> list[dict[str, Any]]:
    return simdevices.resource_slices(H200, mig=True)


async def test_a_mig_nodes_slices_are_accepted_and_read_back(api: Api) -> None:
    slices = mig_slices()
    assert [s["metadata"]["name"] for s in slices] == simdevices.slice_names(H200, True)
    for s in slices:
        code, got = await api.post(SLICES, s, fieldValidation="Strict")
        assert code == 201, got
        assert got["spec"] == s["spec"]
    counters, first = slices[0]["spec"], slices[1]["spec"]
    assert len(counters["sharedCounters"]) == 8 and "devices" not in counters
    assert len(first["devices"]) == 60
    profiles = {
        d["attributes"]["profile"]["string"]
        for d in first["devices"]
        if d["attributes"]["type"]["string"] == "mig"
    }
    assert profiles == {"1g.18gb", "2g.35gb", "3g.71gb", "4g.71gb", "7g.141gb"}
    code, got = await api.get(f"{SLICES}/{slices[1]['metadata']['name']}")
    assert code == 200 and got["spec"]["devices"][1]["consumesCounters"] == [
        {
            "counterSet": "gpu-0",
            "counters": {"compute-slices": {"value": "1"}, "memory-slices": {"value": "1"}},
        }
    ]


def _refused(code: int, got: dict[str, Any], field: str, text: str) -> None:
    assert code == 422, got
    causes = got["details"]["causes"]
    assert any(c["field"] == field and text in c["message"] for c in causes), causes


async def test_slices_breaking_the_counter_rules_are_refused(api: Api) -> None:
    counters, devices = mig_slices()[0:2]

    def named(s: dict[str, Any], name: str) -> dict[str, Any]:
        s = copy.deepcopy(s)
        s["metadata"] = {"name": name}
        return s

    both = named(devices, "both")
    both["spec"]["sharedCounters"] = counters["spec"]["sharedCounters"]
    nine = named(counters, "nine")
    nine["spec"]["sharedCounters"].append({"name": "gpu-8", "counters": {"x": {"value": "1"}}})
    dup_set = named(counters, "dup-set")
    dup_set["spec"]["sharedCounters"][1]["name"] = "gpu-0"
    bad_counter = named(counters, "bad-counter")
    bad_counter["spec"]["sharedCounters"][0]["counters"]["Memory_Slices"] = {"value": "8"}
    empty_set = named(counters, "empty-set")
    empty_set["spec"]["sharedCounters"][0]["counters"] = {}
    twice = named(devices, "twice")
    twice["spec"]["devices"][0]["consumesCounters"].append(
        copy.deepcopy(twice["spec"]["devices"][0]["consumesCounters"][0])
    )
    many = named(devices, "many")
    many["spec"]["devices"] += [
        {**copy.deepcopy(d), "name": f"extra-{i}"}
        for i, d in enumerate(devices["spec"]["devices"][:5])
    ]
    plain_many = named(devices, "plain-many")  # without counters 128 devices are allowed
    plain_many["spec"]["devices"] = [
        {k: v for k, v in d.items() if k != "consumesCounters"} for d in many["spec"]["devices"]
    ]
    no_set = named(devices, "no-set")
    no_set["spec"]["devices"][0]["consumesCounters"][0]["counterSet"] = ""
    groups = named(devices, "groups")
    groups["spec"]["devices"][0]["consumesCounters"][0]["compatibilityGroups"] = ["a", "b", "c"]
    same_group = named(devices, "same-group")
    same_group["spec"]["devices"][0]["consumesCounters"][0]["compatibilityGroups"] = ["a", "a"]
    partition = named(counters, "partition")
    partition["spec"]["partitionTypeAttribute"] = "gpu.nvidia.com/profile"
    unlabelled = named(devices, "unlabelled")
    unlabelled["spec"]["partitionTypeAttribute"] = "gpu.nvidia.com/profile"

    cases = [
        (both, "spec", "only one of `sharedCounters` or `devices` is allowed"),
        (nine, "spec.sharedCounters", "Too many: 9: must have at most 8 items"),
        (dup_set, "spec.sharedCounters[1]", 'Duplicate value: "gpu-0"'),
        (
            bad_counter,
            "spec.sharedCounters[0].counters[Memory_Slices]",
            "a lowercase RFC 1123 label",
        ),
        (empty_set, "spec.sharedCounters[0].counters", "Required value"),
        (twice, "spec.devices[0].consumesCounters[1]", 'Duplicate value: "gpu-0"'),
        (many, "spec.devices", "Too many: 65: must have at most 64 items"),
        (no_set, "spec.devices[0].consumesCounters[0].counterSet", "Required value"),
        (
            groups,
            "spec.devices[0].consumesCounters[0].compatibilityGroups",
            "Too many: 3: must have at most 2 items",
        ),
        (
            same_group,
            "spec.devices[0].consumesCounters[0].compatibilityGroups[1]",
            'Duplicate value: "a"',
        ),
        (
            partition,
            "spec.partitionTypeAttribute",
            "may only be set on a slice which declares devices that consume counters",
        ),
        # the whole GPU consumes counters but has no profile attribute
        (unlabelled, "spec.devices[0].attributes[gpu.nvidia.com/profile]", "must be set"),
    ]
    for body, field, text in cases:
        code, got = await api.post(SLICES, body)
        _refused(code, got, field, text)
        code, _ = await api.get(f"{SLICES}/{body['metadata']['name']}")
        assert code == 404, body["metadata"]["name"]
    code, got = await api.post(SLICES, plain_many)
    assert code == 201, got

    # What identifies the pool never changes.
    code, got = await api.post(SLICES, named(devices, "moving"))
    assert code == 201, got
    got["spec"]["nodeName"] = "elsewhere"
    code, bad = await api.put(f"{SLICES}/moving", got)
    _refused(code, bad, "spec.nodeName", "field is immutable")
