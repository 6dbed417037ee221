"""Simulated traffic: the annotation's rates become the kernel counters' shape."""

from __future__ import annotations

import pytest

from gpuyard.network import bandwidth, simtraffic
from gpuyard.network.metrics import AccountingCollector


def pod(name: str, traffic: str, phase: str = "Running", **ann: str) -> dict:
    return {
        "metadata": {
            "name": name,
            "namespace": "ns-a",
            "uid": f"u-{name}",
            "annotations": {simtraffic.ANNOTATION: traffic, **ann},
        },
        "status": {"phase": phase, "podIP": "10.64.0.5"},
    }


def test_rates_parse_and_bad_values_name_the_part() -> None:
    assert simtraffic.parse("internet=100Mbit, cluster=1Gbit") == {
        "internet": 100_000_000,
        "cluster": 1_000_000_000,
    }
    for bad, says in [
        ("web=1Gbit", "CLASS=RATE"),
        ("internet", "CLASS=RATE"),
        ("internet=fast", "not a bandwidth"),
        ("zone=1Gbit,zone=2Gbit", "twice"),
    ]:
        with pytest.raises(ValueError, match=says):
            simtraffic.parse(bad)


def test_counters_grow_at_the_rates_capped_by_the_egress_limit_and_go_with_the_pod() -> None:
    sim = simtraffic.SimTraffic()
    capped = pod("b", "internet=1Gbit", **{bandwidth.ANNOTATION: "200Mbit"})
    sim.observe([pod("a", "internet=80Mbit,cluster=8Gbit"), capped, pod("c", "x=1", "Running")], 0)
    sim.observe([pod("a", "internet=80Mbit,cluster=8Gbit"), capped], 5.0)
    got = {(c.pod.name, c.cls, c.direction): c for c in sim.read(10.0)}
    assert got[("a", "internet", "out")].bytes == 100_000_000  # 80 Mbit/s for 10 s
    assert got[("a", "cluster", "out")].bytes == 10_000_000_000
    assert got[("a", "internet", "out")].packets == 100_000_000 // simtraffic.PACKET + 1
    assert got[("a", "zone", "out")].bytes == 0 and got[("a", "internet", "in")].bytes == 0
    assert got[("b", "internet", "out")].bytes == 250_000_000  # shaped to 200 Mbit/s
    assert {k[0] for k in got} == {"a", "b"}  # c's annotation is wrong: no counters
    sim.observe([pod("a", "internet=80Mbit", "Succeeded"), capped], 12.0)
    assert {c.pod.name for c in sim.read(12.0)} == {"b"}

    # The same collector as the node agent's: same names and labels.
    fams = list(AccountingCollector(lambda: sim.read(12.0), lambda: {"ns-a": "a"}).collect())
    sample = next(s for s in fams[0].samples if s.labels["class"] == "internet")
    assert fams[0].name == "gpuyard_pod_network_bytes"
    assert sample.labels == {
        "namespace": "ns-a",
        "pod": "b",
        "team": "a",
        "class": "internet",
        "direction": "out",
    }
    assert sample.value == 300_000_000


async def test_a_node_agent_over_the_simulated_kernel_counts_its_own_nodes_pods(
    apiserver_inproc,
) -> None:
    """netd's own loop (as `gpuyard up` runs it per simulated node): only pods bound to its
    node get rules and counters, at their annotation's rates; a deleted pod's go."""
    import asyncio

    from gpuyard.kube.client import Client
    from gpuyard.kube.informer import Informer
    from gpuyard.kube.resources import PODS, TEAMS
    from gpuyard.network.agent import NetAgent

    client = Client.in_process(apiserver_inproc, component="netd")
    now = [100.0]
    engine = simtraffic.SimAccounting(clock=lambda: now[0])
    teams = Informer(client, TEAMS)  # shared, not started: the CRD is not installed here
    agent = NetAgent(client, "n1", engine, teams=teams, watch_nodes=False, threaded=False)
    engine.pods = agent.pods
    assert agent.nodes is None
    await client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns-a"}})
    for i, (name, node) in enumerate((("mine", "n1"), ("other", "n2"))):
        meta = {k: v for k, v in pod(name, "internet=80Mbit")["metadata"].items() if k != "uid"}
        spec = {"nodeName": node, "containers": [{"name": "c", "image": "x"}]}
        await client.create({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec})
        status = {"phase": "Running", "podIP": f"10.64.0.{5 + i}"}
        await client.patch_status(PODS, name, {"status": status}, "ns-a")
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))

    async def until(cond) -> None:
        for _ in range(200):
            if cond():
                return
            await asyncio.sleep(0.02)
        raise AssertionError("not in time")

    try:
        await until(lambda: bool(engine.rules))
        assert {r.name for r in engine.rules.values()} == {"mine"}
        now[0] += 10
        got = {(c.pod.name, c.cls, c.direction): c.bytes for c in engine.read()}
        assert got[("mine", "internet", "out")] == 100_000_000  # 80 Mbit/s for 10 s
        assert {k[0] for k in got} == {"mine"}
        await client.delete(PODS, "mine", "ns-a", grace_period_seconds=0)
        await until(lambda: not engine.rules)
        assert engine.read() == []
    finally:
        stop.set()
        await task
        await client.close()


async def test_simulated_nodes_get_an_agent_each_that_goes_with_its_node(apiserver_inproc) -> None:
    """As a DaemonSet does: a simulated Node gets its agent (watching that node's pods),
    a Node that is not simulated gets none, and a deleted Node's agent stops."""
    import asyncio

    from gpuyard.cluster.simnetd import SIM_LABEL, SimNetd
    from gpuyard.kube.client import Client
    from gpuyard.kube.informer import Informer
    from gpuyard.kube.resources import NODES, TEAMS

    client = Client.in_process(apiserver_inproc, component="netd")
    nodes = Informer(client, NODES).start()
    stop = asyncio.Event()
    netd = SimNetd(client, nodes, Informer(client, TEAMS), stop)
    netd.start()

    async def until(cond) -> None:
        for _ in range(250):
            if cond():
                return
            await asyncio.sleep(0.02)
        raise AssertionError("not in time")

    try:
        for name, labels in (
            ("s1", {SIM_LABEL: "true"}),
            ("s2", {SIM_LABEL: "true"}),
            ("real", {}),
        ):
            node = {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": name, "labels": labels},
            }
            await client.create(node)
        await until(lambda: set(netd.agents) == {"s1", "s2"})
        await until(lambda: all(a.pods.has_synced for a in netd.agents.values()))
        assert {a.pods.field_selector for a in netd.agents.values()} == {
            "spec.nodeName=s1",
            "spec.nodeName=s2",
        }
        task = netd._tasks["s1"]
        await client.delete(NODES, "s1")
        await until(lambda: set(netd.agents) == {"s2"} and task.done())
        await asyncio.sleep(0.1)
        assert set(netd.agents) == {"s2"}  # the real node never got one
    finally:
        stop.set()
        await netd.stop()
        await nodes.stop()
        await client.close()
