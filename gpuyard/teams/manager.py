"""The team manager (live): keeps every Team's nodes labelled and tainted as
`gpuyard.teams.assign.plan` says, labels team namespaces (the webhook's
namespaceSelector), and writes each Team's status.

Level-triggered: informers on Teams, Nodes, Pods and Namespaces mark the state dirty
(changes of bound pods on a slower timer: they only move usage figures and busy nodes;
node views are rebuilt only for the nodes that changed); one loop
plans from the caches (after a short debounce) and writes only what differs:
one merge patch per node whose owner changes (guarded by its resourceVersion, so a
concurrent taint change by another controller makes it retry instead of losing it),
one status patch per Team whose status changed, nothing when nothing changed.

Pods the webhook never saw as their team's: the webhook is scoped to labelled team
namespaces and fed from an informer, so a pod created in the same `kubectl apply` as its
Team (or before it, or while the webhook's table lags) is admitted as a shared-pool pod,
without its team's toleration; once the team's nodes are tainted it can wait forever. The
manager tracks unbound pods without a team toleration and, when their namespace belongs
to a team, adds what the webhook would have added that a pod may still take (the team's
toleration, the team's egress default annotation; tolerations are the only scheduling
field Kubernetes lets an existing pod gain) with one JSON patch guarded by the pod's
resourceVersion, and an Event on the pod saying why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from gpuyard import names
from gpuyard.kube.errors import Conflict, KubeError, NotFound
from gpuyard.kube.events import EventRecorder
from gpuyard.kube.informer import Informer
from gpuyard.kube.resources import NAMESPACES, NODES, PODS, TEAMS
from gpuyard.teams.admission import is_team_toleration, mutate_pod
from gpuyard.teams.assign import (
    NodeView,
    Plan,
    TeamSpec,
    TeamSpecError,
    TeamStatus,
    node_patch,
    node_view,
    parse_team,
    plan,
)
from gpuyard.teams.metrics import process_metrics
from gpuyard.teams.webhook import teams_by_namespace

log = logging.getLogger("gpuyard.teams")


class TeamManager:
    def __init__(
        self,
        client: Any,
        *,
        debounce_s: float = 0.2,
        pod_debounce_s: float = 1.0,
        write_concurrency: int = 64,
        informers: dict[str, Informer] | None = None,
    ) -> None:
        self.client = client
        self.debounce_s = debounce_s
        self.pod_debounce_s = pod_debounce_s
        self.write_concurrency = write_concurrency
        inf = informers or {}
        self.teams = inf.get("teams") or Informer(client, TEAMS, name="teams-teams")
        self.nodes = inf.get("nodes") or Informer(client, NODES, name="teams-nodes")
        self.pods = inf.get("pods") or Informer(client, PODS, name="teams-pods")
        self.namespaces = inf.get("namespaces") or Informer(
            client, NAMESPACES, name="teams-namespaces"
        )
        self._own = [i for k, i in self.informer_map().items() if k not in inf]
        self.recorder = EventRecorder(client, "gpuyard-teams")
        self._dirty = asyncio.Event()
        self._last_good: dict[str, TeamSpec] = {}
        self.invalid: dict[str, str] = {}
        self.rounds = 0
        self.node_writes = 0
        self.status_writes = 0
        self.namespace_writes = 0
        self.last_plan: Plan | None = None
        self.idle = asyncio.Event()
        self._pod_timer: asyncio.TimerHandle | None = None
        # NodeViews of the last round, reused while neither the Node object nor the pods
        # bound to it changed (a round at 7,500 nodes then costs milliseconds, not a
        # hundred: it runs in the API server's event loop under `gpuyard up`).
        self._views: dict[str, tuple[Any, NodeView]] = {}
        self._views_ns: dict[str, str] | None = None
        self._stale_nodes: set[str] = set()
        # Unbound, live pods without any team toleration, by (namespace, name), and the
        # namespace-to-team map of the last round (a tracked pod in one of them: replan).
        self._unplaced: dict[tuple[str, str], Any] = {}
        self._team_ns: dict[str, str] = {}
        self.pod_writes = 0
        for key, i in self.informer_map().items():
            if key == "pods":
                i.add_handler(self._on_pod_add, self._on_pod_update, self._on_pod_delete)
            else:
                i.add_handler(self._on_add, self._on_update, self._on_delete)

    def informer_map(self) -> dict[str, Informer]:
        return {
            "teams": self.teams,
            "nodes": self.nodes,
            "pods": self.pods,
            "namespaces": self.namespaces,
        }

    # -- triggers
    def _on_add(self, obj: Any) -> None:
        self._dirty.set()
        self.idle.clear()

    def _on_update(self, old: Any, new: Any) -> None:
        self._dirty.set()
        self.idle.clear()

    def _on_delete(self, obj: Any) -> None:
        self._dirty.set()
        self.idle.clear()

    def _pod_changed(self) -> None:
        # Pods only move the usage figures and which nodes are busy: batch them on a
        # slower timer so a busy cluster does not replan on every pod event.
        self.idle.clear()
        if self._pod_timer is None:
            self._pod_timer = asyncio.get_running_loop().call_later(
                self.pod_debounce_s, self._pod_fire
            )

    def _pod_fire(self) -> None:
        self._pod_timer = None
        self._dirty.set()

    # A pod bound to no node changes no node's view, so nothing in the plan: only bound
    # pods (before or after the change) mark their nodes stale and trigger a round.
    def _pod_moved(self, *pods: Any) -> None:
        nodes = {n for n in (_node_of(p) for p in pods) if n}
        if nodes:
            self._stale_nodes |= nodes
            self._pod_changed()

    def _track(self, pod: Any) -> None:
        md = pod.get("metadata") or {}
        key = (md.get("namespace") or "", md.get("name") or "")
        if (
            _node_of(pod)
            or md.get("deletionTimestamp")
            or (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")
            or any(is_team_toleration(t) for t in (pod.get("spec") or {}).get("tolerations") or [])
        ):
            self._unplaced.pop(key, None)
            return
        self._unplaced[key] = pod
        if key[0] in self._team_ns:
            self._dirty.set()
            self.idle.clear()

    def _on_pod_add(self, obj: Any) -> None:
        self._track(obj)
        self._pod_moved(obj)

    def _on_pod_update(self, old: Any, new: Any) -> None:
        self._track(new)
        if _node_of(old) == _node_of(new) and ((old or {}).get("status") or {}).get("phase") == (
            (new or {}).get("status") or {}
        ).get("phase"):
            return
        self._pod_moved(old, new)

    def _on_pod_delete(self, obj: Any) -> None:
        md = (obj or {}).get("metadata") or {}
        self._unplaced.pop((md.get("namespace") or "", md.get("name") or ""), None)
        self._pod_moved(obj)

    # -- snapshot
    def specs(self) -> tuple[list[TeamSpec], dict[str, str]]:
        specs: list[TeamSpec] = []
        self.invalid = {}
        names_now = set()
        for obj in self.teams.list():
            name = obj["metadata"].get("name") or ""
            names_now.add(name)
            try:
                spec = parse_team(obj)
                self._last_good[name] = spec
            except TeamSpecError as exc:
                # Bad input changes nothing: keep managing by the last good spec.
                self.invalid[name] = f"invalid spec ({exc}); using the last valid spec"
                if name not in self._last_good:
                    self.invalid[name] = f"invalid spec ({exc}); no nodes assigned"
                    continue
                spec = self._last_good[name]
            specs.append(spec)
        for gone in set(self._last_good) - names_now:
            del self._last_good[gone]
        team_of_ns: dict[str, str] = {}
        for s in sorted(specs, key=lambda t: t.name):
            for ns in s.namespaces:
                team_of_ns.setdefault(ns, s.name)
        return specs, team_of_ns

    def views(self, team_of_ns: dict[str, str]) -> list[NodeView]:
        """A NodeView per node, rebuilt only for nodes whose object changed (informers
        replace an object on every change) or whose bound pods changed, and for all when
        the namespace-to-team map changed."""
        if team_of_ns != self._views_ns:
            self._views = {}
            self._views_ns = dict(team_of_ns)
        stale, self._stale_nodes = self._stale_nodes, set()
        fresh: dict[str, tuple[Any, NodeView]] = {}
        out: list[NodeView] = []
        for n in self.nodes.list():
            name = n["metadata"]["name"]
            cached = self._views.get(name)
            if cached is None or cached[0] is not n or name in stale:
                cached = (n, node_view(n, self.pods.by_node(name), team_of_ns))
            fresh[name] = cached
            out.append(cached[1])
        self._views = fresh
        return out

    # -- one round
    async def reconcile(self) -> bool:
        """Plan from the caches and write the differences. True when all writes landed."""
        specs, team_of_ns = self.specs()
        p = plan(specs, self.views(team_of_ns))
        for name, why in self.invalid.items():
            st = p.status.setdefault(name, TeamStatus())
            st.reason = f"{why}; {st.reason}" if st.reason else why
        self.last_plan = p
        self.rounds += 1
        process_metrics().update(p.status, self.nodes.list(), self.pods.by_node)
        ok = True
        sem = asyncio.Semaphore(self.write_concurrency)

        async def write_node(name: str, team: str | None) -> bool:
            node = self.nodes.get(name)
            if node is None:
                return True
            async with sem:
                try:
                    await self.client.patch(NODES, name, node_patch(node, team))
                    self.node_writes += 1
                    return True
                except (Conflict, NotFound):
                    return False
                except KubeError as exc:
                    log.warning("could not write node %s: %s", name, exc)
                    return False

        if p.changes:
            self._events(p, specs)  # before the writes: it reads the old owners from the cache
            results = await asyncio.gather(*(write_node(n, t) for n, t in p.changes.items()))
            ok = all(results)
        ok = await self._write_namespaces(team_of_ns) and ok
        self._team_ns = team_of_ns
        ok = await self._place_pods(team_of_ns) and ok
        ok = await self._write_status(p) and ok
        return ok

    async def _place_pods(self, team_of_ns: dict[str, str]) -> bool:
        """Give tracked pods of team namespaces what the webhook would have given them."""
        todo = [(k, pod) for k, pod in self._unplaced.items() if k[0] in team_of_ns]
        if not todo:
            return True
        infos = teams_by_namespace(self.teams.list())
        ok = True
        for (ns, name), pod in todo:
            info = infos.get(ns)
            if info is None:
                continue
            d = mutate_pod(pod, info, ns)
            if not d.allowed:
                # The webhook would have refused it; a running system does not delete a
                # user's pod for that: say why it stays where it is and stop looking.
                self._unplaced.pop((ns, name), None)
                self.recorder.emit(pod, "Warning", "TeamPlacementRefused", d.message)
                continue
            ops = [
                op
                for op in d.patch
                if op["path"].startswith(("/spec/tolerations", "/metadata/annotations"))
            ]
            if not ops:
                continue
            rv = (pod.get("metadata") or {}).get("resourceVersion")
            guard = [{"op": "test", "path": "/metadata/resourceVersion", "value": rv}]
            try:
                await self.client.patch(PODS, name, guard + ops, ns, patch_type="json")
            except NotFound:
                self._unplaced.pop((ns, name), None)
                continue
            except KubeError as exc:
                # A newer pod than the cache's (the guard failed): the next round retries.
                log.debug("could not place pod %s/%s on team %s: %s", ns, name, info.name, exc)
                ok = False
                continue
            self.pod_writes += 1
            self._unplaced.pop((ns, name), None)
            self.recorder.emit(
                pod,
                "Normal",
                "TeamPlacement",
                f"added team {info.name}'s toleration: the pod was created before the "
                f"team webhook knew namespace {ns} as the team's",
            )
        return ok

    def _events(self, p: Plan, specs: list[TeamSpec]) -> None:
        gained: dict[str, list[str]] = {}
        released: dict[str, list[str]] = {}
        for name, team in p.changes.items():
            node = self.nodes.get(name)
            before = ((node or {}).get("metadata") or {}).get("labels", {}).get(names.LABEL_TEAM)
            if team is not None and before != team:
                gained.setdefault(team, []).append(name)
            if before is not None and before != team:
                released.setdefault(before, []).append(name)
        for s in specs:
            obj = self.teams.get(s.name)
            if obj is None or (s.name not in gained and s.name not in released):
                continue
            g, r = sorted(gained.get(s.name, [])), sorted(released.get(s.name, []))
            parts = []
            if g:
                parts.append(f"assigned {len(g)} nodes ({_few(g)})")
            if r:
                parts.append(f"released {len(r)} nodes ({_few(r)})")
            st = p.status[s.name]
            if st.shortfall:
                parts.append(f"short of {st.shortfall}: {st.reason}")
            self.recorder.emit(
                obj, "Warning" if st.shortfall else "Normal", "NodesAssigned", "; ".join(parts)
            )

    async def _write_namespaces(self, team_of_ns: dict[str, str]) -> bool:
        ok = True
        for ns in self.namespaces.list():
            name = ns["metadata"]["name"]
            have = (ns["metadata"].get("labels") or {}).get(names.LABEL_TEAM)
            want = team_of_ns.get(name)
            if have == want:
                continue
            try:
                await self.client.patch(
                    NAMESPACES, name, {"metadata": {"labels": {names.LABEL_TEAM: want}}}
                )
                self.namespace_writes += 1
            except KubeError as exc:
                log.warning("could not label namespace %s: %s", name, exc)
                ok = False
        return ok

    async def _write_status(self, p: Plan) -> bool:
        ok = True
        for name, st in p.status.items():
            obj = self.teams.get(name)
            if obj is None:
                continue
            want = st.as_dict()
            have = obj.get("status") or {}
            if all(have.get(k) == v for k, v in want.items()):
                continue
            try:
                await self.client.patch_status(TEAMS, name, {"status": want})
                self.status_writes += 1
            except NotFound:
                pass
            except KubeError as exc:
                log.warning("could not write status of team %s: %s", name, exc)
                ok = False
        return ok

    # -- loop
    async def start(self) -> None:
        for i in self._own:
            i.start()
        for i in self.informer_map().values():
            await i.wait_synced()

    async def run(self, stop: asyncio.Event) -> None:
        await self.start()
        try:
            self._dirty.set()
            failures = 0
            while not stop.is_set():
                waiter = asyncio.ensure_future(self._dirty.wait())
                stopper = asyncio.ensure_future(stop.wait())
                await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                stopper.cancel()
                if stop.is_set():
                    break
                await asyncio.sleep(self.debounce_s)
                self._dirty.clear()
                try:
                    ok = await self.reconcile()
                except Exception:  # noqa: BLE001 - keep managing; retry with backoff
                    log.exception("team reconcile failed")
                    ok = False
                if ok:
                    failures = 0
                    if not self._dirty.is_set():
                        self.idle.set()
                else:
                    failures += 1
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), min(0.1 * 2**failures, 5.0))
                    self._dirty.set()
        finally:
            await self.stop()

    async def stop(self) -> None:
        if self._pod_timer is not None:
            self._pod_timer.cancel()
            self._pod_timer = None
        for i in self._own:
            await i.stop()


def _node_of(pod: Any) -> str:
    return str(((pod or {}).get("spec") or {}).get("nodeName") or "")


def _few(items: list[str], n: int = 5) -> str:
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


async def run(client: Any, stop: asyncio.Event) -> None:
    """Entry point for `gpuyard controllers` (the manager alone; on a real cluster the
    webhook runs as its own Deployment behind a Service)."""
    await TeamManager(client).run(stop)
