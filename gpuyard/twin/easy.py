"""A textbook EASY-backfill scheduler, the reference `gpuyard twin bench` measures the
policies against. It is not gpuyard's policy and shares none of its code: jobs run
whole (every replica at once), in queue order (higher priority first, then older);
when the head does not fit, it gets a reservation at its shadow time (running jobs
release their nodes in order of their known ends until it fits) and later jobs start
now only if they end by the shadow time or fit on nodes the head will not need then.
No preemption, no topology, no failures. Runtimes are the jobs' durations, known
exactly, as the twin declares them to gpuyard. Replicas go first fit onto nodes of
the job's GPU model with enough cpu, memory and GPUs.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

from gpuyard.cluster.shapes import NodeShape
from gpuyard.twin.engine import JobRun, Result
from gpuyard.twin.traces import TraceJob

Free = list[list[int]]  # per node: [cpu, memory, gpus]


def _fit(
    j: TraceJob,
    free: Free,
    products: Sequence[str],
    skip: set[int] = frozenset(),  # type: ignore[assignment]
) -> list[int] | None:
    """First-fit nodes for each replica (node indexes, repeated), or None."""
    want = (j.cpu_milli, j.memory, j.gpus)
    taken: dict[int, int] = {}
    out: list[int] = []
    for i, f in enumerate(free):
        if i in skip or (j.gpu_model and products[i] != j.gpu_model):
            continue
        k = min((f[r] // want[r] for r in range(3) if want[r] > 0), default=j.replicas)
        k = min(k, j.replicas - len(out))
        if k > 0:
            taken[i] = k
            out.extend([i] * k)
            if len(out) == j.replicas:
                return out
    return None


def _take(j: TraceJob, free: Free, where: list[int], sign: int) -> None:
    for i in where:
        f = free[i]
        f[0] -= sign * j.cpu_milli
        f[1] -= sign * j.memory
        f[2] -= sign * j.gpus


def run_easy(shapes: list[NodeShape], jobs: list[TraceJob], samples: int = 400) -> Result:
    free: Free = [[s.cpu_milli, s.memory_bytes, s.gpus] for s in shapes]
    gpus = [s.gpus for s in shapes]
    products = [s.gpu_product for s in shapes]
    total = sum(gpus)
    runs = {j.name: JobRun(j) for j in jobs}
    events: list[tuple[float, int, str]] = []  # (time, 0 end / 1 arrive, job)
    for j in jobs:
        heapq.heappush(events, (j.submit, 1, j.name))
    queue: list[tuple[int, float, str]] = []  # (-priority, submit, name), kept sorted
    running: dict[str, tuple[float, list[int]]] = {}  # job -> (end, nodes)
    est = max((j.submit + j.duration for j in jobs), default=1.0)
    step = max(est, 1.0) / samples
    out: list[tuple[float, int, int, float]] = []
    room: list[int] = []  # as Engine(room=True) counts it
    next_sample = 0.0
    allocated = 0
    passes = 0
    now = 0.0

    def sample(t: float) -> None:
        free_total = sum(f[2] for f in free)
        frag = sum(f[2] for f, g in zip(free, gpus, strict=True) if 0 < f[2] < g)
        out.append((t, allocated, allocated, frag / free_total if free_total else 0.0))
        got = 0
        fits: dict[tuple[int, int, int, int, str], bool] = {}
        for _, _, name in queue:
            j = runs[name].job
            shape = (j.replicas, j.cpu_milli, j.memory, j.gpus, j.gpu_model)
            ok = fits.get(shape)
            if ok is None:
                ok = fits[shape] = _fit(j, free, products) is not None
            if ok:
                got += j.replicas * j.gpus
                if got >= free_total:
                    got = free_total
                    break
        room.append(got)

    def start(name: str, where: list[int]) -> None:
        nonlocal allocated
        r = runs[name]
        _take(r.job, free, where, 1)
        running[name] = (now + r.job.duration, where)
        r.first_start = now
        r.last_start = now
        r.running = True
        r.bound = r.job.replicas
        allocated += r.gpus
        heapq.heappush(events, (now + r.job.duration, 0, name))

    def schedule() -> None:
        while queue:
            head = runs[queue[0][2]].job
            where = _fit(head, free, products)
            if where is None:
                break
            queue.pop(0)
            start(head.name, where)
        if not queue:
            return
        head = runs[queue[0][2]].job
        # The head's shadow time and the nodes it will start on then.
        proj = [list(f) for f in free]
        shadow, head_nodes = now, None
        for end, name in sorted((e, n) for n, (e, _) in running.items()):
            _take(runs[name].job, proj, running[name][1], -1)
            got = _fit(head, proj, products)
            if got is not None:
                shadow, head_nodes = end, set(got)
                break
        for entry in list(queue[1:]):
            j = runs[entry[2]].job
            where = None
            if head_nodes is not None:
                where = _fit(j, free, products, head_nodes)
            if where is None and now + j.duration <= shadow:
                where = _fit(j, free, products)
            if where is not None:
                queue.remove(entry)
                start(j.name, where)

    while events:
        now = events[0][0]
        while next_sample <= now:
            sample(next_sample)
            next_sample += step
        while events and events[0][0] <= now:
            _, kind, name = heapq.heappop(events)
            r = runs[name]
            if kind == 1:
                queue.append((-r.job.priority, r.job.submit, name))
            else:
                _take(r.job, free, running.pop(name)[1], -1)
                allocated -= r.gpus
                r.running = False
                r.progress = r.job.duration
                r.end = now
                r.bound = 0
        queue.sort()
        passes += 1
        schedule()
    sample(now)
    return Result(
        policy="easy",
        jobs=list(runs.values()),
        samples=out,
        total_gpus=total,
        end_time=now,
        passes=passes,
        events=2 * len(jobs),
        node_failures=0,
        xid_faults=0,
        room=room,
    )
