"""Leader election on a Lease: exactly one of two electors leads; the other takes over
when the leader releases, and after the lease expires when the leader dies."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gpuyard.kube.client import Client
from gpuyard.kube.leader import LeaderElector
from gpuyard.kube.resources import LEASES


def elector(c: Client, ident: str, log: list[str]) -> LeaderElector:
    return LeaderElector(
        c,
        "gpuyard-test",
        "default",
        ident,
        lease_duration_s=1.5,
        renew_deadline_s=1.0,
        retry_period_s=0.2,
        on_started_leading=lambda: log.append(f"start {ident}"),
        on_stopped_leading=lambda: log.append(f"stop {ident}"),
    )


async def _both(apiserver: Any) -> tuple[Client, Client]:
    return (
        Client.from_kubeconfig(apiserver.kubeconfig, component="a"),
        Client.from_kubeconfig(apiserver.kubeconfig, component="b"),
    )


async def test_exactly_one_leads_and_release_hands_over(apiserver: Any) -> None:
    ca, cb = await _both(apiserver)
    log: list[str] = []
    a, b = elector(ca, "a", log), elector(cb, "b", log)
    try:
        a.start()
        await a.wait_leading(5)
        b.start()
        for _ in range(8):  # over several renew periods, b never leads
            await asyncio.sleep(0.2)
            assert a.is_leader and not b.is_leader
        lease = await ca.get(LEASES, "gpuyard-test", "default")
        assert lease["spec"]["holderIdentity"] == "a"
        assert lease["spec"]["leaseDurationSeconds"] == 2
        t0 = asyncio.get_running_loop().time()
        await a.stop()  # releases the lease
        await b.wait_leading(5)
        assert asyncio.get_running_loop().time() - t0 < 1.2  # no wait for expiry (>= 1.3 s)
        assert not a.is_leader and b.is_leader
        lease = await cb.get(LEASES, "gpuyard-test", "default")
        assert lease["spec"]["holderIdentity"] == "b"
        assert lease["spec"]["leaseTransitions"] == 1
        assert log == ["start a", "stop a", "start b"]
    finally:
        await a.stop()
        await b.stop()
        await ca.close()
        await cb.close()


async def test_takeover_after_expiry_when_leader_dies(apiserver: Any) -> None:
    ca, cb = await _both(apiserver)
    log: list[str] = []
    a, b = elector(ca, "a", log), elector(cb, "b", log)
    try:
        a.start()
        await a.wait_leading(5)
        b.start()
        await asyncio.sleep(0.3)
        t0 = asyncio.get_running_loop().time()
        await a.abandon()  # dies: no release, no more renewals
        await b.wait_leading(6)
        waited = asyncio.get_running_loop().time() - t0
        assert waited >= 1.0  # had to wait for the lease to expire (1.5 s from last renew)
        lease = await cb.get(LEASES, "gpuyard-test", "default")
        assert lease["spec"]["holderIdentity"] == "b"
    finally:
        await a.stop()
        await b.stop()
        await ca.close()
        await cb.close()


async def test_leader_steps_down_when_it_cannot_renew(apiserver: Any) -> None:
    c = Client.from_kubeconfig(apiserver.kubeconfig)
    log: list[str] = []
    a = elector(c, "a", log)
    try:
        a.start()
        await a.wait_leading(5)
        # someone else grabs the lease behind a's back
        lease = await c.get(LEASES, "gpuyard-test", "default")
        lease["spec"]["holderIdentity"] = "intruder"
        await c.replace(lease)
        for _ in range(50):
            if not a.is_leader:
                break
            await asyncio.sleep(0.05)
        assert not a.is_leader
        assert log == ["start a", "stop a"]
    finally:
        await a.stop()
        await c.close()


def test_bad_timings_are_refused() -> None:
    with pytest.raises(ValueError, match="lease_duration_s > renew_deadline_s"):
        LeaderElector(None, "x", "ns", "me", lease_duration_s=1, renew_deadline_s=2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="identity"):
        LeaderElector(None, "x", "ns", "")  # type: ignore[arg-type]


async def test_fenced_client_refuses_writes_once_the_lease_is_lost(apiserver: Any) -> None:
    """A reconcile still running when its replica lost the Lease cannot write: the
    write is refused before it is sent, while reads and the elector's own Lease
    requests go on."""
    from gpuyard.kube.errors import NotFound
    from gpuyard.kube.leader import NotLeader
    from gpuyard.kube.resources import CONFIGMAPS

    c = Client.from_kubeconfig(apiserver.kubeconfig)
    log: list[str] = []
    a = elector(c, "a", log)
    c.fence = a
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}
    try:
        a.start()
        await a.wait_leading(5)
        await c.create(dict(cm, metadata={"name": "while-leading"}))
        lease = await c.get(LEASES, "gpuyard-test", "default")
        lease["spec"]["holderIdentity"] = "intruder"
        await c.replace(lease)
        for _ in range(50):
            if not a.is_leader:
                break
            await asyncio.sleep(0.05)
        with pytest.raises(NotLeader, match="a does not hold the lease gpuyard-test"):
            await c.create(dict(cm, metadata={"name": "after-loss"}))
        assert a.writes_refused == 1
        with pytest.raises(NotFound):
            await c.get(CONFIGMAPS, "after-loss", "default")
        await c.get(CONFIGMAPS, "while-leading", "default")
    finally:
        await a.stop()
        await c.close()
