"""The digital twin's discrete-event engine, in virtual time.

It drives `gpuyard.scheduling.policy.schedule` unchanged — the very function the live
scheduler runs — over a `ClusterState` built from node shapes, and takes its decisions
through the same interface (the engine is a `gpuyard.scheduling.config.Sink`). Events: job arrivals,
completions, node failures and repairs (a repaired node is back only after its
preflight test), and Xid-style faults that kill the jobs on a node. A job runs only
when every one of its pods is bound (that is what a gang means); when it loses a pod
to a failure or a preemption, the whole gang restarts from its last checkpoint and
the work since then is counted as lost goodput. All events at one virtual instant are
applied before the policy runs once.

With `teams` (Team objects) the nodes are carved as the team manager carves them and
each pod passes the team webhook's mutation before it enters the scheduling state, so
team taints, affinity to the team's nodes or the shared pool, and borrowing by
gpuyard-low work follow the live rules (gpuyard.twin.capacity); a job is in the
namespace named by its team. With `balloons` every node of a pool gets a balloon pod
that the policy places and evicts first; an evicted balloon waits, Pending, again.

MIG: nodes whose shape says `mig: true` (on GPUs that can be partitioned) publish
their GPUs as partitionable devices, as the simulated DRA driver does live; a job whose
trace asks for MIG slices (`mig_profile`, `mig_slices`) gives each pod a ResourceClaim
for them, allocated by the policy with the counters a GPU's slices share (a whole GPU
is never handed out beside its slices) and deleted with the pod.

Checkpoints: a job checkpoints every `checkpoint_interval` seconds of its run (the
trace's, or the replay's `checkpoint_interval` for jobs whose trace gives none), and a
restart loses the work since its last checkpoint. Its trainer says so as a live one
does, on its first pod (rank 0 writes the checkpoint), in the record the policy reads
(`PodInfo.checkpoint`, which the `gpuyard.io/last-checkpoint` annotation sets live):
when the job starts, then at each checkpoint of its run, brought up to date before
each pass. So preemption picks its victims as the live scheduler does
(gpuyard.scheduling.preemption: least work lost first); with `victims="plain"` no pod
says, and it picks as it does for trainers that say nothing. Work lost to preemption is
counted apart from work lost to failures (`JobRun.preempted_lost_gpu_s`).
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gpuyard import names
from gpuyard.cliargs import SHARE
from gpuyard.cluster import simdevices
from gpuyard.cluster.shapes import NodeShape
from gpuyard.k8s.durations import parse_duration
from gpuyard.scheduling import dra
from gpuyard.scheduling.filters import capacity as node_capacity
from gpuyard.scheduling.filters import static_ok
from gpuyard.scheduling.policy import Eviction, Memory, PolicyConfig, deliver, schedule
from gpuyard.scheduling.reasons import Reasons
from gpuyard.scheduling.state import GPU, ClusterState, GroupInfo, PodInfo
from gpuyard.scheduling.topology import DEFAULT_LEVELS, Request, domain_of_all
from gpuyard.teams.assign import TeamSpec
from gpuyard.twin import capacity
from gpuyard.twin.traces import TraceJob

# The most node failures a replay may expect to simulate (each is an event and a
# scheduling pass): an mtbf so short that a run would practically never end is refused.
MAX_EXPECTED_FAILURES = 1_000_000


class FailureSpecError(ValueError):
    """A failure spec that this cluster and trace cannot be replayed with."""


@dataclass(frozen=True)
class FailureSpec:
    """`mtbf=30d,xid=0.1,repair=4h,preflight=20m`: each node fails on average once per
    mtbf; a share `xid` of failures are GPU faults that kill its jobs and need only a
    reset and preflight, the rest take the node away for repair, then preflight."""

    mtbf: float = 0.0
    xid: float = 0.0
    repair: float = 4 * 3600.0
    preflight: float = 20 * 60.0

    @classmethod
    def parse(cls, text: str | None) -> FailureSpec:
        if not text:
            return cls()
        vals: dict[str, float] = {}
        for part in text.split(","):
            key, sep, value = part.partition("=")
            key = key.strip()
            if not sep or key not in ("mtbf", "xid", "repair", "preflight"):
                raise ValueError(
                    f"bad failure spec {part!r}: expected mtbf=, xid=, repair=, preflight="
                )
            try:
                vals[key] = SHARE.parse(value) if key == "xid" else parse_duration(value)
            except ValueError as exc:
                raise ValueError(f"bad failure spec {part.strip()!r}: {exc}") from None
        return cls(**vals)

    def expected_failures(self, nodes: int, span: float) -> float:
        """About how many node failures `nodes` nodes have in `span` seconds: each node
        fails once per mtbf while up, then is away for preflight (and repair, unless the
        failure was a GPU fault)."""
        if self.mtbf <= 0 or span <= 0:
            return 0.0
        away = self.preflight + (1 - self.xid) * self.repair
        return nodes * span / (self.mtbf + away)


@dataclass
class JobRun:
    job: TraceJob
    gen: int = 0
    pods: list[str] = field(default_factory=list)
    bound: int = 0
    running: bool = False
    last_start: float = 0.0
    progress: float = 0.0
    first_start: float | None = None
    end: float | None = None
    restarts: int = 0
    preemptions: int = 0
    lost_gpu_s: float = 0.0  # GPU-seconds of work lost to restarts (failures, preemption)
    preempted_lost_gpu_s: float = 0.0  # ...of which to preemption
    interval: float = 0.0  # seconds between its checkpoints; 0: none (a restart loses all)
    partial_since: float | None = None
    partial_gpu_s: float = 0.0

    @property
    def gpus(self) -> int:
        return self.job.gpus * self.job.replicas


@dataclass
class Result:
    policy: str
    jobs: list[JobRun]
    samples: list[tuple[float, int, int, float]]  # (t, allocated GPUs, running GPUs, fragmentation)
    total_gpus: int
    end_time: float
    passes: int
    events: int
    node_failures: int
    xid_faults: int
    counts: dict[str, int] = field(default_factory=dict)
    team_weights: dict[str, float] = field(default_factory=dict)  # with --teams
    # with room=True, per sample: the GPUs that waiting work could have taken at that
    # instant on top of what was allocated (see Engine._room)
    room: list[int] | None = None


# how preemption picks victims of equal priority in a replay (see Engine)
VICTIMS = ("checkpoint", "plain")

POLICIES: dict[str, PolicyConfig] = {
    "fifo": PolicyConfig(gangs=False, reservations=False, preemption=False, explain=False),
    "gangs": PolicyConfig(gangs=True, reservations=False, preemption=True, explain=False),
    "gpuyard": PolicyConfig(explain=False),
}


def never_fitting(
    shapes: list[NodeShape], jobs: list[TraceJob], topology: Request | None = None
) -> list[tuple[TraceJob, str]]:
    """The jobs that could never run on these nodes, each with why: all its replicas
    bound at once would need more CPU, memory or GPUs, of its GPU model, than the nodes
    have even when empty (with a required topology level, its own or the replay's, than
    one domain of it has). Such a job could only wait forever, and its pods are made
    when it arrives."""
    out: list[tuple[TraceJob, str]] = []
    # per tuple of required levels: per domain (the cluster: ()), its alike nodes
    alike: dict[tuple[str, ...], dict[tuple[str, ...], dict[tuple[int, int, int, str], int]]] = {}

    def groups(required: tuple[str, ...]) -> list[dict[tuple[int, int, int, str], int]]:
        got = alike.get(required)
        if got is None:
            got = alike[required] = {}
            for s in shapes:
                key = (s.cpu_milli, s.memory_bytes, s.gpus, s.gpu_product)
                dom = domain_of_all(DEFAULT_LEVELS, required, capacity.shape_labels(s))
                if dom is not None:
                    counts = got.setdefault(dom, {})
                    counts[key] = counts.get(key, 0) + 1
        return list(got.values())

    fits: dict[tuple[Any, ...], float] = {}  # how many replicas fit at once
    default = topology.required if topology else ()
    mig = any(s.mig and simdevices.can_partition(s) for s in shapes)
    for j in jobs:
        if j.mig_slices and not mig:
            out.append(
                (
                    j,
                    f"job {j.name!r} can never run on this cluster of {len(shapes)} nodes: "
                    f"it claims MIG slices ({j.mig_slices} of {j.mig_profile}) and no node "
                    "shape publishes its GPUs as MIG devices (mig: true on an A100, H100, "
                    "H200 or B200 shape)",
                )
            )
            continue
        required = (j.required_topology,) if j.required_topology else default
        if j.replicas == 1:
            required = ()
        need = (j.cpu_milli, j.memory, j.gpus, j.gpu_model, required)
        n = fits.get(need)
        if n is None:
            n = max((_fit(j, a) for a in groups(required)), default=0.0)
            fits[need] = n
        if n < j.replicas:
            model = f" {j.gpu_model}" if j.gpu_model else ""
            inside_of = f"one {' and one '.join(required)} of " if required else ""
            why = (
                f"job {j.name!r} can never run on {inside_of}this cluster of {len(shapes)} "
                f"nodes: it needs {j.replicas} replica(s) of {j.gpus}{model} GPU(s), "
                f"{j.cpu_milli} mCPU and {j.memory} bytes of memory at once, and at most "
                f"{n:.0f} fit"
            )
            out.append((j, why))
    return out


def _fit(j: TraceJob, alike: dict[tuple[int, int, int, str], int]) -> float:
    n = 0.0
    for (cpu, mem, gpus, product), count in alike.items():
        if j.gpu_model and product != j.gpu_model:
            continue
        wants = ((cpu, j.cpu_milli), (mem, j.memory), (gpus, j.gpus))
        per = [have // want for have, want in wants if want > 0]
        n += count * min(per) if per else math.inf
    return n


def mig_claim(pod_key: str, profile: str, count: int) -> dict[str, Any]:
    """The ResourceClaim a replica of a trace's job makes for its MIG slices (as from
    its ResourceClaimTemplate, owned by the pod): `count` devices of the mig.nvidia.com
    class of the profile (`1g.18gb`; `1g`: that compute size whatever its memory)."""
    ns, name = pod_key.split("/", 1)
    attr = f'device.attributes["{dra.DRIVER}"].{dra.ATTR_PROFILE}'
    sel = f'{attr} == "{profile}"' if "." in profile else f'{attr}.startsWith("{profile}.")'
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {
            "name": f"{name}-mig",
            "namespace": ns,
            "uid": f"claim-{pod_key}",
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "Pod", "name": name, "controller": True}
            ],
        },
        "spec": {
            "devices": {
                "requests": [
                    {
                        "name": "mig",
                        "exactly": {
                            "deviceClassName": dra.MIG_CLASS,
                            "count": count,
                            "selectors": [{"cel": {"expression": sel}}],
                        },
                    }
                ]
            }
        },
    }


class Engine:
    def __init__(
        self,
        shapes: list[NodeShape],
        jobs: list[TraceJob],
        policy: str = "gpuyard",
        failures: FailureSpec | None = None,
        seed: int = 0,
        samples: int = 400,
        progress: Callable[[float], None] | None = None,
        batch: float = 0.0,
        teams: list[TeamSpec] | None = None,
        balloons: bool = False,
        record_bindings: bool = False,
        skip_never_fitting: bool = False,
        runtimes: bool = True,
        topology: Request | None = None,
        checkpoint_interval: float = 0.0,
        victims: str = "checkpoint",
        room: bool = False,
    ) -> None:
        """batch: 0 runs the policy at every virtual instant where something changed;
        B > 0 runs it on ticks every B seconds (like the live scheduler's debounce, longer),
        fewer passes for long replays. record_bindings: keep every binding, in the order
        the policy made them, as (virtual time, pod key, node) in `bindings`. A job that
        could never run on `shapes` (see never_fitting) is a ValueError naming it, or with
        skip_never_fitting left out of the replay and counted. runtimes: every job says how
        long it runs (its duration; what is left of it after a restart), as a pod's
        activeDeadlineSeconds or gpuyard.io/expected-runtime annotation would; False:
        none does. topology: what every gang (a job of more than one replica) needs of
        the nodes' topology, as a PodGroup would ask it (say, required inside one
        nvidia.com/gpu.clique); the shapes' labels make the domains.
        checkpoint_interval: seconds between checkpoints of the jobs whose trace gives
        none (0: they do not checkpoint). victims: "checkpoint", every job that
        checkpoints says when it last did, and preemption takes the victims that lose
        the least work first; "plain", none says (see the module's docstring).
        room: at each sample, also count the GPUs that waiting work could have taken
        then (`Result.room`, see _room; `gpuyard twin bench` bounds allocation by it)."""
        if policy not in POLICIES:
            raise ValueError(f"unknown policy {policy!r}; known: {', '.join(POLICIES)}")
        if victims not in VICTIMS:
            raise ValueError(f"unknown victims {victims!r}; known: {', '.join(VICTIMS)}")
        if not checkpoint_interval >= 0:
            raise ValueError(f"checkpoint interval {checkpoint_interval!r}: must be 0 or more")
        self.say_checkpoints = victims == "checkpoint"
        self.policy = policy
        self.cfg = POLICIES[policy]
        self.runtimes = runtimes
        self.failures = failures or FailureSpec()
        self.rng = random.Random(seed)
        self.state = ClusterState()
        self.memory = Memory()  # what the policy keeps across passes over the state
        self.total_gpus = 0
        self.teams = capacity.Teams(teams) if teams else None
        owner = capacity.carve(teams, shapes).owner if teams else {}
        if teams:
            # the shared pool and borrowed nodes are divided by the teams' weights, as
            # the live scheduler divides them (a job's namespace is its team)
            self.state.set_teams(
                {t.name: t.weight for t in teams},
                {ns: t.name for t in teams for ns in t.namespaces},
            )
        self.team_weights = {t.name: t.weight for t in teams} if teams else {}
        if teams or balloons:
            for pc, value in names.PRIORITY_CLASSES.items():
                self.state.set_priority_class(pc, value, pc == names.PRIORITY_BALLOON)
        for s in shapes:
            labels = capacity.shape_labels(s)
            team_labels, taints = capacity.team_decoration(owner.get(s.name))
            self.state.add_node_fast(
                s.name,
                {"cpu": s.cpu_milli, "memory": s.memory_bytes, names.RESOURCE_GPU: s.gpus},
                {**labels, **team_labels},
                taints,
            )
            self.total_gpus += s.gpus
        # nodes whose shape says mig publish their GPUs as partitionable devices, as the
        # simulated DRA driver does live (gpuyard.cluster.simdevices): MIG slices are
        # claimed and allocated by the policy's own counter bookkeeping (dra.py)
        mig = [s for s in shapes if s.mig and simdevices.can_partition(s)]
        if mig:
            self.state.set_device_class(simdevices.device_class())
            self.state.set_device_class(simdevices.mig_device_class())
            for s in mig:
                for sl in simdevices.resource_slices(s, mig=True):
                    self.state.set_resource_slice(sl)
        self.refused: list[str] = []  # jobs the team webhook refused
        self.balloons: dict[str, dict[str, Any]] = {}  # key -> pod object
        self.balloon_evictions = 0
        if balloons:
            self._add_balloons(shapes)
        self.topology = topology or None
        unfit = never_fitting(shapes, jobs, self.topology)
        if unfit and not skip_never_fitting:
            raise ValueError(unfit[0][1])
        self.skipped = len(unfit) if skip_never_fitting else None
        if unfit:
            skip = {id(j) for j, _ in unfit}
            jobs = [j for j in jobs if id(j) not in skip]
        self.runs = {j.name: JobRun(j, interval=j.checkpoint or checkpoint_interval) for j in jobs}
        # (next checkpoint, job, generation) of running jobs whose pods say it
        self._checkpoint_due: list[tuple[float, str, int]] = []
        if len(self.runs) != len(jobs):
            seen: set[str] = set()
            for j in jobs:
                if j.name in seen:
                    raise ValueError(f"job {j.name!r}: two jobs have this name")
                seen.add(j.name)
        self.pod_job: dict[str, JobRun] = {}
        self.pod_claims: dict[str, str] = {}  # pod key -> the key of its MIG claim
        self.heap: list[tuple[float, int, str, Any]] = []
        self._seq = 0
        self.horizon = max((j.submit for j in jobs), default=0.0)
        self.n_samples = samples
        self.progress = progress
        self.allocated = 0
        self.running_gpus = 0
        self.samples: list[tuple[float, int, int, float]] = []
        self.room: list[int] | None = [] if room else None
        self._static: dict[tuple[Any, str], bool] = {}  # (class key, node) -> static_ok
        # free GPUs per ready node, and their sums, as of the last sample (_sample)
        self._free: dict[str, tuple[int, int]] = {}
        self._free_total = 0
        self._free_fragmented = 0
        self.passes = 0
        self.events = 0
        self.node_failures = 0
        self.xid_faults = 0
        self.down: set[str] = set()
        self._arriving: list[JobRun] = []
        self.batch = batch
        self.bindings: list[tuple[float, str, str]] | None = [] if record_bindings else None
        # what the pass being delivered decided to evict (see evict)
        self._now = 0.0
        self._victims: dict[str, JobRun] = {}
        self._evicted_balloons: list[str] = []
        for j in jobs:
            self._push(j.submit, "arrive", j.name)
        if self.balloons:
            self._push(0.0, "tick", None)  # balloons fill the idle cluster first
        # Failures happen while work can still be running; after that the queue drains.
        self.fail_until = self.horizon + max((j.duration for j in jobs), default=0.0)
        if self.failures.mtbf > 0:
            expected = self.failures.expected_failures(len(self.state.nodes), self.fail_until)
            if expected > MAX_EXPECTED_FAILURES:
                raise FailureSpecError(
                    f"failure spec mtbf={self.failures.mtbf:g}s: {len(self.state.nodes)} nodes "
                    f"over the {self.fail_until:.0f} s of this replay would fail about "
                    f"{expected:.0f} times, more than the {MAX_EXPECTED_FAILURES} a replay "
                    f"simulates; give a longer mtbf"
                )
            for name in self.state.nodes:
                self._push_failure(0.0, name)

    def _add_balloons(self, shapes: list[NodeShape]) -> None:
        for pod in capacity.balloons_for(shapes):
            key = f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
            self.balloons[key] = pod
            self.state.add_pod(pod)

    def _balloon_back(self, key: str) -> None:
        """An evicted balloon is gone and its controller makes it again, Pending."""
        self.balloon_evictions += 1
        self.state.remove_pod(key)
        self.state.add_pod(self.balloons[key])

    def _push_failure(self, now: float, node: str) -> None:
        t = now + self.rng.expovariate(1 / self.failures.mtbf)
        if t < self.fail_until:
            self._push(t, "fail", node)

    def _push(self, t: float, kind: str, data: Any) -> None:
        self._seq += 1
        heapq.heappush(self.heap, (t, self._seq, kind, data))

    # ------------------------------------------------------------------ jobs

    def _add_pods(self, run: JobRun) -> None:
        self._add_pods_many([run])

    def _add_pods_many(self, runs: list[JobRun]) -> None:
        """Create the pods of jobs that arrive at one instant. As a controller creating
        several gangs at once does, their pods are interleaved (replica 0 of each job,
        then replica 1, ...), so without gang scheduling they bind one by one."""
        for run in runs:
            j = run.job
            group = f"{j.team}/{j.name}" if j.replicas > 1 else None
            if group and group not in self.state.groups:
                own = Request(required=(j.required_topology,)) if j.required_topology else None
                self.state.set_group(
                    GroupInfo(
                        group,
                        min_member=j.replicas,
                        created=j.submit,
                        topology=own or self.topology,
                    )
                )
            run.pods = []
            run.bound = 0
        for i in range(max((r.job.replicas for r in runs), default=0)):
            for run in runs:
                j = run.job
                if i >= j.replicas:
                    continue
                key = f"{j.team}/{j.name}-g{run.gen}-{i}"
                req = {"cpu": j.cpu_milli, "memory": j.memory, names.RESOURCE_GPU: j.gpus}
                group = f"{j.team}/{j.name}" if j.replicas > 1 else None
                runtime = max(0.0, j.duration - run.progress) if self.runtimes else None
                if self.teams is not None or j.mig_slices:
                    made = capacity.job_pod(
                        key,
                        req,
                        j.priority,
                        group,
                        j.gpu_model,
                        index=i,
                        generation=run.gen,
                        replicas=j.replicas,
                    )
                    pod = self.teams.admit(made) if self.teams is not None else made
                    if pod is None:
                        if j.name not in self.refused:
                            self.refused.append(j.name)
                        continue
                    if j.mig_slices:
                        claim = mig_claim(key, j.mig_profile, j.mig_slices)
                        self.state.set_resource_claim(claim)
                        pod["spec"]["resourceClaims"] = [
                            {"name": "mig", "resourceClaimName": claim["metadata"]["name"]}
                        ]
                        self.pod_claims[key] = f"{j.team}/{claim['metadata']['name']}"
                    info = self.state.add_pod(pod)
                    assert info is not None
                    info.created = j.submit
                    info.runtime = runtime
                else:
                    self.state.add_pod_fast(
                        key,
                        req,
                        priority=j.priority,
                        group=group,
                        created=j.submit,
                        node_selector={names.LABEL_GPU_PRODUCT: j.gpu_model}
                        if j.gpu_model
                        else None,
                        runtime=runtime,
                    )
                self.pod_job[key] = run
                run.pods.append(key)

    def _remove_pods(self, run: JobRun) -> None:
        for key in run.pods:
            p = self.state.pods.get(key)
            if p is not None and p.node:
                self.allocated -= p.req[GPU]
            self.state.remove_pod(key)
            self.pod_job.pop(key, None)
            claim = self.pod_claims.pop(key, None)
            if claim is not None:  # made for the pod: deleted with it, its devices free
                self.state.remove_resource_claim(claim)
        run.pods = []
        run.bound = 0

    def _stop_running(self, run: JobRun, now: float) -> None:
        if run.running:
            done = run.progress + (now - run.last_start)
            ck = run.interval
            saved = math.floor(done / ck) * ck if ck > 0 else 0.0
            run.lost_gpu_s += (done - saved) * run.gpus
            run.progress = saved
            run.running = False
            self.running_gpus -= run.gpus
        self._close_partial(run, now)

    def _close_partial(self, run: JobRun, now: float) -> None:
        if run.partial_since is not None:
            run.partial_gpu_s += (now - run.partial_since) * run.job.gpus * run.bound
            run.partial_since = None

    def _restart(self, run: JobRun, now: float, preempted: bool) -> None:
        lost = run.lost_gpu_s
        self._stop_running(run, now)
        if preempted:
            run.preempted_lost_gpu_s += run.lost_gpu_s - lost
        self._remove_pods(run)
        run.gen += 1
        if preempted:
            run.preemptions += 1
        else:
            run.restarts += 1
        self._add_pods(run)

    # ------------------------------------------------------------------ events

    def _apply(self, now: float, kind: str, data: Any) -> None:
        self.events += 1
        if kind == "arrive":
            self._arriving.append(self.runs[data])
        elif kind == "done":
            name, gen = data
            run = self.runs[name]
            if run.gen != gen or not run.running:
                return  # a stale completion of an earlier gang
            run.progress = run.job.duration
            run.running = False
            self.running_gpus -= run.gpus
            run.end = now
            self._remove_pods(run)
        elif kind == "fail":
            node = data
            if node in self.down or node not in self.state.nodes:
                return
            xid = self.rng.random() < self.failures.xid
            if xid:
                self.xid_faults += 1
            else:
                self.node_failures += 1
            self.down.add(node)
            self.state.set_node_ready(node, False)
            # In creation order: a node's pod table is also reordered by the policy's
            # preemption trials, which must not decide the order jobs restart in.
            for p in sorted(self.state.nodes[node].pods.values(), key=lambda q: q.seq):
                victim = self.pod_job.get(p.key)
                if victim is not None and victim.pods:
                    self._restart(victim, now, preempted=False)
                elif p.key in self.balloons:
                    self._balloon_back(p.key)
            back = self.failures.preflight + (0.0 if xid else self.failures.repair)
            self._push(now + back, "repaired", node)
        elif kind == "repaired":
            node = data
            self.down.discard(node)
            self.state.set_node_ready(node, True)
            if self.failures.mtbf > 0:
                self._push_failure(now, node)

    def _checkpoints(self, now: float) -> None:
        """Running jobs that checkpointed since the last pass say when, on their first
        pod (once per pass however many checkpoints they passed)."""
        due = self._checkpoint_due
        while due and due[0][0] <= now:
            _, name, gen = heapq.heappop(due)
            run = self.runs[name]
            if run.gen != gen or not run.running or not run.pods:
                continue  # stopped since
            ck = run.interval
            last = run.last_start + math.floor((now - run.last_start) / ck) * ck
            self.state.set_checkpoint(run.pods[0], last)
            heapq.heappush(due, (last + ck, name, gen))

    def _decide(self, now: float) -> None:
        if not self.state.pending:
            return
        if self._checkpoint_due and self.cfg.preemption:
            self._checkpoints(now)
        self.passes += 1
        d = schedule(self.state, now, self.cfg, self.memory)
        self._now = now
        self._victims = {}
        self._evicted_balloons = []
        deliver(d, self)
        victims, balloons = self._victims, self._evicted_balloons
        for run in victims.values():
            self._restart(run, now, preempted=True)
        for key in balloons:
            self._balloon_back(key)
        if victims or balloons:
            self._decide(now)

    # ------------------------------------------------------------------ the policy's sink

    def bind(self, pod: str, node: str) -> None:
        now = self._now
        if self.bindings is not None:
            self.bindings.append((now, pod, node))
        if pod in self.balloons:
            return  # holds its node; not work
        p = self.state.pods[pod]
        self.allocated += p.req[GPU]
        run = self.pod_job[pod]
        run.bound += 1
        say = self.say_checkpoints and run.interval > 0
        if say and run.pods[0] == pod:
            self.state.set_checkpoint(pod, now)  # bound now: it has lost nothing yet
        if run.bound == run.job.replicas and not run.running:
            self._close_partial(run, now)
            run.running = True
            run.last_start = now
            if say:  # it resumes from its last checkpoint (or the start): none lost yet
                self.state.set_checkpoint(run.pods[0], now)
                heapq.heappush(self._checkpoint_due, (now + run.interval, run.job.name, run.gen))
            self.running_gpus += run.gpus
            if run.first_start is None:
                run.first_start = now
            self._push(
                now + max(0.0, run.job.duration - run.progress), "done", (run.job.name, run.gen)
            )
        elif run.bound < run.job.replicas and run.partial_since is None:
            run.partial_since = now

    def evict(self, eviction: Eviction) -> None:
        """A victim's whole job restarts (once, however many of its pods are victims);
        an evicted balloon comes back Pending. Both after the pass's bindings."""
        if eviction.pod in self.balloons:
            self._evicted_balloons.append(eviction.pod)
        victim = self.pod_job.get(eviction.pod)
        if victim is not None:
            self._victims[victim.job.name] = victim

    def nominate(self, pod: str, node: str) -> None:
        """Nothing to write: the state already holds the nomination."""

    def explain(self, reasons: Reasons) -> None:
        """The twin counts what happened, not why."""

    def _sample(self, t: float) -> None:
        """Allocated and running GPUs, and the share of free GPUs on nodes partly in
        use. Free GPUs per node are kept between samples and counted again only on
        the nodes the state logged as changed (`ClusterState.node_log`)."""
        s = self.state
        cache = self._free
        log = s.node_log
        if log is None:
            s.node_log = set()
            names: Any = list(s.nodes)
        else:
            names = log
        for name in names:
            old = cache.pop(name, None)
            if old is not None:
                self._free_total -= old[0]
                self._free_fragmented -= old[1]
            n = s.nodes.get(name)
            if n is None or not n.ready:
                continue
            free = n.alloc[GPU] - n.used[GPU]
            part = free if 0 < free < n.alloc[GPU] else 0
            cache[name] = (free, part)
            self._free_total += free
            self._free_fragmented += part
        if log is not None:
            log.clear()
        free_total = self._free_total
        frag = self._free_fragmented / free_total if free_total else 0.0
        self.samples.append((t, self.allocated, self.running_gpus, frag))
        if self.room is not None:
            self.room.append(self._room())

    def _room(self) -> int:
        """The GPUs that waiting work could take now on top of what is allocated, at
        most the free GPUs: the sum over the jobs with pods pending of the GPUs of
        those pods that fit the nodes' free capacity now, each job on its own (all its
        pending pods at once for a gang policy, as many as fit for fifo), without
        preempting anything. No schedule could have had more allocated at this instant
        while keeping what runs, so it bounds allocation while work waits; it does not
        say that every job counted could have run together."""
        s = self.state
        free_total = self._free_total
        if not s.pending or free_total <= 0:
            return 0
        waiting: dict[str, list[PodInfo]] = {}
        for key, p in s.pending.items():
            run = self.pod_job.get(key)
            if run is not None:
                waiting.setdefault(run.job.name, []).append(p)
        free_nodes = [s.nodes[name] for name, (free, _) in self._free.items() if free > 0]
        slots_of: dict[tuple[Any, ...], int] = {}
        static = self._static
        gangs = self.cfg.gangs
        room = 0
        for pods in waiting.values():
            p0 = pods[0]
            ck = (p0.class_key(), tuple(p0.req), p0.xreq)
            slots = slots_of.get(ck)
            if slots is None:
                slots = 0
                for n in free_nodes if p0.req[GPU] else s.nodes.values():
                    ok = static.get((ck[0], n.name))
                    if ok is None:
                        ok = static[(ck[0], n.name)] = static_ok(p0, n) is None
                    if ok and n.ready:
                        slots += node_capacity(p0, n)
                slots_of[ck] = slots
            fit = len(pods) if slots >= len(pods) else (0 if gangs else slots)
            room += fit * p0.req[GPU]
            if room >= free_total:
                return free_total
        return room

    def run(self) -> Result:
        est = max((r.job.submit + r.job.duration for r in self.runs.values()), default=1.0)
        step = max(est, 1.0) / self.n_samples
        next_sample = 0.0
        now = 0.0
        while self.heap:
            now = self.heap[0][0]
            while next_sample <= now:
                self._sample(next_sample)
                next_sample += step
                if len(self.samples) >= 2 * self.n_samples:  # ran long: halve the resolution
                    self.samples = self.samples[::2]
                    if self.room is not None:
                        self.room = self.room[::2]
                    step *= 2
                    next_sample = self.samples[-1][0] + step
            if self.batch > 0:  # decide on the next tick; events keep their own times
                now = max(now, math.ceil(now / self.batch) * self.batch)
            while self.heap and self.heap[0][0] <= now:
                t, _, kind, data = heapq.heappop(self.heap)
                self._apply(t, kind, data)
            if self._arriving:
                self._add_pods_many(self._arriving)
                self._arriving = []
            self._decide(now)
            if self.progress is not None:
                self.progress(now)
        self._sample(now)
        for run in self.runs.values():
            self._close_partial(run, now)
            if run.running:
                run.progress += now - run.last_start
        return Result(
            policy=self.policy,
            jobs=list(self.runs.values()),
            samples=self.samples,
            total_gpus=self.total_gpus,
            end_time=now,
            passes=self.passes,
            events=self.events,
            node_failures=self.node_failures,
            xid_faults=self.xid_faults,
            counts={
                **({"team-refused-jobs": len(self.refused)} if self.teams else {}),
                **({"balloon-evictions": self.balloon_evictions} if self.balloons else {}),
                **({"never-fitting-jobs": self.skipped} if self.skipped is not None else {}),
            },
            team_weights=self.team_weights,
            room=self.room,
        )
