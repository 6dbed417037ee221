"""`gpuyard netd`: the node network agent (a DaemonSet on real clusters)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import os
import signal
import sys

from gpuyard.cliargs import PORT

DEFAULT_SERVICES = "10.96.0.0/12"


def _cidr(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not an address range: {exc}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kubeconfig", default=None)
    parser.add_argument(
        "--node",
        default=os.environ.get("NODE_NAME", ""),
        help="the node this agent runs on (default: $NODE_NAME)",
    )
    parser.add_argument(
        "--service-cidr",
        action="append",
        type=_cidr,
        default=None,
        help=f"a service address range, counted as in-cluster (default {DEFAULT_SERVICES})",
    )
    parser.add_argument(
        "--uplink",
        default="",
        help="the node's internet-facing device, where pods' internet egress is shaped "
        "(default: no shaping)",
    )
    parser.add_argument(
        "--netns", default=None, help="apply rules inside this network namespace (tests, labs)"
    )
    parser.add_argument(
        "--metrics-port", type=PORT, default=9105, help="serve /metrics here (0: pick a free one)"
    )
    from gpuyard.kube.metrics import add_auth_argument

    add_auth_argument(parser)
    parser.add_argument("--metrics-address", default="0.0.0.0")


def run(args: argparse.Namespace) -> int:
    if not args.node:
        print("gpuyard netd: --node (or $NODE_NAME) is required", file=sys.stderr)
        return 2
    return asyncio.run(_run(args))


async def _run(args: argparse.Namespace) -> int:
    from prometheus_client import CollectorRegistry

    from gpuyard.kube import metrics
    from gpuyard.kube.client import Client
    from gpuyard.network.agent import NetAgent
    from gpuyard.network.metrics import AccountingCollector
    from gpuyard.network.nft import NftAccounting
    from gpuyard.network.shaping import Shaper, TcError

    if args.kubeconfig:
        client = Client.from_kubeconfig(args.kubeconfig, component="netd")
    else:
        client = Client.from_env(component="netd")
    engine = NftAccounting(netns=args.netns)
    shaper = Shaper(args.uplink, netns=args.netns) if args.uplink else None
    agent = NetAgent(
        client,
        args.node,
        engine,
        shaper,
        tuple(args.service_cidr or [DEFAULT_SERVICES]),
    )
    registry = CollectorRegistry()
    registry.register(AccountingCollector(engine.read, agent.teams, agent.unaccounted))
    metrics.register_prometheus(client.requests, "netd", registry)
    try:
        _server, port = metrics.serve(
            args.metrics_port, args.metrics_address, registry, metrics.auth_from_args(args)
        )
    except OSError as exc:
        print(f"gpuyard netd: metrics port {args.metrics_port}: {exc}", file=sys.stderr)
        await client.close()
        return 1
    print(f"gpuyard netd: node {args.node}, metrics on :{port}/metrics", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await agent.run(stop)
    except TcError as exc:  # the uplink is not ours to shape: say so, change nothing
        print(f"gpuyard netd: {exc}", file=sys.stderr)
        return 1
    finally:
        await client.close()
    return 0
