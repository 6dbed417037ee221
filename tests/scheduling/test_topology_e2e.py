"""Topology-aware gangs on `gpuyard up`, through kubectl and YAML a user of those
projects would write: an upstream PodGroup requiring one rack runs inside one rack, or
waits with a reason naming the rack level and the largest free rack; a Job annotated
for Kueue's topology-aware scheduling and a Volcano PodGroup with networkTopology are
honoured the same way."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from gpuyard.cluster.testing import ClusterProcess

# 12 nodes, racks of 4: rack-0000 (zone-a), rack-0001 (zone-b), rack-0002 (zone-c)
ARGS = ["--components", "scheduler", "--rack-size", "4"]

UPSTREAM = """
apiVersion: scheduling.k8s.io/v1beta1
kind: PodGroup
metadata: {name: %(name)s}
spec:
  schedulingPolicy: {gang: {minCount: %(n)d}}
  schedulingConstraints:
    topology:
    - key: gpuyard.io/rack
"""

UPSTREAM_POD = """
apiVersion: v1
kind: Pod
metadata: {name: %(name)s-%(i)d}
spec:
  schedulingGroup: {podGroupName: %(name)s}
  containers:
  - name: trainer
    image: trainer:latest
    resources: {limits: {nvidia.com/gpu: 8}}
"""

KUEUE_JOB = """
apiVersion: scheduling.x-k8s.io/v1alpha1
kind: PodGroup
metadata: {name: tas}
spec: {minMember: 4}
---
apiVersion: batch/v1
kind: Job
metadata: {name: tas}
spec:
  parallelism: 4
  completions: 4
  completionMode: Indexed
  template:
    metadata:
      labels: {scheduling.x-k8s.io/pod-group: tas}
      annotations:
        kueue.x-k8s.io/podset-required-topology: topology.kubernetes.io/zone
        kueue.x-k8s.io/podset-slice-required-topology: gpuyard.io/rack
        kueue.x-k8s.io/podset-slice-size: "2"
        gpuyard.io/sim-duration: "3600"
    spec:
      restartPolicy: Never
      containers:
      - name: worker
        image: trainer:latest
        resources: {limits: {nvidia.com/gpu: 8}}
"""

BUSY = """
apiVersion: v1
kind: Pod
metadata: {name: busy-%(i)d}
spec:
  nodeName: gpu-node-%(i)04d
  containers:
  - name: other
    image: other:latest
    resources: {limits: {nvidia.com/gpu: 8}}
"""

VOLCANO_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: podgroups.scheduling.volcano.sh}
spec:
  group: scheduling.volcano.sh
  names: {kind: PodGroup, plural: podgroups, singular: podgroup, shortNames: [vpg]}
  scope: Namespaced
  versions:
  - name: v1beta1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              minMember: {type: integer}
              queue: {type: string}
              priorityClassName: {type: string}
              minResources: {type: object, x-kubernetes-preserve-unknown-fields: true}
              networkTopology:
                type: object
                properties:
                  mode: {type: string, enum: [hard, soft]}
                  highestTierAllowed: {type: integer}
          status:
            type: object
            x-kubernetes-preserve-unknown-fields: true
"""

VOLCANO = """
apiVersion: scheduling.volcano.sh/v1beta1
kind: PodGroup
metadata: {name: %(name)s}
spec:
  minMember: %(n)d
  queue: default
  networkTopology: {mode: hard, highestTierAllowed: 1}
"""

VOLCANO_POD = """
apiVersion: v1
kind: Pod
metadata:
  name: %(name)s-%(i)d
  annotations: {scheduling.k8s.io/group-name: %(name)s}
spec:
  containers:
  - name: worker
    image: trainer:latest
    resources: {limits: {nvidia.com/gpu: 8}}
"""


def apply(c: ClusterProcess, text: str) -> None:
    c.kubectl("apply", "-f", "-", input=text)


def pods(c: ClusterProcess, prefix: str) -> dict[str, dict[str, Any]]:
    items = json.loads(c.kubectl("get", "pods", "-o", "json").stdout)["items"]
    return {p["metadata"]["name"]: p for p in items if p["metadata"]["name"].startswith(prefix)}


def labels_of_nodes(c: ClusterProcess) -> dict[str, dict[str, str]]:
    items = json.loads(c.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    return {n["metadata"]["name"]: n["metadata"]["labels"] for n in items}


def wait(fn: Callable[[], Any], timeout: float = 40) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.3)


def placed(c: ClusterProcess, prefix: str, n: int) -> dict[str, str] | None:
    got = {k: p["spec"].get("nodeName") or "" for k, p in pods(c, prefix).items()}
    return got if len(got) == n and all(got.values()) else None


@pytest.mark.slow
def test_a_gang_requiring_one_rack_runs_inside_one_or_waits_saying_why(
    make_cluster: Callable[..., ClusterProcess],
) -> None:
    c = make_cluster(nodes=12, args=ARGS)
    # one node of rack-0000 is busy: three racks free, one with 3 nodes
    apply(c, BUSY % {"i": 0})
    wait(lambda: placed(c, "busy-", 1))
    busy_node = placed(c, "busy-", 1)["busy-0"]  # type: ignore[index]
    nodes = labels_of_nodes(c)
    busy_rack = nodes[busy_node]["gpuyard.io/rack"]

    apply(c, UPSTREAM % {"name": "train", "n": 4})
    for i in range(4):
        apply(c, UPSTREAM_POD % {"name": "train", "i": i})
    got = wait(lambda: placed(c, "train-", 4))
    racks = {nodes[n]["gpuyard.io/rack"] for n in got.values()}
    assert len(racks) == 1 and busy_rack not in racks, (racks, busy_rack)
    # every node of the rack it took is busy now; 7 nodes are free, at most 4 in a rack
    apply(c, UPSTREAM % {"name": "wide", "n": 5})
    for i in range(5):
        apply(c, UPSTREAM_POD % {"name": "wide", "i": i})

    def reason() -> str | None:
        pg = json.loads(
            c.kubectl("get", "podgroups.scheduling.k8s.io", "wide", "-o", "json").stdout
        )
        for cond in (pg.get("status") or {}).get("conditions") or []:
            if cond["type"] == "PodGroupInitiallyScheduled" and "inside one" in cond["message"]:
                return str(cond["reason"]) + ": " + str(cond["message"])
        return None

    msg = wait(reason)
    assert msg.startswith(
        "Unschedulable: gang wide needs 5 pods at once; must fit inside one "
        "gpuyard.io/rack: the largest free gpuyard.io/rack, "
    ), msg
    assert "holds 4 of its 5 pods" in msg
    time.sleep(1.0)
    assert not any(p["spec"].get("nodeName") for p in pods(c, "wide-").values())
    events = c.kubectl(
        "get", "events", "--field-selector", "involvedObject.name=wide", "-o", "json"
    ).stdout
    assert "must fit inside one gpuyard.io/rack" in events


@pytest.mark.slow
def test_kueue_annotated_job_and_volcano_podgroup_are_honoured(
    make_cluster: Callable[..., ClusterProcess],
) -> None:
    # 18 nodes, racks of 3 (node i in rack i // 3), two racks a zone:
    # zone-a: rack-0000, rack-0003; zone-b: rack-0001, rack-0004; zone-c: rack-0002, rack-0005
    c = make_cluster(nodes=18, args=["--components", "scheduler,workloads", "--rack-size", "3"])
    nodes = labels_of_nodes(c)
    # busy: two nodes of rack-0000 and one of rack-0003 (zone-a: 3 free), two of
    # rack-0002 (zone-c: 4 free, but only one rack with 2 or more)
    for i in (0, 1, 9, 6, 7):
        apply(c, BUSY % {"i": i})
    wait(lambda: placed(c, "busy-", 5))
    # Kueue TAS: the Job's 4 pods inside one zone, each slice of 2 inside one rack.
    # zone-c is the tightest zone by count but cannot hold two slices of 2: the job
    # goes to zone-b, a slice in each of its racks.
    apply(c, KUEUE_JOB)
    got = wait(lambda: placed(c, "tas-", 4))
    by_index: dict[int, str] = {}
    for name, p in pods(c, "tas-").items():
        by_index[int(p["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"])] = got[
            name
        ]
    zones = {nodes[n]["topology.kubernetes.io/zone"] for n in got.values()}
    assert zones == {"zone-b"}, got
    for first in (0, 2):
        a, b = by_index[first], by_index[first + 1]
        assert nodes[a]["gpuyard.io/rack"] == nodes[b]["gpuyard.io/rack"], by_index

    # Volcano: its CRD installed, a PodGroup with networkTopology hard at tier 1 (the
    # rack). Only rack-0005 has 3 free nodes now.
    apply(c, VOLCANO_CRD)
    wait(
        lambda: (
            "podgroups" in c.kubectl("api-resources", "--api-group=scheduling.volcano.sh").stdout
        )
    )
    apply(c, VOLCANO % {"name": "vc", "n": 3})
    for i in range(3):
        apply(c, VOLCANO_POD % {"name": "vc", "i": i})
    got = wait(lambda: placed(c, "vc-", 3))
    assert {nodes[n]["gpuyard.io/rack"] for n in got.values()} == {"rack-0005"}, got

    def phase() -> str | None:
        pg = json.loads(
            c.kubectl("get", "podgroups.scheduling.volcano.sh", "vc", "-o", "json").stdout
        )
        st = pg.get("status") or {}
        return st.get("phase") if st.get("running") == 3 else None

    assert wait(phase) == "Running"
    # a Volcano gang of 3 that must fit one rack: 6 nodes are free, at most 2 in a
    # rack (rack-0003)
    apply(c, VOLCANO % {"name": "trio", "n": 3})
    for i in range(3):
        apply(c, VOLCANO_POD % {"name": "trio", "i": i})

    def waiting() -> str | None:
        out = c.kubectl(
            "get", "events", "--field-selector", "involvedObject.name=trio", "-o", "json"
        ).stdout
        return out if "must fit inside one gpuyard.io/rack" in out else None

    assert "the largest free gpuyard.io/rack, rack-0003, holds 2 of its 3 pods" in wait(waiting)
    assert not any(p["spec"].get("nodeName") for p in pods(c, "trio-").values())


WORKLOAD = """
apiVersion: scheduling.k8s.io/v1beta1
kind: Workload
metadata: {name: trainer}
spec:
  podGroupTemplates:
  - name: workers
    schedulingPolicy: {gang: {minCount: 3}}
    schedulingConstraints:
      topology:
      - key: gpuyard.io/rack
---
apiVersion: scheduling.k8s.io/v1beta1
kind: PodGroup
metadata: {name: %(name)s}
spec:
  workloadRef: {workloadName: trainer, templateName: workers}
  schedulingPolicy: {gang: {minCount: %(n)d}}
"""


@pytest.mark.slow
def test_a_podgroup_made_from_a_workload_template_keeps_its_topology(
    make_cluster: Callable[..., ClusterProcess],
) -> None:
    c = make_cluster(nodes=8, args=ARGS)  # racks of 4
    nodes = labels_of_nodes(c)
    for i in (0, 1, 4):  # rack-0000 has 2 free nodes, rack-0001 3
        apply(c, BUSY % {"i": i})
    wait(lambda: placed(c, "busy-", 3))
    # 4 pods fit the 5 free nodes, but not one rack: the template says one rack
    apply(c, WORKLOAD % {"name": "w4", "n": 4})
    for i in range(4):
        apply(c, UPSTREAM_POD % {"name": "w4", "i": i})

    def reason() -> str | None:
        out = c.kubectl(
            "get", "events", "--field-selector", "involvedObject.name=w4", "-o", "json"
        ).stdout
        return out if "must fit inside one gpuyard.io/rack" in out else None

    assert "the largest free gpuyard.io/rack, rack-0001, holds 3 of its 4 pods" in wait(reason)
    assert not any(p["spec"].get("nodeName") for p in pods(c, "w4-").values())
    # a gang of 3 from the same template fits rack-0001
    apply(c, WORKLOAD % {"name": "w3", "n": 3})
    for i in range(3):
        apply(c, UPSTREAM_POD % {"name": "w3", "i": i})
    got = wait(lambda: placed(c, "w3-", 3))
    assert {nodes[n]["gpuyard.io/rack"] for n in got.values()} == {"rack-0001"}


@pytest.mark.slow
def test_a_failed_nodes_replacement_comes_from_the_gangs_rack(
    make_cluster: Callable[..., ClusterProcess],
) -> None:
    c = make_cluster(nodes=8, args=ARGS)  # racks of 4: rack-0000 (zone-a), rack-0001 (zone-b)
    nodes = labels_of_nodes(c)
    plain = UPSTREAM.replace(
        "  schedulingConstraints:\n    topology:\n    - key: gpuyard.io/rack\n", ""
    )
    apply(c, plain % {"name": "g", "n": 3})
    for i in range(3):
        apply(c, UPSTREAM_POD % {"name": "g", "i": i})
    got = wait(lambda: placed(c, "g-", 3))
    (rack,) = {nodes[n]["gpuyard.io/rack"] for n in got.values()}
    # one member's node goes down; its controller (here: the test) makes a replacement.
    # The rack has one free node, the other rack four: soft packing alone would pick
    # the other rack; the gang's rack wins.
    c.fault("node-down", got["g-0"])
    apply(c, UPSTREAM_POD % {"name": "g", "i": 3})
    new = wait(lambda: (placed(c, "g-3", 1) or {}).get("g-3"))
    assert nodes[new]["gpuyard.io/rack"] == rack and new != got["g-0"], (new, got)
