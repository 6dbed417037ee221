"""A seeded generator of the workload the 7,500-node post describes: a few huge
whole-node gangs that run for days, many small research jobs, bursts of sweeps,
across teams. The same seed gives the same workload."""

from __future__ import annotations

import random

from gpuyard import names
from gpuyard.twin.traces import TraceJob

DAY = 86400.0
TEAMS = ("language", "vision", "multimodal", "rl", "safety")


def synth(nodes: int, days: float, jobs: int, seed: int, gpus_per_node: int = 8) -> list[TraceJob]:
    if nodes < 1 or days <= 0 or jobs < 1:
        raise ValueError("nodes and jobs must be at least 1 and days positive")
    rng = random.Random(seed)
    horizon = days * DAY
    out: list[TraceJob] = []
    prio = names.PRIORITY_CLASSES
    # Huge gangs: about three a week, each a large share of the cluster for days.
    n_huge = max(1, min(jobs // 100, int(days / 7 * 3) + 1))
    for i in range(n_huge):
        share = rng.choice((0.1, 0.2, 0.3))
        out.append(
            TraceJob(
                name=f"huge-{i:03d}",
                submit=rng.uniform(0, horizon * 0.8),
                duration=rng.uniform(2, 6) * DAY,
                replicas=max(2, int(nodes * share)),
                gpus=gpus_per_node,
                cpu_milli=64_000,
                memory=512 * 2**30,
                team=rng.choice(TEAMS[:3]),
                priority=prio[names.PRIORITY_HIGH],
                checkpoint=3600.0,
            )
        )
    # Sweeps: bursts of same-shaped small jobs submitted within minutes.
    remaining = jobs - n_huge
    n_sweep_jobs = remaining * 4 // 10
    i = 0
    while i < n_sweep_jobs:
        size = rng.randint(20, 200)
        t0 = rng.uniform(0, horizon)
        team = rng.choice(TEAMS)
        gpus = rng.choice((1, 1, 2, 4, 8))
        dur = rng.lognormvariate(8.0, 1.0)
        for _ in range(min(size, n_sweep_jobs - i)):
            out.append(
                TraceJob(
                    name=f"sweep-{i:06d}",
                    submit=t0 + rng.uniform(0, 600),
                    duration=max(60.0, dur * rng.uniform(0.7, 1.3)),
                    replicas=1,
                    gpus=gpus,
                    cpu_milli=4000 * gpus,
                    memory=32 * 2**30 * gpus,
                    team=team,
                    priority=prio[names.PRIORITY_LOW],
                    checkpoint=0.0,
                )
            )
            i += 1
    # Research jobs: Poisson arrivals, mostly one node or less, some multi-node.
    for k in range(remaining - n_sweep_jobs):
        multi = rng.random() < 0.1
        out.append(
            TraceJob(
                name=f"research-{k:06d}",
                submit=rng.uniform(0, horizon),
                duration=max(60.0, rng.lognormvariate(8.5, 1.3)),
                replicas=rng.choice((2, 4, 8, 16, 32)) if multi else 1,
                gpus=gpus_per_node if multi else rng.choice((1, 2, 4, 8)),
                cpu_milli=8000,
                memory=64 * 2**30,
                team=rng.choice(TEAMS),
                priority=prio[names.PRIORITY_NORMAL],
                checkpoint=1800.0 if multi else 0.0,
            )
        )
    out.sort(key=lambda j: (j.submit, j.name))
    return out
