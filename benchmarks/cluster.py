"""The embedded cluster at scale: seconds until all nodes are Ready, idle CPU and writes.

For each size, a fresh `EmbeddedCluster` (what `gpuyard up` runs: API server with its
SQLite store, simulated nodes and kubelets, node lifecycle, fault watcher; no other
components) starts in a child process with a temporary data directory. Measured there:

- ready_s: from start until the API lists every simulated node Ready;
- idle window (after Ready, nothing else happening, 10 s leases): API writes per second
  (counted by the API server: create/update/patch/delete), CPU seconds per second of the
  whole process (API server included; 1.0 = one core), and the simulator's own writes;
- peak_rss_mib: the child's peak resident set size.

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


async def measure(
    nodes: int, window: float, lease: float, components: list[str] | None = None
) -> dict[str, Any]:
    from gpuyard.cluster.up import EmbeddedCluster, UpOptions

    with tempfile.TemporaryDirectory(prefix="gpuyard-bench-") as d:
        opts = UpOptions(
            nodes=nodes, data_dir=d, port=0, lease_seconds=lease, components=components or []
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
            startup_cpu = time.process_time() - cpu0
            # Let the start-up burst settle (one lease period), then measure idle.
            await asyncio.sleep(lease)
            w0, c0, s0 = _server_writes(cluster.server), time.process_time(), time.perf_counter()
            sim_w0 = cluster.sim.writes if cluster.sim else 0
            await asyncio.sleep(window)
            wall = time.perf_counter() - s0
            writes = _server_writes(cluster.server) - w0
            cpu = time.process_time() - c0
            sim_writes = (cluster.sim.writes if cluster.sim else 0) - sim_w0
        finally:
            await cluster.stop()
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "nodes": nodes,
        "components": components or [],
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
    nodes: int, window: float, lease: float, timeout: float, components: str = ""
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
        print(json.dumps(asyncio.run(measure(args.child, args.window, args.lease, wanted))))
        return 0
    sizes = [500] if args.quick else [int(s) for s in args.sizes.split(",") if s]
    window = 10.0 if args.quick else args.window
    baseline = run_child(0, window, args.lease, args.timeout, args.components)
    rows = [run_child(n, window, args.lease, args.timeout, args.components) for n in sizes]
    targets = {"ready_s": 60, "idle_cpu_cores": 1.0, "peak_rss_mib": 3072}
    for r in rows:
        if r.get("nodes") == 7500 and "error" not in r:
            r["meets_targets"] = all(r[k] <= v for k, v in targets.items())
    print(json.dumps({"baseline": baseline, "runs": rows, "targets_at_7500": targets}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
