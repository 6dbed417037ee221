"""Verdicts: conditions and events only on change, recovery after a quiet period,
flap damping, and the taint the conditions call for."""

from __future__ import annotations

from gpuyard.health.checks import Finding, Severity
from gpuyard.health.verdict import (
    NodeHealth,
    VerdictConfig,
    conditions_patch,
    decide,
    sanitize_label_value,
    wanted_taint,
)

CFG = VerdictConfig(quiet_s=100, max_hold_s=1000, flap_window_s=500, flap_forget_s=5000)
DISK_FULL = Finding("disk", Severity.UNHEALTHY, "DiskFull", "/: 0.1 GiB free")
XID79 = Finding("gpu", Severity.FATAL, "Xid79", "Xid 79 on 0000:3b:00: fallen off the bus")


def _node(verdict_conds: list) -> dict:  # type: ignore[type-arg]
    conds = conditions_patch(
        verdict_conds, "2026-01-01T00:00:00Z", [{"type": "Ready", "status": "True"}]
    )
    return {"metadata": {"name": "n1"}, "status": {"conditions": conds}}


def test_first_run_reports_all_areas_once_then_nothing() -> None:
    st, v = decide([], NodeHealth(), 0.0, CFG)
    assert [(c.type, c.status) for c in v.changed] == [
        ("GPUHealthy", "True"),
        ("DiskHealthy", "True"),
        ("NetworkHealthy", "True"),
    ]
    assert v.events == []
    for t in range(1, 50):
        st, v = decide([], st, float(t), CFG)
        assert v.changed == [] and v.events == []


def test_fault_then_recovery_after_quiet_period() -> None:
    st, _ = decide([], NodeHealth(), 0.0, CFG)
    st, v = decide([DISK_FULL], st, 10.0, CFG)
    assert [(c.type, c.status, c.reason) for c in v.changed] == [
        ("DiskHealthy", "False", "DiskFull")
    ]
    assert [(e.type, e.reason) for e in v.events] == [("Warning", "DiskUnhealthy")]
    st, v = decide([DISK_FULL], st, 20.0, CFG)  # same fault again: no write
    assert v.changed == [] and v.events == []
    st, v = decide([], st, 60.0, CFG)  # cleared, but not quiet long enough
    assert v.changed == []
    st, v = decide([], st, 119.0, CFG)
    assert v.changed == []
    st, v = decide([], st, 120.0, CFG)  # 100 s after the last bad result
    assert [(c.type, c.status, c.reason) for c in v.changed] == [("DiskHealthy", "True", "Healthy")]
    assert [(e.type, e.reason) for e in v.events] == [("Normal", "DiskRecovered")]


def test_flapping_doubles_the_hold_down() -> None:
    st, _ = decide([], NodeHealth(), 0.0, CFG)
    t = 0.0
    holds = []
    for _ in range(4):
        t += 1
        st, _ = decide([DISK_FULL], st, t, CFG)
        bad_at = t
        while True:
            t += 1
            st, v = decide([], st, t, CFG)
            if v.changed:
                break
        holds.append(t - bad_at)
    assert holds == [100, 200, 400, 800]
    # Long healthy: flaps forgotten.
    t += 6000
    st, _ = decide([DISK_FULL], st, t, CFG)
    assert st.areas["disk"].flaps == 0


def test_fatal_marks_message_and_asks_for_no_execute() -> None:
    st, v = decide([XID79, DISK_FULL], NodeHealth(), 0.0, CFG)
    node = _node(v.changed)
    gpu = next(c for c in node["status"]["conditions"] if c["type"] == "GPUHealthy")
    assert gpu["status"] == "False" and gpu["message"].startswith("fatal: ")
    assert wanted_taint(node) == ("Xid79", "NoExecute")
    # Ready is kept.
    assert any(c["type"] == "Ready" for c in node["status"]["conditions"])


def test_wanted_taint_no_schedule_and_none() -> None:
    _, v = decide([DISK_FULL], NodeHealth(), 0.0, CFG)
    assert wanted_taint(_node(v.changed)) == ("DiskFull", "NoSchedule")
    _, v = decide([], NodeHealth(), 0.0, CFG)
    assert wanted_taint(_node(v.changed)) is None
    assert wanted_taint({"metadata": {"name": "x"}}) is None


def test_unavailable_source_goes_unknown_once() -> None:
    st, v = decide([], NodeHealth(), 0.0, CFG, unavailable={"gpu": "NVML not available"})
    gpu = next(c for c in v.changed if c.type == "GPUHealthy")
    assert (gpu.status, gpu.reason) == ("Unknown", "CheckUnavailable")
    assert [e.reason for e in v.events] == ["HealthCheckUnavailable"]
    st, v = decide([], st, 1.0, CFG, unavailable={"gpu": "NVML not available"})
    assert v.changed == [] and v.events == []
    assert (
        wanted_taint(_node(decide([], NodeHealth(), 0, CFG, unavailable={"gpu": "x"})[1].changed))
        is None
    )


def test_escalation_rewrites_reason() -> None:
    st, _ = decide([DISK_FULL], NodeHealth(), 0.0, CFG)
    ro = Finding("disk", Severity.UNHEALTHY, "DiskReadOnly", "/ is read-only")
    st, v = decide([ro], st, 5.0, CFG)
    assert [(c.reason, c.status) for c in v.changed] == [("DiskReadOnly", "False")]
    assert [e.reason for e in v.events] == ["DiskUnhealthy"]


def test_label_value_sanitizer() -> None:
    assert sanitize_label_value("gpu-test matmul!") == "gpu-test-matmul"
    assert sanitize_label_value("x" * 100) == "x" * 63
    assert sanitize_label_value("---") == "Unhealthy"
