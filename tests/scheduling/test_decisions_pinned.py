"""The policy's decisions, pinned: digests of every pass's bindings, nominations,
evictions (with their reasons), pending reasons, reservations and timeouts on twin runs
with node failures, preemption, teams and balloons.

The digests were recorded from the policy as it stood before it was cut into rooms
(commit a046785, `gpuyard/scheduling/policy.py` in one module). Work on how the policy
is built must leave them as they are; a change that means to decide differently
records the new digests in the same commit and says why.

Re-recorded (gpuyard cases only; fifo and gangs decide as before) when reservations
learned runtimes: a gang estimates its start, holds nothing while it is far, and its
held nodes take backfill and preemptible work (gpuyard.scheduling.reservations); the
twin's jobs declare their runtimes. The two cases with teams were re-recorded again
when teams came to share the shared pool and borrowed nodes by weight (equal-priority
work of the team with the fewest GPUs there per weight first; victims of teams over
their fair share first). The gangs and gpuyard cases were re-recorded again when the
twin's jobs came to say when they last checkpointed (gpuyard.twin.engine), so that
preemption takes the victims that lose the least work first, as it does live; replayed
with `victims="plain"` (no pod says) every case gave the digests before. The gangs and
gpuyard cases were re-recorded again when preemption came to count, for a unit that
never checkpointed (the synthetic mix's sweeps and single research jobs), the work
since it started instead of taking it after every unit that says a checkpoint: work
lost is GPUs x (now - the later of its start and its checkpoint), and the eviction
reasons say which ("since it started at ..."). Three gpuyard cases were re-recorded
again when a reserved gang's estimated start came to be made again once it has passed
or once higher-priority work is bound on its nodes (reservations.py): a start kept in
the past had closed the held nodes to every backfill until the gang ran."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

import gpuyard.twin.engine as engine_mod
from gpuyard.cluster.shapes import default_shapes, expand
from gpuyard.scheduling.policy import PolicyConfig
from gpuyard.scheduling.state import ClusterState
from gpuyard.twin.capacity import load_teams
from gpuyard.twin.engine import Engine, FailureSpec
from gpuyard.twin.synth import synth


def teams_yaml(n: int) -> str:
    """Five teams owning two thirds of n nodes; the two largest may borrow."""
    teams = (
        ("language", 4 * n // 15, True),
        ("vision", 2 * n // 15, True),
        ("multimodal", 2 * n // 15, False),
        ("rl", n // 15, False),
        ("safety", n // 15, False),
    )
    return "---\n".join(
        "apiVersion: gpuyard.io/v1alpha1\nkind: Team\n"
        f"metadata: {{name: {name}}}\n"
        f"spec: {{capacity: {{gpu: {count}}}, borrow: {str(borrow).lower()}}}\n"
        for name, count, borrow in teams
    )


def digest_of_run(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    policy: str,
    seed: int,
    nodes: int,
    jobs: int,
    days: float,
    teams: bool,
    explain: bool,
) -> tuple[str, int]:
    digest = hashlib.sha1()
    passes = 0
    real = engine_mod.schedule

    def recording(state: ClusterState, now: float, cfg: PolicyConfig, *memory: Any) -> Any:
        nonlocal passes
        d = real(state, now, cfg, *memory)
        passes += 1
        digest.update(
            repr(
                (
                    now,
                    d.bindings,
                    sorted(d.nominations.items()),
                    [(e.pod, e.preemptor, e.reason) for e in d.evictions],
                    sorted(d.unschedulable.items()),
                    sorted(d.reservations.items()),
                    d.timed_out,
                )
            ).encode()
        )
        return d

    monkeypatch.setattr(engine_mod, "schedule", recording)
    specs = None
    if teams:
        f = tmp_path / "teams.yaml"
        f.write_text(teams_yaml(nodes))
        specs = load_teams(f)
    eng = Engine(
        expand(default_shapes(nodes)),
        synth(nodes, days, jobs, seed=seed),
        policy,
        failures=FailureSpec.parse("mtbf=2d,xid=0.5"),
        seed=seed,
        teams=specs,
        balloons=teams,
    )
    if explain:
        # the live scheduler's configuration: every pending unit gets its reason
        eng.cfg = PolicyConfig(explain=True)
    eng.run()
    return digest.hexdigest(), passes


CASES = [
    # policy, seed, nodes, jobs, days, teams and balloons, reasons -> digest, passes
    (("gangs", 7, 120, 1500, 1.5, False, False), "ce756ab4cd74469470dde6953fcca9e9b86d748c", 2553),
    (("fifo", 7, 120, 1500, 1.5, False, False), "e55102ade3b0e93e1a872d264fbd5b5082acaba1", 2365),
    (
        ("gpuyard", 5, 120, 1500, 1.5, False, False),
        "7796ec03caf55f152b3410720ba3145672877955",
        5799,
    ),
    (("gpuyard", 3, 120, 1500, 1.5, True, False), "0333886171d229c93de1ede6ce4c32957466d666", 6839),
    (("gpuyard", 9, 60, 600, 1.0, False, True), "cf4fdb01fc7ce448d866f81dd0ad3579f21a12cf", 1544),
    (("gpuyard", 4, 60, 600, 1.0, True, True), "dc9382b0a276c131502d07fe825d0abfe2c3ae93", 1822),
]


@pytest.mark.parametrize("case,want,passes", CASES, ids=["-".join(map(str, c[0])) for c in CASES])
def test_every_pass_decides_as_before(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    case: tuple[Any, ...],
    want: str,
    passes: int,
) -> None:
    assert digest_of_run(monkeypatch, tmp_path, *case) == (want, passes)
