"""The health components' edge to the Kubernetes API (all through gpuyard.kube: its
client, its informers, shared through an `InformerFactory`, and its Event builder).

Conditions are written read-modify-write: GET the node, set the changed conditions on
its status.conditions (others, such as Ready, kept), and merge-patch the status with
the resourceVersion as a precondition, retrying on conflict. This works whether or not
the server speaks strategic merge patch, and costs two requests per change, which is
rare by design. Taints are merge-patched the same way (spec.taints has no merge key:
the whole list is sent).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from gpuyard.health.verdict import Condition, Event
from gpuyard.kube.errors import AlreadyExists, Conflict, NotFound
from gpuyard.kube.events import build_event
from gpuyard.kube.informer import Informer, InformerFactory
from gpuyard.kube.objects import key_of, now_rfc3339, set_condition
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


async def record(
    client: Any,
    involved: Mapping[str, Any],
    type_: str,
    reason: str,
    message: str,
    component: str = "gpuyard-health",
) -> None:
    """Create an Event (best effort: an Event that cannot be written is logged)."""
    try:
        ev = build_event(involved, type_, reason, message, component)
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
    """The health controllers' view of one resource, over a `gpuyard.kube` informer:
    `items` by key (namespace/name for namespaced objects), `changed()` to wait for the
    next change. With an `InformerFactory` the informer is the factory's, shared with
    every other part of the process that watches the same objects (the factory's owner
    starts and stops it); without, it is this view's own."""

    def __init__(
        self,
        client: Any,
        res: Res,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        factory: InformerFactory | None = None,
    ) -> None:
        if factory is not None:
            self.informer = factory.informer(
                res,
                namespace,
                label_selector=label_selector,
                field_selector=field_selector,
                client=client,
            )
        else:
            self.informer = Informer(
                client,
                res,
                namespace,
                label_selector=label_selector,
                field_selector=field_selector,
                name=f"health-{res.plural}",
            )
        # a view (the factory's views=True) is this cache's own to stop: stopping it
        # detaches it and leaves the watch to the others
        self._own = factory is None or factory.views
        self._event = asyncio.Event()

        def wake(*_: Any) -> None:
            self._event.set()

        self.informer.add_handler(wake, wake, wake)

    key = staticmethod(key_of)

    @property
    def items(self) -> dict[str, dict[str, Any]]:
        return self.informer.cache

    def start(self) -> None:
        self.informer.start()  # a shared one that runs already is left as it is

    async def wait_synced(self, timeout: float = 30.0) -> None:
        await self.informer.wait_synced(timeout)

    def cache_dict(self) -> dict[str, dict[str, Any]]:
        return self.items

    def put(self, obj: dict[str, Any]) -> None:
        """An object as our own write returned it, seen before the watch brings it."""
        self.informer.store.put(obj)

    async def changed(self, stop: asyncio.Event) -> None:
        await woken(self._event, stop)
        self._event.clear()

    async def stop(self) -> None:
        if self._own:
            await self.informer.stop()


async def node_informer(client: Any, factory: InformerFactory | None = None) -> Cache:
    c = Cache(client, NODES, factory=factory)
    c.start()
    await c.wait_synced()
    return c
