"""Cost of the node network agent's kernel rules, and how exactly shaping holds a rate.

Prints JSON. Needs root and network namespaces (every namespace it makes is removed).
- add/remove of one pod's rules with 109 other pods on the node (110 per node), for the
  nftables engine (gpuyard.network.nft, in-process through libnftables), the same engine
  running one ``nft -f -`` process per batch (``nftables_command``: the cost it had), and, as the baseline the choice was made against,
  the same per-pod chain of 8 comment-tagged counting rules through iptables-restore;
- counter read per pod: one read of the whole node divided by its 110 pods, both ways;
- per packet: small UDP packets (iperf3, 64-byte payloads, unpaced) from a lab pod to the
  "internet" through its node's forward hook, with no rules (the baseline), the nftables
  engine's rules for 110 pods, and the iptables baseline's for 110 pods with the sending
  pod's chain last in the jump list (a packet walks every other pod's two jump rules
  first; nftables looks the pod up in one verdict map): packets per second received, in
  turns (--packet-rounds), and each engine's rate against no rules;
- shaping accuracy at three rates: a pod's internet egress (IP bytes by its counter)
  against its HTB limit, in the test namespaces of tests/network/netlab.py;
- CPU at 1 Gbit/s: an iperf3 TCP flow paced at 1 Gbit/s from a lab pod to the "internet",
  with no agent (the baseline), with `gpuyard netd` accounting the node's 110 pods (scraped
  every second), and with netd also shaping that pod (its limit above the flow). Per second
  of traffic: the netd process's CPU seconds (its own and its nft/tc children's), iperf3's
  own CPU at both ends, and the whole machine's kernel CPU (system + softirq: where the
  nftables rules run; other work on the machine adds to it, so compare it within one run).

The CPU figures are medians of --windows windows of --window-seconds inside each flow,
with their min and max: the machine-wide kernel CPU also counts whatever else runs on the
machine, so one window can be far off; a wide spread says the machine was busy.

The three modes take turns (--cpu-rounds), so a change in the machine's load during the
run falls on each alike.

Usage: sudo python benchmarks/network.py [--pods 110] [--rounds 20] [--windows 5]
       [--window-seconds 2] [--cpu-rounds 2]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
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


def spread(xs: list[float], digits: int) -> dict:
    """Median of per-window rates with their spread: one busy moment on a shared machine
    moves one window, not the figure."""
    xs = sorted(xs)
    return {
        "median": round(statistics.median(xs), digits),
        "min": round(xs[0], digits),
        "max": round(xs[-1], digits),
        "windows": len(xs),
    }


def pod(i: int) -> PodRule:
    return PodRule("bench", f"pod-{i}", f"10.1.{i // 250}.{i % 250 + 2}", uid=f"u{i}")


def bench_nft(ns: str, pods: int, rounds: int, nft: str = "nft") -> dict:
    """The engine as netd runs it (``nft``: in-process through libnftables where it is
    there) or, with ``nft`` a path to the command, one ``nft -f -`` process per batch."""
    acc = NftAccounting(netns=ns, nft=nft)
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
    return {
        "add": ms(adds),
        "remove": ms(removes),
        "read_per_pod": ms(reads),
        "in_process": acc.in_process,
    }


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
    return _ipt_pod_rule(p, chain, _BENCH_NETS)


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


def _udp_flow(lab, seconds: float, port: int) -> tuple[int, float]:
    """(packets the "internet" received, seconds) of an unpaced 64-byte UDP flow from pa."""
    from network import netlab

    addr = netlab.TARGETS["internet"]
    srv = lab.popen(
        "inet", "iperf3", "-s", "-1", "-B", addr, "-p", str(port), stdout=subprocess.DEVNULL
    )
    try:
        for _ in range(50):
            if lab.run(
                "inet", "ss", "-Hltn", f"sport = :{port}", capture_output=True
            ).stdout.strip():
                break
            time.sleep(0.1)
        r = lab.run(
            "pa",
            *("iperf3", "-c", addr, "-p", str(port), "-u", "-b", "0", "-l", "64"),
            *("-t", str(seconds), "-J", "-B", netlab.PODS["pa"]),
            capture_output=True,
            text=True,
            timeout=seconds + 30,
        )
        if r.returncode != 0:
            raise RuntimeError(f"iperf3 failed: {r.stdout[-2000:]}{r.stderr}")
        end = json.loads(r.stdout)["end"]["sum"]
        return end["packets"] - end["lost_packets"], end["seconds"]
    finally:
        try:
            srv.wait(10)
        except subprocess.TimeoutExpired:
            srv.kill()
            srv.wait()


def bench_per_packet(pods: int, rounds: int, seconds: float) -> dict:
    sys.path.insert(0, str(ROOT / "tests"))
    from network import netlab
    from network.test_kernel_accounting import ranges

    lab = netlab.Lab()
    lab.up()
    n1 = lab.ns("n1")
    pa = PodRule("team-a", "pa", netlab.PODS["pa"], uid="uid-pa")
    others = [pod(i) for i in range(pods - 1)]  # 10.1.0.x: none of them is pa
    rows: dict[str, list[float]] = {"no_rules": [], "nftables": [], "iptables": []}
    port = 5400
    try:
        for _ in range(rounds):
            for mode in rows:
                if mode == "nftables":
                    acc = NftAccounting(netns=n1)
                    acc.ensure(ranges())
                    acc.sync([*others, pa])
                elif mode == "iptables":
                    _ipt(n1, "*filter\n:GY-ACCT - [0:0]\n-A FORWARD -j GY-ACCT\nCOMMIT\n")
                    _ipt(n1, "".join(_ipt_pod(i, True) for i in range(pods - 1)))
                    _ipt(n1, _ipt_pod_rule(pa, "GY-PA"))
                try:
                    got, secs = _udp_flow(lab, seconds, port)
                    port += 1
                    # The rules did see the flow: pa's counters hold at least what arrived.
                    if mode == "nftables":
                        seen = sum(
                            c.packets
                            for c in acc.read()
                            if c.pod.name == "pa" and c.direction == "out" and c.cls == "internet"
                        )
                    elif mode == "iptables":
                        save = lab.run(
                            "n1", "iptables-save", "-c", capture_output=True, text=True
                        ).stdout
                        seen = sum(
                            int(line[1:].split(":", 1)[0])
                            for line in save.splitlines()
                            if line.startswith("[")
                            and "-A GY-PA" in line
                            and "out internet" in line
                        )
                    else:
                        seen = got
                    if seen < got:
                        raise RuntimeError(f"{mode}: {seen} packets counted, {got} received")
                    rows[mode].append(got / secs)
                finally:
                    if mode == "nftables":
                        acc.destroy()
                    elif mode == "iptables":
                        lab.run("n1", "iptables", "-F", capture_output=True)
                        lab.run("n1", "iptables", "-X", capture_output=True)
    finally:
        lab.down()
    med = {k: statistics.median(v) for k, v in rows.items()}
    return {
        "pods_per_node": pods,
        "seconds_per_flow": seconds,
        "rounds": rounds,
        "packets_per_s": {
            k: {"median": round(med[k]), "min": round(min(v)), "max": round(max(v))}
            for k, v in rows.items()
        },
        "ratio_over_no_rules": {
            k: round(med[k] / med["no_rules"], 3) for k in ("nftables", "iptables")
        },
        "ratio_nftables_over_iptables": round(med["nftables"] / med["iptables"], 3),
    }


# The peer networks of the iptables baseline's rules: of the synthetic pods (`pod`) and
# of the lab's (tests/network/netlab.py)
_BENCH_NETS = {"node": "10.1.0.0/16", "zone": "10.2.0.0/16", "cluster": "10.0.0.0/8"}
_LAB_NETS = {"node": "10.1.1.0/24", "zone": "10.2.0.0/24", "cluster": "10.0.0.0/8"}


def _ipt_pod_rule(p: PodRule, chain: str, nets: dict[str, str] = _LAB_NETS) -> str:
    """A pod's jump rules and chain in the iptables baseline (peer networks `nets`: the
    lab's unless told)."""
    rules = [
        f":{chain} - [0:0]",
        f"-A GY-ACCT -s {p.ip} -j {chain}",
        f"-A GY-ACCT -d {p.ip} -j {chain}",
    ]
    for d in DIRECTIONS:
        sel = "-s" if d == "out" else "-d"
        for cls in CLASSES:
            peer = f" {'-d' if d == 'out' else '-s'} {nets[cls]}" if cls in nets else ""
            rules.append(
                f'-A {chain} {sel} {p.ip}{peer} -m comment --comment "{p.namespace}/{p.name} {d} {cls}" -j RETURN'
            )
    return "*filter\n" + "\n".join(rules) + "\nCOMMIT\n"


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


TICK = os.sysconf("SC_CLK_TCK")
WARMUP_S = 1.0  # of each flow before its first CPU window (connection, slow start)
TAIL_S = 0.5  # of each flow after its last window


def _proc_cpu(pid: int) -> float:
    """CPU seconds of a process and its waited-for children (utime stime cutime cstime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / TICK


def _kernel_cpu() -> float:
    """Machine-wide CPU seconds in the kernel: system, irq and softirq."""
    f = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return (int(f[3]) + int(f[6]) + int(f[7])) / TICK


MODES = ("no_agent", "accounting", "accounting_and_shaping")


def summary(rows: list[dict]) -> dict:
    """One mode's flows: per-window CPU rates pooled over its rounds (median, min, max)."""

    def pooled(key: str) -> list[float]:
        return [x for r in rows for x in r[key]]

    out = {
        "gbit_per_s": round(statistics.median(r["gbit_per_s"] for r in rows), 3),
        "netd_cpu_s_per_s": spread(pooled("netd_cpu_s_per_s"), 4)
        if rows[0]["netd_cpu_s_per_s"]
        else None,
        "netd_scrape_median_ms": round(statistics.median(pooled("netd_scrape_ms")), 2)
        if pooled("netd_scrape_ms")
        else None,
        "iperf3_sender_cpu_percent": round(
            statistics.median(r["iperf3_sender_cpu_percent"] for r in rows), 1
        ),
        "iperf3_receiver_cpu_percent": round(
            statistics.median(r["iperf3_receiver_cpu_percent"] for r in rows), 1
        ),
        "machine_kernel_cpu_s_per_s": spread(pooled("machine_kernel_cpu_s_per_s"), 3),
    }
    if "iperf3_bytes_sent" in rows[0]:  # what the agent counted against what iperf3 sent
        out["pa_internet_out_bytes_counted"] = sum(r["pa_internet_out_bytes_counted"] for r in rows)
        out["iperf3_bytes_sent"] = sum(r["iperf3_bytes_sent"] for r in rows)
    return out


def bench_agent_cpu(pods: int, windows: int, window_s: float, rounds: int) -> dict:
    """CPU per second of a 1 Gbit/s flow: no agent, netd accounting, netd also shaping,
    taking turns ``rounds`` times; each figure the median of the windows of
    ``window_s`` seconds inside the mode's flows (``windows`` per flow)."""
    sys.path.insert(0, str(ROOT / "tests"))
    import re
    import urllib.request

    from kubernetes import client as k8s
    from kubernetes import config as k8sconfig
    from network import netlab

    from gpuyard.apiserver.testing import run_apiserver_process
    from gpuyard.network import bandwidth

    lab = netlab.Lab()
    lab.up()
    out: dict = {
        "flow": "iperf3 TCP, -b 1G",
        "rounds": rounds,
        "windows_per_flow": windows,
        "window_s": window_s,
        "scrape_interval_s": 1.0,
    }
    try:
        with run_apiserver_process(in_memory=True) as srv:
            api = k8s.CoreV1Api(k8sconfig.new_client_from_config(srv.kubeconfig))
            nodes = {
                "node1": ("a", netlab.NODE1_PODS),
                "node3": ("a", netlab.NODE3_PODS),
                "node2": ("b", netlab.ZONE_B_PODS),
            }
            for name, (zone, cidr) in nodes.items():
                api.create_node(
                    {
                        "metadata": {"name": name, "labels": {"topology.kubernetes.io/zone": zone}},
                        "spec": {"podCIDR": cidr},
                    }
                )
            api.create_namespace({"metadata": {"name": "bench"}})
            ips = {"pa": netlab.PODS["pa"], "pb": netlab.PODS["pb"]}
            ips.update({f"idle-{i}": f"10.1.1.{10 + i}" for i in range(pods - 2)})
            for name, ip in ips.items():
                api.create_namespaced_pod(
                    "bench",
                    {
                        "metadata": {"name": name},
                        "spec": {"nodeName": "node1", "containers": [{"name": "c", "image": "x"}]},
                    },
                )
                api.patch_namespaced_pod_status(
                    name, "bench", {"status": {"phase": "Running", "podIP": ip}}
                )

            log = tempfile.TemporaryFile("w+")

            def died(proc: subprocess.Popen) -> RuntimeError:
                log.seek(0)
                return RuntimeError(f"netd exited {proc.returncode}:\n{log.read()[-3000:]}")

            def pa_out(url: str) -> float:
                """Pod pa's internet egress bytes, as netd's /metrics says."""
                text = urllib.request.urlopen(url, timeout=5).read().decode()
                for line in text.splitlines():
                    if line.startswith("gpuyard_pod_network_bytes_total{"):
                        labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
                        want = {"pod": "pa", "class": "internet", "direction": "out"}
                        if want.items() <= labels.items():
                            return float(line.rsplit(" ", 1)[1])
                raise RuntimeError("no internet egress counter for pod pa on /metrics")

            def run(mode: str, port: int) -> dict:
                proc = None
                if mode != "no_agent":
                    cmd = [sys.executable, "-m", "gpuyard", "netd", "--kubeconfig", srv.kubeconfig]
                    cmd += ["--node", "node1", "--netns", lab.ns("n1"), "--metrics-port", "0"]
                    cmd += ["--metrics-address", "127.0.0.1", "--metrics-auth", "off"]
                    if mode == "accounting_and_shaping":
                        cmd += ["--uplink", "up0"]
                    env = dict(os.environ, PYTHONPATH=str(ROOT))
                    proc = subprocess.Popen(
                        cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=env
                    )
                assert proc is None or proc.stdout is not None
                try:
                    url = ""
                    if proc is not None and proc.stdout is not None:
                        m = re.search(r"metrics on :(\d+)/metrics", proc.stdout.readline())
                        if not m:
                            raise RuntimeError("netd did not start")
                        url = f"http://127.0.0.1:{m.group(1)}/metrics"
                        end = time.monotonic() + 30
                        while time.monotonic() < end:  # every pod's rules are in
                            if proc.poll() is not None:
                                raise died(proc)
                            text = urllib.request.urlopen(url, timeout=5).read().decode()
                            if text.count('direction="out",') >= 4 * pods:
                                break
                            time.sleep(0.2)
                        else:
                            raise RuntimeError("netd did not account every pod in 30 s")

                    stop = threading.Event()
                    scrapes: list[float] = []
                    # (monotonic, machine kernel CPU, netd CPU) at each window's edge
                    marks: list[tuple[float, float, float]] = []

                    def scraper() -> None:
                        while url and not stop.wait(1.0):
                            t = time.perf_counter()
                            try:
                                urllib.request.urlopen(url, timeout=5).read()
                            except OSError:
                                return  # netd died: said after the flow
                            scrapes.append(time.perf_counter() - t)

                    def sampler() -> None:
                        # The first window starts once the flow is up (after WARMUP_S).
                        t = time.monotonic() + WARMUP_S
                        for _ in range(windows + 1):
                            if stop.wait(max(0.0, t - time.monotonic())):
                                return
                            agent = _proc_cpu(proc.pid) if proc and proc.poll() is None else 0.0
                            marks.append((time.monotonic(), _kernel_cpu(), agent))
                            t += window_s

                    threads = [threading.Thread(target=scraper), threading.Thread(target=sampler)]
                    c0 = pa_out(url) if url else 0.0
                    for th in threads:
                        th.start()
                    flow_s = math.ceil(WARMUP_S + windows * window_s + TAIL_S)  # iperf3 -t: whole s
                    end = netlab.iperf3(
                        lab,
                        *("pa", "inet", netlab.TARGETS["internet"], flow_s, port),
                        rate="1G",
                    )
                    stop.set()
                    for th in threads:
                        th.join()
                    if proc is not None and proc.poll() is not None:
                        raise died(proc)
                    if len(marks) < 3:
                        raise RuntimeError(f"only {len(marks) - 1} CPU windows inside the flow")
                    kernel, agent_cpu = [], []
                    for (t0, k0, a0), (t1, k1, a1) in zip(marks, marks[1:], strict=False):
                        kernel.append((k1 - k0) / (t1 - t0))
                        agent_cpu.append((a1 - a0) / (t1 - t0))
                    sent = end["sum_sent"]
                    cpu = end["cpu_utilization_percent"]
                    row = {
                        "gbit_per_s": sent["bits_per_second"] / 1e9,
                        "netd_cpu_s_per_s": agent_cpu if proc else [],
                        "netd_scrape_ms": [x * 1e3 for x in scrapes],
                        "iperf3_sender_cpu_percent": cpu["host_total"],
                        "iperf3_receiver_cpu_percent": cpu["remote_total"],
                        "machine_kernel_cpu_s_per_s": kernel,
                    }
                    if url:  # what the agent counted against what iperf3 sent
                        row["pa_internet_out_bytes_counted"] = pa_out(url) - c0
                        row["iperf3_bytes_sent"] = sent["bytes"]
                    return row
                finally:
                    if proc is not None:
                        proc.terminate()
                        proc.wait(10)

            # The modes take turns, so a change in the machine's other load over the run
            # falls on each of them alike; their windows are pooled per mode.
            rows: dict[str, list[dict]] = {m: [] for m in MODES}
            port = 5401
            for _ in range(rounds):
                for mode in MODES:
                    # Shaping: the pod is limited above its flow, so every packet goes
                    # through its HTB class; otherwise no limit (and no priority set).
                    limit = "2Gbit" if mode == "accounting_and_shaping" else None
                    api.patch_namespaced_pod(
                        "pa", "bench", {"metadata": {"annotations": {bandwidth.ANNOTATION: limit}}}
                    )
                    # Each mode starts from a bare node: no table, no qdisc of an
                    # earlier mode's agent (netd keeps both when it stops, for a restart).
                    NftAccounting(netns=lab.ns("n1")).destroy()
                    lab.run("n1", "tc", "qdisc", "del", "dev", "up0", "root", capture_output=True)
                    rows[mode].append(run(mode, port))
                    port += 1
            for mode, got in rows.items():
                out[mode] = summary(got)
    finally:
        lab.down()
    # Medians against the no-agent median; the min and max ratios pair each run's
    # extreme windows (the widest the ratio could be from these windows).
    base = out["no_agent"]["machine_kernel_cpu_s_per_s"]
    out["kernel_cpu_ratio_over_no_agent"] = {
        k: {
            "median": round(m["median"] / base["median"], 2) if base["median"] else None,
            "min": round(m["min"] / base["max"], 2) if base["max"] else None,
            "max": round(m["max"] / base["min"], 2) if base["min"] else None,
        }
        for k in ("accounting", "accounting_and_shaping")
        for m in [out[k]["machine_kernel_cpu_s_per_s"]]
    }
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pods", type=int, default=110)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument(
        "--windows", type=int, default=5, help="CPU windows per 1 Gbit/s flow (at least 2)"
    )
    ap.add_argument("--window-seconds", type=float, default=2.0, help="length of each window")
    ap.add_argument(
        "--cpu-rounds", type=int, default=2, help="turns of the three CPU modes (at least 1)"
    )
    ap.add_argument(
        "--packet-rounds", type=int, default=3, help="turns of the three per-packet modes"
    )
    ap.add_argument("--packet-seconds", type=float, default=3.0, help="length of each UDP flow")
    ap.add_argument(
        "--only",
        default="",
        help="comma-separated parts to run (rules, per_packet, shaping, cpu; default: all)",
    )
    args = ap.parse_args()
    parts = {p for p in args.only.split(",") if p} or {"rules", "per_packet", "shaping", "cpu"}
    if parts - {"rules", "per_packet", "shaping", "cpu"}:
        ap.error("--only takes rules, per_packet, shaping and cpu")
    if args.windows < 2 or args.window_seconds <= 0 or args.cpu_rounds < 1:
        ap.error("--windows must be at least 2, --window-seconds positive, --cpu-rounds 1 or more")
    for tool in ("ip", "nft", "tc", "iperf3", "ss", "iptables-restore", "iptables-save"):
        if shutil.which(tool) is None:
            sys.exit(
                f"benchmarks/network.py: needs {tool} "
                "(apt-get install iproute2 nftables iperf3 iptables), and root"
            )
    from gpuyard import childgroups

    childgroups.exit_on_signals()  # a signal still stops every server it started
    result: dict = {"pods_per_node": args.pods}
    if "rules" in parts:
        ns = "gybench-" + uuid.uuid4().hex[:6]
        subprocess.run(["ip", "netns", "add", ns], check=True)
        try:
            load = os.getloadavg()[0]
            nft = bench_nft(ns, args.pods, args.rounds)
            ipt = bench_iptables(ns, args.pods, args.rounds)
            cmd = bench_nft(ns, args.pods, args.rounds, nft=shutil.which("nft") or "nft")
        finally:
            subprocess.run(["ip", "netns", "del", ns])
        result["load_average_1m"] = [round(load, 2), round(os.getloadavg()[0], 2)]
        result["nftables"] = nft
        result["iptables_restore"] = ipt
        # Where the time went before: the same batches, one nft process each.
        result["nftables_command"] = cmd
        result["ratio_iptables_over_nftables"] = {
            k: round(ipt[k]["median_ms"] / nft[k]["median_ms"], 2)
            for k in ("add", "remove", "read_per_pod")
        }
    if "per_packet" in parts:
        result["per_packet"] = bench_per_packet(args.pods, args.packet_rounds, args.packet_seconds)
    if "shaping" in parts:
        result["shaping"] = bench_shaping([100_000_000, 500_000_000, 1_000_000_000])
    if "cpu" in parts:
        result["agent_cpu_at_1gbit"] = bench_agent_cpu(
            args.pods, args.windows, args.window_seconds, args.cpu_rounds
        )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
