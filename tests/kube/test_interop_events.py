"""Interop: objects written by the official `kubernetes` client reach our informer;
the event recorder creates and aggregates Events that the official client reads."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from gpuyard.kube.client import Client
from gpuyard.kube.events import EventQueue, EventRecorder
from gpuyard.kube.informer import Informer
from gpuyard.kube.resources import EVENTS, NODES

from .test_informer_live import Recorder, eventually


def _official(apiserver: Any) -> Any:
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config

    api_client = k8s_config.new_client_from_config(config_file=apiserver.kubeconfig)
    return k8s, api_client


async def test_informer_sees_writes_from_the_official_client(kube: Client, apiserver: Any) -> None:
    k8s, api_client = _official(apiserver)
    core = k8s.CoreV1Api(api_client)
    rec = Recorder()
    inf = Informer(kube, NODES)
    inf.add_handler(rec.on_add, rec.on_update, rec.on_delete)
    try:
        async with inf:
            await inf.wait_synced(10)

            def writes() -> None:
                for i in range(3):
                    core.create_node(
                        k8s.V1Node(
                            metadata=k8s.V1ObjectMeta(
                                name=f"gpu-{i}", labels={"gpuyard.io/pool": "gpu"}
                            )
                        )
                    )
                core.patch_node("gpu-1", {"spec": {"unschedulable": True}})
                core.delete_node("gpu-2")

            await asyncio.to_thread(writes)
            await eventually(lambda: set(inf.cache) == {"gpu-0", "gpu-1"})
            await inf.wait_idle(5)
            assert inf.cache["gpu-1"]["spec"]["unschedulable"] is True
            assert inf.cache["gpu-0"]["metadata"]["labels"] == {"gpuyard.io/pool": "gpu"}
            assert ("add", "gpu-2") in rec.events and ("delete", "gpu-2") in rec.events
            assert ("update", "gpu-1") in rec.events
    finally:
        api_client.close()


async def test_event_recorder_creates_aggregates_and_rate_limits(
    kube: Client, apiserver: Any
) -> None:
    pod = await kube.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "job-0", "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "x"}]},
        }
    )
    rec = EventRecorder(kube, "gpuyard-scheduler", burst=4, refill_per_s=0.0)
    msg = "0/8 nodes are available: 8 Insufficient nvidia.com/gpu."
    for _ in range(3):
        await rec.record(pod, "Warning", "FailedScheduling", msg)
    await rec.record(pod, "Normal", "Scheduled", "assigned to n1")
    assert await rec.record(pod, "Normal", "Scheduled", "again") is None  # over the burst
    assert rec.dropped == 1 and rec.sent == 4
    evs = (await kube.list(EVENTS, "default"))["items"]
    by_reason = {e["reason"]: e for e in evs}
    assert set(by_reason) == {"FailedScheduling", "Scheduled"}
    assert by_reason["FailedScheduling"]["count"] == 3
    assert by_reason["FailedScheduling"]["involvedObject"]["uid"] == pod["metadata"]["uid"]
    assert by_reason["FailedScheduling"]["source"]["component"] == "gpuyard-scheduler"

    k8s, api_client = _official(apiserver)
    try:
        core = k8s.CoreV1Api(api_client)
        found = await asyncio.to_thread(
            core.list_namespaced_event,
            "default",
            field_selector="involvedObject.name=job-0,reason=FailedScheduling",
        )
        assert [e.count for e in found.items] == [3]
        assert found.items[0].message == msg
    finally:
        api_client.close()


async def test_emit_is_fire_and_forget(kube: Client) -> None:
    rec = EventRecorder(kube, "gpuyard-test")
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n9", "uid": "u9"}}
    rec.emit(node, "Warning", "Unhealthy", "xid 79")
    await rec.flush()
    evs = (await kube.list(EVENTS, "default", field_selector="involvedObject.name=n9"))["items"]
    assert [(e["reason"], e["involvedObject"]["kind"]) for e in evs] == [("Unhealthy", "Node")]


async def test_emitted_events_are_bounded_and_paced(kube: Client) -> None:
    """A burst of emits never leaves a backlog: past the queue's room they are dropped
    and counted; recorders sharing a queue share its room and its rate."""
    queue = EventQueue(max_queued=10, senders=2)
    a = EventRecorder(kube, "kubelet", host="n1", queue=queue)
    b = EventRecorder(kube, "kubelet", host="n2", queue=queue)
    for i in range(30):
        for rec in (a, b):
            node = {"kind": "Node", "metadata": {"name": f"{rec.host}-{i}"}}
            rec.emit(node, "Normal", "Started", "started")
    await queue.flush()
    evs = (await kube.list(EVENTS, "default"))["items"]
    assert len(evs) == 10 == a.sent + b.sent
    assert a.dropped + b.dropped == 50 == queue.dropped
    assert len(queue) == 0

    paced = EventQueue(qps=20.0, burst=2)
    rec = EventRecorder(kube, "gpuyard-test", queue=paced)
    t0 = time.monotonic()
    for i in range(6):
        rec.emit({"kind": "Node", "metadata": {"name": f"p{i}"}}, "Normal", "Paced", "x")
    await rec.flush()
    assert rec.sent == 6 and rec.dropped == 0
    assert time.monotonic() - t0 >= 0.18  # 2 at once, then 4 at 20 a second


async def test_a_paused_queue_holds_its_events_until_resumed(kube: Client) -> None:
    """While paused (the scheduler's bindings in flight) nothing is written; emits
    still queue, and past the queue's room are dropped; resumed, the rest are written."""
    queue = EventQueue(max_queued=3, senders=2)
    rec = EventRecorder(kube, "gpuyard-test", queue=queue)
    queue.pause()
    queue.pause()  # twice: written only after both resume
    for i in range(5):
        rec.emit({"kind": "Node", "metadata": {"name": f"held-{i}"}}, "Normal", "Held", "x")
    await asyncio.sleep(0.3)
    queue.resume()
    await asyncio.sleep(0.3)
    held = {"field_selector": "reason=Held"}
    assert (await kube.list(EVENTS, "default", **held))["items"] == []
    assert len(queue) == 3 and rec.dropped == 2
    queue.resume()
    await queue.flush()
    evs = (await kube.list(EVENTS, "default", **held))["items"]
    assert sorted(e["involvedObject"]["name"] for e in evs) == ["held-0", "held-1", "held-2"]


async def test_a_stopping_flush_is_bounded_and_counts_what_it_drops(kube: Client) -> None:
    """A component stopping gives its queued Events a bounded time (a paused or slow
    queue never holds its stop), and says how many were not written."""
    queue = EventQueue(max_queued=10, senders=1)
    rec = EventRecorder(kube, "gpuyard-test", queue=queue)
    queue.pause()
    for i in range(4):
        rec.emit({"kind": "Node", "metadata": {"name": f"late-{i}"}}, "Normal", "Late", "x")
    t0 = time.monotonic()
    assert await rec.flush(timeout=0.2) == 4
    assert time.monotonic() - t0 < 5
    assert queue.dropped == 4 and len(queue) == 0
    queue.resume()
    assert await rec.flush(timeout=5) == 0
    late = {"field_selector": "reason=Late"}
    assert (await kube.list(EVENTS, "default", **late))["items"] == []


async def test_similar_events_are_combined_as_client_go_correlates_them(kube: Client) -> None:
    # Events of one object with one reason and ten or more distinct messages within
    # ten minutes are one "(combined from similar events)" Event, its count bumped,
    # as client-go's EventCorrelator writes them; other reasons and objects apart.
    pod = await kube.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "agg-0", "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "x"}]},
        }
    )
    rec = EventRecorder(kube, "gpuyard-test")
    for i in range(14):
        await rec.record(pod, "Warning", "FailedScheduling", f"0/{i} nodes are available")
    await rec.record(pod, "Normal", "Scheduled", "assigned to n1")
    assert rec.sent == 15 and rec.dropped == 0
    sel = "involvedObject.name=agg-0,reason=FailedScheduling"
    evs = (await kube.list(EVENTS, "default", field_selector=sel))["items"]
    plain = sorted(e["message"] for e in evs if e["count"] == 1)
    assert plain == sorted(f"0/{i} nodes are available" for i in range(9))
    (combined,) = [e for e in evs if e["message"].startswith("(combined")]
    assert combined["count"] == 5
    assert combined["message"] == "(combined from similar events): 0/13 nodes are available"
    sel = "involvedObject.name=agg-0,reason=Scheduled"
    assert len((await kube.list(EVENTS, "default", field_selector=sel))["items"]) == 1


def test_the_spam_filter_is_client_gos() -> None:
    # 25 events about one object, then one per 5 minutes (client-go's defaults).
    rec = EventRecorder(None, "x")  # type: ignore[arg-type]
    ref = {"kind": "Pod", "namespace": "d", "name": "p", "uid": "u"}
    assert [rec.allow(ref, 0.0) for _ in range(26)] == [True] * 25 + [False]
    assert not rec.allow(ref, 200.0)
    assert rec.allow(ref, 301.0)


async def test_events_are_selected_by_source_and_field_path(kube: Client) -> None:
    ref = {"apiVersion": "v1", "kind": "Pod", "name": "sel-0", "namespace": "default", "uid": "u"}
    kubelet = EventRecorder(kube, "kubelet", host="n1")
    await kubelet.record({**ref, "fieldPath": "spec.containers{main}"}, "Normal", "Started", "s")
    await EventRecorder(kube, "gpuyard-test").record(ref, "Warning", "Odd", "o")

    async def reasons(sel: str) -> list[str]:
        got = await kube.list(EVENTS, "default", field_selector=f"involvedObject.name=sel-0,{sel}")
        return sorted(e["reason"] for e in got["items"])

    assert await reasons("source=kubelet") == ["Started"]
    assert await reasons("source!=kubelet") == ["Odd"]
    assert await reasons("involvedObject.fieldPath=spec.containers{main}") == ["Started"]
    assert await reasons("type=Warning,reportingComponent=gpuyard-test") == ["Odd"]
