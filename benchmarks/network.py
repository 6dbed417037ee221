"""Cost of the node network agent's kernel rules, and how exactly shaping holds a rate.

Prints JSON. Needs root and network namespaces (every namespace it makes is removed).
- add/remove of one pod's rules with 109 other pods on the node (110 per node), for the
  nftables engine (gpuyard.network.nft) and, as the baseline the choice was made against,
  the same per-pod chain of 8 comment-tagged counting rules through iptables-restore;
- counter read per pod: one read of the whole node divided by its 110 pods, both ways;
- shaping accuracy at three rates: a pod's internet egress (IP bytes by its counter)
  against its HTB limit, in the test namespaces of tests/network/netlab.py.

Usage: sudo python benchmarks/network.py [--pods 110] [--rounds 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gpuyard.network.classes import CLASSES, DIRECTIONS, Ranges  # noqa: E402
from gpuyard.network.nft import NftAccounting, PodRule  # noqa: E402


def ms(xs: list[float]) -> dict[str, float]:
    xs = sorted(xs)
    return {
        "median_ms": round(statistics.median(xs) * 1e3, 3),
        "p90_ms": round(xs[int(0.9 * (len(xs) - 1))] * 1e3, 3),
    }


def pod(i: int) -> PodRule:
    return PodRule("bench", f"pod-{i}", f"10.1.{i // 250}.{i % 250 + 2}", uid=f"u{i}")


def bench_nft(ns: str, pods: int, rounds: int) -> dict:
    acc = NftAccounting(netns=ns)
    acc.ensure(Ranges.of(["10.1.0.0/16"], ["10.2.0.0/16"], ["10.0.0.0/8"]))
    base = [pod(i) for i in range(pods - 1)]
    acc.sync(base)
    current = acc.owned()
    adds, removes, reads = [], [], []
    for r in range(rounds):
        extra = pod(pods + r)
        t = time.perf_counter()
        acc.sync([*base, extra], current)
        adds.append(time.perf_counter() - t)
        current = {**current, extra.id: extra}
        t = time.perf_counter()
        acc.sync(base, current)
        removes.append(time.perf_counter() - t)
        current.pop(extra.id)
    acc.sync([*base, pod(pods + rounds)])
    for _ in range(rounds):
        t = time.perf_counter()
        n = len({c.pod.id for c in acc.read()})
        reads.append((time.perf_counter() - t) / n)
    acc.destroy()
    return {"add": ms(adds), "remove": ms(removes), "read_per_pod": ms(reads)}


def _ipt(ns: str, script: str) -> None:
    subprocess.run(
        ["ip", "netns", "exec", ns, "iptables-restore", "--noflush"],
        input=script,
        text=True,
        check=True,
    )


def _ipt_pod(i: int, add: bool) -> str:
    p = pod(i)
    chain = f"GY-{i}"
    if not add:
        return f"*filter\n-D GY-ACCT -s {p.ip} -j {chain}\n-D GY-ACCT -d {p.ip} -j {chain}\n-F {chain}\n-X {chain}\nCOMMIT\n"
    rules = [
        f":{chain} - [0:0]",
        f"-A GY-ACCT -s {p.ip} -j {chain}",
        f"-A GY-ACCT -d {p.ip} -j {chain}",
    ]
    nets = {"node": "10.1.0.0/16", "zone": "10.2.0.0/16", "cluster": "10.0.0.0/8"}
    for d in DIRECTIONS:
        sel = "-s" if d == "out" else "-d"
        for cls in CLASSES:
            peer = f" {'-d' if d == 'out' else '-s'} {nets[cls]}" if cls in nets else ""
            rules.append(
                f'-A {chain} {sel} {p.ip}{peer} -m comment --comment "{p.namespace}/{p.name} {d} {cls}" -j RETURN'
            )
    return "*filter\n" + "\n".join(rules) + "\nCOMMIT\n"


def bench_iptables(ns: str, pods: int, rounds: int) -> dict:
    _ipt(ns, "*filter\n:GY-ACCT - [0:0]\n-A FORWARD -j GY-ACCT\nCOMMIT\n")
    _ipt(ns, "".join(_ipt_pod(i, True) for i in range(pods - 1)))
    adds, removes, reads = [], [], []
    for r in range(rounds):
        t = time.perf_counter()
        _ipt(ns, _ipt_pod(pods + r, True))
        adds.append(time.perf_counter() - t)
        t = time.perf_counter()
        _ipt(ns, _ipt_pod(pods + r, False))
        removes.append(time.perf_counter() - t)
    for _ in range(rounds):
        t = time.perf_counter()
        out = subprocess.run(
            ["ip", "netns", "exec", ns, "iptables-save", "-c", "-t", "filter"],
            capture_output=True,
            text=True,
        ).stdout
        # What an agent must do with it: counters and the pod of each rule.
        n = sum(1 for line in out.splitlines() if line.startswith("[") and "--comment" in line)
        reads.append((time.perf_counter() - t) / (n / 8))
    return {"add": ms(adds), "remove": ms(removes), "read_per_pod": ms(reads)}


def bench_shaping(rates: list[int]) -> list[dict]:
    sys.path.insert(0, str(ROOT / "tests"))
    from network import netlab
    from network.test_kernel_accounting import counts, ranges, send

    from gpuyard.network.shaping import Shaper

    out = []
    lab = netlab.Lab()
    lab.up()
    try:
        acc = NftAccounting(netns=lab.ns("n1"))
        acc.ensure(ranges())
        pa = PodRule("team-a", "pa", netlab.PODS["pa"], uid="uid-pa", tclass=1)
        acc.sync([pa])
        shaper = Shaper("up0", netns=lab.ns("n1"))
        shaper.ensure()
        for i, rate in enumerate(rates):
            shaper.sync({1: rate})
            nbytes = int(rate / 8 * 2)  # two seconds at the limit
            c0 = counts(acc)[("pa", "out", "internet")][0]
            secs = send(lab, "pa", "inet", netlab.TARGETS["internet"], nbytes, port=5300 + i)
            got = (counts(acc)[("pa", "out", "internet")][0] - c0) * 8 / secs
            out.append(
                {
                    "limit_mbit": rate / 1e6,
                    "measured_mbit": round(got / 1e6, 1),
                    "error": round(got / rate - 1, 4),
                }
            )
    finally:
        lab.down()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pods", type=int, default=110)
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    from gpuyard import childgroups

    childgroups.exit_on_signals()  # a signal still stops every server it started
    ns = "gybench-" + uuid.uuid4().hex[:6]
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        nft = bench_nft(ns, args.pods, args.rounds)
        ipt = bench_iptables(ns, args.pods, args.rounds)
    finally:
        subprocess.run(["ip", "netns", "del", ns])
    result = {
        "pods_per_node": args.pods,
        "nftables": nft,
        "iptables_restore": ipt,
        "ratio_iptables_over_nftables": {
            k: round(ipt[k]["median_ms"] / nft[k]["median_ms"], 2)
            for k in ("add", "remove", "read_per_pod")
        },
        "shaping": bench_shaping([100_000_000, 500_000_000, 1_000_000_000]),
        "agent_cpu_at_1gbit": None,
        "not_measured": "agent CPU at 1 Gbit/s: the gpuyard netd agent is not built yet",
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
