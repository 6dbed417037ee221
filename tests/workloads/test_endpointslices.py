"""EndpointSlices for Services on `gpuyard up`: `kubectl expose` gives a Service whose
slice lists the ready pods it selects (IP, conditions, node, zone, pod reference) and
follows scaling; named target ports resolve on the pods; a headless Service of a
StatefulSet names each pod's hostname; a Service selecting nothing has one empty slice;
slices (and the v1 Endpoints kept beside them) go with their Service. Read with kubectl
and the official client."""

from __future__ import annotations

import json
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8sconfig

from gpuyard.cluster.testing import ClusterProcess, wait_for


def slices(c: ClusterProcess, svc: str) -> list[dict[str, Any]]:
    out = c.kubectl(
        "get", "endpointslices", "-l", f"kubernetes.io/service-name={svc}", "-o", "json"
    ).stdout
    return json.loads(out)["items"]  # type: ignore[no-any-return]


def ready_ips(c: ClusterProcess, svc: str) -> list[str]:
    return sorted(
        ep["addresses"][0]
        for s in slices(c, svc)
        for ep in s.get("endpoints") or []
        if ep["conditions"]["ready"]
    )


def pods(c: ClusterProcess, selector: str) -> list[dict[str, Any]]:
    out = c.kubectl("get", "pods", "-l", selector, "-o", "json").stdout
    return [p for p in json.loads(out)["items"] if p["status"].get("phase") == "Running"]


def test_exposed_deployment_has_a_slice_of_its_ready_pods(cluster: ClusterProcess) -> None:
    cluster.kubectl("create", "deployment", "web", "--image=nginx", "--replicas=3", "--port=80")
    cluster.kubectl("expose", "deployment", "web", "--port=8080", "--target-port=80")
    svc = json.loads(cluster.kubectl("get", "svc", "web", "-o", "json").stdout)
    assert svc["spec"]["clusterIP"]
    running = wait_for(lambda: len(pods(cluster, "app=web")) == 3 and pods(cluster, "app=web"))
    ips = sorted(p["status"]["podIP"] for p in running)
    wait_for(lambda: ready_ips(cluster, "web") == ips, what="the slice to list the 3 pods")

    api = k8s.DiscoveryV1Api(k8sconfig.new_client_from_config(config_file=cluster.kubeconfig))
    (sl,) = api.list_namespaced_endpoint_slice(
        "default", label_selector="kubernetes.io/service-name=web"
    ).items
    assert sl.address_type == "IPv4"
    assert sl.metadata.labels["endpointslice.kubernetes.io/managed-by"] == (
        "endpointslice-controller.k8s.io"
    )
    (owner,) = sl.metadata.owner_references
    assert (owner.kind, owner.name, owner.uid) == ("Service", "web", svc["metadata"]["uid"])
    assert [(p.port, p.protocol) for p in sl.ports] == [(80, "TCP")]
    by_pod = {p["metadata"]["name"]: p for p in running}
    nodes = {
        n["metadata"]["name"]: n
        for n in json.loads(cluster.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    }
    for ep in sl.endpoints:
        pod = by_pod[ep.target_ref.name]
        assert ep.addresses == [pod["status"]["podIP"]]
        assert ep.target_ref.kind == "Pod" and ep.target_ref.uid == pod["metadata"]["uid"]
        assert ep.node_name == pod["spec"]["nodeName"]
        assert ep.zone == nodes[ep.node_name]["metadata"]["labels"]["topology.kubernetes.io/zone"]
        assert (ep.conditions.ready, ep.conditions.serving, ep.conditions.terminating) == (
            True,
            True,
            False,
        )
    described = cluster.kubectl("describe", "service", "web").stdout
    assert all(f"{ip}:80" in described for ip in ips)

    # the v1 Endpoints say the same, for the tools that still read them
    eps = json.loads(cluster.kubectl("get", "endpoints", "web", "-o", "json").stdout)
    (subset,) = eps["subsets"]
    assert sorted(a["ip"] for a in subset["addresses"]) == ips
    ports = [(p.get("name", ""), p["port"], p["protocol"]) for p in subset["ports"]]
    assert ports == [("", 80, "TCP")]
    assert {a["targetRef"]["name"] for a in subset["addresses"]} == set(by_pod)

    cluster.kubectl("scale", "deployment", "web", "--replicas=1")
    wait_for(lambda: len(ready_ips(cluster, "web")) == 1, what="the slice to follow the scale")
    assert len(slices(cluster, "web")) == 1
    wait_for(
        lambda: (
            len(
                json.loads(cluster.kubectl("get", "endpoints", "web", "-o", "json").stdout)[
                    "subsets"
                ][0]["addresses"]
            )
            == 1
        ),
        what="the Endpoints to follow the scale",
    )
    cluster.kubectl("delete", "service", "web")
    wait_for(lambda: slices(cluster, "web") == [], what="the slice to go with its Service")
    wait_for(
        lambda: cluster.kubectl("get", "endpoints", "web", check=False).returncode != 0,
        what="the Endpoints to go with the Service",
    )


def test_named_ports_headless_hostnames_and_empty_services(cluster: ClusterProcess) -> None:
    sts = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "db"},
        "spec": {
            "replicas": 2,
            "serviceName": "db",
            "selector": {"matchLabels": {"app": "db"}},
            "template": {
                "metadata": {"labels": {"app": "db"}},
                "spec": {
                    "containers": [
                        {
                            "name": "pg",
                            "image": "postgres",
                            "ports": [{"name": "sql", "containerPort": 5432}],
                        }
                    ]
                },
            },
        },
    }
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "db"},
        "spec": {
            "clusterIP": "None",
            "selector": {"app": "db"},
            "ports": [{"name": "sql", "port": 5432, "targetPort": "sql"}],
        },
    }
    empty = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "nobody"},
        "spec": {"selector": {"app": "none"}, "ports": [{"port": 80}]},
    }
    for body in (sts, svc, empty):
        cluster.kubectl("create", "-f", "-", input=json.dumps(body))
    wait_for(lambda: len(ready_ips(cluster, "db")) == 2, timeout=60, what="both db pods")
    (sl,) = slices(cluster, "db")
    assert sl["ports"] == [{"name": "sql", "port": 5432, "protocol": "TCP"}]
    assert sorted(ep["hostname"] for ep in sl["endpoints"]) == ["db-0", "db-1"]
    (none,) = wait_for(lambda: slices(cluster, "nobody"), what="the empty Service's slice")
    assert not none.get("endpoints")
