"""What an agent wants in the kernel from the pods and nodes it sees, and its metrics."""

from prometheus_client import CollectorRegistry, generate_latest

from gpuyard.network import bandwidth
from gpuyard.network.desired import host_network_pods, pod_rules, ranges_for
from gpuyard.network.metrics import AccountingCollector
from gpuyard.network.nft import Count, PodRule


def node(name, zone, cidr):
    return {
        "metadata": {"name": name, "labels": {"topology.kubernetes.io/zone": zone}},
        "spec": {"podCIDR": cidr},
    }


def pod(name, ip, node="n1", limit=None, ns="team-a", phase="Running"):
    ann = {bandwidth.ANNOTATION: limit} if limit else {}
    return {
        "metadata": {"name": name, "namespace": ns, "uid": "u-" + name, "annotations": ann},
        "spec": {"nodeName": node},
        "status": {"podIP": ip, "phase": phase},
    }


def test_ranges_follow_the_zone_labels():
    nodes = [
        node("n1", "a", "10.1.1.0/24"),
        node("n2", "b", "10.2.0.0/24"),
        node("n3", "a", "10.1.3.0/24"),
    ]
    r = ranges_for(nodes[0], nodes, ["10.96.0.0/16"])
    assert r.node == ("10.1.1.0/24",) and r.zone == ("10.2.0.0/24",)
    assert r.classify("10.1.1.7") == "node" and r.classify("10.2.0.9") == "zone"
    assert r.classify("10.1.3.4") == "cluster" and r.classify("10.96.0.1") == "cluster"
    assert r.classify("8.8.8.8") == "internet"


def test_only_this_nodes_running_pods_and_stable_shaping_classes():
    pods = [
        pod("a", "10.1.1.2", limit="2Gbit"),
        pod("b", "10.1.1.3"),
        pod("c", "10.1.3.2", node="n3"),
        pod("d", "", limit="1Gbit"),
        pod("e", "10.1.1.5", phase="Succeeded"),
        pod("f", "10.1.1.6", limit="nonsense"),
    ]
    rules, shaping = pod_rules(pods, "n1")
    by = {r.name: r for r in rules}
    assert set(by) == {"a", "b", "f"}
    assert by["b"].tclass == 0 and by["f"].tclass == 0 and by["a"].tclass > 0
    assert shaping == {by["a"].tclass: 2_000_000_000}
    # A second limited pod gets another class; the first keeps its own.
    prev = {r.id: r for r in rules}
    rules2, shaping2 = pod_rules([*pods, pod("g", "10.1.1.7", limit="500Mbit")], "n1", prev)
    by2 = {r.name: r for r in rules2}
    assert by2["a"].tclass == by["a"].tclass and by2["g"].tclass not in (0, by["a"].tclass)
    assert shaping2 == {by["a"].tclass: 2_000_000_000, by2["g"].tclass: 500_000_000}


def test_metrics_carry_namespace_pod_team_class_direction():
    pr = PodRule("team-a", "a", "10.1.1.2", "u")
    reg = CollectorRegistry()
    reg.register(
        AccountingCollector(
            lambda: [Count(pr, "internet", "out", 3, 4500)], lambda: {"team-a": "alpha"}
        )
    )
    text = generate_latest(reg).decode()
    assert (
        'gpuyard_pod_network_bytes_total{class="internet",direction="out",namespace="team-a",pod="a",team="alpha"} 4500.0'
        in text
    )


def test_dual_stack_ranges_and_pods_are_accounted_by_class():
    """A dual-stack cluster: nodes carry an IPv4 and an IPv6 pod range (spec.podCIDRs),
    pods both addresses (status.podIPs); both families are classed alike."""

    def dual(name, zone, v4, v6):
        n = node(name, zone, v4)
        n["spec"]["podCIDRs"] = [v4, v6]
        return n

    nodes = [
        dual("n1", "a", "10.1.1.0/24", "fd00:1:1::/64"),
        dual("n2", "b", "10.2.0.0/24", "fd00:2::/64"),
        node("n3", "a", "10.1.3.0/24"),  # a node still IPv4-only
    ]
    r = ranges_for(nodes[0], nodes, ["10.96.0.0/16", "fd00:96::/108"])
    assert r.node == ("10.1.1.0/24", "fd00:1:1::/64")
    assert r.zone == ("10.2.0.0/24", "fd00:2::/64")
    assert r.classify("fd00:1:1::9") == "node" and r.classify("fd00:2::9") == "zone"
    assert r.classify("fd00:96::1") == "cluster" and r.classify("10.1.3.4") == "cluster"
    assert r.classify("2001:db8::1") == "internet"

    both = pod("a", "10.1.1.2")
    both["status"]["podIPs"] = [{"ip": "fd00:1:1:0::2"}, {"ip": "10.1.1.2"}]
    only6 = pod("b", "fd00:1:1::3")
    broken = pod("c", "not-an-address")
    rules, _ = pod_rules([both, only6, broken], "n1")
    by = {r.name: r for r in rules}
    assert set(by) == {"a", "b"}  # a bad address is no rule (nothing could match it)
    assert by["a"].ip == "10.1.1.2,fd00:1:1::2" and by["a"].addrs == ["10.1.1.2", "fd00:1:1::2"]
    assert by["b"].ip == "fd00:1:1::3"


def test_host_network_pods_get_no_rules():
    """A hostNetwork pod has the node's own address: rules for it would count the node's
    traffic (kubelet, other host pods) as the pod's, so it gets none."""
    host = pod("h", "10.255.0.1")
    host["spec"]["hostNetwork"] = True
    rules, _ = pod_rules([host, pod("a", "10.1.1.2")], "n1")
    assert [r.name for r in rules] == ["a"]
    elsewhere = pod("h2", "10.255.0.2", node="n2")
    elsewhere["spec"]["hostNetwork"] = True
    assert host_network_pods([host, elsewhere, pod("a", "10.1.1.2")], "n1") == [
        ("team-a", "h", "hostNetwork")
    ]
    # ... and /metrics says so, with its team.
    reg = CollectorRegistry()
    reg.register(
        AccountingCollector(
            list, lambda: {"team-a": "alpha"}, lambda: host_network_pods([host], "n1")
        )
    )
    assert (
        'gpuyard_pod_network_unaccounted{namespace="team-a",pod="h",reason="hostNetwork",team="alpha"} 1.0'
        in generate_latest(reg).decode()
    )
