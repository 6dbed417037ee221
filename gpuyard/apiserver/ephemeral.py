"""Ephemeral containers: the `pods/ephemeralcontainers` subresource (what `kubectl debug`
writes) and the rules kube-apiserver keeps for them.

A pod gets ephemeral containers only through the subresource: they may not be set on
create, a pod template may not hold any, and an update of the pod itself keeps the
stored list (its changes are dropped, as kube's pod strategy drops them). An update of
the subresource changes nothing but `spec.ephemeralContainers` (metadata, the rest of
the spec and the status are the stored pod's); it may add containers but neither
remove nor change one. Each must have a name unique among all the pod's containers (a
DNS-1123 label) and an image, may name a `targetContainerName` among the pod's
containers and init containers, and may not set what an ephemeral container cannot
have (ports, probes, lifecycle, resources, resizePolicy, restartPolicy).
"""

from __future__ import annotations

import re
from typing import Any

SUBRESOURCE = "ephemeralcontainers"
FIELD = "ephemeralContainers"
Cause = dict[str, str]
Obj = dict[str, Any]

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_FORBIDDEN = (
    "lifecycle",
    "livenessProbe",
    "ports",
    "readinessProbe",
    "resizePolicy",
    "resources",
    "restartPolicy",
    "startupProbe",
)


def _cause(field: str, message: str, reason: str = "FieldValueInvalid") -> Cause:
    return {"reason": reason, "message": message, "field": field}


def _q(v: Any) -> str:
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def create_causes(spec: Any, field: str, template: bool = False) -> list[Cause]:
    """A pod (or, with template, a pod template) may not be made with any."""
    if not isinstance(spec, dict) or not spec.get(FIELD):
        return []
    if template:
        return [
            _cause(
                f"{field}.{FIELD}",
                "Forbidden: ephemeral containers not allowed in pod template",
                "FieldValueForbidden",
            )
        ]
    return [_cause(f"{field}.{FIELD}", "Forbidden: cannot be set on create", "FieldValueForbidden")]


def keep_stored(new: Obj, old: Obj) -> None:
    """An update of the pod itself keeps the stored ephemeral containers."""
    ns, os_ = new.get("spec"), old.get("spec")
    if not isinstance(ns, dict) or not isinstance(os_, dict):
        return
    if FIELD in os_:
        ns[FIELD] = os_[FIELD]
    else:
        ns.pop(FIELD, None)


def take_update(sent: Obj, old: Obj) -> Obj:
    """The pod an update of the subresource stores: the stored pod with the sent
    ephemeral containers (the sent resourceVersion is checked by the caller)."""
    new = dict(old)
    spec = dict(old.get("spec") or {})
    sent_spec = sent.get("spec") if isinstance(sent.get("spec"), dict) else {}
    listed = (sent_spec or {}).get(FIELD)
    if listed:
        spec[FIELD] = listed
    else:
        spec.pop(FIELD, None)
    new["spec"] = spec
    new["metadata"] = dict(old.get("metadata") or {})
    return new


def update_causes(new: Obj, old: Obj) -> list[Cause]:
    """The subresource's update rules: additions only, each container valid."""
    spec = new.get("spec") if isinstance(new.get("spec"), dict) else {}
    listed = (spec or {}).get(FIELD) or []
    was = ((old.get("spec") or {}).get(FIELD) or []) if isinstance(old.get("spec"), dict) else []
    out: list[Cause] = []
    if not isinstance(listed, list):
        return [_cause(f"spec.{FIELD}", "Invalid value: must be a list")]
    by_name = {c.get("name"): (i, c) for i, c in enumerate(listed) if isinstance(c, dict)}
    for c in was:
        if not isinstance(c, dict):
            continue
        name = c.get("name")
        got = by_name.get(name)
        if got is None:
            out.append(
                _cause(
                    f"spec.{FIELD}",
                    f"Forbidden: existing ephemeral containers {_q(name)} may not be removed",
                    "FieldValueForbidden",
                )
            )
        elif got[1] != c:
            out.append(
                _cause(
                    f"spec.{FIELD}[{got[0]}]",
                    f"Forbidden: existing ephemeral containers {_q(name)} may not be changed",
                    "FieldValueForbidden",
                )
            )
    return out + container_causes(spec or {}, "spec")


def container_causes(spec: Obj, field: str) -> list[Cause]:
    """Each ephemeral container of a pod spec: name, image, target and forbidden fields."""
    listed = spec.get(FIELD) or []
    if not isinstance(listed, list):
        return []
    names: set[str] = set()
    targets: set[str] = set()
    for kind in ("containers", "initContainers"):
        for c in spec.get(kind) or []:
            if isinstance(c, dict) and isinstance(c.get("name"), str):
                names.add(c["name"])
                targets.add(c["name"])
    out: list[Cause] = []
    for i, c in enumerate(listed):
        f = f"{field}.{FIELD}[{i}]"
        if not isinstance(c, dict):
            out.append(_cause(f, "Invalid value: must be an object"))
            continue
        name = c.get("name")
        if not isinstance(name, str) or not name:
            out.append(_cause(f"{f}.name", "Required value", "FieldValueRequired"))
        elif len(name) > 63 or not _DNS1123_LABEL.match(name):
            out.append(
                _cause(
                    f"{f}.name",
                    f"Invalid value: {_q(name)}: a lowercase RFC 1123 label must consist of "
                    "lower case alphanumeric characters or '-', and must start and end with "
                    "an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used "
                    "for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
                )
            )
        elif name in names:
            out.append(_cause(f"{f}.name", f"Duplicate value: {_q(name)}", "FieldValueDuplicate"))
        else:
            names.add(name)
        if not c.get("image"):
            out.append(_cause(f"{f}.image", "Required value", "FieldValueRequired"))
        for k in _FORBIDDEN:
            if c.get(k) not in (None, {}, []):
                out.append(
                    _cause(
                        f"{f}.{k}",
                        "Forbidden: cannot be set for an Ephemeral Container",
                        "FieldValueForbidden",
                    )
                )
        target = c.get("targetContainerName")
        if target and target not in targets:
            out.append(
                _cause(f"{f}.targetContainerName", f"Not found: {_q(target)}", "FieldValueNotFound")
            )
    return out
