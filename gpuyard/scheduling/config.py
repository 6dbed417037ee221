"""What the policy is told (`PolicyConfig`) and what it answers (`Decisions`): the one
interface between the policy and its drivers, the live scheduler and the twin."""

from __future__ import annotations

from dataclasses import dataclass, field

from gpuyard.scheduling.reasons import Reasons


@dataclass(frozen=True)
class PolicyConfig:
    gangs: bool = True
    reservations: bool = True
    preemption: bool = True
    pack_topology: bool = True
    max_reservations: int = 1
    timeout_backoff: float = 30.0
    # Write a reason for every unit left pending (the live scheduler's Events); the
    # twin turns it off, as it only counts what happened.
    explain: bool = True


@dataclass
class Eviction:
    pod: str
    preemptor: str
    reason: str


@dataclass
class Decisions:
    bindings: list[tuple[str, str]] = field(default_factory=list)
    nominations: dict[str, str] = field(default_factory=dict)
    evictions: list[Eviction] = field(default_factory=list)
    unschedulable: Reasons = field(default_factory=Reasons)  # unit -> reason
    reservations: dict[str, list[str]] = field(default_factory=dict)  # gang -> nodes held
    timed_out: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.bindings or self.evictions or self.nominations)
