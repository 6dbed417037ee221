"""Conversion between the served versions of a built-in kind, where kube-apiserver
converts: objects are stored in one version and read or written in any served one.

Of the kinds a default Kubernetes 1.37 control plane serves, only
HorizontalPodAutoscaler is served in two versions (autoscaling/v1 and autoscaling/v2);
it is stored as v2. Kube's mapping, kept here field for field:

- v1 `spec.targetCPUUtilizationPercentage` is v2's first metric of type Resource for
  `cpu` with an `averageUtilization` target; v1 `status.currentCPUUtilizationPercentage`
  the matching current metric.
- What v1 cannot say travels in annotations of the v1 object, as JSON, in the shapes of
  the older metric API (`targetAverageUtilization`, `metricName`, ...):
  `autoscaling.alpha.kubernetes.io/metrics` (the other metrics),
  `autoscaling.alpha.kubernetes.io/current-metrics` (the other current metrics),
  `autoscaling.alpha.kubernetes.io/conditions` (status.conditions) and
  `autoscaling.alpha.kubernetes.io/behavior` (spec.behavior). Converting back reads
  and removes them, so a round trip loses nothing.

Pure functions over plain objects; each returns a new object.
"""

from __future__ import annotations

import copy
from typing import Any

import orjson

Obj = dict[str, Any]

HPA = ("autoscaling", "HorizontalPodAutoscaler")
STORAGE_VERSION = {HPA: "v2"}
KINDS = frozenset(k for _, k in STORAGE_VERSION)  # a first, cheap test on a kind's name

ANN_METRICS = "autoscaling.alpha.kubernetes.io/metrics"
ANN_CURRENT = "autoscaling.alpha.kubernetes.io/current-metrics"
ANN_CONDITIONS = "autoscaling.alpha.kubernetes.io/conditions"
ANN_BEHAVIOR = "autoscaling.alpha.kubernetes.io/behavior"


class ConversionError(ValueError):
    """An object whose conversion annotations cannot be read."""


def storage_version(group: str, kind: str) -> str | None:
    """The version a multi-version built-in kind is stored in (None: one version)."""
    return STORAGE_VERSION.get((group, kind))


def convert(obj: Obj, group: str, kind: str, version: str) -> Obj:
    """`obj` in `version` of its kind (a copy; the object itself when already there)."""
    av = obj.get("apiVersion")
    target = f"{group}/{version}" if group else version
    if av == target:
        return obj
    if (group, kind) == HPA:
        if version == "v1":
            return _hpa_to_v1(obj)
        if version == "v2":
            return _hpa_to_v2(obj)
    raise ConversionError(f"no conversion of {kind} from {av} to {target}")


# ---------------------------------------------------------------- v2 -> v1


def _dumps(v: Any) -> str:
    return orjson.dumps(v).decode()


def _is_cpu_utilization(m: Any) -> bool:
    if not isinstance(m, dict) or m.get("type") != "Resource":
        return False
    r = m.get("resource") or {}
    return r.get("name") == "cpu" and (r.get("target") or {}).get("averageUtilization") is not None


def _is_cpu_current(m: Any) -> bool:
    if not isinstance(m, dict) or m.get("type") != "Resource":
        return False
    r = m.get("resource") or {}
    return r.get("name") == "cpu" and (r.get("current") or {}).get("averageUtilization") is not None


def _put(d: Obj, key: str, v: Any) -> None:
    if v is not None:
        d[key] = v


def _spec_to_old(m: Obj) -> Obj:
    """A v2 MetricSpec in the older shape the annotations carry."""
    t = m.get("type")
    out: Obj = {"type": t}
    if t == "Resource" and isinstance(m.get("resource"), dict):
        r = m["resource"]
        tg = r.get("target") or {}
        o: Obj = {"name": r.get("name")}
        _put(o, "targetAverageUtilization", tg.get("averageUtilization"))
        _put(o, "targetAverageValue", tg.get("averageValue"))
        out["resource"] = o
    elif t == "ContainerResource" and isinstance(m.get("containerResource"), dict):
        r = m["containerResource"]
        tg = r.get("target") or {}
        o = {"name": r.get("name"), "container": r.get("container")}
        _put(o, "targetAverageUtilization", tg.get("averageUtilization"))
        _put(o, "targetAverageValue", tg.get("averageValue"))
        out["containerResource"] = o
    elif t == "Pods" and isinstance(m.get("pods"), dict):
        p = m["pods"]
        metric = p.get("metric") or {}
        o = {"metricName": metric.get("name")}
        _put(o, "targetAverageValue", (p.get("target") or {}).get("averageValue"))
        _put(o, "selector", metric.get("selector"))
        out["pods"] = o
    elif t == "Object" and isinstance(m.get("object"), dict):
        p = m["object"]
        metric = p.get("metric") or {}
        tg = p.get("target") or {}
        o = {"target": p.get("describedObject"), "metricName": metric.get("name")}
        _put(o, "targetValue", tg.get("value"))
        _put(o, "selector", metric.get("selector"))
        _put(o, "averageValue", tg.get("averageValue"))
        out["object"] = o
    elif t == "External" and isinstance(m.get("external"), dict):
        p = m["external"]
        metric = p.get("metric") or {}
        tg = p.get("target") or {}
        o = {"metricName": metric.get("name")}
        _put(o, "metricSelector", metric.get("selector"))
        _put(o, "targetValue", tg.get("value"))
        _put(o, "targetAverageValue", tg.get("averageValue"))
        out["external"] = o
    return out


def _status_to_old(m: Obj) -> Obj:
    """A v2 MetricStatus in the older shape the annotations carry."""
    t = m.get("type")
    out: Obj = {"type": t}
    if t in ("Resource", "ContainerResource"):
        src = m.get("resource" if t == "Resource" else "containerResource") or {}
        cur = src.get("current") or {}
        o: Obj = {"name": src.get("name")}
        if t == "ContainerResource":
            o["container"] = src.get("container")
        _put(o, "currentAverageUtilization", cur.get("averageUtilization"))
        o["currentAverageValue"] = cur.get("averageValue", "0")
        out["resource" if t == "Resource" else "containerResource"] = o
    elif t == "Pods" and isinstance(m.get("pods"), dict):
        p = m["pods"]
        metric = p.get("metric") or {}
        o = {"metricName": metric.get("name")}
        o["currentAverageValue"] = (p.get("current") or {}).get("averageValue", "0")
        _put(o, "selector", metric.get("selector"))
        out["pods"] = o
    elif t == "Object" and isinstance(m.get("object"), dict):
        p = m["object"]
        metric = p.get("metric") or {}
        cur = p.get("current") or {}
        o = {"target": p.get("describedObject"), "metricName": metric.get("name")}
        o["currentValue"] = cur.get("value", "0")
        _put(o, "selector", metric.get("selector"))
        _put(o, "averageValue", cur.get("averageValue"))
        out["object"] = o
    elif t == "External" and isinstance(m.get("external"), dict):
        p = m["external"]
        metric = p.get("metric") or {}
        cur = p.get("current") or {}
        o = {"metricName": metric.get("name")}
        _put(o, "metricSelector", metric.get("selector"))
        o["currentValue"] = cur.get("value", "0")
        _put(o, "currentAverageValue", cur.get("averageValue"))
        out["external"] = o
    return out


def _hpa_to_v1(obj: Obj) -> Obj:
    src = copy.deepcopy(obj)
    md = src.get("metadata") if isinstance(src.get("metadata"), dict) else {}
    ann = dict((md or {}).get("annotations") or {})
    got = src.get("spec")
    spec: Obj = got if isinstance(got, dict) else {}
    out_spec: Obj = {}
    for k in ("scaleTargetRef", "minReplicas", "maxReplicas"):
        if k in spec:
            out_spec[k] = spec[k]
    others = []
    for m in spec.get("metrics") or []:
        if "targetCPUUtilizationPercentage" not in out_spec and _is_cpu_utilization(m):
            out_spec["targetCPUUtilizationPercentage"] = m["resource"]["target"][
                "averageUtilization"
            ]
        elif isinstance(m, dict):
            others.append(_spec_to_old(m))
    if others:
        ann[ANN_METRICS] = _dumps(others)
    if spec.get("behavior") is not None:
        ann[ANN_BEHAVIOR] = _dumps(spec["behavior"])
    out: Obj = {"apiVersion": "autoscaling/v1", "kind": src.get("kind", HPA[1])}
    out["metadata"] = md or {}
    out["spec"] = out_spec
    status = src.get("status")
    if isinstance(status, dict):
        st: Obj = {}
        for k in ("observedGeneration", "lastScaleTime", "currentReplicas", "desiredReplicas"):
            if k in status:
                st[k] = status[k]
        current = []
        for m in status.get("currentMetrics") or []:
            if "currentCPUUtilizationPercentage" not in st and _is_cpu_current(m):
                st["currentCPUUtilizationPercentage"] = m["resource"]["current"][
                    "averageUtilization"
                ]
            elif isinstance(m, dict):
                current.append(_status_to_old(m))
        if current:
            ann[ANN_CURRENT] = _dumps(current)
        if status.get("conditions"):
            ann[ANN_CONDITIONS] = _dumps(status["conditions"])
        for k in ("currentReplicas", "desiredReplicas"):  # int32s v1 always writes
            st.setdefault(k, 0)
        out["status"] = st
    if ann:
        out["metadata"] = {**out["metadata"], "annotations": ann}
    return out


# ---------------------------------------------------------------- v1 -> v2


def _target(**kv: Any) -> Obj:
    return {k: v for k, v in kv.items() if v is not None}


def _spec_from_old(m: Any) -> Obj:
    if not isinstance(m, dict):
        raise ConversionError("a metric must be an object")
    t = m.get("type")
    out: Obj = {"type": t}
    if t in ("Resource", "ContainerResource"):
        key = "resource" if t == "Resource" else "containerResource"
        r = m.get(key) or {}
        util, val = r.get("targetAverageUtilization"), r.get("targetAverageValue")
        o: Obj = {"name": r.get("name")}
        if t == "ContainerResource":
            o["container"] = r.get("container")
        o["target"] = _target(
            type="Utilization" if util is not None else "AverageValue",
            averageUtilization=util,
            averageValue=val,
        )
        out[key] = o
    elif t == "Pods":
        p = m.get("pods") or {}
        out["pods"] = {
            "metric": _target(name=p.get("metricName"), selector=p.get("selector")),
            "target": _target(type="AverageValue", averageValue=p.get("targetAverageValue")),
        }
    elif t == "Object":
        p = m.get("object") or {}
        value, avg = p.get("targetValue"), p.get("averageValue")
        out["object"] = {
            "describedObject": p.get("target"),
            "metric": _target(name=p.get("metricName"), selector=p.get("selector")),
            "target": _target(
                type="Value" if value is not None else "AverageValue",
                value=value,
                averageValue=avg,
            ),
        }
    elif t == "External":
        p = m.get("external") or {}
        value, avg = p.get("targetValue"), p.get("targetAverageValue")
        out["external"] = {
            "metric": _target(name=p.get("metricName"), selector=p.get("metricSelector")),
            "target": _target(
                type="Value" if value is not None else "AverageValue",
                value=value,
                averageValue=avg,
            ),
        }
    return out


def _status_from_old(m: Any) -> Obj:
    if not isinstance(m, dict):
        raise ConversionError("a metric status must be an object")
    t = m.get("type")
    out: Obj = {"type": t}
    if t in ("Resource", "ContainerResource"):
        key = "resource" if t == "Resource" else "containerResource"
        r = m.get(key) or {}
        o: Obj = {"name": r.get("name")}
        if t == "ContainerResource":
            o["container"] = r.get("container")
        o["current"] = _target(
            averageUtilization=r.get("currentAverageUtilization"),
            averageValue=r.get("currentAverageValue"),
        )
        out[key] = o
    elif t == "Pods":
        p = m.get("pods") or {}
        out["pods"] = {
            "metric": _target(name=p.get("metricName"), selector=p.get("selector")),
            "current": _target(averageValue=p.get("currentAverageValue")),
        }
    elif t == "Object":
        p = m.get("object") or {}
        out["object"] = {
            "describedObject": p.get("target"),
            "metric": _target(name=p.get("metricName"), selector=p.get("selector")),
            "current": _target(value=p.get("currentValue"), averageValue=p.get("averageValue")),
        }
    elif t == "External":
        p = m.get("external") or {}
        out["external"] = {
            "metric": _target(name=p.get("metricName"), selector=p.get("metricSelector")),
            "current": _target(
                value=p.get("currentValue"), averageValue=p.get("currentAverageValue")
            ),
        }
    return out


def _loads(ann: dict[str, Any], key: str) -> Any:
    raw = ann.pop(key, None)
    if raw is None:
        return None
    try:
        return orjson.loads(raw)
    except (orjson.JSONDecodeError, TypeError):
        raise ConversionError(f"metadata.annotations[{key}]: not valid JSON") from None


def _hpa_to_v2(obj: Obj) -> Obj:
    src = copy.deepcopy(obj)
    md = dict(src.get("metadata") or {}) if isinstance(src.get("metadata"), dict) else {}
    ann = dict(md.get("annotations") or {})
    got = src.get("spec")
    spec: Obj = got if isinstance(got, dict) else {}
    out_spec: Obj = {}
    for k in ("scaleTargetRef", "minReplicas", "maxReplicas"):
        if k in spec:
            out_spec[k] = spec[k]
    metrics: list[Obj] = []
    cpu = spec.get("targetCPUUtilizationPercentage")
    if cpu is not None:
        metrics.append(
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": cpu},
                },
            }
        )
    more = _loads(ann, ANN_METRICS)
    if more is not None:
        if not isinstance(more, list):
            raise ConversionError(f"metadata.annotations[{ANN_METRICS}]: must be a list")
        metrics += [_spec_from_old(m) for m in more]
    if metrics:
        out_spec["metrics"] = metrics
    behavior = _loads(ann, ANN_BEHAVIOR)
    if behavior is not None:
        out_spec["behavior"] = behavior
    current_more = _loads(ann, ANN_CURRENT)
    conditions = _loads(ann, ANN_CONDITIONS)
    if ann:
        md["annotations"] = ann
    else:
        md.pop("annotations", None)
    out: Obj = {"apiVersion": "autoscaling/v2", "kind": src.get("kind", HPA[1]), "metadata": md}
    out["spec"] = out_spec
    status = src.get("status")
    if isinstance(status, dict) or current_more or conditions:
        status = status if isinstance(status, dict) else {}
        st: Obj = {}
        for k in ("observedGeneration", "lastScaleTime", "currentReplicas", "desiredReplicas"):
            if k in status:
                st[k] = status[k]
        current: list[Obj] = []
        cur_cpu = status.get("currentCPUUtilizationPercentage")
        if cur_cpu is not None:
            current.append(
                {
                    "type": "Resource",
                    "resource": {"name": "cpu", "current": {"averageUtilization": cur_cpu}},
                }
            )
        if isinstance(current_more, list):
            current += [_status_from_old(m) for m in current_more]
        if current:
            st["currentMetrics"] = current
        if isinstance(conditions, list):
            st["conditions"] = conditions
        st.setdefault("desiredReplicas", 0)  # an int32 v2 always writes
        out["status"] = st
    return out
