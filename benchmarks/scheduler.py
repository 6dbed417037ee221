"""The gang scheduler's speed: policy decision time, and end-to-end binding throughput.

1. policy: one pass of `gpuyard.scheduling.policy.schedule` deciding one 1,000-pod gang
   (8 GPUs per pod, whole nodes) on 7,500 simulated 8-GPU nodes (8 zones, 16 racks
   each), with a quarter of the nodes already busy with single-GPU pods. Measured:
   - cold: a fresh state each run (the gang's class of pods is filtered against every
     node for the first time), p50/p99 over the runs;
   - warm: the state keeps its caches (another gang of the same shape arrives after the
     previous one finished), p50/p99.
   Target: <= 50 ms. State building is not timed. Both wall time and this process's
   CPU time are given: on a shared machine the wall time includes waiting for a core.
   policy_topology: the same with the embedded cluster's topology (3 zones, blocks of 8
   racks of 32 nodes) and a 1,000-pod gang that requires a zone, a block, a zone with
   slices of 16 pods in a rack, or prefers a block (bench_topology), each placement
   checked against its request, beside the unconstrained gang's time in the same run
   (vs_none_cpu). Target: <= 100 ms.
2. e2e (skipped with --no-e2e): `gpuyard up` with N nodes and no components; 7 gangs of
   1,000 four-GPU pods plus 5,000 single one-GPU pods (33,000 of the 60,000 GPUs of
   7,500 nodes, so everything fits) are created while no scheduler runs, then
   `gpuyard scheduler` starts as its own process. Measured: seconds from the scheduler's
   start until every pod is bound (informer sync included) and from its first binding
   to its last; pods bound per second over the latter; CPU seconds per 1,000 pods of
   the scheduler process, of the cluster process (API server and simulated kubelets,
   which start every bound pod; its idle rate, mostly 7,500 lease renewals every 10 s,
   is measured for 3 s beforehand and given apart, as CPU-s per second), of this
   process's watch; and the cluster process's time in the garbage collector (from its
   /metrics). Target: >= 2,000 pods/s. The scheduler runs with -v: its log has every
   pass and its garbage-collector time.
3. with --dra, both again with device claims (gpuyard.scheduling.dra): the policy deciding
   a 1,000-pod gang on 7,500 nodes whose every GPU is also published as a device, each
   pod owning a claim (as made from a template) for 8 devices of one model inside one
   NVLink clique (a CEL selector, matchAttribute), the garbage collector frozen before
   each pass as the live scheduler does (target <= 100 ms); and the end-to-end run with
   every pod's GPUs claimed from a ResourceClaimTemplate instead of the extended
   resource (the workloads component makes the claims before the scheduler starts;
   the scheduler writes each claim's allocation and reservedFor before it binds):
   pods bound per second (target >= 1,000), and whether every claim ended allocated
   and reserved with no device allocated twice.

    python benchmarks/scheduler.py            # 7,500 nodes
    python benchmarks/scheduler.py --quick    # 1,000 nodes, 7 gangs of 100 + 500 pods
    python benchmarks/scheduler.py --dra      # also the cases with device claims
    python benchmarks/scheduler.py --no-policy --scheduler-args="--bind-concurrency 64"
    python benchmarks/scheduler.py --baseline-commit REV [--rounds N]   # ratios to REV

With --baseline-commit the same measurements run for the code of commit REV (a
temporary git worktree on PYTHONPATH: this script, its code on the path) and for this
checkout, in turns, `--rounds` times each, so both see the same machine; the medians
of the compared figures and their ratios (this code / baseline) are printed.

With GPUYARD_BENCH_PROFILE_DIR=DIR the scheduler's log is kept there, and with also
GPUYARD_BENCH_PYSPY=<py-spy binary> both processes are sampled while pods are bound
(DIR/cluster.txt, DIR/scheduler.txt: collapsed stacks).

Prints JSON. The machine is shared with other work, so figures are noisy: pods/s
moves with the load average of the machine; CPU seconds per pod move much less.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

GPU = "nvidia.com/gpu"


def _state(nodes: int, busy_fraction: float = 0.25) -> Any:
    from gpuyard.scheduling.state import ClusterState

    s = ClusterState()
    for i in range(nodes):
        s.add_node_fast(
            f"node-{i:05d}",
            {"cpu": 96_000, "memory": 1024 * 2**30, GPU: 8},
            {
                "topology.kubernetes.io/zone": f"z{i % 8}",
                "gpuyard.io/rack": f"z{i % 8}-r{(i // 8) % 16}",
                "kubernetes.io/hostname": f"node-{i:05d}",
            },
        )
    busy = int(nodes * busy_fraction)
    for i in range(busy):
        s.add_pod_fast(f"bg/p{i}", {"cpu": 1000, GPU: 1}, node=f"node-{i * 4 % nodes:05d}")
    return s


def _add_gang(s: Any, name: str, size: int) -> None:
    from gpuyard.scheduling.state import GroupInfo

    s.set_group(GroupInfo(f"ns/{name}", min_member=size))
    for i in range(size):
        s.add_pod_fast(
            f"ns/{name}-{i}", {"cpu": 8000, "memory": 64 * 2**30, GPU: 8}, group=f"ns/{name}"
        )


# ------------------------------------------------------------------ device claims

PRODUCT = "NVIDIA-H100-80GB-HBM3"
CLAIM_SPEC = {
    "devices": {
        "requests": [
            {
                "name": "gpus",
                "exactly": {
                    "deviceClassName": "gpu.nvidia.com",
                    "count": 8,
                    "selectors": [
                        {
                            "cel": {
                                "expression": 'device.attributes["gpu.nvidia.com"].productName'
                                f' == "{PRODUCT}"'
                            }
                        }
                    ],
                },
            }
        ],
        "constraints": [{"matchAttribute": "gpu.nvidia.com/cliqueId"}],
    }
}


def _dra_state(nodes: int, busy_fraction: float = 0.25) -> Any:
    """`_state`'s cluster, each node's GPUs also published as devices."""
    from gpuyard.cluster.shapes import NodeShape
    from gpuyard.cluster.simdevices import device_class, resource_slice

    s = _state(nodes, busy_fraction)
    s.set_device_class(device_class())
    for i in range(nodes):
        shape = NodeShape(f"node-{i:05d}", 96_000, 1024 * 2**30, 8, PRODUCT)
        s.set_resource_slice(resource_slice(shape))
    return s


def _add_dra_gang(s: Any, name: str, size: int) -> None:
    """A gang whose pods each own a claim (as made from a template) for 8 GPUs of one
    model inside one NVLink clique."""
    from gpuyard.scheduling.state import GroupInfo

    s.set_group(GroupInfo(f"ns/{name}", min_member=size))
    for i in range(size):
        pod = f"{name}-{i}"
        s.set_resource_claim(
            {
                "metadata": {
                    "name": f"{pod}-gpus",
                    "namespace": "ns",
                    "ownerReferences": [{"kind": "Pod", "name": pod, "controller": True}],
                },
                "spec": CLAIM_SPEC,
            }
        )
        s.add_pod(
            {
                "metadata": {
                    "name": pod,
                    "namespace": "ns",
                    "labels": {"scheduling.x-k8s.io/pod-group": name},
                },
                "spec": {
                    "schedulerName": "gpuyard-scheduler",
                    "containers": [
                        {"name": "w", "resources": {"requests": {"cpu": "8", "memory": "64Gi"}}}
                    ],
                    "resourceClaims": [{"name": "gpus", "resourceClaimTemplateName": "t"}],
                },
                "status": {
                    "resourceClaimStatuses": [{"name": "gpus", "resourceClaimName": f"{pod}-gpus"}]
                },
            }
        )


def bench_policy_dra(nodes: int, gang: int, runs: int) -> dict[str, Any]:
    """`bench_policy` for a gang whose every pod claims its 8 GPUs as devices (count 8,
    a CEL selector on the model, matchAttribute on the clique) instead of the extended
    resource, on the same cluster with every node's GPUs in a ResourceSlice."""
    import gc

    from gpuyard.scheduling.policy import schedule

    cold: list[float] = []
    cold_cpu: list[float] = []
    for r in range(runs):
        s = _dra_state(nodes)
        _add_dra_gang(s, f"g{r}", gang)
        # The live scheduler keeps its caches out of the cyclic collector's reach
        # (scheduler._gc_freezer); 60,000 devices would otherwise be walked by every
        # full collection the pass happens to trigger.
        gc.freeze()
        c0, t0 = time.process_time(), time.perf_counter()
        d = schedule(s, 0.0)
        cold.append(time.perf_counter() - t0)
        cold_cpu.append(time.process_time() - c0)
        assert len(d.bindings) == gang and len(d.allocations) == gang, d.unschedulable
        del s
        gc.unfreeze()
        gc.collect()
    s = _dra_state(nodes)
    warm: list[float] = []
    warm_cpu: list[float] = []
    for r in range(runs + 1):
        _add_dra_gang(s, f"w{r}", gang)
        gc.freeze()
        c0, t0 = time.process_time(), time.perf_counter()
        d = schedule(s, float(r))
        dt = time.perf_counter() - t0
        dc = time.process_time() - c0
        assert len(d.bindings) == gang and len(d.allocations) == gang, d.unschedulable
        if r:
            warm.append(dt)
            warm_cpu.append(dc)
        for k, _ in d.bindings:  # the gang finishes; its claims go with it
            s.remove_pod(k)
        for key in list(d.allocations):
            s.remove_resource_claim(key)
    gc.unfreeze()
    return {
        "nodes": nodes,
        "gang_pods": gang,
        "runs": runs,
        "claim": "8 devices of one model, matchAttribute cliqueId, per pod",
        "gc": "frozen before each pass, as the live scheduler does",
        "cold_wall_ms": _stats(cold),
        "cold_cpu_ms": _stats(cold_cpu),
        "warm_wall_ms": _stats(warm),
        "warm_cpu_ms": _stats(warm_cpu),
        "target_ms": 100,
    }


# ------------------------------------------------------------------ topology

# (name, GPUs per pod, topology request) of the 1,000-pod gangs timed by bench_topology
TOPOLOGY_CASES: list[tuple[str, int, dict[str, Any]]] = [
    ("none (soft packing), 8 GPUs a pod", 8, {}),
    ("required zone, 8 GPUs a pod", 8, {"required": ("topology.kubernetes.io/zone",)}),
    ("required block, 1 GPU a pod", 1, {"required": ("gpuyard.io/block",)}),
    (
        "required zone, slices of 16 in a rack, 8 GPUs a pod",
        8,
        {
            "required": ("topology.kubernetes.io/zone",),
            "slice_key": "gpuyard.io/rack",
            "slice_size": 16,
        },
    ),
    ("preferred block, 8 GPUs a pod", 8, {"preferred": "gpuyard.io/block"}),
]


def _topo_state(nodes: int, busy_fraction: float = 0.25) -> Any:
    """`nodes` simulated 8-GPU nodes with the embedded cluster's topology (3 zones,
    blocks of 8 racks, racks of 32 nodes), a quarter of them running a 1-GPU pod."""
    from gpuyard.cluster.shapes import default_shapes
    from gpuyard.scheduling.state import ClusterState
    from gpuyard.twin.capacity import shape_labels

    s = ClusterState()
    for sh in default_shapes(nodes):
        s.add_node_fast(
            sh.name, {"cpu": sh.cpu_milli, "memory": sh.memory_bytes, GPU: 8}, shape_labels(sh)
        )
    names_ = list(s.nodes)
    for i in range(int(nodes * busy_fraction)):
        s.add_pod_fast(f"bg/p{i}", {"cpu": 1000, GPU: 1}, node=names_[i * 4 % nodes])
    return s


def _add_topo_gang(s: Any, name: str, size: int, gpus: int, req: dict[str, Any]) -> None:
    from gpuyard.scheduling.state import GroupInfo
    from gpuyard.scheduling.topology import Request

    s.set_group(GroupInfo(f"ns/{name}", min_member=size, topology=Request(**req) or None))
    for i in range(size):
        s.add_pod_fast(
            f"ns/{name}-{i}",
            {"cpu": 1000, "memory": 8 * 2**30, GPU: gpus},
            group=f"ns/{name}",
            labels={"gpuyard.io/replica-index": str(i)},
        )


def bench_topology(nodes: int, gang: int, runs: int) -> dict[str, Any]:
    """One pass deciding one `gang`-pod gang on `nodes` nodes, for each case of
    TOPOLOGY_CASES: cold (a fresh state) and warm (the state's caches kept, the
    previous gang finished), p50/p99; every placement is checked against its request.
    `vs_none_cpu` is each case's warm CPU p50 over the unconstrained gang's, same run."""
    from gpuyard.scheduling.policy import schedule
    from gpuyard.scheduling.topology import domain_of_all

    out: dict[str, Any] = {"nodes": nodes, "gang_pods": gang, "runs": runs, "target_ms": 100}
    cases: dict[str, Any] = {}
    for label, gpus, req in TOPOLOGY_CASES:
        cold: list[float] = []
        for r in range(max(1, runs // 4)):
            s = _topo_state(nodes)
            _add_topo_gang(s, f"g{r}", gang, gpus, req)
            t0 = time.perf_counter()
            d = schedule(s, 0.0)
            cold.append(time.perf_counter() - t0)
            assert len(d.bindings) == gang, (label, d.unschedulable)
        s = _topo_state(nodes)
        warm: list[float] = []
        warm_cpu: list[float] = []
        for r in range(runs + 1):
            _add_topo_gang(s, f"w{r}", gang, gpus, req)
            c0, t0 = time.process_time(), time.perf_counter()
            d = schedule(s, float(r))
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            assert len(d.bindings) == gang, (label, d.unschedulable)
            for keys in req.get("required", ()), (req["slice_key"],) if "slice_key" in req else ():
                if keys:
                    doms = {
                        domain_of_all(s.topology_levels, keys, s.nodes[n].labels)
                        for _, n in d.bindings[: req.get("slice_size", gang)]
                    }
                    assert len(doms) == 1 and None not in doms, (label, keys, doms)
            if r:
                warm.append(dt)
                warm_cpu.append(dc)
            for k, _ in d.bindings:
                s.remove_pod(k)
        cases[label] = {
            "cold_wall_ms": _stats(cold),
            "warm_wall_ms": _stats(warm),
            "warm_cpu_ms": _stats(warm_cpu),
        }
    # CPU time: the wall time on a shared machine moves with its load
    base = cases[TOPOLOGY_CASES[0][0]]["warm_cpu_ms"]["p50"] or 1e-3
    for c in cases.values():
        c["vs_none_cpu"] = round(c["warm_cpu_ms"]["p50"] / base, 2)
    out["cases"] = cases
    return out


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def _stats(xs: list[float]) -> dict[str, float]:
    return {
        "p50": round(1e3 * _pct(xs, 0.5), 1),
        "p99": round(1e3 * _pct(xs, 0.99), 1),
        "mean": round(1e3 * statistics.mean(xs), 1),
    }


def bench_policy(nodes: int, gang: int, runs: int) -> dict[str, Any]:
    from gpuyard.scheduling.policy import schedule

    cold: list[float] = []
    cold_cpu: list[float] = []
    for r in range(runs):
        s = _state(nodes)
        _add_gang(s, f"g{r}", gang)
        c0, t0 = time.process_time(), time.perf_counter()
        d = schedule(s, 0.0)
        cold.append(time.perf_counter() - t0)
        cold_cpu.append(time.process_time() - c0)
        assert len(d.bindings) == gang, (len(d.bindings), d.unschedulable)
    s = _state(nodes)
    warm: list[float] = []
    warm_cpu: list[float] = []
    for r in range(runs + 1):
        _add_gang(s, f"w{r}", gang)
        c0, t0 = time.process_time(), time.perf_counter()
        d = schedule(s, float(r))
        dt = time.perf_counter() - t0
        dc = time.process_time() - c0
        assert len(d.bindings) == gang, (len(d.bindings), d.unschedulable)
        if r:
            warm.append(dt)  # the first one fills the caches
            warm_cpu.append(dc)
        for k, _ in d.bindings:
            s.remove_pod(k)  # the gang finishes
    return {
        "nodes": nodes,
        "gang_pods": gang,
        "runs": runs,
        "cold_wall_ms": _stats(cold),
        "cold_cpu_ms": _stats(cold_cpu),
        "warm_wall_ms": _stats(warm),
        "warm_cpu_ms": _stats(warm_cpu),
        "target_ms": 50,
    }


def _pod(name: str, gpus: int, group: str | None = None, dra: bool = False) -> dict[str, Any]:
    md: dict[str, Any] = {"name": name, "namespace": "default"}
    if group:
        md["labels"] = {"scheduling.x-k8s.io/pod-group": group}
    spec: dict[str, Any] = {
        "schedulerName": "gpuyard-scheduler",
        "containers": [{"name": "w", "image": "x", "resources": {"limits": {GPU: str(gpus)}}}],
    }
    if dra:
        # the GPUs as devices, through a claim made from a template, instead
        spec["containers"][0]["resources"] = {"claims": [{"name": "gpus"}]}
        spec["resourceClaims"] = [{"name": "gpus", "resourceClaimTemplateName": f"gpus-{gpus}"}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": md, "spec": spec}


def _template(gpus: int) -> dict[str, Any]:
    """`gpus` devices of one model inside one NVLink clique."""
    spec = json.loads(json.dumps(CLAIM_SPEC))
    spec["devices"]["requests"][0]["exactly"]["count"] = gpus
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {"name": f"gpus-{gpus}", "namespace": "default"},
        "spec": {"spec": spec},
    }


async def _claims_made(kubeconfig: str, total: int, timeout: float) -> float:
    """Wait until every pod names the claim made for it; seconds waited."""
    from gpuyard.kube.client import Client
    from gpuyard.kube.resources import PODS

    t0 = time.monotonic()
    async with Client.from_kubeconfig(kubeconfig, component="bench") as c:
        while True:
            pods = (await c.list(PODS, "default"))["items"]
            made = sum(1 for p in pods if (p.get("status") or {}).get("resourceClaimStatuses"))
            if made >= total:
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"claims made for {made} of {total} pods")
            await asyncio.sleep(1.0)


async def _claims_allocated(kubeconfig: str) -> tuple[int, int, int]:
    """(claims, allocated and reserved ones, devices allocated twice)."""
    from gpuyard.kube.client import Client
    from gpuyard.kube.resources import RESOURCE_CLAIMS

    async with Client.from_kubeconfig(kubeconfig, component="bench") as c:
        claims = (await c.list(RESOURCE_CLAIMS, "default"))["items"]
    seen: set[tuple[str, str]] = set()
    twice = ok = 0
    for cl in claims:
        st = cl.get("status") or {}
        if st.get("allocation") and st.get("reservedFor"):
            ok += 1
        for r in ((st.get("allocation") or {}).get("devices") or {}).get("results") or ():
            k = (r["pool"], r["device"])
            twice += k in seen
            seen.add(k)
    return len(claims), ok, twice


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _create_all(
    kubeconfig: str, gangs: int, gang: int, singles: int, dra: bool = False
) -> int:
    from gpuyard.kube.client import Client

    objs: list[dict[str, Any]] = []
    for g in range(gangs):
        objs += [_pod(f"g{g}-{i}", 4, f"g{g}", dra) for i in range(gang)]
    objs += [_pod(f"s-{i}", 1, None, dra) for i in range(singles)]
    async with Client.from_kubeconfig(kubeconfig, component="bench") as c:
        if dra:
            for gpus in (1, 4):
                await c.create(_template(gpus))
        for g in range(gangs):
            await c.create(
                {
                    "apiVersion": "scheduling.x-k8s.io/v1alpha1",
                    "kind": "PodGroup",
                    "metadata": {"name": f"g{g}", "namespace": "default"},
                    "spec": {"minMember": gang},
                }
            )
        sem = asyncio.Semaphore(64)

        async def one(obj: dict[str, Any]) -> None:
            async with sem:
                await c.create(obj)

        await asyncio.gather(*(one(x) for x in objs))
    return len(objs)


async def _wait_bound(kubeconfig: str, total: int, timeout: float) -> tuple[float, float]:
    """Watch pods until `total` are bound; (first binding, last binding) monotonic times."""
    from gpuyard.kube.client import Client
    from gpuyard.kube.resources import PODS

    bound: set[str] = set()
    first = last = 0.0
    c0 = time.process_time()
    deadline = time.monotonic() + timeout
    async with Client.from_kubeconfig(kubeconfig, component="bench") as c:
        lst = await c.list(PODS, "default")
        for p in lst["items"]:
            if p["spec"].get("nodeName"):
                bound.add(p["metadata"]["name"])
        rv = lst["metadata"]["resourceVersion"]
        while len(bound) < total:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(bound)} of {total} pods bound")
            async for etype, obj in c.watch(
                PODS, "default", resource_version=rv, timeout_seconds=30
            ):
                rv = obj["metadata"].get("resourceVersion", rv)
                if etype in ("ADDED", "MODIFIED") and (obj.get("spec") or {}).get("nodeName"):
                    name = obj["metadata"]["name"]
                    if name not in bound:
                        bound.add(name)
                        last = time.monotonic()
                        first = first or last
                if len(bound) >= total or time.monotonic() > deadline:
                    break
    _WATCHER_CPU[0] = time.process_time() - c0
    return first, last


_WATCHER_CPU = [0.0]


async def _gc_seconds(kubeconfig: str) -> list[float]:
    """The cluster process's time in the garbage collector so far (its /metrics)."""
    from gpuyard.kube.client import Client

    async with Client.from_kubeconfig(kubeconfig, component="bench") as c:
        resp = await c._send("GET", "/metrics")
        text = (await resp.read()).decode()
    return [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("gpuyard_process_gc_seconds_total{")
    ]


def _start_profilers(pids: dict[str, int]) -> list[subprocess.Popen[bytes]]:
    """With GPUYARD_BENCH_PYSPY=<py-spy binary> (and GPUYARD_BENCH_PROFILE_DIR), sample
    the cluster and scheduler processes while the pods are being bound."""
    spy = os.environ.get("GPUYARD_BENCH_PYSPY")
    if not spy:
        return []
    out = os.environ.get("GPUYARD_BENCH_PROFILE_DIR", ".")
    return [
        subprocess.Popen(
            [spy, "record", "--nonblocking", "-r", "100", "--format", "raw", "-p", str(pid)]
            + ["-o", os.path.join(out, f"{name}.txt")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name, pid in pids.items()
    ]


def _stop_profilers(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.send_signal(2)
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def bench_e2e(
    nodes: int,
    gangs: int,
    gang: int,
    singles: int,
    sched_args: list[str] | None = None,
    dra: bool = False,
) -> dict[str, Any]:
    sched_args = sched_args or []
    from gpuyard.cluster.testing import run_cluster_process

    claims: dict[str, Any] = {}
    # with claims, the workloads component runs: its ResourceClaim controller makes each
    # pod's claim from its template (before the scheduler starts) and gives claims back
    components = "workloads" if dra else "none"
    with tempfile.TemporaryDirectory(prefix="gpuyard-sched-bench-") as d:
        with run_cluster_process(
            d, nodes=nodes, args=["--components", components, "--in-memory"], timeout=600
        ) as c:
            t0 = time.monotonic()
            total = asyncio.run(_create_all(c.kubeconfig, gangs, gang, singles, dra))
            create_s = time.monotonic() - t0
            if dra:
                claims["claims_made_s"] = round(
                    asyncio.run(_claims_made(c.kubeconfig, total, 900)), 2
                )
            # The simulated kubelets' own load (7,500 lease renewals every 10 s, status
            # posts), measured while nothing else happens, to set the per-pod figures apart.
            idle0, idle_t0 = _cpu_seconds(c.proc.pid), time.monotonic()
            time.sleep(3)
            idle_rate = (_cpu_seconds(c.proc.pid) - idle0) / (time.monotonic() - idle_t0)
            server_cpu0 = _cpu_seconds(c.proc.pid)
            gc0 = asyncio.run(_gc_seconds(c.kubeconfig))
            log = open(os.path.join(d, "scheduler.log"), "wb")
            sched = subprocess.Popen(
                [sys.executable, "-m", "gpuyard.cli", "scheduler", "--no-leader-elect", "-v"]
                + sched_args,
                env={**c.env, "KUBECONFIG": c.kubeconfig},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            start = time.monotonic()
            profilers = _start_profilers({"cluster": c.proc.pid, "scheduler": sched.pid})
            try:
                first, last = asyncio.run(_wait_bound(c.kubeconfig, total, 600))
                cpu = _cpu_seconds(sched.pid)
                server_cpu = _cpu_seconds(c.proc.pid) - server_cpu0
                gc1 = asyncio.run(_gc_seconds(c.kubeconfig))
                server_gc = sum(gc1) - sum(gc0)
                if dra:
                    n, ok, twice = asyncio.run(_claims_allocated(c.kubeconfig))
                    claims.update(
                        claims=n, claims_allocated_and_reserved=ok, devices_allocated_twice=twice
                    )
            finally:
                _stop_profilers(profilers)
                sched.terminate()
                try:
                    sched.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(sched.pid, 9)
                    sched.wait()
                log.close()
                keep = os.environ.get("GPUYARD_BENCH_PROFILE_DIR")
                if keep:
                    shutil.copy(os.path.join(d, "scheduler.log"), keep)
    window = max(last - first, 1e-9)
    return {
        "nodes": nodes,
        "pods": total,
        "gangs": f"{gangs} x {gang}",
        "singles": singles,
        "create_s": round(create_s, 2),
        "start_to_all_bound_s": round(last - start, 2),
        "first_to_last_binding_s": round(last - first, 2),
        "pods_bound_per_s": round(total / window),
        "pods_bound_per_s_incl_startup": round(total / max(last - start, 1e-9)),
        "scheduler_cpu_s_per_1000_pods": round(1000 * cpu / total, 3),
        "cluster_process_cpu_s_per_1000_pods": round(1000 * server_cpu / total, 3),
        "cluster_process_idle_cpu_s_per_s": round(idle_rate, 3),
        "cluster_process_gc_s_per_1000_pods": round(1000 * server_gc / total, 3),
        "cluster_process_gc_s_by_generation": [
            round(b - a, 3) for a, b in zip(gc0, gc1, strict=True)
        ],
        "benchmark_watcher_cpu_s_per_1000_pods": round(1000 * _WATCHER_CPU[0] / total, 3),
        **claims,
        "target_pods_per_s": 1000 if dra else 2000,
    }


# The figures compared with --baseline-commit: (path in the JSON, higher is better).
COMPARED = [
    (("policy", "cold_wall_ms", "p50"), False),
    (("policy", "cold_cpu_ms", "p50"), False),
    (("policy", "warm_wall_ms", "p50"), False),
    (("policy", "warm_cpu_ms", "p50"), False),
    (("e2e", "pods_bound_per_s"), True),
    (("e2e", "scheduler_cpu_s_per_1000_pods"), False),
    # with --dra
    (("policy_dra", "warm_wall_ms", "p50"), False),
    (("policy_dra", "warm_cpu_ms", "p50"), False),
    (("e2e_dra", "pods_bound_per_s"), True),
    (("e2e_dra", "scheduler_cpu_s_per_1000_pods"), False),
]


def _one_run(code_dir: str, argv: list[str]) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": code_dir}
    from gpuyard import childgroups

    # Stopped with SIGTERM if this run is interrupted: the child stops its cluster.
    got = childgroups.run([sys.executable, os.path.abspath(__file__), *argv], env=env, cwd=code_dir)
    if got.returncode != 0:
        raise SystemExit(f"benchmarks/scheduler.py: run in {code_dir} failed:\n{got.stderr}")
    return dict(json.loads(got.stdout))


def compare(rev: str, rounds: int, argv: list[str]) -> dict[str, Any]:
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if repo not in sys.path:
        sys.path.insert(0, repo)
    from benchmarks.baseline import baseline_tree

    runs: dict[str, list[dict[str, Any]]] = {"baseline": [], "current": []}
    with baseline_tree(rev, "benchmarks/scheduler.py") as (commit, tree):
        for _ in range(rounds):
            runs["baseline"].append(_one_run(tree, argv))
            runs["current"].append(_one_run(repo, argv))

    def fig(run: dict[str, Any], path: tuple[str, ...]) -> float | None:
        v: Any = run
        for k in path:
            if not isinstance(v, dict) or k not in v:
                return None
            v = v[k]
        return float(v)

    out: dict[str, Any] = {"baseline_commit": commit, "rounds": rounds, "figures": {}}
    for path, higher in COMPARED:
        b = [x for r in runs["baseline"] if (x := fig(r, path)) is not None]
        c = [x for r in runs["current"] if (x := fig(r, path)) is not None]
        if not b or not c:
            continue
        base, cur = statistics.median(b), statistics.median(c)
        out["figures"][".".join(path)] = {
            "baseline": base,
            "current": cur,
            "ratio": round(cur / base, 3) if base else None,
            "higher_is_better": higher,
            "all_baseline": b,
            "all_current": c,
        }
    out["runs"] = runs
    return out


def _exit_on_signals() -> None:
    try:
        from gpuyard.childgroups import exit_on_signals
    except ImportError:  # this script run on a baseline commit from before it
        import signal

        def _exit(signum: int, frame: Any) -> None:
            raise SystemExit(128 + signum)

        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, _exit)
        return
    exit_on_signals()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, a few runs")
    ap.add_argument("--nodes", type=int, default=None)
    ap.add_argument("--runs", type=int, default=None)
    ap.add_argument("--no-e2e", action="store_true", help="policy timing only")
    ap.add_argument("--no-policy", action="store_true", help="end to end only")
    ap.add_argument(
        "--dra",
        action="store_true",
        help="also the cases with device claims: the policy deciding a 1,000-pod gang whose "
        "pods claim their GPUs as devices, and the end-to-end run with every pod's GPUs "
        "claimed from a ResourceClaimTemplate",
    )
    ap.add_argument(
        "--scheduler-args", default="", help="extra `gpuyard scheduler` arguments (e2e)"
    )
    ap.add_argument(
        "--baseline-commit",
        metavar="REV",
        default=None,
        help="also measure the code of commit REV (in a temporary git worktree), in "
        "turns with this checkout, and print the ratios",
    )
    ap.add_argument(
        "--rounds", type=int, default=1, help="runs of each side with --baseline-commit"
    )
    a = ap.parse_args()
    _exit_on_signals()  # a signal still stops every server it started
    if a.baseline_commit:
        if a.rounds < 1:
            raise SystemExit("benchmarks/scheduler.py: --rounds must be at least 1")
        argv = [
            *(["--quick"] if a.quick else []),
            *(["--nodes", str(a.nodes)] if a.nodes else []),
            *(["--runs", str(a.runs)] if a.runs else []),
            *(["--no-e2e"] if a.no_e2e else []),
            *(["--no-policy"] if a.no_policy else []),
            *(["--dra"] if a.dra else []),
            *([f"--scheduler-args={a.scheduler_args}"] if a.scheduler_args else []),
        ]
        print(json.dumps(compare(a.baseline_commit, a.rounds, argv), indent=2))
        return
    nodes = a.nodes or (1000 if a.quick else 7500)
    runs = a.runs or (5 if a.quick else 20)
    out: dict[str, Any] = {}
    if not a.no_policy:
        out["policy"] = bench_policy(7500 if not a.nodes else nodes, 1000, runs)
        if a.dra:
            out["policy_dra"] = bench_policy_dra(7500 if not a.nodes else nodes, 1000, runs)
        if importlib.util.find_spec("gpuyard.scheduling.topology") is not None:
            out["policy_topology"] = bench_topology(7500 if not a.nodes else nodes, 1000, runs)
        else:  # this script run on a baseline commit from before topology placement
            out["policy_topology"] = "skipped: this code has no gpuyard.scheduling.topology"
    if not a.no_e2e:
        extra = a.scheduler_args.split()
        if a.quick:
            out["e2e"] = bench_e2e(nodes, 7, 100, 500, extra)
        else:
            out["e2e"] = bench_e2e(nodes, 7, 1000, 5000, extra)
        if a.dra:
            if a.quick:
                out["e2e_dra"] = bench_e2e(nodes, 7, 100, 500, extra, dra=True)
            else:
                out["e2e_dra"] = bench_e2e(nodes, 7, 1000, 5000, extra, dra=True)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
