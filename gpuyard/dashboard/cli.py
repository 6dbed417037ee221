"""`gpuyard dashboard`: serve the live web dashboard of a cluster (read-only).

It watches the cluster as the kubeconfig's user (who must be allowed to list and watch
nodes, pods, namespaces, events and gpuyard's kinds, and to create tokenreviews and
subjectaccessreviews); each browser signs in with a bearer token of its own, which the
API server checks."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from gpuyard.cliargs import PORT, CommandError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kubeconfig", help="kubeconfig (default $KUBECONFIG, ~/.kube/config)")
    parser.add_argument("--context", help="kubeconfig context")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    parser.add_argument(
        "--port", type=PORT, default=8480, help="port to listen on (default 8480; 0: any free)"
    )
    parser.add_argument(
        "--metrics-url",
        action="append",
        default=[],
        help="a node agent's /metrics for network by namespace (repeatable)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")


async def _main(args: argparse.Namespace) -> int:
    from gpuyard.dashboard.auth import Authority
    from gpuyard.dashboard.hub import Hub
    from gpuyard.dashboard.network import NetworkRates
    from gpuyard.dashboard.server import Dashboard
    from gpuyard.kube.client import Client
    from gpuyard.kube.errors import KubeError

    try:
        client = Client.from_kubeconfig(args.kubeconfig, args.context, component="dashboard")
    except KubeError as exc:
        raise CommandError(str(exc), 1) from None
    net = NetworkRates(args.metrics_url) if args.metrics_url else None
    hub = Hub(client, network=net)
    server = Dashboard(hub, Authority(client), args.host, args.port, serve_metrics=True)
    try:
        try:
            await hub.start(sync_timeout=60)
        except TimeoutError:
            raise CommandError(
                f"could not list nodes and pods of {client.config.server} within 60 s", 1
            ) from None
        try:
            url = await server.start()
        except OSError as exc:
            why = exc.strerror or str(exc)
            raise CommandError(f"cannot listen on {args.host}:{args.port}: {why}", 1) from None
        print(f"gpuyard dashboard of {client.config.server}: {url}", flush=True)
        print("sign in with a bearer token (kubectl create token ..., or your kubeconfig's)")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await server.stop()
        await hub.stop()
        await client.close()
    return 0


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    return asyncio.run(_main(args))
