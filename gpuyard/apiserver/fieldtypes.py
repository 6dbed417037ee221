"""How server-side apply sees a kind's fields: its schema as a tree of type nodes.

Ownership and merging go by each field's shape. A struct or a map holds fields of its
own; a list is atomic (replaced as a whole), a set of scalars, or a map of items by
their keys (`x-kubernetes-list-type: atomic|set|map`, `x-kubernetes-list-map-keys`);
`x-kubernetes-map-type: atomic` makes an object one value. Built-in kinds read these
from the Kubernetes 1.37 definitions (`schemas.definitions()`), falling back on the
strategic-merge extensions (`x-kubernetes-patch-merge-key`, a `merge` patch strategy
on a list of scalars) where a list has no list type; custom kinds read them from their
CRD's structural schema, where a list without a list type is atomic. A field no schema
describes is a map of fields if it is an object and atomic otherwise.

Nodes are made once per definition or schema and shared; their children are resolved
on first use, so recursive types cost nothing until an object reaches them.
"""

from __future__ import annotations

from typing import Any

from gpuyard.apiserver import schemas
from gpuyard.apiserver.resources import Resource

STRUCT = "struct"  # an object of named fields (a map of fields in general)
LIST_MAP = "map-list"  # a list of objects identified by key fields
SET = "set"  # a list of distinct scalars
ATOMIC = "atomic"  # one value: scalars, atomic lists and maps

_SCALAR_DEFS = frozenset(
    {
        "io.k8s.apimachinery.pkg.apis.meta.v1.Time",
        "io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime",
        "io.k8s.apimachinery.pkg.api.resource.Quantity",
        "io.k8s.apimachinery.pkg.util.intstr.IntOrString",
    }
)
_OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"


class Node:
    """One field's type. `child(name)` is the node of a struct's field, `elem` the
    node of a list's items or a map's values."""

    __slots__ = (
        "kind",
        "keys",
        "_schema",
        "_builtin",
        "_children",
        "_elem",
        "_props",
        "_key_defaults",
    )

    def __init__(
        self, kind: str, schema: dict[str, Any], builtin: bool, keys: tuple[str, ...] = ()
    ):
        self.kind = kind
        self.keys = keys
        self._schema = schema
        self._builtin = builtin
        self._children: dict[str, Node] = {}
        self._elem: Node | None = None
        props = schema.get("properties")
        self._props: dict[str, Any] = props if isinstance(props, dict) else {}
        self._key_defaults: dict[str, Any] | None = None

    @property
    def key_defaults(self) -> dict[str, Any]:
        """Defaults of a map list's key fields: the schema's `default`, or for built-in
        items the constant defaults kube-apiserver sets (`defaults.CONSTANT`)."""
        kd = self._key_defaults
        if kd is None:
            kd = {}
            items = self._schema.get("items")
            if isinstance(items, dict):
                ref = items.get("$ref")
                if isinstance(ref, str):
                    from gpuyard.apiserver import defaults  # defaults reads the store

                    name = ref.rsplit("/", 1)[-1]
                    consts = defaults.CONSTANT.get(name, {})
                    props = (schemas.definitions().defs.get(name) or {}).get("properties") or {}
                else:
                    consts = {}
                    props = items.get("properties") or {}
                for k in self.keys:
                    if k in consts:
                        kd[k] = consts[k]
                    elif isinstance(props.get(k), dict) and "default" in props[k]:
                        kd[k] = props[k]["default"]
            self._key_defaults = kd
        return kd

    def child(self, name: str) -> Node:
        c = self._children.get(name)
        if c is None:
            sub = self._props.get(name)
            if sub is None:
                addl = self._schema.get("additionalProperties")
                sub = addl if isinstance(addl, dict) else None
            c = node_for(sub, self._builtin) if isinstance(sub, dict) else FREE
            self._children[name] = c
        return c

    @property
    def elem(self) -> Node:
        if self._elem is None:
            items = self._schema.get("items")
            self._elem = node_for(items, self._builtin) if isinstance(items, dict) else FREE
        return self._elem


FREE = Node(STRUCT, {}, False)  # an object no schema describes: a map of fields
_ATOM = Node(ATOMIC, {}, False)

_BUILTIN: dict[str, Node] = {}
_CUSTOM: dict[int, tuple[dict[str, Any], Node]] = {}


def _definition(name: str) -> Node:
    n = _BUILTIN.get(name)
    if n is None:
        if name in _SCALAR_DEFS:
            n = _ATOM
        else:
            n = node_for(schemas.definitions().defs.get(name) or {}, True)
        _BUILTIN[name] = n
    return n


def _types(schema: dict[str, Any]) -> set[str]:
    t = schema.get("type")
    if t is None:
        return set()
    return {t} if isinstance(t, str) else set(t)


def node_for(schema: dict[str, Any], builtin: bool) -> Node:
    """The node of one schema (a definition, a property, items)."""
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return _definition(ref.rsplit("/", 1)[-1])
    if schema.get("x-kubernetes-int-or-string"):
        return _ATOM
    t = _types(schema)
    if "array" in t:
        lt = schema.get("x-kubernetes-list-type")
        if lt == "map":
            keys = schema.get("x-kubernetes-list-map-keys") or ()
            return Node(LIST_MAP, schema, builtin, tuple(str(k) for k in keys))
        if lt == "set":
            return Node(SET, schema, builtin)
        if lt is None and builtin:
            key = schema.get("x-kubernetes-patch-merge-key")
            if isinstance(key, str):
                return Node(LIST_MAP, schema, builtin, (key,))
            if "merge" in str(schema.get("x-kubernetes-patch-strategy") or "").split(","):
                return Node(SET, schema, builtin)
        return Node(ATOMIC, schema, builtin)
    if "object" in t or schema.get("properties") or schema.get("additionalProperties"):
        if schema.get("x-kubernetes-map-type") == "atomic":
            return Node(ATOMIC, schema, builtin)
        return Node(STRUCT, schema, builtin)
    if t:
        return _ATOM
    if schema.get("x-kubernetes-map-type") == "atomic":
        return _ATOM
    return FREE  # no type: objects granular, anything else one value


_FREE_ROOTS: dict[bool, Node] = {}


def _free_root(builtin: bool) -> Node:
    n = _FREE_ROOTS.get(builtin)
    if n is None:
        n = Node(STRUCT, {}, builtin)
        n._children["metadata"] = _definition(_OBJECT_META)
        _FREE_ROOTS[builtin] = n
    return n


def root(res: Resource) -> Node:
    """The node of a whole object of `res` (made once per kind or CRD schema)."""
    if res.custom:
        schema = res.schema
        if not isinstance(schema, dict):
            return _free_root(False)
        hit = _CUSTOM.get(id(schema))
        if hit is not None and hit[0] is schema:
            return hit[1]
        n = Node(STRUCT, schema, False)
        n._children["metadata"] = _definition(_OBJECT_META)
        if len(_CUSTOM) > 4096:
            _CUSTOM.clear()
        _CUSTOM[id(schema)] = (schema, n)
        return n
    name = schemas.definitions().by_gvk.get((res.group, res.version, res.kind))
    if name is None:
        return _free_root(True)
    return _definition(name)
