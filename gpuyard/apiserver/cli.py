"""`gpuyard apiserver`: run the embedded Kubernetes-compatible API server on its own."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
from typing import Any

from gpuyard.apiserver import flow
from gpuyard.cliargs import COUNT, NATURAL, PORT, private_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        default=None,
        help="directory for the SQLite store and the kubeconfig "
        "(default ./.gpuyard-apiserver; with --in-memory only the "
        "kubeconfig goes there)",
    )
    parser.add_argument(
        "--port", type=PORT, default=6443, help="TCP port (0 = pick a free one; default 6443)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        "--in-memory",
        action="store_true",
        help="keep everything in memory (nothing survives a restart)",
    )
    parser.add_argument(
        "--fsync",
        action="store_true",
        help="fsync every commit (synchronous=FULL): acknowledged writes survive an "
        "operating-system crash or power loss too, at a cost in write throughput "
        "(benchmarks/durability.py); without it they survive the process being killed",
    )
    parser.add_argument(
        "--watch-log",
        type=COUNT,
        default=50_000,
        help="events kept per resource for resuming watches",
    )
    parser.add_argument(
        "--audit-policy-file",
        default=None,
        help="audit.k8s.io/v1 Policy choosing each request's audit level (None, Metadata, "
        "Request, RequestResponse); default: writes and reads at Metadata, RBAC writes at "
        "Request, no heartbeats, Events or probes, never Secret or token bodies",
    )
    parser.add_argument(
        "--audit-log-path",
        default=None,
        help="audit log file (JSON lines, mode 0600; default DATA_DIR/audit.log; '-' or '' "
        "turns it off)",
    )
    parser.add_argument(
        "--default-toleration-seconds",
        type=NATURAL,
        default=300,
        help="tolerationSeconds of the not-ready and unreachable NoExecute tolerations "
        "every pod gets (kube-apiserver's DefaultTolerationSeconds; default 300)",
    )
    flow.add_arguments(parser)


def audit_options(args: argparse.Namespace) -> dict[str, Any]:
    """The APIServer keyword arguments of the audit flags (a bad policy file is refused
    here, naming the file and what is wrong)."""
    from gpuyard.apiserver.audit import Policy

    if args.audit_policy_file:
        Policy.load(args.audit_policy_file)
    path = args.audit_log_path
    return {
        "audit_policy": args.audit_policy_file,
        "audit_log": "" if path in ("-", "") else path,
    }


async def _serve(args: argparse.Namespace) -> int:
    from gpuyard.apiserver.server import APIServer

    data_dir = args.data_dir
    if data_dir is None:
        data_dir = (
            tempfile.mkdtemp(prefix="gpuyard-apiserver-")
            if args.in_memory
            else os.path.abspath(".gpuyard-apiserver")
        )
    # An unusable directory is named with its cause before anything starts.
    data_dir = private_dir(data_dir)
    server = APIServer(
        data_dir,
        host=args.host,
        port=args.port,
        persist=not args.in_memory,
        log_size=args.watch_log,
        fsync=args.fsync,
        flow=flow.limits_from_args(args),
        **audit_options(args),
        default_toleration_seconds=args.default_toleration_seconds,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        url = await server.start()
    except OSError as exc:
        await server.stop()
        if exc.filename:  # a file of the data directory, not the socket
            raise
        print(
            f"gpuyard apiserver: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr
        )
        return 1
    store = "in memory" if args.in_memory else f"stored in {data_dir}"
    print(f"gpuyard apiserver listening on {url} ({store})", flush=True)
    print(f"kubeconfig: {server.kubeconfig_path}", flush=True)
    print(f"  export KUBECONFIG={server.kubeconfig_path}; kubectl get namespaces", flush=True)
    await stop.wait()
    await server.stop()
    print("gpuyard apiserver stopped", flush=True)
    return 0


def run(args: argparse.Namespace) -> int:
    # uvloop when available (GPUYARD_NO_UVLOOP=1 turns it off, for comparisons).
    if not os.environ.get("GPUYARD_NO_UVLOOP"):
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return int(uvloop.run(_serve(args)))
    return asyncio.run(_serve(args))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpuyard apiserver", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))
