"""Health verdicts (pure): check findings + previous state + now -> node conditions,
the wanted `gpuyard.io/unhealthy` taint, and Events, only on change.

Per area (gpu, disk, network) the node has a condition GPUHealthy / DiskHealthy /
NetworkHealthy. An area goes unhealthy as soon as a check finds an UNHEALTHY or FATAL
problem. It recovers only after a quiet period with no bad result; each time an area
goes bad again soon after recovering (a flap) the quiet period doubles, up to a cap, so
a flapping node stays out instead of bouncing in and out of scheduling.

Fatal findings are marked in the condition message with the prefix "fatal: ", so
whoever applies taints (the health controller, through the brake) can tell NoExecute
from NoSchedule from the node object alone; see `wanted_taint`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from gpuyard.health.checks import AREAS, Finding, Severity
from gpuyard.kube.objects import NO_EXECUTE, NO_SCHEDULE

CONDITION_TYPES = {"gpu": "GPUHealthy", "disk": "DiskHealthy", "network": "NetworkHealthy"}
# Written by the preflight and periodic active-test controllers, not by the agent.
GPU_TEST_CONDITION = "GPUTestPassed"
# The conditions whose False status calls for the unhealthy taint, in priority order.
TAINT_CONDITIONS = (*CONDITION_TYPES.values(), GPU_TEST_CONDITION)
FATAL_PREFIX = "fatal: "
HEALTHY_REASON = "Healthy"
HEALTHY_MESSAGE = "all checks passed"


@dataclass(frozen=True)
class VerdictConfig:
    quiet_s: float = 300.0  # recover after this long without a bad result
    max_hold_s: float = 6 * 3600.0  # cap on the damped quiet period
    flap_window_s: float = 3600.0  # a fault this soon after a recovery is a flap
    flap_forget_s: float = 6 * 3600.0  # flaps are forgotten after this long healthy


@dataclass(frozen=True)
class AreaState:
    status: str = "True"  # condition status: "True" healthy, "False", "Unknown"
    severity: Severity = Severity.OK
    reason: str = HEALTHY_REASON
    message: str = HEALTHY_MESSAGE
    last_bad: float | None = None
    recovered_at: float | None = None
    flaps: int = 0
    reported: bool = False  # has this area's condition ever been written


@dataclass(frozen=True)
class NodeHealth:
    areas: dict[str, AreaState] = field(default_factory=lambda: {a: AreaState() for a in AREAS})


@dataclass(frozen=True)
class Condition:
    type: str
    status: str
    reason: str
    message: str


@dataclass(frozen=True)
class Event:
    type: str  # "Normal" | "Warning"
    reason: str
    message: str


@dataclass
class Verdict:
    changed: list[Condition]  # conditions to write (empty: write nothing)
    events: list[Event]
    conditions: list[Condition]  # all areas' conditions as they now stand


def hold_down(state: AreaState, cfg: VerdictConfig) -> float:
    return min(cfg.quiet_s * (2**state.flaps), cfg.max_hold_s)


def _bad_state(prev: AreaState, f: Finding, now: float, cfg: VerdictConfig) -> AreaState:
    flaps = prev.flaps
    if prev.status != "False":
        since = None if prev.recovered_at is None else now - prev.recovered_at
        if since is not None and since < cfg.flap_window_s:
            flaps += 1
        elif since is None or since >= cfg.flap_forget_s:
            flaps = 0
    msg = f.message[:900]
    return replace(
        prev,
        status="False",
        severity=f.severity,
        reason=f.reason,
        message=(FATAL_PREFIX + msg) if f.severity >= Severity.FATAL else msg,
        last_bad=now,
        flaps=flaps,
    )


def decide(
    findings: list[Finding],
    prev: NodeHealth,
    now: float,
    cfg: VerdictConfig = VerdictConfig(),
    unavailable: dict[str, str] | None = None,
) -> tuple[NodeHealth, Verdict]:
    """The node's new health state and what to write. `unavailable` names areas whose
    source could not be read (area -> why): their condition goes Unknown once."""
    unavailable = unavailable or {}
    areas: dict[str, AreaState] = {}
    changed: list[Condition] = []
    events: list[Event] = []
    for area in AREAS:
        old = prev.areas.get(area, AreaState())
        ctype = CONDITION_TYPES[area]
        bad = [f for f in findings if f.area == area and f.severity >= Severity.UNHEALTHY]
        if bad:
            top = max(bad, key=lambda f: f.severity)  # first of the worst
            new = _bad_state(old, top, now, cfg)
        elif area in unavailable and old.status != "False":
            new = replace(
                old,
                status="Unknown",
                severity=Severity.OK,
                reason="CheckUnavailable",
                message=unavailable[area][:900],
            )
        elif old.status == "False":
            assert old.last_bad is not None
            if now - old.last_bad >= hold_down(old, cfg):
                new = replace(
                    old,
                    status="True",
                    severity=Severity.OK,
                    reason=HEALTHY_REASON,
                    message=HEALTHY_MESSAGE,
                    recovered_at=now,
                )
            else:
                new = old
        else:
            new = replace(
                old,
                status="True",
                severity=Severity.OK,
                reason=HEALTHY_REASON,
                message=HEALTHY_MESSAGE,
            )
        differs = (new.status, new.reason, new.message) != (old.status, old.reason, old.message)
        if differs or not old.reported:
            new = replace(new, reported=True)
            changed.append(Condition(ctype, new.status, new.reason, new.message))
            if new.status == "False" and (old.status != "False" or new.reason != old.reason):
                events.append(
                    Event("Warning", f"{ctype[:-7]}Unhealthy", f"{new.reason}: {new.message}")
                )
            elif new.status == "True" and old.status == "False":
                events.append(
                    Event(
                        "Normal",
                        f"{ctype[:-7]}Recovered",
                        f"{ctype} again after {hold_down(old, cfg):.0f}s quiet",
                    )
                )
            elif new.status == "Unknown" and old.status != "Unknown":
                events.append(Event("Warning", "HealthCheckUnavailable", new.message))
        areas[area] = new
    conds = [Condition(CONDITION_TYPES[a], s.status, s.reason, s.message) for a, s in areas.items()]
    return NodeHealth(areas), Verdict(changed, events, conds)


def conditions_patch(
    changed: list[Condition], now_iso: str, existing: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """The node's status.conditions with `changed` applied (lastTransitionTime moves
    only when a status does); other conditions (Ready, ...) are kept."""
    from gpuyard.kube.objects import set_condition

    out = [dict(c) for c in existing or []]
    for c in changed:
        out, _ = set_condition(out, c.type, c.status, c.reason, c.message, now=now_iso)
        for item in out:
            if item.get("type") == c.type:
                item["lastHeartbeatTime"] = item.get("lastHeartbeatTime") or now_iso
    return out


def wanted_taint(node: dict[str, Any]) -> tuple[str, str] | None:
    """(value, effect) of the `gpuyard.io/unhealthy` taint the node's health conditions
    call for, or None when all are healthy. The worst decides: a fatal finding means
    NoExecute; GPU before disk before network before the active GPU test among equals."""
    best: tuple[int, str, str] | None = None
    conds = {c.get("type"): c for c in (node.get("status") or {}).get("conditions") or []}
    for rank, ctype in enumerate(TAINT_CONDITIONS):
        c = conds.get(ctype)
        if not c or c.get("status") != "False":
            continue
        fatal = str(c.get("message", "")).startswith(FATAL_PREFIX)
        score = (2 if fatal else 1) * 10 - rank
        if best is None or score > best[0]:
            best = (
                score,
                str(c.get("reason") or "Unhealthy"),
                NO_EXECUTE if fatal else NO_SCHEDULE,
            )
    return None if best is None else (sanitize_label_value(best[1]), best[2])


def sanitize_label_value(value: str) -> str:
    """A taint value must be a valid label value: up to 63 of [A-Za-z0-9-_.], alphanumeric
    at both ends."""
    clean = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in value)[:63]
    clean = clean.strip("-_.")
    return clean or "Unhealthy"
