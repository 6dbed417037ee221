"""Kernel accounting in real network namespaces: counters match the bytes on the wire."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gpuyard.network.classes import Ranges, join_ips
from gpuyard.network.nft import NftAccounting, PodRule

from . import netlab

WHY = netlab.missing()
pytestmark = pytest.mark.skipif(WHY is not None, reason=WHY or "")
TRAFFIC = str(Path(__file__).with_name("traffic.py"))


@pytest.fixture
def lab():
    lab = netlab.Lab()
    lab.up()
    yield lab
    lab.down()
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert lab.p not in left


def ranges() -> Ranges:
    return Ranges.of(
        node=[netlab.NODE1_PODS, netlab.NODE1_PODS6],
        zone=[netlab.ZONE_B_PODS, netlab.ZONE_B_PODS6],
        cluster=[netlab.NODE1_PODS, netlab.NODE3_PODS, netlab.ZONE_B_PODS, netlab.SERVICES]
        + [netlab.NODE1_PODS6, netlab.NODE3_PODS6, netlab.ZONE_B_PODS6, netlab.SERVICES6],
    )


def pods(dual_stack: bool = False) -> list[PodRule]:
    return [
        PodRule(
            "team-a",
            name,
            join_ips([ip, netlab.PODS6[name]] if dual_stack else [ip]),
            uid=f"uid-{name}",
        )
        for name, ip in netlab.PODS.items()
    ]


def send(
    lab: netlab.Lab, src: str, dst_ns: str, addr: str, nbytes: int, port: int = 5201, bind: str = ""
) -> float:
    """Send ``nbytes`` over TCP from namespace ``src`` to ``addr``; the seconds it took."""
    srv = lab.popen(
        dst_ns, sys.executable, TRAFFIC, "serve", addr, str(port), stdout=subprocess.PIPE, text=True
    )
    try:
        assert srv.stdout is not None
        assert srv.stdout.readline().strip() == "ready"
        r = lab.run(
            src,
            sys.executable,
            TRAFFIC,
            "send",
            addr,
            str(port),
            str(nbytes),
            *([bind] if bind else []),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
        assert int(srv.stdout.readline()) == nbytes
        return float(r.stdout.split()[1])
    finally:
        srv.kill()
        srv.wait()


def counts(acc: NftAccounting) -> dict[tuple[str, str, str], tuple[int, int]]:
    return {(c.pod.name, c.direction, c.cls): (c.bytes, c.packets) for c in acc.read()}


DEST_NS = {"node": "pb", "cluster": "n3", "zone": "n2", "internet": "inet"}


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_every_class_counts_the_bytes_on_the_wire(lab, family):
    """IPv4 pods, and dual-stack pods sending over IPv6: each class's counters match what
    the pod put on (and took off) its veth within 1%."""
    v6 = family == "ipv6"
    targets, mine = (netlab.TARGETS6, netlab.PODS6) if v6 else (netlab.TARGETS, netlab.PODS)
    acc = NftAccounting(netns=lab.ns("n1"))
    acc.ensure(ranges())
    acc.sync(pods(dual_stack=v6))
    nbytes = 4_000_000
    for cls, addr in targets.items():
        before = lab.link_stats("pa", "eth0")
        c0 = counts(acc)
        send(lab, "pa", DEST_NS[cls], addr, nbytes)  # pa sends: counted out
        send(lab, DEST_NS[cls], "pa", mine["pa"], nbytes, port=5202, bind=addr)  # pa receives: in
        after = lab.link_stats("pa", "eth0")
        c1 = counts(acc)
        # What pa put on its veth (IP bytes: the frame less its 14-byte Ethernet header).
        wire_out = (after["tx_bytes"] - before["tx_bytes"]) - 14 * (
            after["tx_packets"] - before["tx_packets"]
        )
        wire_in = (after["rx_bytes"] - before["rx_bytes"]) - 14 * (
            after["rx_packets"] - before["rx_packets"]
        )
        out = c1[("pa", "out", cls)][0] - c0[("pa", "out", cls)][0]
        inn = c1[("pa", "in", cls)][0] - c0[("pa", "in", cls)][0]
        assert out >= nbytes and inn >= nbytes
        assert abs(out - wire_out) <= 0.01 * wire_out, (cls, out, wire_out)
        assert abs(inn - wire_in) <= 0.01 * wire_in, (cls, inn, wire_in)
        # Nothing leaked into another class of pa's outbound traffic.
        for other in targets:
            if other != cls:
                assert c1[("pa", "out", other)] == c0[("pa", "out", other)], (cls, other)
    # Same-node traffic is also counted as pb's inbound, from the node class.
    assert counts(acc)[("pb", "in", "node")][0] >= nbytes
    if v6:
        # Both families of a dual-stack pod count into its one set of counters.
        c0 = counts(acc)[("pa", "out", "internet")][0]
        send(lab, "pa", "inet", netlab.TARGETS["internet"], nbytes, port=5203)
        assert counts(acc)[("pa", "out", "internet")][0] - c0 >= nbytes
        # A restarted agent reads both addresses back from the kernel and changes nothing.
        again = NftAccounting(netns=lab.ns("n1"))
        assert again.owned() == {p.id: p for p in pods(dual_stack=True)}
        assert again.sync(pods(dual_stack=True)) == {"added": [], "removed": [], "updated": []}
        # Dropping the IPv6 address (same pod) keeps the counters, and its traffic is no
        # longer pa's.
        before = counts(again)
        again.sync(pods())
        assert counts(again) == before
        send(lab, "pa", "inet", netlab.TARGETS6["internet"], nbytes, port=5204)
        assert counts(again)[("pa", "out", "internet")] == before[("pa", "out", "internet")]


def test_restart_keeps_counters_and_removal_leaves_nothing(lab):
    acc = NftAccounting(netns=lab.ns("n1"))
    acc.ensure(ranges())
    acc.sync(pods())
    send(lab, "pa", "inet", netlab.TARGETS["internet"], 1_000_000)
    before = counts(acc)
    # A new agent: it rebuilds what it owns from the kernel and changes nothing.
    again = NftAccounting(netns=lab.ns("n1"))
    assert set(again.owned()) == {p.id for p in pods()}
    again.ensure(ranges())
    changes = again.sync(pods())
    assert changes == {"added": [], "removed": [], "updated": []}
    assert counts(again) == before
    # A new address for pa (same pod id) keeps its counters.
    moved = [PodRule("team-a", "pa", "10.1.1.9", uid="uid-pa"), pods()[1]]
    assert len(again.sync(moved)["updated"]) == 1
    assert counts(again)[("pa", "out", "internet")] == before[("pa", "out", "internet")]
    # Removing every pod leaves no pod chain, counter or map entry behind.
    again.sync([])
    listing = lab.run(
        "n1", "nft", "list", "table", "inet", "gpuyard", capture_output=True, text=True
    ).stdout
    assert "p_" not in listing.replace("pod_", "") and "c_" not in listing
    assert again.read() == []


def test_never_touches_another_table(lab):
    other = "table inet someone {\n chain input {\n type filter hook input priority 0\n counter\n }\n}\n"
    r = lab.run("n1", "nft", "-f", "-", input=other, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    snap = lab.run(
        "n1", "nft", "list", "table", "inet", "someone", capture_output=True, text=True
    ).stdout
    acc = NftAccounting(netns=lab.ns("n1"))
    acc.ensure(ranges())
    acc.sync(pods())
    acc.sync(pods()[:1])
    acc.destroy()
    after = lab.run(
        "n1", "nft", "list", "table", "inet", "someone", capture_output=True, text=True
    ).stdout
    assert after == snap
    tables = lab.run("n1", "nft", "list", "tables", capture_output=True, text=True).stdout
    assert "gpuyard" not in tables


def test_pods_come_and_go_under_traffic_without_stale_rules(lab):
    import threading

    acc = NftAccounting(netns=lab.ns("n1"))
    acc.ensure(ranges())
    pa, pb = pods()
    acc.sync([pa, pb])
    extra = [PodRule("team-b", f"x{i}", f"10.1.1.{100 + i}", uid=f"x{i}") for i in range(20)]
    done = threading.Event()

    def churn() -> None:
        i = 0
        while not done.is_set():
            # pb and a changing set of other pods come and go; pa stays throughout.
            acc.sync([pa, *(extra[: i % 21]), *([pb] if i % 2 else [])])
            i += 1

    t = threading.Thread(target=churn)
    t.start()
    try:
        send(lab, "pa", "inet", netlab.TARGETS["internet"], 20_000_000)
    finally:
        done.set()
        t.join()
    assert counts(acc)[("pa", "out", "internet")][0] >= 20_000_000
    acc.sync([pa])
    listing = lab.run(
        "n1", "nft", "list", "table", "inet", "gpuyard", capture_output=True, text=True
    ).stdout
    assert set(acc.owned()) == {pa.id}
    others = [pod_.id for pod_ in [pb, *extra]]
    assert not any(pid in listing for pid in others)
    assert listing.count("counter c_") == 8


def test_in_process_engine_stays_in_its_namespace_and_follows_other_writers(lab):
    """The engine runs nft in-process (libnftables, its cache kept between batches): it acts
    in the node's namespace only, the calling thread comes back to its own, a change made
    meanwhile by another writer (here the nft command) is seen by the next batch, and a
    refused batch changes nothing."""
    import os
    import shutil

    from gpuyard.network import libnft
    from gpuyard.network.nft import NftError

    here = os.stat("/proc/thread-self/ns/net").st_ino
    acc = NftAccounting(netns=lab.ns("n1"))
    if not acc.in_process:
        pytest.skip(libnft.why_not())
    other = NftAccounting(netns=lab.ns("n1"), nft=shutil.which("nft") or "nft")
    assert not other.in_process
    acc.ensure(ranges())
    acc.sync(pods())
    assert os.stat("/proc/thread-self/ns/net").st_ino == here
    assert set(other.owned()) == {p.id for p in pods()}
    other.sync(pods()[:1])  # another writer removes pb between our batches
    assert set(acc.owned()) == {pods()[0].id}
    assert acc.sync(pods())["added"] == [pods()[1]]
    assert set(other.owned()) == {p.id for p in pods()}
    before = counts(other)
    bad = "add counter inet gpuyard c_extra\nadd rule inet gpuyard no_such_chain counter\n"
    with pytest.raises(NftError, match="batch refused"):
        acc._run(bad)
    assert os.stat("/proc/thread-self/ns/net").st_ino == here
    listing = lab.run("n1", "nft", "list", "counters", capture_output=True, text=True).stdout
    assert "c_extra" not in listing
    assert counts(other) == before == counts(acc) and set(acc.owned()) == {p.id for p in pods()}
    acc.destroy()
    assert acc.read() == [] == other.read()  # no table: nothing, from either reader
