"""More per-kind rules of kube-apiserver's validation that users meet often, beside
`strategies`: pod templates of workloads (their restartPolicy), port numbers, a pod's
activeDeadlineSeconds (set once, then only lowered), a Service's ports, a Job's
template, completions, completionMode, podFailurePolicy and backoffLimitPerIndex, a
CronJob's schedule and time zone, the StatefulSet spec fields that may change, and a
PersistentVolumeClaim's spec (only a bound claim's storage request may change, never
below its capacity), and that a pod names its gang in one way only.
Pure functions over plain objects; causes are `{"reason", "message", "field"}`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from gpuyard import names
from gpuyard.apiserver import ephemeral, slice_rules
from gpuyard.k8s import cron
from gpuyard.kube.objects import QuantityError, parse_quantity

Cause = dict[str, str]
Obj = dict[str, Any]
_INT32_MAX = 2**31 - 1


def _cause(field: str, message: str, reason: str = "FieldValueInvalid") -> Cause:
    return {"reason": reason, "message": message, "field": field}


def _repr(v: Any) -> str:
    if v is None:
        return '"null"'
    return orjson.dumps(v).decode()


def _at(obj: Any, *path: str) -> Any:
    for p in path:
        obj = obj.get(p) if isinstance(obj, dict) else None
    return obj


# ------------------------------------------------------------------ pod specs


def _list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


def _dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _port_range(v: Any, field: str, lo: int = 1) -> list[Cause]:
    if type(v) is not int:
        return []
    if not lo <= v <= 65535:
        return [_cause(field, f"Invalid value: {v}: must be between {lo} and 65535, inclusive")]
    return []


def pod_spec_causes(spec: Any, field: str, restart: tuple[str, ...] | None = None) -> list[Cause]:
    """Rules of a PodSpec wherever it is (a pod's, or a workload's template's)."""
    if not isinstance(spec, dict):
        return []
    out: list[Cause] = []
    ads = spec.get("activeDeadlineSeconds")
    if type(ads) is int and not 1 <= ads <= _INT32_MAX:
        out.append(
            _cause(
                f"{field}.activeDeadlineSeconds",
                f"Invalid value: {ads}: must be between 1 and {_INT32_MAX}, inclusive",
            )
        )
    for key in ("initContainers", "containers"):
        for i, c in enumerate(_list(spec.get(key))):
            if not isinstance(c, dict):
                continue
            for j, p in enumerate(_list(c.get("ports"))):
                if not isinstance(p, dict):
                    continue
                f = f"{field}.{key}[{i}].ports[{j}]"
                if not p.get("containerPort"):
                    out.append(_cause(f"{f}.containerPort", "Required value", "FieldValueRequired"))
                else:
                    out += _port_range(p.get("containerPort"), f"{f}.containerPort")
                out += _port_range(p.get("hostPort"), f"{f}.hostPort", lo=0)
    policy = spec.get("restartPolicy")
    if restart is not None and isinstance(policy, str) and policy and policy not in restart:
        listed = ", ".join(f'"{r}"' for r in restart)
        out.append(
            _cause(
                f"{field}.restartPolicy",
                f'Unsupported value: "{policy}": supported values: {listed}',
                "FieldValueNotSupported",
            )
        )
    return out


def _one_group(obj: Obj) -> list[Cause]:
    """A pod names its gang one way: the scheduler-plugins label or
    spec.schedulingGroup (the scheduling.k8s.io PodGroup), never both."""
    label = _dict(_at(obj, "metadata", "labels")).get(names.POD_GROUP_LABEL)
    upstream = _dict(_at(obj, "spec", "schedulingGroup")).get("podGroupName")
    if not label or not upstream:
        return []
    return [
        _cause(
            "spec.schedulingGroup",
            f"Forbidden: the pod already names its group with the label "
            f"{names.POD_GROUP_LABEL}={_repr(label)}; a pod names its group in exactly one "
            f"way: remove the label or spec.schedulingGroup (podGroupName {_repr(upstream)})",
            "FieldValueForbidden",
        )
    ]


def _pod_create(obj: Obj) -> list[Cause]:
    return (
        pod_spec_causes(obj.get("spec"), "spec")
        + _one_group(obj)
        + ephemeral.create_causes(obj.get("spec"), "spec")
    )


def _pod_update(new: Obj, old: Obj) -> list[Cause]:
    out = pod_spec_causes(new.get("spec"), "spec") + _one_group(new)
    was, now = _at(old, "spec", "activeDeadlineSeconds"), _at(new, "spec", "activeDeadlineSeconds")
    if was is not None:
        f = "spec.activeDeadlineSeconds"
        if now is None:
            out.append(
                _cause(
                    f,
                    f"Invalid value: {_repr(now)}: must not update from a positive "
                    "integer to nil value",
                )
            )
        elif type(now) is int and type(was) is int and now > was:
            out.append(
                _cause(f, f"Invalid value: {now}: must be less than or equal to previous value")
            )
    return out


# Where each workload holds its pod template, and the restart policies it allows.
_TEMPLATES: dict[tuple[str, str], tuple[tuple[str, ...], tuple[str, ...]]] = {
    ("apps", "Deployment"): (("spec", "template"), ("Always",)),
    ("apps", "ReplicaSet"): (("spec", "template"), ("Always",)),
    ("apps", "StatefulSet"): (("spec", "template"), ("Always",)),
    ("apps", "DaemonSet"): (("spec", "template"), ("Always",)),
    ("", "ReplicationController"): (("spec", "template"), ("Always",)),
    ("batch", "Job"): (("spec", "template"), ("OnFailure", "Never")),
    ("batch", "CronJob"): (("spec", "jobTemplate", "spec", "template"), ("OnFailure", "Never")),
}


def _template(key: tuple[str, str]) -> Callable[[Obj], list[Cause]]:
    path, restart = _TEMPLATES[key]
    field = ".".join((*path, "spec"))

    def check(obj: Obj) -> list[Cause]:
        spec = _at(obj, *path, "spec")
        return pod_spec_causes(spec, field, restart) + ephemeral.create_causes(
            spec, field, template=True
        )

    return check


def _service(obj: Obj) -> list[Cause]:
    """A Service's ports: numbers in range, names given when there are several, no port
    and protocol twice."""
    spec = _dict(obj.get("spec"))
    if spec.get("type") == "ExternalName":
        return []
    ports = [p for p in _list(spec.get("ports")) if isinstance(p, dict)]
    out: list[Cause] = []
    seen: set[tuple[Any, Any]] = set()
    names: set[Any] = set()
    for i, p in enumerate(ports):
        f = f"spec.ports[{i}]"
        port = p.get("port")
        if not port:
            out.append(
                _cause(f"{f}.port", "Invalid value: 0: must be between 1 and 65535, inclusive")
            )
        else:
            out += _port_range(port, f"{f}.port")
        target = p.get("targetPort")
        if type(target) is int:
            out += _port_range(target, f"{f}.targetPort")
        if len(ports) > 1 and not p.get("name"):
            out.append(_cause(f"{f}.name", "Required value", "FieldValueRequired"))
        elif p.get("name") in names:
            out.append(
                _cause(f"{f}.name", f'Duplicate value: "{p.get("name")}"', "FieldValueDuplicate")
            )
        names.add(p.get("name"))
        key = (port, p.get("protocol") or "TCP")
        if key in seen:
            out.append(
                _cause(
                    f,
                    f'Duplicate value: core.ServicePort{{Name:"", Protocol:"{key[1]}", '
                    f"Port:{port}}}",
                    "FieldValueDuplicate",
                )
            )
        seen.add(key)
    return out


# ------------------------------------------------------------------ jobs, statefulsets


def _immutable(field: str, value: Any) -> Cause:
    return _cause(field, f"Invalid value: {_repr(value)}: field is immutable")


_POLICY_ACTIONS = ("Count", "FailIndex", "FailJob", "Ignore")
_MAX_POLICY_RULES = 20


def _unsupported(field: str, value: Any, allowed: tuple[str, ...]) -> Cause:
    listed = ", ".join(f'"{a}"' for a in allowed)
    return _cause(
        field,
        f"Unsupported value: {_repr(value)}: supported values: {listed}",
        "FieldValueNotSupported",
    )


def _job_spec(obj: Obj) -> list[Cause]:
    """A Job's podFailurePolicy (restartPolicy Never, known actions and operators, one
    kind of requirement a rule, no exit code 0 for In, FailIndex only with
    backoffLimitPerIndex) and backoffLimitPerIndex's own rules (Indexed mode;
    maxFailedIndexes needs it)."""
    spec = _dict(obj.get("spec"))
    out: list[Cause] = []
    per_index = spec.get("backoffLimitPerIndex")
    if per_index is not None and (spec.get("completionMode") or "NonIndexed") != "Indexed":
        out.append(
            _cause(
                "spec.backoffLimitPerIndex",
                "Forbidden: requires indexed completion mode",
                "FieldValueForbidden",
            )
        )
    if spec.get("maxFailedIndexes") is not None and per_index is None:
        out.append(
            _cause(
                "spec.maxFailedIndexes",
                "Required value: when maxFailedIndexes is specified, backoffLimitPerIndex must "
                "also be specified",
                "FieldValueRequired",
            )
        )
    policy = spec.get("podFailurePolicy")
    if not isinstance(policy, dict):
        return out
    restart = _at(spec, "template", "spec", "restartPolicy")
    if restart != "Never":
        out.append(
            _cause(
                "spec.template.spec.restartPolicy",
                f'Invalid value: {_repr(restart)}: only "Never" is supported when '
                "podFailurePolicy is specified",
            )
        )
    rules = _list(policy.get("rules"))
    if len(rules) > _MAX_POLICY_RULES:
        out.append(
            _cause(
                "spec.podFailurePolicy.rules",
                f"Too many: {len(rules)}: must have at most {_MAX_POLICY_RULES} items",
                "FieldValueTooMany",
            )
        )
    for i, rule in enumerate(rules):
        f = f"spec.podFailurePolicy.rules[{i}]"
        if not isinstance(rule, dict):
            continue
        action = rule.get("action")
        if action not in _POLICY_ACTIONS:
            out.append(_unsupported(f"{f}.action", action, _POLICY_ACTIONS))
        elif action == "FailIndex" and per_index is None:
            out.append(
                _cause(
                    f"{f}.action",
                    'Invalid value: "FailIndex": requires the backoffLimitPerIndex to be set',
                )
            )
        codes, conds = rule.get("onExitCodes"), rule.get("onPodConditions")
        if codes is not None and conds:
            out.append(
                _cause(
                    f,
                    "Invalid value: specifying both OnExitCodes and OnPodConditions is not "
                    "supported",
                )
            )
        elif codes is None and not conds:
            out.append(
                _cause(
                    f,
                    "Invalid value: specifying one of OnExitCodes and OnPodConditions is required",
                )
            )
        if isinstance(codes, dict):
            op = codes.get("operator")
            if op not in ("In", "NotIn"):
                out.append(_unsupported(f"{f}.onExitCodes.operator", op, ("In", "NotIn")))
            values = _list(codes.get("values"))
            for j, v in enumerate(values):
                if op == "In" and v == 0:
                    out.append(
                        _cause(
                            f"{f}.onExitCodes.values[{j}]",
                            "Invalid value: 0: must not be 0 for the In operator",
                        )
                    )
                if j and isinstance(v, int) and isinstance(values[j - 1], int):
                    if v == values[j - 1]:
                        out.append(
                            _cause(
                                f"{f}.onExitCodes.values[{j}]",
                                f"Duplicate value: {v}",
                                "FieldValueDuplicate",
                            )
                        )
                    elif v < values[j - 1]:
                        out.append(
                            _cause(
                                f"{f}.onExitCodes.values[{j}]",
                                f"Invalid value: {v}: must be ordered",
                            )
                        )
        for j, c in enumerate(_list(conds)):
            st = c.get("status") if isinstance(c, dict) else None
            if st is not None and st not in ("False", "True", "Unknown"):
                out.append(
                    _unsupported(
                        f"{f}.onPodConditions[{j}].status", st, ("False", "True", "Unknown")
                    )
                )
    return out


def _job_create(obj: Obj) -> list[Cause]:
    return _template(("batch", "Job"))(obj) + _job_spec(obj)


def _job_update(new: Obj, old: Obj) -> list[Cause]:
    out = _job_create(new)
    ns, os_ = _dict(new.get("spec")), _dict(old.get("spec"))
    if ns.get("template") != os_.get("template"):
        out.append(_immutable("spec.template", ns.get("template")))
    if (ns.get("completionMode") or "NonIndexed") != (os_.get("completionMode") or "NonIndexed"):
        out.append(_immutable("spec.completionMode", ns.get("completionMode")))
    if ns.get("completions") != os_.get("completions"):
        elastic = ns.get("completionMode") == "Indexed" and ns.get("completions") == ns.get(
            "parallelism"
        )
        if not elastic:
            out.append(_immutable("spec.completions", ns.get("completions")))
    for key in ("podFailurePolicy", "backoffLimitPerIndex", "successPolicy"):
        if key in ns or key in os_:
            if ns.get(key) != os_.get(key):
                out.append(_immutable(f"spec.{key}", ns.get(key)))
    return out


_STATEFULSET_MUTABLE = (
    "replicas",
    "ordinals",
    "template",
    "updateStrategy",
    "revisionHistoryLimit",
    "persistentVolumeClaimRetentionPolicy",
    "minReadySeconds",
)
_STATEFULSET_MESSAGE = (
    "Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', "
    "'template', 'updateStrategy', 'revisionHistoryLimit', "
    "'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"
)


def _statefulset_update(new: Obj, old: Obj) -> list[Cause]:
    out = _template(("apps", "StatefulSet"))(new)
    ns, os_ = _dict(new.get("spec")), _dict(old.get("spec"))
    fixed_new = {k: v for k, v in ns.items() if k not in _STATEFULSET_MUTABLE}
    fixed_old = {k: v for k, v in os_.items() if k not in _STATEFULSET_MUTABLE}
    if fixed_new != fixed_old:
        out.append(_cause("spec", _STATEFULSET_MESSAGE, "FieldValueForbidden"))
    return out


# ------------------------------------------------------------------ persistent volume claims

_PVC_MESSAGE = (
    "Forbidden: spec is immutable after creation except resources.requests and "
    "volumeAttributesClassName for bound claims"
)


def _quantity(v: Any) -> float | None:
    try:
        return float(parse_quantity(v)) if v is not None else None
    except (QuantityError, TypeError, ValueError):
        return None


def _pvc_update(new: Obj, old: Obj) -> list[Cause]:
    ns, os_ = dict(_dict(new.get("spec"))), dict(_dict(old.get("spec")))
    bound = _at(old, "status", "phase") == "Bound"
    if not os_.get("volumeName"):
        ns.pop("volumeName", None)  # the binder sets it once
        os_.pop("volumeName", None)
    if bound:
        for s in (ns, os_):
            s.pop("volumeAttributesClassName", None)
            res = dict(_dict(s.get("resources")))
            res.pop("requests", None)
            s["resources"] = res
    if ns != os_:
        return [_cause("spec", _PVC_MESSAGE, "FieldValueForbidden")]
    want = _quantity(_at(new, "spec", "resources", "requests", "storage"))
    capacity = _quantity(_at(old, "status", "capacity", "storage"))
    if bound and want is not None and capacity is not None and want < capacity:
        return [
            _cause(
                "spec.resources.requests.storage",
                "Forbidden: field can not be less than status.capacity",
                "FieldValueForbidden",
            )
        ]
    return []


def _cronjob(obj: Obj) -> list[Cause]:
    """A CronJob's template, schedule (five cron fields or a descriptor, no TZ= prefix)
    and time zone (an IANA name this host knows)."""
    out = _template(("batch", "CronJob"))(obj)
    spec = _dict(obj.get("spec"))
    sched = spec.get("schedule")
    if isinstance(sched, str):
        try:
            cron.parse(sched)
        except ValueError as exc:
            out.append(_cause("spec.schedule", f"Invalid value: {_repr(sched)}: {exc}"))
    tz = spec.get("timeZone")
    if isinstance(tz, str):
        try:
            cron.zone(tz)
        except ValueError as exc:
            out.append(_cause("spec.timeZone", f"Invalid value: {_repr(tz)}: {exc}"))
    return out


CREATE: dict[tuple[str, str], Callable[[Obj], list[Cause]]] = {
    ("", "Pod"): _pod_create,
    ("", "Service"): _service,
    **{key: _template(key) for key in _TEMPLATES},
    ("batch", "CronJob"): _cronjob,
    ("batch", "Job"): _job_create,
    ("resource.k8s.io", "ResourceSlice"): slice_rules.create,
}
UPDATE: dict[tuple[str, str], Callable[[Obj, Obj], list[Cause]]] = {
    ("", "Pod"): _pod_update,
    ("batch", "Job"): _job_update,
    ("apps", "StatefulSet"): _statefulset_update,
    ("", "PersistentVolumeClaim"): _pvc_update,
    ("", "Service"): lambda new, _old: _service(new),
    ("batch", "CronJob"): lambda new, _old: _cronjob(new),
    ("resource.k8s.io", "ResourceSlice"): slice_rules.update,
    **{
        key: (lambda fn: lambda new, _old: fn(new))(_template(key))
        for key in _TEMPLATES
        if key not in (("batch", "Job"), ("apps", "StatefulSet"), ("batch", "CronJob"))
    },
}
