"""Team capacity at 7,500 nodes and 20 teams: initial assignment time and API writes,
writes when nothing changed, replacement after node loss, webhook latency under load.

Manager: the embedded API server (in memory, in this process) holds 7,500 Ready 8-GPU
Node objects with the racks and zones `gpuyard up` gives them (no kubelet loops: the
figures are the team manager's and the API server's costs). The real `TeamManager` runs
against it through the in-process client.

Webhook alone (`webhook_alone`): the webhook in a process of its own, driven open-loop
at a fixed rate of AdmissionReviews over HTTPS (kept-alive connections); latency at the
client (whose own garbage collector is paused during the run: its pauses are not the
webhook's).

Webhook under load (`pod_creations_through_apiserver`, summed up in
`webhook_under_load`): pods created at the same rate through the embedded API server
holding the same nodes and Teams, with the teams component of `gpuyard up` running
(manager, informers, webhook, its MutatingWebhookConfiguration). Rounds of creations in
the team namespaces (the API server calls the webhook over HTTPS) alternate with rounds
in a plain namespace (no call) at the same rate; the difference is the webhook's cost.
The webhook's own latency is measured where the API server calls it. Run with the
webhook served from a process of its own (`process`, what `gpuyard up` does, as on a
real cluster), from its own thread and event loop (`thread`) and from the API server's
event loop (`loop`, what `gpuyard up` did before). Latencies count from when each request was due,
so a stall of the event loop shows in them. The event loop is uvloop, as in
`gpuyard up`. This machine is shared: the load average is reported with each run.

    python benchmarks/teams.py [--quick] [--nodes 7500] [--teams 20] [--rate 500]
                               [--webhook-in thread,process,loop]

Prints JSON. Targets (issue 6): one write per node assigned and none when nothing
changed; webhook p99 <= 20 ms at 500 pod creations per second.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
    from gpuyard import childgroups

    childgroups.adopt(proc.pid)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        url = f"https://127.0.0.1:{port}/mutate-pods"
        ctx = ssl.create_default_context(cafile=str(Path(d) / "ca.crt"))
        lat: list[float] = []
        errors = 0
        conn = aiohttp.TCPConnector(limit=64, ssl=ctx)
        async with aiohttp.ClientSession(connector=conn) as s:

            async def one(i: int, due: float | None = None) -> None:
                # Latency counts from when the request was due (open loop): a stall
                # that delays sending is part of it, not hidden from it.
                nonlocal errors
                body = review(f"ns-t{i % n_teams:02d}", i)
                t = due or time.perf_counter()
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
            elapsed = await paced(rate, total, one)
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


async def paced(rate: float, n: int, one: Any) -> float:
    """Start one(i, due) for i in range(n) at `rate` per second, each at its due time
    (open loop: a late start counts in its latency); wall seconds until all are done."""
    tasks = []
    t0 = time.perf_counter()
    for i in range(n):
        due = t0 + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, due)))
    await asyncio.gather(*tasks)
    return time.perf_counter() - t0


def pct(ms: list[float], q: float) -> float | None:
    xs = sorted(ms)
    return round(xs[min(len(xs) - 1, max(0, int(len(xs) * q) - 1))], 2) if xs else None


async def cluster_load_part(
    n_nodes: int, n_teams: int, per_team: int, rate: int, seconds: float, where: str
) -> dict[str, Any]:
    """Pod creations at `rate`/s through the embedded API server holding `n_nodes` nodes
    and `n_teams` Teams, with the teams component of `gpuyard up` running (manager,
    Team informer, webhook, its MutatingWebhookConfiguration). Pods in the team
    namespaces (the API server calls the webhook over HTTPS) and in a plain namespace
    (no call) are created in alternating rounds at the same rate, so both see the same
    machine; the difference is the webhook's cost. The webhook's own latency is measured
    where the API server calls it (`gpuyard.apiserver.webhooks.observers`).

    `where` the webhook is served (the component's option teams_webhook_mode):
    "process" (a process of its own, fed the team table: what `gpuyard up` does),
    "thread" (its own thread and event loop in the API server's process) or "loop" (the
    API server's event loop: what `gpuyard up` did before)."""
    from gpuyard.apiserver import webhooks as wh
    from gpuyard.apiserver.server import APIServer
    from gpuyard.cluster.components import Context
    from gpuyard.kube.client import Client
    from gpuyard.teams import component
    from gpuyard.teams.crds import crds
    from gpuyard.teams.webhook import CONFIG_NAME

    d = Path(tempfile.mkdtemp(prefix="gpuyard-bench-teams-api-"))
    srv = APIServer(str(d), port=0, persist=False)
    await srv.start()
    client = Client.in_process(srv, component="bench")
    stop = asyncio.Event()
    task: asyncio.Task[None] | None = None
    calls: list[float] = []
    failed_calls = 0

    def observe(name: str, s: float, ok: bool) -> None:
        nonlocal failed_calls
        calls.append(s)
        failed_calls += not ok

    try:
        for crd in crds():
            await client.create(crd)
        for name, value in names.PRIORITY_CLASSES.items():
            await client.create(
                {
                    "apiVersion": "scheduling.k8s.io/v1",
                    "kind": "PriorityClass",
                    "metadata": {"name": name},
                    "value": value,
                }
            )
        sem = asyncio.Semaphore(64)

        async def mk(sh: Any) -> None:
            async with sem:
                await client.create(node_obj(sh.name, sh.rack, sh.zone))

        await asyncio.gather(*(mk(sh) for sh in default_shapes(n_nodes)))
        spaces = [f"ns-t{i:02d}" for i in range(n_teams)]
        for ns in [*spaces, "ns-plain"]:
            await client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        for i in range(n_teams):
            await client.create(
                {
                    "apiVersion": names.API_VERSION,
                    "kind": "Team",
                    "metadata": {"name": f"t{i:02d}"},
                    "spec": {
                        "namespaces": [spaces[i]],
                        "capacity": {"gpu": per_team},
                        "borrow": i % 2 == 0,
                    },
                }
            )
        ctx = Context(
            client=client,
            server=srv,
            data_dir=d,
            stop=stop,
            options={"teams_webhook_mode": where},
        )
        task = asyncio.create_task(component.run(ctx))
        want = n_teams * per_team
        t0 = time.monotonic()
        while True:
            if task.done():
                task.result()
            teamed = await client.list(NODES, label_selector=names.LABEL_TEAM)
            labelled = await client.list(NAMESPACES, label_selector=names.LABEL_TEAM)
            hooks = await client.list(component.MWC)
            if (
                len(teamed["items"]) == want
                and len(labelled["items"]) == n_teams
                and any(h["metadata"]["name"] == CONFIG_NAME for h in hooks["items"])
            ):
                break
            if time.monotonic() - t0 > 300:
                raise TimeoutError("teams not assigned")
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # the assignment's status writes settle

        lat: dict[str, list[float]] = {"team": [], "plain": []}
        errors = 0
        seq = 0

        async def one(kind: str, due: float | None = None) -> None:
            # Latency counts from when the creation was due (open loop): a stall of the
            # event loop that delays sending is part of it, not hidden from it.
            nonlocal errors, seq
            seq += 1
            ns = spaces[seq % n_teams] if kind == "team" else "ns-plain"
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"p{seq}", "namespace": ns},
                "spec": {
                    "containers": [
                        {
                            "name": "w",
                            "image": "trainer",
                            "resources": {"limits": {names.RESOURCE_GPU: 1}},
                        }
                    ],
                    **({"priorityClassName": names.PRIORITY_LOW} if seq % 3 == 0 else {}),
                },
            }
            t = due or time.perf_counter()
            try:
                await client.create(pod)
            except Exception:  # noqa: BLE001 - counted
                errors += 1
            lat[kind].append(time.perf_counter() - t)

        async def drive(kind: str, n: int) -> float:
            return await paced(rate, n, lambda i, due: one(kind, due))

        for _ in range(50):  # one warm connection, as after any quiet period
            await one("team")
            await one("plain")
        for v in lat.values():
            v.clear()
        gc.collect()
        gc.freeze()  # the setup's objects are not scanned again; the collector stays on
        watchers = getattr(wh, "observers", [])  # (older trees: no per-call figures)
        watchers.append(observe)
        load0 = os.getloadavg()[0]
        rounds = 2
        per_round = int(rate * seconds / rounds)
        elapsed = {"team": 0.0, "plain": 0.0}
        cpu = {"team": 0.0, "plain": 0.0}
        for _ in range(rounds):
            for kind in ("plain", "team"):
                c0 = time.process_time()
                elapsed[kind] += await drive(kind, per_round)
                cpu[kind] += time.process_time() - c0
        watchers.remove(observe)
        gc.unfreeze()
        last = await client.get(("v1", "Pod"), f"p{seq}", spaces[seq % n_teams])
        tolerated = {t.get("key") for t in last["spec"].get("tolerations") or []}
        team_ms = [x * 1000 for x in lat["team"]]
        plain_ms = [x * 1000 for x in lat["plain"]]
        call_ms = [x * 1000 for x in calls]
        return {
            "webhook_served_from": where,
            "rate_achieved_per_s": round(len(team_ms) / max(1e-9, elapsed["team"]), 1),
            "creates_each": len(team_ms),
            "create_errors": errors,
            "webhook_call_errors": failed_calls,
            "pods_mutated": names.LABEL_TEAM in tolerated,
            "webhook_call_p50_ms": pct(call_ms, 0.5),
            "webhook_call_p99_ms": pct(call_ms, 0.99),
            "webhook_call_max_ms": round(max(call_ms), 2) if call_ms else None,
            "create_with_webhook_p50_ms": pct(team_ms, 0.5),
            "create_with_webhook_p99_ms": pct(team_ms, 0.99),
            "create_without_webhook_p50_ms": pct(plain_ms, 0.5),
            "create_without_webhook_p99_ms": pct(plain_ms, 0.99),
            # CPU of this process (API server, load generator and, unless the webhook is
            # served from another process, the webhook) per creation: what the machine
            # must have spare for the rate to be sustained.
            "cpu_ms_per_create_with_webhook": round(cpu["team"] * 1000 / len(team_ms), 3),
            "cpu_ms_per_create_without_webhook": round(cpu["plain"] * 1000 / len(plain_ms), 3),
            "loadavg_1m_before": round(load0, 2),
            "loadavg_1m_after": round(os.getloadavg()[0], 2),
        }
    finally:
        with contextlib.suppress(ValueError, AttributeError):
            wh.observers.remove(observe)
        stop.set()
        if task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 30)
        await client.close()
        await srv.stop()


def main(args: argparse.Namespace) -> dict[str, Any]:
    loop_kind = "asyncio"
    if not args.no_uvloop:
        try:
            import uvloop

            uvloop.install()  # as `gpuyard up` runs
            loop_kind = "uvloop"
        except ImportError:
            pass
    # Webhook load first, in its own event loop, so the manager run's leftovers (a big
    # heap, background tasks) do not disturb the load generator.
    alone = asyncio.run(webhook_part(args.rate, args.seconds, args.teams))
    load = {
        where: asyncio.run(
            cluster_load_part(args.nodes, args.teams, args.per_team, args.rate, args.seconds, where)
        )
        for where in args.webhook_in.split(",")
    }
    out = asyncio.run(manager_part(args.nodes, args.teams, args.per_team))
    out["event_loop"] = loop_kind
    out["webhook_alone"] = alone
    out["pod_creations_through_apiserver"] = load
    main_run = load.get("process") or next(iter(load.values()), {})
    if "webhook_call_p99_ms" in main_run:
        out["webhook_under_load"] = {
            "served_from": main_run["webhook_served_from"],
            "rate_per_s": args.rate,
            "webhook_p99_ms_at_apiserver": main_run["webhook_call_p99_ms"],
            "create_with_webhook_p99_ms": main_run["create_with_webhook_p99_ms"],
            "create_without_webhook_p99_ms": main_run["create_without_webhook_p99_ms"],
            "target_p99_ms": 20,
            "met": (main_run["webhook_call_p99_ms"] or 1e9) <= 20,
        }
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
    ap.add_argument("--no-uvloop", action="store_true", help="the plain asyncio event loop")
    ap.add_argument(
        "--webhook-in",
        default="process,thread,loop",
        help="where the webhook is served in the API-server runs: process (gpuyard up, "
        "as a real deployment), thread, loop (the API server's own event loop)",
    )
    a = ap.parse_args()
    from gpuyard import childgroups

    childgroups.exit_on_signals()  # a signal still stops every server it started
    if a.quick:
        a.nodes, a.teams, a.seconds = 750, 5, 3.0
    if not a.per_team:
        a.per_team = int(a.nodes * 0.8) // a.teams
    print(json.dumps(main(a), indent=1))
