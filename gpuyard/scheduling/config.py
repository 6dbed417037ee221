"""What the policy is told (`PolicyConfig`) and what it answers (`Decisions`), and how
a driver takes the answer (`Sink`, `deliver`): the one interface between the policy and
its two drivers. The live scheduler's sink writes to the API (bindings, evictions,
nominatedNodeName, Events and conditions); the twin's updates its jobs in virtual time.
The drivers differ only in where the state comes from and where the decisions go."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from gpuyard.scheduling.reasons import Reasons


@dataclass(frozen=True)
class PolicyConfig:
    gangs: bool = True
    reservations: bool = True
    preemption: bool = True
    pack_topology: bool = True
    max_reservations: int = 1
    # A reserved gang holds its nodes once its estimated start is this near (seconds),
    # or once it has waited starve_after since it was first seen (reservations.py).
    hold_ahead: float = 3600.0
    starve_after: float = 6 * 3600.0
    # How many units behind a lane's failed head a pass looks at for work short
    # enough to backfill onto a reservation's nodes (as Slurm's bf_max_job_test).
    backfill_scan: int = 256
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
    # device claims (dra.py): claim -> (node, [(request, driver, pool, device)]) newly
    # allocated in this pass, and claim -> the pods bound in this pass that use it (to
    # be written to the claims' status.reservedFor before the pods are bound)
    allocations: dict[str, tuple[str, list[tuple[str, str, str, str]]]] = field(
        default_factory=dict
    )
    consumers: dict[str, list[str]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (self.bindings or self.evictions or self.nominations)


class Sink(Protocol):
    """Where a driver's decisions go."""

    def bind(self, pod: str, node: str) -> None:
        """The pod goes to the node (the state already counts it there)."""

    def evict(self, eviction: Eviction) -> None:
        """A victim of preemption is to leave its node."""

    def nominate(self, pod: str, node: str) -> None:
        """The pod will go to the node once its victims have left."""

    def explain(self, reasons: Reasons) -> None:
        """Why each unit left pending stays pending (unit -> reason)."""


def deliver(d: Decisions, sink: Sink) -> None:
    """Hand one pass's decisions to a driver, in the order both drivers take them:
    bindings (in the order the policy made them), evictions, nominations, reasons."""
    for pod, node in d.bindings:
        sink.bind(pod, node)
    for e in d.evictions:
        sink.evict(e)
    for pod, node in d.nominations.items():
        sink.nominate(pod, node)
    sink.explain(d.unschedulable)
