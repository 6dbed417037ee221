"""Request bodies decoded as kube-apiserver decodes them, by the official API definitions.

Built-in kinds are checked against the Kubernetes 1.37 API definitions as data: the
JSON-schema form of the official OpenAPI document that the `kubernetes-validate`
package ships (every type with its group/version/kind, required fields, formats and
`x-kubernetes-*` extensions). That set was chosen over fetching the published OpenAPI v3
documents because it installs from the package registry like any dependency, is pinned
to exactly 1.37, and holds all types in one file of shared definitions. Each definition is
compiled once into a checker (closures over the definition's fields, no schema is read
per request).

Decoding a body does what kube-apiserver's JSON decoder does to it:

- a value of the wrong JSON type, an integer out of its range, a malformed quantity,
  time or base64 string cannot be decoded: 400 BadRequest on create and update
  (`Pod in version "v1" cannot be handled as a Pod: json: cannot unmarshal ...`), 422
  naming `patch` on a patch;
- fields the type does not have are unknown, and so, for custom resources, are fields
  their CRD's structural schema does not declare (unless it preserves unknown fields).
  By the request's `fieldValidation`: `Strict` refuses them (400 `strict decoding
  error: unknown field "spec.x"`), `Warn` (the default) drops them and says so in a
  `Warning` header, `Ignore` drops them;
- required fields (strings, objects and lists the definition marks required, outside
  status) that are missing: 422 Invalid, as validation reports them;
- a custom object gets the `default`s of its CRD's structural schema for the fields it
  leaves out.
"""

from __future__ import annotations

import base64
import binascii
import contextvars
import copy
import re
from collections.abc import Callable, Mapping
from datetime import datetime
from importlib import resources as importlib_resources
from typing import Any

import orjson

from gpuyard.apiserver.errors import APIError, bad_request, invalid
from gpuyard.apiserver.resources import Resource
from gpuyard.apiserver.seen import SeenClean
from gpuyard.kube.objects import QuantityError, parse_quantity

KUBERNETES_VERSION = "1.37"
_DATA = ("kubernetes-json-schema", "v1.37.0-local", "_definitions.json")
DIRECTIVES = ("Ignore", "Warn", "Strict")

# The request's fieldValidation directive, set by the dispatcher for one request.
FIELD_VALIDATION: contextvars.ContextVar[str] = contextvars.ContextVar(
    "gpuyard_apiserver_field_validation", default="Warn"
)

_QUANTITY_MESSAGE = (
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
)
_INDEX = re.compile(r"\[[^\]]*\]")
_INT_RANGE = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}


def directive(query: Mapping[str, str], kind: str = "CreateOptions") -> str:
    """The fieldValidation directive of a write request (422 for an unknown one)."""
    v = query.get("fieldValidation")
    if v is None or v == "":
        return "Warn"
    v = str(v)
    if v not in DIRECTIVES:
        raise invalid(
            kind,
            "",
            [
                {
                    "reason": "FieldValueNotSupported",
                    "field": "fieldValidation",
                    "message": f'Unsupported value: "{v}": supported values: "", '
                    '"Ignore", "Strict", "Warn"',
                }
            ],
            "meta.k8s.io",
        )
    return v


_ABSENT = object()


class _Ctx:
    """What one decode found: the first type error, unknown fields, missing fields."""

    __slots__ = ("prune", "defaults", "error", "unknown", "missing", "unsupported", "same")

    def __init__(
        self, prune: bool, same: dict[str, Any] | None = None, defaults: bool = True
    ) -> None:
        self.prune = prune
        self.defaults = defaults  # a custom object's structural defaults
        # the object a patch was applied to: its top-level members that the patched
        # object still holds (the very same values) are not checked again
        self.same = same
        self.error: str | None = None
        self.unknown: list[str] = []
        self.missing: list[str] = []
        self.unsupported: list[dict[str, str]] = []

    def bad(self, value: Any, path: str, owner: str, gotype: str, overflow: bool = False) -> None:
        if self.error is not None:
            return
        jt = _json_type(value)
        if overflow:
            jt = f"number {value}"
        gopath = _INDEX.sub("", path)
        if owner and gopath:
            self.error = (
                f"json: cannot unmarshal {jt} into Go struct field {owner}.{gopath} "
                f"of type {gotype}"
            )
        else:
            self.error = f"json: cannot unmarshal {jt} into Go value of type {gotype}"

    def fail(self, message: str) -> None:
        if self.error is None:
            self.error = message


def _json_type(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, str):
        return "string"
    if isinstance(v, int | float):
        return "number"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return "null"


Check = Callable[[Any, str, str, _Ctx], None]


class _AnyType:
    """Marks a checker that accepts every value (see `_FAST`)."""


# Checkers that accept every value of one Python type and have nothing else to check
# (str for a plain string field, bool for a boolean): a struct, map or list whose
# member is of that type skips the call and the member's path (made for messages
# only). `_AnyType` for checkers that accept anything. Filled as checkers are compiled.
_FAST: dict[Check, type] = {}


def _any(v: Any, path: str, owner: str, ctx: _Ctx) -> None:
    return None


_FAST[_any] = _AnyType


def _time(v: Any, path: str, owner: str, ctx: _Ctx) -> None:
    if v is None:
        return
    if not isinstance(v, str):
        ctx.bad(v, path, owner, "v1.Time")
        return
    try:
        datetime.fromisoformat(v.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        ctx.fail(f'parsing time "{v}" as "2006-01-02T15:04:05Z07:00": cannot parse "{v}"')
        return
    if "T" not in v and "t" not in v:
        ctx.fail(f'parsing time "{v}" as "2006-01-02T15:04:05Z07:00": cannot parse "{v}"')


# Quantity strings seen valid (a few hundred distinct ones in a cluster: "8", "10",
# "1843Gi"), so that a valid one costs one set lookup; bounded.
_GOOD_QUANTITIES: set[str] = set()
_GOOD_QUANTITIES_MAX = 10_000


def _quantity(v: Any, path: str, owner: str, ctx: _Ctx) -> None:
    if v is None or (type(v) is str and v in _GOOD_QUANTITIES):
        return
    if isinstance(v, bool) or not isinstance(v, str | int | float):
        ctx.fail(_QUANTITY_MESSAGE)
        return
    try:
        parse_quantity(v)
    except QuantityError:
        ctx.fail(_QUANTITY_MESSAGE)
        return
    if type(v) is str and len(_GOOD_QUANTITIES) < _GOOD_QUANTITIES_MAX:
        _GOOD_QUANTITIES.add(v)


def _all_good(values: Any, fast: type | None, item: Check) -> bool:
    """Whether every member passes its checker for sure without calling it."""
    if fast is _AnyType:
        return True
    if fast is not None:
        for x in values:
            if type(x) is not fast:
                return False
        return True
    if item is _quantity:
        good = _GOOD_QUANTITIES
        for x in values:
            if type(x) is not str or x not in good:
                return False
        return True
    return False


def _clean_once(inner: Check) -> Check:
    """`inner` (a kind's spec checker), skipped for a value it has found clean before at
    the same path: no type error, unknown, missing or unsupported field, so nothing
    pruned either. A check is a function of the value and its path (its only other
    effect is `_GOOD_QUANTITIES`), so an equal encoding passes again (seen.SeenClean)."""
    clean = SeenClean()

    def check(v: Any, path: str, owner: str, ctx: _Ctx) -> None:
        key = SeenClean.key(path, v) if ctx.error is None else None
        if key in clean:
            return
        counts = (len(ctx.unknown), len(ctx.missing), len(ctx.unsupported))
        inner(v, path, owner, ctx)
        if ctx.error is None and counts == (
            len(ctx.unknown),
            len(ctx.missing),
            len(ctx.unsupported),
        ):
            clean.add(key)

    return check


def _int_or_string(v: Any, path: str, owner: str, ctx: _Ctx) -> None:
    if v is None or isinstance(v, str):
        return
    if isinstance(v, bool) or not isinstance(v, int):
        ctx.fail(f"json: cannot unmarshal {_json_type(v)} into Go value of type int32")
    elif not -(2**31) <= v < 2**31:
        ctx.fail(f"json: cannot unmarshal number {v} into Go value of type int32")


_SPECIAL: dict[str, Check] = {
    "io.k8s.apimachinery.pkg.apis.meta.v1.Time": _time,
    "io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime": _time,
    "io.k8s.apimachinery.pkg.api.resource.Quantity": _quantity,
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString": _int_or_string,
}


def _types(schema: dict[str, Any]) -> set[str]:
    t = schema.get("type")
    if t is None:
        return set()
    return {t} if isinstance(t, str) else set(t)


def _short(name: str) -> str:
    parts = name.split(".")
    return f"{parts[-2]}.{parts[-1]}" if len(parts) >= 2 else name


class Definitions:
    """The compiled API definitions: one checker per type, made once."""

    def __init__(self, defs: dict[str, dict[str, Any]]) -> None:
        self.defs = defs
        self._compiled: dict[str, Check] = {}
        self.by_gvk: dict[tuple[str, str, str], str] = {}
        for name, d in defs.items():
            for gvk in d.get("x-kubernetes-group-version-kind") or ():
                self.by_gvk.setdefault((gvk["group"], gvk["version"], gvk["kind"]), name)

    @classmethod
    def load(cls) -> Definitions:
        path = importlib_resources.files("kubernetes_validate")
        for p in _DATA:
            path = path / p
        return cls(orjson.loads(path.read_bytes())["$defs"])

    # -- compiling ----------------------------------------------------------------------

    def gotype(self, schema: dict[str, Any]) -> str:
        ref = schema.get("$ref")
        if ref:
            name = ref.rsplit("/", 1)[-1]
            d = self.defs.get(name, {})
            if name in _SPECIAL or "properties" in d:
                return _short(name)
            return self.gotype(d) if d else "interface {}"
        t = _types(schema) - {"null"}
        if "string" in t:
            return "[]uint8" if schema.get("format") == "byte" else "string"
        if "integer" in t:
            return str(schema.get("format") or "int")
        if "number" in t:
            return "float64"
        if "boolean" in t:
            return "bool"
        if "array" in t:
            return "[]" + self.gotype(schema.get("items") or {})
        if "object" in t:
            addl = schema.get("additionalProperties")
            if isinstance(addl, dict):
                return "map[string]" + self.gotype(addl)
            return "map[string]interface {}"
        return "interface {}"

    def checker(self, name: str) -> Check:
        """The checker of definition `name` (compiled on first use, then shared)."""
        c = self._compiled.get(name)
        if c is not None:
            return c
        special = _SPECIAL.get(name)
        if special is not None:
            self._compiled[name] = special
            return special
        box: list[Check] = []

        def late(v: Any, path: str, owner: str, ctx: _Ctx) -> None:
            box[0](v, path, owner, ctx)

        self._compiled[name] = late  # recursive types meet the placeholder
        compiled = self._node(self.defs.get(name) or {}, _short(name).split(".")[-1], name)
        box.append(compiled)
        self._compiled[name] = compiled
        return compiled

    def compile_all(self) -> int:
        for name in self.defs:
            self.checker(name)
        return len(self._compiled)

    def _node(self, schema: dict[str, Any], struct: str, defname: str = "") -> Check:
        ref = schema.get("$ref")
        if ref:
            return self.checker(ref.rsplit("/", 1)[-1])
        t = _types(schema)
        nullable = "null" in t or not t
        t.discard("null")
        gotype = self.gotype(schema)
        if not t:
            return _any
        if "object" in t:
            props = schema.get("properties")
            addl = schema.get("additionalProperties")
            if props:
                return self._struct(schema, struct, nullable, gotype, defname)
            if isinstance(addl, dict):
                return self._map(self._node(addl, struct), nullable, gotype)
            return self._free_object(nullable, gotype)
        if "array" in t:
            return self._array(self._node(schema.get("items") or {}, struct), nullable, gotype)
        if "string" in t:
            if schema.get("format") == "byte":
                return self._bytes(nullable)
            if schema.get("format") == "date-time":
                return _time
            return self._scalar(str, nullable, gotype)
        if "integer" in t:
            lo, hi = _INT_RANGE.get(str(schema.get("format")), _INT_RANGE["int64"])
            return self._integer(lo, hi, nullable, gotype)
        if "number" in t:
            return self._number(nullable)
        if "boolean" in t:
            return self._scalar(bool, nullable, gotype)
        return _any

    @staticmethod
    def _scalar(py: type, nullable: bool, gotype: str) -> Check:
        def check(v: Any, path: str, owner: str, ctx: _Ctx) -> None:
            if type(v) is not py and not (v is None and nullable):
                ctx.bad(v, path, owner, gotype)

        _FAST[check] = py
        return check

    @staticmethod
    def _integer(lo: int, hi: int, nullable: bool, gotype: str) -> Check:
        def check(v: Any, path: str, owner: str, ctx: _Ctx) -> None:
            if type(v) is int:
                if not lo <= v <= hi:
                    ctx.bad(v, path, owner, gotype, overflow=True)
            elif not (v is None and nullable):
                ctx.bad(v, path, owner, gotype)

        return check

    @staticmethod
    def _number(nullable: bool) -> Check:
        def check(v: Any, path: str, owner: str, ctx: _Ctx) -> None:
            if not (type(v) is float or type(v) is int or (v is None and nullable)):
                ctx.bad(v, path, owner, "float64")

        return check

    @staticmethod
    def _bytes(nullable: bool) -> Check:
        def check(v: Any, path: str, owner: str, ctx: _Ctx) -> None:
            if v is None and nullable:
                return
            if type(v) is not str:
                ctx.bad(v, path, owner, "[]uint8")
                return
            try:
                base64.b64decode(v, validate=True)
            except (binascii.Error, ValueError):
                ctx.fail(f"illegal base64 data at input byte {_base64_offset(v)}")

        return check

    @staticmethod
    def _array(item: Check, nullable: bool, gotype: str) -> Check:
        fast = _FAST.get(item)
        simple = fast is not None or item is _quantity

        def check(v: Any, path: str, owner: str, ctx: _Ctx) -> None:
            if type(v) is list:
                if simple and _all_good(v, fast, item):
                    return
                for i, x in enumerate(v):
                    item(x, f"{path}[{i}]", owner, ctx)
            elif not (v is None and nullable):
                ctx.bad(v, path, owner, gotype)

        return check

    @staticmethod
    def _map(value: Check, nullable: bool, gotype: str) -> Check:
        fast = _FAST.get(value)
        simple = fast is not None or value is _quantity

        def check(v: Any, path: str, owner: str, ctx: _Ctx) -> None:
            if type(v) is dict:
                if simple and _all_good(v.values(), fast, value):
                    return
                for k, x in v.items():
                    value(x, f"{path}[{k}]", owner, ctx)
            elif not (v is None and nullable):
                ctx.bad(v, path, owner, gotype)

        return check

    @staticmethod
    def _free_object(nullable: bool, gotype: str) -> Check:
        def check(v: Any, path: str, owner: str, ctx: _Ctx) -> None:
            if type(v) is not dict and not (v is None and nullable):
                ctx.bad(v, path, owner, gotype)

        return check

    def _struct(
        self, schema: dict[str, Any], struct: str, nullable: bool, gotype: str, defname: str = ""
    ) -> Check:
        props: dict[str, Check] = {}
        enums = ENUMS.get(defname, {})
        for k, sub in (schema.get("properties") or {}).items():
            props[k] = self._node(sub, struct)
            if k in enums:
                props[k] = _enum(props[k], enums[k])
        if {"apiVersion", "kind", "metadata", "spec"} <= props.keys():
            props["spec"] = _clean_once(props["spec"])  # a kind's objects: see _clean_once
        required = tuple(
            k
            for k in schema.get("required") or ()
            if k in (schema.get("properties") or {}) and self._requirable(schema["properties"][k])
        )
        get = props.get
        # Members whose value of the right type needs no call (see _FAST).
        fast_get = {k: _FAST[c] for k, c in props.items() if c in _FAST}.get
        any_type = _AnyType
        kind_level = {"apiVersion", "kind", "metadata"} <= props.keys()

        def check(v: Any, path: str, owner: str, ctx: _Ctx) -> None:
            if type(v) is not dict:
                if not (v is None and nullable):
                    ctx.bad(v, path, owner, gotype)
                return
            unknown = None
            same = ctx.same if kind_level and not path else None
            for k, x in v.items():
                t = fast_get(k)
                if t is not None and (type(x) is t or t is any_type):
                    continue
                if same is not None and same.get(k, _ABSENT) is x:
                    continue  # as stored, and checked when it was stored
                c = get(k)
                if c is None:
                    ctx.unknown.append(f"{path}.{k}" if path else k)
                    if unknown is None:
                        unknown = [k]
                    else:
                        unknown.append(k)
                else:
                    c(x, f"{path}.{k}" if path else k, struct, ctx)
            if unknown is not None and ctx.prune:
                for k in unknown:
                    del v[k]
            if required and path != "status" and not path.startswith("status."):
                for k in required:
                    if k not in v:
                        ctx.missing.append(f"{path}.{k}" if path else k)

        return check

    def _requirable(self, schema: dict[str, Any]) -> bool:
        """Required fields whose zero value validation refuses: strings, lists, objects
        (a missing integer or boolean decodes to 0 or false, which may be valid)."""
        ref = schema.get("$ref")
        if ref:
            name = ref.rsplit("/", 1)[-1]
            if name in _SPECIAL:
                return name != "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
            return True
        t = _types(schema)
        return bool(t & {"string", "array", "object"})


_CORE = "io.k8s.api.core.v1."
_PULL = ("Always", "IfNotPresent", "Never")
_PROTOCOLS = ("SCTP", "TCP", "UDP")
_CONTAINER = {
    "imagePullPolicy": _PULL,
    "terminationMessagePolicy": ("FallbackToLogsOnError", "File"),
}
# Closed sets of string values that kube-apiserver's validation enforces and the
# definitions do not list (definition -> field -> values); an empty string is left to
# defaulting, as Kubernetes does.
ENUMS: dict[str, dict[str, tuple[str, ...]]] = {
    _CORE + "PodSpec": {
        "restartPolicy": ("Always", "Never", "OnFailure"),
        "dnsPolicy": ("ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"),
        "preemptionPolicy": ("Never", "PreemptLowerPriority"),
    },
    _CORE + "Container": _CONTAINER,
    _CORE + "EphemeralContainer": _CONTAINER,
    _CORE + "ContainerPort": {"protocol": _PROTOCOLS},
    _CORE + "ServicePort": {"protocol": _PROTOCOLS},
    _CORE + "ServiceSpec": {
        "type": ("ClusterIP", "ExternalName", "LoadBalancer", "NodePort"),
        "sessionAffinity": ("ClientIP", "None"),
        "externalTrafficPolicy": ("Cluster", "Local"),
        "internalTrafficPolicy": ("Cluster", "Local"),
    },
    _CORE + "Toleration": {
        "operator": ("Equal", "Exists"),
        "effect": ("NoExecute", "NoSchedule", "PreferNoSchedule"),
    },
    _CORE + "Taint": {"effect": ("NoExecute", "NoSchedule", "PreferNoSchedule")},
    _CORE + "NodeSelectorRequirement": {
        "operator": ("DoesNotExist", "Exists", "Gt", "In", "Lt", "NotIn")
    },
    _CORE + "TopologySpreadConstraint": {"whenUnsatisfiable": ("DoNotSchedule", "ScheduleAnyway")},
    "io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelectorRequirement": {
        "operator": ("DoesNotExist", "Exists", "In", "NotIn")
    },
    "io.k8s.api.apps.v1.DeploymentStrategy": {"type": ("Recreate", "RollingUpdate")},
    "io.k8s.api.apps.v1.DaemonSetUpdateStrategy": {"type": ("OnDelete", "RollingUpdate")},
    "io.k8s.api.scheduling.v1.PriorityClass": {
        "preemptionPolicy": ("Never", "PreemptLowerPriority")
    },
    "io.k8s.api.policy.v1.PodDisruptionBudgetSpec": {
        "unhealthyPodEvictionPolicy": ("AlwaysAllow", "IfHealthyBudget")
    },
}


def _enum(inner: Check, values: tuple[str, ...]) -> Check:
    allowed = frozenset(values)
    listed = ", ".join(f'"{v}"' for v in sorted(values))

    def check(v: Any, path: str, owner: str, ctx: _Ctx) -> None:
        inner(v, path, owner, ctx)
        if type(v) is str and v and v not in allowed:
            ctx.unsupported.append(
                {
                    "reason": "FieldValueNotSupported",
                    "message": f'Unsupported value: "{v}": supported values: {listed}',
                    "field": path,
                }
            )

    return check


def _base64_offset(s: str) -> int:
    ok = re.match(r"[A-Za-z0-9+/]*", s)
    return ok.end() if ok else 0


_DEFS: Definitions | None = None


def definitions() -> Definitions:
    """The Kubernetes 1.37 definitions, loaded once per process."""
    global _DEFS
    if _DEFS is None:
        _DEFS = Definitions.load()
    return _DEFS


def checker_for(res: Resource) -> Check | None:
    """The checker of a built-in resource's kind, or None for kinds outside the
    definitions (custom resources, and kinds Kubernetes does not define)."""
    if res.custom:
        return None
    d = definitions()
    name = d.by_gvk.get((res.group, res.version, res.kind))
    return d.checker(name) if name else None


# ---------------------------------------------------------------- custom resources


def _prune_custom(schema: dict[str, Any], v: Any, path: str, ctx: _Ctx, top: bool = False) -> None:
    """Unknown fields of a custom object against its CRD's structural schema."""
    if isinstance(v, dict):
        if schema.get("x-kubernetes-preserve-unknown-fields") and not schema.get("properties"):
            if schema.get("x-kubernetes-embedded-resource"):
                _prune_embedded_meta(v, path, ctx)
            return
        props = schema.get("properties") or {}
        addl = schema.get("additionalProperties")
        preserve = bool(schema.get("x-kubernetes-preserve-unknown-fields"))
        embedded = bool(schema.get("x-kubernetes-embedded-resource"))
        unknown = []
        for k, x in v.items():
            f = f"{path}.{k}" if path else k
            if (top or embedded) and k in ("apiVersion", "kind"):
                continue
            if (top or embedded) and k == "metadata":
                if top:
                    _prune_meta(x, "metadata", ctx)
                continue
            sub = props.get(k)
            if sub is not None:
                _prune_custom(sub, x, f, ctx)
            elif isinstance(addl, dict):
                _prune_custom(addl, x, f, ctx)
            elif addl is True or preserve:
                continue
            else:
                ctx.unknown.append(f)
                unknown.append(k)
        if ctx.prune:
            for k in unknown:
                del v[k]
        for k, sub in props.items():
            if ctx.defaults and k not in v and isinstance(sub, dict) and "default" in sub:
                # Structural defaults, themselves pruned and defaulted.
                v[k] = copy.deepcopy(sub["default"])
                _prune_custom(sub, v[k], f"{path}.{k}" if path else k, ctx)
    elif isinstance(v, list):
        items = schema.get("items")
        if isinstance(items, dict):
            for i, x in enumerate(v):
                _prune_custom(items, x, f"{path}[{i}]", ctx)


_OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"


def _prune_meta(md: Any, path: str, ctx: _Ctx) -> None:
    definitions().checker(_OBJECT_META)(md, path, "", ctx)


def _prune_embedded_meta(v: dict[str, Any], path: str, ctx: _Ctx) -> None:
    if "metadata" in v:
        _prune_meta(v["metadata"], f"{path}.metadata" if path else "metadata", ctx)


def prune_and_default(res: Resource, obj: dict[str, Any]) -> None:
    """Prune and default a custom object (in place) by its CRD's schema, as
    kube-apiserver does to what it reads from storage and to a mutating webhook's
    answer: unknown fields dropped whatever the request's fieldValidation, no error
    raised (what is stored was accepted once)."""
    if not res.custom:
        return
    ctx = _Ctx(prune=True)
    if res.schema:
        _prune_custom(res.schema, obj, "", ctx, top=True)
    else:
        _prune_meta(obj.get("metadata"), "metadata", ctx)


def prune_by(schema: Any, obj: dict[str, Any], defaults: bool) -> None:
    """Prune a custom object (in place) by one version's schema of its CRD, with that
    schema's defaults or without (an object converted to another version is pruned
    by it, not defaulted: crdversions.py)."""
    ctx = _Ctx(prune=True, defaults=defaults)
    if isinstance(schema, dict) and schema:
        _prune_custom(schema, obj, "", ctx, top=True)
    else:
        _prune_meta(obj.get("metadata"), "metadata", ctx)


# ---------------------------------------------------------------- the hook


def decode(
    res: Resource,
    obj: dict[str, Any],
    origin: str,
    field_validation: str,
    duplicates: list[str] | None = None,
    patched: dict[str, Any] | None = None,
) -> list[str]:
    """Check and prune `obj` (in place) as kube-apiserver decodes a body of `res`.

    origin is "create", "update" or "patch" (which decides how a decoding error is
    reported); field_validation is "Strict", "Warn" or "Ignore"; duplicates are the
    paths of fields the body gave twice (found by the parser, reported like unknown
    fields). `patched`: for a patch, the stored object (as read, unchanged) that it was
    applied to; a top-level member of `obj` that is the very same value as its member
    (a patch copies only along the paths it changes: `patch.merge_patch`) was checked
    when it was stored, and is not checked again, so a status patch checks the status
    and not the spec (as kube-apiserver, whose stored object decodes leniently, reports
    nothing for a part the patch leaves alone). Raises APIError for a body
    kube-apiserver would refuse; returns the warnings to send (Warn only)."""
    strict = field_validation == "Strict"
    ctx = _Ctx(prune=not strict, same=patched)
    if res.custom:
        if res.schema:
            _prune_custom(res.schema, obj, "", ctx, top=True)
        else:
            _prune_meta(obj.get("metadata"), "metadata", ctx)
    else:
        check = checker_for(res)
        if check is None:
            return []
        check(obj, "", "", ctx)
    if ctx.error is not None:
        _refuse_undecodable(res, obj, origin, ctx.error)
    warnings: list[str] = []
    if ctx.unknown or duplicates:
        notes = [f'unknown field "{f}"' for f in ctx.unknown]
        notes += [f'duplicate field "{f}"' for f in duplicates or ()]
        if strict:
            msg = "strict decoding error: " + ", ".join(notes)
            if origin != "patch":
                msg = (
                    f'{res.kind} in version "{res.version}" cannot be handled as a '
                    f"{res.kind}: {msg}"
                )
            raise bad_request(msg)
        if field_validation == "Warn":
            warnings = notes
    if ctx.missing or ctx.unsupported:
        md = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
        name = (md or {}).get("name") or (md or {}).get("generateName") or ""
        raise invalid(
            res.kind,
            name,
            [
                {"reason": "FieldValueRequired", "message": "Required value", "field": f}
                for f in ctx.missing
            ]
            + ctx.unsupported,
            res.group,
        )
    return warnings


def _refuse_undecodable(res: Resource, obj: dict[str, Any], origin: str, error: str) -> None:
    if origin == "patch":
        raise APIError(
            422,
            "Invalid",
            f' "" is invalid: patch: Invalid value: "{orjson.dumps(obj).decode()}": {error}',
            {
                "causes": [
                    {
                        "reason": "FieldValueInvalid",
                        "message": f'Invalid value: "{orjson.dumps(obj).decode()}": {error}',
                        "field": "patch",
                    }
                ]
            },
        )
    raise bad_request(
        f'{res.kind} in version "{res.version}" cannot be handled as a {res.kind}: {error}'
    )


def warning_header(warnings: list[str]) -> str:
    """A `Warning` header value: one `299 - "text"` entry per warning, quoted as HTTP
    quoted-strings are (kubectl prints each as `Warning: text`)."""
    return ", ".join('299 - "' + _header_text(w) + '"' for w in warnings)


def _header_text(text: str) -> str:
    """Text inside a header's quoted-string: backslash and quote escaped, and anything
    but printable ASCII (which a header may not carry) written as an escape."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif " " <= ch <= "~":
            out.append(ch)
        elif ord(ch) <= 0xFFFF:
            out.append(f"\\\\u{ord(ch):04x}")
        else:
            out.append(f"\\\\U{ord(ch):08x}")
    return "".join(out)


# ---------------------------------------------------------------- strategic merge metadata

UNKNOWN_FIELD = object()
_MERGE_KEYS: dict[tuple[str, tuple[str, ...]], Any] = {}


def definition_of(res: Resource) -> str | None:
    """The definition name of a built-in resource's kind (None for custom kinds)."""
    if res.custom:
        return None
    return definitions().by_gvk.get((res.group, res.version, res.kind))


def patch_merge_key(defname: str, fields: tuple[str, ...]) -> Any:
    """The strategic-merge key of the list at `fields` (field names from the top of an
    object of definition `defname`) by its x-kubernetes-patch-merge-key and -strategy;
    None for a list that is replaced; UNKNOWN_FIELD where the definitions do not say."""
    key = (defname, fields)
    hit = _MERGE_KEYS.get(key, _MERGE_KEYS)
    if hit is not _MERGE_KEYS:
        return hit
    defs = definitions().defs
    schema: dict[str, Any] | None = defs.get(defname)
    found: Any = UNKNOWN_FIELD
    for i, f in enumerate(fields):
        prop = ((schema or {}).get("properties") or {}).get(f)
        if not isinstance(prop, dict):
            break
        if i == len(fields) - 1:
            strategy = str(prop.get("x-kubernetes-patch-strategy") or "").split(",")
            mk = prop.get("x-kubernetes-patch-merge-key")
            found = mk if mk and "merge" in strategy else None
            break
        ref = prop.get("$ref") or (prop.get("items") or {}).get("$ref")
        schema = defs.get(ref.rsplit("/", 1)[-1]) if ref else None
    _MERGE_KEYS[key] = found
    return found
