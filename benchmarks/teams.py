"""Team capacity at 7,500 nodes and 20 teams: initial assignment time and API writes,
writes when nothing changed, replacement after node loss, webhook latency under load.

The embedded API server (in memory, in this process) holds 7,500 Ready 8-GPU Node
objects with the racks and zones `gpuyard up` gives them (no kubelet loops: the figures
are the team manager's and the API server's costs). The real `TeamManager` runs against
it through the in-process client. The webhook runs in a separate process (as it would
beside a real API server) and is driven open-loop at a fixed rate of AdmissionReviews
over HTTPS (one reused TLS connection pool); latency is measured at the client, so it
includes the client's own scheduling delays on this shared 2-core machine (the load
generator's garbage collector is paused during the run: its pauses are not the
webhook's).

A third part creates pods through the embedded API server at the same rate, half in a
team namespace (the API server calls the webhook over HTTPS) and half in a plain one,
and reports both latencies.

    python benchmarks/teams.py [--quick] [--nodes 7500] [--teams 20] [--rate 500]

Prints JSON. Targets (issue 6): one write per node assigned and none when nothing
changed; webhook p99 <= 20 ms at 500 pod creations per second.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from gpuyard import names
from gpuyard.cluster.shapes import default_shapes
from gpuyard.kube.resources import NAMESPACES, NODES, TEAMS

WEBHOOK_CHILD = """
import asyncio, sys
from gpuyard.teams.admission import TeamInfo
from gpuyard.teams.webhook import WebhookServer
async def main():
    teams = {f"ns-t{i:02d}": TeamInfo(f"t{i:02d}", borrow=i % 2 == 0) for i in range(100)}
    s = WebhookServer(teams.get, sys.argv[1])
    await s.start()
    print(s.port, flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


def node_obj(name: str, rack: str, zone: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                names.LABEL_HOSTNAME: name,
                names.LABEL_POOL: "gpu",
                names.LABEL_RACK: rack,
                names.LABEL_ZONE: zone,
            },
        },
        "spec": {},
        "status": {
            "capacity": {names.RESOURCE_GPU: "8", "cpu": "96", "memory": "1Ti", "pods": "110"},
            "allocatable": {names.RESOURCE_GPU: "8", "cpu": "96", "memory": "1Ti", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
        },
    }


async def wait_until(pred: Any, timeout: float) -> float:
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.01)
    return time.monotonic() - t0


async def manager_part(n_nodes: int, n_teams: int, per_team: int) -> dict[str, Any]:
    from gpuyard.apiserver.server import APIServer
    from gpuyard.kube.client import Client
    from gpuyard.teams.crds import crds
    from gpuyard.teams.manager import TeamManager

    d = tempfile.mkdtemp(prefix="gpuyard-bench-teams-")
    srv = APIServer(d, port=0, persist=False)
    await srv.start()
    client = Client.in_process(srv, component="bench")
    out: dict[str, Any] = {"nodes": n_nodes, "teams": n_teams, "nodes_per_team": per_team}
    try:
        for crd in crds():
            await client.create(crd)
        await asyncio.sleep(0.2)
        shapes = default_shapes(n_nodes)
        sem = asyncio.Semaphore(64)

        async def mk(s: Any) -> None:
            async with sem:
                await client.create(node_obj(s.name, s.rack, s.zone))

        t0 = time.monotonic()
        await asyncio.gather(*(mk(s) for s in shapes))
        out["create_nodes_s"] = round(time.monotonic() - t0, 2)
        for i in range(n_teams):
            await client.create(
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"ns-t{i:02d}"}}
            )
        mgr = TeamManager(client)
        stop = asyncio.Event()
        task = asyncio.create_task(mgr.run(stop))
        await mgr.start()
        await asyncio.sleep(0.5)
        base_writes = mgr.node_writes

        t0 = time.monotonic()
        for i in range(n_teams):
            await client.create(
                {
                    "apiVersion": names.API_VERSION,
                    "kind": "Team",
                    "metadata": {"name": f"t{i:02d}"},
                    "spec": {
                        "namespaces": [f"ns-t{i:02d}"],
                        "capacity": {"gpu": per_team},
                        "borrow": i % 2 == 0,
                    },
                }
            )
        want = n_teams * per_team

        def assigned() -> bool:
            have = sum(1 for n in mgr.nodes.list() if names.LABEL_TEAM in n["metadata"]["labels"])
            return have == want

        out["initial_assignment_s"] = round(await wait_until(assigned, 300), 2)
        await wait_until(lambda: mgr.idle.is_set(), 120)
        out["initial_assignment_settled_s"] = round(time.monotonic() - t0, 2)
        out["node_writes_initial"] = mgr.node_writes - base_writes
        out["nodes_assigned"] = want
        out["writes_per_node_assigned"] = round(out["node_writes_initial"] / max(1, want), 3)
        out["reconcile_rounds_initial"] = mgr.rounds

        # Nothing changed: a forced full reconcile plus a quiet period write nothing.
        w0, s0 = mgr.node_writes, mgr.status_writes
        t1 = time.perf_counter()
        await mgr.reconcile()
        out["full_reconcile_s"] = round(time.perf_counter() - t1, 3)
        r0 = mgr.rounds
        await asyncio.sleep(2.0)
        out["reconcile_rounds_when_quiet"] = mgr.rounds - r0
        out["node_writes_when_unchanged"] = mgr.node_writes - w0
        out["status_writes_when_unchanged"] = mgr.status_writes - s0

        # Lose 1% of the team nodes: time until every team is whole again.
        teamed = sorted(
            n["metadata"]["name"]
            for n in mgr.nodes.list()
            if names.LABEL_TEAM in n["metadata"]["labels"]
        )
        lost = teamed[:: max(1, len(teamed) // max(1, want // 100))][: max(1, want // 100)]
        w0 = mgr.node_writes
        t0 = time.monotonic()
        for name in lost:
            await client.patch_status(
                NODES,
                name,
                {"status": {"conditions": [{"type": "Ready", "status": "False"}]}},
                patch_type="strategic",
            )

        def whole() -> bool:
            from gpuyard.teams.assign import node_healthy

            healthy = sum(
                1
                for n in mgr.nodes.list()
                if names.LABEL_TEAM in n["metadata"]["labels"] and node_healthy(n)
            )
            return healthy == want and all(
                names.LABEL_TEAM
                not in (mgr.nodes.get(x) or {"metadata": {"labels": {}}})["metadata"]["labels"]
                for x in lost
            )

        out["nodes_lost"] = len(lost)
        out["replacement_s"] = round(await wait_until(whole, 120), 2)
        await wait_until(lambda: mgr.idle.is_set(), 60)
        out["node_writes_replacement"] = mgr.node_writes - w0
        teams = (await client.list(TEAMS))["items"]
        out["teams_short"] = sum(1 for t in teams if (t.get("status") or {}).get("shortfall"))
        nss = (await client.list(NAMESPACES))["items"]
        out["namespaces_labelled"] = sum(
            1 for n in nss if names.LABEL_TEAM in (n["metadata"].get("labels") or {})
        )
        stop.set()
        await task
    finally:
        await client.close()
        await srv.stop()
    return out


def review(ns: str, i: int) -> bytes:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"p{i}", "namespace": ns},
        "spec": {
            "containers": [
                {"name": "w", "image": "trainer", "resources": {"limits": {names.RESOURCE_GPU: 1}}}
            ],
            **({"priorityClassName": names.PRIORITY_LOW} if i % 3 == 0 else {}),
        },
    }
    return orjson.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": str(uuid.uuid4()),
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "operation": "CREATE",
                "namespace": ns,
                "object": pod,
            },
        }
    )


async def webhook_part(rate: int, seconds: float, n_teams: int) -> dict[str, Any]:
    d = tempfile.mkdtemp(prefix="gpuyard-bench-webhook-")
    proc = subprocess.Popen(
        [sys.executable, "-c", WEBHOOK_CHILD, d],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        url = f"https://127.0.0.1:{port}/mutate-pods"
        ctx = ssl.create_default_context(cafile=str(Path(d) / "ca.crt"))
        lat: list[float] = []
        errors = 0
        conn = aiohttp.TCPConnector(limit=64, ssl=ctx)
        async with aiohttp.ClientSession(connector=conn) as s:

            async def one(i: int) -> None:
                nonlocal errors
                body = review(f"ns-t{i % n_teams:02d}", i)
                t = time.perf_counter()
                try:
                    async with s.post(url, data=body) as r:
                        data = await r.read()
                        ok = r.status == 200 and b'"allowed":true' in data
                except aiohttp.ClientError:
                    ok = False
                if not ok:
                    errors += 1
                lat.append(time.perf_counter() - t)

            for i in range(50):  # warm the connection pool
                await one(i)
            lat.clear()
            # The load generator's own GC pauses (thousands of live tasks) would show up
            # as webhook latency; pause its collector during the run.
            gc.collect()
            gc.freeze()
            gc.disable()
            total = int(rate * seconds)
            tasks = []
            t0 = time.perf_counter()
            for i in range(total):
                delay = t0 + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one(i)))
            await asyncio.gather(*tasks)
            elapsed = time.perf_counter() - t0
            gc.enable()
            gc.unfreeze()
        lat.sort()
        ms = [x * 1000 for x in lat]
        return {
            "webhook_rate_target_per_s": rate,
            "webhook_rate_achieved_per_s": round(total / elapsed, 1),
            "webhook_requests": total,
            "webhook_errors": errors,
            "webhook_p50_ms": round(statistics.median(ms), 2),
            "webhook_p99_ms": round(ms[int(len(ms) * 0.99) - 1], 2),
            "webhook_max_ms": round(ms[-1], 2),
        }
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


async def through_apiserver_part(rate: int, seconds: float) -> dict[str, Any]:
    """Pod creations through the embedded API server at `rate`/s, as `gpuyard up` runs
    it: API server and webhook in one process and event loop, the webhook called over
    HTTPS. Team namespace (webhook called) against a plain namespace (not called) in
    the same run; the difference is what the webhook adds."""
    from gpuyard.apiserver import compat
    from gpuyard.apiserver.server import APIServer
    from gpuyard.kube.client import Client
    from gpuyard.teams.admission import TeamInfo
    from gpuyard.teams.component import install_webhook
    from gpuyard.teams.webhook import WebhookServer

    if compat.webhooks is None:
        return {"apiserver_webhook": "skipped: the API server has no webhook support"}
    d = tempfile.mkdtemp(prefix="gpuyard-bench-teams-api-")
    srv = APIServer(d, port=0, persist=False)
    await srv.start()
    client = Client.in_process(srv, component="bench")
    hook = WebhookServer({"ns-team": TeamInfo("t")}.get, Path(d) / "certs")
    try:
        for ns, labels in (("ns-team", {names.LABEL_TEAM: "t"}), ("ns-plain", {})):
            await client.create(
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": ns, "labels": labels},
                }
            )
        for name, value in names.PRIORITY_CLASSES.items():
            await client.create(
                {
                    "apiVersion": "scheduling.k8s.io/v1",
                    "kind": "PriorityClass",
                    "metadata": {"name": name},
                    "value": value,
                }
            )
        url = await hook.start()
        await install_webhook(client, url, hook.ca_bundle)
        lat: dict[str, list[float]] = {"ns-team": [], "ns-plain": []}
        errors = 0

        async def one(ns: str, i: int) -> None:
            nonlocal errors
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"p{i}", "namespace": ns},
                "spec": {"containers": [{"name": "w", "image": "x"}]},
            }
            t = time.perf_counter()
            try:
                await client.create(pod)
            except Exception:  # noqa: BLE001 - counted
                errors += 1
            lat[ns].append(time.perf_counter() - t)

        for i in range(50):
            await one("ns-team", 100_000 + i)
            await one("ns-plain", 100_000 + i)
        for v in lat.values():
            v.clear()
        gc.collect()
        gc.freeze()
        gc.disable()
        total = int(rate * seconds)
        tasks = []
        t0 = time.perf_counter()
        for i in range(total):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one("ns-team" if i % 2 else "ns-plain", i)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - t0
        gc.enable()
        gc.unfreeze()
        mutated = await client.get(("v1", "Pod"), "p1", "ns-team")
        out: dict[str, Any] = {
            "apiserver_rate_achieved_per_s": round(total / elapsed, 1),
            "apiserver_create_errors": errors,
            "apiserver_pod_mutated": mutated["spec"].get("priorityClassName")
            == names.PRIORITY_NORMAL,
        }
        for ns, key in (("ns-team", "with_webhook"), ("ns-plain", "without_webhook")):
            ms = sorted(x * 1000 for x in lat[ns])
            out[f"apiserver_create_{key}_p50_ms"] = round(statistics.median(ms), 2)
            out[f"apiserver_create_{key}_p99_ms"] = round(ms[int(len(ms) * 0.99) - 1], 2)
        return out
    finally:
        await hook.stop()
        await client.close()
        await srv.stop()


def main(args: argparse.Namespace) -> dict[str, Any]:
    # Webhook load first, in its own event loop, so the manager run's leftovers (a big
    # heap, background tasks) do not disturb the load generator.
    hook = asyncio.run(webhook_part(args.rate, args.seconds, args.teams))
    hook.update(asyncio.run(through_apiserver_part(args.rate, args.seconds)))
    out = asyncio.run(manager_part(args.nodes, args.teams, args.per_team))
    out.update(hook)
    out["targets"] = {"writes_per_node_assigned": 1, "writes_when_unchanged": 0, "p99_ms": 20}
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="750 nodes, 5 teams, 3 s of load")
    ap.add_argument("--nodes", type=int, default=7500)
    ap.add_argument("--teams", type=int, default=20)
    ap.add_argument("--per-team", type=int, default=0, help="nodes per team (default 80%%)")
    ap.add_argument("--rate", type=int, default=500, help="AdmissionReviews per second")
    ap.add_argument("--seconds", type=float, default=10.0)
    a = ap.parse_args()
    if a.quick:
        a.nodes, a.teams, a.seconds = 750, 5, 3.0
    if not a.per_team:
        a.per_team = int(a.nodes * 0.8) // a.teams
    print(json.dumps(main(a), indent=1))
