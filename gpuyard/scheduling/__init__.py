"""gpuyard.scheduling: the gang scheduler, one room per decision.

The policy is pure (a `ClusterState` and the policy's `Memory` in, `Decisions` out) and
shared line for line by the two drivers: the live scheduler (scheduler.py, fed by
informers) and the digital twin (gpuyard.twin.engine, fed by a trace).

    decision or concern                      module
    ---------------------------------------  ----------------------------------------
    the snapshot: nodes, pods, PodGroups,     state.py         ClusterState, NodeInfo,
      PriorityClasses and the change logs                      PodInfo, GroupInfo
    the policy's memory across passes         memory.py        Memory
    what the policy is told and answers,      config.py        PolicyConfig, Decisions,
      and how both drivers take the answer                     Eviction, Sink, deliver
    the pass, top-down as a story             policy.py        schedule, Pass
    filters and fit (taints, selectors,       filters.py       static_ok, anti_ok, fits,
      affinity, anti-affinity, resources)                      capacity
    pod affinity and anti-affinity on any     affinity.py      Constraints, Topology
      key, topology spread, preferred node
      affinity: filters and scores that
      depend on where other pods run (bound
      pods' terms both ways), and the
      PreferNoSchedule taint score
    indexes: candidates per class of pods,    indexes.py       candidates, Buckets,
      free-room buckets, gang index                            GangIndex
    the queue: units, shapes, lanes           queue.py         Unit, shape_of, Queue
    placement: single best fit, gang order    placement.py     place
      and fill
    holds (reservations' and nominations'     holds.py         Holds, Hold, HeldCap
      nodes)
    reservations: a gang's estimated start,   reservations.py  reserve, estimate
      which nodes it holds and when
    preemption: the victim index, which       preemption.py    Victims, preempt
      victims (checkpoint-aware: least work
      lost since the start or
      gpuyard.io/last-checkpoint (or the
      twin's set_checkpoint) first),
      evictions and nominations
    fair sharing between teams by weight:     state.py         set_teams, team_outside
      GPUs outside each team's own nodes;     policy.py        Pass.run (lane order)
      equal-priority work of the team with    preemption.py    over_share
      the fewest per weight first; victims
      of teams over their share first
    device claims (DRA): the devices nodes    dra.py           Devices, allocate, plan,
      publish, classes, claims, the allocator                  commit
      (count, All, CEL selectors,
      matchAttribute, firstAvailable); a
      pod's claims on a node, held in a trial
      and allocated with its unit
    failure memos: when a failed unit is      memos.py         Memo, memo_of,
      sure to fail again                                       still_fails
    topology: levels from node labels, a      topology.py      Request, place, why,
      gang's required and preferred levels                     domains, reserve_rows
      and slices, its domain's placement,
      its reason and its reservation
    the topology dialects (upstream,          dialects.py      pod_request,
      Kueue, KAI, Volcano) in that model                       upstream_request,
                                                               volcano_request
    reasons a person can read                 reasons.py       explain, Reasons
    gang timeouts, minMember, minResources    policy.py        Pass.gang_ready
    the live driver and binder                scheduler.py     Scheduler
    the PodGroup CRD                          crds.py
    the upstream scheduling.k8s.io PodGroup   upstream.py      group_info, group_key
      in the one group model; its status
      conditions
    CompositePodGroup (v1alpha3): the         composite.py     layout
      PodGroups under a gang composite are    state.py         set_composite
      one unit (`group_alias`)
    Volcano's scheduling.volcano.sh PodGroup  volcano.py       group_info, status
      in the one group model; its status
    `gpuyard scheduler`, the component        cli.py, component.py

Arrows between the rooms point one way: policy.py calls the rooms; preemption uses
placement, memos and indexes; placement, reservations and memos use indexes, holds and
filters; placement, preemption and reasons use affinity, which reads only the state;
placement, reservations and reasons use topology, which reads the state and filters
(the state and upstream read requests with dialects); the queue reads only the state. The rooms' functions take the pass
(`policy.Pass`: the state, the memory, this pass's decisions, holds, preemption trial
and failed shapes) as their first argument: what they change lives in the pass (for
this pass) or in the memory (across passes), nowhere else.

To change how preemption picks its victims, open preemption.py (`Victims.order` gives
the order victims are taken in, `_preempt` the choice).
"""
