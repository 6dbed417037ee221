"""The policy's memory across passes, in one place: what it learned about one
`ClusterState` that stays true until the state says otherwise.

- indexes over the nodes (candidates per class of pods, best-fit buckets, gang
  indexes, per-class capacity of empty nodes, topology domains): valid while no node is added, removed,
  relabelled, retainted or changes readiness (`state.node_gen`); nodes whose use
  changed (`state.dirty_nodes`) are told to the buckets and gang indexes;
- failure memos of units and of lanes (memos.py), dropped with the indexes;
- the queue of pending units (queue.py), updated from `state.queue_pods` and
  `state.queue_groups`;
- the preemption victim index (preemption.py), updated from `state.bound_log`;
- the gangs whose reservations hold (reservations.py), until they leave the queue,
  and those of them whose estimated start a higher-priority binding made stale.

The state holds nodes, pods, groups and the change logs; the memory reads the logs
and empties them. One memory follows one state: the live scheduler and the twin each
keep theirs beside their state."""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gpuyard.scheduling.state import ClusterState, NodeInfo

if TYPE_CHECKING:
    from gpuyard.scheduling.holds import Hold
    from gpuyard.scheduling.indexes import Buckets, ClassKey, GangIndex
    from gpuyard.scheduling.memos import Failure, Memo
    from gpuyard.scheduling.preemption import Victims
    from gpuyard.scheduling.queue import LaneId, Queue


@dataclass(eq=False)
class Memory:
    node_gen: int = -1  # the state's node_gen the node indexes were made for
    # static candidates of each class of pods, as a list, a set of names, positions
    classes: dict[ClassKey, list[NodeInfo]] = field(default_factory=dict)
    cand_names: dict[ClassKey, set[str]] = field(default_factory=dict)
    cand_pos: dict[ClassKey, dict[str, int]] = field(default_factory=dict)
    # per (class, requests): how many such pods each candidate holds when empty (> 0)
    alloc_caps: dict[ClassKey, dict[str, int]] = field(default_factory=dict)
    # per (class, mode): the candidates bucketed by free room for best fit
    buckets: dict[ClassKey, Buckets] = field(default_factory=dict)
    # per (class, requests) of gang pods: capacity summed per rack and zone
    gang_index: dict[ClassKey, GangIndex] = field(default_factory=dict)
    # per tuple of topology keys: node -> its domain of them (topology.domains)
    domains: dict[tuple[str, ...], dict[str, tuple[str, ...]]] = field(default_factory=dict)
    # unit of the loose lane -> its failure; lane -> (its failure, head unit)
    blocked: dict[str, Failure] = field(default_factory=dict)
    lane_blocked: dict[LaneId, tuple[Memo, str, Hold | None, str]] = field(default_factory=dict)
    queue: Queue | None = None
    victims: Victims | None = None
    # gangs that hold their reservation in every pass until they run: unit -> (since
    # when, the nodes it held in the last pass)
    committed: dict[str, tuple[float, frozenset[str]]] = field(default_factory=dict)
    # committed gangs whose estimated start is out of date: work of higher priority
    # was bound on nodes they hold; their failure memo no longer holds (memos.py)
    stale: set[str] = field(default_factory=set)
    # the state this memory follows (weakly: a memory kept beside a state must not
    # keep it alive)
    _state: weakref.ReferenceType[ClusterState] | None = field(default=None, repr=False)

    def follow(self, s: ClusterState) -> None:
        """Bring the node indexes up to date with what changed in the state."""
        if self._state is None:
            self._state = weakref.ref(s)
        elif self._state() is not s:
            raise ValueError(
                "this policy memory follows another ClusterState: keep one Memory per state"
            )
        if self.node_gen != s.node_gen:
            self.node_gen = s.node_gen
            self.classes = {}
            self.cand_names = {}
            self.cand_pos = {}
            self.alloc_caps = {}
            self.buckets = {}
            self.gang_index = {}
            self.domains = {}
            self.blocked = {}
            self.lane_blocked = {}
            s.dirty_nodes.clear()
        if s.dirty_nodes and (self.buckets or self.gang_index):
            for name in sorted(s.dirty_nodes):
                n = s.nodes.get(name)
                if n is not None:
                    self.moved(n)
        s.dirty_nodes.clear()

    def moved(self, n: NodeInfo) -> None:
        """A node's use changed (a pod bound or left)."""
        for bk in self.buckets.values():
            bk.moved(n)
        for gi in self.gang_index.values():
            gi.moved(n)
