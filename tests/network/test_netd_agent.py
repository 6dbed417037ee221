"""`gpuyard netd` as a process against `gpuyard apiserver`, applying rules in a lab netns:
it follows pods created and deleted through the API, counts their traffic on /metrics,
keeps the counters across a restart, and makes only watch-driven API requests."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8sconfig

from gpuyard import manifests
from gpuyard.network import bandwidth, rangesmap
from gpuyard.network.nft import NftAccounting
from gpuyard.network.shaping import Shaper

from . import netlab
from .test_kernel_accounting import send

WHY = netlab.missing()
pytestmark = pytest.mark.skipif(WHY is not None, reason=WHY or "")
NODES = {
    "node1": ("a", netlab.NODE1_PODS),
    "node3": ("a", netlab.NODE3_PODS),
    "node2": ("b", netlab.ZONE_B_PODS),
}


@pytest.fixture
def lab():
    lab = netlab.Lab()
    lab.up()
    yield lab
    lab.down()


def create_nodes(api: k8s.CoreV1Api) -> None:
    """The lab's nodes, and their pod ranges by zone in the ConfigMap `gpuyard controllers`
    publishes (netd watches no Node but its own)."""
    nodes = [
        {
            "metadata": {"name": name, "labels": {"topology.kubernetes.io/zone": zone}},
            "spec": {"podCIDR": cidr},
        }
        for name, (zone, cidr) in NODES.items()
    ]
    for n in nodes:
        api.create_node(n)
    api.create_namespace({"metadata": {"name": rangesmap.NAMESPACE}})
    api.create_namespaced_config_map(
        rangesmap.NAMESPACE,
        {"metadata": {"name": rangesmap.NAME}, "data": rangesmap.content(nodes)},
    )


def netd_kubeconfig(srv, tmp_path) -> str:
    """A kubeconfig for the install's netd ServiceAccount (its role from `gpuyard
    manifests`), so the agent runs with exactly the rights it has on a real cluster."""
    api_client = k8sconfig.new_client_from_config(srv.kubeconfig)
    core, rbac = k8s.CoreV1Api(api_client), k8s.RbacAuthorizationV1Api(api_client)
    if manifests.NAMESPACE not in {n.metadata.name for n in core.list_namespace().items}:
        core.create_namespace({"metadata": {"name": manifests.NAMESPACE}})
    for o in manifests.objects():
        if o["metadata"]["name"] != manifests.NETD:
            continue
        if o["kind"] == "ServiceAccount":
            core.create_namespaced_service_account(manifests.NAMESPACE, o)
        elif o["kind"] == "ClusterRole":
            rbac.create_cluster_role(o)
        elif o["kind"] == "ClusterRoleBinding":
            rbac.create_cluster_role_binding(o)
        elif o["kind"] == "Role":
            rbac.create_namespaced_role(manifests.NAMESPACE, o)
        elif o["kind"] == "RoleBinding":
            rbac.create_namespaced_role_binding(manifests.NAMESPACE, o)
    token = core.create_namespaced_service_account_token(
        manifests.NETD, manifests.NAMESPACE, {"spec": {"audiences": []}}
    ).status.token
    cfg = yaml.safe_load(open(srv.kubeconfig))
    for u in cfg["users"]:
        u["user"] = {"token": token}
    path = tmp_path / "netd.kubeconfig"
    path.write_text(yaml.safe_dump(cfg))
    path.chmod(0o600)
    return str(path)


def start_agent(
    srv, lab, kubeconfig: str | None = None, extra: tuple[str, ...] = ()
) -> tuple[subprocess.Popen, int]:
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpuyard", "netd", "--kubeconfig", kubeconfig or srv.kubeconfig]
        + ["--node", "node1", "--netns", lab.ns("n1"), "--metrics-port", "0"]
        + [
            "--metrics-address",
            "127.0.0.1",
            "--metrics-auth",
            "off",
            *extra,
        ],  # auth: test_metrics_auth
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    m = re.search(r"metrics on :(\d+)/metrics", line)
    assert m, line
    return proc, int(m.group(1))


def stop_agent(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def scrape(port: int) -> dict[tuple[str, ...], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r"gpuyard_pod_network_bytes_total\{(.*)\} (\S+)", line)
        if m:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
            key = (labels["pod"], labels["class"], labels["direction"], labels["team"])
            out[key] = float(m.group(2))
        m = re.match(r'gpuyard_kube_requests_total\{.*verb="(\w+)"\} (\S+)', line)
        if m:
            out[("requests", m.group(1))] = float(m.group(2))
    return out


def wait_for(fn, what: str, timeout: float = 15.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = fn()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def pods_seen(port: int) -> set[str]:
    return {k[0] for k in scrape(port) if k[0] != "requests"}


def test_agent_follows_pods_through_the_api_and_keeps_counters(apiserver, lab, capsys, tmp_path):
    api = k8s.CoreV1Api(k8sconfig.new_client_from_config(apiserver.kubeconfig))
    create_nodes(api)
    api.create_namespace({"metadata": {"name": "team-a"}})

    def make_pod(name: str, node: str, ip: str, host: bool = False) -> None:
        spec = {"nodeName": node, "containers": [{"name": "c", "image": "x"}]}
        api.create_namespaced_pod(
            "team-a", {"metadata": {"name": name}, "spec": {**spec, "hostNetwork": host}}
        )
        api.patch_namespaced_pod_status(
            name, "team-a", {"status": {"phase": "Running", "podIP": ip}}
        )

    # as the install's netd ServiceAccount: its role is all the agent needs
    as_netd = netd_kubeconfig(apiserver, tmp_path)
    agent, port = start_agent(apiserver, lab, as_netd)
    try:
        make_pod("elsewhere", "node2", "10.2.0.7")  # not this node's: never seen
        make_pod("host", "node1", "10.255.0.1", host=True)  # the node's own address
        # Made after the hostNetwork pod: the agent's one pod watch delivers it first, so
        # once pb's rules are in, the agent has seen it and reconciled with it.
        make_pod("pa", "node1", netlab.PODS["pa"])
        make_pod("pb", "node1", netlab.PODS["pb"])
        wait_for(lambda: pods_seen(port) == {"pa", "pb"}, "pa and pb on /metrics")
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
        assert (
            'gpuyard_pod_network_unaccounted{namespace="team-a",pod="host",reason="hostNetwork",team=""} 1.0'
            in text
        )
        owned = NftAccounting(netns=lab.ns("n1")).owned().values()
        assert {p.name for p in owned} == {"pa", "pb"}  # no rule for the hostNetwork pod
        nbytes = 3_000_000
        send(lab, "pa", "inet", netlab.TARGETS["internet"], nbytes)
        send(lab, "pa", "n2", netlab.TARGETS["zone"], nbytes)
        m = scrape(port)
        internet = m[("pa", "internet", "out", "")]
        assert nbytes <= internet <= nbytes * 1.01 + 20_000, internet
        assert nbytes <= m[("pa", "zone", "out", "")] <= nbytes * 1.01 + 20_000
        assert m[("pb", "internet", "out", "")] == 0

        api.delete_namespaced_pod("pb", "team-a", grace_period_seconds=0)
        wait_for(lambda: pods_seen(port) == {"pa"}, "pb gone from /metrics")
        table = NftAccounting(netns=lab.ns("n1"))
        assert {p.name for p in table.owned().values()} == {"pa"}  # no stale rule for pb

        stop_agent(agent)
        agent, port = start_agent(apiserver, lab, as_netd)
        # Synced again (both watches open) and reconciled: the kernel's counters are kept.
        # pods, its own Node and the ranges' ConfigMap
        wait_for(lambda: scrape(port).get(("requests", "watch")) == 3, "the agent's watches")
        time.sleep(0.5)
        assert pods_seen(port) == {"pa"}
        assert scrape(port)[("pa", "internet", "out", "")] == internet  # kept, not doubled

        # Idle, the agent only watches: its requests are the initial lists and watches.
        t0, r0 = time.monotonic(), scrape(port)
        time.sleep(5)
        r1 = scrape(port)
        reqs = {k[1]: r1[k] for k in r1 if k[0] == "requests"}
        assert set(reqs) <= {"list", "watch"}, reqs
        # a Team probe, then pods, its Node and the ConfigMap: a list and a watch each
        assert sum(reqs.values()) <= 7, reqs
        per_min = (
            (sum(reqs.values()) - sum(r0[k] for k in r0 if k[0] == "requests"))
            * 60
            / (time.monotonic() - t0)
        )
        with capsys.disabled():
            print(f"\nnetd idle API requests per minute: {per_min:.1f}; since start: {reqs}")
    finally:
        if agent.poll() is None:
            stop_agent(agent)


def test_agent_shapes_an_annotated_pods_internet_egress_under_iperf3(apiserver, lab):
    """netd with --uplink: a pod annotated 200Mbit sends a real TCP flow (iperf3) to the
    internet at its limit, by the agent's own counter; its in-cluster flow is not limited."""
    api = k8s.CoreV1Api(k8sconfig.new_client_from_config(apiserver.kubeconfig))
    create_nodes(api)
    api.create_namespace({"metadata": {"name": "team-a"}})
    api.create_namespaced_pod(
        "team-a",
        {
            "metadata": {"name": "pa", "annotations": {bandwidth.ANNOTATION: "200Mbit"}},
            "spec": {"nodeName": "node1", "containers": [{"name": "c", "image": "x"}]},
        },
    )
    api.patch_namespaced_pod_status(
        "pa", "team-a", {"status": {"phase": "Running", "podIP": netlab.PODS["pa"]}}
    )
    agent, port = start_agent(apiserver, lab, extra=("--uplink", "up0"))
    try:
        shaper = Shaper("up0", netns=lab.ns("n1"))
        wait_for(lambda: shaper.current() == {1: 200_000_000}, "the pod's class on the uplink")
        wait_for(lambda: pods_seen(port) == {"pa"}, "pa on /metrics")
        c0 = scrape(port)[("pa", "internet", "out", "")]
        end = netlab.iperf3(lab, "pa", "inet", netlab.TARGETS["internet"], 3, port=5301)
        counted = scrape(port)[("pa", "internet", "out", "")] - c0
        # The agent counts IP bytes (headers too) of every packet that left: at least what
        # the far end received (iperf3's sender counts what sat in its socket buffer too),
        # and within 10% of the limit over the flow.
        got, secs = end["sum_received"]["bytes"], end["sum_received"]["seconds"]
        assert got <= counted <= got * 1.05 + 20_000
        rate = counted * 8 / secs
        assert abs(rate - 200e6) <= 0.10 * 200e6, f"{rate / 1e6:.0f} Mbit/s against 200"
        end = netlab.iperf3(lab, "pa", "n3", netlab.TARGETS["cluster"], 2, port=5302)
        assert end["sum_received"]["bits_per_second"] > 3 * 200e6  # in-cluster: unshaped

        api.patch_namespaced_pod(
            "pa", "team-a", {"metadata": {"annotations": {bandwidth.ANNOTATION: None}}}
        )
        wait_for(lambda: shaper.current() == {}, "the class removed with the annotation")
        end = netlab.iperf3(lab, "pa", "inet", netlab.TARGETS["internet"], 2, port=5303)
        assert end["sum_received"]["bits_per_second"] > 3 * 200e6
        assert agent.poll() is None
    finally:
        if agent.poll() is None:
            stop_agent(agent)
