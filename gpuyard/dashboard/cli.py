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
import ssl

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
    parser.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM)")
    parser.add_argument("--tls-key", help="the private key of --tls-cert (PEM)")
    parser.add_argument(
        "--client-ca",
        help="also sign in browsers by client certificates this CA signed (PEM; such as "
        "the cluster's client CA): the user is the CN, its groups the O values",
    )
    parser.add_argument(
        "--metrics-url",
        action="append",
        default=[],
        help="a node agent's /metrics for network by namespace (repeatable)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")


def ssl_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    if bool(args.tls_cert) != bool(args.tls_key):
        raise CommandError("--tls-cert and --tls-key go together")
    if args.client_ca and not args.tls_cert:
        raise CommandError(
            "--client-ca needs --tls-cert and --tls-key (client certificates need TLS)"
        )
    if not args.tls_cert:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
        if args.client_ca:
            ctx.load_verify_locations(args.client_ca)
            ctx.verify_mode = ssl.CERT_OPTIONAL  # a token still works without one
    except (OSError, ssl.SSLError) as exc:
        raise CommandError(f"cannot load the TLS files: {exc}", 1) from None
    return ctx


async def _main(args: argparse.Namespace) -> int:
    from gpuyard.dashboard.auth import Authority
    from gpuyard.dashboard.hub import Hub
    from gpuyard.dashboard.network import NetworkRates
    from gpuyard.dashboard.server import Dashboard
    from gpuyard.kube.client import Client
    from gpuyard.kube.errors import KubeError

    tls = ssl_context(args)
    try:
        if args.kubeconfig or args.context:
            client = Client.from_kubeconfig(args.kubeconfig, args.context, component="dashboard")
        else:  # in a pod its ServiceAccount, else $KUBECONFIG or ~/.kube/config
            client = Client.from_env(component="dashboard")
    except KubeError as exc:
        raise CommandError(str(exc), 1) from None
    net = NetworkRates(args.metrics_url) if args.metrics_url else None
    hub = Hub(client, network=net)
    server = Dashboard(
        hub, Authority(client), args.host, args.port, serve_metrics=True, ssl_context=tls
    )
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
        how = "a bearer token (kubectl create token ..., or your kubeconfig's)"
        if args.client_ca:
            how += f" or a client certificate signed by {args.client_ca}"
        print(f"sign in with {how}", flush=True)
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
