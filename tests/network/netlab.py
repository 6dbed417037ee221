"""A small routed cluster in network namespaces, for the kernel tests of gpuyard/network.

fabric (a bridge) joins node1 and node3 (zone a), node2 (zone b) and an "internet"
namespace; pods pa, pb live on node1 (pod range 10.1.1.0/24) behind routed veth pairs.
Everything is dual-stack: the IPv6 ranges and addresses mirror the IPv4 ones (no DAD, so
addresses work at once).
Every namespace is named with a per-run prefix and removed by ``down``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid

NODE1_PODS = "10.1.1.0/24"
NODE3_PODS = "10.1.3.0/24"
ZONE_B_PODS = "10.2.0.0/24"
SERVICES = "10.96.0.0/16"
TARGETS = {
    "node": "10.1.1.3",
    "cluster": "10.1.3.2",
    "zone": "10.2.0.2",
    "internet": "203.0.113.10",
}
PODS = {"pa": "10.1.1.2", "pb": "10.1.1.3"}
# The same cluster's IPv6 half (every pod and node is dual-stack).
NODE1_PODS6 = "fd00:1:1::/64"
NODE3_PODS6 = "fd00:1:3::/64"
ZONE_B_PODS6 = "fd00:2::/64"
SERVICES6 = "fd00:96::/108"
TARGETS6 = {
    "node": "fd00:1:1::3",
    "cluster": "fd00:1:3::2",
    "zone": "fd00:2::2",
    "internet": "2001:db8:113::10",
}
PODS6 = {"pa": "fd00:1:1::2", "pb": "fd00:1:1::3"}


def missing() -> str | None:
    """Why the kernel tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    for tool in ("ip", "nft", "tc", "iperf3", "ss"):
        if shutil.which(tool) is None:
            return f"needs {tool} (apt-get install iproute2 nftables iperf3)"
    p = subprocess.run(
        ["ip", "netns", "add", "gy-probe-" + uuid.uuid4().hex[:6]], capture_output=True
    )
    if p.returncode != 0:
        return f"cannot create a network namespace: {p.stderr.decode().strip()}"
    subprocess.run(["ip", "-all", "netns", "list"], capture_output=True)
    for line in subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True
    ).stdout.split():
        if line.startswith("gy-probe-"):
            subprocess.run(["ip", "netns", "del", line])
    return None


def sh(script: str) -> None:
    p = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{p.stderr}\n--- script ---\n{script}")


class Lab:
    def __init__(self) -> None:
        self.p = "gy" + uuid.uuid4().hex[:5]
        self.names = [f"{self.p}-{n}" for n in ("fab", "n1", "n2", "n3", "inet", *PODS)]

    def ns(self, short: str) -> str:
        return f"{self.p}-{short}"

    def up(self) -> None:
        p = self.p
        lines = []
        for n in self.names:
            lines += [
                f"ip netns add {n}",
                f"ip netns exec {n} sysctl -qw net.ipv6.conf.all.accept_dad=0",
                f"ip netns exec {n} sysctl -qw net.ipv6.conf.default.accept_dad=0",
            ]
        lines.append(f"ip -n {p}-fab link add br0 type bridge && ip -n {p}-fab link set br0 up")
        fabric = {
            "n1": "10.255.0.1",
            "n2": "10.255.0.2",
            "n3": "10.255.0.3",
            "inet": "10.255.0.100",
        }
        for i, (short, addr) in enumerate(fabric.items()):
            addr6 = "fd00:ff::" + addr.rsplit(".", 1)[1]
            lines += [
                f"ip -n {p}-{short} link add up{i} type veth peer name f{i} netns {p}-fab",
                f"ip -n {p}-fab link set f{i} master br0 up",
                f"ip -n {p}-{short} addr add {addr}/24 dev up{i}",
                f"ip -n {p}-{short} -6 addr add {addr6}/64 dev up{i} nodad",
                f"ip netns exec {p}-{short} sysctl -qw net.ipv6.conf.all.forwarding=1",
                f"ip -n {p}-{short} link set up{i} up",
                f"ip -n {p}-{short} link set lo up",
                f"ip netns exec {p}-{short} sysctl -qw net.ipv4.ip_forward=1",
            ]
        lines += [
            f"ip -n {p}-n2 addr add {TARGETS['zone']}/32 dev lo",
            f"ip -n {p}-n3 addr add {TARGETS['cluster']}/32 dev lo",
            f"ip -n {p}-inet addr add {TARGETS['internet']}/32 dev lo",
            f"ip -n {p}-n1 route add {ZONE_B_PODS} via 10.255.0.2",
            f"ip -n {p}-n1 route add {NODE3_PODS} via 10.255.0.3",
            f"ip -n {p}-n1 route add default via 10.255.0.100",
            f"ip -n {p}-n2 -6 addr add {TARGETS6['zone']}/128 dev lo",
            f"ip -n {p}-n3 -6 addr add {TARGETS6['cluster']}/128 dev lo",
            f"ip -n {p}-inet -6 addr add {TARGETS6['internet']}/128 dev lo",
            f"ip -n {p}-n1 -6 route add {ZONE_B_PODS6} via fd00:ff::2",
            f"ip -n {p}-n1 -6 route add {NODE3_PODS6} via fd00:ff::3",
            f"ip -n {p}-n1 -6 route add default via fd00:ff::100",
        ]
        for short in ("n2", "n3", "inet"):
            lines.append(f"ip -n {p}-{short} route add {NODE1_PODS} via 10.255.0.1")
            lines.append(f"ip -n {p}-{short} -6 route add {NODE1_PODS6} via fd00:ff::1")
        for pod, ip in PODS.items():
            lines += [
                f"ip -n {p}-n1 link add v{pod} type veth peer name eth0 netns {p}-{pod}",
                f"ip -n {p}-n1 link set v{pod} up",
                f"ip -n {p}-n1 addr add 10.1.1.1/32 dev v{pod}",
                f"ip -n {p}-n1 route add {ip}/32 dev v{pod}",
                f"ip -n {p}-{pod} addr add {ip}/32 dev eth0",
                f"ip -n {p}-{pod} link set eth0 up && ip -n {p}-{pod} link set lo up",
                f"ip -n {p}-{pod} route add 10.1.1.1 dev eth0",
                f"ip -n {p}-{pod} route add default via 10.1.1.1",
                f"ip -n {p}-n1 -6 addr add fd00:1:1::1/128 dev v{pod} nodad",
                f"ip -n {p}-n1 -6 route add {PODS6[pod]}/128 dev v{pod}",
                f"ip -n {p}-{pod} -6 addr add {PODS6[pod]}/128 dev eth0 nodad",
                f"ip -n {p}-{pod} -6 route add fd00:1:1::1 dev eth0",
                f"ip -n {p}-{pod} -6 route add default via fd00:1:1::1 dev eth0",
            ]
        try:
            sh("\n".join(lines))
        except BaseException:
            self.down()
            raise

    def down(self) -> None:
        for n in self.names:
            subprocess.run(["ip", "netns", "del", n], capture_output=True)

    def run(self, short: str, *cmd: str, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", self.ns(short), *cmd], **kw)

    def popen(self, short: str, *cmd: str, **kw) -> subprocess.Popen:
        return subprocess.Popen(["ip", "netns", "exec", self.ns(short), *cmd], **kw)

    def link_stats(self, short: str, dev: str) -> dict[str, int]:
        out = {}
        for k in ("tx_bytes", "tx_packets", "rx_bytes", "rx_packets"):
            r = self.run(
                short, "cat", f"/sys/class/net/{dev}/statistics/{k}", capture_output=True, text=True
            )
            out[k] = int(r.stdout)
        return out


def iperf3(
    lab: Lab, src: str, dst_ns: str, addr: str, seconds: float, port: int, rate: str = ""
) -> dict:
    """One iperf3 TCP flow from pod ``src`` to ``addr`` (served in ``dst_ns``) for
    ``seconds``, paced at ``rate`` (iperf3's -b, e.g. 1G) if given: iperf3's JSON "end"."""
    srv = lab.popen(
        dst_ns, "iperf3", "-s", "-1", "-B", addr, "-p", str(port), stdout=subprocess.DEVNULL
    )
    try:
        for _ in range(50):  # until the server listens
            probe = lab.run(dst_ns, "ss", "-Hltn", f"sport = :{port}", capture_output=True)
            if probe.stdout.strip():
                break
            time.sleep(0.1)
        r = lab.run(
            src,
            *("iperf3", "-c", addr, "-p", str(port), "-t", str(seconds), "-J"),
            *("-B", (PODS6 if ":" in addr else PODS)[src]),
            *(["-b", rate] if rate else []),
            capture_output=True,
            text=True,
            timeout=seconds + 30,
        )
        if r.returncode != 0:
            raise RuntimeError(f"iperf3 failed: {r.stdout[-2000:]}{r.stderr}")
        return json.loads(r.stdout)["end"]
    finally:
        try:
            srv.wait(10)
        except subprocess.TimeoutExpired:
            srv.kill()
            srv.wait()
