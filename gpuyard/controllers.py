"""`gpuyard controllers`: gpuyard's controllers against any Kubernetes cluster.

On a real cluster the scheduler runs as its own Deployment (`gpuyard scheduler`); the
controllers here run together in one process with leader election, so two replicas
are safe: only the holder of the Lease kube-system/gpuyard-controllers runs them, its
client refuses every write once the Lease is lost (`gpuyard.kube.leader`), and a
replica that loses it stops its controllers and exits with status 1 (as Kubernetes'
own controller manager does), to be restarted with fresh caches. `--only jobs,...`
picks a subset.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import signal
import socket
import sys
from typing import TYPE_CHECKING, Any

from gpuyard.cliargs import PORT_OR_OFF

if TYPE_CHECKING:
    from gpuyard.kube.client import Client
    from gpuyard.kube.leader import LeaseTimings

LEASE_NAME = "gpuyard-controllers"
LEASE_NAMESPACE = "kube-system"

# name -> "module:function" taking (client, stop_event)
CONTROLLERS = {
    "jobs": "gpuyard.jobs.controller:run",
    "teams": "gpuyard.teams.manager:run",
    "balloons": "gpuyard.balloons.controller:run",
    # the pod ranges by zone every node's netd needs, in one ConfigMap
    "network-ranges": "gpuyard.network.rangesmap:run",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kubeconfig", help="kubeconfig (default: in-cluster, KUBECONFIG, ~/.kube/config)"
    )
    parser.add_argument("--only", help=f"comma-separated subset of: {', '.join(CONTROLLERS)}")
    parser.add_argument("--no-leader-elect", action="store_true", help="skip leader election")
    from gpuyard.kube.leader import add_timing_arguments

    add_timing_arguments(parser)
    parser.add_argument(
        "--install-crds", action="store_true", help="create gpuyard's CRDs if missing"
    )
    parser.add_argument(
        "--metrics-port",
        type=PORT_OR_OFF,
        default=0,
        help="serve Prometheus metrics on this port (0: off)",
    )
    from gpuyard.kube.metrics import add_auth_argument

    add_auth_argument(parser)


async def _run_all(client: Client, names: list[str], stop: asyncio.Event) -> None:
    tasks: list[asyncio.Task[Any]] = []
    for name in names:
        mod, _, fn = CONTROLLERS[name].partition(":")
        tasks.append(asyncio.create_task(getattr(importlib.import_module(mod), fn)(client, stop)))
    try:
        await stop.wait()
    finally:
        await asyncio.gather(*tasks, return_exceptions=True)


async def run_controllers(
    client: Client,
    names: list[str],
    stop: asyncio.Event,
    timings: LeaseTimings | None = None,
    identity: str | None = None,
) -> bool:
    """Run the named controllers until `stop`; with `timings`, only while this replica
    holds the controllers' Lease. False when the Lease was lost (they have stopped)."""
    if timings is None:
        await _run_all(client, names, stop)
        return True
    from gpuyard.kube.leader import LeaderElector, run_leading

    elector = LeaderElector(
        client,
        LEASE_NAME,
        LEASE_NAMESPACE,
        identity or f"{socket.gethostname()}-{os.getpid()}",
        timings=timings,
    )
    return await run_leading(elector, lambda done: _run_all(client, names, done), stop)


async def _main(args: argparse.Namespace) -> int:
    from gpuyard.crds import crd_objects
    from gpuyard.kube.client import Client
    from gpuyard.kube.errors import AlreadyExists, KubeError
    from gpuyard.kube.leader import timings_from

    names = list(CONTROLLERS) if not args.only else [n.strip() for n in args.only.split(",")]
    unknown = [n for n in names if n not in CONTROLLERS]
    if unknown:
        print(f"gpuyard controllers: unknown controller(s) {', '.join(unknown)}", file=sys.stderr)
        return 2
    timings = None
    if not args.no_leader_elect:
        try:
            timings = timings_from(args)
        except ValueError as exc:
            print(f"gpuyard controllers: {exc}", file=sys.stderr)
            return 2
    try:
        client = Client.from_env(args.kubeconfig, component="controllers")
    except KubeError as exc:
        print(f"gpuyard controllers: {exc}", file=sys.stderr)
        return 2
    if args.metrics_port:
        from gpuyard.kube import metrics

        try:
            metrics.serve(args.metrics_port, auth=metrics.auth_from_args(args))
        except OSError as exc:
            print(f"gpuyard controllers: metrics port {args.metrics_port}: {exc}", file=sys.stderr)
            await client.close()
            return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        if args.install_crds:
            for crd in crd_objects():
                try:
                    await client.create(crd)
                except AlreadyExists:
                    pass
        kept = await run_controllers(client, names, stop, timings)
        if not kept:
            print("gpuyard controllers: lost the leader lease; exiting", file=sys.stderr)
            return 1
        return 0
    except (KubeError, OSError) as exc:
        print(f"gpuyard controllers: cannot reach the cluster: {exc}", file=sys.stderr)
        return 1
    finally:
        await client.close()


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return asyncio.run(_main(args))
