"""Holds: nodes held for one unit against lower-ranked work, by a reservation (a gang
that does not fit yet) or a nomination (a preemptor waiting for its victims to leave).
Higher-priority work may use a node another unit holds. A reservation's hold is soft
(`Holds.soft`: holder -> the gang's estimated start, see reservations.py): work of
lower priority may use its nodes too (it is preemptible: the gang evicts it, whole
units at a time, when it is ready), and so may work of the gang's own priority that
is sure to end before the estimated start (EASY backfill; an unknown start admits no
such work). A nomination's hold admits nothing below it.

`Holds` is the table of one pass: node -> holder, the nodes of each holder, and a
fingerprint per holder (count and xor of the names' hashes) that failure memos compare
to know whether the holds against a unit are still the same. `Hold` is a reservation
kept in a memo, put back in one step when its unit fails again; `HeldCap` is the room,
in one gang index, of the nodes one holder holds."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gpuyard.scheduling.state import NodeInfo

if TYPE_CHECKING:
    from gpuyard.scheduling.indexes import Buckets, ClassKey, GangIndex
    from gpuyard.scheduling.queue import Unit

Holder = tuple[str, int]  # (unit key, priority)


@dataclass
class HeldCap:
    """Capacity, in one gang index, of the nodes one holder holds."""

    total: int = 0
    zone: Counter[str] = field(default_factory=Counter)
    rack: Counter[tuple[str, str]] = field(default_factory=Counter)
    nodes: set[str] = field(default_factory=set)


@dataclass
class Hold:
    """A reservation kept in a failure memo, ready to be put back in one step."""

    h: Holder
    names: list[str]
    mapping: dict[str, Holder]
    fp: tuple[int, int]  # (count, xor of the names' hashes)
    start: float | None = None  # a soft hold's estimated start (see Holds.soft)

    @classmethod
    def of(cls, h: Holder, names_: list[str], start: float | None = None) -> Hold:
        x = 0
        for name in names_:
            x ^= hash(name)
        return cls(h, list(names_), dict.fromkeys(names_, h), (len(names_), x), start)


class Holds:
    """Who holds which node in this pass."""

    def __init__(self) -> None:
        self.held: dict[str, Holder] = {}  # node -> holder
        self.by: dict[str, set[str]] = {}  # unit key -> nodes it holds
        self.fp: dict[Holder, list[int]] = {}  # holder -> [count, xor]
        self.src: dict[Holder, Hold] = {}  # holder -> reservation restored as it was
        # per gang index: the capacity of held nodes by holder (dropped on any change)
        self.sums: dict[ClassKey, dict[Holder, HeldCap]] = {}
        self._ver = 0  # bumps on every change to `held`
        self._sig_at = -1
        self._sig: tuple[Any, ...] = ()
        # soft holds (reservations): holder -> the gang's estimated start (inf: unknown)
        self.soft: dict[Holder, float] = {}
        self.now = 0.0  # the pass's time (backfill compares ends with starts)

    def blocks(self, h: Holder, unit: Unit) -> bool:
        """Whether the holder's nodes are closed to the unit."""
        if h[0] == unit.key or unit.priority > h[1]:
            return False
        start = self.soft.get(h)
        if start is None:
            return True  # a nomination
        if unit.priority < h[1]:
            return False  # preemptible: evicted when the gang is ready
        r = unit.runtime
        return r is None or self.now + r > start

    def free_for(self, n: NodeInfo, unit: Unit) -> bool:
        h = self.held.get(n.name)
        return h is None or not self.blocks(h, unit)

    def set_soft(self, h: Holder, start: float) -> None:
        """The holder's hold is a reservation's, with this estimated start."""
        self.soft[h] = start
        self._ver += 1

    def fingerprint(self, h: Holder) -> tuple[int, int] | None:
        """(count, xor) of the holder's nodes, with a soft hold's start in the xor."""
        fp = self.fp.get(h)
        if fp is None:
            return None
        start = self.soft.get(h)
        return (fp[0], fp[1] if start is None else fp[1] ^ hash(("start", start)))

    def hold(self, name: str, h: Holder) -> None:
        old = self.held.get(name)
        if old == h:
            return
        self._ver += 1
        self.src.pop(h, None)
        if old is not None:
            self.src.pop(old, None)
            self._fp(old, name, -1)
            self.by[old[0]].discard(name)
        self.held[name] = h
        self._fp(h, name, 1)
        self.by.setdefault(h[0], set()).add(name)

    def _fp(self, h: Holder, name: str, d: int) -> None:
        """Add (d=1) or take (d=-1) a node in its holder's fingerprint: the count and
        the xor of the names' hashes."""
        fp = self.fp.get(h)
        if fp is None:
            fp = self.fp[h] = [0, 0]
        fp[0] += d
        fp[1] ^= hash(name)
        if not fp[0]:
            del self.fp[h]

    def restore(self, h: Holder, hold: Hold) -> None:
        """Put a reservation kept in a memo back (soft only if the holder holds no
        nominated nodes: those stay closed)."""
        soft = hold.start is not None and h not in self.fp
        if (
            hold.h == h
            and h not in self.fp
            and h[0] not in self.by
            and self.held.keys().isdisjoint(hold.mapping)
        ):
            # The common case, in one step: none of its nodes is held by anyone else.
            self.held.update(hold.mapping)
            self._ver += 1
            self.by[h[0]] = set(hold.names)
            self.fp[h] = list(hold.fp)
            self.src[h] = hold
        else:
            for name in hold.names:
                if self.held.get(name, h) == h:  # another's hold (a nomination) stays
                    self.hold(name, h)
        if soft:
            assert hold.start is not None
            self.set_soft(h, hold.start)
        self.sums.clear()

    def release(self, unit_key: str) -> None:
        """Drop every hold the unit has (it is placed, or backs off)."""
        mine = self.by.pop(unit_key, None)
        if not mine:
            return
        self._ver += 1
        for name in mine:
            h = self.held.pop(name)
            self.src.pop(h, None)
            self.soft.pop(h, None)
            self._fp(h, name, -1)
        self.sums.clear()

    def against(self, u: Unit) -> tuple[Any, ...]:
        """The holds against the unit, as a value (from the holders' fingerprints)."""
        got = []
        for h in self.fp:
            if self.blocks(h, u):
                fp = self.fingerprint(h)
                assert fp is not None
                got.append((h, *fp))
        return tuple(sorted(got))

    def signature(self) -> tuple[Any, ...]:
        """What is held, by whom, as a value (from the holders' fingerprints)."""
        if self._sig_at != self._ver:
            self._sig = tuple(sorted((h, *self.fingerprint(h)) for h in self.fp))  # type: ignore[misc]
            self._sig_at = self._ver
        return self._sig

    def level_view(self, b: Buckets, lv: int) -> tuple[list[NodeInfo], set[Holder]]:
        """The nodes of a bucket level that no one holds, and the holders of the others;
        kept (across passes too) while the level and the holds are the same."""
        sig = self.signature()
        v = b.views.get(lv)
        if v is not None and v[0] == b.version[lv] and v[1] == sig:
            return v[2], v[3]
        held = self.held
        unheld = []
        holders = set()
        for name, n in b.levels[lv].items():
            h = held.get(name)
            if h is None:
                unheld.append(n)
            else:
                holders.add(h)
        b.views[lv] = (b.version[lv], sig, unheld, holders)
        return unheld, holders

    def caps(self, key: ClassKey, gi: GangIndex) -> dict[Holder, HeldCap]:
        """The capacity (in the gang index) of the nodes each holder holds."""
        hs = self.sums.get(key)
        if hs is None:
            hs = {}
            held = self.held
            for h in self.fp:
                src = self.src.get(h)
                if src is not None:
                    hs[h] = gi.held_cap(src)  # a reservation restored as it was
                    continue
                mine = self.by.get(h[0], ())
                hs[h] = gi.count(name for name in mine if held[name] == h)
            self.sums[key] = hs
        return hs

    def excluding(self, u: Unit, key: ClassKey, gi: GangIndex) -> list[HeldCap]:
        """The held capacity the unit may not use."""
        return [hc for h, hc in self.caps(key, gi).items() if self.blocks(h, u)]
