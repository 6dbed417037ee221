"""`gpuyard scheduler`: run the gang scheduler against any Kubernetes cluster."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kubeconfig", help="kubeconfig (default: KUBECONFIG, ~/.kube/config, in-cluster)"
    )
    parser.add_argument("--no-leader-elect", action="store_true", help="skip leader election")
    parser.add_argument("--metrics-port", type=int, default=0, help="serve Prometheus metrics here")
    parser.add_argument("--no-reservations", action="store_true", help="gangs without reservations")
    parser.add_argument("--no-preemption", action="store_true", help="never preempt")


async def _main(args: argparse.Namespace) -> int:
    from prometheus_client import start_http_server

    from gpuyard.kube.client import Client
    from gpuyard.kube.errors import KubeError
    from gpuyard.scheduling.policy import PolicyConfig
    from gpuyard.scheduling.scheduler import Scheduler

    try:
        client = Client.from_env(args.kubeconfig, component="scheduler")
    except KubeError as exc:
        print(f"gpuyard scheduler: {exc}", file=sys.stderr)
        return 2
    cfg = PolicyConfig(reservations=not args.no_reservations, preemption=not args.no_preemption)
    sched = Scheduler(client, cfg, leader_elect=not args.no_leader_elect)
    if args.metrics_port:
        start_http_server(args.metrics_port, registry=sched.metrics.registry)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await sched.run(stop)
    except (KubeError, OSError) as exc:
        print(f"gpuyard scheduler: cannot reach the cluster: {exc}", file=sys.stderr)
        return 1
    finally:
        await client.close()
    return 0


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return asyncio.run(_main(args))
