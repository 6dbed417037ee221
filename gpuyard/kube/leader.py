"""Leader election on a coordination.k8s.io/v1 Lease (one active replica per component).

`LeaderElector(client, "gpuyard-scheduler", namespace, identity)` keeps trying to take
the Lease: it succeeds when the Lease is missing, released (empty holderIdentity) or
expired — nobody renewed it for `lease_duration_s` as observed on this process's own
clock (so clocks of different machines need not agree). The leader renews every
`retry_period_s`; if it cannot renew for `renew_deadline_s` it steps down. Writes use
the Lease's resourceVersion, so two candidates can never both win. Callbacks
`on_started_leading()` / `on_stopped_leading()` may be plain functions or coroutines
and should return quickly. `stop()` releases the Lease (unless release_on_stop=False)
so a standby takes over at its next retry instead of after expiry.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from gpuyard.kube.errors import AlreadyExists, Conflict, KubeError, NotFound
from gpuyard.kube.resources import LEASES

if TYPE_CHECKING:
    from gpuyard.kube.client import Client

log = logging.getLogger(__name__)

Obj = dict[str, Any]


def micro_time(ts: float) -> str:
    """A MicroTime string as Leases carry it."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(
        self,
        client: Client,
        name: str,
        namespace: str,
        identity: str,
        *,
        lease_duration_s: float = 15.0,
        renew_deadline_s: float = 10.0,
        retry_period_s: float = 2.0,
        on_started_leading: Callable[[], Any] | None = None,
        on_stopped_leading: Callable[[], Any] | None = None,
        release_on_stop: bool = True,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if not identity:
            raise ValueError("leader election needs a non-empty identity")
        if not (lease_duration_s > renew_deadline_s > retry_period_s > 0):
            raise ValueError(
                "need lease_duration_s > renew_deadline_s > retry_period_s > 0, got "
                f"{lease_duration_s}, {renew_deadline_s}, {retry_period_s}"
            )
        self.client = client
        self.name = name
        self.namespace = namespace
        self.identity = identity
        self.lease_duration_s = lease_duration_s
        self.renew_deadline_s = renew_deadline_s
        self.retry_period_s = retry_period_s
        self.on_started_leading = on_started_leading
        self.on_stopped_leading = on_stopped_leading
        self.release_on_stop = release_on_stop
        self.clock = clock
        self.wall = wall
        self.is_leader = False
        self.transitions_seen = 0
        self._observed: tuple[str, str] | None = None  # (holder, renewTime)
        self._observed_at = 0.0
        self._last_renew = 0.0
        self._task: asyncio.Task[None] | None = None
        self._leading = asyncio.Event()
        self._stopping = False

    # ---------------------------------------------------------------- one attempt

    def _spec(self, old: Obj | None, now_wall: float) -> Obj:
        old = old or {}
        stamp = micro_time(now_wall)
        spec: Obj = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, int(round(self.lease_duration_s))),
            "renewTime": stamp,
        }
        if old.get("holderIdentity") == self.identity and old.get("acquireTime"):
            spec["acquireTime"] = old["acquireTime"]
            spec["leaseTransitions"] = int(old.get("leaseTransitions") or 0)
        else:
            spec["acquireTime"] = stamp
            # A new holder of an existing Lease (even a released one) is a transition.
            transitions = int(old.get("leaseTransitions") or 0)
            spec["leaseTransitions"] = transitions + 1 if old else 0
        return spec

    async def try_acquire_or_renew(self) -> bool:
        """One attempt; True when this candidate holds the Lease afterwards."""
        now = self.clock()
        try:
            lease = await self.client.get(LEASES, self.name, self.namespace)
        except NotFound:
            body: Obj = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._spec(None, self.wall()),
            }
            try:
                await self.client.create(body, self.namespace)
            except (AlreadyExists, Conflict):
                return False
            self._observed = (self.identity, body["spec"]["renewTime"])
            self._observed_at = now
            return True
        spec = lease.get("spec") or {}
        holder = str(spec.get("holderIdentity") or "")
        record = (holder, str(spec.get("renewTime") or ""))
        if record != self._observed:
            self._observed = record
            self._observed_at = now
        duration = float(spec.get("leaseDurationSeconds") or self.lease_duration_s)
        if holder and holder != self.identity and now - self._observed_at < duration:
            return False  # someone else holds a live lease
        lease["spec"] = self._spec(spec, self.wall())
        try:
            await self.client.replace(lease)
        except (Conflict, NotFound):
            return False
        self._observed = (self.identity, lease["spec"]["renewTime"])
        self._observed_at = now
        return True

    async def release(self) -> None:
        """Give the Lease up (empty holder) if we hold it."""
        try:
            lease = await self.client.get(LEASES, self.name, self.namespace)
        except KubeError:
            return
        spec = lease.get("spec") or {}
        if spec.get("holderIdentity") != self.identity:
            return
        spec = dict(spec)
        spec["holderIdentity"] = ""
        spec["leaseDurationSeconds"] = 1
        spec["renewTime"] = micro_time(self.wall())
        lease["spec"] = spec
        try:
            await self.client.replace(lease)
        except KubeError as e:
            log.warning("leader %s: release failed: %s", self.name, e)

    # ---------------------------------------------------------------- loop

    async def _call(self, fn: Callable[[], Any] | None) -> None:
        if fn is None:
            return
        try:
            res = fn()
            if inspect.isawaitable(res):
                await res
        except Exception:
            log.exception("leader %s: callback failed", self.name)

    async def _attempt(self) -> bool:
        try:
            return await self.try_acquire_or_renew()
        except KubeError as e:
            log.warning("leader %s: %s", self.name, e)
            return False

    async def run(self) -> None:
        """Campaign, lead, step down on failure to renew, campaign again; until stop()."""
        try:
            while not self._stopping:
                if not await self._attempt():
                    await asyncio.sleep(self.retry_period_s)
                    continue
                self._last_renew = self.clock()
                self.is_leader = True
                self.transitions_seen += 1
                self._leading.set()
                log.info("leader %s: %s started leading", self.name, self.identity)
                await self._call(self.on_started_leading)
                while not self._stopping:
                    await asyncio.sleep(self.retry_period_s)
                    if await self._attempt():
                        self._last_renew = self.clock()
                        continue
                    if self._observed and self._observed[0] not in ("", self.identity):
                        break  # another candidate holds the Lease now
                    if self.clock() - self._last_renew >= self.renew_deadline_s:
                        break  # could not renew in time: step down
                await self._step_down()
        finally:
            if self.is_leader:
                await self._step_down()

    async def _step_down(self) -> None:
        if not self.is_leader:
            return
        self.is_leader = False
        self._leading.clear()
        log.info("leader %s: %s stopped leading", self.name, self.identity)
        await self._call(self.on_stopped_leading)

    def start(self) -> LeaderElector:
        if self._task is None:
            self._stopping = False
            self._task = asyncio.get_running_loop().create_task(self.run())
        return self

    async def wait_leading(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self._leading.wait(), timeout)

    async def stop(self) -> None:
        """Stop campaigning; release the Lease if we led and release_on_stop."""
        self._stopping = True
        was_leader = self.is_leader
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None
        if was_leader and self.release_on_stop:
            await self.release()

    async def abandon(self) -> None:
        """Stop without releasing (as if the process died): the Lease must expire."""
        self.release_on_stop = False
        await self.stop()
