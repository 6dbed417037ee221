"""The twin's samples (allocated and running GPUs, fragmentation of free GPUs) are kept
from the nodes the state logs as changed; at every sample they equal a full count over
the cluster, with node failures, repairs, preemption, teams and balloons."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuyard.cluster.shapes import default_shapes, expand
from gpuyard.scheduling.state import GPU
from gpuyard.twin.capacity import load_teams
from gpuyard.twin.engine import Engine, FailureSpec
from gpuyard.twin.synth import synth

TEAMS = """apiVersion: gpuyard.io/v1alpha1
kind: Team
metadata: {name: language}
spec: {capacity: {gpu: 12}, borrow: true}
---
apiVersion: gpuyard.io/v1alpha1
kind: Team
metadata: {name: vision}
spec: {capacity: {gpu: 6}, borrow: false}
"""


def full_count(eng: Engine) -> float:
    free_total = free_fragmented = 0
    for n in eng.state.nodes.values():
        if n.ready:
            free = n.alloc[GPU] - n.used[GPU]
            free_total += free
            if 0 < free < n.alloc[GPU]:
                free_fragmented += free
    return free_fragmented / free_total if free_total else 0.0


@pytest.mark.parametrize("teams", [False, True])
def test_every_sample_equals_a_full_count(
    teams: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    specs = None
    if teams:
        f = tmp_path / "teams.yaml"
        f.write_text(TEAMS)
        specs = load_teams(f)
    eng = Engine(
        expand(default_shapes(48)),
        synth(48, 1.5, 600, seed=3),
        "gpuyard",
        failures=FailureSpec.parse("mtbf=1d,xid=0.5"),
        seed=3,
        teams=specs,
        balloons=teams,
    )
    real = Engine._sample
    checked = []

    def checking(self: Engine, t: float) -> None:
        real(self, t)
        want = full_count(self)
        assert self.samples[-1][3] == want, (t, self.samples[-1], want)
        checked.append(want)

    monkeypatch.setattr(Engine, "_sample", checking)
    res = eng.run()
    assert eng.node_failures + eng.xid_faults > 0  # nodes went away and came back
    assert len(checked) >= len(res.samples) > 100
    assert len(set(checked)) >= 2, set(checked)  # it varied: not a constant
