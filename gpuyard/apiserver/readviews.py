"""Custom objects as reads show them: pruned and defaulted by their CRD's current schema.

kube-apiserver decodes what it reads from storage with the CRD's schema of now, not of
when the object was written: a default added to the CRD later shows on every GET, LIST
and WATCH of older objects, and a field the schema no longer declares is no longer
shown (neither is written back until the object is next written). Here the stored bytes
are served as they are whenever they already equal that view, which is known once per
stored revision: a read then costs one dictionary look-up. A revision whose view
differs keeps its view's bytes until the schema or the object changes. Watch events
are rewritten only for objects known to read otherwise (found by looking at each stored
object once per schema), so a watch of objects that are already their view, the common
case, parses nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from gpuyard.apiserver import crdversions
from gpuyard.apiserver.resources import Resource
from gpuyard.k8s.jsonbytes import kept

_MAX = 200_000  # objects remembered per custom resource (cleared beyond)


class _Views:
    __slots__ = ("schema", "api_version", "seen", "stale", "scanned")

    def __init__(self, schema: Any, api_version: str) -> None:
        self.schema = schema  # held, so its identity says when the CRD changed
        self.api_version = api_version
        # object key -> (rv, None when the stored bytes are the view, else the view)
        self.seen: dict[str, tuple[int, bytes | None]] = {}
        self.stale: set[str] = set()  # keys whose last stored revision seen is not its view
        self.scanned = False  # every stored object looked at once under this schema


class ReadViews:
    """The read views of one server's custom objects."""

    def __init__(self) -> None:
        self._by: dict[tuple[str, str, str], _Views] = {}

    def _views(self, res: Resource) -> _Views:
        k = (res.group, res.version, res.plural)
        v = self._by.get(k)
        if v is None or v.schema is not res.schema:
            v = self._by[k] = _Views(res.schema, res.api_version)
        return v

    def raw(self, res: Resource, key: str, rv: int, raw: bytes) -> bytes:
        """The bytes a read of the stored revision `rv` of object `key` answers."""
        v = self._views(res)
        hit = v.seen.get(key)
        if hit is not None and hit[0] == rv:
            return raw if hit[1] is None else hit[1]
        obj = orjson.loads(raw)
        if not isinstance(obj, dict):
            return raw
        view = view_of(res, obj)
        out = orjson.dumps(view)
        same = view == orjson.loads(raw)
        if len(v.seen) >= _MAX:
            v.seen.clear()
        if not same:
            out = kept(out)  # remembered: at its own size (orjson's is 4 KiB and up)
        v.seen[key] = (rv, None if same else out)
        if same:
            v.stale.discard(key)
        else:
            v.stale.add(key)
        return raw if same else out

    def any_stale(self, res: Resource, entries: Iterable[Any]) -> bool:
        """Whether any stored object (entries: the collection's) reads otherwise than it
        is stored; every object is looked at once per schema, then this is a look-up."""
        v = self._views(res)
        if not v.scanned:
            for e in entries:
                self.raw(res, f"{e.namespace}/{e.name}" if e.namespace else e.name, e.rv, e.raw)
            v.scanned = True
        return bool(v.stale)

    def event_line(self, res: Resource, line: bytes, always: bool = False) -> bytes:
        """A watch event line (without its newline) with its object as a read shows it:
        rewritten only for an object known to read otherwise (or with always, when it is
        stored in another version)."""
        ev = orjson.loads(line)
        obj = ev.get("object")
        if ev.get("type") not in ("ADDED", "MODIFIED", "DELETED") or not isinstance(obj, dict):
            return line
        md = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
        ns, name = (md or {}).get("namespace") or "", (md or {}).get("name") or ""
        key = f"{ns}/{name}" if ns else str(name)
        if key not in self._views(res).stale and not (
            always and obj.get("apiVersion") != res.api_version
        ):
            return line
        ev["object"] = view_of(res, obj)
        return orjson.dumps(ev)

    def obj(self, res: Resource, key: str, rv: int, raw: bytes) -> dict[str, Any]:
        """A fresh, mutable copy of the read view (what a write starts from)."""
        out: dict[str, Any] = orjson.loads(self.raw(res, key, rv, raw))
        return out

    def forget(self, res: Resource) -> None:
        self._by.pop((res.group, res.version, res.plural), None)


def view_of(res: Resource, obj: dict[str, Any]) -> dict[str, Any]:
    """`obj` (changed in place) as a read of `res` shows it: in the served version,
    pruned and defaulted by the version it is stored in, and pruned by the version
    read where that is another (crdversions.py)."""
    return crdversions.view(res, obj)
