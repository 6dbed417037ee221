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

Fencing: `client.fence = elector` makes the client refuse (with `NotLeader`, before
anything is sent) every write except the elector's own Lease writes while this
candidate does not hold the Lease: as soon as a renewal observes another holder, and
once the last successful renewal is `renew_deadline_s` old (a standby may take over
`lease_duration_s` after it saw that renewal). So a reconcile that was started by a
leader that has since lost its Lease cannot write after the loss is known.
`run_leading()` runs a component's body only while it leads and ends it on loss.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from gpuyard.cliargs import SECONDS
from gpuyard.kube.errors import AlreadyExists, ApiError, Conflict, KubeError, NotFound
from gpuyard.kube.resources import LEASES

if TYPE_CHECKING:
    from gpuyard.kube.client import Client

log = logging.getLogger(__name__)

Obj = dict[str, Any]


class NotLeader(ApiError):
    """A write refused by the client itself: its replica does not hold its Lease."""

    def __init__(self, lease: str, identity: str, method: str, path: str) -> None:
        super().__init__(
            0,
            "NotLeader",
            f"{identity} does not hold the lease {lease}: {method} {path} not sent",
        )


@dataclass(frozen=True)
class LeaseTimings:
    """Lease duration, renew deadline and retry period, in seconds (the defaults of
    Kubernetes' own components)."""

    lease_duration_s: float = 15.0
    renew_deadline_s: float = 10.0
    retry_period_s: float = 2.0

    def __post_init__(self) -> None:
        if not (self.lease_duration_s > self.renew_deadline_s > self.retry_period_s > 0):
            raise ValueError(
                "need lease duration > renew deadline > retry period > 0, got "
                f"{self.lease_duration_s:g}, {self.renew_deadline_s:g}, {self.retry_period_s:g}"
            )


def add_timing_arguments(parser: Any) -> None:
    """--leader-elect-lease-duration, -renew-deadline and -retry-period (Kubernetes'
    components' names and defaults) on an argparse parser."""
    d = LeaseTimings()
    for flag, default, text in (
        ("lease-duration", d.lease_duration_s, "a standby takes a Lease not renewed for this long"),
        (
            "renew-deadline",
            d.renew_deadline_s,
            "the leader stops acting if it cannot renew in this",
        ),
        ("retry-period", d.retry_period_s, "between attempts to take or renew the Lease"),
    ):
        parser.add_argument(
            f"--leader-elect-{flag}",
            type=SECONDS,
            default=default,
            metavar="SECONDS",
            help=f"{text} (default {default:g})",
        )


def timings_from(args: Any) -> LeaseTimings:
    """The timings given by add_timing_arguments' flags; ValueError when inconsistent."""
    return LeaseTimings(
        args.leader_elect_lease_duration,
        args.leader_elect_renew_deadline,
        args.leader_elect_retry_period,
    )


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
        timings: LeaseTimings | None = None,
    ) -> None:
        if timings is not None:
            lease_duration_s = timings.lease_duration_s
            renew_deadline_s = timings.renew_deadline_s
            retry_period_s = timings.retry_period_s
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
        self._lease_paths = (LEASES.path(namespace), LEASES.path(namespace, name))
        self.writes_refused = 0  # writes the fence kept from being sent

    # ---------------------------------------------------------------- fencing

    def holds_lease(self) -> bool:
        """Whether this candidate may act now: it leads, its last look at the Lease
        showed itself as holder, and that renewal is younger than the renew deadline."""
        return (
            self.is_leader
            and not self._stopping
            and self._observed is not None
            and self._observed[0] == self.identity
            and self.clock() - self._last_renew < self.renew_deadline_s
        )

    def permit(self, method: str, path: str) -> None:
        """A client's fence: raise NotLeader for a write while the Lease is not held
        (the elector's own Lease writes always pass)."""
        if method in ("GET", "HEAD") or path in self._lease_paths:
            return
        if not self.holds_lease():
            self.writes_refused += 1
            raise NotLeader(self.name, self.identity, method, path)

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
            self._last_renew = now
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
        self._last_renew = now
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
                self.is_leader = True
                self.transitions_seen += 1
                self._leading.set()
                log.info("leader %s: %s started leading", self.name, self.identity)
                await self._call(self.on_started_leading)
                while not self._stopping:
                    await asyncio.sleep(self.retry_period_s)
                    if await self._attempt():
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


async def run_leading(
    elector: LeaderElector,
    body: Callable[[asyncio.Event], Awaitable[Any]],
    stop: asyncio.Event,
    *,
    grace_s: float | None = None,
) -> bool:
    """Campaign with `elector` until it leads (or `stop`), then run `body(done)` with the
    elector's client fenced; `done` is set on `stop` and on losing the Lease. A body
    still running `grace_s` (default: the retry period) after `done` is cancelled, so
    nothing of it runs a lease duration after the loss. Returns True when `stop` ended
    it, False when the Lease was lost (Kubernetes' own components exit then and start
    afresh, with new caches). The Lease is released on the way out if still held; the
    client stays fenced (its writes refused) from then on."""
    lost = asyncio.Event()
    chained = elector.on_stopped_leading

    def stopped() -> Any:
        lost.set()
        return chained() if chained is not None else None

    elector.on_stopped_leading = stopped
    elector.client.fence = elector
    elector.start()
    from gpuyard.kube.waits import first_of

    try:
        if not await first_of(elector.wait_leading(), stop):
            return True
        done = asyncio.Event()
        task = asyncio.ensure_future(body(done))
        watchers = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(lost.wait())]
        try:
            await asyncio.wait({task, *watchers}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in watchers:
                w.cancel()
        done.set()
        if not task.done():
            grace = elector.retry_period_s if grace_s is None else grace_s
            finished, _ = await asyncio.wait({task}, timeout=grace)
            if not finished:
                log.warning("leader %s: stopping the work that outlived the lease", elector.name)
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        failed = None if task.cancelled() else task.exception()
        if lost.is_set() and not stop.is_set():
            if failed is not None:  # most likely a write the fence refused
                log.info("leader %s: work ended after the loss: %s", elector.name, failed)
            return False
        if failed is not None:
            raise failed
        return True
    finally:
        await elector.stop()
