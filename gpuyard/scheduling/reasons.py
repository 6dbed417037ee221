"""Reasons: why a unit stays pending, in words a person can read.

`explain` counts, over every node, why the unit's first pod cannot go there (a static
filter, a hold, a lacking resource, pods still terminating, anti-affinity, the
inter-pod filters of gpuyard.scheduling.affinity in kube-scheduler's words) and writes
one line of it. `Reasons` is the map unit -> reason of one pass; whole runs of units
that fail like another are stored once and told each with its own name (`relabel`).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator, MutableMapping
from typing import TYPE_CHECKING

from gpuyard.scheduling import dra, topology
from gpuyard.scheduling.affinity import Topology, constrained
from gpuyard.scheduling.filters import (
    anti_ok,
    capacity,
    fits_after_terminating,
    ports_free,
    short,
    static_ok,
)
from gpuyard.scheduling.state import RESOURCES

if TYPE_CHECKING:
    from gpuyard.scheduling.policy import Pass
    from gpuyard.scheduling.queue import Unit


def _label(unit_key: str) -> str:
    """The label of a unit key, as Unit.label gives it: "gang ns/name" -> "gang name"."""
    kind, _, key = unit_key.partition(" ")
    return f"{kind} {key.split('/', 1)[-1]}"


def relabel(reason: str, src: str, dst: str) -> str:
    """A reason written for unit `src`, told of unit `dst` (reasons start with the
    unit's label; units of one shape share everything after it)."""
    if src == dst:
        return reason
    a = _label(src)
    return _label(dst) + reason[len(a) :] if reason.startswith(a) else reason


class Reasons(MutableMapping[str, str]):
    """unit -> why it stays pending. Whole runs of units that fail alike are added as
    one slice of the queue with the reason of the unit they fail like, and spelled out
    (each with its own name) only when read, so a pass over a long blocked queue costs
    no more than its number of shapes."""

    def __init__(self) -> None:
        self._d: dict[str, str] = {}
        self._bulk: list[tuple[list[tuple[int, int, str]], str, str]] = []

    def add_run(self, entries: list[tuple[int, int, str]], reason: str, like: str) -> None:
        if entries:
            self._bulk.append((entries, reason, like))

    def _flat(self) -> dict[str, str]:
        if self._bulk:
            for entries, reason, like in self._bulk:
                for e in entries:
                    self._d[e[2]] = relabel(reason, like, e[2])
            self._bulk.clear()
        return self._d

    def __getitem__(self, key: str) -> str:
        return self._flat()[key]

    def __setitem__(self, key: str, value: str) -> None:
        # A unit is given one reason per pass: never one that is also in a run.
        self._d[key] = value

    def __delitem__(self, key: str) -> None:
        del self._flat()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._flat())

    def __len__(self) -> int:
        return len(self._flat())

    def __repr__(self) -> str:
        return f"Reasons({self._flat()!r})"


def _count(k: int, noun: str) -> str:
    return f"{k} {noun}" if k == 1 else f"{k} {noun}s"


def explain(ps: Pass, u: Unit) -> str:
    """Why the unit fits nowhere now, counted over every node."""
    p0 = u.pods[0]
    holds = ps.holds
    why: Counter[str] = Counter()
    fit_slots = 0
    topo = Topology(ps.s) if constrained(ps.s, p0) else None
    for n in ps.s.nodes.values():
        r = static_ok(p0, n)
        if r is None:
            if not holds.free_for(n, u):
                r = f"held for {holds.held[n.name][0]}"
            elif (lacks := short(p0, n)) is not None:
                # kube-scheduler's wording for a resource outside the vectors
                r = f"lack {lacks}" if lacks in RESOURCES else f"Insufficient {lacks}"
                if fits_after_terminating(p0, n):
                    r = "freeing (pods terminating)"
            elif p0.claims and dra.plan(p0, n) is None:
                r = dra.cannot_why(p0, n)
            elif p0.host_ports and not ports_free(p0, n):
                r = "didn't have free ports for the requested pod ports"
            elif not anti_ok(p0, n):
                r = "conflict by pod anti-affinity"
            elif topo is not None:
                r = topo.why_not(p0, n)  # kube's words: "node(s) didn't match ..."
        if r is None:
            why["fit"] += 1
            fit_slots += capacity(p0, n)
        else:
            why[r] += 1
    parts = []
    if u.is_gang:
        n_fit = why.pop("fit", 0)
        extra = f" of its {len(u.pods)}" if u.need < len(u.pods) else ""
        parts.append(f"{u.label} needs {_count(u.need, 'pod')}{extra} at once")
        if u.topo and (topo_why := topology.why(ps, u, u.topo)) is not None:
            parts.append(topo_why)
        parts.append(f"{min(fit_slots, u.need)} fit on {_count(n_fit, 'node')}")
    else:
        parts.append(f"{u.label} fits on no node of {len(ps.s.nodes)}")
        why.pop("fit", None)
    for r, k in why.most_common():
        # Each reason counts nodes: the verb agrees with the count ("1 lacks", "2 lack").
        one = k == 1
        if r.startswith("lack "):
            parts.append(f"{k} {'lacks' if one else 'lack'} {r[5:]}")
        elif r.startswith(("Insufficient", "node(s)")):
            parts.append(f"{k} {r}")
        elif r.startswith("untolerated"):
            parts.append(f"{k} {'carries' if one else 'carry'} an {r}")
        elif r.startswith(("not", "cordoned", "held", "freeing")):
            parts.append(f"{k} {'is' if one else 'are'} {r}")
        else:
            parts.append(f"{k}: {r}")
    return "; ".join(parts)


# Reason categories, for metrics (a label of few values; the full text is on the pod):
# the first whose test matches the reason, else "Other".
_CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("PodGroupNotFound", ("PodGroup ",)),
    ("WaitingForMembers", ("waits for members",)),
    ("GangTimeout", ("scheduleTimeoutSeconds", "timed out after")),
    ("MinResources", ("minResources",)),
    (
        "Topology",
        (
            "must fit inside one",
            "its running members are in",
            "annotation kueue.",
            "spec.networkTopology",
        ),
    ),
    (
        "InsufficientGPU",
        ("lack nvidia.com/gpu", "lacks nvidia.com/gpu", "Insufficient nvidia.com/gpu"),
    ),
    ("HeldForReservation", ("held for",)),
    ("PodsTerminating", ("freeing (pods terminating)",)),
    ("DeviceClaims", ("cannot allocate all claims", "ResourceClaim")),
    ("InsufficientResources", ("lack ", "lacks ", "Insufficient ")),
    ("NoMatchingNode", ("not Ready", "cordoned", "untolerated", "mismatch", "node(s)")),
    ("Affinity", ("anti-affinity",)),
    ("HostPorts", ("free ports",)),
)
CATEGORIES = tuple(c for c, _ in _CATEGORIES) + ("InsufficientCapacity", "Other")
_NONE_FIT = re.compile(r"\b0 fit on ")


def category(reason: str) -> str:
    """The category of a pending reason: InsufficientGPU, WaitingForMembers, ...;
    InsufficientCapacity for a gang some of whose pods fit but not all at once."""
    for name, marks in _CATEGORIES[:9]:
        if any(m in reason for m in marks):
            return name
    if " fit on " in reason and not _NONE_FIT.search(reason):
        return "InsufficientCapacity"
    for name, marks in _CATEGORIES[9:]:
        if any(m in reason for m in marks):
            return name
    return "Other"
