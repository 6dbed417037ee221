"""Table output (meta.k8s.io/v1 Table) for `kubectl get`: the columns people know.

Pods, nodes, namespaces, events, leases, services, configmaps, priority classes, jobs,
cronjobs, replication controllers, disruption budgets and CRDs get kubectl's familiar
columns; custom resources get their CRD's additionalPrinterColumns (JSONPath subset
`.a.b[0].c`); anything else NAME and AGE.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from gpuyard.apiserver.resources import Resource
from gpuyard.k8s.text import age

Obj = dict[str, Any]


def _meta(o: Obj) -> Obj:
    return o.get("metadata") or {}


def _age(o: Obj) -> str:
    return age(_meta(o).get("creationTimestamp"))


def _spec(o: Obj) -> Obj:
    s = o.get("spec")
    return s if isinstance(s, dict) else {}


def _status(o: Obj) -> Obj:
    s = o.get("status")
    return s if isinstance(s, dict) else {}


def _containers(o: Obj) -> list[str]:
    """A workload's container names and images, comma-separated (the wide columns)."""
    tpl = (_spec(o).get("template") or {}).get("spec") or {}
    cs = [c for c in tpl.get("containers") or [] if isinstance(c, dict)]
    return [
        ",".join(str(c.get("name", "")) for c in cs),
        ",".join(str(c.get("image", "")) for c in cs),
    ]


def _selector(o: Obj) -> str:
    from gpuyard.apiserver.scale import selector_text

    return selector_text(_spec(o).get("selector")) or "<none>"


def _job_status(o: Obj) -> str:
    """What kubectl prints as a Job's STATUS: its last finishing condition, or Running."""
    conds = {
        c.get("type"): c.get("status")
        for c in _status(o).get("conditions") or []
        if isinstance(c, dict)
    }
    for t in ("Complete", "Failed", "FailureTarget", "SuccessCriteriaMet", "Suspended"):
        if conds.get(t) == "True":
            return t
    return "Running"


def _job_completions(o: Obj) -> str:
    done = _status(o).get("succeeded", 0)
    want = _spec(o).get("completions")
    if want is None:
        par = _spec(o).get("parallelism", 1)
        return f"{done}/1 of {par}" if par != 1 else f"{done}/1"
    return f"{done}/{want}"


def _job_duration(o: Obj) -> str:
    from datetime import UTC, datetime

    st = _status(o)
    start = st.get("startTime")
    if not start:
        return ""
    end = st.get("completionTime")
    try:
        now = datetime.fromisoformat(end.replace("Z", "+00:00")) if end else datetime.now(UTC)
    except ValueError:
        return "<invalid>"
    return age(start, now)


def _pod_row(p: Obj) -> list[Any]:
    st = p.get("status") or {}
    spec = p.get("spec") or {}
    cs = st.get("containerStatuses") or []
    total = len(spec.get("containers") or [])
    ready = sum(1 for c in cs if c.get("ready"))
    restarts = sum(int(c.get("restartCount") or 0) for c in cs)
    status = st.get("reason") or st.get("phase") or "Pending"
    for c in cs:
        state = c.get("state") or {}
        if "waiting" in state and state["waiting"].get("reason"):
            status = state["waiting"]["reason"]
        elif (
            "terminated" in state and st.get("phase") not in ("Succeeded",) and status == "Running"
        ):
            status = state["terminated"].get("reason") or "Terminated"
    if st.get("phase") == "Succeeded":
        status = "Completed"
    if _meta(p).get("deletionTimestamp"):
        status = "Terminating"
    return [
        _meta(p).get("name"),
        f"{ready}/{total}",
        status,
        restarts,
        _age(p),
        st.get("podIP") or "<none>",
        spec.get("nodeName") or "<none>",
        st.get("nominatedNodeName") or "<none>",
        "<none>",
    ]


def _node_row(n: Obj) -> list[Any]:
    st = n.get("status") or {}
    ready = next((c for c in st.get("conditions") or [] if c.get("type") == "Ready"), None)
    status = "Unknown"
    if ready is not None:
        status = {"True": "Ready", "False": "NotReady"}.get(ready.get("status"), "Unknown")
    if (n.get("spec") or {}).get("unschedulable"):
        status += ",SchedulingDisabled"
    labels = _meta(n).get("labels") or {}
    roles = sorted(k.split("/", 1)[1] for k in labels if k.startswith("node-role.kubernetes.io/"))
    addr = {a.get("type"): a.get("address") for a in st.get("addresses") or []}
    info = st.get("nodeInfo") or {}
    return [
        _meta(n).get("name"),
        status,
        ",".join(roles) or "<none>",
        _age(n),
        info.get("kubeletVersion", ""),
        addr.get("InternalIP", "<none>"),
        addr.get("ExternalIP", "<none>"),
        info.get("osImage", ""),
        info.get("kernelVersion", ""),
        info.get("containerRuntimeVersion", ""),
    ]


def _event_row(e: Obj) -> list[Any]:
    """A core/v1 Event, or an events.k8s.io/v1 one (regarding, note, series and
    deprecatedLastTimestamp are its names for the same facts)."""
    io = e.get("involvedObject") or e.get("regarding") or {}
    series = e.get("series") if isinstance(e.get("series"), dict) else {}
    last = (
        (series or {}).get("lastObservedTime")
        or e.get("lastTimestamp")
        or e.get("deprecatedLastTimestamp")
        or e.get("eventTime")
        or _meta(e).get("creationTimestamp")
    )
    return [
        age(last),
        e.get("type", ""),
        e.get("reason", ""),
        f"{str(io.get('kind', '')).lower()}/{io.get('name', '')}",
        e.get("message") or e.get("note") or "",
    ]


_C = tuple[str, str, int]  # name, type, priority (1 = wide only)
_BUILTIN: dict[str, tuple[list[_C], Callable[[Obj], list[Any]]]] = {
    "Pod": (
        [
            ("Name", "string", 0),
            ("Ready", "string", 0),
            ("Status", "string", 0),
            ("Restarts", "integer", 0),
            ("Age", "string", 0),
            ("IP", "string", 1),
            ("Node", "string", 1),
            ("Nominated Node", "string", 1),
            ("Readiness Gates", "string", 1),
        ],
        _pod_row,
    ),
    "Node": (
        [
            ("Name", "string", 0),
            ("Status", "string", 0),
            ("Roles", "string", 0),
            ("Age", "string", 0),
            ("Version", "string", 0),
            ("Internal-IP", "string", 1),
            ("External-IP", "string", 1),
            ("OS-Image", "string", 1),
            ("Kernel-Version", "string", 1),
            ("Container-Runtime", "string", 1),
        ],
        _node_row,
    ),
    "Namespace": (
        [("Name", "string", 0), ("Status", "string", 0), ("Age", "string", 0)],
        lambda o: [_meta(o).get("name"), (o.get("status") or {}).get("phase", "Active"), _age(o)],
    ),
    "Event": (
        [
            ("Last Seen", "string", 0),
            ("Type", "string", 0),
            ("Reason", "string", 0),
            ("Object", "string", 0),
            ("Message", "string", 0),
        ],
        _event_row,
    ),
    "Lease": (
        [("Name", "string", 0), ("Holder", "string", 0), ("Age", "string", 0)],
        lambda o: [_meta(o).get("name"), (o.get("spec") or {}).get("holderIdentity", ""), _age(o)],
    ),
    "ConfigMap": (
        [("Name", "string", 0), ("Data", "integer", 0), ("Age", "string", 0)],
        lambda o: [
            _meta(o).get("name"),
            len(o.get("data") or {}) + len(o.get("binaryData") or {}),
            _age(o),
        ],
    ),
    "Service": (
        [
            ("Name", "string", 0),
            ("Type", "string", 0),
            ("Cluster-IP", "string", 0),
            ("Ports", "string", 0),
            ("Age", "string", 0),
        ],
        lambda o: [
            _meta(o).get("name"),
            (o.get("spec") or {}).get("type", "ClusterIP"),
            (o.get("spec") or {}).get("clusterIP") or "None",
            ",".join(
                f"{p.get('port')}/{p.get('protocol', 'TCP')}"
                for p in (o.get("spec") or {}).get("ports") or []
            )
            or "<none>",
            _age(o),
        ],
    ),
    "PriorityClass": (
        [
            ("Name", "string", 0),
            ("Value", "integer", 0),
            ("Global-Default", "boolean", 0),
            ("Age", "string", 0),
        ],
        lambda o: [_meta(o).get("name"), o.get("value", 0), bool(o.get("globalDefault")), _age(o)],
    ),
    "Deployment": (
        [
            ("Name", "string", 0),
            ("Ready", "string", 0),
            ("Up-to-date", "integer", 0),
            ("Available", "integer", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        lambda o: [
            _meta(o).get("name"),
            f"{_status(o).get('readyReplicas', 0)}/{_spec(o).get('replicas', 1)}",
            _status(o).get("updatedReplicas", 0),
            _status(o).get("availableReplicas", 0),
            _age(o),
            *_containers(o),
            _selector(o),
        ],
    ),
    "ReplicaSet": (
        [
            ("Name", "string", 0),
            ("Desired", "integer", 0),
            ("Current", "integer", 0),
            ("Ready", "integer", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        lambda o: [
            _meta(o).get("name"),
            _spec(o).get("replicas", 1),
            _status(o).get("replicas", 0),
            _status(o).get("readyReplicas", 0),
            _age(o),
            *_containers(o),
            _selector(o),
        ],
    ),
    "ReplicationController": (
        [
            ("Name", "string", 0),
            ("Desired", "integer", 0),
            ("Current", "integer", 0),
            ("Ready", "integer", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        lambda o: [
            _meta(o).get("name"),
            _spec(o).get("replicas", 1),
            _status(o).get("replicas", 0),
            _status(o).get("readyReplicas", 0),
            _age(o),
            *_containers(o),
            ",".join(f"{k}={v}" for k, v in (_spec(o).get("selector") or {}).items()) or "<none>",
        ],
    ),
    "PodDisruptionBudget": (
        [
            ("Name", "string", 0),
            ("Min Available", "string", 0),
            ("Max Unavailable", "string", 0),
            ("Allowed Disruptions", "integer", 0),
            ("Age", "string", 0),
        ],
        lambda o: [
            _meta(o).get("name"),
            str(_spec(o)["minAvailable"]) if "minAvailable" in _spec(o) else "N/A",
            str(_spec(o)["maxUnavailable"]) if "maxUnavailable" in _spec(o) else "N/A",
            _status(o).get("disruptionsAllowed", 0),
            _age(o),
        ],
    ),
    "StatefulSet": (
        [
            ("Name", "string", 0),
            ("Ready", "string", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
        ],
        lambda o: [
            _meta(o).get("name"),
            f"{_status(o).get('readyReplicas', 0)}/{_spec(o).get('replicas', 1)}",
            _age(o),
            *_containers(o),
        ],
    ),
    "Job": (
        [
            ("Name", "string", 0),
            ("Status", "string", 0),
            ("Completions", "string", 0),
            ("Duration", "string", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        lambda o: [
            _meta(o).get("name"),
            _job_status(o),
            _job_completions(o),
            _job_duration(o),
            _age(o),
            *_containers(o),
            _selector(o),
        ],
    ),
    "CronJob": (
        [
            ("Name", "string", 0),
            ("Schedule", "string", 0),
            ("Timezone", "string", 0),
            ("Suspend", "boolean", 0),
            ("Active", "integer", 0),
            ("Last Schedule", "string", 0),
            ("Age", "string", 0),
        ],
        lambda o: [
            _meta(o).get("name"),
            _spec(o).get("schedule", ""),
            _spec(o).get("timeZone") or "<none>",
            "True" if _spec(o).get("suspend") else "False",  # kubectl prints it so
            len(_status(o).get("active") or []),
            age(_status(o)["lastScheduleTime"]) if _status(o).get("lastScheduleTime") else "<none>",
            _age(o),
        ],
    ),
    "Secret": (
        [
            ("Name", "string", 0),
            ("Type", "string", 0),
            ("Data", "integer", 0),
            ("Age", "string", 0),
        ],
        lambda o: [
            _meta(o).get("name"),
            o.get("type", "Opaque"),
            len(o.get("data") or {}),
            _age(o),
        ],
    ),
    "ServiceAccount": (
        [("Name", "string", 0), ("Secrets", "integer", 0), ("Age", "string", 0)],
        lambda o: [_meta(o).get("name"), len(o.get("secrets") or []), _age(o)],
    ),
    "CustomResourceDefinition": (
        [("Name", "string", 0), ("Created At", "date", 0)],
        lambda o: [_meta(o).get("name"), _meta(o).get("creationTimestamp", "")],
    ),
}

_SEG = re.compile(r"\.([^.\[\]]+)|\[(\d+)\]")


def jsonpath(obj: Any, path: str) -> Any:
    """The subset of JSONPath that printer columns use: `.a.b[0].c`."""
    cur = obj
    for m in _SEG.finditer(path.strip().lstrip("$").replace("{", "").replace("}", "")):
        key, idx = m.groups()
        if key is not None:
            cur = cur.get(key) if isinstance(cur, dict) else None
        else:
            cur = cur[int(idx)] if isinstance(cur, list) and int(idx) < len(cur) else None
        if cur is None:
            return None
    return cur


def _custom(res: Resource) -> tuple[list[_C], Callable[[Obj], list[Any]]]:
    cols = [c for c in res.printer_columns if c.get("name")]
    defs: list[_C] = [("Name", "string", 0)]
    for c in cols:
        defs.append((str(c["name"]), str(c.get("type", "string")), int(c.get("priority", 0))))
    has_age = any(str(c["name"]).lower() == "age" for c in cols)
    if not has_age:
        defs.append(("Age", "string", 0))

    def row(o: Obj) -> list[Any]:
        out: list[Any] = [_meta(o).get("name")]
        for c in cols:
            v = jsonpath(o, str(c.get("jsonPath", "")))
            if c.get("type") == "date" and isinstance(v, str):
                v = age(v)
            out.append("<none>" if v is None else v)
        if not has_age:
            out.append(_age(o))
        return out

    return defs, row


def to_table(
    resource: Resource,
    objs: list[Obj],
    include_object: str = "Metadata",
    list_meta: Obj | None = None,
) -> Obj:
    if resource.custom:
        defs, row = _custom(resource)
    elif resource.kind in _BUILTIN:
        defs, row = _BUILTIN[resource.kind]
    else:
        defs, row = (
            [("Name", "string", 0), ("Age", "string", 0)],
            lambda o: [_meta(o).get("name"), _age(o)],
        )
    rows = []
    for o in objs:
        r: Obj = {"cells": row(o)}
        if include_object == "Object":
            r["object"] = o
        elif include_object != "None":
            r["object"] = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": _meta(o),
            }
        rows.append(r)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": dict(list_meta or {}),
        "columnDefinitions": [
            {
                "name": n,
                "type": t,
                "format": "name" if n == "Name" else "",
                "description": "",
                "priority": p,
            }
            for n, t, p in defs
        ],
        "rows": rows,
    }
