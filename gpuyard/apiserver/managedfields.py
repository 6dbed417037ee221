"""Field ownership: `metadata.managedFields` kept on every write, and server-side apply.

Every write records who set which fields. An update (create, PUT, any non-apply patch)
gives its field manager the fields it changed and takes them from every other manager;
an apply (`application/apply-patch+yaml`) makes the applied configuration the
manager's set, merges it into the live object by the schema's list and map types
(`fieldtypes`), removes the fields the manager applied before and no longer applies
when nobody else owns them, and refuses with 409 Conflict a change of a field another
manager owns unless `force=true` (which moves the field to the applier).

Sets are written as kube-apiserver writes them: entries of manager, operation
(`Apply` or `Update`), apiVersion, time, `fieldsType: FieldsV1` and `fieldsV1` (`f:`
for a field, `k:{...}` for a list item by its keys, `v:...` for a set's value, `.` for
a node owned itself), and `subresource` for writes of /status. Fields that every
object has and nobody sets (apiVersion, kind, name, namespace, uid, resourceVersion,
generation, creationTimestamp, ...) are owned by no one; status belongs to /status
where the kind has that subresource.

Entries stay in the version they were written in, as kube-apiserver keeps them (a read
in another version shows them as written; an updater writing through two versions has
an entry for each, kube's identity of an Update including its apiVersion). What a write
changes is worked out for each entry in the entry's version, the old and new object
converted to it (conversion.py): a v2 write of an HPA's metrics takes, or conflicts on,
the targetCPUUtilizationPercentage a v1 manager owns; an applier that applied through
v1 and now applies through v2 without the CPU target has it pruned in v1 terms.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import orjson

from gpuyard.apiserver import conversion, fieldtypes
from gpuyard.apiserver.errors import APIError, invalid
from gpuyard.apiserver.fieldtypes import ATOMIC, LIST_MAP, SET, STRUCT, Node
from gpuyard.apiserver.resources import Resource, builtin_resources

Path = tuple[str, ...]
_K = TypeVar("_K")
MAX_MANAGER = 128
DEFAULT_MANAGER = "gpuyard-apiserver"
APPLY_TYPE = "application/apply-patch+yaml"
# The field manager of the request being served (set by the dispatcher per request).
MANAGER: contextvars.ContextVar[str] = contextvars.ContextVar(
    "gpuyard_apiserver_field_manager", default=DEFAULT_MANAGER
)
# The version a request writes in where the kind is stored in another (a converted
# kind, conversion.py; set by the handler of such a write): an update's entry records
# that version and its fields as that version names them, as kube-apiserver records
# the version the client wrote. Entries stay in the version they were written in: a
# write's changes are worked out for each of them in its own version (_Changes), as
# kube-apiserver's field manager converts the old and new object to each entry's version.
WIRE: contextvars.ContextVar[Resource | None] = contextvars.ContextVar(
    "gpuyard_apiserver_wire_version", default=None
)
_ITEM = object()  # a list item's own path: present, no value
_MISSING = object()
_META_IGNORED = frozenset(
    {
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "managedFields",
        "selfLink",
    }
)


# ---------------------------------------------------------------- field sets


class _Flat:
    """The leaf fields (and associative list items) of one object, with their values."""

    __slots__ = ("values", "duplicates")

    def __init__(self) -> None:
        self.values: dict[Path, Any] = {}
        self.duplicates: list[Path] = []


def _key_elem(item: dict[str, Any], node: Node) -> str | None:
    """`k:{...}`: an item of a map list by its keys (a key it leaves out has the value
    the schema defaults it to, so `{containerPort: 80}` is the item of port 80/TCP)."""
    defaults = node.key_defaults
    vals = {
        k: item[k] if k in item else defaults[k] for k in node.keys if k in item or k in defaults
    }
    if not vals:
        return None
    return "k:" + orjson.dumps(vals, option=orjson.OPT_SORT_KEYS).decode()


def _scalar(x: Any) -> bool:
    return not isinstance(x, dict | list)


def _flat_dict(v: dict[str, Any]) -> bool:
    """No value of v is a container (labels, resource lists...): each key is a leaf."""
    for x in v.values():
        t = type(x)
        if t is dict or t is list:
            return False
    return True


def _walk(v: Any, node: Node, path: Path, out: _Flat) -> None:
    kind = node.kind
    if kind is STRUCT and type(v) is dict:
        if not v:
            out.values[path] = v
            return
        if _flat_dict(v):
            values = out.values
            for name, x in v.items():
                values[(*path, "f:" + name)] = x
            return
        for name, x in v.items():
            _walk(x, node.child(name), (*path, "f:" + name), out)
        return
    if kind is LIST_MAP and type(v) is list and v:
        elems = []
        for item in v:
            el = _key_elem(item, node) if type(item) is dict else None
            if el is None:
                out.values[path] = v  # items without their keys: the list is one value
                return
            elems.append(el)
        values = out.values
        elem = node.elem
        for el, item in zip(elems, v, strict=True):
            ip = (*path, el)
            if ip in values:
                out.duplicates.append(ip)
                continue
            values[ip] = _ITEM
            for name, x in item.items():
                _walk(x, elem.child(name), (*ip, "f:" + name), out)
        return
    if kind is SET and type(v) is list and v and all(_scalar(x) for x in v):
        for x in v:
            p = (*path, "v:" + orjson.dumps(x).decode())
            if p in out.values:
                out.duplicates.append(p)
            out.values[p] = True
        return
    out.values[path] = v


def flatten(res: Resource, obj: dict[str, Any], sub: str | None) -> _Flat:
    """The owned fields of `obj` as a write of `res` (or of its `sub`resource) sees them."""
    out = _Flat()
    root = fieldtypes.root(res)
    status_sub = "status" in res.subresources
    for name, x in obj.items():
        if name in ("apiVersion", "kind"):
            continue
        if status_sub and (name == "status") != (sub == "status"):
            continue
        if name == "metadata" and type(x) is dict:
            mnode = root.child("metadata")
            for k, y in x.items():
                if k not in _META_IGNORED:
                    _walk(y, mnode.child(k), ("f:metadata", "f:" + k), out)
            continue
        _walk(x, root.child(name), ("f:" + name,), out)
    return out


def to_fields_v1(paths: set[Path] | frozenset[Path]) -> dict[str, Any]:
    """A set of paths as a FieldsV1 tree (keys sorted, `.` first, as kube-apiserver
    writes them). Sorted, a path comes before the paths below it, so each node is
    made once and a member that has children gets its `.` before them."""
    tree: dict[str, Any] = {}
    for p in sorted(paths):
        node = tree
        last = len(p) - 1
        for i, el in enumerate(p):
            child = node.get(el)
            if child is None:
                child = node[el] = {}
            elif i < last and not child and p[: i + 1] in paths:
                child["."] = {}
            node = child
    return tree


def _tree(v: Any, node: Node) -> dict[str, Any]:
    """The FieldsV1 tree of every field of `v` below a node (what a create owns)."""
    kind = node.kind
    if kind is STRUCT and type(v) is dict and v:
        if _flat_dict(v):
            return {"f:" + k: {} for k in sorted(v)}
        return {"f:" + k: _tree(v[k], node.child(k)) for k in sorted(v)}
    if kind is LIST_MAP and type(v) is list and v:
        items: dict[str, Any] = {}
        elem = node.elem
        for item in v:
            el = _key_elem(item, node) if type(item) is dict else None
            if el is None:
                return {}
            sub = {"f:" + k: _tree(item[k], elem.child(k)) for k in sorted(item)}
            items[el] = {".": {}, **sub}
        return {k: items[k] for k in sorted(items)}
    if kind is SET and type(v) is list and v and all(_scalar(x) for x in v):
        return {k: {} for k in sorted({"v:" + orjson.dumps(x).decode() for x in v})}
    return {}


def tree_of(res: Resource, obj: dict[str, Any], sub: str | None) -> dict[str, Any]:
    """The FieldsV1 tree of all owned fields of `obj` (as `flatten` sees them)."""
    root = fieldtypes.root(res)
    status_sub = "status" in res.subresources
    out: dict[str, Any] = {}
    for name in sorted(obj):
        x = obj[name]
        if name in ("apiVersion", "kind"):
            continue
        if status_sub and (name == "status") != (sub == "status"):
            continue
        if name == "metadata" and type(x) is dict:
            mnode = root.child("metadata")
            md: dict[str, Any] = {}
            for k in sorted(x):
                if k not in _META_IGNORED:
                    v = x[k]
                    t = type(v)
                    # A leaf (or an empty container) owns itself: no schema lookup.
                    md["f:" + k] = (
                        _tree(v, mnode.child(k)) if (t is dict or t is list) and v else {}
                    )
            if md:
                out["f:metadata"] = md
            continue
        node = root.child(name)
        if node.kind is STRUCT and type(x) is dict and x:
            out["f:" + name] = _section(x, node)
        else:
            out["f:" + name] = _tree(x, node)
    return out


# Trees of the top-level sections that hold containers (a pod's spec), by the section's
# keys and the exact values of its containers: the pods of one controller differ in
# leaves (nodeName, hostname), which own themselves whatever their value, so they share
# one tree. Shared like `_TREES`, never edited in place.
_SECTIONS: dict[tuple[Any, ...], dict[str, Any]] = {}


def _section(x: dict[str, Any], node: Node) -> dict[str, Any]:
    parts: list[Any] = [node]
    nested = False
    for k, v in x.items():
        t = type(v)
        if (t is dict or t is list) and v:
            try:
                parts.append((k, orjson.dumps(v)))
            except TypeError:
                return _section_tree(x, node)
            nested = True
        else:
            parts.append(k)
    if not nested:
        return {"f:" + k: {} for k in sorted(x)}  # every member a leaf
    return _kept(_SECTIONS, 1024, tuple(parts), _section_tree, x, node)


def _section_tree(x: dict[str, Any], node: Node) -> dict[str, Any]:
    sec: dict[str, Any] = {}
    for k in sorted(x):
        v = x[k]
        t = type(v)
        sec["f:" + k] = _tree_cached(v, node.child(k)) if (t is dict or t is list) and v else {}
    return sec


# Trees of the sections one level below the top (a pod's containers, a template), by
# their exact value: the pods of one controller share them. Cached trees are shared by
# every object they serve and never edited in place (`_edit` copies what it changes).
_TREES: dict[tuple[Node, bytes], dict[str, Any]] = {}


def _tree_cached(v: Any, node: Node) -> dict[str, Any]:
    t = type(v)
    if (t is not dict and t is not list) or not v:
        return {}
    try:
        key = (node, orjson.dumps(v))
    except TypeError:
        return _tree(v, node)
    return _kept(_TREES, 4096, key, _tree, v, node)


def _kept(
    cache: dict[_K, dict[str, Any]],
    limit: int,
    key: _K,
    make: Callable[[Any, Node], dict[str, Any]],
    v: Any,
    node: Node,
) -> dict[str, Any]:
    """`cache[key]`, made as `make(v, node)` on a miss; a cache holding `limit` trees is
    emptied before it takes another (the trees of workloads gone are not kept forever)."""
    hit = cache.get(key)
    if hit is None:
        if len(cache) >= limit:
            cache.clear()
        hit = cache[key] = make(v, node)
    return hit


def from_fields_v1(tree: Any, prefix: Path = ()) -> set[Path]:
    """The paths of a FieldsV1 tree (ValueError for one that is not)."""
    out: set[Path] = set()
    _read(tree, prefix, out)
    return out


def _read(tree: Any, prefix: Path, out: set[Path]) -> None:
    if not isinstance(tree, dict):
        raise ValueError("fieldsV1 must be an object")
    if not tree and prefix:
        out.add(prefix)
        return
    for k, v in tree.items():
        if k == ".":
            if prefix:
                out.add(prefix)
            continue
        if not isinstance(k, str) or k[:2] not in ("f:", "k:", "v:", "i:"):
            raise ValueError(f"fieldsV1 has an element that is not a field: {k!r}")
        _read(v, (*prefix, k), out)


def path_string(p: Path) -> str:
    """A path as kube-apiserver prints it: `.spec.containers[name="c"].image`."""
    parts = []
    for el in p:
        kind, rest = el[:2], el[2:]
        if kind == "f:":
            parts.append("." + rest)
        elif kind == "k:":
            try:
                keys = orjson.loads(rest)
                parts.append(
                    "[" + ",".join(f"{k}={orjson.dumps(v).decode()}" for k, v in keys.items()) + "]"
                )
            except orjson.JSONDecodeError:
                parts.append(f"[{rest}]")
        elif kind == "v:":
            parts.append(f"[={rest}]")
        else:
            parts.append(f"[{rest}]")
    return "".join(parts)


# ---------------------------------------------------------------- entries


class _Entry:
    """One managedFields entry; `raw` is the stored dict, written back as it was unless
    something of the entry changed."""

    __slots__ = (
        "manager",
        "operation",
        "api_version",
        "time",
        "subresource",
        "_fields",
        "tree",
        "raw",
    )

    def __init__(
        self,
        manager: str,
        operation: str,
        api_version: str,
        time: str | None,
        subresource: str,
        fields: frozenset[Path] | set[Path] | None,
        raw: dict[str, Any] | None = None,
        tree: dict[str, Any] | None = None,
    ) -> None:
        self.manager = manager
        self.operation = operation
        self.api_version = api_version
        self.time = time
        self.subresource = subresource
        self._fields = fields
        self.tree = tree  # the fieldsV1 tree, when known: edited in place of the set
        self.raw = raw

    @property
    def fields(self) -> frozenset[Path] | set[Path]:
        if self._fields is None:
            self._fields = _parsed_fields(self.tree or {}) or frozenset()
        return self._fields

    @fields.setter
    def fields(self, value: frozenset[Path] | set[Path]) -> None:
        self._fields = value
        self.tree = None
        self.raw = None

    def edit(self, add: Any, remove: Any) -> None:
        """Add and remove paths, editing the stored tree along those paths only."""
        if self.tree is None:
            self.fields = (set(self.fields) | set(add)).difference(remove)
            return
        self.tree = _edit(self.tree, list(add), list(remove)) or {}
        self._fields = None
        self.raw = None

    def empty(self) -> bool:
        return not self.tree if self.tree is not None else not self.fields

    def touch(self, api_version: str, time: str) -> None:
        self.api_version = api_version
        self.time = time
        self.raw = None

    def same(self, manager: str, operation: str, sub: str) -> bool:
        return self.manager == manager and self.operation == operation and self.subresource == sub

    def dump(self) -> dict[str, Any]:
        if self.raw is not None:
            return self.raw
        out: dict[str, Any] = {
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": self.api_version,
        }
        if self.time:
            out["time"] = self.time
        out["fieldsType"] = "FieldsV1"
        out["fieldsV1"] = self.tree if self.tree is not None else to_fields_v1(self.fields)
        if self.subresource:
            out["subresource"] = self.subresource
        return out

    def who(self) -> str:
        """The manager as a conflict message names it."""
        s = orjson.dumps(self.manager).decode()
        if self.subresource:
            s += f" with subresource {orjson.dumps(self.subresource).decode()}"
        if self.operation == "Update":
            s += f" using {self.api_version}"
            if self.time:
                s += f" at {self.time}"
        return s


def _parse(entries: Any) -> list[_Entry] | None:
    """The entries of a managedFields list; None when it is not one."""
    if not isinstance(entries, list):
        return None
    out = []
    for e in entries:
        if not isinstance(e, dict):
            return None
        op = e.get("operation")
        if op not in ("Apply", "Update") or e.get("fieldsType", "FieldsV1") != "FieldsV1":
            return None
        fields = _parsed_fields(e.get("fieldsV1") or {})
        if fields is None:
            return None
        out.append(
            _Entry(
                str(e.get("manager") or ""),
                op,
                str(e.get("apiVersion") or ""),
                e.get("time") if isinstance(e.get("time"), str) else None,
                str(e.get("subresource") or ""),
                fields,
                e,
                e.get("fieldsV1") or {},
            )
        )
    return out


_PARSED: dict[bytes, frozenset[Path]] = {}


def _parsed_fields(tree: Any) -> frozenset[Path] | None:
    """The paths of a fieldsV1 tree, kept for trees seen before (each write reads the
    entries of the object it changes)."""
    try:
        key = orjson.dumps(tree)
    except TypeError:
        return None
    hit = _PARSED.get(key)
    if hit is not None:
        return hit
    try:
        fields = frozenset(from_fields_v1(tree))
    except ValueError:
        return None
    if len(_PARSED) >= 20000:
        _PARSED.clear()
    _PARSED[key] = fields
    return fields


def _dump(entries: list[_Entry]) -> list[dict[str, Any]]:
    return [e.dump() for e in entries if not e.empty()]


def _edit(
    node: dict[str, Any] | None, add: list[Path], remove: list[Path], root: bool = True
) -> Any:
    """A FieldsV1 (sub)tree with paths (relative to it) added and removed: a new dict
    along the edited paths, the rest shared; None when nothing is left of it. The root
    itself is never a member."""
    member = not root and node is not None and (not node or "." in node)
    children = {k: v for k, v in (node or {}).items() if k != "."}
    adds: dict[str, list[Path]] = {}
    removes: dict[str, list[Path]] = {}
    for p in add:
        if p:
            adds.setdefault(p[0], []).append(p[1:])
        elif not root:
            member = True
    for p in remove:
        if p:
            removes.setdefault(p[0], []).append(p[1:])
        else:
            member = False
    for k in adds.keys() | removes.keys():
        if k not in children and k not in adds:
            continue
        c = _edit(children.get(k), adds.get(k, []), removes.get(k, []), root=False)
        if c is None:
            children.pop(k, None)
        else:
            children[k] = c
    if not children:
        return {} if member else None
    out: dict[str, Any] = {".": {}} if member else {}
    for k in sorted(children):
        out[k] = children[k]
    return out


def check_manager(
    manager: str | None, apply: bool, force: str | None, options: str = "PatchOptions"
) -> None:
    """PatchOptions / CreateOptions checks of fieldManager and force (422 as kube)."""
    causes = []
    if apply and not manager:
        causes.append(
            {
                "reason": "FieldValueRequired",
                "message": "Required value: is required for apply patch",
                "field": "fieldManager",
            }
        )
    if not apply and force is not None:
        causes.append(
            {
                "reason": "FieldValueForbidden",
                "message": "Forbidden: may not be specified for non-apply patch",
                "field": "force",
            }
        )
    if manager and len(manager) > MAX_MANAGER:
        causes.append(
            {
                "reason": "FieldValueTooLong",
                "message": f"Too long: may not be more than {MAX_MANAGER} bytes",
                "field": "fieldManager",
            }
        )
    if manager and not manager.isprintable():
        causes.append(
            {
                "reason": "FieldValueInvalid",
                "message": "Invalid value: must only contain printable characters",
                "field": "fieldManager",
            }
        )
    if causes:
        err = invalid(f"{options}.meta.k8s.io", "", causes)
        raise APIError(err.code, err.reason, err.message, {"causes": causes})


def manager_from(query_manager: str | None, user_agent: str) -> str:
    """The manager of an update: fieldManager, else the user agent up to its first `/`."""
    if query_manager:
        return query_manager
    ua = user_agent.split("/", 1)[0].strip()
    return ua[:MAX_MANAGER] if ua else DEFAULT_MANAGER


def for_request(query: Mapping[str, str], user_agent: str, method: str, content_type: str) -> None:
    """Check a write's fieldManager and force and make its manager the request's."""
    fm = query.get("fieldManager")
    is_apply = method == "PATCH" and content_type.split(";")[0].strip().lower() == APPLY_TYPE
    options = {"POST": "CreateOptions", "PUT": "UpdateOptions"}.get(method, "PatchOptions")
    force = query.get("force") if method == "PATCH" else None
    check_manager(str(fm) if fm is not None else None, is_apply, force, options)
    MANAGER.set(manager_from(str(fm) if fm else None, user_agent))


# ---------------------------------------------------------------- updates


def track_update(
    res: Resource,
    old: dict[str, Any] | None,
    new: dict[str, Any],
    manager: str,
    sub: str | None,
    now: str,
) -> None:
    """Record an update (or a create, old None) of `new` by `manager` in its metadata."""
    md = new.get("metadata")
    if not isinstance(md, dict):
        return
    wire = WIRE.get()
    if wire is not None and wire.kind == res.kind and wire.group == res.group:
        # fields and apiVersion in the version the client wrote
        try:
            seen_old = (
                None
                if old is None
                else conversion.convert(old, wire.group, wire.kind, wire.version)
            )
            seen_new = conversion.convert(new, wire.group, wire.kind, wire.version)
        except conversion.ConversionError:
            pass  # (stored objects convert; the stored version's fields then)
        else:
            _track(wire, seen_old, seen_new, md, manager, sub, now, (res, old, new))
            return
    _track(res, old, new, md, manager, sub, now)


def _track(
    res: Resource,
    old: dict[str, Any] | None,
    new: dict[str, Any],
    md: dict[str, Any],
    manager: str,
    sub: str | None,
    now: str,
    also: tuple[Resource, dict[str, Any] | None, dict[str, Any]] | None = None,
) -> None:
    old_md = (old or {}).get("metadata") or {}
    old_mf = old_md.get("managedFields") if isinstance(old_md, dict) else None
    incoming = md.get("managedFields", _MISSING)
    entries: list[_Entry] | None
    if incoming is _MISSING or incoming is None or incoming == old_mf:
        entries = _parse(old_mf) if old_mf else []
        same_base = True
    elif incoming == []:
        md.pop("managedFields", None)  # the client resets ownership
        return
    else:
        entries = _parse(incoming)
        same_base = False
    if entries is None:
        entries = []  # unreadable managedFields are replaced, as kube-apiserver does
        same_base = False
    sub_name = sub or ""
    if old is None and not entries:
        # A create: the manager owns everything the object has.
        tree = tree_of(res, new, sub)
        if tree:
            md["managedFields"] = [
                {
                    "manager": manager,
                    "operation": "Update",
                    "apiVersion": res.api_version,
                    "time": now,
                    "fieldsType": "FieldsV1",
                    "fieldsV1": tree,
                    **({"subresource": sub_name} if sub_name else {}),
                }
            ]
        else:
            md.pop("managedFields", None)
        return
    changes = _Changes(res, old, new, sub, also)
    changed_l, gone_l = changes.changed, changes.gone
    if not changed_l:
        if same_base:
            if old_mf:
                md["managedFields"] = old_mf
            else:
                md.pop("managedFields", None)
        else:
            md["managedFields"] = _dump(entries)
        return
    changed = set(changed_l)
    mine = None
    for e in entries:
        # An updater's entry is its own per version written (kube's manager identity
        # for Update operations includes the apiVersion).
        if e.same(manager, "Update", sub_name) and e.api_version == res.api_version:
            mine = e
            continue
        theirs = changes.at(e.api_version)[0] if e.api_version != res.api_version else changed
        if not e.fields.isdisjoint(theirs):
            e.edit((), e.fields & theirs)
    if mine is None:
        mine = _Entry(manager, "Update", res.api_version, now, sub_name, changed.difference(gone_l))
        entries.append(mine)
    else:
        mine.edit(changed.difference(gone_l), gone_l)
    mine.touch(res.api_version, now)
    dumped = _dump(entries)
    if dumped:
        md["managedFields"] = dumped
    else:
        md.pop("managedFields", None)


def _paths(v: Any, node: Node, path: Path, out: list[Path]) -> None:
    flat = _Flat()
    _walk(v, node, path, flat)
    out.extend(flat.values)


def _keyed(items: list[Any], node: Node) -> dict[str, Any] | None:
    out: dict[str, Any] = {}
    for item in items:
        el = _key_elem(item, node) if type(item) is dict else None
        if el is None or el in out:
            return None
        out[el] = item
    return out


def _d(o: Any, n: Any, node: Node, path: Path, changed: list[Path], gone: list[Path]) -> None:
    if o is _MISSING:
        if n is not _MISSING:
            _paths(n, node, path, changed)
        return
    if n is _MISSING:
        before: list[Path] = []
        _paths(o, node, path, before)
        changed.extend(before)
        gone.extend(before)
        return
    if o == n:
        return
    kind = node.kind
    if kind is STRUCT and type(o) is dict and type(n) is dict and o and n:
        for k, x in n.items():
            _d(o.get(k, _MISSING), x, node.child(k), (*path, "f:" + k), changed, gone)
        for k, x in o.items():
            if k not in n:
                _d(x, _MISSING, node.child(k), (*path, "f:" + k), changed, gone)
        return
    if kind is LIST_MAP and type(o) is list and type(n) is list and o and n:
        ok, nk = _keyed(o, node), _keyed(n, node)
        if ok is not None and nk is not None:
            elem = node.elem
            for el, item in nk.items():
                ip = (*path, el)
                if el in ok:
                    _d(ok[el], item, elem, ip, changed, gone)
                else:
                    changed.append(ip)
                    for k, x in item.items():
                        _paths(x, elem.child(k), (*ip, "f:" + k), changed)
            for el, item in ok.items():
                if el not in nk:
                    ip = (*path, el)
                    before = [ip]
                    for k, x in item.items():
                        _paths(x, elem.child(k), (*ip, "f:" + k), before)
                    changed.extend(before)
                    gone.extend(before)
            return
    if kind is SET and type(o) is list and type(n) is list and o and n:
        if all(_scalar(x) for x in o) and all(_scalar(x) for x in n):
            ov = {"v:" + orjson.dumps(x).decode() for x in o}
            nv = {"v:" + orjson.dumps(x).decode() for x in n}
            changed.extend((*path, v) for v in nv - ov)
            for v in ov - nv:
                changed.append((*path, v))
                gone.append((*path, v))
            return
    fa, fb = _Flat(), _Flat()
    _walk(n, node, path, fa)
    _walk(o, node, path, fb)
    after_v, before_v = fa.values, fb.values
    for p, v in after_v.items():
        if before_v.get(p, _MISSING) != v:
            changed.append(p)
    for p in before_v:
        if p not in after_v:
            changed.append(p)
            gone.append(p)


def diff(
    res: Resource, old: dict[str, Any], new: dict[str, Any], sub: str | None
) -> tuple[list[Path], list[Path]]:
    """(changed, removed): the owned paths whose value a write from old to new changes
    (added, modified or removed), and of those the ones new no longer has. Equal
    subtrees are skipped whole."""
    changed: list[Path] = []
    gone: list[Path] = []
    root = fieldtypes.root(res)
    status_sub = "status" in res.subresources
    for name in {*old, *new}:
        if name in ("apiVersion", "kind"):
            continue
        if status_sub and (name == "status") != (sub == "status"):
            continue
        o, n = old.get(name, _MISSING), new.get(name, _MISSING)
        if name == "metadata" and type(o) is dict and type(n) is dict:
            if o == n:
                continue
            mnode = root.child("metadata")
            for k in {*o, *n}:
                if k not in _META_IGNORED:
                    _d(
                        o.get(k, _MISSING),
                        n.get(k, _MISSING),
                        mnode.child(k),
                        ("f:metadata", "f:" + k),
                        changed,
                        gone,
                    )
            continue
        _d(o, n, root.child(name), ("f:" + name,), changed, gone)
    return changed, gone


_BUILTIN: dict[tuple[str, str, str], Resource] = {}


def _version_res(res: Resource, api_version: str) -> Resource | None:
    """The resource of `res`'s kind in another served version, for a kind stored in one
    version and served in several (conversion.py); None for any other."""
    if res.custom or res.kind not in conversion.KINDS or api_version == res.api_version:
        return None
    group, _, version = api_version.rpartition("/")
    if group != res.group:
        return None
    if not _BUILTIN:
        for r in builtin_resources():
            if r.kind in conversion.KINDS:
                _BUILTIN[(r.group, r.version, r.kind)] = r
    return _BUILTIN.get((group, version, res.kind))


class _Changes:
    """What a write changes (paths added, modified or removed; and removed), in the
    version of each entry: computed once per version, from the object in that version
    where the write has it, else converted to it. An entry of a version the kind has
    no conversion to is compared by path."""

    def __init__(
        self,
        res: Resource,
        old: dict[str, Any] | None,
        new: dict[str, Any],
        sub: str | None,
        also: tuple[Resource, dict[str, Any] | None, dict[str, Any]] | None = None,
    ) -> None:
        self.res, self.old, self.new, self.sub = res, old, new, sub
        self.also = also
        changed, gone = diff(res, old or {}, new, sub)
        self.changed, self.gone = changed, gone
        self._by: dict[str, tuple[set[Path], set[Path]]] = {
            res.api_version: (set(changed), set(gone))
        }

    def at(self, api_version: str) -> tuple[set[Path], set[Path]]:
        hit = self._by.get(api_version)
        if hit is not None:
            return hit
        hit = self._by[self.res.api_version]
        if self.also is not None and self.also[0].api_version == api_version:
            ares, aold, anew = self.also
            c, g = diff(ares, aold or {}, anew, self.sub)
            hit = (set(c), set(g))
        elif (vres := _version_res(self.res, api_version)) is not None:
            try:
                old = (
                    None
                    if self.old is None
                    else conversion.convert(self.old, vres.group, vres.kind, vres.version)
                )
                new = conversion.convert(self.new, vres.group, vres.kind, vres.version)
            except conversion.ConversionError:
                pass  # compared by path
            else:
                c, g = diff(vres, old or {}, new, self.sub)
                hit = (set(c), set(g))
        self._by[api_version] = hit
        return hit


# ---------------------------------------------------------------- apply


def _drop_nulls(v: Any) -> Any:
    if type(v) is dict:
        return {k: _drop_nulls(x) for k, x in v.items() if x is not None}
    if type(v) is list:
        return [_drop_nulls(x) for x in v]
    return v


def _merge(live: Any, applied: Any, node: Node) -> Any:
    kind = node.kind
    if kind is STRUCT and type(applied) is dict:
        out = dict(live) if type(live) is dict else {}
        for k, x in applied.items():
            out[k] = _merge(out.get(k, _MISSING), x, node.child(k))
        return out
    if kind is LIST_MAP and type(applied) is list and type(live) is list:
        a_keyed = []
        for item in applied:
            el = _key_elem(item, node) if type(item) is dict else None
            if el is None:
                return applied
            a_keyed.append((el, item))
        l_index: dict[str, int] = {}
        for i, item in enumerate(live):
            el = _key_elem(item, node) if type(item) is dict else None
            if el is None:
                return applied
            l_index.setdefault(el, i)
        items = list(live)
        elem = node.elem
        for el, item in a_keyed:
            at = l_index.get(el)
            if at is None:
                items.append(item)
            else:
                items[at] = _merge(live[at], item, elem)
        return items
    if kind is SET and type(applied) is list and type(live) is list:
        if all(_scalar(x) for x in applied) and all(_scalar(x) for x in live):
            return list(live) + [x for x in applied if x not in live]
    return applied


def _without(v: Any, path: Path, node: Node) -> Any:
    """`v` without the field at `path` (copies along the path; shares the rest)."""
    el, rest = path[0], path[1:]
    kind = el[:2]
    if kind == "f:":
        name = el[2:]
        if type(v) is not dict or name not in v:
            return v
        out = dict(v)
        if rest:
            out[name] = _without(v[name], rest, node.child(name))
        else:
            del out[name]
        return out
    if type(v) is not list:
        return v
    if kind == "k:":
        for i, item in enumerate(v):
            if type(item) is dict and _key_elem(item, node) == el:
                copied = list(v)
                if rest:
                    copied[i] = _without(item, rest, node.elem)
                else:
                    del copied[i]
                return copied
        return v
    if kind == "v:" and not rest:
        try:
            value = orjson.loads(el[2:])
        except orjson.JSONDecodeError:
            return v
        return [x for x in v if x != value]
    return v


def _prune_elsewhere(
    res: Resource,
    merged: dict[str, Any],
    applied: dict[str, Any],
    mine: _Entry,
    others: list[_Entry],
    sub: str | None,
) -> dict[str, Any] | None:
    """The merged object without the fields the applier applied last time, through
    another version, and no longer applies, as kube-apiserver prunes them: in that
    version, keeping what another manager of it holds, and what the applier now applies
    or a manager of this version holds after converting back. None where the kind has
    no conversion to that version (then fields are pruned by path)."""
    vres = _version_res(res, mine.api_version)
    if vres is None:
        return None
    held_then: set[Path] = set()
    held_now: set[Path] = set()
    for e in others:
        into = (
            held_then
            if e.api_version == mine.api_version
            else held_now
            if e.api_version == res.api_version
            else None
        )
        if into is not None:
            for p in e.fields:
                into.update(p[:i] for i in range(1, len(p) + 1))
    vroot, root = fieldtypes.root(vres), fieldtypes.root(res)
    out = merged
    try:
        then = conversion.convert(out, vres.group, vres.kind, vres.version)
        for p in sorted(mine.fields, key=len):
            if p in held_then:
                continue
            cand_then = _without(then, p, vroot)
            if cand_then == then:
                continue
            cand = _merge(
                conversion.convert(cand_then, res.group, res.kind, res.version), applied, root
            )
            changed, _ = diff(res, out, cand, sub)
            if not changed or any(c in held_now for c in changed):
                continue
            out, then = cand, conversion.convert(cand, vres.group, vres.kind, vres.version)
    except conversion.ConversionError:
        return None
    return out


def _conflict_error(conflicts: list[tuple[_Entry, list[Path]]]) -> APIError:
    causes = []
    total = 0
    lines = []
    for e, paths in sorted(conflicts, key=lambda c: c[0].who()):
        who = e.who()
        lines.append(f"conflicts with {who}:")
        for p in sorted(paths, key=path_string):
            s = path_string(p)
            causes.append(
                {"reason": "FieldManagerConflict", "message": f"conflict with {who}", "field": s}
            )
            lines.append(f"- {s}")
            total += 1
    if total == 1:
        msg = f"Apply failed with 1 conflict: {causes[0]['message']}: {causes[0]['field']}"
    else:
        msg = f"Apply failed with {total} conflicts: " + "\n".join(lines)
    return APIError(409, "Conflict", msg, {"causes": causes})


def apply(
    res: Resource,
    live: dict[str, Any],
    applied: dict[str, Any],
    manager: str,
    force: bool,
    sub: str | None,
    now: str,
) -> dict[str, Any]:
    """The object after `manager` applies `applied` to `live` (a new dict, managedFields
    set); APIError 409 for fields other managers own, 422 for duplicate list keys."""
    applied = _drop_nulls(applied)
    md_in = applied.get("metadata")
    if isinstance(md_in, dict):
        md_in.pop("managedFields", None)
    if "status" in res.subresources:
        if sub == "status":
            applied = {k: v for k, v in applied.items() if k in ("apiVersion", "kind", "status")}
        else:
            applied.pop("status", None)
    a_flat = flatten(res, applied, sub)
    if a_flat.duplicates:
        md = live.get("metadata") or {}
        raise invalid(
            res.kind,
            str(md.get("name") or ""),
            [
                {
                    "reason": "FieldValueDuplicate",
                    "message": f"Duplicate value: duplicate entries for key {path_string(p[-1:])}",
                    "field": path_string(p[:-1]).lstrip("."),
                }
                for p in a_flat.duplicates
            ],
            res.group,
        )
    a_set = set(a_flat.values)
    live_md = live.get("metadata") or {}
    old_mf = live_md.get("managedFields") if isinstance(live_md, dict) else None
    entries = _parse(old_mf) if old_mf else []
    if entries is None:
        entries = []
    sub_name = sub or ""
    mine = next((e for e in entries if e.same(manager, "Apply", sub_name)), None)
    others = [e for e in entries if e is not mine]
    root = fieldtypes.root(res)
    merged: dict[str, Any] = _merge(live, applied, root)
    elsewhere = None
    if mine is not None and mine.api_version != res.api_version:
        elsewhere = _prune_elsewhere(res, merged, applied, mine, others, sub)
    if elsewhere is not None:
        merged = elsewhere
    elif gone := (mine.fields - a_set) if mine is not None else set():
        held: set[Path] = set()
        for e in others:
            for p in e.fields:
                for i in range(1, len(p) + 1):
                    held.add(p[:i])
        for p in sorted(gone, key=len):
            if p not in held:
                merged = _without(merged, p, root)
    changes = _Changes(res, live, merged, sub)
    changed = set(changes.changed)
    conflicts = []
    for e in others:
        # each entry judged in the version it was written in
        theirs = changes.at(e.api_version)[0]
        if not e.fields.isdisjoint(theirs):
            conflicts.append((e, sorted(e.fields & theirs)))
    if conflicts and not force:
        raise _conflict_error(conflicts)
    for e, paths in conflicts:
        e.fields = e.fields.difference(paths)
    for e in others:
        removed = changes.at(e.api_version)[1]
        if removed and not e.fields.isdisjoint(removed):
            e.fields = e.fields.difference(removed)
    if mine is None:
        mine = _Entry(manager, "Apply", res.api_version, now, sub_name, set())
        entries.append(mine)
    unchanged_set = mine.fields == a_set and mine.api_version == res.api_version
    mine.fields = a_set
    mine.api_version = res.api_version
    md = merged.get("metadata")
    md = dict(md) if isinstance(md, dict) else {}
    merged["metadata"] = md
    if not changed and unchanged_set and not conflicts and old_mf:
        md["managedFields"] = old_mf  # nothing changed: not even the time
        return merged
    mine.touch(res.api_version, now)
    md["managedFields"] = _dump(entries)
    return merged


__all__ = [
    "ATOMIC",
    "apply",
    "check_manager",
    "flatten",
    "from_fields_v1",
    "manager_from",
    "path_string",
    "to_fields_v1",
    "track_update",
]
