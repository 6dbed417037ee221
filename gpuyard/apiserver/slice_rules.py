"""kube-apiserver's rules for a ResourceSlice (resource.k8s.io/v1) beyond its schema,
partitionable devices first: a slice publishes either `devices` or `sharedCounters`,
never both; at most 8 counter sets, named as DNS labels and unique in the slice, each
with 1 to 32 counters named as DNS labels; a device consumes from at most 2 counter
sets, one entry per set, each naming its set and 1 to 32 counters (and at most 2
compatibilityGroups, none twice); a slice with
devices that consume counters (or have taints) holds at most 64 devices, else 128,
named as DNS labels and unique; `partitionTypeAttribute` only on a slice whose devices
consume counters, and then every such device carries it as a string. Also where the
pool's nodes are (exactly one of nodeName, nodeSelector, allNodes,
perDeviceNodeSelection), the pool's generation and slice count, and that driver,
pool name and node name never change.

Whether a device's counter set exists is not checked here: sets may be published in
another slice of the pool, so the allocator treats a device drawing on a set no slice
offers as one it cannot allocate (gpuyard.scheduling.dra). Pure functions over plain
objects; causes are `{"reason", "message", "field"}`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import orjson

Cause = dict[str, str]
Obj = dict[str, Any]

MAX_DEVICES = 128
MAX_DEVICES_ADVANCED = 64  # when a device consumes counters or has taints
MAX_COUNTER_SETS = 8
MAX_COUNTERS = 32  # in a counter set, and in one consumption
MAX_CONSUMPTIONS = 2  # counter sets one device draws on
MAX_GROUPS = 2  # compatibilityGroups of one consumption

_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters "
    "or '-', and must start and end with an alphanumeric character (e.g. 'my-name', "
    "or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)


def _cause(field: str, message: str, reason: str = "FieldValueInvalid") -> Cause:
    return {"reason": reason, "message": message, "field": field}


def _repr(v: Any) -> str:
    return orjson.dumps(v).decode() if v is not None else '"null"'


def _label(name: Any, field: str) -> list[Cause]:
    if not isinstance(name, str):
        return []
    if not name:
        return [_cause(field, "Required value", "FieldValueRequired")]
    out = []
    if len(name) > 63:
        out.append(
            _cause(field, f"Invalid value: {_repr(name)}: must be no more than 63 characters")
        )
    if not _LABEL.match(name):
        out.append(_cause(field, f"Invalid value: {_repr(name)}: {_LABEL_MSG}"))
    return out


def _too_many(field: str, n: int, most: int) -> Cause:
    return _cause(field, f"Too many: {n}: must have at most {most} items", "FieldValueTooMany")


def _list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


def _dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _set(
    items: list[Any],
    most: int,
    key: Callable[[dict[str, Any]], Any],
    check: Callable[[dict[str, Any], str], list[Cause]],
    field: str,
) -> list[Cause]:
    """Each item checked, at most `most` of them, no two with the same key."""
    out = []
    if most >= 0 and len(items) > most:
        out.append(_too_many(field, len(items), most))
    seen: set[str] = set()
    for i, item in enumerate(items):
        item = _dict(item)
        out += check(item, f"{field}[{i}]")
        k = key(item)
        if isinstance(k, str) and k:
            if k in seen:
                out.append(
                    _cause(f"{field}[{i}]", f"Duplicate value: {_repr(k)}", "FieldValueDuplicate")
                )
            seen.add(k)
    return out


def _counters(v: Any, field: str) -> list[Cause]:
    counters = _dict(v)
    if not counters:
        return [_cause(field, "Required value", "FieldValueRequired")]
    out = []
    if len(counters) > MAX_COUNTERS:
        out.append(_too_many(field, len(counters), MAX_COUNTERS))
    for name in counters:
        out += _label(name, f"{field}[{name}]")
    return out


def _counter_set(cs: dict[str, Any], field: str) -> list[Cause]:
    out = _label(cs.get("name"), f"{field}.name")
    return out + _counters(cs.get("counters"), f"{field}.counters")


def _consumption(cc: dict[str, Any], field: str) -> list[Cause]:
    out = _label(cc.get("counterSet"), f"{field}.counterSet")
    out += _counters(cc.get("counters"), f"{field}.counters")
    groups = _list(cc.get("compatibilityGroups"))
    if len(groups) > MAX_GROUPS:
        out.append(_too_many(f"{field}.compatibilityGroups", len(groups), MAX_GROUPS))
    seen: set[Any] = set()
    for i, g in enumerate(groups):
        if g in seen:
            out.append(
                _cause(
                    f"{field}.compatibilityGroups[{i}]",
                    f"Duplicate value: {_repr(g)}",
                    "FieldValueDuplicate",
                )
            )
        seen.add(g)
    return out


def _device(d: dict[str, Any], field: str) -> list[Cause]:
    out = _label(d.get("name"), f"{field}.name")
    return out + _set(
        _list(d.get("consumesCounters")),
        MAX_CONSUMPTIONS,
        lambda c: c.get("counterSet"),
        _consumption,
        f"{field}.consumesCounters",
    )


def _attribute(attrs: dict[str, Any], name: str, driver: str) -> Any:
    if name in attrs:
        return attrs[name]
    bare = name[len(driver) + 1 :] if name.startswith(f"{driver}/") else ""
    return attrs.get(bare) if bare else None


def spec_causes(spec: Any) -> list[Cause]:
    spec = _dict(spec)
    out: list[Cause] = []
    where = []
    node = spec.get("nodeName")
    if node is not None:
        if node:
            where.append("`nodeName`")
        else:
            out.append(
                _cause(
                    "spec.nodeName",
                    'Invalid value: "": must be either unset or set to a non-empty string',
                )
            )
    if spec.get("nodeSelector") is not None:
        where.append("`nodeSelector`")
        terms = _list(_dict(spec["nodeSelector"]).get("nodeSelectorTerms"))
        if len(terms) != 1:
            out.append(
                _cause(
                    "spec.nodeSelector.nodeSelectorTerms",
                    f"Invalid value: {_repr(terms)}: must have exactly one node selector term",
                )
            )
    for f in ("allNodes", "perDeviceNodeSelection"):
        v = spec.get(f)
        if v is True:
            where.append(f"`{f}`")
        elif v is False:
            out.append(
                _cause(f"spec.{f}", "Invalid value: false: must be either unset or set to true")
            )
    one = "exactly one of `nodeName`, `nodeSelector`, `allNodes`, `perDeviceNodeSelection` is required"
    if not where:
        out.append(_cause("spec", f"Required value: {one}", "FieldValueRequired"))
    elif len(where) > 1:
        out.append(
            _cause(
                "spec",
                f'Invalid value: "{{{", ".join(where)}}}": {one}, but multiple fields are set',
            )
        )
    pool = _dict(spec.get("pool"))
    count = pool.get("resourceSliceCount")
    if isinstance(count, int) and count <= 0:
        out.append(
            _cause(
                "spec.pool.resourceSliceCount", f"Invalid value: {count}: must be greater than zero"
            )
        )
    gen = pool.get("generation")
    if isinstance(gen, int) and gen < 0:
        out.append(
            _cause(
                "spec.pool.generation",
                f"Invalid value: {gen}: must be greater than or equal to zero",
            )
        )
    if spec.get("sharedCounters") is not None and spec.get("devices") is not None:
        out.append(
            _cause(
                "spec", 'Invalid value: "": only one of `sharedCounters` or `devices` is allowed'
            )
        )
    devices = _list(spec.get("devices"))
    advanced = any(_dict(d).get("consumesCounters") or _dict(d).get("taints") for d in devices)
    out += _set(
        devices,
        MAX_DEVICES_ADVANCED if advanced else MAX_DEVICES,
        lambda d: d.get("name"),
        _device,
        "spec.devices",
    )
    out += _set(
        _list(spec.get("sharedCounters")),
        MAX_COUNTER_SETS,
        lambda c: c.get("name"),
        _counter_set,
        "spec.sharedCounters",
    )
    pta = spec.get("partitionTypeAttribute")
    if isinstance(pta, str):
        consuming = [
            (i, _dict(d)) for i, d in enumerate(devices) if _dict(d).get("consumesCounters")
        ]
        if not consuming:
            out.append(
                _cause(
                    "spec.partitionTypeAttribute",
                    f"Invalid value: {_repr(pta)}: may only be set on a slice which declares "
                    "devices that consume counters",
                )
            )
        else:
            driver = str(spec.get("driver") or "")
            for i, d in consuming:
                field = f"spec.devices[{i}].attributes[{pta}]"
                a = _attribute(_dict(d.get("attributes")), pta, driver)
                if a is None:
                    out.append(
                        _cause(
                            field,
                            "Required value: device consumes counters and "
                            "`partitionTypeAttribute` names this attribute, so it must be set",
                            "FieldValueRequired",
                        )
                    )
                elif not isinstance(_dict(a).get("string"), str):
                    out.append(
                        _cause(
                            field,
                            f"Invalid value: {_repr(a)}: must be a string value because "
                            "`partitionTypeAttribute` names this attribute",
                        )
                    )
    return out


def create(obj: Obj) -> list[Cause]:
    return spec_causes(obj.get("spec"))


def update(new: Obj, old: Obj) -> list[Cause]:
    out = spec_causes(new.get("spec"))
    ns, os_ = _dict(new.get("spec")), _dict(old.get("spec"))
    for field, a, b in (
        ("spec.pool.name", _dict(ns.get("pool")).get("name"), _dict(os_.get("pool")).get("name")),
        ("spec.driver", ns.get("driver"), os_.get("driver")),
        ("spec.nodeName", ns.get("nodeName"), os_.get("nodeName")),
    ):
        if a != b:
            out.append(_cause(field, f"Invalid value: {_repr(a)}: field is immutable"))
    return out
