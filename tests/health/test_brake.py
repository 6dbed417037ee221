"""The cluster-wide brake: never more than a share of nodes tainted within a window."""

from __future__ import annotations

from gpuyard.health.brake import BrakeConfig, BrakeState, TaintAction, plan_taints, reset

CFG = BrakeConfig(max_share=0.05, window_s=600, min_allowed=1)
NS = ("DiskFull", "NoSchedule")
NE = ("Xid79", "NoExecute")


def test_under_the_limit_taints_go_through() -> None:
    plan = plan_taints({"n1": NS, "n2": NE}, {}, 100, BrakeState(), 0.0, CFG)
    assert plan.actions == [TaintAction("n2", NE), TaintAction("n1", NS)]  # fatal first
    assert not plan.state.tripped and not plan.tripped_now
    assert set(plan.state.tainted_at) == {"n1", "n2"}


def test_twenty_percent_trips_the_brake_at_five() -> None:
    wanted = {f"n{i:03d}": NS for i in range(20)}  # 20% of 100 nodes
    plan = plan_taints(wanted, {}, 100, BrakeState(), 0.0, CFG)
    assert len(plan.actions) == 5
    assert plan.state.tripped and plan.tripped_now
    assert "limit 5" in plan.state.message
    assert len(plan.state.held) == 15
    # Later calls add nothing, even new fatal faults, and do not re-announce.
    plan2 = plan_taints({"n050": NE}, {}, 100, plan.state, 10.0, CFG)
    assert plan2.actions == [] and not plan2.tripped_now and "n050" in plan2.state.held
    # ... also once the window has passed: a person must reset.
    plan3 = plan_taints({"n051": NS}, {}, 100, plan2.state, 10_000.0, CFG)
    assert plan3.actions == []


def test_removals_and_changes_always_go_through_when_tripped() -> None:
    st = BrakeState(tainted_at={"a": 0.0}, tripped=True, message="tripped")
    plan = plan_taints({"a": None, "b": NE}, {"a": NS, "b": NS}, 10, st, 1.0, CFG)
    assert plan.actions == [TaintAction("a", None), TaintAction("b", NE)]


def test_window_slides_and_small_clusters_get_one() -> None:
    plan = plan_taints({"a": NS}, {}, 10, BrakeState(), 0.0, CFG)  # 5% of 10 -> 1
    assert len(plan.actions) == 1
    plan = plan_taints({"a": NS, "b": NS}, {"a": NS}, 10, plan.state, 700.0, CFG)  # a aged out
    assert plan.actions == [TaintAction("b", NS)] and not plan.state.tripped


def test_reset_lets_taints_through_again() -> None:
    wanted = {f"n{i}": NS for i in range(10)}
    plan = plan_taints(wanted, {}, 20, BrakeState(), 0.0, CFG)
    assert len(plan.actions) == 1 and plan.state.tripped
    plan = plan_taints({"n9": NS}, {}, 20, reset(), 5.0, CFG)
    assert plan.actions == [TaintAction("n9", NS)]


def test_no_change_no_action() -> None:
    plan = plan_taints({"a": NS, "b": None}, {"a": NS, "b": None}, 10, BrakeState(), 0.0, CFG)
    assert plan.actions == [] and not plan.tripped_now
