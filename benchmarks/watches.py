"""Watches and requests of `gpuyard up` with every component: how many watches are open
per resource once it has settled, and the list and watch requests made to get there.

    python benchmarks/watches.py [--nodes N] [--settle S]
    python benchmarks/watches.py --baseline-commit REV   # the same for REV's code

`gpuyard up` runs as its own process (N nodes, all components); after S seconds this
reads the API server's /metrics: apiserver_watchers (open watches by resource) and
apiserver_request_total (requests by verb and resource). With --baseline-commit the
same run is made for the code of commit REV (a temporary git worktree on PYTHONPATH)
and both are printed. Prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any


async def _metrics(kubeconfig: str) -> str:
    from gpuyard.kube.client import Client

    async with Client.from_kubeconfig(kubeconfig, component="bench") as c:
        resp = await c._send("GET", "/metrics")
        return (await resp.read()).decode()


def _labels(line: str) -> dict[str, str]:
    inner = line[line.index("{") + 1 : line.rindex("}")]
    out = {}
    for part in inner.split('",'):
        k, _, v = part.partition("=")
        out[k.strip()] = v.strip().strip('"')
    return out


def measure(nodes: int, settle: float) -> dict[str, Any]:
    from gpuyard.cluster.testing import run_cluster_process

    with tempfile.TemporaryDirectory(prefix="gpuyard-watch-bench-") as d:
        with run_cluster_process(d, nodes=nodes, args=["--in-memory"], timeout=300) as c:
            time.sleep(settle)
            text = asyncio.run(_metrics(c.kubeconfig))
    watchers: dict[str, int] = {}
    requests: dict[str, int] = {}
    for line in text.splitlines():
        if line.startswith("apiserver_watchers{"):
            n = int(float(line.rsplit(" ", 1)[1]))
            if n:
                watchers[_labels(line)["resource"]] = n
        elif line.startswith("apiserver_request_total{"):
            lab = _labels(line)
            if lab.get("verb") in ("LIST", "WATCH", "list", "watch"):
                key = f"{lab['verb'].lower()} {lab['resource']}"
                requests[key] = requests.get(key, 0) + int(float(line.rsplit(" ", 1)[1]))
    return {
        "nodes": nodes,
        "settle_s": settle,
        "watches_open": dict(sorted(watchers.items())),
        "watches_open_total": sum(watchers.values()),
        "list_and_watch_requests": dict(sorted(requests.items())),
        "list_and_watch_requests_total": sum(requests.values()),
    }


def _exit_on_signals() -> None:
    try:
        from gpuyard.childgroups import exit_on_signals
    except ImportError:  # this script run on a baseline commit from before it
        import signal

        def _exit(signum: int, frame: Any) -> None:
            raise SystemExit(128 + signum)

        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, _exit)
        return
    exit_on_signals()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=16)
    ap.add_argument("--settle", type=float, default=15.0)
    ap.add_argument("--baseline-commit", metavar="REV", default=None)
    a = ap.parse_args()
    _exit_on_signals()  # a signal still stops every server it started
    if not a.baseline_commit:
        print(json.dumps(measure(a.nodes, a.settle), indent=2))
        return
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    tree = tempfile.mkdtemp(prefix="gpuyard-baseline-")
    subprocess.run(
        ["git", "-C", repo, "worktree", "add", "--detach", tree, a.baseline_commit],
        check=True,
        capture_output=True,
    )
    from gpuyard import childgroups

    out: dict[str, Any] = {"baseline_commit": a.baseline_commit}
    try:
        for side, code in (("baseline", tree), ("current", repo)):
            got = childgroups.run(
                [sys.executable, os.path.abspath(__file__), "--nodes", str(a.nodes)]
                + ["--settle", str(a.settle)],
                env={**os.environ, "PYTHONPATH": code},
                cwd=code,
            )
            if got.returncode != 0:
                raise SystemExit(f"benchmarks/watches.py: {side} run failed:\n{got.stderr}")
            out[side] = json.loads(got.stdout)
    finally:
        subprocess.run(
            ["git", "-C", repo, "worktree", "remove", "--force", tree], capture_output=True
        )
        shutil.rmtree(tree, ignore_errors=True)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
