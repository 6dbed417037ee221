"""Pod affinity, pod anti-affinity, topology spread and preferred node affinity: the
filters and scores that depend on where other pods run, as kube-scheduler's
InterPodAffinity, PodTopologySpread and NodeAffinity plugins define them.

`Constraints` is what a pod asks for (parsed once, from its spec, by `parse`);
`Topology` answers for one placement attempt: it counts, per term and per topology
domain (the value of the term's topologyKey on a node), the pods that match, once
over the bound pods, and keeps the counts as the attempt places pods tentatively (a
gang's members see each other). `Topology.why_not(p, n)` is the filter (None: the
node passes; else kube-scheduler's reason), `Topology.score(p, n)` the preference
(higher is better).

Filters, as kube defines them:

- required pod affinity: on a node whose domain (for every term) holds a matching
  pod; a pod that matches its own terms may go anywhere while no pod matches any of
  them (the first of a group);
- required pod anti-affinity: not on a node whose domain holds a matching pod, and
  not where a bound pod's required anti-affinity term matches this pod (symmetry);
- topology spread, DoNotSchedule: the node has the constraint's key, and placing the
  pod there keeps matching pods in its domain within maxSkew of the least loaded
  eligible domain (0 when fewer than minDomains domains exist). Eligible domains are
  those of nodes that pass nodeAffinityPolicy (Honor, the default: the pod's
  nodeSelector and required node affinity) and nodeTaintsPolicy (Ignore, the
  default; Honor: the pod tolerates the node's taints) and carry every key the pod's
  constraints name; terminating pods are not counted. matchLabelKeys add the pod's
  own values of those labels to the selector.

Terms match pods in the pod's namespace unless they name `namespaces` or a
`namespaceSelector` (an empty one: every namespace; one with terms: namespaces whose
labels the driver told the state, `ClusterState.namespace_labels`). A nil
labelSelector matches no pod. The hostname key falls back to the node's name on nodes
without the label.

Scores (gpuyard's policy, on kube's scale), each normalised to 0..100 over the
feasible nodes and added with kube-scheduler's default plugin weights:

- preferred node affinity (NodeAffinity, weight 2): the sum of the weights of the
  matching terms;
- inter-pod affinity (InterPodAffinity, weight 2), both ways: the pod's own
  preferred terms count weight times the matching pods in the node's domain (anti
  counted negative); and, for symmetry, a bound pod whose preferred affinity
  (anti-affinity) term matches this pod adds (takes) that term's weight on every
  node in the bound pod's domain, and one whose required affinity term matches
  adds 1 (kube's hardPodAffinityWeight);
- ScheduleAnyway spread (PodTopologySpread, weight 2): fewer matching pods in the
  domain is better;
- PreferNoSchedule taints (TaintToleration, weight 3): 100 × (1 − the node's
  untolerated PreferNoSchedule taints / the most any feasible node has). These
  taints are never a filter.

The node with the highest sum wins; best fit (fewest free GPUs, then least free
cpu) breaks ties; a gang fills its nodes by score, its usual order breaking ties.

Pods with none of these filters (and that no bound pod's anti-affinity term on
another key than the hostname names) never filter through a `Topology`: they keep
the fast path (hostname anti-affinity there is `filters.anti_ok`). A pod that only
scores (`scored`: its own preferences, a bound pod's terms naming it, or a
PreferNoSchedule taint it does not tolerate somewhere) is placed from a scan of
its candidates; what fails it is what fails the fast path, so its failure memos
still hold.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gpuyard import names
from gpuyard.kube import objects as o

if TYPE_CHECKING:
    from gpuyard.scheduling.state import ClusterState, NodeInfo, PodInfo

Reqs = tuple[tuple[str, str, tuple[str, ...]], ...]

ANTI_OWN = "node(s) didn't match pod anti-affinity rules"
ANTI_EXISTING = "node(s) didn't satisfy existing pods anti-affinity rules"
AFFINITY = "node(s) didn't match pod affinity rules"
SPREAD = "node(s) didn't match pod topology spread constraints"
SPREAD_LABEL = "node(s) didn't match pod topology spread constraints (missing required label)"
PLUGIN_WEIGHT = 2  # kube-scheduler's default weight of NodeAffinity, InterPodAffinity, spread
TAINT_WEIGHT = 3  # and of TaintToleration
HARD_AFFINITY_WEIGHT = 1  # kube's hardPodAffinityWeight: a bound pod's required affinity term


def _reqs(selector: Mapping[str, Any] | None) -> Reqs | None:
    """A label selector as requirements; None: it matches nothing (nil, or invalid)."""
    if selector is None:
        return None
    try:
        return tuple(o.label_selector_requirements(selector))
    except (o.SelectorError, AttributeError, TypeError):
        return None


@dataclass(frozen=True)
class Term:
    """One pod (anti-)affinity term, or one spread constraint's selector."""

    reqs: Reqs | None  # None: matches no pod
    key: str  # topologyKey
    namespaces: frozenset[str]  # named namespaces (with the selector: either matches)
    ns_reqs: Reqs | None  # namespaceSelector; () : every namespace; None: not given
    own_ns: str  # the pod's namespace: used when neither is given
    weight: int = 0

    def matches(self, q: PodInfo, ns_labels: Mapping[str, Mapping[str, str]]) -> bool:
        if self.reqs is None:
            return False
        ns = q.key.split("/", 1)[0]
        if self.ns_reqs is None and not self.namespaces:
            if ns != self.own_ns:
                return False
        elif ns not in self.namespaces and (
            self.ns_reqs is None or not o.requirements_match(self.ns_reqs, ns_labels.get(ns))
        ):
            return False
        return o.requirements_match(self.reqs, q.labels)


@dataclass(frozen=True)
class Spread:
    term: Term
    max_skew: int
    hard: bool  # DoNotSchedule (else ScheduleAnyway)
    min_domains: int
    honor_affinity: bool  # nodeAffinityPolicy Honor
    honor_taints: bool  # nodeTaintsPolicy Honor


@dataclass(frozen=True)
class Constraints:
    affinity: tuple[Term, ...] = ()  # required pod affinity
    anti: tuple[Term, ...] = ()  # required pod anti-affinity (every key)
    pref_affinity: tuple[Term, ...] = ()
    pref_anti: tuple[Term, ...] = ()
    spread: tuple[Spread, ...] = ()
    pref_nodes: tuple[tuple[int, Any], ...] = ()  # (weight, nodeSelectorTerm)

    @property
    def scores(self) -> bool:
        return bool(
            self.pref_affinity
            or self.pref_anti
            or self.pref_nodes
            or any(not c.hard for c in self.spread)
        )

    @property
    def symmetric(self) -> bool:
        """Whether, once bound, its terms score nodes for other pods."""
        return bool(self.pref_affinity or self.pref_anti or self.affinity)


def _term(t: Mapping[str, Any], ns: str, weight: int = 0) -> Term:
    nss = t.get("namespaceSelector")
    return Term(
        reqs=_reqs(t.get("labelSelector")),
        key=str(t.get("topologyKey") or ""),
        namespaces=frozenset(str(x) for x in t.get("namespaces") or ()),
        ns_reqs=None if nss is None else (_reqs(nss) or ()),
        own_ns=ns,
        weight=weight,
    )


def _weighted(items: Iterable[Mapping[str, Any]], ns: str) -> tuple[Term, ...]:
    return tuple(
        _term(w.get("podAffinityTerm") or {}, ns, int(w.get("weight") or 0)) for w in items
    )


def parse(spec: Mapping[str, Any], ns: str, labels: Mapping[str, str]) -> Constraints | None:
    """What the pod asks for beyond the static filters; None for most pods. Required
    anti-affinity on the hostname key alone stays with `filters.anti_ok`."""
    aff = spec.get("affinity")
    if not aff and not spec.get("topologySpreadConstraints"):
        return None  # most pods: nothing to parse
    aff = aff or {}
    pa = aff.get("podAffinity") or {}
    paa = aff.get("podAntiAffinity") or {}
    na = aff.get("nodeAffinity") or {}
    required_anti = [
        _term(t, ns) for t in paa.get("requiredDuringSchedulingIgnoredDuringExecution") or ()
    ]
    plain_host = all(
        t.key == names.LABEL_HOSTNAME and not t.namespaces and t.ns_reqs is None
        for t in required_anti
    )
    spread = []
    for c in spec.get("topologySpreadConstraints") or ():
        sel = c.get("labelSelector")
        keys = [k for k in c.get("matchLabelKeys") or () if k in labels]
        if sel is not None and keys:
            sel = {
                "matchLabels": dict(sel.get("matchLabels") or {}),
                "matchExpressions": [
                    *(sel.get("matchExpressions") or ()),
                    *({"key": k, "operator": "In", "values": [labels[k]]} for k in keys),
                ],
            }
        spread.append(
            Spread(
                term=Term(_reqs(sel), str(c.get("topologyKey") or ""), frozenset(), None, ns),
                max_skew=max(1, int(c.get("maxSkew") or 1)),
                hard=(c.get("whenUnsatisfiable") or "DoNotSchedule") == "DoNotSchedule",
                min_domains=int(c.get("minDomains") or 1),
                honor_affinity=(c.get("nodeAffinityPolicy") or "Honor") == "Honor",
                honor_taints=(c.get("nodeTaintsPolicy") or "Ignore") == "Honor",
            )
        )
    got = Constraints(
        affinity=tuple(
            _term(t, ns) for t in pa.get("requiredDuringSchedulingIgnoredDuringExecution") or ()
        ),
        anti=() if plain_host else tuple(required_anti),
        pref_affinity=_weighted(
            pa.get("preferredDuringSchedulingIgnoredDuringExecution") or (), ns
        ),
        pref_anti=_weighted(paa.get("preferredDuringSchedulingIgnoredDuringExecution") or (), ns),
        spread=tuple(spread),
        pref_nodes=tuple(
            (int(w.get("weight") or 0), w.get("preference") or {})
            for w in na.get("preferredDuringSchedulingIgnoredDuringExecution") or ()
        ),
    )
    return None if got == Constraints() else got


def domain(n: NodeInfo, key: str) -> str | None:
    v = n.labels.get(key)
    if v is None and key == names.LABEL_HOSTNAME:
        return n.name
    return v


def _node_obj(n: NodeInfo) -> Mapping[str, Any]:
    return n.obj or {"metadata": {"name": n.name, "labels": n.labels}}


def wide_anti_against(s: ClusterState, p: PodInfo) -> bool:
    """Whether a bound pod's required anti-affinity term outside the hostname fast
    path names this pod."""
    ns_labels = s.namespace_labels
    return any(
        q.key != p.key and t.matches(p, ns_labels)
        for q in s.anti_wide.values()
        if q.constraints is not None
        for t in q.constraints.anti
    )


def untolerated_prefer(p: PodInfo, n: NodeInfo) -> int:
    """How many of the node's PreferNoSchedule taints the pod does not tolerate."""
    return sum(1 for t in n.prefer_taints if not o.tolerates(p.tolerations, t))


def symmetric_for(s: ClusterState, p: PodInfo) -> bool:
    """Whether a bound pod's preferred (anti-)affinity or required affinity term names
    this pod (then it scores the nodes for it)."""
    ns_labels = s.namespace_labels
    for q in s.soft_wide.values():
        c = q.constraints
        if c is not None and q.key != p.key:
            for t in (*c.affinity, *c.pref_affinity, *c.pref_anti):
                if t.matches(p, ns_labels):
                    return True
    return False


def scored(s: ClusterState, p: PodInfo) -> bool:
    """Whether the nodes may score differently for the pod (`Topology.scores`)."""
    c = p.constraints
    return (
        (c is not None and c.scores)
        or (
            bool(s.prefer_taints)
            and any(not o.tolerates(p.tolerations, t) for _, t in s.prefer_taints.values())
        )
        or (bool(s.soft_wide) and symmetric_for(s, p))
    )


def constrained(s: ClusterState, p: PodInfo) -> bool:
    """Whether the pod needs a `Topology` to be placed (the slower path)."""
    return p.constraints is not None or (bool(s.anti_wide) and wide_anti_against(s, p))


class Topology:
    """Counts of matching pods per term and domain, for one placement attempt."""

    def __init__(self, s: ClusterState) -> None:
        self.s = s
        self.ns_labels = s.namespace_labels
        self.counts: dict[Term, Counter[str]] = {}  # term -> domain -> matching pods
        # required affinity terms of a pod -> (key, domain) -> pods matching all of them
        self.aff_counts: dict[tuple[Term, ...], Counter[tuple[str, str]]] = {}
        self.spread_counts: dict[Any, tuple[PodInfo, Spread, tuple[str, ...], Counter[str]]] = {}
        self.placed: list[tuple[PodInfo, NodeInfo]] = []
        self._forbidden: dict[str, tuple[PodInfo, set[tuple[str, str]]]] = {}

    # ------------------------------------------------------------------ counting

    def _count(self, t: Term) -> Counter[str]:
        c = self.counts.get(t)
        if c is None:
            c = Counter()
            if t.reqs is not None:
                for n in self.s.nodes.values():
                    if n.pods:
                        v = domain(n, t.key)
                        if v is not None:
                            k = sum(1 for q in n.pods.values() if t.matches(q, self.ns_labels))
                            if k:
                                c[v] += k
            self.counts[t] = c
        return c

    def _matches_all(self, terms: tuple[Term, ...], q: PodInfo) -> bool:
        return all(t.matches(q, self.ns_labels) for t in terms)

    def _aff(self, terms: tuple[Term, ...]) -> Counter[tuple[str, str]]:
        c = self.aff_counts.get(terms)
        if c is None:
            c = Counter()
            for n in self.s.nodes.values():
                if n.pods:
                    k = sum(1 for q in n.pods.values() if self._matches_all(terms, q))
                    if k:
                        self._add_aff(c, terms, n, k)
            self.aff_counts[terms] = c
        return c

    @staticmethod
    def _add_aff(c: Counter[tuple[str, str]], terms: tuple[Term, ...], n: NodeInfo, k: int) -> None:
        for t in terms:
            v = domain(n, t.key)
            if v is not None:
                c[(t.key, v)] += k

    def _eligible(self, p: PodInfo, c: Spread, keys: tuple[str, ...], n: NodeInfo) -> bool:
        if any(domain(n, k) is None for k in keys):
            return False
        if c.honor_affinity:
            for k, v in p.node_selector:
                if n.labels.get(k) != v:
                    return False
            if p.affinity is not None and not any(
                o.node_selector_term_matches(term, _node_obj(n)) for term in p.affinity
            ):
                return False
        return not c.honor_taints or all(o.tolerates(p.tolerations, t) for t in n.taints)

    def _spread(self, p: PodInfo, c: Spread) -> Counter[str]:
        """Spread constraint `c` of pod `p`: matching pods per eligible domain (every
        eligible domain is there, with 0 when it holds none)."""
        assert p.constraints is not None
        keys = tuple(sorted({x.term.key for x in p.constraints.spread}))
        ident = (c, keys, repr(p.tolerations), p.node_selector, repr(p.affinity))
        got = self.spread_counts.get(ident)
        if got is None:
            cnt: Counter[str] = Counter()
            t = c.term
            for n in self.s.nodes.values():
                if not self._eligible(p, c, keys, n):
                    continue
                v = domain(n, t.key)
                assert v is not None
                cnt[v] += sum(
                    1 for q in n.pods.values() if not q.terminating and t.matches(q, self.ns_labels)
                )
            got = self.spread_counts[ident] = (p, c, keys, cnt)
        return got[3]

    def _anti_pairs(self, q: PodInfo, n: NodeInfo, p: PodInfo, f: set[tuple[str, str]]) -> None:
        if q.constraints is None or q.key == p.key:
            return
        for t in q.constraints.anti:
            if t.matches(p, self.ns_labels):
                v = domain(n, t.key)
                if v is not None:
                    f.add((t.key, v))

    def forbidden(self, p: PodInfo) -> set[tuple[str, str]]:
        """(topologyKey, value) pairs where a bound (or tentatively placed) pod's
        required anti-affinity term outside the hostname fast path names this pod."""
        got = self._forbidden.get(p.key)
        if got is None:
            f: set[tuple[str, str]] = set()
            for q in self.s.anti_wide.values():
                n = self.s.nodes.get(q.node or "")
                if n is not None and q.key in n.pods:
                    self._anti_pairs(q, n, p, f)
            for q, n in self.placed:
                if q.key not in self.s.anti_wide:
                    self._anti_pairs(q, n, p, f)
            got = self._forbidden[p.key] = (p, f)
        return got[1]

    def place(self, q: PodInfo, n: NodeInfo) -> None:
        """A pod was placed tentatively on the node (it is in n.pods): count it."""
        self.placed.append((q, n))
        ns_labels = self.ns_labels
        for t, c in self.counts.items():
            if t.matches(q, ns_labels):
                v = domain(n, t.key)
                if v is not None:
                    c[v] += 1
        for terms, ac in self.aff_counts.items():
            if self._matches_all(terms, q):
                self._add_aff(ac, terms, n, 1)
        for p, sp, keys, cnt in self.spread_counts.values():
            if (
                not q.terminating
                and sp.term.matches(q, ns_labels)
                and self._eligible(p, sp, keys, n)
            ):
                v = domain(n, sp.term.key)
                if v is not None:
                    cnt[v] += 1
        for p, f in self._forbidden.values():
            self._anti_pairs(q, n, p, f)

    # ------------------------------------------------------------------ the filter

    def why_not(self, p: PodInfo, n: NodeInfo) -> str | None:
        """None: the node passes the pod's inter-pod filters; else kube's reason, in
        kube's order (own affinity, own anti-affinity, existing pods' anti-affinity,
        then spread)."""
        c = p.constraints
        if c is None:
            return self._existing(p, n)
        if c.affinity:
            ac = self._aff(c.affinity)
            exist = True
            for t in c.affinity:
                v = domain(n, t.key)
                if v is None:
                    return AFFINITY  # every key must be on the node
                if ac[(t.key, v)] <= 0:
                    exist = False
            # the first of a group with affinity to itself may go anywhere
            if not exist and not (not any(ac.values()) and self._matches_all(c.affinity, p)):
                return AFFINITY
        for t in c.anti:
            v = domain(n, t.key)
            if v is not None and self._count(t)[v] > 0:
                return ANTI_OWN
        if (why := self._existing(p, n)) is not None:
            return why
        for sp in c.spread:
            if not sp.hard:
                continue
            v = domain(n, sp.term.key)
            if v is None:
                return SPREAD_LABEL
            cnt = self._spread(p, sp)
            least = min(cnt.values()) if cnt and len(cnt) >= sp.min_domains else 0
            me = 1 if sp.term.matches(p, self.ns_labels) else 0
            if cnt.get(v, 0) + me - least > sp.max_skew:
                return SPREAD
        return None

    def _existing(self, p: PodInfo, n: NodeInfo) -> str | None:
        if self.s.anti_wide or self.placed:
            f = self.forbidden(p)
            if f and any(domain(n, k) == v for k, v in f):
                return ANTI_EXISTING
        return None

    # ------------------------------------------------------------------ scores

    def scores(self, p: PodInfo, nodes: list[NodeInfo]) -> dict[str, float]:
        """node -> preference score (0..900) over these feasible nodes."""
        c = p.constraints
        out = dict.fromkeys((n.name for n in nodes), 0.0)
        if not nodes:
            return out
        parts: list[tuple[dict[str, float], bool]] = []  # (raw, lower is better)
        if c is not None and c.pref_nodes:
            raw = {}
            for n in nodes:
                obj = _node_obj(n)
                raw[n.name] = float(
                    sum(w for w, term in c.pref_nodes if o.node_selector_term_matches(term, obj))
                )
            parts.append((raw, False))
        theirs = self._symmetric(p)
        if (c is not None and (c.pref_affinity or c.pref_anti)) or theirs:
            raw = {}
            for n in nodes:
                sc = 0.0
                if c is not None:
                    for t in c.pref_affinity:
                        v = domain(n, t.key)
                        if v is not None:
                            sc += t.weight * self._count(t)[v]
                    for t in c.pref_anti:
                        v = domain(n, t.key)
                        if v is not None:
                            sc -= t.weight * self._count(t)[v]
                for key, by_value in theirs.items():
                    v = domain(n, key)
                    if v is not None:
                        sc += by_value.get(v, 0)
                raw[n.name] = sc
            parts.append((raw, False))
        soft = [sp for sp in c.spread if not sp.hard] if c is not None else []
        if soft:
            raw = {}
            for n in nodes:
                sc = 0.0
                for sp in soft:
                    v = domain(n, sp.term.key)
                    # a node without the key scores worst
                    sc += float(1 << 20) if v is None else self._spread(p, sp).get(v, 0)
                raw[n.name] = sc
            parts.append((raw, True))
        for raw, lower in parts:
            lo, hi = min(raw.values()), max(raw.values())
            span = hi - lo
            for name, x in raw.items():
                norm = 100.0 if not span else 100.0 * ((hi - x) if lower else (x - lo)) / span
                out[name] += PLUGIN_WEIGHT * norm
        if self.s.prefer_taints:
            bad = {n.name: untolerated_prefer(p, n) for n in nodes if n.prefer_taints}
            most = max(bad.values(), default=0)
            for name in out:
                out[name] += TAINT_WEIGHT * 100.0 * (1 - bad.get(name, 0) / most if most else 1)
        return out

    def _symmetric(self, p: PodInfo) -> dict[str, Counter[str]]:
        """topologyKey -> domain -> what bound (and tentatively placed) pods' terms that
        name this pod add to nodes in that domain: a preferred term's weight (anti
        negative), hardPodAffinityWeight for a required affinity term."""
        out: dict[str, Counter[str]] = {}
        ns_labels = self.ns_labels
        pairs: list[tuple[PodInfo, NodeInfo]] = []
        for q in self.s.soft_wide.values():
            n = self.s.nodes.get(q.node or "")
            if n is not None and q.key in n.pods:
                pairs.append((q, n))
        pairs.extend((q, n) for q, n in self.placed if q.key not in self.s.soft_wide)
        for q, n in pairs:
            c = q.constraints
            if c is None or q.key == p.key:
                continue
            for terms, sign in (
                (c.pref_affinity, 1),
                (c.pref_anti, -1),
                (c.affinity, 0),
            ):
                for t in terms:
                    if not t.matches(p, ns_labels):
                        continue
                    v = domain(n, t.key)
                    if v is not None:
                        w = sign * t.weight if sign else HARD_AFFINITY_WEIGHT
                        out.setdefault(t.key, Counter())[v] += w
        return out
