"""The embedded cluster at scale: seconds until all nodes are Ready, idle CPU and writes.

For each size, a fresh `EmbeddedCluster` (what `gpuyard up` runs: API server with its
SQLite store, simulated nodes and kubelets, node lifecycle, fault watcher; no other
components) starts in a child process with a temporary data directory. Measured there:

- ready_s: from start until the API lists every simulated node Ready;
- idle window (after Ready, nothing else happening, 10 s leases): API writes per second
  (counted by the API server: create/update/patch/delete), CPU seconds per second of the
  whole process (API server included; 1.0 = one core), and the simulator's own writes;
- peak_rss_mib: the child's peak resident set size;
- with netd (`gpuyard up`'s default: one `gpuyard netd` loop per simulated node, each
  with its own watch of its node's pods): netd_synced_s, from start until every agent
  has listed its node's pods; netd_start_requests_per_node (its list and watch, from the
  API server's count of requests by user agent), and its requests per node per minute
  in the idle window by verb. A watch ends at its timeout (300-600 s, at random) and is
  resumed: about 0.13 requests per node per minute in the long run, more than a short
  window can see.

With --compare-netd each size runs twice, with netd and without (the cost before the
agents ran per node), and the ratios of the netd run to the other are printed.

`--components` runs components of `gpuyard up` beside it (`workloads`: the core workload
controllers; `scheduler,workloads`), so their idle writes and CPU show against the same
cluster without them (run it twice); benchmarks/workloads.py measures them idle once
they have a Deployment and a DaemonSet on every node to look after.

    python benchmarks/cluster.py                 # 7,500 and 15,000 nodes
    python benchmarks/cluster.py --quick         # 500 nodes, short window
    python benchmarks/cluster.py --sizes 2000 --window 20
    python benchmarks/cluster.py --sizes 7500 --components scheduler,workloads

Prints JSON; targets: ready_s <= 60, idle cpu_cores <= 1.0, peak RSS <= 3 GiB at 7,500
nodes. The machine is shared, so figures are noisy; a `baseline` row (the same process
with 0 nodes) is measured in the same run to show the fixed cost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import resource
import subprocess
import sys
import tempfile
import time
from typing import Any

WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}


def _server_writes(server: Any) -> int:
    total = 0.0
    for metric in server.metrics.collect():
        for s in metric.samples:
            if s.name == "apiserver_request_total" and s.labels.get("verb") in WRITE_VERBS:
                total += s.value
    return int(total)


def _agent_requests(server: Any, agent: str) -> dict[str, int]:
    """Requests by verb that the API server counted from user agent ``agent``/..."""
    out: dict[str, int] = {}
    for metric in server.metrics.collect():
        for s in metric.samples:
            if s.name == "apiserver_requests_by_user_agent_total" and s.labels.get(
                "user_agent", ""
            ).startswith(agent + "/"):
                out[s.labels["verb"]] = out.get(s.labels["verb"], 0) + int(s.value)
    return out


async def measure(
    nodes: int,
    window: float,
    lease: float,
    components: list[str] | None = None,
    netd: bool = True,
) -> dict[str, Any]:
    from gpuyard.cluster.up import EmbeddedCluster, UpOptions

    with tempfile.TemporaryDirectory(prefix="gpuyard-bench-") as d:
        opts = UpOptions(
            nodes=nodes,
            data_dir=d,
            port=0,
            lease_seconds=lease,
            components=components or [],
            netd=netd,
        )
        cluster = EmbeddedCluster(opts)
        t0 = time.perf_counter()
        cpu0 = time.process_time()
        try:
            await cluster.start()
            registered_s = time.perf_counter() - t0
            if nodes:
                await cluster.wait_ready(timeout=600)
            ready_s = time.perf_counter() - t0
            netd_extra: dict[str, Any] = {}
            agents = cluster._netd.agents if cluster._netd is not None else None
            if agents is not None:
                while len(agents) < nodes or not all(a.pods.has_synced for a in agents.values()):
                    await asyncio.sleep(0.1)
                netd_extra["netd_agents"] = len(agents)
                netd_extra["netd_synced_s"] = round(time.perf_counter() - t0, 2)
            startup_cpu = time.process_time() - cpu0
            # Let the start-up burst settle (one lease period), then measure idle.
            await asyncio.sleep(lease)
            if agents is not None:
                start = _agent_requests(cluster.server, "gpuyard-netd")
                netd_extra["netd_start_requests_per_node"] = {
                    v: round(n / max(nodes, 1), 3) for v, n in sorted(start.items())
                }
            w0, c0, s0 = _server_writes(cluster.server), time.process_time(), time.perf_counter()
            sim_w0 = cluster.sim.writes if cluster.sim else 0
            await asyncio.sleep(window)
            wall = time.perf_counter() - s0
            writes = _server_writes(cluster.server) - w0
            cpu = time.process_time() - c0
            sim_writes = (cluster.sim.writes if cluster.sim else 0) - sim_w0
            if agents is not None:
                end = _agent_requests(cluster.server, "gpuyard-netd")
                netd_extra["netd_idle_requests_per_node_per_min"] = {
                    v: round((n - start.get(v, 0)) / max(nodes, 1) / (wall / 60), 4)
                    for v, n in sorted(end.items())
                }
        finally:
            await cluster.stop()
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "nodes": nodes,
        "components": components or [],
        "netd": netd,
        **netd_extra,
        "registered_s": round(registered_s, 2),
        "ready_s": round(ready_s, 2),
        "startup_cpu_s": round(startup_cpu, 2),
        "lease_seconds": lease,
        "idle_window_s": round(wall, 1),
        "idle_api_writes_per_s": round(writes / wall, 1),
        "idle_sim_writes_per_s": round(sim_writes / wall, 1),
        "idle_cpu_cores": round(cpu / wall, 3),
        "peak_rss_mib": round(rss_kib / 1024, 1),
    }


def run_child(
    nodes: int,
    window: float,
    lease: float,
    timeout: float,
    components: str = "",
    netd: bool = True,
) -> dict[str, Any]:
    from gpuyard import childgroups

    cmd = [
        sys.executable,
        __file__,
        "--child",
        str(nodes),
        "--window",
        str(window),
        "--lease",
        str(lease),
        "--components",
        components,
        *([] if netd else ["--no-netd"]),
    ]
    try:
        # Stopped with SIGTERM if this run is interrupted: the child stops its cluster.
        out = childgroups.run(cmd, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"nodes": nodes, "error": f"timed out after {timeout:.0f} s"}
    if out.returncode != 0:
        return {"nodes": nodes, "error": out.stderr.strip()[-1500:]}
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="7500,15000", help="comma-separated node counts")
    ap.add_argument("--window", type=float, default=30.0, help="idle measurement, seconds")
    ap.add_argument("--lease", type=float, default=10.0, help="lease renewal period")
    ap.add_argument("--quick", action="store_true", help="500 nodes, 10 s window")
    ap.add_argument("--timeout", type=float, default=420.0, help="per size, seconds")
    ap.add_argument(
        "--components",
        default="",
        help="components of gpuyard up to run too, comma-separated (default: none)",
    )
    ap.add_argument(
        "--compare-netd",
        action="store_true",
        help="each size also without the per-node netd agents, with the ratios",
    )
    ap.add_argument("--no-netd", action="store_true", help="without the netd agents")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    from gpuyard.cluster.components import COMPONENTS

    wanted = [c for c in args.components.split(",") if c]
    unknown = [c for c in wanted if c not in COMPONENTS]
    if unknown:
        ap.error(f"unknown component(s) {', '.join(unknown)}; known: {', '.join(COMPONENTS)}")
    from gpuyard import childgroups

    childgroups.exit_on_signals()  # a signal still stops every server it started
    logging.basicConfig(level=logging.WARNING)
    if args.child is not None:
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
        result = measure(args.child, args.window, args.lease, wanted, not args.no_netd)
        print(json.dumps(asyncio.run(result)))
        return 0
    sizes = [500] if args.quick else [int(s) for s in args.sizes.split(",") if s]
    window = 10.0 if args.quick else args.window
    netd = not args.no_netd
    comps = args.components
    baseline = run_child(0, window, args.lease, args.timeout, comps, netd)
    rows = []
    compared = []
    for n in sizes:
        if args.compare_netd:
            without = run_child(n, window, args.lease, args.timeout, comps, False)
            rows.append(without)
        rows.append(
            run_child(n, window, args.lease, args.timeout, comps, netd or args.compare_netd)
        )
        if args.compare_netd and "error" not in without and "error" not in rows[-1]:
            compared.append(
                {
                    "nodes": n,
                    **{
                        f"{k}_x": round(rows[-1][k] / without[k], 3) if without[k] else None
                        for k in ("ready_s", "startup_cpu_s", "idle_cpu_cores", "peak_rss_mib")
                    },
                }
            )
    targets = {"ready_s": 60, "idle_cpu_cores": 1.0, "peak_rss_mib": 3072}
    for r in rows:
        if r.get("nodes") == 7500 and "error" not in r:
            r["meets_targets"] = all(r[k] <= v for k, v in targets.items())
    doc: dict[str, Any] = {"baseline": baseline, "runs": rows, "targets_at_7500": targets}
    if compared:
        doc["netd_over_no_netd"] = compared
    print(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
