"""Fair sharing of what teams share (the shared pool, borrowed nodes) by the Teams'
weights: with every team backlogged, each team's share of the GPUs is within 5% of its
weight's share; a team over its share is preempted first."""

from __future__ import annotations

import random
from pathlib import Path

from gpuyard import names
from gpuyard.cluster.shapes import default_shapes, expand
from gpuyard.scheduling.policy import schedule
from gpuyard.scheduling.state import ClusterState
from gpuyard.twin.capacity import load_teams
from gpuyard.twin.engine import Engine
from gpuyard.twin.report import metrics, team_shares
from gpuyard.twin.traces import TraceJob

GPU = names.RESOURCE_GPU


def teams_file(tmp_path: Path, weights: dict[str, float]) -> Path:
    f = tmp_path / "teams.yaml"
    f.write_text(
        "---\n".join(
            "apiVersion: gpuyard.io/v1alpha1\nkind: Team\n"
            f"metadata: {{name: {t}}}\nspec: {{capacity: {{gpu: 0}}, weight: {w}}}\n"
            for t, w in weights.items()
        )
    )
    return f


def test_backlogged_teams_share_the_pool_by_weight(tmp_path: Path) -> None:
    weights = {"alpha": 1, "beta": 2, "gamma": 3}
    rng = random.Random(3)
    jobs = [
        TraceJob(
            f"{t}-{i:03d}",
            0.0,  # everyone backlogged from the start
            rng.uniform(600, 1200),
            gpus=rng.choice((1, 2)),
            team=t,
        )
        for t in weights
        for i in range(500)
    ]
    jobs.sort(key=lambda j: (j.submit, j.name))
    teams = load_teams(teams_file(tmp_path, weights))
    res = Engine(expand(default_shapes(16)), jobs, "gpuyard", teams=teams).run()
    # Every team still has work waiting at 4,000 s (alpha alone would need ~29,000 s).
    shares = team_shares(res, until=4000.0)
    for t, w in weights.items():
        fair = w / sum(weights.values())
        assert abs(shares[t] - fair) <= 0.05 * fair, (t, shares, fair)
    m = metrics(res)
    assert m["team_fair_share"] == {"alpha": 0.1667, "beta": 0.3333, "gamma": 0.5}
    # Without weights they would share first come, first served.
    plain = Engine(expand(default_shapes(16)), jobs, "gpuyard").run()
    assert abs(team_shares(plain, until=4000.0).get("gamma", 0.0) - 0.5) > 0.1


def test_a_team_over_its_share_is_preempted_first() -> None:
    def cluster(fair: bool) -> ClusterState:
        s = ClusterState()
        for i in range(2):
            s.add_node_fast(f"n{i}", {"cpu": 64_000, "memory": 512 * 2**30, GPU: 8})
        if fair:
            s.set_teams({"beta": 1, "zeta": 1}, {})
        low = names.PRIORITY_CLASSES[names.PRIORITY_LOW]
        # zeta holds 12 of the 16 shared GPUs, beta 4: zeta is over its half.
        s.add_pod_fast("zeta/z0", {GPU: 8}, priority=low, node="n0")
        s.add_pod_fast("beta/b0", {GPU: 4}, priority=low, node="n1")
        s.add_pod_fast("zeta/z1", {GPU: 4}, priority=low, node="n1")
        s.add_pod_fast("ops/urgent", {GPU: 4}, priority=10_000)
        return s

    s = cluster(fair=True)
    assert s.team_outside == {"zeta": 12, "beta": 4}
    assert [e.pod for e in schedule(s, 0.0).evictions] == ["zeta/z0"]
    # Without fair sharing the cheapest victim by key goes: beta's
    assert [e.pod for e in schedule(cluster(fair=False), 0.0).evictions] == ["beta/b0"]
