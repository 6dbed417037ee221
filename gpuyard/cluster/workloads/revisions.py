"""ControllerRevisions (apps/v1) of StatefulSets and DaemonSets: one per pod template the
set has had, as kube-controller-manager keeps them, so `kubectl rollout history` lists
them and `kubectl rollout undo` patches a set back to one.

A revision is named <set>-<hash>, carries the set's template labels (kubectl finds a
set's revisions by its selector) and annotations, the hash label
controller.kubernetes.io/hash, a controller reference to the set, `data` =
{"spec": {"template": <template>, "$patch": "replace"}} (the strategic merge patch
`rollout undo` sends) and `revision`, a number that grows: going back to an older
template makes that revision the newest again. Beyond revisionHistoryLimit (10) the
oldest revisions that no pod and neither the current nor the update revision use are
deleted.
"""

from __future__ import annotations

import asyncio
from typing import Any

from gpuyard.kube import objects as o
from gpuyard.kube.errors import AlreadyExists, NotFound
from gpuyard.kube.resources import BUILTIN

REVISIONS = BUILTIN[("apps/v1", "ControllerRevision")]
HASH_LABEL = "controller.kubernetes.io/hash"


def _sorted(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _sorted(v[k]) for k in sorted(v)}
    if isinstance(v, list):
        return [_sorted(x) for x in v]
    return v


def revision_data(template: dict[str, Any]) -> dict[str, Any]:
    return {"spec": {"template": {**_sorted(template), "$patch": "replace"}}}


def number(rev: dict[str, Any]) -> int:
    return int(rev.get("revision") or 0)


def owner_index(rev: dict[str, Any]) -> str | None:
    for ref in o.meta(rev).get("ownerReferences") or []:
        if ref.get("controller"):
            return f"{o.namespace_of(rev)}/{ref.get('kind')}/{ref.get('name')}"
    return None


class Revisions:
    """Keeps the ControllerRevisions of one kind of set for its controller (which
    writes through `controller._write`)."""

    def __init__(self, controller: Any, informer: Any, kind: str) -> None:
        self.ctl = controller
        self.cache = informer
        self.kind = kind
        informer.add_index("owner", owner_index)
        # set key -> {revision name: revision} written, until the cache shows them
        self._written: dict[str, dict[str, dict[str, Any]]] = {}
        self._deleted: dict[str, set[str]] = {}

    def of(self, owner: dict[str, Any]) -> list[dict[str, Any]]:
        """The owner's revisions, oldest first (the cache, or what was written since)."""
        key = o.key_of(owner)
        uid = o.meta(owner).get("uid")
        got = {
            o.name_of(r): r
            for r in self.cache.by_index(
                "owner", f"{o.namespace_of(owner)}/{self.kind}/{o.name_of(owner)}"
            )
            if any(x.get("uid") == uid for x in o.meta(r).get("ownerReferences") or [])
        }
        deleted = self._deleted.setdefault(key, set())
        deleted &= set(got)
        for n, mine in list(self._written.get(key, {}).items()):
            seen = got.get(n)
            if seen is not None and int(o.meta(seen).get("resourceVersion") or 0) >= int(
                o.meta(mine).get("resourceVersion") or 0
            ):
                del self._written[key][n]
            else:
                got[n] = mine
        return sorted((r for n, r in got.items() if n not in deleted), key=number)

    def forget(self, key: str) -> None:
        self._written.pop(key, None)
        self._deleted.pop(key, None)

    async def ensure(self, owner: dict[str, Any], name: str, template: dict[str, Any]) -> None:
        """Make `name` (the revision of `template`) the owner's newest revision."""
        revs = self.of(owner)
        top = max((number(r) for r in revs), default=0)
        mine = next((r for r in revs if o.name_of(r) == name), None)
        key = o.key_of(owner)
        if mine is not None:
            if number(mine) == top:
                return
            body = {**mine, "revision": top + 1}  # rolled back to: newest again
            made = await self.ctl._write(self.ctl.client.replace(body, res=REVISIONS))
            self._written.setdefault(key, {})[name] = made
            return
        tmd = template.get("metadata") or {}
        body = {
            "apiVersion": "apps/v1",
            "kind": "ControllerRevision",
            "metadata": {
                "name": name,
                "namespace": o.namespace_of(owner),
                "labels": {**(tmd.get("labels") or {}), HASH_LABEL: name.rsplit("-", 1)[-1]},
                "annotations": dict(o.meta(owner).get("annotations") or {}),
                "ownerReferences": [o.owner_reference(owner)],
            },
            "data": revision_data(template),
            "revision": top + 1,
        }
        try:
            made = await self.ctl._write(self.ctl.client.create(body, o.namespace_of(owner)))
        except AlreadyExists:
            return  # the cache lags; its watch will show it
        self._written.setdefault(key, {})[name] = made

    async def prune(self, owner: dict[str, Any], in_use: set[str]) -> None:
        limit = int((owner.get("spec") or {}).get("revisionHistoryLimit", 10))
        old = [r for r in self.of(owner) if o.name_of(r) not in in_use]
        extra = old[: max(0, len(old) - limit)]
        key = o.key_of(owner)

        async def one(r: dict[str, Any]) -> None:
            self._deleted.setdefault(key, set()).add(o.name_of(r))
            try:
                await self.ctl._write(
                    self.ctl.client.delete(REVISIONS, o.name_of(r), o.namespace_of(r))
                )
            except NotFound:
                pass

        await asyncio.gather(*(one(r) for r in extra))
