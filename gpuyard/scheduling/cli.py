"""`gpuyard scheduler`: run the gang scheduler against any Kubernetes cluster."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import sys

from gpuyard.cliargs import COUNT, PORT_OR_OFF
from gpuyard.scheduling.component import LEVELS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kubeconfig", help="kubeconfig (default: KUBECONFIG, ~/.kube/config, in-cluster)"
    )
    parser.add_argument("--no-leader-elect", action="store_true", help="skip leader election")
    from gpuyard.kube.leader import add_timing_arguments

    add_timing_arguments(parser)
    parser.add_argument(
        "--metrics-port", type=PORT_OR_OFF, default=0, help="serve Prometheus metrics here (0: off)"
    )
    from gpuyard.kube.metrics import add_auth_argument

    add_auth_argument(parser)
    parser.add_argument("--no-reservations", action="store_true", help="gangs without reservations")
    parser.add_argument("--no-preemption", action="store_true", help="never preempt")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every scheduling pass")
    parser.add_argument(
        "--also-default-scheduler",
        action="store_true",
        help="also bind pods with schedulerName default-scheduler (only where no other "
        "default scheduler runs; off by default)",
    )
    parser.add_argument(
        "--topology-levels",
        type=LEVELS,
        default=None,
        help="the topology's levels: node label keys, broadest first, comma-separated "
        "(default: topology.kubernetes.io/zone,gpuyard.io/block,gpuyard.io/rack,"
        "nvidia.com/gpu.clique,kubernetes.io/hostname; for NVIDIA Topograph's labels: "
        "network.topology.nvidia.com/datacenter,network.topology.nvidia.com/spine,"
        "network.topology.nvidia.com/block,network.topology.nvidia.com/accelerator,"
        "kubernetes.io/hostname)",
    )
    parser.add_argument(
        "--bind-concurrency",
        type=COUNT,
        default=128,
        help="bindings (and other writes) in flight at once (default 128)",
    )


async def _main(args: argparse.Namespace) -> int:
    from prometheus_client import REGISTRY

    from gpuyard.kube import metrics
    from gpuyard.kube.client import Client
    from gpuyard.kube.errors import KubeError
    from gpuyard.kube.leader import timings_from
    from gpuyard.scheduling.policy import PolicyConfig
    from gpuyard.scheduling.scheduler import Metrics, Scheduler

    try:
        lease = timings_from(args)
    except ValueError as exc:
        print(f"gpuyard scheduler: {exc}", file=sys.stderr)
        return 2
    try:
        client = Client.from_env(args.kubeconfig, component="scheduler")
    except KubeError as exc:
        print(f"gpuyard scheduler: {exc}", file=sys.stderr)
        return 2
    cfg = PolicyConfig(reservations=not args.no_reservations, preemption=not args.no_preemption)
    sched = Scheduler(
        client,
        cfg,
        leader_elect=not args.no_leader_elect,
        lease=lease,
        bind_concurrency=args.bind_concurrency,
        also=("default-scheduler",) if args.also_default_scheduler else (),
        metrics=Metrics(REGISTRY),
        topology_levels=args.topology_levels,
    )
    if args.metrics_port:
        try:
            metrics.serve(args.metrics_port, auth=metrics.auth_from_args(args))
        except OSError as exc:
            print(f"gpuyard scheduler: metrics port {args.metrics_port}: {exc}", file=sys.stderr)
            await client.close()
            return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    gc_time = _GcTimer() if args.verbose else None
    _fewer_young_collections()
    try:
        await sched.run(stop)
    except (KubeError, OSError) as exc:
        print(f"gpuyard scheduler: cannot reach the cluster: {exc}", file=sys.stderr)
        return 1
    finally:
        await client.close()
        if gc_time is not None:
            gc_time.report()
    return 0


def _fewer_young_collections(every: int = 20_000) -> None:
    """A young collection every `every` net allocations instead of 700. Measured while
    binding 12,000 pods (benchmarks/scheduler.py): the collector's time in this process
    went from 0.65-0.9 s to 0.1-0.17 s (1,100 young collections to 24); the informer
    caches, frozen out of its reach, are what a collection would otherwise revisit."""
    t0, t1, t2 = gc.get_threshold()
    if t0 < every:
        gc.set_threshold(every, t1, t2)


class _GcTimer:
    """With --verbose: time spent in the cyclic garbage collector, logged at exit."""

    def __init__(self) -> None:
        import time

        self._clock = time.perf_counter
        self.t0 = 0.0
        self.total = 0.0
        self.counts = [0, 0, 0]
        gc.callbacks.append(self._cb)

    def _cb(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.t0 = self._clock()
        else:
            dt = self._clock() - self.t0
            self.total += dt
            gen = info.get("generation", 0)
            self.counts[gen] += 1
            if dt > 0.02:
                logging.getLogger("gpuyard.scheduler").debug(
                    "garbage collection of generation %d took %.0f ms", gen, 1e3 * dt
                )

    def report(self) -> None:
        logging.getLogger("gpuyard.scheduler").info(
            "garbage collector: %.3f s in %s collections (generations 0/1/2)",
            self.total,
            "/".join(map(str, self.counts)),
        )


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if getattr(args, "verbose", False):
        logging.getLogger("gpuyard.scheduler").setLevel(logging.DEBUG)
    # uvloop when available (its TLS and sockets cost the bind path about a quarter less
    # CPU); GPUYARD_NO_UVLOOP=1 turns it off, for comparisons.
    if not os.environ.get("GPUYARD_NO_UVLOOP"):
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return int(uvloop.run(_main(args)))
    return asyncio.run(_main(args))
