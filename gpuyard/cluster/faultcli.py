"""`gpuyard fault KIND NODE ...`: inject a fault into a simulated node of a running
`gpuyard up`, or list the faults injected so far."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

from gpuyard.cliargs import NATURAL
from gpuyard.cluster.faults import FACTOR, KINDS, PARAMS, XID


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", choices=(*KINDS, "list"), help="the fault, or list")
    parser.add_argument("node", nargs="?", help="the simulated node")
    parser.add_argument("--gpu", type=NATURAL, default=0, help="GPU index (gpu-xid, slow-gpu)")
    parser.add_argument(
        "--xid", type=XID, default=79, help="Xid number, 1..255 (gpu-xid; default 79)"
    )
    parser.add_argument(
        "--factor",
        type=FACTOR,
        default=0.5,
        help="speed factor, 0 < F <= 1 (slow-gpu; default 0.5)",
    )
    parser.add_argument(
        "--path", type=PARAMS["disk-full"]["path"][0], default="/", help="mount point (disk-full)"
    )
    parser.add_argument(
        "--kubeconfig",
        help="kubeconfig (default: KUBECONFIG, else DATA_DIR/kubeconfig, else ~/.kube/config)",
    )
    parser.add_argument(
        "--data-dir", default=".gpuyard", help="the gpuyard up data directory (default .gpuyard)"
    )
    parser.add_argument(
        "--all",
        action="store_true",
        help="list: also the faults of nodes that no longer exist (removed by the autoscaler)",
    )


def _kubeconfig(args: argparse.Namespace) -> str | None:
    """--kubeconfig, else $KUBECONFIG (as kubectl and every gpuyard command take it),
    else the kubeconfig of `gpuyard up` in DATA_DIR, else ~/.kube/config."""
    if args.kubeconfig:
        return str(args.kubeconfig)
    if os.environ.get("KUBECONFIG"):
        return None
    local = os.path.join(args.data_dir, "kubeconfig")
    if os.path.exists(local):
        return local
    return None


async def _main(args: argparse.Namespace) -> int:
    from gpuyard.cluster.faults import FaultError, inject, list_faults
    from gpuyard.kube.client import Client
    from gpuyard.kube.errors import KubeError

    try:
        client = Client.from_kubeconfig(_kubeconfig(args), component="fault")
    except KubeError as exc:
        print(f"gpuyard fault: {exc}", file=sys.stderr)
        return 2
    try:
        if args.kind == "list":
            from gpuyard.kube.resources import NODES

            present = {n["metadata"]["name"] for n in (await client.list(NODES))["items"]}
            faults = await list_faults(client)
            shown = [cm for cm in faults if args.all or cm["data"].get("node") in present]
            for cm in shown:
                d = cm["data"]
                ann = cm["metadata"].get("annotations") or {}
                extra = " ".join(
                    f"{k}={v}" for k, v in d.items() if k not in ("kind", "node", "time")
                )
                print(
                    f"{d.get('time', '')}  {d.get('kind', ''):14} {d.get('node', ''):20} {extra}  -> {ann.get('gpuyard.io/fault-result', 'pending')}"
                )
            if len(shown) < len(faults):
                k = len(faults) - len(shown)
                what = (
                    "fault of a node that no longer exists"
                    if k == 1
                    else ("faults of nodes that no longer exist")
                )
                print(f"({k} {what} not shown; --all shows them)")
            return 0
        if not args.node:
            print(f"gpuyard fault {args.kind}: name the node", file=sys.stderr)
            return 2
        params: dict[str, Any] = {key: getattr(args, key) for key in PARAMS.get(args.kind, {})}
        cm = await inject(client, args.kind, args.node, **params)
        print(
            f"{args.kind} {args.node}: {cm['metadata']['annotations'].get('gpuyard.io/fault-result', '')}"
        )
        return 0
    except FaultError as exc:
        print(f"gpuyard fault: {exc}", file=sys.stderr)
        return 1
    except (KubeError, OSError) as exc:
        print(f"gpuyard fault: cannot reach the cluster: {exc}", file=sys.stderr)
        return 1
    finally:
        await client.close()


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_main(args))
