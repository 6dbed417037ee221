"""The cluster-wide brake (pure): never taint more than a configured share of nodes
(default 5%) within a window.

A bad check or a bad driver roll-out can make every node look sick at once; tainting
them all would take the fleet down. `plan_taints` turns what the nodes' health
conditions ask for into taint changes: removals and changes on nodes that are already
tainted always go through; new taints go through while fewer than
max(min_allowed, floor(share * nodes)) were applied within the window. The first new
taint past that trips the brake: nothing more is tainted, a loud Event and a metric
say so, and the brake stays on until a person resets it (`gpuyard health brake reset`,
which writes the brake ConfigMap). Decisions are deterministic: fatal faults first,
then by node name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from gpuyard.kube.objects import NO_EXECUTE

Taint = tuple[str, str]  # (value, effect)


@dataclass(frozen=True)
class BrakeConfig:
    max_share: float = 0.05
    window_s: float = 3600.0
    min_allowed: int = 1


@dataclass(frozen=True)
class BrakeState:
    tainted_at: dict[str, float] = field(default_factory=dict)  # node -> when we tainted it
    tripped: bool = False
    tripped_at: float | None = None
    message: str = ""
    held: tuple[str, ...] = ()  # nodes whose taint the brake is holding back


@dataclass(frozen=True)
class TaintAction:
    node: str
    taint: Taint | None  # None: remove our taint


@dataclass
class BrakePlan:
    actions: list[TaintAction]
    state: BrakeState
    tripped_now: bool  # the brake tripped in this call (raise the loud Event once)


def limit(total_nodes: int, cfg: BrakeConfig) -> int:
    return max(cfg.min_allowed, math.floor(cfg.max_share * total_nodes))


def recent(state: BrakeState, now: float, cfg: BrakeConfig) -> dict[str, float]:
    return {n: t for n, t in state.tainted_at.items() if now - t < cfg.window_s}


def plan_taints(
    wanted: dict[str, Taint | None],
    current: dict[str, Taint | None],
    total_nodes: int,
    state: BrakeState,
    now: float,
    cfg: BrakeConfig = BrakeConfig(),
) -> BrakePlan:
    """Taint changes for nodes whose wanted taint differs from their current one.

    wanted/current: node -> (value, effect) or None, for the nodes to consider
    (typically those that changed); a node in `current` but not in `wanted` wants no
    taint. total_nodes: nodes in the cluster."""
    actions: list[TaintAction] = []
    in_window = recent(state, now, cfg)
    new_taints: list[tuple[str, Taint]] = []
    for node in sorted(set(wanted) | set(current)):
        want, have = wanted.get(node), current.get(node)
        if want == have:
            continue
        if want is None or have is not None:
            actions.append(TaintAction(node, want))  # removal, or change on a tainted node
        else:
            new_taints.append((node, want))
    new_taints.sort(key=lambda nt: (nt[1][1] != NO_EXECUTE, nt[0]))
    cap = limit(total_nodes, cfg)
    tripped, tripped_now = state.tripped, False
    held: list[str] = []
    message = state.message
    for node, taint in new_taints:
        if not tripped and len(in_window) < cap:
            actions.append(TaintAction(node, taint))
            in_window[node] = now
            continue
        if not tripped:
            tripped, tripped_now = True, True
            message = (
                f"health brake tripped: {len(in_window)} nodes tainted in the last "
                f"{cfg.window_s:.0f}s, limit {cap} ({cfg.max_share:.0%} of {total_nodes}); "
                f"not tainting {node} or any other node until a person resets the brake"
            )
        held.append(node)
    held_all = sorted(
        (set(state.held) - {a.node for a in actions} - {n for n in wanted if wanted[n] is None})
        | set(held)
    )
    new_state = replace(
        state,
        tainted_at=in_window,
        tripped=tripped,
        tripped_at=now if tripped_now else state.tripped_at,
        message=message,
        held=tuple(held_all),
    )
    return BrakePlan(actions, new_state, tripped_now)


def reset() -> BrakeState:
    """A person reset the brake: new taints are counted afresh from now."""
    return BrakeState(tainted_at={}, tripped=False, tripped_at=None, message="", held=())
