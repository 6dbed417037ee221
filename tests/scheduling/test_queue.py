"""The policy's queue across passes: lanes of one shape and priority, failure memos
that skip units no freed room can help, reasons given to whole blocked lanes.

The strongest check is an equivalence: the same workloads, with failures and
preemption, decided with the memos and with every failed unit retried on every pass,
must give the same bindings, nominations and evictions, pass for pass."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

import gpuyard.twin.engine as engine_mod
from gpuyard.cluster.shapes import default_shapes, expand
from gpuyard.scheduling import memos, policy
from gpuyard.scheduling.policy import PolicyConfig, schedule
from gpuyard.scheduling.preemption import Victims
from gpuyard.scheduling.state import ClusterState
from gpuyard.twin.engine import Engine, FailureSpec
from gpuyard.twin.synth import synth

GPU = "nvidia.com/gpu"


def run_twin(
    monkeypatch: pytest.MonkeyPatch, policy_name: str, seed: int, nodes: int = 120
) -> tuple[str, int]:
    """Digest of every pass's decisions of a small synthetic run with failures."""
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
                    [(e.pod, e.preemptor) for e in d.evictions],
                )
            ).encode()
        )
        return d

    monkeypatch.setattr(engine_mod, "schedule", recording)
    eng = Engine(
        expand(default_shapes(nodes)),
        synth(nodes, 1.5, 1500, seed=seed),
        policy_name,
        failures=FailureSpec.parse("mtbf=2d,xid=0.5"),
        seed=seed,
    )
    eng.run()
    return digest.hexdigest(), passes


@pytest.mark.parametrize("policy_name,seed", [("gangs", 7), ("gangs", 11), ("fifo", 7)])
def test_memos_change_no_decision(
    monkeypatch: pytest.MonkeyPatch, policy_name: str, seed: int
) -> None:
    used = 0
    real_valid = memos.still_fails

    def counting(ps: Any, m: Any, u: Any) -> bool:
        nonlocal used
        ok = real_valid(ps, m, u)
        used += ok
        return ok

    monkeypatch.setattr(policy, "still_fails", counting)
    with_memos = run_twin(monkeypatch, policy_name, seed)
    assert used > 100, "the workload never exercised a memo"
    monkeypatch.setattr(policy, "still_fails", lambda ps, m, u: False)
    assert run_twin(monkeypatch, policy_name, seed) == with_memos


def test_preemption_by_slot_count_matches_trial_placements(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Gang preemption decided by counting slots gives the victims and nominations that
    whole trial placements give (forced by pretending a bound pod repels every pod)."""
    fast = run_twin(monkeypatch, "gpuyard", 5)
    real_init = ClusterState.__init__

    def pretend(self: ClusterState, *a: Any, **k: Any) -> None:
        real_init(self, *a, **k)
        self.anti_bound = {"everything": [1, {}]}  # an empty selector matches all

    monkeypatch.setattr(ClusterState, "__init__", pretend)
    assert run_twin(monkeypatch, "gpuyard", 5) == fast


def small(n: int = 2) -> ClusterState:
    s = ClusterState()
    for i in range(n):
        s.add_node_fast(f"n{i}", {"cpu": 64_000, "memory": 512 * 2**30, GPU: 8})
    return s


def test_blocked_lane_every_unit_gets_a_reason_and_oldest_go_first() -> None:
    s = small(1)
    s.add_pod_fast("ns/big", {"cpu": 1000, GPU: 8}, priority=100, node="n0")
    for i in range(40):
        s.add_pod_fast(f"ns/one-{i:02d}", {"cpu": 1000, GPU: 1})
    for i in range(3):
        s.add_pod_fast(f"ns/two-{i}", {"cpu": 1000, GPU: 2})
    d = schedule(s, 0.0)
    assert not d.bindings
    assert len(d.unschedulable) == 43
    assert set(d.unschedulable) == {f"pod ns/one-{i:02d}" for i in range(40)} | {
        f"pod ns/two-{i}" for i in range(3)
    }
    # Each unit's reason names that unit, though one failure decided the whole lane.
    for unit, reason in d.unschedulable.items():
        assert reason.startswith(f"pod {unit.split('/')[1]} fits on no node of 1"), reason
    # Nothing changed: the same reasons, still no binding.
    d = schedule(s, 1.0)
    assert not d.bindings and len(d.unschedulable) == 43
    # The big pod leaves: the oldest pods bind, in creation order, until the node is full.
    s.remove_pod("ns/big")
    d = schedule(s, 2.0)
    assert [k for k, _ in d.bindings] == [f"ns/one-{i:02d}" for i in range(8)]
    assert len(d.unschedulable) == 35
    assert "pod ns/one-00" not in d.unschedulable
    assert dict(d.unschedulable)["pod ns/one-08"]


def test_queue_follows_deletes_and_priority_changes() -> None:
    s = small(1)
    s.add_pod_fast("ns/hold", {"cpu": 1000, GPU: 8}, priority=1000, node="n0")
    s.add_pod_fast("ns/a", {"cpu": 1000, GPU: 8}, priority=0)
    s.add_pod_fast("ns/b", {"cpu": 1000, GPU: 8}, priority=0)
    s.add_pod_fast("ns/c", {"cpu": 1000, GPU: 8}, priority=0)
    assert set(schedule(s, 0.0).unschedulable) == {"pod ns/a", "pod ns/b", "pod ns/c"}
    # a is deleted while pending; c is raised above b (a new record, the same pod).
    s.remove_pod("ns/a")
    seq_c = s.pods["ns/c"].seq
    s.add_pod_fast("ns/c", {"cpu": 1000, GPU: 8}, priority=10)
    s.pods["ns/c"].seq = seq_c
    d = schedule(s, 1.0)
    assert set(d.unschedulable) == {"pod ns/b", "pod ns/c"}
    s.remove_pod("ns/hold")
    d = schedule(s, 2.0)
    assert d.bindings == [("ns/c", "n0")]
    assert set(d.unschedulable) == {"pod ns/b"}


def test_failed_unit_is_retried_when_a_lower_priority_pod_frees_room_it_cannot_preempt() -> None:
    """A unit that cannot preempt (preemptionPolicy Never) must see room that pods of
    any priority free, not only room freed by its own priority or above."""
    s = small(1)
    s.add_pod_fast("ns/low", {"cpu": 1000, GPU: 8}, priority=0, node="n0")
    s.add_pod_fast("ns/want", {"cpu": 1000, GPU: 8}, priority=100)
    s.pods["ns/want"].preemption_never = True
    d = schedule(s, 0.0)
    assert not d.evictions and "pod ns/want" in d.unschedulable
    s.remove_pod("ns/low")
    assert schedule(s, 1.0).bindings == [("ns/want", "n0")]


def test_preempting_unit_blocked_by_equal_priority_work_binds_when_it_leaves() -> None:
    s = small(2)
    s.add_pod_fast("ns/peer-0", {"cpu": 1000, GPU: 8}, priority=100, node="n0")
    s.add_pod_fast("ns/peer-1", {"cpu": 1000, GPU: 4}, priority=100, node="n1")
    s.add_pod_fast("ns/low", {"cpu": 1000, GPU: 4}, priority=0, node="n1")
    s.add_pod_fast("ns/want", {"cpu": 1000, GPU: 8}, priority=100)
    d = schedule(s, 0.0)
    assert not d.evictions and "pod ns/want" in d.unschedulable  # peers cannot be evicted
    # A low pod elsewhere leaving frees nothing it could not already preempt.
    s.add_pod_fast("ns/other-low", {"cpu": 1000, GPU: 1}, priority=0, node="n0")
    s.remove_pod("ns/other-low")
    assert not schedule(s, 1.0).bindings
    # Its peer leaving n1: it preempts the low pod there and is nominated to n1.
    s.remove_pod("ns/peer-1")
    d = schedule(s, 2.0)
    assert [e.pod for e in d.evictions] == ["ns/low"]
    assert d.nominations == {"ns/want": "n1"}


def test_victim_index_kept_across_changes_equals_one_built_afresh() -> None:
    """The preemption victim order kept across passes (updated from what changed)
    equals the order built from scratch, after binds, deletions, terminations,
    priority changes, new checkpoints and gangs coming and going."""
    import random

    from gpuyard.scheduling.state import GroupInfo

    rng = random.Random(4)
    s = small(12)
    kept = Victims(s, gangs=True)
    groups = [f"ns/g{i}" for i in range(4)]
    for g in groups:
        s.set_group(GroupInfo(g, min_member=1))
    live: list[str] = []
    for step in range(400):
        act = rng.random()
        if act < 0.45 or not live:
            key = f"ns/p{step}"
            s.add_pod_fast(
                key,
                {"cpu": 1000, GPU: rng.choice((1, 2))},
                priority=rng.choice((-5, 0, 100, 1000)),
                group=rng.choice([None, None, *groups]),
                node=f"n{rng.randrange(12)}" if rng.random() < 0.8 else None,
                checkpoint=rng.choice((None, None, float(step), float(step // 2))),
            )
            live.append(key)
        elif act < 0.65:
            s.remove_pod(live.pop(rng.randrange(len(live))))
        elif act < 0.8:
            p = s.pods[rng.choice(live)]
            if p.node is None:
                s.bind(p.key, f"n{rng.randrange(12)}")
            else:
                s.unbind(p.key)
        else:  # a new record for a bound pod: same node and requests, new priority
            p = s.pods[rng.choice(live)]  # or a new checkpoint (or none)
            if p.node is not None:
                seq = p.seq
                s.add_pod_fast(
                    p.key,
                    {"cpu": p.req[0], GPU: p.req[2]},
                    priority=rng.choice((-5, 0, 100, 1000)),
                    group=p.group,
                    node=p.node,
                    checkpoint=rng.choice((None, float(step))),
                )
                s.pods[p.key].seq = seq
        if step % 7 == 0:
            kept.sync(s)
            fresh = Victims(s, gangs=True)
            for prio in (0, 100, 1001):
                now = 400.0
                got = [(c, k, [m.key for m in ms]) for c, k, ms in kept.order(s, prio, now)]
                want = [(c, k, [m.key for m in ms]) for c, k, ms in fresh.order(s, prio, now)]
                assert got == want, (step, prio)
    assert any(True for _ in kept.order(s, 1001))


def test_change_logs_stay_short_on_a_long_running_scheduler() -> None:
    """Nothing the policy keeps across passes grows with the pods that came and went."""
    s = small(4)
    for i in range(300):
        s.add_pod_fast(f"ns/p{i}", {"cpu": 1000, GPU: 8}, priority=0)
        schedule(s, float(i))
        if i >= 4:
            s.remove_pod(f"ns/p{i - 4}")  # the oldest running pod finishes
    assert len(s.bound_log) <= 2 and len(s.queue_pods) <= 2
    fresh = small(4)
    for i in range(50):  # never a preemption attempt: no victim index, no log kept
        fresh.add_pod_fast(f"ns/q{i}", {"cpu": 1000, GPU: 1}, node=f"n{i % 4}")
        fresh.remove_pod(f"ns/q{i}")
    assert not fresh.log_bound and not fresh.bound_log
    # After a preemption, later passes keep the log drained.
    schedule(s, 299.5)  # the last pending pod takes the node the last one freed
    s.add_pod_fast("ns/urgent", {"cpu": 1000, GPU: 8}, priority=10)
    assert schedule(s, 300.0).evictions
    for i in range(300, 400):
        s.remove_pod(f"ns/p{i - 4}")
        s.add_pod_fast(f"ns/p{i}", {"cpu": 1000, GPU: 8}, priority=0)
        schedule(s, float(i))
    assert len(s.bound_log) <= 2
    assert all(len(log) < 1000 for log in s.freed_log.values())


def test_a_nominated_pod_placed_elsewhere_frees_its_node_for_others_at_once() -> None:
    """A pod nominated to a node (its victim still leaving) that fits on another node
    binds there, and its hold on the nominated node ends in the same pass."""
    s = small(2)
    s.add_pod_fast("ns/leaving", {"cpu": 1000, GPU: 4}, priority=0, node="n0")
    s.pods["ns/leaving"].terminating = True
    s.add_pod_fast("ns/busy", {"cpu": 1000, GPU: 8}, priority=1000, node="n1")
    s.add_pod_fast("ns/urgent", {"cpu": 1000, GPU: 8}, priority=100)
    s.pods["ns/urgent"].nominated = "n0"
    s.add_pod_fast("ns/small", {"cpu": 1000, GPU: 4}, priority=0)
    d = schedule(s, 0.0)
    assert d.bindings == []  # n0 has 4 GPUs free, held for urgent; n1 is full
    s.remove_pod("ns/busy")
    d = schedule(s, 1.0)
    assert d.bindings == [("ns/urgent", "n1"), ("ns/small", "n0")]
