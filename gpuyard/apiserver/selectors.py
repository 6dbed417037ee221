"""Label and field selectors for list and watch, evaluated against stored entries.

Field values an object can be selected by are extracted once, when the object is
written (`fields_of`), so that filtering a list or a watch never re-parses objects.
Label selector parsing and matching come from `gpuyard.kube.objects`. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gpuyard.kube.objects import (
    Requirement,
    SelectorError,
    parse_label_selector,
    requirements_match,
)

__all__ = [
    "FieldRequirement",
    "Filter",
    "SelectorError",
    "fields_of",
    "parse_field_selector",
    "supported_fields",
]

# A field requirement: (field path, "=" or "!=", value)
FieldRequirement = tuple[str, str, str]

_POD_FIELDS = (
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
)
_EVENT_FIELDS = (
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
)

# (group, plural) -> selectable fields besides metadata.name and metadata.namespace
_FIELDS: dict[tuple[str, str], tuple[str, ...]] = {
    ("", "pods"): _POD_FIELDS,
    ("", "nodes"): ("spec.unschedulable",),
    ("", "events"): _EVENT_FIELDS,
    ("events.k8s.io", "events"): (
        "reason",
        "type",
        "regarding.kind",
        "regarding.name",
        "regarding.namespace",
        "regarding.uid",
    ),
    ("", "namespaces"): ("status.phase",),
    ("", "secrets"): ("type",),
}


def supported_fields(group: str, plural: str) -> tuple[str, ...]:
    return ("metadata.name", "metadata.namespace") + _FIELDS.get((group, plural), ())


def _value(obj: Mapping[str, Any], path: str) -> str:
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, Mapping):
            cur = None
            break
        cur = cur.get(part)
    if path == "source" and isinstance(cur, Mapping):  # events: source.component
        cur = cur.get("component")
    if cur is None:
        return "false" if path in ("spec.unschedulable", "spec.hostNetwork") else ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


def fields_of(group: str, plural: str, obj: Mapping[str, Any]) -> dict[str, str] | None:
    """The selectable field values of an object (None when the kind has only name/ns)."""
    paths = _FIELDS.get((group, plural))
    if not paths:
        return None
    return {p: _value(obj, p) for p in paths}


def parse_field_selector(text: str | None, group: str, plural: str) -> list[FieldRequirement]:
    """Parse "a=b,c!=d,e==f"; unknown fields raise SelectorError with Kubernetes' message."""
    if not text or not text.strip():
        return []
    allowed = supported_fields(group, plural)
    out: list[FieldRequirement] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "!=" in part:
            field, value = part.split("!=", 1)
            op = "!="
        elif "==" in part:
            field, value = part.split("==", 1)
            op = "="
        elif "=" in part:
            field, value = part.split("=", 1)
            op = "="
        else:
            raise SelectorError(f"invalid selector: '{text}'; can't understand '{part}'")
        field = field.strip()
        if field not in allowed:
            raise SelectorError(f'"{field}" is not a known field selector')
        out.append((field, op, value.strip()))
    return out


class Filter:
    """What a list or watch selects: namespace, label and field requirements."""

    __slots__ = ("namespace", "labels", "fields", "trivial", "cluster_scoped", "key")

    def __init__(
        self,
        namespace: str | None = None,
        labels: list[Requirement] | None = None,
        fields: list[FieldRequirement] | None = None,
    ) -> None:
        self.namespace = namespace or None
        self.labels = labels or []
        self.fields = fields or []
        self.trivial = self.namespace is None and not self.labels and not self.fields
        # Equal for filters that select the same (the store matches an event once per key).
        self.key = (self.namespace, tuple(self.labels), tuple(self.fields))
        self.cluster_scoped = False  # set by callers listing a cluster-scoped resource

    def eq(self, field: str) -> str | None:
        """The value an "=" requirement pins this field to, if any."""
        for f, op, v in self.fields:
            if f == field and op == "=":
                return v
        return None

    def index_key(self) -> tuple[str, str] | None:
        """(field, value) to index a watcher by: a pinned node name or object name."""
        for field in ("spec.nodeName", "metadata.name"):
            v = self.eq(field)
            if v is not None:
                return (field, v)
        return None

    @classmethod
    def parse(
        cls,
        namespace: str | None,
        label_selector: str | None,
        field_selector: str | None,
        group: str,
        plural: str,
    ) -> Filter:
        return cls(
            namespace,
            parse_label_selector(label_selector),
            parse_field_selector(field_selector, group, plural),
        )

    def matches(
        self,
        namespace: str,
        name: str,
        labels: Mapping[str, str] | None,
        fields: Mapping[str, str] | None,
    ) -> bool:
        if self.namespace is not None and namespace != self.namespace:
            return False
        for field, op, value in self.fields:
            if field == "metadata.name":
                actual = name
            elif field == "metadata.namespace":
                actual = namespace
            else:
                actual = (fields or {}).get(field, "")
            if (actual == value) != (op == "="):
                return False
        if self.labels and not requirements_match(self.labels, labels):
            return False
        return True
