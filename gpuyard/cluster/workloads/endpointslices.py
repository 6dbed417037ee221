"""The EndpointSlice controller (discovery.k8s.io/v1): for every Service with a selector,
slices of the pods it selects that have an IP and have not finished, as
kube-controller-manager's keeps them.

Each endpoint carries the pod's IP, its conditions (ready: Ready and not being deleted,
or always with publishNotReadyAddresses; serving: Ready; terminating: being deleted),
nodeName, the node's zone, a hostname when the pod's subdomain is the Service (a
StatefulSet behind a headless Service) and a targetRef to the pod. Ports are the
Service's with targetPort resolved on each pod (a named port by the container port of
that name); pods whose ports resolve differently go to different slices, at most 100
endpoints a slice. Slices are labelled kubernetes.io/service-name and
endpointslice.kubernetes.io/managed-by, owned by the Service (deleted with it), and
written only when what they hold changes; slices made or changed that the watch has not
shown yet are remembered, so a lagging cache never makes a slice twice. The Service's
v1 Endpoints are kept from the same endpoints (gpuyard.cluster.workloads.endpoints).
"""

from __future__ import annotations

import asyncio
from typing import Any

from gpuyard import names
from gpuyard.cluster.workloads import endpoints
from gpuyard.cluster.workloads.loop import Controller
from gpuyard.kube import objects as o
from gpuyard.kube.errors import NotFound
from gpuyard.kube.informer import InformerFactory, informer_maker
from gpuyard.kube.resources import BUILTIN, NODES, PODS

SERVICES = BUILTIN[("v1", "Service")]
SLICES = BUILTIN[("discovery.k8s.io/v1", "EndpointSlice")]
ENDPOINTS = BUILTIN[("v1", "Endpoints")]
SERVICE_NAME = "kubernetes.io/service-name"
MANAGED_BY = "endpointslice.kubernetes.io/managed-by"
CONTROLLER = "endpointslice-controller.k8s.io"
MAX_ENDPOINTS = 100  # per slice, kube-controller-manager's default


def _rv(obj: dict[str, Any]) -> int:
    try:
        return int(o.meta(obj).get("resourceVersion") or 0)
    except ValueError:
        return 0


def pod_port(pod: dict[str, Any], target: Any, protocol: str) -> int | None:
    """A Service port's targetPort on this pod (a name is looked up in its containers)."""
    if isinstance(target, int):
        return target
    if isinstance(target, str) and target.isdigit():
        return int(target)
    for c in (pod.get("spec") or {}).get("containers") or []:
        for p in c.get("ports") or []:
            if p.get("name") == target and (p.get("protocol") or "TCP") == protocol:
                return int(p["containerPort"])
    return None


def slice_ports(svc: dict[str, Any], pod: dict[str, Any]) -> tuple[tuple[str, int, str], ...]:
    out = []
    for sp in (svc.get("spec") or {}).get("ports") or []:
        proto = sp.get("protocol") or "TCP"
        target = sp.get("targetPort", sp.get("port"))
        port = pod_port(pod, target, proto)
        if port is not None:
            out.append((str(sp.get("name") or ""), port, proto))
    return tuple(out)


def endpoint(svc: dict[str, Any], pod: dict[str, Any], zone: str | None) -> dict[str, Any]:
    md, spec = o.meta(pod), pod.get("spec") or {}
    deleting = bool(md.get("deletionTimestamp"))
    ready = o.condition_true(pod, "Ready")
    publish = bool((svc.get("spec") or {}).get("publishNotReadyAddresses"))
    ep: dict[str, Any] = {
        "addresses": [(pod.get("status") or {}).get("podIP")],
        "conditions": {
            "ready": publish or (ready and not deleting),
            "serving": ready,
            "terminating": deleting,
        },
        "targetRef": {
            "kind": "Pod",
            "namespace": md.get("namespace"),
            "name": md.get("name"),
            "uid": md.get("uid"),
        },
    }
    if spec.get("hostname") and spec.get("subdomain") == o.name_of(svc):
        ep["hostname"] = spec["hostname"]
    if spec.get("nodeName"):
        ep["nodeName"] = spec["nodeName"]
    if zone:
        ep["zone"] = zone
    return ep


def _ports_json(ports: tuple[tuple[str, int, str], ...]) -> list[dict[str, Any]]:
    return [{"name": n, "port": p, "protocol": proto} for n, p, proto in ports]


class EndpointSliceController(Controller):
    what = "service"

    def __init__(self, client: Any, informers: InformerFactory | None = None) -> None:
        super().__init__()
        self.client = client
        mk = informer_maker(client, informers)
        self.services = mk(SERVICES, name="workloads-services")
        self.pods = mk(PODS, name="workloads-endpoint-pods")
        self.nodes = mk(NODES, name="workloads-endpoint-nodes")
        self.slices = mk(
            SLICES, label_selector=f"{MANAGED_BY}={CONTROLLER}", name="workloads-slices"
        )
        self.slices.add_index("service", self._service_of)
        self.endpoints = mk(ENDPOINTS, name="workloads-endpoints")
        self._eps_written: dict[str, dict[str, Any]] = {}  # service key -> Endpoints written
        # service key -> slice name -> the slice as written, until the cache shows it
        self._written: dict[str, dict[str, dict[str, Any]]] = {}
        # service key -> slices deleted that the cache may still show
        self._deleted: dict[str, set[str]] = {}

    @staticmethod
    def _service_of(sl: dict[str, Any]) -> str | None:
        svc = o.labels_of(sl).get(SERVICE_NAME)
        return f"{o.namespace_of(sl)}/{svc}" if svc else None

    def informers(self) -> tuple[Any, ...]:
        return (self.pods, self.nodes, self.slices, self.endpoints, self.services)

    def _wire(self) -> None:
        def svc_ev(svc: dict[str, Any]) -> None:
            self.enqueue(o.key_of(svc))

        self.services.add_handler(svc_ev, lambda old, new: svc_ev(new), svc_ev)

        def pod_ev(pod: dict[str, Any]) -> None:
            labels = o.labels_of(pod)
            for svc in self.services.by_namespace(o.namespace_of(pod)):
                sel = (svc.get("spec") or {}).get("selector")
                if sel and all(labels.get(k) == v for k, v in sel.items()):
                    self.enqueue(o.key_of(svc))

        def pod_update(old: dict[str, Any], new: dict[str, Any]) -> None:
            pod_ev(new)
            if o.labels_of(old) != o.labels_of(new):
                pod_ev(old)

        self.pods.add_handler(pod_ev, pod_update, pod_ev)

        def slice_ev(sl: dict[str, Any]) -> None:
            key = self._service_of(sl)
            if key is not None:
                self.enqueue(key)

        self.slices.add_handler(slice_ev, lambda old, new: slice_ev(new), slice_ev)

    def _zone(self, node: str | None) -> str | None:
        n = self.nodes.get(node) if node else None
        return o.labels_of(n).get(names.LABEL_ZONE) if n else None

    def desired(self, svc: dict[str, Any]) -> list[tuple[tuple[Any, ...], list[dict[str, Any]]]]:
        """(ports, endpoints) of each slice the Service should have, in a stable order."""
        sel = (svc.get("spec") or {}).get("selector") or {}
        groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        for pod in self.pods.by_namespace(o.namespace_of(svc)):
            labels = o.labels_of(pod)
            if not all(labels.get(k) == v for k, v in sel.items()):
                continue
            if o.is_pod_terminal(pod) or not (pod.get("status") or {}).get("podIP"):
                continue
            ep = endpoint(svc, pod, self._zone((pod.get("spec") or {}).get("nodeName")))
            groups.setdefault(slice_ports(svc, pod), []).append(ep)
        out = []
        for ports in sorted(groups):
            eps = sorted(groups[ports], key=lambda e: (e["addresses"][0], e["targetRef"]["name"]))
            for i in range(0, len(eps), MAX_ENDPOINTS):
                out.append((ports, eps[i : i + MAX_ENDPOINTS]))
        return out

    def _current(self, key: str) -> list[dict[str, Any]]:
        """The Service's slices: the cache's, or what this controller wrote when newer."""
        written = self._written.setdefault(key, {})
        deleted = self._deleted.setdefault(key, set())
        cached = {o.name_of(s): s for s in self.slices.by_index("service", key)}
        deleted &= set(cached)  # gone from the cache too: forget them
        for n, mine in list(written.items()):
            seen = cached.get(n)
            if seen is not None and _rv(seen) >= _rv(mine):
                del written[n]
            else:
                cached[n] = mine
        return [s for n, s in sorted(cached.items()) if n not in deleted]

    async def reconcile(self, key: str) -> None:
        ns, name = key.split("/", 1)
        svc = self.services.get(name, ns)
        current = self._current(key)
        if svc is None or not (svc.get("spec") or {}).get("selector"):
            # no Service, or one whose endpoints someone else keeps: ours go (the
            # garbage collector also deletes them with their Service)
            if current:
                await self._delete(key, ns, current)
            if svc is None:
                self._written.pop(key, None)
                self._deleted.pop(key, None)
                await self._drop_endpoints(key, ns, name)
            return
        uid = o.meta(svc).get("uid")
        current = [
            s
            for s in current
            if any(r.get("uid") == uid for r in o.meta(s).get("ownerReferences") or [])
        ]
        groups = self.desired(svc)
        await self._sync_endpoints(key, svc, groups)
        # a Service selecting nothing still has one empty slice, as kube's does
        want = groups or [((), [])]
        free = list(current)
        plan: list[tuple[dict[str, Any] | None, tuple[Any, ...], list[dict[str, Any]]]] = []
        for ports, eps in want:
            pj = _ports_json(ports)
            # keep a slice that already holds exactly this; else reuse one with these ports
            same = next(
                (
                    s
                    for s in free
                    if (s.get("ports") or []) == pj and (s.get("endpoints") or []) == eps
                ),
                None,
            )
            if same is not None:
                free.remove(same)
                continue
            reuse = next((s for s in free if (s.get("ports") or []) == pj), None)
            if reuse is not None:
                free.remove(reuse)
            plan.append((reuse, ports, eps))
        for old, ports, eps in plan:
            if old is None and free:
                old = free.pop(0)
            await self._put(key, svc, old, ports, eps)
        if free:
            await self._delete(key, ns, free)

    def _endpoints_now(self, key: str) -> dict[str, Any] | None:
        ns, name = key.split("/", 1)
        seen = self.endpoints.get(name, ns)
        mine = self._eps_written.get(key)
        if mine is not None and (seen is None or _rv(seen) < _rv(mine)):
            return mine
        self._eps_written.pop(key, None)
        return seen

    async def _sync_endpoints(
        self, key: str, svc: dict[str, Any], groups: list[tuple[tuple[Any, ...], list[Any]]]
    ) -> None:
        want = endpoints.endpoints_object(svc, endpoints.subsets(svc, groups))
        have = self._endpoints_now(key)
        if not endpoints.differs(have, want):
            return
        # a lagging cache makes this a 409 (AlreadyExists, Conflict): retried shortly
        if have is None:
            made = await self._write(self.client.create(want, o.namespace_of(svc)))
        else:
            want["metadata"]["resourceVersion"] = o.meta(have).get("resourceVersion")
            made = await self._write(self.client.replace(want))
        self._eps_written[key] = made

    async def _drop_endpoints(self, key: str, ns: str, name: str) -> None:
        have = self._endpoints_now(key)
        self._eps_written.pop(key, None)
        if have is None or o.labels_of(have).get(endpoints.SKIP_MIRROR) != "true":
            return  # none, or not one this controller keeps
        try:
            await self._write(self.client.delete(ENDPOINTS, name, ns))
        except NotFound:
            pass

    async def _put(
        self,
        key: str,
        svc: dict[str, Any],
        old: dict[str, Any] | None,
        ports: tuple[Any, ...],
        eps: list[dict[str, Any]],
    ) -> None:
        ns = o.namespace_of(svc)
        body: dict[str, Any] = {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "namespace": ns,
                "labels": {
                    **o.labels_of(svc),
                    SERVICE_NAME: o.name_of(svc),
                    MANAGED_BY: CONTROLLER,
                },
                "ownerReferences": [o.owner_reference(svc)],
            },
            "addressType": "IPv4",
            "endpoints": eps,
            "ports": _ports_json(ports),
        }
        if old is None:
            body["metadata"]["generateName"] = f"{o.name_of(svc)}-"
            made = await self._write(self.client.create(body, ns))
        else:
            body["metadata"]["name"] = o.name_of(old)
            body["metadata"]["resourceVersion"] = o.meta(old).get("resourceVersion")
            made = await self._write(self.client.replace(body))
        self._written.setdefault(key, {})[o.name_of(made)] = made

    async def _delete(self, key: str, ns: str, slices: list[dict[str, Any]]) -> None:
        async def one(sl: dict[str, Any]) -> None:
            n = o.name_of(sl)
            self._deleted.setdefault(key, set()).add(n)
            self._written.get(key, {}).pop(n, None)
            try:
                await self._write(self.client.delete(SLICES, n, ns))
            except NotFound:
                pass

        await asyncio.gather(*(one(s) for s in slices))
