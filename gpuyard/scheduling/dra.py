"""Device claims (Dynamic Resource Allocation, resource.k8s.io/v1): the devices nodes
publish in ResourceSlices, the DeviceClasses, the ResourceClaims, and the allocator
that picks devices for a claim on a node. Pure: objects in, choices out.

`Devices` is the snapshot the policy reads (fed by the live driver from informers):
devices by node, classes, claims and which device each allocated claim holds. A
device is allocated to at most one claim, ever (`Devices.taken`); the allocator
(`allocate`) only ever picks devices that are neither taken nor tentatively held by
a placement being tried in this pass.

A request (`requests[].exactly`) names a DeviceClass, CEL selectors (the class's and
its own; every one must hold) and an allocation mode: ExactCount (`count`, default 1)
or All (every matching device on the node, none of them taken). `firstAvailable`
lists alternatives, tried in order. `constraints[].matchAttribute` makes the devices
of the requests it names (all of them when it names none) agree on an attribute;
`distinctAttribute` makes them differ. The search is exhaustive over the values a
constraint can take and greedy within one value (devices in name order), so a claim
that can be satisfied on a node is. A pod's claims are allocated in turn, each taking
its first fit; when that fails, a search backtracks over the choices of each (every
group of devices alike in a one-request claim's matched attributes that can take it),
so claims that fit together only with a choice other than the first (two claims each
wanting one NVLink clique, the first one taking the larger clique) are found, within
SEARCH_TRIES single-claim allocations; past them the node's reason says it gave up.

Slices belong to resource pools (driver, `spec.pool.name`). As kube's allocator
does, only the slices of a pool's newest `generation` are read (a driver updating a
pool publishes a new generation and deletes the old slices after: until then they
are ignored); a pool with fewer (or more) slices of that generation than its
`resourceSliceCount` is incomplete, and a request for all matching devices cannot be
met on its node until it is whole (a counted request may use what is there); a pool
whose newest slices repeat a device name is invalid and offers nothing.

Partitionable devices (MIG slices beside their whole GPU) consume shared counters
(`consumesCounters`, drawing on a slice's `sharedCounters`): a device is picked only
while, for every counter it draws, the amounts of all devices allocated, held or
picked from that counter set plus its own stay within what the set offers, and its
compatibilityGroups agree with theirs (`Use`). A partition occupies the GPUs whose
counter sets a whole GPU draws on: those count once as GPUs taken on the node.

GPUs are counted twice on a node, as the extended resource `nvidia.com/gpu` and as
devices of the `gpu.nvidia.com` driver; they are one set of GPUs. So the GPU devices
allocated to claims on a node count in its used `nvidia.com/gpu` in the scheduler's
snapshot (`sync_node`, `NodeInfo.dra_gpus`), and a device claim picks at most as many
GPU devices as the node's extended-resource GPUs leave free: the two never hand out
one GPU twice. A claim given back frees room as a pod leaving does.

CEL selectors see `device.driver`, `device.attributes[domain][name]` and
`device.capacity[domain][name]` (a quantity, as a number of base units). A selector's
result for a device is kept by the values of the attributes and capacities the
selector's text names (most devices of a model answer alike), so a cluster of
thousands of alike GPUs evaluates each selector a handful of times.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from gpuyard.apiserver import celexpr
from gpuyard.kube import objects as o

if TYPE_CHECKING:
    from gpuyard.scheduling.state import NodeInfo, PodInfo

DRIVER = "gpu.nvidia.com"  # the simulated GPUs' driver, and its DeviceClass's name
GPU_CLASS = "gpu.nvidia.com"
# names of the attributes simulated GPUs publish (in the driver's domain)
ATTR_PRODUCT = "productName"
ATTR_INDEX = "index"
ATTR_UUID = "uuid"
ATTR_CLIQUE = "cliqueId"
ATTR_TYPE = "type"
CAP_MEMORY = "memory"
# MIG partitions of the simulated GPUs (devices of type "mig"), and their DeviceClass
MIG_CLASS = "mig.nvidia.com"
ATTR_PROFILE = "profile"
ATTR_PARENT = "parentIndex"
_GPU = 2  # the GPUs' place in the scheduler's resource vectors (state.RESOURCES)


CounterSetKey = tuple[str, str, str]  # (driver, pool, counter set name)


class ClaimError(ValueError):
    """A claim the allocator cannot read (a missing class, a selector that does not
    compile): the message says which."""


@dataclass(eq=False)
class Device:
    driver: str
    pool: str
    name: str
    node: str
    attributes: dict[str, Any]  # qualified name -> value
    capacity: dict[str, float]  # qualified name -> base units
    # consumesCounters: ((driver, pool, counter set), ((counter, amount), ...)), ...
    consumes: tuple[tuple[CounterSetKey, tuple[tuple[str, float], ...]], ...] = ()
    # each consumption's compatibilityGroups, in the order of `consumes`
    groups: tuple[frozenset[str], ...] = ()
    _view: dict[str, Any] | None = field(default=None, repr=False)
    _memo: dict[str, bool] = field(default_factory=dict, repr=False)

    id: tuple[str, str, str] = field(init=False, repr=False)
    is_gpu: bool = field(init=False, repr=False)
    order: tuple[Any, ...] = field(init=False, repr=False)
    anames: tuple[str, ...] = field(init=False, repr=False)
    cnames: tuple[str, ...] = field(init=False, repr=False)
    # whether it consumes shared counters, and the GPUs it occupies (`Devices._index`):
    # a whole GPU without counters is its own; a partition, the GPUs whose counter
    # sets it draws on
    shared: bool = field(init=False, repr=False)
    units: tuple[Any, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.anames = tuple(sorted(self.attributes))
        self.cnames = tuple(sorted(self.capacity))
        self.id = (self.driver, self.pool, self.name)
        self.is_gpu = (
            self.driver == DRIVER and self.attributes.get(f"{DRIVER}/{ATTR_TYPE}", "gpu") == "gpu"
        )
        self.order = (self.driver, self.pool, _natural(self.name))
        self.shared = bool(self.consumes)
        self.units = (self.id,) if self.is_gpu else ()

    def view(self) -> dict[str, Any]:
        """The `device` variable CEL selectors see."""
        v = self._view
        if v is None:
            attrs: dict[str, dict[str, Any]] = {}
            for q, val in self.attributes.items():
                dom, _, short = q.rpartition("/")
                attrs.setdefault(dom, {})[short] = val
            caps: dict[str, dict[str, Any]] = {}
            for q, val in self.capacity.items():
                dom, _, short = q.rpartition("/")
                caps.setdefault(dom, {})[short] = val
            attrs.setdefault(self.driver, {})
            caps.setdefault(self.driver, {})
            v = self._view = {"driver": self.driver, "attributes": attrs, "capacity": caps}
        return v


def _qualify(name: str, driver: str) -> str:
    return name if "/" in name else f"{driver}/{name}"


def _attr_value(a: Mapping[str, Any]) -> Any:
    for k in ("string", "int", "bool", "version"):
        if k in a:
            return a[k]
    for k in ("strings", "ints", "bools", "versions"):
        if k in a:
            return list(a[k])
    return None


_ABSENT: Any = object()


def slice_node(obj: Mapping[str, Any]) -> str:
    """The node of a node-local ResourceSlice ("" for one for all nodes or a selector)."""
    return str((obj.get("spec") or {}).get("nodeName") or "")


PoolKey = tuple[str, str]  # (driver, pool name)


def slice_pool(obj: Mapping[str, Any]) -> tuple[PoolKey, int, int]:
    """A node-local ResourceSlice's pool (driver, name: the node's when it names none),
    its pool generation and the pool's resourceSliceCount at that generation (the API
    requires both; a slice without a count is taken as its pool's only one)."""
    spec = obj.get("spec") or {}
    pool = spec.get("pool") or {}
    key = (str(spec.get("driver") or ""), str(pool.get("name") or spec.get("nodeName") or ""))
    gen, count = pool.get("generation"), pool.get("resourceSliceCount")
    return (
        key,
        gen if isinstance(gen, int) else 0,
        count if isinstance(count, int) and count > 0 else 1,
    )


def slice_devices(obj: Mapping[str, Any]) -> tuple[str, list[Device]]:
    """A ResourceSlice's node and devices (node-local slices only: a slice for all
    nodes or a node selector gives no node, and its devices are not offered)."""
    spec = obj.get("spec") or {}
    node = spec.get("nodeName") or ""
    driver = spec.get("driver") or ""
    pool = (spec.get("pool") or {}).get("name") or node
    out = []
    if node:
        for d in spec.get("devices") or ():
            attrs = {
                _qualify(k, driver): _attr_value(v or {})
                for k, v in (d.get("attributes") or {}).items()
            }
            caps: dict[str, float] = {}
            for k, v in (d.get("capacity") or {}).items():
                try:
                    caps[_qualify(k, driver)] = float(o.parse_quantity(str((v or {}).get("value"))))
                except (o.QuantityError, ValueError):
                    continue
            consumes = []
            groups = []
            for cc in d.get("consumesCounters") or ():
                amounts = _counter_values((cc or {}).get("counters"))
                if amounts is None:
                    amounts = (("", float("inf")),)  # unreadable: never allocatable
                consumes.append(((driver, pool, str(cc.get("counterSet") or "")), amounts))
                groups.append(frozenset(str(g) for g in cc.get("compatibilityGroups") or ()))
            name = str(d.get("name") or "")
            out.append(
                Device(driver, pool, name, node, attrs, caps, tuple(consumes), tuple(groups))
            )
    return node, out


def _counter_values(counters: Any) -> tuple[tuple[str, float], ...] | None:
    """A counters map (name -> {value: quantity}) as (name, amount) pairs, or None when
    a value is not a quantity."""
    out = []
    for k, v in (counters or {}).items():
        try:
            out.append((str(k), float(o.parse_quantity(str((v or {}).get("value"))))))
        except (o.QuantityError, ValueError, AttributeError):
            return None
    return tuple(sorted(out))


def slice_counters(obj: Mapping[str, Any]) -> dict[CounterSetKey, dict[str, float]]:
    """A node-local ResourceSlice's `sharedCounters`: (driver, pool, set) -> counter ->
    amount available (a set with an unreadable value offers nothing)."""
    spec = obj.get("spec") or {}
    if not spec.get("nodeName"):
        return {}
    driver = str(spec.get("driver") or "")
    pool = str((spec.get("pool") or {}).get("name") or spec.get("nodeName"))
    out: dict[CounterSetKey, dict[str, float]] = {}
    for cs in spec.get("sharedCounters") or ():
        vals = _counter_values((cs or {}).get("counters"))
        out[(driver, pool, str(cs.get("name") or ""))] = dict(vals or ())
    return out


# ------------------------------------------------------------------ claims


@dataclass(frozen=True)
class Alternative:
    """One way to satisfy a request: `req` or `req/sub` for firstAvailable."""

    name: str
    device_class: str
    selectors: tuple[str, ...]  # CEL sources, the class's first
    all: bool
    count: int

    # the selectors as one string (a device's memo of whether it matches them)
    key: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", "\x00".join(self.selectors))


@dataclass(frozen=True)
class Request:
    name: str
    alternatives: tuple[Alternative, ...]


@dataclass(frozen=True)
class Constraint:
    requests: frozenset[str] | None  # None: every request
    attribute: str  # qualified
    distinct: bool = False


@dataclass(frozen=True)
class ClaimSpec:
    requests: tuple[Request, ...]
    constraints: tuple[Constraint, ...]
    # one ExactCount request, no firstAvailable, only matchAttribute constraints (the
    # common claim): allocated without the search, the attributes to match
    simple: bool = False
    match: tuple[str, ...] = ()
    _hash: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "_hash", hash((self.requests, self.constraints, self.simple, self.match))
        )

    def __hash__(self) -> int:
        # kept: a pod's class key holds its claims' specs, hashed for every pod
        return self._hash

    @property
    def gpus_at_least(self) -> int:
        """The fewest whole GPUs an allocation of the claim takes (ExactCount requests:
        the smallest alternative; All: one; MIG partitions none, as they may share a
        GPU already partitioned)."""
        return sum(
            min(
                0 if a.device_class == MIG_CLASS else a.count if not a.all else 1
                for a in r.alternatives
            )
            for r in self.requests
        )


def _alt(name: str, body: Mapping[str, Any], classes: Mapping[str, tuple[str, ...]]) -> Alternative:
    cls = body.get("deviceClassName") or ""
    if cls not in classes:
        raise ClaimError(f'DeviceClass "{cls}" not found (request {name})')
    sels = tuple(
        str((s.get("cel") or {}).get("expression") or "")
        for s in body.get("selectors") or ()
        if (s.get("cel") or {}).get("expression")
    )
    mode = body.get("allocationMode") or "ExactCount"
    count = int(body.get("count") or 1)
    for src in sels:
        try:
            celexpr.compile_expr(src)
        except celexpr.CELError as exc:
            raise ClaimError(f"request {name}: selector {src!r}: {exc}") from None
    return Alternative(name, cls, (*classes[cls], *sels), mode == "All", count)


def parse_claim(spec: Mapping[str, Any], classes: Mapping[str, tuple[str, ...]]) -> ClaimSpec:
    """A claim's `spec.devices` (or a template's `spec.spec.devices`) read against the
    known DeviceClasses (name -> their CEL selectors). ClaimError says what is wrong."""
    devices = spec.get("devices") or {}
    reqs = []
    for r in devices.get("requests") or ():
        name = str(r.get("name") or "")
        if r.get("exactly") is not None:
            alts: tuple[Alternative, ...] = (_alt(name, r["exactly"], classes),)
        elif r.get("firstAvailable"):
            alts = tuple(
                _alt(f"{name}/{s.get('name') or ''}", s, classes) for s in r["firstAvailable"]
            )
        else:
            raise ClaimError(f"request {name} has neither exactly nor firstAvailable")
        reqs.append(Request(name, alts))
    cons = []
    for c in devices.get("constraints") or ():
        names = c.get("requests")
        req_set = frozenset(names) if names else None
        if c.get("matchAttribute"):
            cons.append(Constraint(req_set, str(c["matchAttribute"])))
        elif c.get("distinctAttribute"):
            cons.append(Constraint(req_set, str(c["distinctAttribute"]), distinct=True))
    simple = (
        len(reqs) == 1
        and len(reqs[0].alternatives) == 1
        and not reqs[0].alternatives[0].all
        and not any(c.distinct for c in cons)
    )
    match = tuple(c.attribute for c in cons) if simple else ()
    return ClaimSpec(tuple(reqs), tuple(cons), simple, match)


def class_selectors(obj: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(
        str((s.get("cel") or {}).get("expression") or "")
        for s in (obj.get("spec") or {}).get("selectors") or ()
        if (s.get("cel") or {}).get("expression")
    )


# ------------------------------------------------------------------ selectors

# (selector source, the values of what it names) -> result, shared by all devices
_results: dict[tuple[Any, ...], bool] = {}
_RESULTS_MAX = 1 << 16
# (selector source, a device's attribute names, its capacity names) -> the names the
# selector's text mentions: only their values can change its answer
_named: dict[tuple[Any, ...], tuple[tuple[str, ...], tuple[str, ...]]] = {}


def matches(src: str, d: Device) -> bool:
    """Whether the device satisfies the CEL selector (an error is a no, as kube-
    scheduler treats a selector that fails on a device)."""
    got = d._memo.get(src)
    if got is not None:
        return got
    nk = (src, d.anames, d.cnames)
    named = _named.get(nk)
    if named is None:
        named = _named[nk] = (
            tuple(q for q in d.anames if q.rpartition("/")[2] in src),
            tuple(q for q in d.cnames if q.rpartition("/")[2] in src),
        )
    attrs, caps = d.attributes, d.capacity
    key = (
        src,
        d.driver,
        tuple(repr(attrs[q]) for q in named[0]),
        tuple(caps[q] for q in named[1]),
    )
    got = _results.get(key)
    if got is None:
        try:
            got = celexpr.run(celexpr.compile_expr(src), {"device": d.view()}) is True
        except celexpr.CELError:
            got = False
        if len(_results) >= _RESULTS_MAX:
            _results.clear()
        _results[key] = got
    d._memo[src] = got
    return got


# ------------------------------------------------------------------ the allocator

Result = tuple[str, Device]  # (request or request/subrequest, device)


def _agrees(c: Constraint, fixed: Any, v: Any, used: list[Any]) -> bool:
    if c.distinct:
        return v is not None and repr(v) not in used
    return v is not None and (fixed is None or fixed == repr(v))


def allocate(
    spec: ClaimSpec,
    devices: Iterable[Device],
    unavailable: Any,
    max_gpus: int | None = None,
    use: Use | None = None,
    complete: bool = True,
) -> list[Result] | None:
    """Devices for every request of the claim from `devices` (one node's), none of
    them in `unavailable` (ids of taken or tentatively held devices), occupying at
    most `max_gpus` GPUs not occupied already, and none consuming more of a shared
    counter than `use` leaves (without one, devices that consume counters are never
    picked); or None when the claim cannot be satisfied there. Devices are taken in
    the order given (`Devices.by_node` keeps each node's in name order). The picks
    stay counted in `use`. `complete` is False when a pool of the node is incomplete
    (being updated): a request for all matching devices cannot be met there then,
    as "all" is not known."""
    if use is None:
        use = Use(None)
    if spec.simple:
        return _allocate_simple(spec, devices, unavailable, max_gpus, use)
    every = sorted(devices, key=lambda d: d.order)
    pool = [d for d in every if d.id not in unavailable]
    out: list[Result] = []
    used: set[tuple[str, str, str]] = set()
    # per constraint: the value fixed so far (repr), or the values used (distinct)
    fixed: list[Any] = [None if not c.distinct else [] for c in spec.constraints]
    if _search(
        spec,
        0,
        pool,
        every,
        used,
        fixed,
        out,
        use.gpus + (max_gpus if max_gpus is not None else 1 << 30),
        use,
        complete,
    ):
        return out
    return None


class Use:
    """What one allocation has picked so far, against what the snapshot has allocated
    and held: the shared counters the picks consume and the GPUs they occupy. A device
    that consumes counters fits only while, for every counter it draws, the amounts of
    all devices allocated, held and picked from that counter set plus its own stay
    within what the set offers (kube's rule for partitionable devices); a counter set
    or counter that no slice of the pool publishes offers nothing. Devices on one
    counter set go together only when none has compatibilityGroups or their groups
    all share one. `gpus` counts the GPUs the picks occupy that were free of devices
    before."""

    __slots__ = ("dv", "cons", "units", "groups", "gpus")

    def __init__(self, dv: Devices | None) -> None:
        self.dv = dv
        self.cons: dict[CounterSetKey, dict[str, float]] = {}
        self.units: dict[Any, int] = {}
        self.groups: dict[CounterSetKey, dict[frozenset[str], int]] = {}
        self.gpus = 0

    def fits(self, d: Device) -> bool:
        dv = self.dv
        if dv is None:
            return False
        for i, (sk, amounts) in enumerate(d.consumes):
            cap = dv.caps.get(sk)
            if cap is None:
                return False
            if not _compatible(
                d.groups[i] if d.groups else _NO_GROUPS,
                (dv.set_groups.get(sk), dv.held_groups.get(sk), self.groups.get(sk)),
            ):
                return False
            a = dv.consumed.get(sk)
            b = dv.held_consumed.get(sk)
            m = self.cons.get(sk)
            for cn, v in amounts:
                c = cap.get(cn)
                if c is None:
                    return False
                used = v
                if a:
                    used += a.get(cn, 0.0)
                if b:
                    used += b.get(cn, 0.0)
                if m:
                    used += m.get(cn, 0.0)
                if used > c + 1e-9 * max(c, 1.0):
                    return False
        return True

    def add(self, d: Device) -> None:
        if not d.shared:
            self.gpus += d.is_gpu
            return
        for sk, amounts in d.consumes:
            m = self.cons.get(sk)
            if m is None:
                m = self.cons[sk] = {}
            for cn, v in amounts:
                m[cn] = m.get(cn, 0.0) + v
        _group_count(d, self.groups, 1)
        dv = self.dv
        for u in d.units:
            r = self.units.get(u, 0)
            self.units[u] = r + 1
            if r == 0 and (dv is None or (u not in dv.unit_refs and u not in dv.held_units)):
                self.gpus += 1

    def remove(self, d: Device) -> None:
        if not d.shared:
            self.gpus -= d.is_gpu
            return
        for sk, amounts in d.consumes:
            m = self.cons[sk]
            for cn, v in amounts:
                m[cn] -= v
        _group_count(d, self.groups, -1)
        dv = self.dv
        for u in d.units:
            r = self.units[u] - 1
            if r:
                self.units[u] = r
            else:
                del self.units[u]
                if dv is None or (u not in dv.unit_refs and u not in dv.held_units):
                    self.gpus -= 1


def _matches_all(alt: Alternative, key: str, d: Device) -> bool:
    m = d._memo.get(key)
    if m is None:
        m = d._memo[key] = all(matches(s, d) for s in alt.selectors)
    return m


def _allocate_simple(
    spec: ClaimSpec, devices: Iterable[Device], unavailable: Any, max_gpus: int | None, use: Use
) -> list[Result] | None:
    """`allocate` for one ExactCount request with only matchAttribute constraints: the
    first group of devices alike in the matched attributes (in value order) that has
    enough free, its first free devices in name order (what the search finds, without
    it)."""
    alt = spec.requests[0].alternatives[0]
    return _pick_simple(_match_groups(alt, spec.match, devices), alt, unavailable, max_gpus, use)


def _match_groups(
    alt: Alternative, match: tuple[str, ...], devices: Iterable[Device]
) -> list[list[Device]]:
    """The devices matching the alternative's selectors, in groups alike in the
    matched attributes (devices lacking one are in none), groups in value order,
    devices in the order given. Taken or not: it depends on the devices alone, so it
    is kept per node (`Devices.groups`)."""
    key = alt.key
    cands = []
    for d in devices:
        m = d._memo.get(key)
        if m is None:
            m = _matches_all(alt, key, d)
        if m:
            cands.append(d)
    if not match:
        return [cands] if cands else []
    by: dict[Any, list[Device]] = {}
    if len(match) == 1:
        at = match[0]
        for d in cands:
            v = d.attributes.get(at)
            if v is not None:
                got = by.get(v)
                if got is None:
                    by[v] = [d]
                else:
                    got.append(d)
    else:
        for d in cands:
            vals = tuple(d.attributes.get(x) for x in match)
            if None not in vals:
                by.setdefault(vals, []).append(d)
    return [by[k] for k in sorted(by, key=repr)] if len(by) > 1 else list(by.values())


def _pick_simple(
    groups: list[list[Device]],
    alt: Alternative,
    unavailable: Any,
    max_gpus: int | None,
    use: Use | None,
) -> list[Result] | None:
    """The first free devices of the first group that has `count` of them (devices
    that consume counters only while the counters left allow: never without `use`),
    occupying at most `max_gpus` GPUs not occupied before; the picks stay counted in
    `use`."""
    want = alt.count
    if isinstance(unavailable, _Either3):
        a, b, c = unavailable.a, unavailable.b, unavailable.c
    else:
        a, b, c = unavailable, (), ()
    base = use.gpus if use is not None else 0
    limit = base + (max_gpus if max_gpus is not None else 1 << 30)
    for g in groups:
        if len(g) < want:
            continue
        picked = []
        plain = 0  # GPUs among the picks that consume no counters (counted at the end)
        shared = False
        for d in g:
            i = d.id
            if i in a or i in b or i in c:
                continue
            if d.shared:
                if use is None or not use.fits(d):
                    continue
                use.add(d)
                shared = True
            else:
                plain += d.is_gpu
            picked.append(d)
            if len(picked) == want:
                break
        if len(picked) == want and (use.gpus if use is not None else 0) + plain <= limit:
            if use is not None:
                use.gpus += plain
            name = alt.name
            return [(name, d) for d in picked]
        if shared and use is not None:
            for d in picked:
                if d.shared:
                    use.remove(d)
    return None


def _natural(name: str) -> tuple[Any, ...]:
    head = name.rstrip("0123456789")
    tail = name[len(head) :]
    return (head, int(tail) if tail else -1, name)


def _search(
    spec: ClaimSpec,
    i: int,
    pool: list[Device],
    every: list[Device],
    used: set[tuple[str, str, str]],
    fixed: list[Any],
    out: list[Result],
    limit: int,
    use: Use,
    complete: bool = True,
) -> bool:
    if i == len(spec.requests):
        return True
    r = spec.requests[i]
    for alt in r.alternatives:
        applies = [
            (j, c)
            for j, c in enumerate(spec.constraints)
            if c.requests is None or r.name in c.requests or alt.name in c.requests
        ]
        cands = [d for d in pool if d.id not in used and all(matches(s, d) for s in alt.selectors)]
        if alt.all:
            # every matching device of the node, none of them taken or used already
            # (and every one known: no pool of the node being updated)
            if (
                not complete
                or not cands
                or sum(1 for d in every if all(matches(s, d) for s in alt.selectors)) != len(cands)
            ):
                continue
            groups = [cands]
        else:
            groups = _groups(cands, applies, fixed)
        for group in groups:
            picked = _pick(group, alt, applies, fixed, use)
            if picked is None:
                continue
            if use.gpus > limit:
                for d in picked:
                    use.remove(d)
                continue
            saved = [f if not isinstance(f, list) else list(f) for f in fixed]
            for j, c in applies:
                for d in picked:
                    v = repr(d.attributes.get(c.attribute))
                    if c.distinct:
                        fixed[j].append(v)
                    else:
                        fixed[j] = v
            for d in picked:
                used.add(d.id)
                out.append((alt.name, d))
            if _search(spec, i + 1, pool, every, used, fixed, out, limit, use, complete):
                return True
            for d in picked:
                used.discard(d.id)
                out.pop()
                use.remove(d)
            fixed[:] = saved
    return False


def _groups(
    cands: list[Device], applies: list[tuple[int, Constraint]], fixed: list[Any]
) -> list[list[Device]]:
    """The candidates split by the values of the match constraints not yet fixed (each
    group agrees on them), in value order; one group when none is open."""
    open_ = [(j, c) for j, c in applies if not c.distinct and fixed[j] is None]
    if not open_:
        return [cands]
    by: dict[tuple[str, ...], list[Device]] = {}
    for d in cands:
        vals = []
        for _, c in open_:
            v = d.attributes.get(c.attribute)
            if v is None:
                break
            vals.append(repr(v))
        else:
            by.setdefault(tuple(vals), []).append(d)
    return [by[k] for k in sorted(by)]


def _pick(
    group: list[Device],
    alt: Alternative,
    applies: list[tuple[int, Constraint]],
    fixed: list[Any],
    use: Use,
) -> list[Device] | None:
    """The group's devices for the alternative (counted in `use`), or None (nothing
    counted)."""
    want = len(group) if alt.all else alt.count
    got: list[Device] = []
    seen: dict[int, list[str]] = {j: list(fixed[j]) for j, c in applies if c.distinct}
    for d in group:
        ok = not d.shared or use.fits(d)
        for j, c in applies:
            v = d.attributes.get(c.attribute)
            if c.distinct:
                if v is None or repr(v) in seen[j]:
                    ok = False
                    break
            elif v is None or (fixed[j] is not None and fixed[j] != repr(v)):
                ok = False
                break
        if not ok:
            if alt.all:
                break  # every matching device must take part
            continue
        for j, c in applies:
            if c.distinct:
                seen[j].append(repr(d.attributes.get(c.attribute)))
        use.add(d)
        got.append(d)
        if len(got) == want:
            return got
    for d in got:
        use.remove(d)
    return None


# ------------------------------------------------------------------ the snapshot


@dataclass(eq=False)
class Claim:
    key: str  # namespace/name
    uid: str
    spec: ClaimSpec | None
    error: str | None  # why the spec cannot be allocated
    owner_pod: str | None  # namespace/name of the pod that owns it (template claims)
    node: str | None = None  # where its allocation is
    results: list[Result] | None = None
    reserved: tuple[dict[str, Any], ...] = ()
    obj: dict[str, Any] | None = None
    raw_spec: dict[str, Any] = field(default_factory=dict)


def allocation_node(allocation: Mapping[str, Any]) -> str | None:
    """The node an allocation's nodeSelector names (metadata.name or the hostname
    label), or None."""
    for term in (allocation.get("nodeSelector") or {}).get("nodeSelectorTerms") or ():
        for exprs in (term.get("matchFields") or (), term.get("matchExpressions") or ()):
            for e in exprs:
                if e.get("key") in ("metadata.name", "kubernetes.io/hostname") and e.get("values"):
                    return str(e["values"][0])
    return None


class Devices:
    """Devices by node, DeviceClasses, ResourceClaims and their allocations."""

    def __init__(self) -> None:
        self.slices: dict[str, tuple[str, list[Device]]] = {}  # slice name -> node, devices
        # node -> its slices' names, in the order they are in `slices` (a node's devices
        # and counter sets are gathered from its own slices, not by a walk over all)
        self.node_slices: dict[str, dict[str, None]] = {}
        # resource pools (driver, pool name) -> their node-local slices' names, and each
        # slice's pool, generation and resourceSliceCount: a node offers the devices and
        # counter sets of the slices of its pools' newest generation only, and a pool
        # with fewer (or more) slices of that generation than its count is incomplete
        # (kube's rules); node -> its incomplete pools, and its pools whose newest slices
        # repeat a device name (invalid: none of their devices is offered)
        self.pool_slices: dict[PoolKey, dict[str, None]] = {}
        self.slice_pools: dict[str, tuple[PoolKey, int, int]] = {}
        self.incomplete: dict[str, tuple[PoolKey, ...]] = {}
        self.invalid: dict[str, tuple[PoolKey, ...]] = {}
        self._by_node: dict[str, list[Device]] = {}
        self._by_id: dict[tuple[str, str, str], Device] = {}
        # slice changes not applied yet (name -> the slice, None when deleted), in the
        # order they came: while no claim is known nothing reads a device, so a cluster
        # that publishes every node's GPUs but schedules no claim never reads one
        self._deferred: dict[str, Mapping[str, Any] | None] = {}
        self.classes: dict[str, tuple[str, ...]] = {}
        self.claims: dict[str, Claim] = {}
        self.taken: dict[tuple[str, str, str], str] = {}  # device id -> claim key
        self.gpus_taken: dict[str, int] = {}  # node -> GPU devices allocated there
        # tentative allocations of a placement being tried: pod key -> [(claim, node,
        # results)], and the GPUs each such pod counts on its node beyond its request
        self.tentative: dict[str, list[tuple[str, str, list[Result]]]] = {}
        self.tentative_extra: dict[str, tuple[str, int]] = {}
        self.held: set[tuple[str, str, str]] = set()  # device ids held tentatively
        self.held_claims: dict[str, tuple[str, list[Result]]] = {}  # claim -> node, results
        # the last plan each pod held (commit takes it when it still holds) and the
        # plans worked out since anything changed (fits then holds: one search)
        self.last_held: dict[str, tuple[str, Plan]] = {}
        self.plans: dict[tuple[Any, ...], Plan | None] = {}
        # (pod, node) where the search over the pod's claims gave up (`_plan_search`)
        self.gave_up: set[tuple[str, str]] = set()
        self.version = 0
        self.gen = 0
        # claim specs read, by their JSON (claims alike share one ClaimSpec), and per
        # node the devices each one-request claim's alternative may take, grouped by
        # the attributes it matches (`_match_groups`; dropped when the node's devices
        # change)
        self.parsed: dict[bytes, tuple[ClaimSpec | None, str | None]] = {}
        self.trial_freed: dict[str, Claim] = {}  # claims a preemption trial gave back
        self.groups: dict[str, dict[tuple[str, tuple[str, ...]], list[list[Device]]]] = {}
        # shared counters (partitionable devices): what each node-local slice offers
        # (slice name -> node, sets), the sets by node, each set's counters, and the
        # amounts devices allocated and held draw from them; GPUs occupied by
        # allocated and held devices that consume counters (GPU -> how many), and the
        # allocated claims on each node
        self.counter_slices: dict[str, tuple[str, dict[CounterSetKey, dict[str, float]]]] = {}
        self.node_sets: dict[str, set[CounterSetKey]] = {}
        self._caps: dict[CounterSetKey, dict[str, float]] = {}
        self.consumed: dict[CounterSetKey, dict[str, float]] = {}
        self.held_consumed: dict[CounterSetKey, dict[str, float]] = {}
        self.unit_refs: dict[Any, int] = {}
        self.held_units: dict[Any, int] = {}
        # the compatibilityGroups of the devices allocated and held on each counter
        # set (groups -> how many devices)
        self.set_groups: dict[CounterSetKey, dict[frozenset[str], int]] = {}
        self.held_groups: dict[CounterSetKey, dict[frozenset[str], int]] = {}
        self.node_claims: dict[str, set[str]] = {}
        self._partitioned: set[str] = set()  # nodes with devices that consume counters

    # -- slices and classes

    def set_slice(self, obj: Mapping[str, Any]) -> set[str]:
        """A ResourceSlice added or changed; returns the nodes whose devices changed."""
        if not self.claims:
            return self._defer(o.name_of(obj), obj)
        self.apply_slices()
        return self._set_slice(obj)

    def remove_slice(self, name: str) -> set[str]:
        if not self.claims:
            return self._defer(name, None)
        self.apply_slices()
        return self._remove_slice(name)

    def _defer(self, name: str, obj: Mapping[str, Any] | None) -> set[str]:
        """Keep a slice's change (None: its deletion) until devices are asked for; the
        nodes whose devices it changes are the same as applied now."""
        old = self._deferred.pop(name, _ABSENT)
        if old is _ABSENT:
            got = self.slices.get(name)
            old_node = got[0] if got else ""
        else:
            old_node = slice_node(old) if old is not None else ""
        new_node = slice_node(obj) if obj is not None else ""
        if not old_node and not new_node and old is _ABSENT and name not in self.slices:
            return set()  # nothing there, nothing coming
        self._deferred[name] = obj
        changed = {n for n in (old_node, new_node) if n}
        for node in changed:
            self.changed()
            self.groups.pop(node, None)
            self.gen += 1
        return changed

    def apply_slices(self) -> None:
        """Apply the slice changes kept back, in the order they came."""
        while self._deferred:
            ops, self._deferred = self._deferred, {}
            for name, obj in ops.items():
                if obj is None:
                    self._remove_slice(name)
                else:
                    self._set_slice(obj)

    @property
    def by_node(self) -> dict[str, list[Device]]:
        """node -> its devices, in name order."""
        if self._deferred:
            self.apply_slices()
        return self._by_node

    @property
    def by_id(self) -> dict[tuple[str, str, str], Device]:
        """(driver, pool, device name) -> the device."""
        if self._deferred:
            self.apply_slices()
        return self._by_id

    @property
    def partitioned(self) -> set[str]:
        """Nodes with devices that consume counters."""
        if self._deferred:
            self.apply_slices()
        return self._partitioned

    @property
    def caps(self) -> dict[CounterSetKey, dict[str, float]]:
        """Each shared counter set's counters (partitionable devices)."""
        if self._deferred:
            self.apply_slices()
        return self._caps

    def _set_slice(self, obj: Mapping[str, Any]) -> set[str]:
        name = o.name_of(obj)
        changed = self._drop_slice(name)
        node, devs = slice_devices(obj)
        if node:
            self.slices[name] = (node, devs)
            self.node_slices.setdefault(node, {})[name] = None
            sets = slice_counters(obj)
            if sets:
                self.counter_slices[name] = (node, sets)
            pk = slice_pool(obj)
            self.slice_pools[name] = pk
            self.pool_slices.setdefault(pk[0], {})[name] = None
            changed |= self._pool_nodes(pk[0])
        for n in sorted(changed):
            self._index(n)
        return changed

    def _remove_slice(self, name: str) -> set[str]:
        changed = self._drop_slice(name)
        for n in sorted(changed):
            self._index(n)
        return changed

    def _drop_slice(self, name: str) -> set[str]:
        """Forget a slice; returns the nodes to index again (its own, and those of the
        other slices of its pool, whose newest generation it may have been)."""
        got = self.slices.pop(name, None)
        self.counter_slices.pop(name, None)
        if got is None:
            return set()
        mine = self.node_slices.get(got[0])
        if mine is not None:
            mine.pop(name, None)
            if not mine:
                del self.node_slices[got[0]]
        changed = {got[0]}
        pk = self.slice_pools.pop(name, None)
        if pk is not None:
            same = self.pool_slices.get(pk[0])
            if same is not None:
                same.pop(name, None)
                if not same:
                    del self.pool_slices[pk[0]]
                else:
                    changed |= self._pool_nodes(pk[0])
        return changed

    def _pool_nodes(self, pool: PoolKey) -> set[str]:
        return {self.slices[s][0] for s in self.pool_slices.get(pool, ())}

    def _current(self, node: str) -> list[str]:
        """The node's slices of its pools' newest generation (in the order they came),
        noting its incomplete and invalid pools."""
        own = self.node_slices.get(node, ())
        newest: dict[PoolKey, int] = {}
        out = []
        for name in own:
            pk, gen, _ = self.slice_pools[name]
            top = newest.get(pk)
            if top is None:
                top = newest[pk] = max(self.slice_pools[s][1] for s in self.pool_slices[pk])
            if gen == top:
                out.append(name)
        incomplete, invalid = [], []
        for pk, top in newest.items():
            latest = [s for s in self.pool_slices[pk] if self.slice_pools[s][1] == top]
            counts = {self.slice_pools[s][2] for s in latest}
            if len(counts) != 1 or len(latest) != next(iter(counts)):
                incomplete.append(pk)
            seen: set[str] = set()
            for s in latest:
                for d in self.slices[s][1]:
                    if d.name in seen:
                        invalid.append(pk)
                        break
                    seen.add(d.name)
                else:
                    continue
                break
        if incomplete:
            self.incomplete[node] = tuple(sorted(incomplete))
        else:
            self.incomplete.pop(node, None)
        if invalid:
            self.invalid[node] = tuple(sorted(invalid))
            bad = set(invalid)
            out = [s for s in out if self.slice_pools[s][0] not in bad]
        else:
            self.invalid.pop(node, None)
        return out

    def _index(self, node: str) -> None:
        self.changed()
        self.groups.pop(node, None)
        old = self._by_node.pop(node, [])
        for d in old:
            if self._by_id.get(d.id) is d:  # not a device since moved to another node
                del self._by_id[d.id]
        for sk in self.node_sets.pop(node, ()):
            self._caps.pop(sk, None)
        self._partitioned.discard(node)
        own = self._current(node)
        devs = sorted((d for name in own for d in self.slices[name][1]), key=lambda d: d.order)
        sets = [cs[1] for name in own if (cs := self.counter_slices.get(name)) is not None]
        if sets:
            mine = self.node_sets[node] = set()
            for ss in sets:
                for sk, counters in ss.items():
                    if sk not in self._caps:  # a set's name is unique in its pool
                        self._caps[sk] = counters
                        mine.add(sk)
        if devs:
            # a counter set a whole GPU draws on is that GPU: a partition drawing on
            # it occupies the GPU
            gpu_sets = {sk for d in devs if d.is_gpu and d.shared for sk, _ in d.consumes}
            if any(d.shared for d in devs):
                self._partitioned.add(node)
            else:
                self._partitioned.discard(node)
            self._by_node[node] = devs
            for d in devs:
                self._by_id[d.id] = d
                if d.shared:
                    d.units = tuple(sk for sk, _ in d.consumes if sk in gpu_sets) or d.units
        # claims allocated here before these devices were known (a claim seen before
        # its slice) hold their devices again by what the slices now say they consume
        for key in list(self.node_claims.get(node, ())):
            c = self.claims.get(key)
            if c is None or not c.results:
                continue
            if any(self._by_id.get(d.id, d) is not d for _, d in c.results):
                self._untake(c)
                c.results = [(r, self._by_id.get(d.id, d)) for r, d in c.results]
                self._take(c)
        self.gen += 1

    def set_class(self, obj: Mapping[str, Any]) -> None:
        self.classes[o.name_of(obj)] = class_selectors(obj)
        self._reparse()

    def remove_class(self, name: str) -> None:
        if self.classes.pop(name, None) is not None:
            self._reparse()

    def _reparse(self) -> None:
        self.changed()
        self.parsed.clear()
        for c in self.claims.values():
            c.spec, c.error = self._parse(c.raw_spec)
        self.gen += 1

    def _parse(self, spec: Mapping[str, Any]) -> tuple[ClaimSpec | None, str | None]:
        """The claim's spec read (one object for claims alike: a gang's claims made
        from one template share it, so their pods' class keys compare at once)."""
        try:
            text = orjson.dumps(spec, option=orjson.OPT_SORT_KEYS)
        except TypeError:
            text = None
        got = self.parsed.get(text) if text is not None else None
        if got is None:
            try:
                got = parse_claim(spec, self.classes), None
            except ClaimError as exc:
                got = None, str(exc)
            if text is not None:
                if len(self.parsed) >= 4096:
                    self.parsed.clear()
                self.parsed[text] = got
        return got

    # -- claims

    def set_claim(self, obj: Mapping[str, Any]) -> tuple[set[str], bool]:
        """A ResourceClaim added or changed. Returns the nodes whose GPUs taken changed
        and whether its allocation changed."""
        self.apply_slices()  # devices are read from here on
        key = o.key_of(obj)
        md = obj.get("metadata") or {}
        owner = None
        for ref in md.get("ownerReferences") or ():
            if ref.get("kind") == "Pod" and ref.get("controller"):
                owner = f"{md.get('namespace', '')}/{ref.get('name')}"
        raw = dict(obj.get("spec") or {})
        old = self.claims.get(key)
        if old is not None and old.raw_spec == raw:
            spec, error = old.spec, old.error
        else:
            spec, error = self._parse(raw)
        status = obj.get("status") or {}
        alloc = status.get("allocation")
        results: list[Result] | None = None
        node = None
        if alloc:
            node = allocation_node(alloc)
            results = []
            for r in (alloc.get("devices") or {}).get("results") or ():
                dev_id = (str(r.get("driver")), str(r.get("pool")), str(r.get("device")))
                d = self.by_id.get(dev_id) or Device(
                    dev_id[0], dev_id[1], dev_id[2], node or "", {}, {}
                )
                results.append((str(r.get("request") or ""), d))
        c = Claim(
            key,
            str(md.get("uid") or ""),
            spec,
            error,
            owner,
            node,
            results,
            tuple(status.get("reservedFor") or ()),
            dict(obj),
            raw,
        )
        same = old is not None and _ids(old.results) == _ids(results) and old.node == node
        nodes: set[str] = set()
        if not same:
            if old is not None:
                nodes |= self._untake(old)
            nodes |= self._take(c)
        self.claims[key] = c
        self.gen += 1
        return nodes, not same

    def remove_claim(self, key: str) -> set[str]:
        c = self.claims.pop(key, None)
        self.gen += 1
        return self._untake(c) if c is not None else set()

    def changed(self) -> None:
        self.version += 1
        if self.plans:
            self.plans.clear()
        if self.gave_up:
            self.gave_up.clear()

    def _take(self, c: Claim) -> set[str]:
        self.changed()
        if not c.results:
            return set()
        taken, key, gpus = self.taken, c.key, 0
        for _, d in c.results:
            taken[d.id] = key
            if d.shared:
                gpus += _count(d, self.consumed, self.unit_refs, self.set_groups, 1)
            else:
                gpus += d.is_gpu
        if c.node:
            on = self.node_claims.get(c.node)
            if on is None:
                on = self.node_claims[c.node] = set()
            on.add(key)
        if gpus and c.node:
            self.gpus_taken[c.node] = self.gpus_taken.get(c.node, 0) + gpus
        return {c.node} if c.node else set()

    def _untake(self, c: Claim) -> set[str]:
        self.changed()
        if not c.results:
            return set()
        taken, key, gpus = self.taken, c.key, 0
        for _, d in c.results:
            if taken.get(d.id) == key:
                del taken[d.id]
            if d.shared:
                gpus += _count(d, self.consumed, self.unit_refs, self.set_groups, -1)
            else:
                gpus += d.is_gpu
        if c.node:
            on = self.node_claims.get(c.node)
            if on is not None:
                on.discard(key)
                if not on:
                    del self.node_claims[c.node]
        if gpus and c.node:
            left = self.gpus_taken.get(c.node, 0) - gpus
            if left > 0:
                self.gpus_taken[c.node] = left
            else:
                self.gpus_taken.pop(c.node, None)
        return {c.node} if c.node else set()

    def record(self, key: str, node: str, results: list[Result]) -> None:
        """The policy allocated the claim (the driver writes it to the API)."""
        c = self.claims[key]
        if c.results:
            self._untake(c)
        c.node, c.results = node, list(results)
        self._take(c)
        self.gen += 1

    def forget(self, key: str, previous: tuple[str | None, list[Result] | None]) -> None:
        """Undo `record` (the API refused the write): the claim's allocation as it was."""
        c = self.claims.get(key)
        if c is None:
            return
        self._untake(c)
        c.node, c.results = previous
        self._take(c)
        self.gen += 1

    # -- tentative holds, for a placement being tried

    def hold(self, pod: str, claim: str, results: list[Result], node: str) -> None:
        self.changed()
        self.tentative.setdefault(pod, []).append((claim, node, results))
        self.held_claims[claim] = (node, results)
        for _, d in results:
            self.held.add(d.id)
            if d.shared:
                _count(d, self.held_consumed, self.held_units, self.held_groups, 1)

    def unhold(self, pod: str) -> None:
        self.changed()
        for claim, _, results in self.tentative.pop(pod, []):
            self.held_claims.pop(claim, None)
            for _, d in results:
                self.held.discard(d.id)
                if d.shared:
                    _count(d, self.held_consumed, self.held_units, self.held_groups, -1)

    def held_claim(self, claim: str) -> tuple[str, list[Result]] | None:
        """(node, results) of a claim held by a placement being tried."""
        return self.held_claims.get(claim)

    # -- claims given back for a preemption trial

    def trial_release(self, key: str) -> str | None:
        """A preemption trial took every pod holding the claim off its node: its
        devices count as free until `trial_restore` (its allocation stays written).
        Returns its node."""
        c = self.claims.get(key)
        if c is None or not c.results or key in self.trial_freed:
            return None
        self._untake(c)
        self.trial_freed[key] = c
        return c.node

    def trial_restore(self, key: str) -> str | None:
        """A pod holding a claim the trial gave back is put back: its devices are
        taken again. Returns its node."""
        c = self.trial_freed.pop(key, None)
        if c is None:
            return None
        self._take(c)
        return c.node

    def unavailable(self) -> _Unavailable:
        return _Unavailable(self.taken, self.held)


_NO_GROUPS: frozenset[str] = frozenset()


def _compatible(
    mine: frozenset[str], present: tuple[dict[frozenset[str], int] | None, ...]
) -> bool:
    """Whether a device with compatibilityGroups `mine` on a counter set may be
    allocated beside the devices allocated, held and picked there (their groups, with
    how many of each): all of them without groups, or the groups of all of them
    sharing at least one."""
    common = set(mine) if mine else None
    for counts in present:
        if not counts:
            continue
        for g in counts:
            if not g and not mine:
                continue
            if not g or not mine:
                return False
            assert common is not None
            common &= g
            if not common:
                return False
    return True


def _group_count(
    d: Device, groups: dict[CounterSetKey, dict[frozenset[str], int]], sign: int
) -> None:
    for i, (sk, _) in enumerate(d.consumes):
        g = d.groups[i] if d.groups else _NO_GROUPS
        m = groups.get(sk)
        if m is None:
            m = groups[sk] = {}
        left = m.get(g, 0) + sign
        if left > 0:
            m[g] = left
        else:
            m.pop(g, None)
            if not m:
                del groups[sk]


def _count(
    d: Device,
    consumed: dict[CounterSetKey, dict[str, float]],
    refs: dict[Any, int],
    groups: dict[CounterSetKey, dict[frozenset[str], int]],
    sign: int,
) -> int:
    """Add (sign 1) or take back (-1) what a device that consumes counters draws, its
    compatibility groups and the GPUs it occupies; returns how many GPUs became
    occupied (or free)."""
    _group_count(d, groups, sign)
    for sk, amounts in d.consumes:
        m = consumed.get(sk)
        if m is None:
            m = consumed[sk] = {}
        for cn, v in amounts:
            left = m.get(cn, 0.0) + sign * v
            if sign < 0 and left <= 1e-9 * max(v, 1.0):
                m.pop(cn, None)
            else:
                m[cn] = left
        if not m:
            del consumed[sk]
    n = 0
    for u in d.units:
        r = refs.get(u, 0) + sign
        if r > 0:
            refs[u] = r
            n += r == 1 and sign > 0
        else:
            refs.pop(u, None)
            n += r == 0 and sign < 0
    return n


class _Unavailable:
    __slots__ = ("taken", "held")

    def __init__(self, taken: Mapping[Any, Any], held: set[Any]) -> None:
        self.taken, self.held = taken, held

    def __contains__(self, dev_id: object) -> bool:
        return dev_id in self.taken or dev_id in self.held


def _ids(results: list[Result] | None) -> list[tuple[str, tuple[str, str, str]]] | None:
    return None if results is None else [(r, d.id) for r, d in results]


# ------------------------------------------------------------------ a pod's claims


def pod_claim_keys(pod: Mapping[str, Any]) -> tuple[tuple[str, ...], str | None]:
    """The keys of the ResourceClaims a pod uses (in spec order), and why it cannot be
    scheduled yet when a claim made from a template has no name in its status."""
    md = pod.get("metadata") or {}
    ns = md.get("namespace") or ""
    spec = pod.get("spec") or {}
    entries = spec.get("resourceClaims") or ()
    if not entries:
        return (), None
    made = {
        s.get("name"): s.get("resourceClaimName")
        for s in (pod.get("status") or {}).get("resourceClaimStatuses") or ()
    }
    keys = []
    for e in entries:
        if e.get("resourceClaimName"):
            keys.append(f"{ns}/{e['resourceClaimName']}")
        elif e.get("resourceClaimTemplateName"):
            got = made.get(e.get("name"))
            if not got:
                return tuple(keys), (
                    f"waiting for the ResourceClaim of template {e['resourceClaimTemplateName']}"
                    f" (pod claim {e.get('name')}) to be made"
                )
            keys.append(f"{ns}/{got}")
    return tuple(keys), None


def allocation_status(node: str, results: list[Result]) -> dict[str, Any]:
    """`status.allocation` of a claim allocated on a node."""
    return {
        "devices": {
            "results": [
                {"request": r, "driver": d.driver, "pool": d.pool, "device": d.name}
                for r, d in results
            ]
        },
        "nodeSelector": {
            "nodeSelectorTerms": [
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}
            ]
        },
    }


# ------------------------------------------------------------------ pods on nodes
#
# What the placement rooms call for a pod with claims (`PodInfo.claims`): the pod's
# record carries the state's `Devices` (`PodInfo.dra`) and the GPU devices of its own
# unallocated claims counted in its nvidia.com/gpu request (`PodInfo.dra_demand`), so
# the free-room indexes see them; claims shared with others count when allocated.

CANNOT_ALLOCATE = "node(s) cannot allocate all claims"
Plan = list[tuple[str, list[Result]]]


def cannot_why(p: PodInfo, n: NodeInfo) -> str:
    """Why the pod's claims cannot be allocated on the node (its plan is None): a
    request for all matching devices while a pool of the node is being updated (a
    newer generation not all published yet) says so; else CANNOT_ALLOCATE."""
    dv: Devices = p.dra
    if (p.key, n.name) in dv.gave_up:
        return SEARCH_GAVE_UP.format(SEARCH_TRIES)
    pools = dv.incomplete.get(n.name)
    if pools:
        for key in p.claims:
            c = dv.claims.get(key)
            if c is not None and c.results is None and c.spec is not None:
                if any(a.all for r in c.spec.requests for a in r.alternatives):
                    return (
                        "node(s) cannot allocate all devices of a claim: a resource pool"
                        " is being updated"
                    )
    return CANNOT_ALLOCATE


def static_why(p: PodInfo, n: NodeInfo) -> str | None:
    """Why the node can never take the pod for its claims as they stand (a claim not
    made yet, unknown, unreadable, or allocated on another node)."""
    if p.claim_wait:
        return p.claim_wait
    dv: Devices = p.dra
    for key in p.claims:
        c = dv.claims.get(key)
        if c is None:
            return f"ResourceClaim {key} not found"
        if c.results is not None:
            if c.node != n.name:
                return "node(s) didn't match the node of an allocated claim"
        elif c.error:
            return f"ResourceClaim {key}: {c.error}"
    return None


def plan(p: PodInfo, n: NodeInfo) -> Plan | None:
    """Devices on the node for each of the pod's claims not yet allocated (nor held by
    another pod of the placement being tried), or None when they cannot all be had."""
    dv: Devices = p.dra
    memo = (p.key, n.name, dv.version, n.alloc[_GPU], n.used[_GPU], p.req[_GPU], p.dra_demand)
    if memo in dv.plans:
        return dv.plans[memo]
    got = _plan(p, n, dv)
    dv.plans[memo] = got
    return got


def _unallocated(p: PodInfo, n: NodeInfo, dv: Devices) -> list[tuple[str, ClaimSpec]] | None:
    """The pod's claims still to allocate on the node (key and spec, in the pod's order),
    or None when one cannot be had there: unknown or without a spec, allocated on
    another node, or held on another node by a pod of the placement being tried."""
    todo: list[tuple[str, ClaimSpec]] = []
    for key in p.claims:
        c = dv.claims.get(key)
        if c is None or (c.results is None and c.spec is None):
            return None
        if c.results is not None:
            if c.node != n.name:
                return None
            continue
        held = dv.held_claim(key)
        if held is not None:
            if held[0] != n.name:
                return None
            continue
        assert c.spec is not None  # an unallocated claim without one returned above
        todo.append((key, c.spec))
    return todo


def _plan(p: PodInfo, n: NodeInfo, dv: Devices) -> Plan | None:
    budget = (
        n.alloc[_GPU] - n.used[_GPU] - p.req[_GPU] + p.dra_demand if n.alloc[_GPU] > 0 else 1 << 30
    )
    out: Plan = []
    mine: set[tuple[str, str, str]] = set()
    # the counter bookkeeping only where devices consume counters; elsewhere the GPU
    # devices picked so far are counted here
    use = Use(dv) if n.name in dv.partitioned else None
    spent = 0
    todo = _unallocated(p, n, dv)
    if todo is None:
        return None
    for key, spec in todo:
        if spec.simple:
            alt = spec.requests[0].alternatives[0]
            # _simple_groups, inlined: this is the hot path of a gang's claims
            per = dv.groups.get(n.name)
            if per is None:
                per = dv.groups[n.name] = {}
            gk = (alt.key, spec.match)
            groups = per.get(gk)
            if groups is None:
                if len(per) >= 64:
                    per.clear()
                groups = per[gk] = _match_groups(alt, spec.match, dv.by_node.get(n.name, ()))
            got = _pick_simple(groups, alt, _Either3(dv.taken, dv.held, mine), budget - spent, use)
        else:
            got = allocate(
                spec,
                dv.by_node.get(n.name, ()),
                _Either3(dv.taken, dv.held, mine),
                budget - spent,
                use,
                n.name not in dv.incomplete,
            )
        if got is None:
            # each claim took its first fit: another choice for the ones before may
            # leave room for this one
            return _plan_search(p, n, dv, budget) if len(p.claims) > 1 else None
        for _, d in got:
            mine.add(d.id)
        spent = use.gpus if use is not None else spent + sum(1 for _, d in got if d.is_gpu)
        out.append((key, got))
    return out


def _simple_groups(dv: Devices, node: str, spec: ClaimSpec) -> list[list[Device]]:
    """The node's devices a one-request claim may take, grouped by the attributes it
    matches (kept per node until its devices change)."""
    alt = spec.requests[0].alternatives[0]
    per = dv.groups.get(node)
    if per is None:
        per = dv.groups[node] = {}
    gk = (alt.key, spec.match)
    groups = per.get(gk)
    if groups is None:
        if len(per) >= 64:
            per.clear()
        groups = per[gk] = _match_groups(alt, spec.match, dv.by_node.get(node, ()))
    return groups


# The most allocations of single claims the search over a pod's claims tries on one
# node before it gives up (`_plan_search`): a pod's claims rarely number more than a
# few, and each has as many choices as the device groups its constraints allow.
SEARCH_TRIES = 512
SEARCH_GAVE_UP = "node(s) cannot allocate all claims: the search gave up after {} tries"


def _plan_search(p: PodInfo, n: NodeInfo, dv: Devices, budget: int) -> Plan | None:
    """The pod's claims on the node when taking each one's first fit in turn failed:
    a search that backtracks over each claim's choices (for a one-request claim every
    group of devices alike in its matched attributes that can take it, in value order;
    for another, the allocator's one answer), at most SEARCH_TRIES single-claim
    allocations; past them it gives up (None, and the node's reason says so)."""
    todo = _unallocated(p, n, dv)
    if todo is None:
        return None
    use = Use(dv) if n.name in dv.partitioned else None
    mine: set[tuple[str, str, str]] = set()
    out: Plan = []
    tries = [0]
    devices = dv.by_node.get(n.name, ())
    complete = n.name not in dv.incomplete

    def undo(got: list[Result]) -> None:
        for _, d in got:
            mine.discard(d.id)
            if use is not None:
                use.remove(d)

    def options(spec: ClaimSpec, left: int) -> Iterable[list[Result]]:
        unavailable = _Either3(dv.taken, dv.held, mine)
        if spec.simple:
            alt = spec.requests[0].alternatives[0]
            for g in _simple_groups(dv, n.name, spec):
                if tries[0] >= SEARCH_TRIES:
                    return
                tries[0] += 1
                got = _pick_simple([g], alt, unavailable, left, use)
                if got is not None:
                    yield got
        else:
            if tries[0] >= SEARCH_TRIES:
                return
            tries[0] += 1
            got = allocate(spec, devices, unavailable, left, use, complete)
            if got is not None:
                yield got

    def go(i: int, spent: int) -> bool:
        if i == len(todo):
            return True
        key, spec = todo[i]
        for got in options(spec, budget - spent):
            for _, d in got:
                mine.add(d.id)
            now = use.gpus if use is not None else spent + sum(1 for _, d in got if d.is_gpu)
            out.append((key, got))
            if go(i + 1, now):
                return True
            out.pop()
            undo(got)
        return False

    if go(0, 0):
        dv.gave_up.discard((p.key, n.name))
        return out
    if tries[0] >= SEARCH_TRIES:
        dv.gave_up.add((p.key, n.name))
    return None


class _Either3:
    __slots__ = ("a", "b", "c")

    def __init__(self, a: Any, b: Any, c: Any) -> None:
        self.a, self.b, self.c = a, b, c

    def __contains__(self, x: object) -> bool:
        return x in self.a or x in self.b or x in self.c


class _Either:
    __slots__ = ("a", "b")

    def __init__(self, a: Any, b: Any) -> None:
        self.a, self.b = a, b

    def __contains__(self, x: object) -> bool:
        return x in self.a or x in self.b


def pod_fits(p: PodInfo, n: NodeInfo) -> bool:
    return not p.claim_wait and static_why(p, n) is None and plan(p, n) is not None


def hold(p: PodInfo, n: NodeInfo) -> None:
    """The pod is put on the node for a trial: its claims' devices are held, and GPUs
    beyond what its request counts are counted on the node until `unhold`."""
    got = plan(p, n) or []
    dv: Devices = p.dra
    extra = max(gpus_occupied(dv, got) - p.dra_demand, 0)
    dv.tentative_extra[p.key] = (n.name, extra)
    n.used[_GPU] += extra
    for key, results in got:
        dv.hold(p.key, key, results, n.name)
    dv.last_held[p.key] = (n.name, got)


def unhold(p: PodInfo, n: NodeInfo) -> None:
    dv: Devices = p.dra
    got = dv.tentative_extra.pop(p.key, None)
    if got is not None:
        n.used[_GPU] -= got[1]
    dv.unhold(p.key)


def commit(p: PodInfo, n: NodeInfo) -> Plan | None:
    """Allocate the pod's claims on the node for good (the policy binds it there): the
    devices are taken, the node's GPUs allocatable shrinks by the GPU devices taken and
    the pod's request by what it counted of them. None (nothing changed) when they
    cannot be had."""
    dv: Devices = p.dra
    last = dv.last_held.pop(p.key, None)
    got = last[1] if last is not None and last[0] == n.name and _holds(p, n, last[1]) else None
    if got is None:
        got = plan(p, n)
    if got is None:
        return None
    for key, results in got:
        dv.record(key, n.name, results)
    sync_node(dv, n)
    p.req[_GPU] -= p.dra_demand
    p.dra_demand = 0
    return got


def _holds(p: PodInfo, n: NodeInfo, got: Plan) -> bool:
    """Whether a plan the pod held in its placement still stands now: every claim it
    covers unallocated and held by no one, every device free, the GPUs within what
    the node's extended resource leaves, and every other claim of the pod satisfied
    on the node already. (A pass runs without the informers: the devices themselves
    cannot have changed since.)"""
    dv: Devices = p.dra
    taken, held, claims = dv.taken, dv.held, dv.claims
    use = None
    gpus = 0
    for key, results in got:
        c = claims.get(key)
        if c is None or c.results is not None or key in dv.held_claims:
            return False
        for _, d in results:
            if d.id in taken or d.id in held:
                return False
            if d.shared:
                if use is None:
                    use = Use(dv)
                if not use.fits(d):
                    return False
                use.add(d)
            else:
                gpus += d.is_gpu
    if use is not None:
        gpus += use.gpus
    if len(got) != len(p.claims):
        covered = {k for k, _ in got}
        for key in p.claims:
            if key not in covered:
                c = claims.get(key)
                if c is None or c.results is None or c.node != n.name:
                    return False
    return n.alloc[_GPU] <= 0 or gpus <= n.alloc[_GPU] - n.used[_GPU] - p.req[_GPU] + p.dra_demand


def gpus_occupied(dv: Devices, got: Plan) -> int:
    """The GPUs a plan's devices occupy that no allocated or held device occupies."""
    use = None
    gpus = 0
    for _, results in got:
        for _, d in results:
            if d.shared:
                if use is None:
                    use = Use(dv)
                use.add(d)
            else:
                gpus += d.is_gpu
    return gpus + (use.gpus if use is not None else 0)


def sync_node(dv: Devices, n: NodeInfo) -> int:
    """Count the GPU devices allocated on the node in its used nvidia.com/gpu (at most
    its allocatable: a node that publishes no extended resource lends it nothing);
    returns the change."""
    counted = min(dv.gpus_taken.get(n.name, 0), max(n.alloc[_GPU], 0))
    delta = counted - n.dra_gpus
    if delta:
        n.used[_GPU] += delta
        n.dra_gpus = counted
    return delta


def demand(dv: Devices, pod_key: str, claims: tuple[str, ...]) -> int:
    """The GPU devices a pod's own unallocated claims take at least (claims made for
    it from templates; shared claims count once allocated)."""
    k = 0
    for key in claims:
        c = dv.claims.get(key)
        if c is not None and c.results is None and c.spec is not None and c.owner_pod == pod_key:
            k += c.spec.gpus_at_least
    return k


def signature(dv: Devices, claims: tuple[str, ...]) -> tuple[Any, ...]:
    """What of a pod's claims its filters read, for its class of pods: pods whose
    claims ask for the same devices alike are of one class (a gang of pods each with
    its own claim from one template is one class), whatever the claims' names."""
    out: list[Any] = []
    for key in claims:
        c = dv.claims.get(key)
        if c is None:
            out.append(key)  # not found: the key is in its reason
        elif c.error is not None or c.spec is None:
            out.append((key, c.error))
        else:
            out.append((c.node, c.spec, c.owner_pod is None))
    return tuple(out)
