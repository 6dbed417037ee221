"""Per-kind rules of kube-apiserver that the API definitions cannot say.

One small strategy per kind, keyed by (group, kind), as kube-apiserver's registry has
them: which name syntax the kind's objects use, what may not change on update
(a pod's spec apart from what Kubernetes lets change, a Service's clusterIP,
workload selectors, a Node's podCIDR once set, immutable ConfigMaps and Secrets,
role bindings' roleRef, ...), what a workload's selector must match, and what an
update inherits from the stored object when it leaves it out (fields that
kube-apiserver would default again to the same values). Pure functions over plain
objects; causes are Kubernetes-shaped `{"reason", "message", "field"}`.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

from gpuyard.apiserver import ephemeral, object_rules
from gpuyard.apiserver.resources import Resource

Cause = dict[str, str]
Obj = dict[str, Any]

ANNOTATIONS_MAX_BYTES = 256 * 1024

_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def _cause(field: str, message: str, reason: str = "FieldValueInvalid") -> Cause:
    return {"reason": reason, "message": message, "field": field}


# ------------------------------------------------------------------ names


def _subdomain(name: str) -> str | None:
    if len(name) > 253:
        return "must be no more than 253 characters"
    if not _DNS1123_SUBDOMAIN.match(name):
        return (
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
            "characters, '-' or '.', and must start and end with an alphanumeric character "
            "(e.g. 'example.com', regex used for validation is "
            "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        )
    return None


def _label1123(name: str) -> str | None:
    if len(name) > 63:
        return "must be no more than 63 characters"
    if not _DNS1123_LABEL.match(name):
        return (
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters "
            "or '-', and must start and end with an alphanumeric character (e.g. 'my-name', "
            "or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
        )
    return None


def _label1035(name: str) -> str | None:
    if len(name) > 63:
        return "must be no more than 63 characters"
    if not _DNS1035_LABEL.match(name):
        return (
            "a DNS-1035 label must consist of lower case alphanumeric characters or '-', "
            "start with an alphabetic character, and end with an alphanumeric character "
            "(e.g. 'my-name', or 'abc-123', regex used for validation is "
            "'[a-z]([-a-z0-9]*[a-z0-9])?')"
        )
    return None


def _path_segment(name: str) -> str | None:
    if name in (".", ".."):
        return f"may not be '{name}'"
    for bad in ("/", "%"):
        if bad in name:
            return f"may not contain '{bad}'"
    return None


NameRule = Callable[[str], "str | None"]

# kind -> name rule; every other kind's names are DNS-1123 subdomains.
_NAME_RULES: dict[tuple[str, str], NameRule] = {
    ("", "Namespace"): _label1123,
    ("", "Service"): _label1035,
    ("rbac.authorization.k8s.io", "Role"): _path_segment,
    ("rbac.authorization.k8s.io", "ClusterRole"): _path_segment,
    ("rbac.authorization.k8s.io", "RoleBinding"): _path_segment,
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"): _path_segment,
}


def name_causes(res: Resource, md: Obj) -> list[Cause]:
    """metadata.name and metadata.generateName by the kind's name rule."""
    rule = _NAME_RULES.get((res.group, res.kind), _subdomain)
    out: list[Cause] = []
    name = md.get("name")
    if isinstance(name, str) and name:
        why = rule(name)
        if why:
            out.append(_cause("metadata.name", f"Invalid value: {_q(name)}: {why}"))
    gen = md.get("generateName")
    if isinstance(gen, str) and gen:
        # A prefix: checked as a name with the random suffix's place kept.
        prefix = gen[:-1] if gen.endswith("-") and rule is not _path_segment else gen
        why = rule(prefix + "a" if rule is not _path_segment else prefix) if prefix else None
        if why:
            out.append(_cause("metadata.generateName", f"Invalid value: {_q(gen)}: {why}"))
    return out


def annotation_causes(md: Obj) -> list[Cause]:
    ann = md.get("annotations")
    if not isinstance(ann, dict):
        return []
    total = 0
    for k, v in ann.items():
        total += len(str(k).encode()) + (len(v.encode()) if isinstance(v, str) else 0)
    if total > ANNOTATIONS_MAX_BYTES:
        return [
            _cause(
                "metadata.annotations",
                f"Too long: must have at most {ANNOTATIONS_MAX_BYTES} bytes",
                "FieldValueTooLong",
            )
        ]
    return []


def _q(v: Any) -> str:
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


# ------------------------------------------------------------------ selectors


def _selector_matches(sel: Any, labels: Any) -> bool:
    if not isinstance(sel, dict):
        return False
    labels = labels if isinstance(labels, dict) else {}
    for k, v in (sel.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for req in sel.get("matchExpressions") or []:
        if not isinstance(req, dict):
            return False
        key, op, vals = req.get("key"), req.get("operator"), req.get("values") or []
        if op == "In" and labels.get(key) not in vals:
            return False
        if op == "NotIn" and key in labels and labels[key] in vals:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def _empty_selector(sel: Any) -> bool:
    return not isinstance(sel, dict) or not (sel.get("matchLabels") or sel.get("matchExpressions"))


def _workload_create(obj: Obj) -> list[Cause]:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return []
    sel = spec.get("selector")
    out: list[Cause] = []
    if sel is not None and _empty_selector(sel):
        out.append(
            _cause("spec.selector", "Invalid value: empty selector is invalid for deployment")
        )
        return out
    tpl = spec.get("template")
    labels = ((tpl or {}).get("metadata") or {}).get("labels") if isinstance(tpl, dict) else None
    if sel is not None and not _selector_matches(sel, labels):
        out.append(
            _cause(
                "spec.template.metadata.labels",
                f"Invalid value: {_labels_repr(labels)}: `selector` does not match template "
                "`labels`",
            )
        )
    return out


def _labels_repr(labels: Any) -> str:
    if not isinstance(labels, dict):
        return "map[string]string(nil)"
    inner = ", ".join(f"{_q(k)}:{_q(v)}" for k, v in sorted(labels.items()))
    return "map[string]string{" + inner + "}"


def _immutable(field: str, value: Any) -> Cause:
    return _cause(field, f"Invalid value: {_repr(value)}: field is immutable")


def _repr(v: Any) -> str:
    if isinstance(v, str):
        return _q(v)
    import orjson

    return orjson.dumps(v).decode()


def _same_at(new: Obj, old: Obj, *path: str) -> tuple[bool, Any]:
    a: Any = new
    b: Any = old
    for p in path:
        a = a.get(p) if isinstance(a, dict) else None
        b = b.get(p) if isinstance(b, dict) else None
    return a == b, a


def _selector_immutable(new: Obj, old: Obj) -> list[Cause]:
    same, value = _same_at(new, old, "spec", "selector")
    return [] if same else [_immutable("spec.selector", value)]


# ------------------------------------------------------------------ pods

_POD_SPEC_MESSAGE = (
    "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,"
    "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` "
    "(only additions to existing tolerations),`spec.terminationGracePeriodSeconds` "
    "(allow it to be set to 1 if it was previously negative)"
)
# Defaulted on create: an update that leaves one out keeps the stored value, as
# kube-apiserver would default it again.
_POD_DEFAULTED = (
    "restartPolicy",
    "schedulerName",
    "terminationGracePeriodSeconds",
    "dnsPolicy",
    "priority",
    "priorityClassName",
    "preemptionPolicy",
    "securityContext",
    "enableServiceLinks",
)


def _pod_mutable_blanked(spec: Any, grace_from_negative: bool = False) -> Any:
    if not isinstance(spec, dict):
        return spec
    s = copy.deepcopy(spec)
    for key in ("containers", "initContainers"):
        for c in s.get(key) or []:
            if isinstance(c, dict):
                c.pop("image", None)
    for key in ("activeDeadlineSeconds", "tolerations"):
        s.pop(key, None)
    if grace_from_negative:
        s.pop("terminationGracePeriodSeconds", None)
    s.pop("schedulingGates", None)
    s.pop("ephemeralContainers", None)  # pods/ephemeralcontainers has rules of its own
    return s


def _pod_update(new: Obj, old: Obj) -> list[Cause]:
    ns, os_ = new.get("spec"), old.get("spec")
    if ns == os_ or not isinstance(ns, dict) or not isinstance(os_, dict):
        return []  # status writes and metadata changes: nothing to compare
    out: list[Cause] = []
    old_grace = os_.get("terminationGracePeriodSeconds")
    from_negative = (
        isinstance(old_grace, int)
        and old_grace < 0
        and ns.get("terminationGracePeriodSeconds") == 1
    )
    if _pod_mutable_blanked(ns, from_negative) != _pod_mutable_blanked(os_, from_negative):
        field = "spec"
        if ns.get("nodeName") != os_.get("nodeName") and os_.get("nodeName"):
            field = "spec.nodeName"
        out.append(_cause(field, _POD_SPEC_MESSAGE, "FieldValueForbidden"))
        return out
    old_tol = os_.get("tolerations") or []
    new_tol = ns.get("tolerations") or []
    if isinstance(new_tol, list) and any(t not in new_tol for t in old_tol):
        out.append(_cause("spec.tolerations", _POD_SPEC_MESSAGE, "FieldValueForbidden"))
    old_gates = os_.get("schedulingGates") or []
    new_gates = ns.get("schedulingGates") or []
    if isinstance(new_gates, list) and any(g not in old_gates for g in new_gates):
        out.append(
            _cause(
                "spec.schedulingGates",
                "Forbidden: only deletion is allowed, but found new scheduling gate",
                "FieldValueForbidden",
            )
        )
    return out


def _pod_prepare(new: Obj, old: Obj) -> None:
    ns, os_ = new.get("spec"), old.get("spec")
    if isinstance(ns, dict) and isinstance(os_, dict):
        for k in _POD_DEFAULTED:
            if k not in ns and k in os_:
                ns[k] = os_[k]
    ephemeral.keep_stored(new, old)  # changed only through pods/ephemeralcontainers


# ------------------------------------------------------------------ other kinds


def _service_prepare(new: Obj, old: Obj) -> None:
    ns, os_ = new.get("spec"), old.get("spec")
    if isinstance(ns, dict) and isinstance(os_, dict):
        for k in ("clusterIP", "clusterIPs"):
            if not ns.get(k) and os_.get(k):
                ns[k] = os_[k]


def _service_update(new: Obj, old: Obj) -> list[Cause]:
    old_ip = (old.get("spec") or {}).get("clusterIP")
    if not old_ip:
        return []
    same, value = _same_at(new, old, "spec", "clusterIP")
    if same or (old.get("spec") or {}).get("type") == "ExternalName":
        return []
    return [_immutable("spec.clusterIP", value)]


def _node_update(new: Obj, old: Obj) -> list[Cause]:
    out: list[Cause] = []
    for key in ("podCIDR", "providerID"):
        was = (old.get("spec") or {}).get(key)
        now = (new.get("spec") or {}).get(key) if isinstance(new.get("spec"), dict) else None
        if was and now != was:
            out.append(
                _cause(
                    f"spec.{key}",
                    f'Forbidden: node updates may not change {key} except from "" to valid',
                    "FieldValueForbidden",
                )
            )
    cidrs_was = (old.get("spec") or {}).get("podCIDRs")
    cidrs_now = (
        (new.get("spec") or {}).get("podCIDRs") if isinstance(new.get("spec"), dict) else None
    )
    if cidrs_was and cidrs_now != cidrs_was:
        out.append(
            _cause(
                "spec.podCIDRs",
                'Forbidden: node updates may not change podCIDR except from "" to valid',
                "FieldValueForbidden",
            )
        )
    return out


def _data_update(new: Obj, old: Obj) -> list[Cause]:
    """ConfigMaps and Secrets marked immutable."""
    if old.get("immutable") is not True:
        return []
    out: list[Cause] = []
    if new.get("immutable") is not True:
        out.append(
            _cause(
                "immutable",
                "Forbidden: field is immutable when `immutable` is set",
                "FieldValueForbidden",
            )
        )
    for key in ("data", "binaryData", "stringData"):
        if (new.get(key) or {}) != (old.get(key) or {}):
            out.append(
                _cause(
                    key,
                    "Forbidden: field is immutable when `immutable` is set",
                    "FieldValueForbidden",
                )
            )
    return out


def _secret_update(new: Obj, old: Obj) -> list[Cause]:
    out = _data_update(new, old)
    if (new.get("type") or "Opaque") != (old.get("type") or "Opaque"):
        out.append(_immutable("type", new.get("type")))
    return out


def _role_binding_update(new: Obj, old: Obj) -> list[Cause]:
    if new.get("roleRef") != old.get("roleRef"):
        return [
            _cause("roleRef", f"Invalid value: {_repr(new.get('roleRef'))}: cannot change roleRef")
        ]
    return []


def _priority_class_update(new: Obj, old: Obj) -> list[Cause]:
    out: list[Cause] = []
    if new.get("value") != old.get("value"):
        out.append(
            _cause("value", "Forbidden: may not be changed in an update.", "FieldValueForbidden")
        )
    if (new.get("preemptionPolicy") or "PreemptLowerPriority") != (
        old.get("preemptionPolicy") or "PreemptLowerPriority"
    ):
        out.append(_immutable("preemptionPolicy", new.get("preemptionPolicy")))
    return out


def _crd_update(new: Obj, old: Obj) -> list[Cause]:
    same, value = _same_at(new, old, "spec", "scope")
    return [] if same else [_immutable("spec.scope", value)]


def _workload_update(new: Obj, old: Obj) -> list[Cause]:
    return _selector_immutable(new, old) + _workload_create(new)


_UPDATE_RULES: dict[tuple[str, str], Callable[[Obj, Obj], list[Cause]]] = {
    ("", "Pod"): _pod_update,
    ("", "Service"): _service_update,
    ("", "Node"): _node_update,
    ("", "ConfigMap"): _data_update,
    ("", "Secret"): _secret_update,
    ("apps", "Deployment"): _workload_update,
    ("apps", "ReplicaSet"): _workload_update,
    ("apps", "StatefulSet"): _workload_update,
    ("apps", "DaemonSet"): _workload_update,
    ("batch", "Job"): _selector_immutable,
    ("rbac.authorization.k8s.io", "RoleBinding"): _role_binding_update,
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"): _role_binding_update,
    ("scheduling.k8s.io", "PriorityClass"): _priority_class_update,
    ("apiextensions.k8s.io", "CustomResourceDefinition"): _crd_update,
}
_CREATE_RULES: dict[tuple[str, str], Callable[[Obj], list[Cause]]] = {
    ("apps", "Deployment"): _workload_create,
    ("apps", "ReplicaSet"): _workload_create,
    ("apps", "StatefulSet"): _workload_create,
    ("apps", "DaemonSet"): _workload_create,
}
_PREPARE_UPDATE: dict[tuple[str, str], Callable[[Obj, Obj], None]] = {
    ("", "Pod"): _pod_prepare,
    ("", "Service"): _service_prepare,
}
# Kinds whose status is the system's to write, so a create starts without one
# (Pods, Namespaces and CRDs get theirs from their own defaults; Nodes keep theirs).
_STATUS_RESET_ON_CREATE = frozenset(
    {
        ("", "Service"),
        ("apps", "Deployment"),
        ("apps", "ReplicaSet"),
        ("apps", "StatefulSet"),
        ("apps", "DaemonSet"),
        ("batch", "Job"),
        ("policy", "PodDisruptionBudget"),
    }
)


def prepare_for_create(res: Resource, obj: Obj) -> None:
    if not res.custom and (res.group, res.kind) in _STATUS_RESET_ON_CREATE:
        obj.pop("status", None)


def prepare_for_update(res: Resource, new: Obj, old: Obj) -> None:
    """Fill in what an update left out and kube-apiserver would set again."""
    if res.custom:
        return
    fn = _PREPARE_UPDATE.get((res.group, res.kind))
    if fn is not None:
        fn(new, old)


def _spec(obj: Obj) -> Any:
    return obj.get("spec")


def _template(obj: Obj) -> Any:
    return obj.get("template")


def _webhooks(obj: Obj) -> Any:
    return obj.get("webhooks")


def _endpoint_slice(obj: Obj) -> Any:
    # everything but metadata, and the labels
    rest = {k: v for k, v in obj.items() if k not in ("metadata", "apiVersion", "kind")}
    return rest, (obj.get("metadata") or {}).get("labels")


# The kinds that have a metadata.generation, and the part of an object whose change adds
# one to it. Facts of kube-apiserver 1.37's registry strategies (pkg/registry/<group>/
# <kind>/strategy.go): their PrepareForCreate sets the generation to 1 and their
# PrepareForUpdate adds one when this part differs from the stored object's. Every other
# built-in kind (ConfigMap, Secret, Node, Namespace, Service, Lease, Event, ResourceClaim,
# ServiceCIDR, Workload, PodGroup, ...) has none: its generation is whatever the client
# gave on create, and an update cannot change it. A pod's ephemeralcontainers update
# counts as a spec change (handlers.py). HorizontalPodAutoscaler: behind kube's
# HPAGeneration feature gate, on by default.
_GENERATION_PART: dict[tuple[str, str], Callable[[Obj], Any]] = {
    ("", "Pod"): _spec,
    ("", "PodTemplate"): _template,
    ("", "ReplicationController"): _spec,
    ("apps", "Deployment"): _spec,
    ("apps", "ReplicaSet"): _spec,
    ("apps", "StatefulSet"): _spec,
    ("apps", "DaemonSet"): _spec,
    ("batch", "Job"): _spec,
    ("batch", "CronJob"): _spec,
    ("autoscaling", "HorizontalPodAutoscaler"): _spec,
    ("policy", "PodDisruptionBudget"): _spec,
    ("apiextensions.k8s.io", "CustomResourceDefinition"): _spec,
    ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration"): _webhooks,
    ("admissionregistration.k8s.io", "MutatingWebhookConfiguration"): _webhooks,
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy"): _spec,
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicyBinding"): _spec,
    ("admissionregistration.k8s.io", "MutatingAdmissionPolicy"): _spec,
    ("admissionregistration.k8s.io", "MutatingAdmissionPolicyBinding"): _spec,
    ("networking.k8s.io", "Ingress"): _spec,
    ("networking.k8s.io", "IngressClass"): _spec,
    ("networking.k8s.io", "NetworkPolicy"): _spec,
    ("discovery.k8s.io", "EndpointSlice"): _endpoint_slice,
    ("flowcontrol.apiserver.k8s.io", "FlowSchema"): _spec,
    ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration"): _spec,
    ("resource.k8s.io", "DeviceClass"): _spec,
    ("resource.k8s.io", "ResourceSlice"): _spec,
    ("resource.k8s.io", "DeviceTaintRule"): _spec,
}


def has_generation(res: Resource) -> bool:
    """Whether the kind's objects get metadata.generation 1 on create (and a new one
    on each change of generation_part): custom resources always."""
    return res.custom or (res.group, res.kind) in _GENERATION_PART


def generation_part(res: Resource, obj: Obj) -> Any:
    """What of obj counts for its generation (has_generation(res) only). A custom
    resource: all but its metadata and, when its status subresource is enabled, its
    status (without one, a status change counts too)."""
    if res.custom:
        skip = ("metadata", "status") if "status" in res.subresources else ("metadata",)
        return {k: v for k, v in obj.items() if k not in skip and k not in ("apiVersion", "kind")}
    return _GENERATION_PART[(res.group, res.kind)](obj)


def validate(res: Resource, obj: Obj, old: Obj | None) -> list[Cause]:
    """The kind's own rules for a create (old None) or an update."""
    if res.custom:
        return []
    key = (res.group, res.kind)
    out: list[Cause] = []
    if old is None:
        fn = _CREATE_RULES.get(key)
        more = object_rules.CREATE.get(key)
        out += fn(obj) if fn is not None else []
        out += more(obj) if more is not None else []
        return out
    upd = _UPDATE_RULES.get(key)
    more_upd = object_rules.UPDATE.get(key)
    out += upd(obj, old) if upd is not None else []
    out += more_upd(obj, old) if more_upd is not None else []
    return out


# ------------------------------------------------------------------ delete answers

# Kinds whose DELETE answers with the deleted object: kube-apiserver's stores that set
# ReturnDeletedObject (pods, serviceaccounts, persistentvolumes, persistentvolumeclaims,
# services, storageclasses) and the kinds with a delete of their own (namespaces and
# CustomResourceDefinitions, which finalize first). Every other kind, custom resources
# included, answers a Status that names what was deleted; any object that is not gone
# yet (finalizers, a graceful pod) is answered as it now is.
_DELETE_RETURNS_OBJECT = frozenset(
    {
        ("", "pods"),
        ("", "serviceaccounts"),
        ("", "persistentvolumes"),
        ("", "persistentvolumeclaims"),
        ("", "services"),
        ("", "namespaces"),
        ("storage.k8s.io", "storageclasses"),
        ("apiextensions.k8s.io", "customresourcedefinitions"),
    }
)


def delete_returns_object(res: Resource) -> bool:
    return not res.custom and res.key in _DELETE_RETURNS_OBJECT


def delete_status(res: Resource, obj: Obj) -> Obj:
    """The Status of an object deleted at once, as kube-apiserver writes it (details.kind
    is the resource, and there is no code)."""
    md = obj.get("metadata") or {}
    details: Obj = {"name": md.get("name", "")}
    if res.group:
        details["group"] = res.group
    details["kind"] = res.plural
    if md.get("uid"):
        details["uid"] = md["uid"]
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    }
