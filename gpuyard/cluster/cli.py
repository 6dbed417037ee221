"""`gpuyard up`: an embedded GPU cluster in one process (API server, simulated nodes,
node lifecycle, fault injection and gpuyard's components)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from gpuyard.apiserver import flow
from gpuyard.cliargs import NATURAL, PORT, SECONDS, CommandError, Float, Int, parse_settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--nodes", type=NATURAL, default=8, help="simulated 8-GPU nodes (default 8)"
    )
    parser.add_argument("--cpu-nodes", type=NATURAL, default=0, help="simulated CPU-only nodes")
    parser.add_argument(
        "--shapes",
        help="node shapes: a shapes YAML file or openb:PATH[*K] (a real node list); "
        "replaces --nodes",
    )
    parser.add_argument("--data-dir", default=".gpuyard", help="state directory (default .gpuyard)")
    parser.add_argument(
        "--port", type=PORT, default=6443, help="API port (default 6443; 0: any free port)"
    )
    parser.add_argument(
        "--rack-size",
        type=Int(lo=1, hi=100_000),
        default=32,
        help="simulated nodes per rack, racks dealt round robin over zone-a..c (default 32)",
    )
    parser.add_argument(
        "--mig",
        action="store_true",
        help="publish GPUs that can be partitioned (A100, H100, H200, B200) as MIG "
        "partitionable devices: whole GPUs and MIG profiles drawing on per-GPU counters "
        "(DeviceClass mig.nvidia.com)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--in-memory", action="store_true", help="keep the store in memory")
    parser.add_argument("--lease-seconds", type=SECONDS, default=10.0, help="node lease period")
    parser.add_argument(
        "--node-grace", type=SECONDS, default=40.0, help="seconds without a lease before NotReady"
    )
    parser.add_argument(
        "--default-toleration-seconds",
        type=NATURAL,
        default=300,
        help="tolerationSeconds of the not-ready and unreachable NoExecute tolerations "
        "every pod gets (kube-apiserver's DefaultTolerationSeconds; default 300)",
    )
    parser.add_argument("--start-delay", type=Float(lo=0), default=0.5, help="pod start delay (s)")
    parser.add_argument(
        "--preflight", action="store_true", help="nodes register with the preflight taint"
    )
    parser.add_argument(
        "--autoscale",
        metavar="POOL=MIN:MAX[,...]",
        help="run the simulated cluster-autoscaler with these node groups, such as gpu=0:64",
    )
    parser.add_argument(
        "--join-rate",
        type=Float(lo=0, note="0: all at once"),
        default=0.0,
        help="nodes the autoscaler lets join per second (default 0: all at once)",
    )
    parser.add_argument(
        "--balloons",
        action="store_true",
        help="keep a BalloonPool of warm capacity for each node pool",
    )
    parser.add_argument(
        "--components",
        help="comma-separated components to run (default: all available; 'none' for none)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a component option, such as health_quiet_s=5 (repeatable; an unknown key "
        "lists the known ones)",
    )
    parser.add_argument(
        "--metrics-port",
        type=Int(0, 65535, "0: a free port"),
        default=0,
        help="serve every component's Prometheus metrics on this port (default: a free one)",
    )
    parser.add_argument(
        "--dashboard-port",
        type=Int(-1, 65535, "0: a free port, -1: no dashboard"),
        default=0,
        help="serve the live web dashboard on this port (default: a free one; -1: none)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    flow.add_arguments(parser)


async def _main(args: argparse.Namespace) -> int:
    from gpuyard.cluster.shapes import ShapeError
    from gpuyard.cluster.up import EmbeddedCluster, UpOptions, known_options

    try:
        options = parse_settings(args.set, known_options())
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    if args.balloons:
        options["balloons"] = True
    comps = None
    if args.components:
        comps = [] if args.components == "none" else [c.strip() for c in args.components.split(",")]
    opts = UpOptions(
        nodes=args.nodes,
        cpu_nodes=args.cpu_nodes,
        shapes=args.shapes,
        data_dir=args.data_dir,
        host=args.host,
        port=args.port,
        in_memory=args.in_memory,
        lease_seconds=args.lease_seconds,
        node_grace=args.node_grace,
        default_toleration_seconds=args.default_toleration_seconds,
        start_delay=args.start_delay,
        preflight=args.preflight,
        autoscale=args.autoscale,
        join_rate=args.join_rate,
        rack_size=args.rack_size,
        mig=args.mig,
        components=comps,
        options=options,
        flow=flow.limits_from_args(args),
        metrics_port=args.metrics_port,
        dashboard_port=None if args.dashboard_port < 0 else args.dashboard_port,
    )
    cluster = EmbeddedCluster(opts)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    from gpuyard.progress import Steps

    bar: list[Steps] = []

    def node_progress(n: int, total: int) -> None:
        if not bar:  # plain lines only where there are enough nodes to wait for
            bar.append(Steps("bringing up nodes", total, plain=total >= 1000).__enter__())
        bar[0].advance(n)

    cluster.node_progress = node_progress
    try:
        try:
            await cluster.start()
        finally:
            if bar:
                bar[0].__exit__(None, None, None)
    except (ShapeError, ValueError) as exc:
        print(f"gpuyard up: {exc}", file=sys.stderr)
        await cluster.stop()
        return 2
    except OSError as exc:
        print(f"gpuyard up: cannot start: {exc}", file=sys.stderr)
        await cluster.stop()
        return 1
    assert cluster.sim is not None
    print(
        f"gpuyard cluster up: {len(cluster.sim.nodes)} simulated nodes at {cluster.url}", flush=True
    )
    print(f"components: {', '.join(cluster.started) or 'none'}", flush=True)
    if cluster.metrics_url:
        import ipaddress

        try:
            local = ipaddress.ip_address(args.host).is_loopback
        except ValueError:
            local = args.host == "localhost"
        how = (
            "no token asked: only this machine reaches it"
            if local
            else f"no token asked: anyone who reaches {args.host} may read it"
        )
        print(f"metrics of every component: {cluster.metrics_url} ({how})", flush=True)
    if cluster.dashboard_url:
        # signs the browser in as the read-only gpuyard-viewer (any token works too)
        token = cluster.viewer_token() or getattr(cluster.server, "token", "")
        print(f"dashboard (signs you in): {cluster.dashboard_url}#token={token}", flush=True)
    if cluster.missing:
        print(f"not available: {', '.join(cluster.missing)}", flush=True)
    print("use it from another terminal:", flush=True)
    print(f"  export KUBECONFIG={cluster.kubeconfig}; kubectl get nodes", flush=True)
    print("Ctrl-C stops it; running it again resumes from the data directory.", flush=True)
    await stop.wait()
    print("stopping...", flush=True)
    await cluster.stop()
    print("stopped", flush=True)
    return 0


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    return asyncio.run(_main(args))
