"""The Deployment controller: Deployment → ReplicaSets, level-triggered.

Informers on Deployments and ReplicaSets. The ReplicaSet whose template is the
Deployment's (told by the `pod-template-hash` label it adds) is the new one; the others
are old. RollingUpdate surges the new one by up to maxSurge over spec.replicas and scales
old ones down while at least replicas - maxUnavailable pods stay available; Recreate
empties the old ones first. Each ReplicaSet carries the `deployment.kubernetes.io/revision`
annotation (history for `kubectl rollout undo`: going back to an old template makes that
ReplicaSet the newest revision again), and the Deployment's status holds what
`kubectl rollout status` reads. Old ReplicaSets with no replicas beyond
revisionHistoryLimit are deleted.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import logging
import math
from typing import Any

from gpuyard.cluster.workloads.loop import Controller
from gpuyard.cluster.workloads.replicasets import REPLICA_SETS, controller_of
from gpuyard.kube import objects as o
from gpuyard.kube.errors import AlreadyExists, NotFound
from gpuyard.kube.informer import InformerFactory, informer_maker
from gpuyard.kube.resources import BUILTIN

log = logging.getLogger("gpuyard.cluster.workloads")

DEPLOYMENTS = BUILTIN[("apps/v1", "Deployment")]
HASH_LABEL = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
DESIRED = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"


def template_hash(template: dict[str, Any]) -> str:
    """A stable hash of a pod template, without its pod-template-hash label."""
    t = copy.deepcopy(template)
    labels = (t.get("metadata") or {}).get("labels")
    if labels:
        labels.pop(HASH_LABEL, None)
    raw = json.dumps(t, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(raw).hexdigest()[:10]


def resolve(value: Any, total: int, round_up: bool) -> int:
    """An int-or-percent (maxSurge, maxUnavailable) against spec.replicas."""
    if value is None:
        value = "25%"
    if isinstance(value, str) and value.endswith("%"):
        share = float(value[:-1]) * total / 100
        return math.ceil(share) if round_up else math.floor(share)
    return int(value)


def revision_of(rs: dict[str, Any]) -> int:
    try:
        return int((rs["metadata"].get("annotations") or {}).get(REVISION, 0))
    except ValueError:
        return 0


def _replicas(rs: dict[str, Any]) -> int:
    return int((rs.get("spec") or {}).get("replicas") or 0)


def _st(rs: dict[str, Any], field: str) -> int:
    return int((rs.get("status") or {}).get(field) or 0)


def _condition(
    old: list[dict[str, Any]], ctype: str, status: str, reason: str, message: str, now: str
) -> dict[str, Any]:
    prev = next((c for c in old if c.get("type") == ctype), None)
    same = prev is not None and prev.get("status") == status
    same_reason = same and prev is not None and prev.get("reason") == reason
    return {
        "type": ctype,
        "status": status,
        "reason": reason,
        "message": message,
        "lastUpdateTime": prev.get("lastUpdateTime", now) if same_reason and prev else now,
        "lastTransitionTime": prev.get("lastTransitionTime", now) if same and prev else now,
    }


class DeploymentController(Controller):
    what = "deployment"

    def __init__(self, client: Any, informers: InformerFactory | None = None) -> None:
        super().__init__()
        self.client = client
        mk = informer_maker(client, informers)
        self.deployments = mk(DEPLOYMENTS, name="workloads-deployments")
        self.sets = mk(REPLICA_SETS, name="workloads-deployment-replicasets")
        self.sets.add_index("deployment", self._owner_index)

    @staticmethod
    def _owner_index(rs: dict[str, Any]) -> str | None:
        ref = controller_of(rs)
        if ref is None or ref.get("kind") != "Deployment":
            return None
        return f"{o.namespace_of(rs)}/{ref.get('name')}"

    def informers(self) -> tuple[Any, ...]:
        return (self.sets, self.deployments)

    def _wire(self) -> None:
        def d_ev(d: dict[str, Any]) -> None:
            self.enqueue(o.key_of(d))

        self.deployments.add_handler(d_ev, lambda old, new: d_ev(new), d_ev)

        def rs_ev(rs: dict[str, Any]) -> None:
            owner = self._owner_index(rs)
            if owner is not None:
                self.enqueue(owner)

        self.sets.add_handler(rs_ev, lambda old, new: rs_ev(new), rs_ev)

    async def reconcile(self, key: str) -> None:
        ns, name = key.split("/", 1)
        d = self.deployments.get(name, ns)
        if d is None or d["metadata"].get("deletionTimestamp"):
            return
        spec = d.get("spec") or {}
        uid = d["metadata"].get("uid")
        sets = [
            rs
            for rs in self.sets.by_index("deployment", key)
            if controller_of(rs)["uid"] == uid  # type: ignore[index]
        ]
        want = int(spec.get("replicas", 1))
        h = template_hash(spec.get("template") or {})
        new = next(
            (rs for rs in sets if template_hash(rs["spec"].get("template") or {}) == h), None
        )
        olds = [rs for rs in sets if rs is not new]
        top = max((revision_of(rs) for rs in sets), default=0)
        strategy = spec.get("strategy") or {}
        rolling = strategy.get("type", "RollingUpdate") != "Recreate"
        ru = strategy.get("rollingUpdate") or {}
        surge = resolve(ru.get("maxSurge"), want, True) if rolling else 0
        unavail = resolve(ru.get("maxUnavailable"), want, False) if rolling else want
        if rolling and surge == 0 and unavail == 0:
            unavail = 1
        paused = bool(spec.get("paused"))

        if new is None and not paused:
            new = await self._create_rs(d, h, top + 1, olds, want, surge, rolling)
            if new is None:
                return
        elif new is not None and revision_of(new) < top and not paused:
            # back to an older template (rollout undo): it is the newest revision again
            new = await self._patch_rs(new, None, {REVISION: str(top + 1)})

        if new is not None and not paused:
            await self._roll(d, new, olds, want, surge, unavail, rolling)
        await self._cleanup(d, [rs for rs in olds if _replicas(rs) == 0])
        await self._status(d, new, olds, want, unavail, paused)

    async def _create_rs(
        self,
        d: dict[str, Any],
        h: str,
        revision: int,
        olds: list[dict[str, Any]],
        want: int,
        surge: int,
        rolling: bool,
    ) -> dict[str, Any] | None:
        spec = d["spec"]
        tmpl = copy.deepcopy(spec.get("template") or {})
        tmpl.setdefault("metadata", {}).setdefault("labels", {})[HASH_LABEL] = h
        selector = copy.deepcopy(spec.get("selector") or {})
        selector.setdefault("matchLabels", {})[HASH_LABEL] = h
        if not olds:
            start = want
        elif rolling:
            total = sum(_replicas(rs) for rs in olds)
            start = max(0, min(want, want + surge - total))
        else:
            start = 0
        rs = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": f"{o.name_of(d)}-{h}",
                "namespace": o.namespace_of(d),
                "labels": dict(tmpl["metadata"]["labels"]),
                "annotations": {
                    REVISION: str(revision),
                    DESIRED: str(want),
                    MAX_REPLICAS: str(want + surge),
                },
                "ownerReferences": [o.owner_reference(d)],
            },
            "spec": {
                "replicas": start,
                "minReadySeconds": int(spec.get("minReadySeconds") or 0),
                "selector": selector,
                "template": tmpl,
            },
        }
        try:
            made: dict[str, Any] = await self._write(self.client.create(rs, o.namespace_of(d)))
        except AlreadyExists:
            return None  # ours, not in the cache yet: its watch event reconciles again
        return made

    async def _patch_rs(
        self, rs: dict[str, Any], replicas: int | None, annotations: dict[str, str]
    ) -> dict[str, Any]:
        patch: dict[str, Any] = {"metadata": {"annotations": annotations}}
        if replicas is not None:
            patch["spec"] = {"replicas": replicas}
        out: dict[str, Any] = await self._write(
            self.client.patch(REPLICA_SETS, o.name_of(rs), patch, o.namespace_of(rs))
        )
        return out

    async def _scale(self, rs: dict[str, Any], n: int, want: int, surge: int) -> dict[str, Any]:
        if _replicas(rs) == n:
            return rs
        return await self._patch_rs(rs, n, {DESIRED: str(want), MAX_REPLICAS: str(want + surge)})

    async def _roll(
        self,
        d: dict[str, Any],
        new: dict[str, Any],
        olds: list[dict[str, Any]],
        want: int,
        surge: int,
        unavail: int,
        rolling: bool,
    ) -> None:
        active_olds = [rs for rs in olds if _replicas(rs) > 0]
        if not rolling:
            if active_olds:
                await asyncio.gather(*(self._scale(rs, 0, want, 0) for rs in active_olds))
                return
            if any(_st(rs, "replicas") for rs in olds):
                return  # old pods still terminating
            await self._scale(new, want, want, 0)
            return
        if not active_olds:
            await self._scale(new, want, want, surge)
            return
        # scale the new one up within maxSurge
        total = _replicas(new) + sum(_replicas(rs) for rs in active_olds)
        n_new = _replicas(new)
        if n_new > want:
            n_new = want
        elif total < want + surge:
            n_new = min(want, n_new + want + surge - total)
        if n_new != _replicas(new):
            new = await self._scale(new, n_new, want, surge)
        # scale old ones down while replicas - maxUnavailable stay available
        min_available = want - unavail
        available = _st(new, "availableReplicas") + sum(
            _st(rs, "availableReplicas") for rs in active_olds
        )
        budget = available - min_available
        # unavailable old pods go first, without counting against the budget
        new_unavailable = _replicas(new) - _st(new, "availableReplicas")
        cleanup = max(0, _replicas(new) + sum(map(_replicas, active_olds)) - min_available)
        cleanup -= new_unavailable
        plan: dict[str, int] = {o.name_of(rs): _replicas(rs) for rs in active_olds}
        ordered = sorted(active_olds, key=lambda rs: rs["metadata"].get("creationTimestamp", ""))
        for rs in ordered:
            if cleanup <= 0:
                break
            bad = max(0, _replicas(rs) - _st(rs, "availableReplicas"))
            cut = min(bad, cleanup)
            plan[o.name_of(rs)] -= cut
            cleanup -= cut
        for rs in ordered:
            if budget <= 0:
                break
            cut = min(plan[o.name_of(rs)], budget)
            # only what stays available counts against the budget
            plan[o.name_of(rs)] -= cut
            budget -= cut
        await asyncio.gather(
            *(self._scale(rs, plan[o.name_of(rs)], want, surge) for rs in active_olds)
        )

    async def _cleanup(self, d: dict[str, Any], idle: list[dict[str, Any]]) -> None:
        limit = int((d.get("spec") or {}).get("revisionHistoryLimit", 10))
        if len(idle) <= limit:
            return
        idle.sort(key=revision_of)
        for rs in idle[: len(idle) - limit]:
            if _st(rs, "replicas"):
                continue
            try:
                await self._write(
                    self.client.delete(REPLICA_SETS, o.name_of(rs), o.namespace_of(rs))
                )
            except NotFound:
                pass

    async def _status(
        self,
        d: dict[str, Any],
        new: dict[str, Any] | None,
        olds: list[dict[str, Any]],
        want: int,
        unavail: int,
        paused: bool,
    ) -> None:
        sets = [*olds, *([new] if new is not None else [])]
        available = sum(_st(rs, "availableReplicas") for rs in sets)
        updated = _st(new, "replicas") if new is not None else 0
        total = sum(_st(rs, "replicas") for rs in sets)
        cur = d.get("status") or {}
        conds = cur.get("conditions") or []
        now = o.now_rfc3339()
        ok = available >= want - unavail
        avail_c = _condition(
            conds,
            "Available",
            "True" if ok else "False",
            "MinimumReplicasAvailable" if ok else "MinimumReplicasUnavailable",
            "Deployment has minimum availability."
            if ok
            else "Deployment does not have minimum availability.",
            now,
        )
        rs_name = o.name_of(new) if new is not None else ""
        done = new is not None and updated == want == total and available >= want
        if paused:
            prog = ("Unknown", "DeploymentPaused", "Deployment is paused")
        elif done:
            prog = (
                "True",
                "NewReplicaSetAvailable",
                f'ReplicaSet "{rs_name}" has successfully progressed.',
            )
        else:
            prog = ("True", "ReplicaSetUpdated", f'ReplicaSet "{rs_name}" is progressing.')
        prog_c = _condition(conds, "Progressing", *prog, now)
        status: dict[str, Any] = {
            "observedGeneration": int(d["metadata"].get("generation") or 0),
            "replicas": total,
            "updatedReplicas": updated,
            "readyReplicas": sum(_st(rs, "readyReplicas") for rs in sets),
            "availableReplicas": available,
            "unavailableReplicas": max(0, want - available),
            "conditions": [avail_c, prog_c],
        }
        if new is not None:
            rev = (new["metadata"].get("annotations") or {}).get(REVISION)
            have_rev = (d["metadata"].get("annotations") or {}).get(REVISION)
            if rev and rev != have_rev:
                patch = {"metadata": {"annotations": {REVISION: rev}}}
                await self._write(
                    self.client.patch(DEPLOYMENTS, o.name_of(d), patch, o.namespace_of(d))
                )

        def strip(s: dict[str, Any]) -> dict[str, Any]:
            out = {k: s.get(k, 0) for k in status if k != "conditions"}
            out["conditions"] = [
                {k: c.get(k) for k in ("type", "status", "reason")}
                for c in s.get("conditions") or []
            ]
            return out

        if strip(cur) == strip(status):
            return
        await self._write(
            self.client.patch_status(
                DEPLOYMENTS, o.name_of(d), {"status": status}, o.namespace_of(d)
            )
        )
