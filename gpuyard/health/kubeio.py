"""The health components' edge to the Kubernetes API (all through gpuyard.kube).

Conditions are written read-modify-write: GET the node, set the changed conditions on
its status.conditions (others, such as Ready, kept), and merge-patch the status with
the resourceVersion as a precondition, retrying on conflict. This works whether or not
the server speaks strategic merge patch, and costs two requests per change, which is
rare by design. Taints are merge-patched the same way (spec.taints has no merge key:
the whole list is sent).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

from gpuyard.health.verdict import Condition, Event
from gpuyard.kube.errors import AlreadyExists, Conflict, Gone, NotFound
from gpuyard.kube.objects import now_rfc3339, set_condition
from gpuyard.kube.resources import CONFIGMAPS, EVENTS, NAMESPACES, NODES, Res
from gpuyard.kube.waits import woken

log = logging.getLogger("gpuyard.health.kube")


async def write_node_conditions(
    client: Any, node: str, changed: list[Condition], attempts: int = 5
) -> dict[str, Any] | None:
    for _ in range(attempts):
        try:
            obj = await client.get(NODES, node)
        except NotFound:
            return None
        now = now_rfc3339()
        conds = list((obj.get("status") or {}).get("conditions") or [])
        any_change = False
        for c in changed:
            conds, ch = set_condition(conds, c.type, c.status, c.reason, c.message, now=now)
            any_change = any_change or ch
            for item in conds:
                if item.get("type") == c.type and ch:
                    item["lastHeartbeatTime"] = now
        if not any_change:
            return obj
        body = {
            "metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]},
            "status": {"conditions": conds},
        }
        try:
            out: dict[str, Any] = await client.patch_status(NODES, node, body)
            return out
        except Conflict:
            await asyncio.sleep(0.05)
    raise Conflict(409, "Conflict", f"node {node}: conditions kept conflicting", None)


async def patch_node(client: Any, node: str, body: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = await client.patch(NODES, node, body)
    return out


async def get_configmap(client: Any, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        out: dict[str, Any] = await client.get(CONFIGMAPS, name, namespace)
        return out
    except NotFound:
        return None


async def ensure_namespace(client: Any, namespace: str) -> None:
    try:
        await client.create(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
            res=NAMESPACES,
        )
    except (AlreadyExists, Conflict):
        pass


async def put_configmap(client: Any, cm: dict[str, Any]) -> None:
    ns, name = cm["metadata"]["namespace"], cm["metadata"]["name"]
    await ensure_namespace(client, ns)
    try:
        await client.create(cm, ns, res=CONFIGMAPS)
    except (AlreadyExists, Conflict):
        await client.patch(CONFIGMAPS, name, {"data": cm["data"]}, ns)


def build_event(
    involved: Mapping[str, Any], type_: str, reason: str, message: str, component: str
) -> dict[str, Any]:
    meta = involved.get("metadata") or {}
    ns = meta.get("namespace") or "default"
    now = now_rfc3339()
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta.get('name', 'x')}.", "namespace": ns},
        "involvedObject": {
            "apiVersion": involved.get("apiVersion", "v1"),
            "kind": involved.get("kind", "Node"),
            "name": meta.get("name", ""),
            "uid": meta.get("uid", ""),
            **({"namespace": meta["namespace"]} if meta.get("namespace") else {}),
        },
        "type": type_,
        "reason": reason,
        "message": message[:1000],
        "source": {"component": component},
        "reportingComponent": component,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }


async def record(
    client: Any,
    involved: Mapping[str, Any],
    type_: str,
    reason: str,
    message: str,
    component: str = "gpuyard-health",
) -> None:
    """Create an Event (best effort: an Event that cannot be written is logged)."""
    ev = build_event(involved, type_, reason, message, component)
    try:
        await client.create(ev, ev["metadata"]["namespace"], res=EVENTS)
    except Exception as exc:
        log.info("event %s/%s not recorded: %s", reason, message[:60], exc)


def rv_int(obj: Mapping[str, Any] | None) -> int | None:
    """The resourceVersion as a number where it is one (etcd and the embedded store)."""
    try:
        return int(((obj or {}).get("metadata") or {}).get("resourceVersion", ""))
    except (TypeError, ValueError):
        return None


class KubeWriter:
    """The agents' Writer over gpuyard.kube."""

    def __init__(self, client: Any, component: str = "gpuyard-health-agent") -> None:
        self.client = client
        self.component = component
        self.last_rv: dict[str, int] = {}  # node -> resourceVersion our last write made

    async def write_conditions(self, node: str, changed: list[Condition]) -> bool:
        out = await write_node_conditions(self.client, node, changed)
        if out is None:
            return False
        rv = rv_int(out)
        if rv is not None:
            self.last_rv[node] = rv
        return True

    async def event(self, node: str, ev: Event) -> None:
        involved = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}}
        await record(self.client, involved, ev.type, ev.reason, ev.message, self.component)


class Cache:
    """A list+watch cache of one resource (the health controllers' informer): `items`
    by name (namespace/name for namespaced ones), `changed()` to wait for the next
    event. Relists when the watch ends or its resourceVersion expired."""

    def __init__(
        self,
        client: Any,
        res: Res,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> None:
        self.client, self.res, self.namespace = client, res, namespace
        self.label_selector, self.field_selector = label_selector, field_selector
        self.items: dict[str, dict[str, Any]] = {}
        self._event = asyncio.Event()
        self._synced = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @staticmethod
    def key(obj: Mapping[str, Any]) -> str:
        m = obj.get("metadata") or {}
        return f"{m['namespace']}/{m.get('name', '')}" if m.get("namespace") else m.get("name", "")

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def wait_synced(self, timeout: float = 30.0) -> None:
        await asyncio.wait_for(self._synced.wait(), timeout)

    def cache_dict(self) -> dict[str, dict[str, Any]]:
        return self.items

    async def changed(self, stop: asyncio.Event) -> None:
        await woken(self._event, stop)
        self._event.clear()

    async def _run(self) -> None:
        backoff = 0.2
        while True:
            try:
                lst = await self.client.list(
                    self.res,
                    self.namespace,
                    label_selector=self.label_selector,
                    field_selector=self.field_selector,
                )
                self.items = {self.key(o): o for o in lst.get("items") or []}
                rv = (lst.get("metadata") or {}).get("resourceVersion")
                self._synced.set()
                self._event.set()
                backoff = 0.2
                async for etype, obj in self.client.watch(
                    self.res,
                    self.namespace,
                    label_selector=self.label_selector,
                    field_selector=self.field_selector,
                    resource_version=rv,
                    timeout_seconds=300,
                ):
                    if etype == "BOOKMARK":
                        continue
                    k = self.key(obj)
                    if etype == "DELETED":
                        self.items.pop(k, None)
                    else:
                        self.items[k] = obj
                    self._event.set()
            except asyncio.CancelledError:
                raise
            except Gone:
                continue
            except Exception as exc:
                log.info("watch %s: %s", self.res.plural, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


async def node_informer(client: Any) -> Cache:
    c = Cache(client, NODES)
    c.start()
    await c.wait_synced()
    return c
