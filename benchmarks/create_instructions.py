"""Instructions per API write in the API server, counted by valgrind (cachegrind), for
this checkout and optionally an older commit: a figure that does not move with the
load of a shared machine, unlike writes/s. Prints JSON.

Cases (--case, comma-separated; create by default):
- create: a pod create of the benchmark pod of benchmarks/apiserver.py;
- bind: a Binding of such a pod (created without a node) to a node, as the scheduler
  writes it (its ServiceAccount, gpuyard-system:gpuyard-scheduler, under the RBAC of
  `gpuyard manifests`, where the code has authorization);
- status: the simulated kubelet's status patch of a pod it starts (a merge patch of
  pods/status with phase Running, IPs, conditions and container statuses, as
  gpuyard.cluster.sim writes it), as that node's kubelet (system:node:NAME) where the
  code has authorization, after the pod was bound as above;
- event: an Event a kubelet writes when it starts a container (Started, about the pod
  and its container), as that node's kubelet where the code has authorization.

Each side runs the server in-process (persistence on, audit log on where the code has
one, no TLS or HTTP: the path from authentication to the stored commit) twice, with
FEW and MANY operations of the case; the difference of the two counts divided by
MANY - FEW is the cost of one, start-up cancelled out. For bind and status both runs
create (and for status bind) MANY pods first, so only the measured writes differ. Each
side creates the pod of its own benchmarks/apiserver.py (the same one since a046785);
the bind and status bodies are this script's, the same for both.

    python benchmarks/create_instructions.py [--case create,bind,status,event]
        [--baseline-commit REV] [--few N] [--many N]

Needs valgrind; about two minutes a side and case on a quiet 2-core machine (status,
which also creates and binds, about three).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from typing import Any

import orjson

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = ("create", "bind", "status", "event")

# Run inside valgrind with the code under test first on sys.path.
_CHILD = r"""
import asyncio, inspect, os, sys, tempfile
import orjson
code, case, n, pods = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
sys.path.insert(0, code)
sys.path.insert(0, os.path.join(code, "benchmarks"))
from apiserver import node, pod
from gpuyard.apiserver.server import APIServer

NODES = 20
UA = "gpuyard-kubelet/0"

async def main():
    d = tempfile.mkdtemp(prefix="gpuyard-ir-")
    srv = APIServer(d, persist=True, tls=False)
    await srv.start(listen=False)
    h = {"Authorization": f"Bearer {srv.token}", "Content-Type": "application/json"}
    for i in range(NODES):
        await srv.dispatch("POST", "/api/v1/nodes", {}, h, orjson.dumps(node(i)))
    sem = asyncio.Semaphore(16)
    # Where the code authorizes requests, each write comes as its real writer.
    authz = "user" in inspect.signature(srv.dispatch).parameters
    scheduler = kubelet = None
    if authz and case != "create":
        from gpuyard.apiserver.authn import (
            AUTHENTICATED, NODE_PREFIX, NODES_GROUP, UserInfo, service_account_user,
        )
        from gpuyard.cluster import identities
        from gpuyard.kube.client import Client

        async with Client.in_process(srv) as admin:
            await identities.install(admin)
        scheduler = service_account_user("gpuyard-system", "gpuyard-scheduler")
        kubelet = {
            f"node-{i:05d}": UserInfo(NODE_PREFIX + f"node-{i:05d}", (NODES_GROUP, AUTHENTICATED))
            for i in range(NODES)
        }

    async def call(method, path, body, ctype, user, want):
        hh = {"Content-Type": ctype, "User-Agent": UA}
        async with sem:
            if user is None:
                r = await srv.dispatch(method, path, {}, {**h, **hh}, body)
            else:
                r = await srv.dispatch(method, path, {}, hh, body, user=user)
        assert r.status == want, (path, r.status, r.body)

    base = "/api/v1/namespaces/default/pods"
    if case == "event":
        def event(i):
            return orjson.dumps({
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": f"job-{i:05d}-0.{i:016x}", "namespace": "default"},
                "involvedObject": {
                    "apiVersion": "v1", "kind": "Pod", "name": f"job-{i:05d}-0",
                    "namespace": "default", "uid": f"uid-{i}", "resourceVersion": "7",
                    "fieldPath": "spec.containers{main}",
                },
                "type": "Normal", "reason": "Started", "message": "Started container main",
                "source": {"component": "kubelet", "host": "node-00001"},
                "reportingComponent": "kubelet", "reportingInstance": "node-00001",
                "firstTimestamp": "2026-01-01T00:00:00Z",
                "lastTimestamp": "2026-01-01T00:00:00Z", "count": 1,
            })

        who = None
        if authz:
            from gpuyard.apiserver.authn import AUTHENTICATED, NODE_PREFIX, NODES_GROUP, UserInfo
            who = UserInfo(NODE_PREFIX + "node-00001", (NODES_GROUP, AUTHENTICATED))
        await asyncio.gather(
            *[call("POST", "/api/v1/namespaces/default/events", event(i), "application/json",
                   who, 201) for i in range(n)]
        )
        await srv.stop()
        return
    if case == "create":
        await asyncio.gather(
            *[call("POST", base, orjson.dumps(pod(i, NODES)), "application/json", None, 201)
              for i in range(n)]
        )
        await srv.stop()
        return
    objs = []
    for i in range(pods):
        p = pod(i, NODES)
        where = p["spec"].pop("nodeName")
        objs.append((p["metadata"]["name"], where, p))
    await asyncio.gather(
        *[call("POST", base, orjson.dumps(p), "application/json", None, 201)
          for _, _, p in objs]
    )

    def binding(name, where):
        return orjson.dumps({
            "apiVersion": "v1", "kind": "Binding",
            "metadata": {"name": name, "namespace": "default"},
            "target": {"apiVersion": "v1", "kind": "Node", "name": where},
        })

    binds = n if case == "bind" else pods
    await asyncio.gather(
        *[call("POST", f"{base}/{name}/binding", binding(name, where), "application/json",
               scheduler, 201)
          for name, where, _ in objs[:binds]]
    )
    if case == "status":
        def status(name, where, i):
            now = "2026-01-01T00:00:00Z"
            ip = f"10.{i // 256}.{i % 256}.{i % 250 + 2}"
            node_ip = f"10.0.0.{int(where[-5:])}"
            return orjson.dumps({"status": {
                "phase": "Running",
                "hostIP": node_ip, "hostIPs": [{"ip": node_ip}],
                "podIP": ip, "podIPs": [{"ip": ip}],
                "startTime": now, "qosClass": "Burstable",
                "conditions": [
                    {"type": t, "status": "True", "lastTransitionTime": now}
                    for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
                ],
                "containerStatuses": [{
                    "name": "main", "image": "trainer:latest",
                    "imageID": "sim://trainer:latest",
                    "containerID": f"sim://default-{name}-main",
                    "ready": True, "started": True, "restartCount": 0,
                    "state": {"running": {"startedAt": now}},
                }],
            }})

        await asyncio.gather(
            *[call("PATCH", f"{base}/{name}/status", status(name, where, i),
                   "application/merge-patch+json", kubelet and kubelet[where], 200)
              for i, (name, where, _) in enumerate(objs[:n])]
        )
    await srv.stop()

asyncio.run(main())
"""


def _count(code: str, case: str, n: int, pods: int) -> int:
    env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": code}
    r = subprocess.run(
        [
            "valgrind",
            "--tool=cachegrind",
            "--cache-sim=no",
            "--cachegrind-out-file=/dev/null",
            sys.executable,
            "-c",
            _CHILD,
            code,
            case,
            str(n),
            str(pods),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=code,
    )
    m = re.search(r"I\s+refs:\s+([\d,]+)", r.stderr)
    if r.returncode != 0 or m is None:
        raise SystemExit(
            f"create_instructions.py: the {case} run in {code} failed:\n{r.stderr[-2000:]}"
        )
    return int(m.group(1).replace(",", ""))


def per_op(code: str, case: str, few: int, many: int) -> dict[str, Any]:
    a, b = _count(code, case, few, many), _count(code, case, many, many)
    return {f"instructions_per_{case}": round((b - a) / (many - few)), "counts": [a, b]}


def _cases(text: str) -> list[str]:
    got = [c.strip() for c in text.split(",") if c.strip()]
    bad = [c for c in got if c not in CASES]
    if bad or not got:
        raise SystemExit(
            f"create_instructions.py: --case takes {', '.join(CASES)} (comma-separated), "
            f"not {text!r}"
        )
    return list(dict.fromkeys(got))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", default="create", help=f"comma-separated, of {', '.join(CASES)}")
    ap.add_argument("--baseline-commit", metavar="REV", default=None)
    ap.add_argument("--few", type=int, default=50)
    ap.add_argument("--many", type=int, default=450)
    a = ap.parse_args()
    cases = _cases(a.case)
    if a.many <= a.few or a.few < 0:
        raise SystemExit("create_instructions.py: --many must be above --few (both >= 0)")
    if shutil.which("valgrind") is None:
        raise SystemExit("create_instructions.py: valgrind is not installed")
    out: dict[str, Any] = {"few": a.few, "many": a.many}

    def measure(code: str) -> dict[str, Any]:
        got = {c: per_op(code, c, a.few, a.many) for c in cases}
        # one case: its figures at the top level, as before there were several
        return got[cases[0]] if len(cases) == 1 else got

    out["current"] = measure(REPO)
    if a.baseline_commit:
        sys.path.insert(0, REPO)
        from benchmarks.baseline import baseline_tree

        with baseline_tree(a.baseline_commit, "benchmarks/create_instructions.py") as (c, tree):
            out["baseline_commit"] = c
            out["baseline"] = measure(tree)
        ratios: dict[str, Any] = {}
        for case in cases:
            key = f"instructions_per_{case}"
            cur = (out["current"] if len(cases) == 1 else out["current"][case])[key]
            base = (out["baseline"] if len(cases) == 1 else out["baseline"][case])[key]
            ratios[case] = round(cur / base, 3) if base else None
        out["ratio"] = ratios[cases[0]] if len(cases) == 1 else ratios
    print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
