"""The simulated kubelet against the embedded API server (in process): a pod whose
Running status write is refused (here the disk is full for a moment, 507) is started
again once writes are accepted, instead of staying Pending forever; a running pod that
is deleted reports how each container ended, as `kubectl get -w` shows it, before it
goes: 143 for one that stops on SIGTERM, 137 for one killed when the grace period
ends."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from gpuyard.apiserver.server import APIServer
from gpuyard.cluster.shapes import default_shapes
from gpuyard.cluster.sim import SimCluster, SimConfig, stop_seconds
from gpuyard.kube.client import Client
from gpuyard.kube.resources import LEASES, PODS


async def test_a_refused_start_is_tried_again(tmp_path: Any) -> None:
    srv = APIServer(str(tmp_path / "api"), port=0, bookmark_interval=0.5)
    await srv.start()
    db = srv.store._db
    assert db is not None
    real = db.write
    refused: list[int] = []

    def write(ops: Any, rev: int) -> None:
        # The first commit holding the pod's Running status hits a full disk.
        if not refused and any(o[0] == "pods" and o[3] and b'"Running"' in o[3] for o in ops):
            refused.append(rev)
            raise sqlite3.OperationalError("database or disk is full")
        real(ops, rev)

    db.write = write  # type: ignore[method-assign]
    srv.store.probe_interval = 0.2
    client = Client.from_kubeconfig(srv.kubeconfig_path, component="test")
    sim = SimCluster(
        client, tempfile.mkdtemp(dir=tmp_path), default_shapes(1), SimConfig(start_delay=0.05)
    )
    try:
        await sim.start()
        node = next(iter(sim.nodes))
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"nodeName": node, "containers": [{"name": "main", "image": "busybox"}]},
        }
        await client.create(pod)
        for _ in range(200):
            got = await client.get(PODS, "p", "default")
            if (got.get("status") or {}).get("phase") == "Running":
                break
            await asyncio.sleep(0.05)
        assert refused, "the Running status write was never refused: the test proves nothing"
        assert got["status"]["phase"] == "Running", got.get("status")
        assert got["status"]["containerStatuses"][0]["ready"] is True
    finally:
        await sim.stop()
        await client.close()
        await srv.stop()


KUBECTL = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or "kubectl"


def test_stop_seconds_annotation() -> None:
    assert stop_seconds("2.5", ["a", "b"]) == {"a": 2.5, "b": 2.5}
    assert stop_seconds("b=never", ["a", "b"]) == {"a": 0.0, "b": float("inf")}
    for bad in ("soon", "-1", "nan", "inf", "a=x"):
        try:
            stop_seconds(bad, ["a", "b"])
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} was taken")


async def test_a_deleted_pod_reports_143_or_137_by_container(tmp_path: Any) -> None:
    (tmp_path / "api").mkdir()
    srv = APIServer(str(tmp_path / "api"), port=0, persist=False, bookmark_interval=0.5)
    await srv.start()
    client = Client.from_kubeconfig(srv.kubeconfig_path, component="test")
    sim = SimCluster(
        client, tempfile.mkdtemp(dir=tmp_path), default_shapes(1), SimConfig(start_delay=0.05)
    )
    watch = None
    try:
        await sim.start()
        node = next(iter(sim.nodes))
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "stopper",
                "namespace": "default",
                # "app" stops on SIGTERM at once; "stubborn" ignores it
                "annotations": {"gpuyard.io/sim-stop-seconds": "stubborn=never"},
            },
            "spec": {
                "nodeName": node,
                "terminationGracePeriodSeconds": 2,
                "containers": [
                    {"name": "app", "image": "busybox"},
                    {"name": "stubborn", "image": "busybox"},
                ],
            },
        }
        await client.create(pod)
        for _ in range(200):
            got = await client.get(PODS, "stopper", "default")
            if (got.get("status") or {}).get("phase") == "Running":
                break
            await asyncio.sleep(0.05)
        assert got["status"]["phase"] == "Running"
        kc = ["--kubeconfig", srv.kubeconfig_path]
        watch = await asyncio.create_subprocess_exec(
            KUBECTL, *kc, "get", "pod", "stopper", "-w", "--output-watch-events", "-o", "json",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        deleted = await asyncio.create_subprocess_exec(
            KUBECTL, *kc, "delete", "pod", "stopper", "--wait=false",
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(deleted.communicate(), 30)
        t0 = time.monotonic()
        assert deleted.returncode == 0 and b"deleted" in out
        # The watch's events until the pod is gone (kubectl prints one JSON object each).
        seen: list[dict[str, Any]] = []
        buf, dec = "", json.JSONDecoder()
        assert watch.stdout is not None
        while not seen or seen[-1]["type"] != "DELETED":
            chunk = await asyncio.wait_for(watch.stdout.read(65536), 20)
            assert chunk, f"the watch ended early: {[e['type'] for e in seen]}"
            buf += chunk.decode()
            while buf.strip():
                try:
                    ev, end = dec.raw_decode(buf.lstrip())
                except ValueError:
                    break
                seen.append(ev)
                buf = buf.lstrip()[end:]
        gone_after = time.monotonic() - t0
        ended = [
            e["object"]
            for e in seen
            if e["object"]["status"].get("phase") == "Failed" and e["type"] == "MODIFIED"
        ]
        assert ended, [(e["type"], e["object"]["status"].get("phase")) for e in seen]
        st = ended[0]["status"]
        term = {cs["name"]: cs["state"]["terminated"] for cs in st["containerStatuses"]}
        assert {n: (t["exitCode"], t["reason"]) for n, t in term.items()} == {
            "app": (143, "Error"),
            "stubborn": (137, "Error"),
        }
        assert all(not cs["ready"] for cs in st["containerStatuses"])
        assert term["app"]["finishedAt"] < term["stubborn"]["finishedAt"]
        # "stubborn" ran until the 2 s grace period ran out (deletionTimestamp has
        # whole seconds, so up to one less), then the pod was removed.
        assert 0.8 < gone_after < 10, gone_after
        assert ended[0]["metadata"]["deletionGracePeriodSeconds"] == 2
    finally:
        if watch is not None and watch.returncode is None:
            watch.kill()
            await watch.wait()
        await sim.stop()
        await client.close()
        await srv.stop()


async def test_leases_are_renewed_while_pod_work_fills_the_kubelets(tmp_path: Any) -> None:
    # Every slot for pod work is taken (as by the starts of a DaemonSet on thousands of
    # nodes): the Lease is renewed all the same, so the node lifecycle does not find
    # the node unreachable because its pods keep the simulator busy.
    (tmp_path / "api").mkdir()
    srv = APIServer(str(tmp_path / "api"), port=0, persist=False, bookmark_interval=0.5)
    await srv.start()
    client = Client.from_kubeconfig(srv.kubeconfig_path, component="test")
    cfg = SimConfig(lease_seconds=1.0, concurrency=2, dra=False)
    sim = SimCluster(client, tempfile.mkdtemp(dir=tmp_path), default_shapes(1), cfg)
    held = 0
    try:
        await sim.start()
        node = next(iter(sim.nodes))
        first = (await client.get(LEASES, node, "kube-node-lease"))["spec"]["renewTime"]
        for _ in range(cfg.concurrency):
            await sim._sem.acquire()
            held += 1
        renewed = first
        for _ in range(50):
            await asyncio.sleep(0.1)
            renewed = (await client.get(LEASES, node, "kube-node-lease"))["spec"]["renewTime"]
            if renewed != first:
                break
        assert renewed != first, "the lease was not renewed while pod work was busy"
    finally:
        for _ in range(held):
            sim._sem.release()
        await sim.stop()
        await client.close()
        await srv.stop()
