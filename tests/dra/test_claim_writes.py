"""The live scheduler's claim writes, in-process on a bare embedded API server: each
unit's pods are bound once its own claims are written (allocation and reservedFor),
and a unit one of whose claims the API refuses is not bound, its other claims are
put back, and it is placed again later, while the other units of the pass bind."""

from __future__ import annotations

import asyncio
from typing import Any

from gpuyard.cluster.shapes import NodeShape
from gpuyard.cluster.simdevices import device_class, resource_slice
from gpuyard.kube.client import Client
from gpuyard.kube.errors import Conflict
from gpuyard.kube.resources import PODS, RESOURCE_CLAIMS
from gpuyard.scheduling.scheduler import Scheduler
from tests.scheduling.live import node, pod, podgroup, setup, stop_all, until

PRODUCT = "NVIDIA-H100-80GB-HBM3"


def claim(name: str, gpus: int) -> dict[str, Any]:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "devices": {
                "requests": [
                    {
                        "name": "gpus",
                        "exactly": {"deviceClassName": "gpu.nvidia.com", "count": gpus},
                    }
                ]
            }
        },
    }


class RefuseOneClaim:
    """A client whose status writes of one claim are refused (409) while `on`."""

    def __init__(self, inner: Client, name: str) -> None:
        self.inner, self.name, self.refused, self.on = inner, name, 0, True

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def patch_status(self, res: Any, name: str, *a: Any, **kw: Any) -> Any:
        if res is RESOURCE_CLAIMS and name == self.name and self.on:
            self.refused += 1
            raise Conflict("refused by the test")
        return await self.inner.patch_status(res, name, *a, **kw)


async def test_a_unit_whose_claim_is_refused_is_not_bound_and_comes_back(
    apiserver_inproc: Any,
) -> None:
    k = Client.in_process(apiserver_inproc)
    flaky = RefuseOneClaim(Client.in_process(apiserver_inproc), "g-1-gpus")
    stop = asyncio.Event()
    sched = Scheduler(flaky, leader_elect=False, debounce=0.01)
    task = None
    try:
        await setup(k, 0)
        await k.create(device_class())
        for i in range(3):
            await k.create(node(f"n{i}"))
            await k.create(resource_slice(NodeShape(f"n{i}", 64_000, 512 * 2**30, 8, PRODUCT)))
        await k.create(podgroup("g", 2))
        for i in range(2):
            await k.create(claim(f"g-{i}-gpus", 8))
            await k.create(pod(f"g-{i}", "g", claim=f"g-{i}-gpus"))
        await k.create(claim("solo-gpus", 8))
        await k.create(pod("solo", claim="solo-gpus"))
        task = asyncio.create_task(sched.run(stop))

        async def state() -> tuple[dict[str, Any], dict[str, Any]]:
            ps = {p["metadata"]["name"]: p for p in (await k.list(PODS, "default"))["items"]}
            cs = {
                c["metadata"]["name"]: c
                for c in (await k.list(RESOURCE_CLAIMS, "default"))["items"]
            }
            return ps, cs

        async def solo_bound_gang_put_back() -> bool:
            ps, cs = await state()
            st = cs["g-0-gpus"].get("status") or {}
            return bool(
                ps["solo"]["spec"].get("nodeName")
                and (cs["solo-gpus"].get("status") or {}).get("allocation")
                and flaky.refused
                and not st.get("allocation")
                and not st.get("reservedFor")
                and not any(ps[f"g-{i}"]["spec"].get("nodeName") for i in range(2))
            )

        async def all_bound() -> Any:
            ps, cs = await state()
            return (ps, cs) if all(p["spec"].get("nodeName") for p in ps.values()) else None

        # the lone pod is bound; the gang is not, and its claim that was written is
        # given back (no allocation, no reservation) while the other is refused
        await until(solo_bound_gang_put_back)
        flaky.on = False
        # the gang comes back: placed again, its claims written, bound
        ps, cs = await until(all_bound)
        seen: set[tuple[str, str]] = set()
        for name, p in ps.items():
            st = cs[f"{name}-gpus"]["status"]
            results = st["allocation"]["devices"]["results"]
            assert len(results) == 8
            assert {r["pool"] for r in results} == {p["spec"]["nodeName"]}
            assert [r["name"] for r in st["reservedFor"]] == [name]
            for r in results:
                assert (r["pool"], r["device"]) not in seen
                seen.add((r["pool"], r["device"]))
        assert len({p["spec"]["nodeName"] for p in ps.values()}) == 3
    finally:
        await stop_all(stop, [task], [flaky.inner, k])
