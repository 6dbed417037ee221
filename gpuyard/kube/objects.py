"""Helpers over plain Kubernetes-shaped dicts: quantities, taints and tolerations,
label selectors, node affinity, conditions and resource sums.

Pure functions, no I/O: the API server, the scheduler policy, the controllers and
the digital twin all use these, so that each rule is written once.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

Obj = dict[str, Any]

# --------------------------------------------------------------------------- quantities

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}
_QTY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)$")
_qty_cache: dict[str, Decimal] = {}


class QuantityError(ValueError):
    """A resource quantity that Kubernetes would not accept."""


def parse_quantity(value: str | int | float) -> Decimal:
    """Parse a Kubernetes quantity ("500m", "16Gi", "1e3", 8) into a Decimal."""
    if type(value) is str:  # the common case first: a string parsed before
        cached = _qty_cache.get(value)
        if cached is not None:
            return cached
    if isinstance(value, bool):
        raise QuantityError(f"quantity must be a string or number, not {value!r}")
    if isinstance(value, int | float):
        return Decimal(str(value))
    if not isinstance(value, str):
        raise QuantityError(f"quantity must be a string or number, not {type(value).__name__}")
    cached = _qty_cache.get(value)
    if cached is not None:
        return cached
    m = _QTY.match(value.strip())
    if not m:
        raise QuantityError(
            f"quantities must match the regular expression '{_QTY.pattern}': {value!r}"
        )
    number, suffix = m.groups()
    try:
        n = Decimal(number)
    except InvalidOperation as exc:
        raise QuantityError(f"invalid quantity {value!r}") from exc
    if suffix in _BINARY:
        result = n * _BINARY[suffix]
    elif suffix in _DECIMAL:
        result = n * _DECIMAL[suffix]
    else:
        raise QuantityError(f"unknown quantity suffix {suffix!r} in {value!r}")
    if len(_qty_cache) < 100_000:
        _qty_cache[value] = result
    return result


def quantity_to_milli(value: str | int | float) -> int:
    """A quantity in thousandths, rounded up (how Kubernetes counts cpu)."""
    q = parse_quantity(value) * 1000
    i = int(q)
    return i if i == q else i + (1 if q > 0 else 0)


def quantity_to_int(value: str | int | float) -> int:
    """A quantity as a whole number, rounded up (bytes, GPUs, pods)."""
    q = parse_quantity(value)
    i = int(q)
    return i if i == q else i + (1 if q > 0 else 0)


def format_quantity(value: int, resource: str = "") -> str:
    """Format an integer amount: cpu in milli units ("500m", "4"), others plain."""
    if resource == "cpu":
        return str(value // 1000) if value % 1000 == 0 else f"{value}m"
    for suffix in ("Ti", "Gi", "Mi", "Ki"):
        unit = _BINARY[suffix]
        if value and value % unit == 0:
            return f"{value // unit}{suffix}"
    return str(value)


def resource_amount(resource: str, value: str | int | float) -> int:
    """The integer unit the scheduler compares in: milli-cpu, bytes, or counts."""
    return quantity_to_milli(value) if resource == "cpu" else quantity_to_int(value)


def resource_list(resources: Mapping[str, Any] | None) -> dict[str, int]:
    """A resource list ({"cpu": "500m", "nvidia.com/gpu": 8}) in integer units."""
    return {k: resource_amount(k, v) for k, v in (resources or {}).items()}


def pod_requests(pod: Mapping[str, Any]) -> dict[str, int]:
    """What a pod asks for: the sum over containers, at least the largest init
    container, plus overhead; limits stand in for missing requests, as in Kubernetes."""
    spec = pod.get("spec") or {}
    total: dict[str, int] = {}
    for c in spec.get("containers") or []:
        res = c.get("resources") or {}
        req = dict(resource_list(res.get("limits")))
        req.update(resource_list(res.get("requests")))
        for k, v in req.items():
            total[k] = total.get(k, 0) + v
    for c in spec.get("initContainers") or []:
        res = c.get("resources") or {}
        req = dict(resource_list(res.get("limits")))
        req.update(resource_list(res.get("requests")))
        for k, v in req.items():
            if v > total.get(k, 0):
                total[k] = v
    for k, v in resource_list(spec.get("overhead")).items():
        total[k] = total.get(k, 0) + v
    return total


def node_allocatable(node: Mapping[str, Any]) -> dict[str, int]:
    status = node.get("status") or {}
    return resource_list(status.get("allocatable") or status.get("capacity"))


# ----------------------------------------------------------------- taints, tolerations

NO_SCHEDULE = "NoSchedule"
PREFER_NO_SCHEDULE = "PreferNoSchedule"
NO_EXECUTE = "NoExecute"


def toleration_matches(toleration: Mapping[str, Any], taint: Mapping[str, Any]) -> bool:
    """Whether one toleration tolerates one taint (Kubernetes' ToleratesTaint)."""
    effect = toleration.get("effect") or ""
    if effect and effect != taint.get("effect"):
        return False
    key = toleration.get("key") or ""
    op = toleration.get("operator") or "Equal"
    if not key:
        # An empty key with Exists matches every taint.
        return op == "Exists"
    if key != taint.get("key"):
        return False
    if op == "Exists":
        return True
    return (toleration.get("value") or "") == (taint.get("value") or "")


def tolerates(tolerations: Iterable[Mapping[str, Any]] | None, taint: Mapping[str, Any]) -> bool:
    return any(toleration_matches(t, taint) for t in tolerations or ())


def untolerated_taints(
    node: Mapping[str, Any],
    tolerations: Iterable[Mapping[str, Any]] | None,
    effects: tuple[str, ...] = (NO_SCHEDULE, NO_EXECUTE),
) -> list[Obj]:
    """Taints of the node with one of `effects` that the tolerations do not cover."""
    tols = list(tolerations or ())
    return [
        t
        for t in (node.get("spec") or {}).get("taints") or []
        if t.get("effect") in effects and not tolerates(tols, t)
    ]


def taint_str(taint: Mapping[str, Any]) -> str:
    value = taint.get("value")
    kv = f"{taint.get('key')}={value}" if value else str(taint.get("key"))
    return f"{kv}:{taint.get('effect')}"


def find_taint(node: Mapping[str, Any], key: str, effect: str | None = None) -> Obj | None:
    for t in (node.get("spec") or {}).get("taints") or []:
        if t.get("key") == key and (effect is None or t.get("effect") == effect):
            return dict(t)
    return None


def with_taint(taints: list[Obj] | None, key: str, value: str | None, effect: str) -> list[Obj]:
    """The taint list with (key, effect) set to value; other taints kept in order."""
    out = [dict(t) for t in taints or [] if not (t.get("key") == key and t.get("effect") == effect)]
    new: Obj = {"key": key, "effect": effect}
    if value:
        new["value"] = value
    out.append(new)
    return out


def without_taint(taints: list[Obj] | None, key: str, effect: str | None = None) -> list[Obj]:
    return [
        dict(t)
        for t in taints or []
        if not (t.get("key") == key and (effect is None or t.get("effect") == effect))
    ]


# ---------------------------------------------------------------------- label selectors


class SelectorError(ValueError):
    """A label or field selector that cannot be parsed."""


_LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$")

# A requirement: (key, operator, values); operators "=", "!=", "in", "notin", "exists", "!".
Requirement = tuple[str, str, tuple[str, ...]]


def _split_top(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts: list[str] = []
    depth = 0
    cur: list[str] = []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise SelectorError(f"unbalanced parentheses in selector {text!r}")
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if depth:
        raise SelectorError(f"unbalanced parentheses in selector {text!r}")
    parts.append("".join(cur))
    return parts


_SET_RE = re.compile(r"^\s*(\S+?)\s+(in|notin)\s*\((.*)\)\s*$")
_EQ_RE = re.compile(r"^\s*([^=!\s]+)\s*(==|=|!=)\s*(\S*)\s*$")


def _check_key(key: str, text: str) -> str:
    if not _LABEL_KEY.match(key) or len(key.split("/")[-1]) > 63:
        raise SelectorError(f"invalid label key {key!r} in selector {text!r}")
    return key


def _check_value(value: str, text: str) -> str:
    if len(value) > 63 or not _LABEL_VALUE.match(value):
        raise SelectorError(f"invalid label value {value!r} in selector {text!r}")
    return value


def parse_label_selector(text: str | None) -> list[Requirement]:
    """Parse "a=b,c!=d,e in (f,g),h notin (i),j,!k" into requirements."""
    if not text or not text.strip():
        return []
    reqs: list[Requirement] = []
    for part in _split_top(text):
        part = part.strip()
        if not part:
            raise SelectorError(f"empty requirement in selector {text!r}")
        m = _SET_RE.match(part)
        if m:
            key, op, vals = m.groups()
            values = tuple(_check_value(v.strip(), text) for v in vals.split(",") if v.strip())
            if op == "in" and not values:
                raise SelectorError(f"'in' needs at least one value in selector {text!r}")
            reqs.append((_check_key(key, text), op, values))
            continue
        m = _EQ_RE.match(part)
        if m:
            key, op, value = m.groups()
            reqs.append(
                (_check_key(key, text), "!=" if op == "!=" else "=", (_check_value(value, text),))
            )
            continue
        if part.startswith("!"):
            reqs.append((_check_key(part[1:].strip(), text), "!", ()))
            continue
        if re.match(r"^\S+$", part):
            reqs.append((_check_key(part, text), "exists", ()))
            continue
        raise SelectorError(f"unable to parse requirement {part!r} in selector {text!r}")
    return reqs


def requirements_match(reqs: Iterable[Requirement], labels: Mapping[str, str] | None) -> bool:
    labels = labels or {}
    for key, op, values in reqs:
        present = key in labels
        if op == "=":
            if not present or labels[key] != values[0]:
                return False
        elif op == "!=":
            if present and labels[key] == values[0]:
                return False
        elif op == "in":
            if not present or labels[key] not in values:
                return False
        elif op == "notin":
            if present and labels[key] in values:
                return False
        elif op == "exists":
            if not present:
                return False
        elif op == "!":
            if present:
                return False
    return True


def label_selector_requirements(selector: Mapping[str, Any] | None) -> list[Requirement]:
    """A metav1.LabelSelector ({matchLabels, matchExpressions}) as requirements."""
    if not selector:
        return []
    reqs: list[Requirement] = [
        (k, "=", (str(v),)) for k, v in (selector.get("matchLabels") or {}).items()
    ]
    for expr in selector.get("matchExpressions") or []:
        op = expr.get("operator")
        key = expr.get("key", "")
        values = tuple(str(v) for v in expr.get("values") or [])
        mapped = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}.get(
            op or ""
        )
        if mapped is None:
            raise SelectorError(f"{op!r} is not a valid label selector operator")
        reqs.append((key, mapped, values))
    return reqs


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str] | None) -> bool:
    """Whether a metav1.LabelSelector matches labels (an empty selector matches all)."""
    return requirements_match(label_selector_requirements(selector), labels)


def selector_string(selector: Mapping[str, Any] | None) -> str:
    """A metav1.LabelSelector as the query-string form (for list calls)."""
    out = []
    for key, op, values in label_selector_requirements(selector):
        if op == "=":
            out.append(f"{key}={values[0]}")
        elif op in ("in", "notin"):
            out.append(f"{key} {op} ({','.join(values)})")
        elif op == "exists":
            out.append(key)
        else:
            out.append(f"!{key}")
    return ",".join(out)


# ------------------------------------------------------------------ node affinity


def _node_field(node: Mapping[str, Any], key: str) -> str | None:
    if key == "metadata.name":
        return (node.get("metadata") or {}).get("name")
    return None


def _node_requirement_matches(expr: Mapping[str, Any], values_of: Mapping[str, Any]) -> bool:
    key = expr.get("key", "")
    op = expr.get("operator")
    vals = [str(v) for v in expr.get("values") or []]
    present = key in values_of and values_of[key] is not None
    val = values_of.get(key)
    if op == "In":
        return present and val in vals
    if op == "NotIn":
        return not present or val not in vals
    if op == "Exists":
        return present
    if op == "DoesNotExist":
        return not present
    if op in ("Gt", "Lt"):
        if not present or len(vals) != 1:
            return False
        try:
            a, b = int(str(val)), int(vals[0])
        except ValueError:
            return False
        return a > b if op == "Gt" else a < b
    return False


def node_selector_term_matches(term: Mapping[str, Any], node: Mapping[str, Any]) -> bool:
    labels = (node.get("metadata") or {}).get("labels") or {}
    exprs = term.get("matchExpressions") or []
    fields = term.get("matchFields") or []
    if not exprs and not fields:
        return False  # an empty term matches nothing
    if not all(_node_requirement_matches(e, labels) for e in exprs):
        return False
    return all(
        _node_requirement_matches(f, {f.get("key", ""): _node_field(node, f.get("key", ""))})
        for f in fields
    )


def node_matches_pod(pod: Mapping[str, Any], node: Mapping[str, Any]) -> bool:
    """nodeSelector and required node affinity (NodeAffinity filter)."""
    spec = pod.get("spec") or {}
    labels = (node.get("metadata") or {}).get("labels") or {}
    for k, v in (spec.get("nodeSelector") or {}).items():
        if labels.get(k) != v:
            return False
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    terms = required.get("nodeSelectorTerms")
    if terms is None:
        return True
    return any(node_selector_term_matches(t, node) for t in terms)


# ---------------------------------------------------------------------- conditions


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def get_condition(obj: Mapping[str, Any], ctype: str) -> Obj | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == ctype:
            return dict(c)
    return None


def condition_true(obj: Mapping[str, Any], ctype: str) -> bool:
    c = get_condition(obj, ctype)
    return bool(c and c.get("status") == "True")


def set_condition(
    conditions: list[Obj] | None,
    ctype: str,
    status: str,
    reason: str = "",
    message: str = "",
    now: str | None = None,
) -> tuple[list[Obj], bool]:
    """The conditions with `ctype` set; lastTransitionTime moves only when the status
    does. Returns (conditions, changed) so callers can skip writes that change nothing."""
    now = now or now_rfc3339()
    out = [dict(c) for c in conditions or []]
    for c in out:
        if c.get("type") == ctype:
            if (
                c.get("status") == status
                and c.get("reason", "") == reason
                and c.get("message", "") == message
            ):
                return out, False
            if c.get("status") != status:
                c["lastTransitionTime"] = now
            c.update(status=status, reason=reason, message=message)
            return out, True
    out.append(
        {
            "type": ctype,
            "status": status,
            "reason": reason,
            "message": message,
            "lastTransitionTime": now,
        }
    )
    return out, True


# -------------------------------------------------------------------- object helpers


def meta(obj: Mapping[str, Any]) -> Obj:
    return obj.get("metadata") or {}


def name_of(obj: Mapping[str, Any]) -> str:
    return (obj.get("metadata") or {}).get("name", "")


def namespace_of(obj: Mapping[str, Any]) -> str:
    return (obj.get("metadata") or {}).get("namespace", "")


def key_of(obj: Mapping[str, Any]) -> str:
    """ "namespace/name" for namespaced objects, "name" for cluster-scoped ones."""
    m = obj.get("metadata") or {}
    ns = m.get("namespace")
    return f"{ns}/{m.get('name', '')}" if ns else m.get("name", "")


def labels_of(obj: Mapping[str, Any]) -> dict[str, str]:
    return (obj.get("metadata") or {}).get("labels") or {}


def is_pod_terminal(pod: Mapping[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def is_node_ready(node: Mapping[str, Any]) -> bool:
    return condition_true(node, "Ready")


def owner_reference(owner: Mapping[str, Any], controller: bool = True, block: bool = True) -> Obj:
    m = owner.get("metadata") or {}
    return {
        "apiVersion": owner.get("apiVersion"),
        "kind": owner.get("kind"),
        "name": m.get("name"),
        "uid": m.get("uid"),
        "controller": controller,
        "blockOwnerDeletion": block,
    }


def is_daemonset_pod(pod: Mapping[str, Any]) -> bool:
    """A pod controlled by a DaemonSet (one per node; the autoscaler ignores them)."""
    return any(
        r.get("kind") == "DaemonSet" and r.get("controller")
        for r in (pod.get("metadata") or {}).get("ownerReferences") or []
    )


def is_mirror_pod(pod: Mapping[str, Any]) -> bool:
    """A static pod's mirror object, created by the kubelet."""
    ann = (pod.get("metadata") or {}).get("annotations") or {}
    return "kubernetes.io/config.mirror" in ann
