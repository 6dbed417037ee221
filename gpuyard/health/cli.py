"""`gpuyard health ...`: the node agent, the health controllers, and a few tools.

    gpuyard health agent --node NAME          the DaemonSet agent on a real host
    gpuyard health agent --sim-hosts DIR      every simulated host under DIR (one task)
    gpuyard health controller                 conditions -> taints, with the brake
    gpuyard health preflight                  the preflight gate for new nodes
    gpuyard health periodic                   periodic active tests on idle nodes
    gpuyard health brake status|reset         look at / reset the cluster-wide brake
    gpuyard health check [--sim-host DIR]     run the checks here once, print JSON
    gpuyard health xid FILE                   classify the Xid/SXid lines of a log

Controllers and agents talk to the cluster of --kubeconfig (else $KUBECONFIG, else
~/.kube/config, else the in-cluster service account).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from gpuyard.cliargs import COUNT, ENDPOINT, NATURAL, PORT_OR_OFF, SECONDS, Float

# Tainting no node would switch the controller off: a share above 0, at most all.
MAX_SHARE = Float(gt=0, hi=1, what="a share")


def _metrics_port(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--metrics-port",
        type=PORT_OR_OFF,
        default=0,
        help="serve Prometheus metrics on this port (0: off)",
    )
    from gpuyard.kube.metrics import add_auth_argument

    add_auth_argument(p)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kubeconfig", default=None)
    from gpuyard.kube.leader import add_timing_arguments

    sub = parser.add_subparsers(dest="health_cmd", metavar="SUBCOMMAND")

    a = sub.add_parser("agent", help="run the node health agent")
    a.add_argument("--node", default=os.environ.get("NODE_NAME"), help="this node's name")
    a.add_argument(
        "--sim-hosts",
        default=None,
        metavar="DIR",
        help="run agents for every simulated host directory under DIR",
    )
    a.add_argument("--interval", type=SECONDS, default=10.0, help="seconds between checks")
    a.add_argument("--expected-gpus", type=NATURAL, default=None)
    a.add_argument(
        "--disk",
        action="append",
        default=None,
        metavar="PATH",
        help="mount point to check (repeatable; default /)",
    )
    a.add_argument(
        "--peer",
        action="append",
        type=ENDPOINT,
        default=[],
        metavar="HOST:PORT",
        help="peer that must be reachable (repeatable)",
    )
    a.add_argument("--ib-root", default="/sys/class/infiniband")
    _metrics_port(a)
    a.add_argument("--kern-log", default="/var/log/kern.log")
    a.add_argument(
        "--quiet-period",
        type=SECONDS,
        default=300.0,
        help="seconds without a bad result before an area recovers",
    )

    c = sub.add_parser("controller", help="turn health conditions into taints (with the brake)")
    c.add_argument(
        "--max-share",
        type=MAX_SHARE,
        default=0.05,
        help="most nodes tainted within the window, as a share (default 0.05)",
    )
    c.add_argument("--window", type=SECONDS, default=3600.0, help="brake window in seconds")
    _metrics_port(c)
    c.add_argument("--leader-elect", action="store_true")
    add_timing_arguments(c)

    p = sub.add_parser("preflight", help="run the preflight gate")
    p.add_argument("--max-concurrent", type=COUNT, default=10)
    _metrics_port(p)
    p.add_argument("--timeout", type=SECONDS, default=900.0)
    p.add_argument("--retries", type=NATURAL, default=1)
    p.add_argument("--image", default=None)
    p.add_argument("--leader-elect", action="store_true")
    add_timing_arguments(p)

    q = sub.add_parser("periodic", help="run periodic active tests on idle nodes")
    q.add_argument("--max-concurrent", type=COUNT, default=5)
    _metrics_port(q)
    q.add_argument("--max-starts-per-hour", type=COUNT, default=60)
    q.add_argument("--retest-after", type=SECONDS, default=6 * 86400.0, help="seconds")
    q.add_argument("--timeout", type=SECONDS, default=900.0)
    q.add_argument("--image", default=None)
    q.add_argument("--leader-elect", action="store_true")
    add_timing_arguments(q)

    b = sub.add_parser("brake", help="show or reset the cluster-wide brake")
    b.add_argument("action", choices=["status", "reset"])

    k = sub.add_parser("check", help="run the passive checks here once and print JSON")
    k.add_argument("--sim-host", default=None, metavar="DIR")
    k.add_argument("--expected-gpus", type=NATURAL, default=None)
    k.add_argument("--disk", action="append", default=None, metavar="PATH")
    k.add_argument("--peer", action="append", type=ENDPOINT, default=[], metavar="HOST:PORT")
    k.add_argument("--ib-root", default="/sys/class/infiniband")
    k.add_argument("--kern-log", default=None, help="read this whole log for Xids")

    x = sub.add_parser("xid", help="classify the Xid/SXid lines of a kernel log")
    x.add_argument("file", help="log file, or - for stdin")

    for live in (a, c, p, q, b):  # also accepted after the subcommand
        live.add_argument("--kubeconfig", default=argparse.SUPPRESS)


def _fail(msg: str) -> int:
    print(f"gpuyard health: {msg}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    cmd = getattr(args, "health_cmd", None)
    if cmd is None:
        return _fail("say what to run: agent, controller, preflight, periodic, brake, check, xid")
    from gpuyard.kube.errors import KubeError

    try:
        if cmd == "xid":
            return _xid(args)
        if cmd == "check":
            return asyncio.run(_check(args))
        return asyncio.run(_live(args))
    except (ValueError, OSError, KubeError) as exc:
        return _fail(str(exc))


def _xid(args: argparse.Namespace) -> int:
    from gpuyard.health.xid import parse_lines

    text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(errors="replace")
    events = parse_lines(text)
    for ev in events:
        print(
            json.dumps(
                {
                    "code": ev.code,
                    "sxid": ev.sxid,
                    "pci": ev.pci,
                    "class": ev.cls.value,
                    "summary": ev.summary,
                    "message": ev.message,
                    "timestamp": ev.timestamp,
                }
            )
        )
    return 1 if any(ev.cls.value in ("reset", "fatal") for ev in events) else 0


async def _check(args: argparse.Namespace) -> int:
    from gpuyard.health.agent import AgentConfig, host_checker, sim_checker
    from gpuyard.health.checks import Severity

    cfg = AgentConfig(expected_gpus=args.expected_gpus)
    if args.sim_host:
        if not Path(args.sim_host).is_dir():
            raise ValueError(f"{args.sim_host} is not a directory")
        ch = sim_checker(Path(args.sim_host).name, args.sim_host, cfg)
        ch.tail = None
    else:
        ch = host_checker(socket.gethostname(), cfg, args.disk, args.peer, args.ib_root, None)
    if args.kern_log or args.sim_host:
        from gpuyard.health.checks.kernel import KernelLogTail

        ch.tail = KernelLogTail(args.kern_log or Path(args.sim_host) / "kern.log")
    findings, unavailable = await ch.check(time.time())
    print(
        json.dumps(
            {"findings": [f.to_dict() for f in findings], "unavailable": unavailable}, indent=2
        )
    )
    return 1 if any(f.severity >= Severity.UNHEALTHY for f in findings) else 0


def _client(args: argparse.Namespace, component: str) -> Any:
    from gpuyard.kube.client import Client

    if args.kubeconfig:
        return Client.from_kubeconfig(args.kubeconfig, component=component)
    return Client.from_env(component=component)


async def _until_signal(
    body: Callable[[asyncio.Event], Awaitable[Any]],
    client: Any,
    name: str,
    leader: bool,
    timings: Any = None,
) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    from gpuyard.health.leading import run_component

    try:
        kept = await run_component(client, name, body, stop, leader=leader, timings=timings)
    finally:
        await client.close()
    if not kept:
        print(f"gpuyard health: {name} lost its leader lease; exiting", file=sys.stderr)
        return 1
    return 0


async def _live(args: argparse.Namespace) -> int:
    cmd = args.health_cmd
    if getattr(args, "metrics_port", 0):
        from gpuyard.kube import metrics

        try:
            metrics.serve(args.metrics_port, auth=metrics.auth_from_args(args))
        except OSError as exc:
            print(f"gpuyard health {cmd}: metrics port {args.metrics_port}: {exc}", file=sys.stderr)
            return 1
    if cmd == "agent":
        return await _agent(args)
    lease = None
    if cmd in ("controller", "preflight", "periodic"):
        from gpuyard.kube.leader import timings_from

        try:
            lease = timings_from(args)
        except ValueError as exc:
            print(f"gpuyard health {cmd}: {exc}", file=sys.stderr)
            return 2
    client = _client(args, f"health-{cmd}")
    if cmd == "controller":
        from gpuyard.health.brake import BrakeConfig
        from gpuyard.health.controller import run_controller

        cfg = BrakeConfig(max_share=args.max_share, window_s=args.window)
        return await _until_signal(
            lambda stop: run_controller(client, stop, cfg),
            client,
            "gpuyard-health-controller",
            args.leader_elect,
            lease,
        )
    if cmd == "preflight":
        from gpuyard.health.preflight import PreflightConfig, run_preflight
        from gpuyard.health.testpods import ActiveTestConfig

        pods = ActiveTestConfig(image=args.image) if args.image else ActiveTestConfig()
        pcfg = PreflightConfig(
            max_concurrent=args.max_concurrent,
            timeout_s=args.timeout,
            retries=args.retries,
            pods=pods,
        )
        return await _until_signal(
            lambda stop: run_preflight(client, stop, pcfg),
            client,
            "gpuyard-health-preflight",
            args.leader_elect,
            lease,
        )
    if cmd == "periodic":
        from gpuyard.health.periodic import PeriodicConfig, run_periodic
        from gpuyard.health.testpods import ActiveTestConfig

        pods = ActiveTestConfig(image=args.image) if args.image else ActiveTestConfig()
        qcfg = PeriodicConfig(
            retest_after_s=args.retest_after,
            max_concurrent=args.max_concurrent,
            max_starts_per_hour=args.max_starts_per_hour,
            timeout_s=args.timeout,
            pods=pods,
        )
        return await _until_signal(
            lambda stop: run_periodic(client, stop, qcfg),
            client,
            "gpuyard-health-periodic",
            args.leader_elect,
            lease,
        )
    if cmd == "brake":
        return await _brake(client, args.action)
    raise ValueError(f"unknown subcommand {cmd}")


async def _brake(client: Any, action: str) -> int:
    from gpuyard.health import kubeio
    from gpuyard.health.controller import BRAKE_CONFIGMAP, NAMESPACE, iso

    try:
        cm = await kubeio.get_configmap(client, NAMESPACE, BRAKE_CONFIGMAP)
        if action == "status":
            print(json.dumps((cm or {}).get("data") or {"state": "ok"}, indent=2))
            return 0
        if cm is None or (cm.get("data") or {}).get("state") != "tripped":
            print("the health brake is not tripped")
            return 0
        await kubeio.put_configmap(
            client,
            {
                "metadata": {"name": BRAKE_CONFIGMAP, "namespace": NAMESPACE},
                "data": {"state": "ok", "resetAt": iso(time.time()), "message": "", "held": ""},
            },
        )
        print("health brake reset: the controller taints again, counting afresh")
        return 0
    finally:
        await client.close()


async def _agent(args: argparse.Namespace) -> int:
    from gpuyard.health.agent import AgentConfig, SimAgents, host_checker, run_host_agent
    from gpuyard.health.kubeio import KubeWriter
    from gpuyard.health.verdict import VerdictConfig
    from gpuyard.kube.resources import NODES

    cfg = AgentConfig(
        interval_s=args.interval,
        expected_gpus=args.expected_gpus,
        verdict=VerdictConfig(quiet_s=args.quiet_period),
    )
    if args.sim_hosts:
        if not Path(args.sim_hosts).is_dir():
            raise ValueError(f"{args.sim_hosts} is not a directory")
        client = _client(args, "health-agent")

        async def seed() -> dict[str, dict[str, Any]]:
            return {n["metadata"]["name"]: n for n in (await client.list(NODES))["items"]}

        agents = SimAgents(args.sim_hosts, KubeWriter(client), cfg, seed=seed)
        return await _until_signal(agents.run, client, "", False)
    if not args.node:
        raise ValueError("--node NAME (or $NODE_NAME) is required")
    client = _client(args, "health-agent")
    checker = host_checker(args.node, cfg, args.disk, args.peer, args.ib_root, args.kern_log)
    node = args.node

    async def body(stop: asyncio.Event) -> None:
        await run_host_agent(
            checker, KubeWriter(client), lambda: client.get(NODES, node), stop, cfg
        )

    return await _until_signal(body, client, "", False)
