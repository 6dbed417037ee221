"""The cost of one node Lease renewal in `gpuyard up`: process CPU per renewal.

An `EmbeddedCluster` (API server, simulated nodes, node lifecycle with its Lease
watch; no other components) of --nodes nodes starts in this process with renewals
paused (a lease period longer than the run). Then, --rounds times, alternating, every
node's Lease is renewed once:

- simulator: the simulated kubelet's own renewal, a PUT of the whole Lease with its
  resourceVersion (as kube's kubelet renews: an Update);
- merge_patch: the alternative, a merge patch of spec.renewTime alone.

Both go through the node's kubelet identity and the same concurrency; the CPU counted
is the whole process's (API server, its SQLite commits, the watch that the node
lifecycle reads). Prints JSON: microseconds per renewal per round, the medians, and
merge_patch over simulator (2026-12-04, 1,000 nodes, 5 rounds, load average 11-15 from
other work: 1.0 within noise, so renewals stay kube's PUT).

    python benchmarks/leases.py                  # 1,000 nodes, 5 rounds
    python benchmarks/leases.py --nodes 300 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


async def measure(nodes: int, rounds: int) -> dict[str, Any]:
    from gpuyard.cluster.sim import LEASE_NS, micro_now
    from gpuyard.cluster.up import EmbeddedCluster, UpOptions
    from gpuyard.kube.resources import LEASES

    with tempfile.TemporaryDirectory(prefix="gpuyard-bench-") as d:
        opts = UpOptions(
            nodes=nodes,
            data_dir=d,
            port=0,
            lease_seconds=1e6,  # the simulator's own renewals stay out of the way
            node_grace=1e6,
            components=[],
        )
        cluster = EmbeddedCluster(opts)
        try:
            await cluster.start()
            await cluster.wait_ready(timeout=600)
            sim = cluster.sim
            assert sim is not None
            sims = list(sim.nodes.values())

            async def simulator(n: Any) -> None:
                await sim._renew(n)

            async def merge_patch(n: Any) -> None:
                body = {"spec": {"renewTime": micro_now()}}
                await sim.kubelet(n.name).patch(LEASES, n.name, body, LEASE_NS)

            async def each(fn: Any) -> float:
                """Process CPU seconds of fn on every node, at the simulator's concurrency."""
                sem = asyncio.Semaphore(sim.cfg.concurrency)

                async def one(n: Any) -> None:
                    async with sem:
                        await fn(n)

                c0 = time.process_time()
                await asyncio.gather(*(one(n) for n in sims))
                return time.process_time() - c0

            out: dict[str, list[float]] = {"simulator": [], "merge_patch": []}
            for _ in range(rounds):
                out["merge_patch"].append(await each(merge_patch) / len(sims) * 1e6)
                # (the simulator's first renewal after a patch it did not make is a
                # conflict, a GET and a PUT: a round of it, not counted, reads them)
                await each(simulator)
                out["simulator"].append(await each(simulator) / len(sims) * 1e6)
        finally:
            await cluster.stop()
    med = {k: statistics.median(v) for k, v in out.items()}
    return {
        "nodes": nodes,
        "rounds": rounds,
        "us_per_renewal": {k: [round(x) for x in v] for k, v in out.items()},
        "median_us": {k: round(v) for k, v in med.items()},
        "merge_patch_over_simulator": round(med["merge_patch"] / med["simulator"], 3),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print(json.dumps(asyncio.run(measure(args.nodes, args.rounds)), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
