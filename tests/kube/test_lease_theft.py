"""Lease theft: every leader-elected component, its Lease taken from under it (the
official Kubernetes client rewrites holderIdentity to the standby's identity), stops
writing within one lease duration, and the standby takes over.

Each component runs twice in this process, as replicas "a" and "b" with their own
clients (user agents gpuyard-replica-a/... and gpuyard-replica-b/...), against the
embedded API server in a subprocess. The server's own request metrics by user agent
count each replica's writes: nothing done on the test's side can add to them.
"""

from __future__ import annotations

import asyncio
import re
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from gpuyard import names
from gpuyard.apiserver.testing import ServerProcess
from gpuyard.balloons.sizing import LABEL_BALLOON
from gpuyard.crds import crd_objects
from gpuyard.kube.client import Client
from gpuyard.kube.errors import NotFound
from gpuyard.kube.leader import LeaseTimings
from gpuyard.kube.resources import LEASES, NODES, PODS

TIMINGS = LeaseTimings(lease_duration_s=3.0, renew_deadline_s=2.0, retry_period_s=0.5)
WRITES = ("create", "update", "patch", "delete", "deletecollection")

Obj = dict[str, Any]


def writes_by_agent(srv: ServerProcess) -> dict[str, float]:
    """Writes the API server counted, by the first word of the user agent."""
    req = urllib.request.Request(srv.url + "/metrics", headers=srv.headers)
    with urllib.request.urlopen(req, context=srv.ssl_context(), timeout=10) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    pattern = (
        r'^apiserver_requests_by_user_agent_total\{user_agent="([^"]*)",verb="([^"]*)"\} (\S+)'
    )
    for agent, verb, value in re.findall(pattern, text, re.M):
        if verb in WRITES:
            out[agent] = out.get(agent, 0.0) + float(value)
    return out


def node(name: str, pool: str = "gpu", labels: dict[str, str] | None = None) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {names.LABEL_POOL: pool, **(labels or {})}},
    }


NODE_STATUS = {
    "capacity": {"cpu": "96", "memory": "1Ti", "nvidia.com/gpu": "8", "pods": "110"},
    "allocatable": {"cpu": "96", "memory": "1Ti", "nvidia.com/gpu": "8", "pods": "110"},
    "conditions": [{"type": "Ready", "status": "True"}],
}


async def add_nodes(k: Client, nodes: list[Obj]) -> None:
    for n in nodes:
        await k.create(n)
        await k.patch_status(NODES, n["metadata"]["name"], {"status": NODE_STATUS})


async def until(fn: Callable[[], Awaitable[Any]], what: str, timeout: float = 30) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        v = await fn()
        if v:
            return v
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last {v!r}")
        await asyncio.sleep(0.1)


@dataclass
class Component:
    """How to run one replica, where its Lease is, and a unit of work it must do."""

    lease: tuple[str, str]  # namespace, name
    replica: Callable[[Client, str, asyncio.Event], Awaitable[Any]]
    setup: Callable[[Client], Awaitable[None]]
    work: Callable[[Client, int], Awaitable[None]]
    done: Callable[[Client, int], Awaitable[bool]]


# ---------------------------------------------------------------- gpuyard controllers


def controllers(name: str) -> Callable[[Client, str, asyncio.Event], Awaitable[Any]]:
    from gpuyard.controllers import run_controllers

    return lambda c, ident, stop: run_controllers(c, [name], stop, TIMINGS, identity=ident)


async def install_crds(k: Client) -> None:
    from gpuyard.manifests import priority_classes

    for obj in [*crd_objects(), *priority_classes()]:
        await k.create(obj)
    k.forget_discovery()


async def jobs_setup(k: Client) -> None:
    await install_crds(k)
    await add_nodes(k, [node(f"n{i}") for i in range(2)])


async def jobs_work(k: Client, i: int) -> None:
    await k.create(
        {
            "apiVersion": names.API_VERSION,
            "kind": "TrainingJob",
            "metadata": {"name": f"job{i}", "namespace": "default"},
            "spec": {
                "replicas": 1,
                "template": {"spec": {"containers": [{"name": "t", "image": "img"}]}},
            },
        }
    )


async def jobs_done(k: Client, i: int) -> bool:
    pods = await k.list(PODS, "default", label_selector=f"gpuyard.io/job=job{i}")
    return bool(pods["items"])


async def teams_setup(k: Client) -> None:
    await install_crds(k)
    await add_nodes(k, [node(f"n{i}") for i in range(4)])


async def teams_work(k: Client, i: int) -> None:
    await k.create(
        {
            "apiVersion": names.API_VERSION,
            "kind": "Team",
            "metadata": {"name": f"team{i}"},
            "spec": {"capacity": {"gpu": 1}},
        }
    )


async def teams_done(k: Client, i: int) -> bool:
    owned = await k.list(NODES, label_selector=f"{names.LABEL_TEAM}=team{i}")
    return len(owned["items"]) == 1


async def balloons_setup(k: Client) -> None:
    await install_crds(k)
    await add_nodes(k, [node(f"p{i}-n", pool=f"p{i}") for i in range(2)])


async def balloons_work(k: Client, i: int) -> None:
    await k.create(
        {
            "apiVersion": names.API_VERSION,
            "kind": "BalloonPool",
            "metadata": {"name": f"p{i}"},
            "spec": {"pool": f"p{i}"},
        }
    )


async def balloons_done(k: Client, i: int) -> bool:
    pods = await k.list(PODS, None, label_selector=f"{LABEL_BALLOON}=p{i}")
    return bool(pods["items"])


# ---------------------------------------------------------------- scheduler


async def scheduler_replica(c: Client, ident: str, stop: asyncio.Event) -> None:
    from gpuyard.scheduling.scheduler import Scheduler

    await Scheduler(c, identity=ident, lease=TIMINGS).run(stop)


async def scheduler_setup(k: Client) -> None:
    await install_crds(k)
    await add_nodes(k, [node(f"n{i}") for i in range(2)])


async def scheduler_work(k: Client, i: int) -> None:
    await k.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"pod{i}", "namespace": "default"},
            "spec": {
                "schedulerName": names.SCHEDULER_NAME,
                "containers": [
                    {"name": "t", "image": "img", "resources": {"requests": {"cpu": "1"}}}
                ],
            },
        }
    )


async def scheduler_done(k: Client, i: int) -> bool:
    p = await k.get(PODS, f"pod{i}", "default")
    return bool(p["spec"].get("nodeName"))


# ---------------------------------------------------------------- health


async def preflight_replica(c: Client, ident: str, stop: asyncio.Event) -> bool:
    from gpuyard.health.leading import run_component
    from gpuyard.health.preflight import run_preflight

    return await run_component(
        c,
        "gpuyard-health-preflight",
        lambda done: run_preflight(c, done, period_s=0.2),
        stop,
        leader=True,
        timings=TIMINGS,
        identity=ident,
    )


async def preflight_setup(k: Client) -> None:
    return None


async def preflight_work(k: Client, i: int) -> None:
    await add_nodes(k, [node(f"new{i}", labels={names.LABEL_PREFLIGHT: "pending"})])


async def preflight_done(k: Client, i: int) -> bool:
    from gpuyard.health.testpods import LABEL_TEST

    pods = await k.list(PODS, "gpuyard-system", label_selector=f"{LABEL_TEST}=preflight")
    return any(p["spec"].get("nodeName") == f"new{i}" for p in pods["items"])


async def health_controller_replica(c: Client, ident: str, stop: asyncio.Event) -> bool:
    from gpuyard.health.brake import BrakeConfig
    from gpuyard.health.controller import run_controller
    from gpuyard.health.leading import run_component

    return await run_component(
        c,
        "gpuyard-health-controller",
        lambda done: run_controller(c, done, BrakeConfig(max_share=1.0), period_s=0.2),
        stop,
        leader=True,
        timings=TIMINGS,
        identity=ident,
    )


async def health_controller_work(k: Client, i: int) -> None:
    await k.create(node(f"sick{i}"))
    status = dict(NODE_STATUS)
    status["conditions"] = [
        {"type": "Ready", "status": "True"},
        {"type": "DiskHealthy", "status": "False", "reason": "DiskFull", "message": "/ full"},
    ]
    await k.patch_status(NODES, f"sick{i}", {"status": status})


async def health_controller_done(k: Client, i: int) -> bool:
    n = await k.get(NODES, f"sick{i}")
    taints = (n.get("spec") or {}).get("taints") or []
    return any(t.get("key") == names.TAINT_UNHEALTHY for t in taints)


async def periodic_replica(c: Client, ident: str, stop: asyncio.Event) -> bool:
    from gpuyard.health.leading import run_component
    from gpuyard.health.periodic import PeriodicConfig, run_periodic

    cfg = PeriodicConfig(retest_after_s=3600, max_starts_per_hour=1000)
    return await run_component(
        c,
        "gpuyard-health-periodic",
        lambda done: run_periodic(c, done, cfg, period_s=0.2),
        stop,
        leader=True,
        timings=TIMINGS,
        identity=ident,
    )


async def periodic_work(k: Client, i: int) -> None:
    await add_nodes(k, [node(f"idle{i}")])


async def periodic_done(k: Client, i: int) -> bool:
    from gpuyard.health.testpods import LABEL_TEST

    pods = await k.list(PODS, "gpuyard-system", label_selector=f"{LABEL_TEST}=periodic")
    return any(p["spec"].get("nodeName") == f"idle{i}" for p in pods["items"])


COMPONENTS = {
    "jobs": Component(
        ("kube-system", "gpuyard-controllers"),
        controllers("jobs"),
        jobs_setup,
        jobs_work,
        jobs_done,
    ),
    "teams": Component(
        ("kube-system", "gpuyard-controllers"),
        controllers("teams"),
        teams_setup,
        teams_work,
        teams_done,
    ),
    "balloons": Component(
        ("kube-system", "gpuyard-controllers"),
        controllers("balloons"),
        balloons_setup,
        balloons_work,
        balloons_done,
    ),
    "scheduler": Component(
        ("kube-system", names.SCHEDULER_NAME),
        scheduler_replica,
        scheduler_setup,
        scheduler_work,
        scheduler_done,
    ),
    "health-preflight": Component(
        ("gpuyard-system", "gpuyard-health-preflight"),
        preflight_replica,
        preflight_setup,
        preflight_work,
        preflight_done,
    ),
    "health-controller": Component(
        ("gpuyard-system", "gpuyard-health-controller"),
        health_controller_replica,
        preflight_setup,
        health_controller_work,
        health_controller_done,
    ),
    "health-periodic": Component(
        ("gpuyard-system", "gpuyard-health-periodic"),
        periodic_replica,
        preflight_setup,
        periodic_work,
        periodic_done,
    ),
}


def steal(kubeconfig: str, namespace: str, name: str, new_holder: str) -> None:
    """What an operator (or a partitioned standby) does: rewrite the Lease's holder."""
    import kubernetes

    api_client = kubernetes.config.new_client_from_config(config_file=kubeconfig)
    try:
        api = kubernetes.client.CoordinationV1Api(api_client)
        for _ in range(20):  # the holder may renew between the read and the write: read again
            lease = api.read_namespaced_lease(name, namespace)
            lease.spec.holder_identity = new_holder
            try:
                api.replace_namespaced_lease(name, namespace, lease)
                return
            except kubernetes.client.exceptions.ConflictException:
                continue
        raise AssertionError(f"lease {namespace}/{name}: every write conflicted")
    finally:
        api_client.close()


async def holder(k: Client, namespace: str, name: str) -> str:
    try:
        lease = await k.get(LEASES, name, namespace)
    except NotFound:
        return ""
    return str((lease.get("spec") or {}).get("holderIdentity") or "")


@pytest.mark.parametrize("which", list(COMPONENTS))
async def test_component_stops_writing_when_its_lease_is_stolen(
    apiserver: ServerProcess, which: str
) -> None:
    comp = COMPONENTS[which]
    ns, lease_name = comp.lease
    loop = asyncio.get_running_loop()
    k = Client.from_kubeconfig(apiserver.kubeconfig, component="test")
    ca = Client.from_kubeconfig(apiserver.kubeconfig, component="replica-a")
    cb = Client.from_kubeconfig(apiserver.kubeconfig, component="replica-b")
    stop_a, stop_b = asyncio.Event(), asyncio.Event()
    a = b = None
    try:
        await comp.setup(k)
        a = asyncio.create_task(comp.replica(ca, "a", stop_a))
        await until(lambda: holder(k, ns, lease_name), "replica a to take the lease")
        assert await holder(k, ns, lease_name) == "a"
        await comp.work(k, 0)
        await until(lambda: comp.done(k, 0), "replica a to do the first work")
        b = asyncio.create_task(comp.replica(cb, "b", stop_b))
        await asyncio.sleep(2 * TIMINGS.retry_period_s)
        assert await holder(k, ns, lease_name) == "a"  # b stands by

        await asyncio.to_thread(steal, apiserver.kubeconfig, ns, lease_name, "b")
        stolen_at = loop.time()
        await asyncio.sleep(TIMINGS.lease_duration_s)
        a_writes = writes_by_agent(apiserver).get("gpuyard-replica-a/0.1", 0.0)
        b_writes = writes_by_agent(apiserver).get("gpuyard-replica-b/0.1", 0.0)
        assert a_writes > 0  # the counter does see a's writes (it did the first work)

        await comp.work(k, 1)
        await until(lambda: comp.done(k, 1), "replica b to take over the work")
        assert await holder(k, ns, lease_name) == "b"
        await asyncio.sleep(TIMINGS.lease_duration_s)  # room for any late write of a's
        after = writes_by_agent(apiserver)
        assert after.get("gpuyard-replica-a/0.1", 0.0) == a_writes, (
            f"replica a wrote after losing its lease {loop.time() - stolen_at:.1f} s ago"
        )
        assert after.get("gpuyard-replica-b/0.1", 0.0) > b_writes
        if which != "scheduler":  # the scheduler stays a standby; the others end
            assert a.done() and a.result() is False
    finally:
        stop_a.set()
        stop_b.set()
        for t in (a, b):
            if t is not None:
                try:
                    await asyncio.wait_for(t, 15)
                except BaseException:
                    t.cancel()
        for c in (k, ca, cb):
            await c.close()


def test_gpuyard_controllers_exits_when_kubectl_takes_its_lease(apiserver: ServerProcess) -> None:
    """The command itself: once its Lease is taken (kubectl patch), it stops its
    controllers and exits 1 saying why, to be restarted with fresh caches."""
    import os
    import signal
    import subprocess
    import sys
    import time

    kubectl = ["/usr/bin/kubectl", "--kubeconfig", apiserver.kubeconfig, "-n", "kube-system"]
    timings = ["--leader-elect-lease-duration", "3", "--leader-elect-renew-deadline", "2"]
    timings += ["--leader-elect-retry-period", "0.5"]
    cmd = [sys.executable, "-m", "gpuyard.cli", "controllers", "--only", "teams"]
    cmd += ["--install-crds", "--kubeconfig", apiserver.kubeconfig, *timings]
    bad = subprocess.run(
        [*cmd[:-6], "--leader-elect-renew-deadline", "30"], capture_output=True, text=True
    )
    assert bad.returncode == 2
    assert "need lease duration > renew deadline > retry period" in bad.stderr
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, text=True
    )
    try:
        deadline = time.monotonic() + 30
        jsonpath = "-o=jsonpath={.spec.holderIdentity}"
        while True:
            got = subprocess.run(
                [*kubectl, "get", "lease", "gpuyard-controllers", jsonpath],
                capture_output=True,
                text=True,
            )
            if got.returncode == 0 and got.stdout.strip():
                break
            assert time.monotonic() < deadline and proc.poll() is None, got.stderr
            time.sleep(0.2)
        patch = '{"spec":{"holderIdentity":"other-replica"}}'
        subprocess.run(
            [*kubectl, "patch", "lease", "gpuyard-controllers", "--type=merge", "-p", patch],
            check=True,
            capture_output=True,
        )
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 1, out
        assert "gpuyard controllers: lost the leader lease; exiting" in out
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@pytest.mark.parametrize(
    "command",
    [["controllers"], ["scheduler"], ["health", "controller"], ["health", "preflight"]],
)
def test_inconsistent_lease_timings_are_refused(command: list[str], tmp_path: Any) -> None:
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "gpuyard.cli", *command, "--kubeconfig", str(tmp_path / "none")]
        + ["--leader-elect-lease-duration", "5", "--leader-elect-renew-deadline", "5"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "need lease duration > renew deadline > retry period > 0, got 5, 5, 2" in out.stderr
