"""`gpuyard up`: simulated pods get addresses from their node's pod range, and their
gpuyard.io/sim-traffic shows as gpuyard_pod_network_bytes_total on the cluster's /metrics,
counted by a netd agent per simulated node that reads only its own node's pods."""

from __future__ import annotations

import ipaddress
import json
import re
import time
import urllib.parse
import urllib.request

from gpuyard.cluster.testing import wait_for

POD = """
apiVersion: v1
kind: Pod
metadata:
  name: talker
  namespace: default
  annotations:
    gpuyard.io/sim-traffic: internet=80Mbit,cluster=800Mbit
    gpuyard.io/internet-egress-bandwidth: 40Mbit
spec:
  containers: [{name: c, image: busybox}]
"""


def counters(url: str) -> dict[tuple[str, str, str], float]:
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    out = {}
    for m in re.finditer(r"^gpuyard_pod_network_bytes_total\{(.*)\} (\S+)$", text, re.M):
        lab = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        out[(lab["pod"], lab["class"], lab["direction"])] = float(m.group(2))
    return out


def test_sim_pod_ip_in_node_range_and_traffic_counted(cluster) -> None:
    assert cluster.metrics_url
    cluster.kubectl("apply", "-f", "-", input=POD)

    def running():
        p = json.loads(cluster.kubectl("get", "pod", "talker", "-o", "json").stdout)
        return p if p["status"].get("podIP") and p["status"].get("phase") == "Running" else None

    pod = wait_for(running, 30, "talker running")
    node = json.loads(cluster.kubectl("get", "node", pod["spec"]["nodeName"], "-o", "json").stdout)
    assert ipaddress.ip_address(pod["status"]["podIP"]) in ipaddress.ip_network(
        node["spec"]["podCIDR"]
    )
    c0 = wait_for(lambda: counters(cluster.metrics_url), 10, "talker's counters")
    t0 = time.monotonic()
    time.sleep(2)
    c1 = counters(cluster.metrics_url)
    dt = time.monotonic() - t0
    internet = c1[("talker", "internet", "out")] - c0[("talker", "internet", "out")]
    cluster_bytes = c1[("talker", "cluster", "out")] - c0[("talker", "cluster", "out")]
    # internet shaped to its 40Mbit limit; in-cluster at its own 800Mbit
    assert 0.8 * 5e6 * dt <= internet <= 1.2 * 5e6 * dt, internet
    assert 0.8 * 1e8 * dt <= cluster_bytes <= 1.2 * 1e8 * dt, cluster_bytes

    cluster.kubectl("delete", "pod", "talker", "--wait=false")
    wait_for(lambda: not any(k[0] == "talker" for k in counters(cluster.metrics_url)), 30, "gone")


def netd_requests(cluster) -> list[dict]:
    """The audit log's requests from the netd agents' user agent."""
    out = []
    for line in (cluster.data_dir / "audit.log").read_text().splitlines():
        ev = json.loads(line)
        if ev.get("userAgent", "").startswith("gpuyard-netd/"):
            out.append(ev)
    return out


def test_one_netd_agent_per_node_reads_only_its_node(cluster) -> None:
    """As the DaemonSet's agents do: each node's agent lists and watches the pods with a
    field selector naming its own node, as the netd ServiceAccount, and writes nothing."""
    nodes = set(cluster.kubectl("get", "nodes", "-o", "name").stdout.split())
    nodes = {n.removeprefix("node/") for n in nodes}
    assert len(nodes) == 4

    def pod_reads():
        seen: dict[str, set[str]] = {}
        for ev in netd_requests(cluster):
            if (ev.get("objectRef") or {}).get("resource") != "pods":
                continue
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(ev["requestURI"]).query)
            (selector,) = query["fieldSelector"]  # never a pods read of the whole cluster
            assert selector.startswith("spec.nodeName="), selector
            seen.setdefault(selector.removeprefix("spec.nodeName="), set()).add(ev["verb"])
        return seen if all(seen.get(n) == {"list", "watch"} for n in nodes) else None

    seen = wait_for(pod_reads, 30, "a list and a watch of its own pods by each node's agent")
    assert set(seen) == nodes
    events = netd_requests(cluster)
    assert {ev["user"]["username"] for ev in events} == {
        "system:serviceaccount:gpuyard-system:gpuyard-netd"
    }
    # Reads only (its access reviews are questions, not writes), and no nodes watch:
    # the simulated kernel classes traffic by annotation, not by the nodes' ranges.
    for ev in events:
        resource = ev["objectRef"]["resource"]
        assert ev["verb"] in ("list", "watch") or resource == "selfsubjectaccessreviews", ev
        assert resource in ("pods", "teams", "selfsubjectaccessreviews"), ev


TEAM_PODS = """
apiVersion: v1
kind: Namespace
metadata: {name: ml}
---
apiVersion: gpuyard.io/v1alpha1
kind: Team
metadata: {name: research}
# Three of the four nodes: pod "other" (no team) needs the shared pool's one.
spec: {capacity: {gpu: 3}, namespaces: [ml]}
---
apiVersion: v1
kind: Pod
metadata:
  name: big
  namespace: ml
  annotations: {gpuyard.io/sim-traffic: "internet=400Mbit"}
spec:
  containers: [{name: c, image: busybox}]
---
apiVersion: v1
kind: Pod
metadata:
  name: small
  namespace: ml
  annotations: {gpuyard.io/sim-traffic: "internet=8Mbit,cluster=2Gbit"}
spec:
  containers: [{name: c, image: busybox}]
---
apiVersion: v1
kind: Pod
metadata:
  name: hostnet
  namespace: ml
  annotations: {gpuyard.io/sim-traffic: "internet=300Mbit"}
spec:
  hostNetwork: true
  containers: [{name: c, image: busybox}]
---
apiVersion: v1
kind: Pod
metadata:
  name: other
  namespace: default
  annotations: {gpuyard.io/sim-traffic: "internet=100Mbit"}
spec:
  containers: [{name: c, image: busybox}]
"""


def test_network_top_through_the_cli(cluster) -> None:
    cluster.kubectl("apply", "-f", "-", input=TEAM_PODS)
    for ns, pod in (("ml", "big"), ("ml", "small"), ("ml", "hostnet"), ("default", "other")):
        cluster.kubectl(
            "wait", "-n", ns, "--for=jsonpath={.status.phase}=Running", f"pod/{pod}",
            "--timeout=60s", timeout=90,
        )  # fmt: skip

    def top(*args: str) -> dict:
        r = cluster.gpuyard("network", "top", "--window", "1", *args)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    doc = top("-n", "ml", "-o", "json")
    items = doc["items"]
    assert [i["pod"] for i in items] == ["big", "small"]  # by internet egress, largest first
    # A hostNetwork pod has the node's address: named as not counted, never a row.
    assert doc["unaccounted"] == [
        {"namespace": "ml", "pod": "hostnet", "team": "research", "reason": "hostNetwork"}
    ]
    assert top("-n", "default", "-o", "json")["unaccounted"] == []
    assert 0.8 * 4e8 <= items[0]["internetBitsPerSecond"] <= 1.2 * 4e8, items
    items = top("-n", "ml", "--sort-by", "cluster", "-o", "json")["items"]
    assert [i["pod"] for i in items] == ["small", "big"]
    by_ns = {i["namespace"]: i for i in top("-A", "--by", "namespace", "-o", "json")["items"]}
    assert set(by_ns) == {"ml", "default"}
    assert 0.8 * 4.08e8 <= by_ns["ml"]["internetBitsPerSecond"] <= 1.2 * 4.08e8
    # The Team's namespaces carry its name: per pod, and summed per team.
    assert {i["pod"]: i["team"] for i in top("-A", "-o", "json")["items"]} == {
        "big": "research",
        "small": "research",
        "other": "",
    }
    by_team = {i["team"]: i for i in top("-A", "--by", "team", "-o", "json")["items"]}
    assert set(by_team) == {"research", ""}
    assert 0.8 * 4.08e8 <= by_team["research"]["internetBitsPerSecond"] <= 1.2 * 4.08e8
    r = cluster.gpuyard("network", "top", "-A", "--window", "1")
    assert "Not counted per pod (hostNetwork" in r.stderr and "ml/hostnet" in r.stderr
    table = r.stdout.splitlines()
    assert table[0].split()[:3] == ["NAMESPACE", "POD", "TEAM"]
    assert [line.split()[1:3] for line in table[1:]] == [
        ["big", "research"],
        ["other", "-"],
        ["small", "research"],
    ]
