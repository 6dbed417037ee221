"""Team capacity and balloons in the twin go through the live system's own code: the
team manager's assignment, the webhook's mutation, the scheduler's state and policy."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuyard import names
from gpuyard.cluster.shapes import default_shapes
from gpuyard.scheduling.policy import PolicyConfig, schedule
from gpuyard.scheduling.state import ClusterState
from gpuyard.twin import capacity

TEAMS = """
apiVersion: gpuyard.io/v1alpha1
kind: Team
metadata: {name: vision}
spec: {capacity: {gpu: 6}, borrow: true}
---
apiVersion: gpuyard.io/v1alpha1
kind: Team
metadata: {name: language}
spec: {capacity: {gpu: 4}, namespaces: [lm, language]}
"""


def teams(tmp_path: Path) -> list:  # type: ignore[type-arg]
    p = tmp_path / "teams.yaml"
    p.write_text(TEAMS)
    return capacity.load_teams(p)


def state_with_teams(tmp_path: Path) -> tuple[ClusterState, capacity.Teams, dict]:  # type: ignore[type-arg]
    specs = teams(tmp_path)
    shapes = default_shapes(12)
    plan = capacity.carve(specs, shapes)
    s = ClusterState()
    for name, value in names.PRIORITY_CLASSES.items():
        s.set_priority_class(name, value, preempt_never=name == names.PRIORITY_BALLOON)
    for sh in shapes:
        labels, taints = capacity.team_decoration(plan.owner.get(sh.name))
        s.add_node_fast(
            sh.name,
            {"cpu": sh.cpu_milli, "memory": sh.memory_bytes, names.RESOURCE_GPU: sh.gpus},
            {**capacity.shape_labels(sh), **labels},
            taints,
        )
    return s, capacity.Teams(specs), plan.owner


def test_teams_file_errors_name_the_file_and_team(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: Team\nmetadata: {name: x}\nspec: {capacity: {gpu: -1}}\n")
    with pytest.raises(capacity.TeamsFileError, match=r"bad.yaml: Team x: spec.capacity.gpu"):
        capacity.load_teams(bad)
    bad.write_text("kind: ConfigMap\n")
    with pytest.raises(capacity.TeamsFileError, match="object 1 is not a Team"):
        capacity.load_teams(bad)
    with pytest.raises(capacity.TeamsFileError, match="cannot read"):
        capacity.load_teams(tmp_path / "missing.yaml")


def test_nodes_are_carved_as_the_team_manager_does(tmp_path: Path) -> None:
    plan = capacity.carve(teams(tmp_path), default_shapes(12))
    owners = list(plan.owner.values())
    assert owners.count("vision") == 6 and owners.count("language") == 4
    assert owners.count(None) == 2  # the shared pool


def place(s: ClusterState, t: capacity.Teams, key: str, gpus: int, prio: int) -> str | None:
    pod = t.admit(capacity.job_pod(key, {names.RESOURCE_GPU: gpus}, prio, None))
    assert pod is not None
    s.add_pod(pod)
    d = schedule(s, 0.0, PolicyConfig())
    return dict(d.bindings).get(key)  # the policy records its bindings in the state


def test_team_pods_stay_on_their_nodes_or_the_shared_pool(tmp_path: Path) -> None:
    s, t, owner = state_with_teams(tmp_path)
    normal = names.PRIORITY_CLASSES[names.PRIORITY_NORMAL]
    for i in range(8):  # 6 team nodes + 2 shared
        node = place(s, t, f"lm/w{i}", 8, normal)
        if i < 6:
            assert node is not None and owner[node] in ("language", None), (i, node)
    # language owns 4 nodes and may use the 2 shared ones: the 7th whole-node pod waits.
    assert sum(1 for p in s.pods.values() if p.node and p.key.startswith("lm/")) == 6


def test_low_priority_work_of_a_borrowing_team_uses_other_teams_idle_nodes(
    tmp_path: Path,
) -> None:
    s, t, owner = state_with_teams(tmp_path)
    low = names.PRIORITY_CLASSES[names.PRIORITY_LOW]
    nodes = [place(s, t, f"vision/sweep-{i}", 8, low) for i in range(12)]
    assert all(nodes)
    assert {owner[n] for n in nodes if n} == {"vision", "language", None}


def test_another_teams_toleration_is_refused(tmp_path: Path) -> None:
    _, t, _ = state_with_teams(tmp_path)
    pod = capacity.job_pod("vision/x", {names.RESOURCE_GPU: 1}, 1000, None)
    pod["spec"]["tolerations"] = [
        {"key": "gpuyard.io/team", "operator": "Equal", "value": "language", "effect": "NoSchedule"}
    ]
    assert t.admit(pod) is None and t.refused == 1


def _containers(obj: object) -> list[object]:
    """Every dict and list reachable from obj (the object itself included)."""
    out: list[object] = []
    stack = [obj]
    while stack:
        x = stack.pop()
        if isinstance(x, dict):
            out.append(x)
            stack.extend(x.values())
        elif isinstance(x, list):
            out.append(x)
            stack.extend(x)
    return out


def test_admission_patches_the_twins_own_pod_as_the_api_server_would(tmp_path: Path) -> None:
    """The twin admits each pod in place; the result is what the API server's copying
    applier makes of the same pod and patch, and no two pods share a dict or list
    (a later change to one pod cannot show up in another)."""
    from gpuyard.teams import admission

    _, t, _ = state_with_teams(tmp_path)
    low = names.PRIORITY_CLASSES[names.PRIORITY_LOW]
    normal = names.PRIORITY_CLASSES[names.PRIORITY_NORMAL]
    cases = [("lm/a", normal, None), ("vision/b", low, "vision/b"), ("vision/c", 5, "vision/c")]
    admitted = []
    for i, (key, prio, group) in enumerate(cases):
        built = capacity.job_pod(key, {names.RESOURCE_GPU: 8}, prio, group, index=i, replicas=2)
        ns = key.split("/")[0]
        d = admission.mutate_pod(built, t.by_ns.get(ns), ns)
        assert d.allowed and d.patch
        expected = admission.apply_json_patch(built, d.patch)
        pod = t.admit(built)
        assert pod is built and pod == expected
        assert pod["spec"]["tolerations"]  # the team's toleration was added
        admitted.append(pod)
    seen: dict[int, int] = {}
    for n, pod in enumerate(admitted):
        for c in _containers(pod):
            assert seen.setdefault(id(c), n) == n, f"pods {seen[id(c)]} and {n} share {c!r}"


def test_balloons_are_placed_one_per_node_and_evicted_first(tmp_path: Path) -> None:
    s = ClusterState()
    for name, value in names.PRIORITY_CLASSES.items():
        s.set_priority_class(name, value, preempt_never=name == names.PRIORITY_BALLOON)
    for sh in default_shapes(4):
        s.add_node_fast(
            sh.name,
            {"cpu": sh.cpu_milli, "memory": sh.memory_bytes, names.RESOURCE_GPU: sh.gpus},
            capacity.shape_labels(sh),
        )
    for b in capacity.balloon_pods("gpu", 6, {names.RESOURCE_GPU: 8}):
        s.add_pod(b)
    d = schedule(s, 0.0, PolicyConfig())
    assert len({n for _, n in d.bindings}) == 4 == len(d.bindings)  # 2 wait: one per node
    assert all(capacity.is_balloon_key(k) for k, _ in d.bindings)
    job = capacity.job_pod("team/j", {names.RESOURCE_GPU: 8}, 1000, None)
    s.add_pod(job)
    d = schedule(s, 1.0, PolicyConfig())
    assert [e.pod for e in d.evictions] and all(capacity.is_balloon_key(e.pod) for e in d.evictions)


def test_engine_reclaims_borrowed_nodes_for_their_owner(tmp_path: Path) -> None:
    from gpuyard.twin.engine import Engine
    from gpuyard.twin.traces import TraceJob

    low = names.PRIORITY_CLASSES[names.PRIORITY_LOW]
    normal = names.PRIORITY_CLASSES[names.PRIORITY_NORMAL]
    sweep = [
        TraceJob(f"sweep-{i}", 0.0, 100.0, 1, 8, team="vision", priority=low) for i in range(12)
    ]
    gang = TraceJob("lm", 10.0, 50.0, 4, 8, team="language", priority=normal)
    eng = Engine(default_shapes(12), [*sweep, gang], teams=teams(tmp_path))
    res = eng.run()
    runs = {r.job.name: r for r in res.jobs}
    # The sweep borrowed every node, language's four included...
    assert all(runs[f"sweep-{i}"].first_start == 0.0 for i in range(12))
    # ...and language got its nodes back at once by preempting four sweep pods.
    assert runs["lm"].first_start == 10.0
    assert sum(r.preemptions for r in runs.values()) == 4
    assert all(r.end is not None for r in runs.values())


def test_engine_balloons_hold_nodes_and_give_way(tmp_path: Path) -> None:
    from gpuyard.twin.engine import Engine
    from gpuyard.twin.traces import TraceJob

    jobs = [TraceJob("j", 5.0, 10.0, 2, 8)]
    eng = Engine(default_shapes(4), jobs, balloons=True)
    res = eng.run()
    assert res.jobs[0].first_start == 5.0
    assert eng.balloon_evictions == 2
    # Balloons are not work: the allocation curve counts only the job's 16 GPUs.
    assert max(a for _, a, _, _ in res.samples) == 16
    bound = [k for k, p in eng.state.pods.items() if capacity.is_balloon_key(k) and p.node]
    assert len(bound) == 4  # after the job, a balloon holds every node again
