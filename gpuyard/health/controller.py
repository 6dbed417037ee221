"""The health controller: node health conditions -> `gpuyard.io/unhealthy` taints,
through the cluster-wide brake.

Agents write conditions (GPUHealthy, DiskHealthy, NetworkHealthy); the preflight and
periodic controllers write GPUTestPassed. This controller, one per cluster (leader
elected on real clusters), watches Nodes and makes each node's unhealthy taint match
what its conditions ask for (`verdict.wanted_taint`), subject to the brake
(`brake.plan_taints`). When it taints a node it records the time in the annotation
`gpuyard.io/unhealthy-since`, so that after a restart the brake still knows what it
did within its window. The brake's state lives in the ConfigMap
gpuyard-system/gpuyard-health-brake (data.state "ok" or "tripped"); a person resets it
with `gpuyard health brake reset`, which sets state back to "ok".

`TaintReconciler` is the pure core (nodes + now -> patches); `run_controller` is the
live loop over gpuyard.kube.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from gpuyard.health import kubeio
from gpuyard.health.brake import BrakeConfig, BrakeState, Taint, plan_taints, reset
from gpuyard.health.metrics import health_metrics
from gpuyard.health.verdict import TAINT_CONDITIONS, wanted_taint
from gpuyard.k8s.disruption import DELETION_BY_TAINT_MANAGER, status_patch
from gpuyard.kube.objects import (
    NO_EXECUTE,
    NO_SCHEDULE,
    is_node_ready,
    name_of,
    parse_time,
    without_taint,
)
from gpuyard.names import TAINT_UNHEALTHY

log = logging.getLogger("gpuyard.health.controller")

NAMESPACE = "gpuyard-system"
BRAKE_CONFIGMAP = "gpuyard-health-brake"
ANN_UNHEALTHY_SINCE = "gpuyard.io/unhealthy-since"


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def current_taint(node: Mapping[str, Any]) -> Taint | None:
    for t in (node.get("spec") or {}).get("taints") or []:
        if t.get("key") == TAINT_UNHEALTHY and t.get("effect") in (NO_SCHEDULE, NO_EXECUTE):
            return (str(t.get("value") or ""), str(t["effect"]))
    return None


def has_health_conditions(node: Mapping[str, Any]) -> bool:
    return any(
        c.get("type") in TAINT_CONDITIONS and c.get("status") in ("True", "False")
        for c in (node.get("status") or {}).get("conditions") or []
    )


@dataclass(frozen=True)
class NodePatch:
    node: str
    taints: list[dict[str, Any]]  # the node's whole new spec.taints (the list has no merge key)
    annotations: dict[str, str | None]
    taint: Taint | None  # what we set (None: removed)
    resource_version: str | None = None


def node_patch(node: Mapping[str, Any], taint: Taint | None, now: float) -> NodePatch:
    taints = without_taint((node.get("spec") or {}).get("taints"), TAINT_UNHEALTHY)
    ann: dict[str, str | None] = {}
    if taint is not None:
        taints.append({"key": TAINT_UNHEALTHY, "value": taint[0], "effect": taint[1]})
        had = current_taint(node)
        if had is None:
            ann[ANN_UNHEALTHY_SINCE] = iso(now)
    else:
        ann[ANN_UNHEALTHY_SINCE] = None
    rv = (node.get("metadata") or {}).get("resourceVersion")
    return NodePatch(name_of(node), taints, ann, taint, rv)


def merge_patch_body(p: NodePatch) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    if p.annotations:
        meta["annotations"] = p.annotations
    if p.resource_version:
        meta["resourceVersion"] = p.resource_version  # optimistic concurrency
    return {"metadata": meta, "spec": {"taints": p.taints}}


@dataclass
class Reconciled:
    patches: list[NodePatch]
    tripped_now: bool
    state: BrakeState


class TaintReconciler:
    def __init__(self, cfg: BrakeConfig | None = None) -> None:
        self.cfg = cfg or BrakeConfig()
        self.state = BrakeState()

    def restore(
        self, nodes: Mapping[str, Mapping[str, Any]], brake_cm: Mapping[str, Any] | None
    ) -> None:
        """Rebuild the brake's memory from the nodes' annotations and its ConfigMap."""
        tainted_at: dict[str, float] = {}
        for name, node in nodes.items():
            if current_taint(node) is None:
                continue
            ann = (node.get("metadata") or {}).get("annotations") or {}
            t = parse_time(ann.get(ANN_UNHEALTHY_SINCE))
            if t is not None:
                tainted_at[name] = t.timestamp()
        data = (brake_cm or {}).get("data") or {}
        tripped = data.get("state") == "tripped"
        tt = parse_time(data.get("trippedAt"))
        self.state = BrakeState(
            tainted_at=tainted_at,
            tripped=tripped,
            tripped_at=tt.timestamp() if tt else None,
            message=data.get("message", "") if tripped else "",
        )

    def reset(self) -> None:
        self.state = reset()

    def reconcile(self, nodes: Mapping[str, Mapping[str, Any]], now: float) -> Reconciled:
        wanted: dict[str, Taint | None] = {}
        current: dict[str, Taint | None] = {}
        for name, node in nodes.items():
            if not is_node_ready(dict(node)):
                continue  # stale health from a node that stopped reporting: leave as is
            w, c = wanted_taint(dict(node)), current_taint(node)
            if w is None and c is not None and not has_health_conditions(node):
                continue  # health unknown (conditions dropped): not a recovery
            if c is not None and ANN_UNHEALTHY_SINCE not in (
                (node.get("metadata") or {}).get("annotations") or {}
            ):
                continue  # a taint a person (or another tool) set: theirs to remove
            if w != c:
                wanted[name], current[name] = w, c
        plan = plan_taints(wanted, current, len(nodes), self.state, now, self.cfg)
        # Forget nodes that are gone.
        self.state = replace(
            plan.state,
            tainted_at={n: t for n, t in plan.state.tainted_at.items() if n in nodes},
        )
        patches = [node_patch(nodes[a.node], a.taint, now) for a in plan.actions]
        return Reconciled(patches, plan.tripped_now, self.state)


def brake_configmap(state: BrakeState, now: float) -> dict[str, Any]:
    data = {"state": "tripped" if state.tripped else "ok", "updatedAt": iso(now)}
    if state.tripped:
        data["message"] = state.message
        data["trippedAt"] = iso(state.tripped_at or now)
        data["held"] = ",".join(state.held)[:100_000]
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": BRAKE_CONFIGMAP, "namespace": NAMESPACE},
        "data": data,
    }


# -------------------------------------------------------------------- the live loop


async def run_controller(
    client: Any,
    stop: asyncio.Event,
    cfg: BrakeConfig | None = None,
    events: bool = True,
    period_s: float = 0.5,
    informer: kubeio.Cache | None = None,
    evict_no_execute: bool = False,
    evict_client: Any = None,
) -> None:
    """Watch nodes; keep their unhealthy taints in line with their conditions. Pass a
    started node `informer` to share one watch with other parts of the process.
    `evict_no_execute`: also delete the pods that do not tolerate a NoExecute taint we
    set — what kube-controller-manager's taint manager does on a real cluster; for
    clusters without one (the embedded cluster), with `evict_client` (the cluster's
    own identity: health's role has no business writing other pods' status)."""
    metrics = health_metrics()
    own = informer is None
    if informer is None:
        informer = await kubeio.node_informer(client)
    else:
        await informer.wait_synced()
    try:
        rec = TaintReconciler(cfg)
        cm = await kubeio.get_configmap(client, NAMESPACE, BRAKE_CONFIGMAP)
        rec.restore(informer.cache_dict(), cm)
        last_cm_check = 0.0
        while not stop.is_set():
            now = time.time()
            if rec.state.tripped and now - last_cm_check > 2.0:
                last_cm_check = now
                cm = await kubeio.get_configmap(client, NAMESPACE, BRAKE_CONFIGMAP)
                if cm is None or (cm.get("data") or {}).get("state") == "ok":
                    log.warning("health brake reset by a person")
                    rec.reset()
            nodes = informer.cache_dict()
            result = rec.reconcile(nodes, now)
            for p in result.patches:
                await _apply(client, informer, rec, p, nodes, events)
                metrics.writes.inc()
                if evict_no_execute and p.taint is not None and p.taint[1] == NO_EXECUTE:
                    await evict_untolerating(evict_client or client, p.node, p.taint)
            if result.tripped_now:
                metrics.trips.inc()
                await _announce_trip(client, result, nodes, now, events)
            metrics.observe_nodes(nodes)
            metrics.tripped.set(1 if rec.state.tripped else 0)
            metrics.held.set(len(rec.state.held))
            metrics.tainted.set(sum(1 for n in nodes.values() if current_taint(n)))
            try:
                await asyncio.wait_for(informer.changed(stop), period_s * 20)
            except TimeoutError:
                pass
            await asyncio.sleep(period_s)
    finally:
        if own:
            await informer.stop()


async def _apply(
    client: Any,
    informer: kubeio.Cache,
    rec: TaintReconciler,
    p: NodePatch,
    nodes: Mapping[str, Any],
    events: bool,
) -> None:
    try:
        out = await kubeio.patch_node(client, p.node, merge_patch_body(p))
    except Exception as exc:  # conflict or gone: the next pass sees fresh state
        log.info("taint %s: %s", p.node, exc)
        if p.taint is not None and current_taint(nodes[p.node]) is None:
            rec.state.tainted_at.pop(p.node, None)
        return
    informer.put(out)  # don't plan the same change again before the watch says so
    if events:
        what = f"{p.taint[0]}:{p.taint[1]}" if p.taint else "removed"
        await kubeio.record(
            client,
            out,
            "Warning" if p.taint else "Normal",
            "NodeTainted" if p.taint else "NodeUntainted",
            f"{TAINT_UNHEALTHY} {what}",
        )


async def _announce_trip(
    client: Any, result: Reconciled, nodes: Mapping[str, Any], now: float, events: bool
) -> None:
    log.error("%s", result.state.message)
    await kubeio.put_configmap(client, brake_configmap(result.state, now))
    if not events:
        return
    cm = await kubeio.get_configmap(client, NAMESPACE, BRAKE_CONFIGMAP)
    if cm is not None:
        await kubeio.record(client, cm, "Warning", "HealthBrakeTripped", result.state.message)
    for name in result.state.held[:20]:
        if name in nodes:
            await kubeio.record(
                client, nodes[name], "Warning", "TaintHeldByBrake", result.state.message
            )


def _evict_message(node: str, taint: Taint) -> str:
    return f"node {node} has the taint {TAINT_UNHEALTHY}={taint[0]}:{taint[1]}"


async def evict_untolerating(client: Any, node: str, taint: Taint) -> int:
    """Delete the pods on `node` that do not tolerate our NoExecute taint."""
    from gpuyard.kube.objects import is_pod_terminal, tolerates
    from gpuyard.kube.resources import PODS

    full = {"key": TAINT_UNHEALTHY, "value": taint[0], "effect": taint[1]}
    try:
        pods = (await client.list(PODS, None, field_selector=f"spec.nodeName={node}"))["items"]
    except Exception as exc:
        log.info("evict on %s: %s", node, exc)
        return 0
    n = 0
    for pod in pods:
        md = pod.get("metadata") or {}
        if md.get("deletionTimestamp") or is_pod_terminal(pod):
            continue
        if tolerates((pod.get("spec") or {}).get("tolerations"), full):
            continue
        why = f"evicted: node {node} has {TAINT_UNHEALTHY}={taint[0]}:{taint[1]}"
        try:
            # Say why on the pod first (DisruptionTarget, as the taint manager does); the
            # eviction goes ahead where that cannot be written.
            await client.patch_status(
                PODS,
                md["name"],
                status_patch(DELETION_BY_TAINT_MANAGER, _evict_message(node, taint)),
                md.get("namespace"),
                patch_type="strategic",
            )
        except Exception as exc:
            log.info("evict %s/%s: no DisruptionTarget: %s", md.get("namespace"), md["name"], exc)
        try:
            await client.delete(PODS, md["name"], md.get("namespace"))
            n += 1
            await kubeio.record(
                client,
                pod,
                "Warning",
                "TaintManagerEviction",
                why,
            )
        except Exception as exc:
            log.info("evict %s/%s: %s", md.get("namespace"), md.get("name"), exc)
    return n
