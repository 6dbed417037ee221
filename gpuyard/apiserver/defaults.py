"""Built-in defaults of Kubernetes 1.37, set where kube-apiserver sets them: when a body
is decoded (create, update, patch, and again after a mutating webhook).

kube-apiserver's generated defaulters walk each type and call the `SetDefaults_<Type>`
of every type met on the way, so a PodSpec inside a Deployment's template gets the same
defaults as a Pod's. The same is done here from the API definitions as data
(`schemas.definitions()`): the facts below say, per definition, which fields default to
what (`CONSTANT`) or are worked out from the object (`COMPUTED`); where each definition
occurs is read from the definitions, and one defaulter per kind is compiled once, visiting
only the fields under which some default can apply (kinds with none cost nothing).

Defaults that need the cluster's state (a Service's cluster IP and node ports, a pod's
priority and default tolerations, which are admission plugins in kube-apiserver) are in
`on_create` / `on_update`; the allocators are in `gpuyard.apiserver.allocation`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import orjson

from gpuyard.apiserver import allocation, schemas
from gpuyard.apiserver.errors import APIError, invalid
from gpuyard.apiserver.resources import Resource
from gpuyard.apiserver.store import Entry, Store, make_key

Obj = dict[str, Any]
Defaulter = Callable[[Obj], None]

_CORE = "io.k8s.api.core.v1."
_APPS = "io.k8s.api.apps.v1."
_BATCH = "io.k8s.api.batch.v1."
_RBAC = "io.k8s.api.rbac.v1."
_ADM = "io.k8s.api.admissionregistration.v1."
_NET = "io.k8s.api.networking.v1."
_DISC = "io.k8s.api.discovery.v1."
_CONTAINER = {"terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"}
_WEBHOOK = {
    "failurePolicy": "Fail",
    "matchPolicy": "Equivalent",
    "namespaceSelector": {},
    "objectSelector": {},
    "timeoutSeconds": 10,
}

# definition -> field -> value, set when the field is absent or null (or "" for strings).
_APIEXT = "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1."

CONSTANT: dict[str, dict[str, Any]] = {
    # a CRD converts by apiVersion alone unless it says otherwise (crdversions.py)
    _APIEXT + "CustomResourceDefinitionSpec": {"conversion": {"strategy": "None"}},
    _APIEXT + "ServiceReference": {"port": 443},
    _CORE + "PodSpec": {
        "dnsPolicy": "ClusterFirst",
        "restartPolicy": "Always",
        "securityContext": {},
        "terminationGracePeriodSeconds": 30,
        "schedulerName": "default-scheduler",
    },
    _CORE + "Container": _CONTAINER,
    _CORE + "EphemeralContainer": _CONTAINER,
    _CORE + "ContainerPort": {"protocol": "TCP"},
    _CORE + "ServicePort": {"protocol": "TCP"},
    _CORE + "EndpointPort": {"protocol": "TCP"},
    _CORE + "Probe": {
        "timeoutSeconds": 1,
        "periodSeconds": 10,
        "successThreshold": 1,
        "failureThreshold": 3,
    },
    _CORE + "HTTPGetAction": {"path": "/", "scheme": "HTTP"},
    _CORE + "ObjectFieldSelector": {"apiVersion": "v1"},
    _CORE + "SecretVolumeSource": {"defaultMode": 0o644},
    _CORE + "ConfigMapVolumeSource": {"defaultMode": 0o644},
    _CORE + "DownwardAPIVolumeSource": {"defaultMode": 0o644},
    _CORE + "ProjectedVolumeSource": {"defaultMode": 0o644},
    _CORE + "ServiceAccountTokenProjection": {"expirationSeconds": 3600},
    _CORE + "HostPathVolumeSource": {"type": ""},
    _CORE + "PersistentVolumeClaimSpec": {"volumeMode": "Filesystem"},
    _CORE + "PersistentVolumeSpec": {
        "persistentVolumeReclaimPolicy": "Retain",
        "volumeMode": "Filesystem",
    },
    _CORE + "Secret": {"type": "Opaque"},
    _CORE + "NamespaceStatus": {"phase": "Active"},
    # struct fields of a status that Go always writes, so a new object shows them
    _CORE + "ServiceStatus": {"loadBalancer": {}},
    _NET + "IngressStatus": {"loadBalancer": {}},
    _CORE + "ReplicationControllerSpec": {"replicas": 1},
    _APPS + "DeploymentSpec": {
        "replicas": 1,
        "revisionHistoryLimit": 10,
        "progressDeadlineSeconds": 600,
    },
    _APPS + "ReplicaSetSpec": {"replicas": 1},
    _APPS + "StatefulSetSpec": {
        "replicas": 1,
        "podManagementPolicy": "OrderedReady",
        "revisionHistoryLimit": 10,
    },
    _APPS + "StatefulSetPersistentVolumeClaimRetentionPolicy": {
        "whenDeleted": "Retain",
        "whenScaled": "Retain",
    },
    _APPS + "DaemonSetSpec": {"revisionHistoryLimit": 10},
    _BATCH + "CronJobSpec": {
        "concurrencyPolicy": "Allow",
        "suspend": False,
        "successfulJobsHistoryLimit": 3,
        "failedJobsHistoryLimit": 1,
    },
    "io.k8s.api.scheduling.v1.PriorityClass": {"preemptionPolicy": "PreemptLowerPriority"},
    _ADM + "ValidatingWebhook": _WEBHOOK,
    _ADM + "MutatingWebhook": {**_WEBHOOK, "reinvocationPolicy": "Never"},
    _ADM + "RuleWithOperations": {"scope": "*"},
    "io.k8s.api.admissionregistration.v1.ServiceReference": {"port": 443},
    _NET + "NetworkPolicyPort": {"protocol": "TCP"},
    _DISC + "EndpointPort": {"protocol": "TCP"},
    "io.k8s.api.autoscaling.v1.HorizontalPodAutoscalerSpec": {"minReplicas": 1},
    "io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerSpec": {"minReplicas": 1},
}


def _missing(o: Obj, k: str) -> bool:
    v = o.get(k)
    return v is None or v == ""


def _dict_at(o: Obj, k: str) -> Obj:
    v = o.get(k)
    if not isinstance(v, dict):
        v = o[k] = {}
    return v


# ------------------------------------------------------------------ computed defaults


def _image_tag(image: str) -> str:
    """The tag of an image reference: "latest" when it has neither tag nor digest."""
    name, at, _digest = image.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    tag = name[colon + 1 :] if colon > slash else ""
    return tag or ("" if at else "latest")


def _container(c: Obj) -> None:
    if _missing(c, "imagePullPolicy"):
        image = c.get("image")
        tag = _image_tag(image) if isinstance(image, str) else "latest"
        c["imagePullPolicy"] = "Always" if tag == "latest" else "IfNotPresent"


def _pod(pod: Obj) -> None:
    spec = _dict_at(pod, "spec")
    for key in ("containers", "initContainers"):
        for c in spec.get(key) or ():
            if not isinstance(c, dict):
                continue
            res = c.get("resources")
            limits = res.get("limits") if isinstance(res, dict) else None
            if isinstance(res, dict) and isinstance(limits, dict) and limits:
                requests = _dict_at(res, "requests")
                for r, q in limits.items():
                    requests.setdefault(r, q)
    if spec.get("enableServiceLinks") is None:
        spec["enableServiceLinks"] = True
    if spec.get("hostNetwork") is True:
        for key in ("containers", "initContainers"):
            for c in spec.get(key) or ():
                for p in (c.get("ports") or ()) if isinstance(c, dict) else ():
                    if isinstance(p, dict) and not p.get("hostPort"):
                        p["hostPort"] = p.get("containerPort")


def _volume(v: Obj) -> None:
    sources = [k for k in v if k != "name" and v[k] is not None]
    if not sources:
        v["emptyDir"] = {}


def _service(svc: Obj) -> None:
    spec = _dict_at(svc, "spec")
    if _missing(spec, "sessionAffinity"):
        spec["sessionAffinity"] = "None"
    if spec["sessionAffinity"] == "None":
        spec.pop("sessionAffinityConfig", None)
    elif spec["sessionAffinity"] == "ClientIP":
        cfg = spec.get("sessionAffinityConfig")
        ip = cfg.get("clientIP") if isinstance(cfg, dict) else None
        if not isinstance(ip, dict) or ip.get("timeoutSeconds") is None:
            spec["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": 10800}}
    if _missing(spec, "type"):
        spec["type"] = "ClusterIP"
    typ = spec["type"]
    for p in spec.get("ports") or ():
        if not isinstance(p, dict):
            continue
        if _missing(p, "protocol"):
            p["protocol"] = "TCP"
        if p.get("targetPort") in (None, 0, ""):
            p["targetPort"] = p.get("port")
    external = typ in ("NodePort", "LoadBalancer") or bool(spec.get("externalIPs"))
    if external and _missing(spec, "externalTrafficPolicy"):
        spec["externalTrafficPolicy"] = "Cluster"
    if spec.get("internalTrafficPolicy") is None and typ in (
        "ClusterIP",
        "NodePort",
        "LoadBalancer",
    ):
        spec["internalTrafficPolicy"] = "Cluster"
    if typ == "LoadBalancer":
        if spec.get("allocateLoadBalancerNodePorts") is None:
            spec["allocateLoadBalancerNodePorts"] = True
        lb = (
            (svc.get("status") or {}).get("loadBalancer")
            if isinstance(svc.get("status"), dict)
            else None
        )
        for ing in (lb or {}).get("ingress") or () if isinstance(lb, dict) else ():
            if isinstance(ing, dict) and ing.get("ip") and ing.get("ipMode") is None:
                ing["ipMode"] = "VIP"


def _namespace(ns: Obj) -> None:
    md = ns.get("metadata")
    name = md.get("name") if isinstance(md, dict) else None
    if isinstance(md, dict) and isinstance(name, str) and name:
        labels = _dict_at(md, "labels")
        labels["kubernetes.io/metadata.name"] = name


def _node_status(st: Obj) -> None:
    if st.get("allocatable") is None and isinstance(st.get("capacity"), dict):
        st["allocatable"] = dict(st["capacity"])


def _deployment_strategy(spec: Obj) -> None:
    s = _dict_at(spec, "strategy")
    if _missing(s, "type"):
        s["type"] = "RollingUpdate"
    if s["type"] == "RollingUpdate":
        ru = _dict_at(s, "rollingUpdate")
        if ru.get("maxUnavailable") is None:
            ru["maxUnavailable"] = "25%"
        if ru.get("maxSurge") is None:
            ru["maxSurge"] = "25%"


def _deployment(d: Obj) -> None:
    _deployment_strategy(_dict_at(d, "spec"))


def _daemonset(d: Obj) -> None:
    s = _dict_at(_dict_at(d, "spec"), "updateStrategy")
    if _missing(s, "type"):
        s["type"] = "RollingUpdate"
    if s["type"] == "RollingUpdate":
        ru = _dict_at(s, "rollingUpdate")
        if ru.get("maxUnavailable") is None:
            ru["maxUnavailable"] = 1
        if ru.get("maxSurge") is None:
            ru["maxSurge"] = 0


def _statefulset(d: Obj) -> None:
    spec = _dict_at(d, "spec")
    s = _dict_at(spec, "updateStrategy")
    if _missing(s, "type"):
        s["type"] = "RollingUpdate"
        if s.get("rollingUpdate") is None:
            s["rollingUpdate"] = {}
    ru = s.get("rollingUpdate")
    if s["type"] == "RollingUpdate" and isinstance(ru, dict) and ru.get("partition") is None:
        ru["partition"] = 0
    if spec.get("persistentVolumeClaimRetentionPolicy") is None:
        spec["persistentVolumeClaimRetentionPolicy"] = {}  # filled by its own constants


def _job(job: Obj) -> None:
    spec = _dict_at(job, "spec")
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = 1
    if spec.get("parallelism") is None:
        spec["parallelism"] = 1
    if spec.get("backoffLimit") is None:
        spec["backoffLimit"] = 2**31 - 1 if spec.get("backoffLimitPerIndex") is not None else 6
    tpl = spec.get("template")
    labels = ((tpl or {}).get("metadata") or {}).get("labels") if isinstance(tpl, dict) else None
    md = job.get("metadata")
    if isinstance(labels, dict) and labels and isinstance(md, dict) and not md.get("labels"):
        md["labels"] = dict(labels)
    if _missing(spec, "completionMode"):
        spec["completionMode"] = "NonIndexed"
    if spec.get("suspend") is None:
        spec["suspend"] = False
    if _missing(spec, "podReplacementPolicy"):
        failed = spec.get("podFailurePolicy") is not None
        spec["podReplacementPolicy"] = "Failed" if failed else "TerminatingOrFailed"


def _replication_controller(rc: Obj) -> None:
    """An RC without a selector or labels takes its template's labels for both."""
    spec = _dict_at(rc, "spec")
    tpl = spec.get("template")
    labels = ((tpl or {}).get("metadata") or {}).get("labels") if isinstance(tpl, dict) else None
    if not isinstance(labels, dict) or not labels:
        return
    if not spec.get("selector"):
        spec["selector"] = dict(labels)
    md = rc.get("metadata")
    if isinstance(md, dict) and not md.get("labels"):
        md["labels"] = dict(labels)


def _subject(s: Obj) -> None:
    if _missing(s, "apiGroup") and s.get("kind") in ("User", "Group"):
        s["apiGroup"] = "rbac.authorization.k8s.io"


def _network_policy(np: Obj) -> None:
    spec = _dict_at(np, "spec")
    if not spec.get("policyTypes"):
        types = ["Ingress"]
        if spec.get("egress"):
            types.append("Egress")
        spec["policyTypes"] = types


_HPA_SCALE_UP = {
    "stabilizationWindowSeconds": 0,
    "selectPolicy": "Max",
    "policies": [
        {"type": "Pods", "value": 4, "periodSeconds": 15},
        {"type": "Percent", "value": 100, "periodSeconds": 15},
    ],
}
_HPA_SCALE_DOWN = {
    "stabilizationWindowSeconds": 300,
    "selectPolicy": "Max",
    "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}],
}


def _hpa_v2(hpa: Obj) -> None:
    """autoscaling/v2: no metrics means CPU at 80% utilization; a behavior given gets
    the default rules for what it leaves out of scaleUp and scaleDown."""
    spec = _dict_at(hpa, "spec")
    if not spec.get("metrics"):
        spec["metrics"] = [
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 80},
                },
            }
        ]
    behavior = spec.get("behavior")
    if not isinstance(behavior, dict):
        return
    for key, rules in (("scaleUp", _HPA_SCALE_UP), ("scaleDown", _HPA_SCALE_DOWN)):
        cur = behavior.get(key)
        if not isinstance(cur, dict):
            behavior[key] = copy.deepcopy(rules)
            continue
        for k, v in rules.items():
            if cur.get(k) is None or (k == "policies" and not cur.get(k)):
                cur[k] = copy.deepcopy(v)


# definition -> function of an object of that type, run before its fields are visited
COMPUTED: dict[str, Callable[[Obj], None]] = {
    _CORE + "Pod": _pod,
    _CORE + "Container": _container,
    _CORE + "EphemeralContainer": _container,
    _CORE + "Volume": _volume,
    _CORE + "Service": _service,
    _CORE + "Namespace": _namespace,
    _CORE + "NodeStatus": _node_status,
    _CORE + "ReplicationController": _replication_controller,
    _APPS + "Deployment": _deployment,
    _APPS + "DaemonSet": _daemonset,
    _APPS + "StatefulSet": _statefulset,
    _BATCH + "Job": _job,
    _RBAC + "Subject": _subject,
    _NET + "NetworkPolicy": _network_policy,
    "io.k8s.api.autoscaling.v2.HorizontalPodAutoscaler": _hpa_v2,
}


# ------------------------------------------------------------------ compiling


def _child_ref(schema: dict[str, Any]) -> tuple[str, str] | None:
    """How a property holds another definition: ("one" | "list" | "map", name)."""
    ref = schema.get("$ref")
    if ref:
        return "one", ref.rsplit("/", 1)[-1]
    items = schema.get("items")
    if isinstance(items, dict) and items.get("$ref"):
        return "list", items["$ref"].rsplit("/", 1)[-1]
    addl = schema.get("additionalProperties")
    if isinstance(addl, dict) and addl.get("$ref"):
        return "map", addl["$ref"].rsplit("/", 1)[-1]
    return None


def _copier(v: Any) -> Callable[[Any], Any] | None:
    """How a constant default is copied into an object (None: immutable, shared)."""
    if isinstance(v, dict | list):
        return dict if v == {} else list if v == [] else copy.deepcopy
    return None


class _Compiler:
    def __init__(self, defs: dict[str, dict[str, Any]]) -> None:
        self.defs = defs
        self.done: dict[str, Defaulter | None] = {}
        self.busy: set[str] = set()

    def defaulter(self, name: str) -> Defaulter | None:
        if name in self.done:
            return self.done[name]
        if name in self.busy:
            return None  # a recursive type (JSON schema props): no built-in defaults inside
        self.busy.add(name)
        try:
            fn = self._compile(name)
        finally:
            self.busy.discard(name)
        self.done[name] = fn
        return fn

    def _compile(self, name: str) -> Defaulter | None:
        d = self.defs.get(name) or {}
        consts = tuple((CONSTANT.get(name) or {}).items())
        computed = COMPUTED.get(name)
        children: list[tuple[str, str, Defaulter]] = []
        for field, sub in (d.get("properties") or {}).items():
            ref = _child_ref(sub)
            if ref is None:
                continue
            fn = self.defaulter(ref[1])
            if fn is not None:
                children.append((field, ref[0], fn))
        if not consts and computed is None and not children:
            return None
        # Walked by the object's own keys (a handful) rather than every field that
        # could hold defaults; constants that are objects are copied fresh each time.
        kids = {k: (shape, fn) for k, shape, fn in children}
        kids_get = kids.get
        fixed = tuple((k, v, isinstance(v, str) and bool(v), _copier(v)) for k, v in consts)

        def apply(o: Obj) -> None:
            if computed is not None:
                computed(o)
            for k, v, nonempty_str, fresh in fixed:
                cur = o.get(k)
                if cur is None or (nonempty_str and cur == ""):
                    o[k] = v if fresh is None else fresh(v)
            if not kids:
                return
            for k, x in o.items():
                kid = kids_get(k)
                if kid is None:
                    continue
                shape, fn = kid
                if shape == "one":
                    if type(x) is dict:
                        fn(x)
                elif type(x) is list:
                    if shape == "list":
                        for item in x:
                            if type(item) is dict:
                                fn(item)
                elif shape == "map" and type(x) is dict:
                    for item in x.values():
                        if type(item) is dict:
                            fn(item)

        return apply


_COMPILER: _Compiler | None = None
_BY_KIND: dict[tuple[str, str, str], Defaulter | None] = {}
_STATUS_BY_KIND: dict[tuple[str, str, str], Defaulter | None] = {}
_DEFINITION: dict[tuple[str, str, str], tuple[str, Obj] | None] = {}


def _definition(res: Resource) -> tuple[str, Obj] | None:
    """The name and the definition of a built-in kind in the API definitions, looked up
    once per kind; None for custom resources and kinds the definitions do not hold."""
    if res.custom:
        return None
    key = (res.group, res.version, res.kind)
    if key not in _DEFINITION:
        defs = schemas.definitions()
        name = defs.by_gvk.get(key)
        _DEFINITION[key] = (name, defs.defs.get(name) or {}) if name else None
    return _DEFINITION[key]


def _compiler() -> _Compiler:
    global _COMPILER
    if _COMPILER is None:
        _COMPILER = _Compiler(schemas.definitions().defs)
    return _COMPILER


_ZERO = {"integer": 0, "number": 0, "boolean": False, "string": ""}


def _zero_of(defs: dict[str, dict[str, Any]], name: str, depth: int) -> Obj:
    """An empty object of a definition as Go writes its zero value: the required
    fields (Go's without omitempty) as 0, false, "" or their own empty objects; lists
    and optional fields left out."""
    out: Obj = {}
    d = defs.get(name) or {}
    props = d.get("properties") or {}
    for field in d.get("required") or ():
        sub = props.get(field)
        if not isinstance(sub, dict):
            continue
        typ = sub.get("type")
        if typ in _ZERO:
            out[field] = _ZERO[typ]
        elif sub.get("$ref") and depth < 8:
            out[field] = _zero_of(defs, sub["$ref"].rsplit("/", 1)[-1], depth + 1)
    return out


def _status_filler(res: Resource) -> Defaulter | None:
    """What gives a built-in object without a status the one kube-apiserver writes.

    A built-in kind's status is a Go struct, not a pointer, so every object of it is
    written with a status, `{}` at least, with its required counts as 0 (a DaemonSet's
    `numberReady`) and the struct fields inside it (a Service's `status.loadBalancer`):
    clients read `obj.status` of a new object without a None check, and the official
    Python client's models refuse a status without its required fields. None for kinds without a status and for custom resources."""
    if res.custom:
        return None
    key = (res.group, res.version, res.kind)
    if key in _STATUS_BY_KIND:
        return _STATUS_BY_KIND[key]
    found = _definition(res)
    prop = (found[1].get("properties") or {}).get("status") if found else None
    ref = _child_ref(prop) if isinstance(prop, dict) else None
    fn: Defaulter | None = None
    if ref is not None and ref[0] == "one":
        empty = _zero_of(schemas.definitions().defs, ref[1], 0)
        inner = _compiler().defaulter(ref[1])
        if inner is not None:
            inner(empty)

        raw = orjson.dumps(empty)  # a fresh copy per object from one parse in C

        def fill(o: Obj) -> None:
            if o.get("status") is None:
                o["status"] = orjson.loads(raw)

        fn = fill
    _STATUS_BY_KIND[key] = fn
    return fn


def defaulter_for(res: Resource) -> Defaulter | None:
    """The compiled defaulter of a built-in kind; None for custom resources and kinds
    without defaults."""
    if res.custom:
        return None
    key = (res.group, res.version, res.kind)
    if key in _BY_KIND:
        return _BY_KIND[key]
    found = _definition(res)
    walk = _compiler().defaulter(found[0]) if found else None
    status = _status_filler(res)
    fn = walk
    if status is not None:

        def both(o: Obj) -> None:
            status(o)
            if walk is not None:
                walk(o)

        fn = both
    _BY_KIND[key] = fn
    return fn


def apply(res: Resource, obj: Obj) -> None:
    """Set the built-in defaults of `obj` (in place), as kube-apiserver's decoder does."""
    fn = defaulter_for(res)
    if fn is not None:
        fn(obj)


# ------------------------------------------------------------------ with the cluster


class Cluster(Protocol):
    """What the create-time defaults read of the cluster's state."""

    def objects(self, group: str, plural: str) -> Iterable[Obj]:
        """The newest state of every object of a collection, writes in flight included."""
        ...

    def get(self, group: str, plural: str, name: str, namespace: str = "") -> Obj | None: ...

    def default_priority_class(self) -> Obj | None:
        """The first PriorityClass with globalDefault true (newest states), or None;
        read only."""
        ...

    @property
    def toleration_seconds(self) -> int:
        """The DefaultTolerationSeconds plugin's seconds for not-ready and unreachable."""
        ...


def on_create(res: Resource, obj: Obj, cluster: Cluster) -> None:
    """Defaults a create gets from the cluster and from kube-apiserver's admission plugins
    and create strategies (after validation of the body, before it is stored)."""
    if res.custom:
        return
    fn = _ON_CREATE.get((res.group, res.kind))
    if fn is not None:
        fn(obj, None, cluster)
    status = _status_filler(res)
    if status is not None:  # the status a create strategy reset starts empty again
        status(obj)


def on_update(res: Resource, obj: Obj, old: Obj, cluster: Cluster) -> None:
    if res.custom:
        return
    fn = _ON_UPDATE.get((res.group, res.kind))
    if fn is not None:
        fn(obj, old, cluster)


_NOT_READY = "node.kubernetes.io/not-ready"
_UNREACHABLE = "node.kubernetes.io/unreachable"
DEFAULT_TOLERATION_SECONDS = 300  # kube-apiserver's --default-*-toleration-seconds


def _tolerates(tolerations: list[Any], key: str) -> bool:
    for t in tolerations:
        if not isinstance(t, dict):
            continue
        if t.get("effect") not in (None, "", "NoExecute"):
            continue
        if t.get("key") == key or (not t.get("key") and t.get("operator") == "Exists"):
            return True
    return False


def _pod_create(pod: Obj, _old: Obj | None, cluster: Cluster) -> None:
    spec = _dict_at(pod, "spec")
    _pod_priority(spec, cluster)
    tol = spec.get("tolerations")
    if not isinstance(tol, list):
        tol = []
    added = [
        {
            "key": key,
            "operator": "Exists",
            "effect": "NoExecute",
            "tolerationSeconds": cluster.toleration_seconds,
        }
        for key in (_NOT_READY, _UNREACHABLE)
        if not _tolerates(tol, key)
    ]
    if added:
        spec["tolerations"] = tol + added
    pod["status"] = {"phase": "Pending", "qosClass": qos_class(spec)}


def _pod_priority(spec: Obj, cluster: Cluster) -> None:
    """The Priority admission plugin: priority from the pod's PriorityClass, or the
    global default one, or 0."""
    pcn = spec.get("priorityClassName")
    if pcn:
        pc = cluster.get("scheduling.k8s.io", "priorityclasses", pcn)
        if pc is None:
            raise APIError(
                403, "Forbidden", f"pods is forbidden: no PriorityClass with name {pcn} was found"
            )
        spec["priority"] = int(pc.get("value", 0))
        if spec.get("preemptionPolicy") is None and pc.get("preemptionPolicy"):
            spec["preemptionPolicy"] = pc["preemptionPolicy"]
    elif spec.get("priority") is None:
        pc = cluster.default_priority_class()
        if pc is not None:
            spec["priorityClassName"] = pc["metadata"]["name"]
            spec["priority"] = int(pc.get("value", 0))
            if spec.get("preemptionPolicy") is None and pc.get("preemptionPolicy"):
                spec["preemptionPolicy"] = pc["preemptionPolicy"]
        else:
            spec["priority"] = 0
    if spec.get("preemptionPolicy") is None:
        spec["preemptionPolicy"] = "PreemptLowerPriority"


def qos_class(spec: Obj) -> str:
    """Guaranteed, Burstable or BestEffort, by the containers' requests and limits."""
    requests: dict[str, bool] = {}
    limits: dict[str, bool] = {}
    guaranteed = True
    any_set = False
    for key in ("containers", "initContainers"):
        for c in spec.get(key) or ():
            res = (c.get("resources") or {}) if isinstance(c, dict) else {}
            req = res.get("requests") or {} if isinstance(res, dict) else {}
            lim = res.get("limits") or {} if isinstance(res, dict) else {}
            for r in ("cpu", "memory"):
                if r in req or r in lim:
                    any_set = True
                if r in req:
                    requests[r] = True
                if r not in lim or (r in req and str(req[r]) != str(lim[r])):
                    guaranteed = False
                else:
                    limits[r] = True
    if not any_set:
        return "BestEffort"
    if guaranteed and len(limits) == 2:
        return "Guaranteed"
    return "Burstable"


def _namespace_create(ns: Obj, _old: Obj | None, _cluster: Cluster) -> None:
    ns["spec"] = {"finalizers": ["kubernetes"]}
    ns["status"] = {"phase": "Active"}
    _namespace(ns)


def _status_phase(phase: str) -> Callable[[Obj, Obj | None, Cluster], None]:
    def fn(obj: Obj, _old: Obj | None, _cluster: Cluster) -> None:
        obj["status"] = {"phase": phase}

    return fn


def _job_create(job: Obj, _old: Obj | None, _cluster: Cluster) -> None:
    """The Job strategy: a selector made from the Job's uid, and the labels that match it
    on the template, unless spec.manualSelector is true."""
    spec = _dict_at(job, "spec")
    md = job["metadata"]
    if spec.get("manualSelector") is True:
        return
    uid, name = md.get("uid") or "", md.get("name") or ""
    tpl = _dict_at(spec, "template")
    labels = _dict_at(_dict_at(tpl, "metadata"), "labels")
    for k, v in (
        ("batch.kubernetes.io/controller-uid", uid),
        ("batch.kubernetes.io/job-name", name),
        ("controller-uid", uid),
        ("job-name", name),
    ):
        labels.setdefault(k, v)
    if spec.get("selector") is None:
        spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}


def _service_create(svc: Obj, old: Obj | None, cluster: Cluster) -> None:
    spec = _dict_at(svc, "spec")
    taken = [
        o
        for o in cluster.objects("", "services")
        if old is None or o.get("metadata", {}).get("uid") != (old.get("metadata") or {}).get("uid")
    ]
    causes = allocation.service_defaults(spec, old.get("spec") if old else None, taken)
    if causes:
        md = svc.get("metadata") or {}
        raise invalid("Service", md.get("name") or md.get("generateName") or "", causes, "")


_ON_CREATE: dict[tuple[str, str], Callable[[Obj, Obj | None, Cluster], None]] = {
    ("", "Pod"): _pod_create,
    ("", "Namespace"): _namespace_create,
    ("", "Service"): _service_create,
    ("", "PersistentVolumeClaim"): _status_phase("Pending"),
    ("", "PersistentVolume"): _status_phase("Pending"),
    ("batch", "Job"): _job_create,
}
_ON_UPDATE: dict[tuple[str, str], Callable[[Obj, Obj | None, Cluster], None]] = {
    ("", "Service"): _service_create,
}


class StoreView:
    """`Cluster` over the API server's store."""

    def __init__(self, store: Store, toleration_seconds: int = DEFAULT_TOLERATION_SECONDS) -> None:
        self.store = store
        self.toleration_seconds = toleration_seconds
        # The default PriorityClass of the last look and the entries it was found
        # among (a write makes a new entry): every pod create without a class asks,
        # and decoding every class each time was a twentieth of a create's cost.
        self._pc_seen: list[Entry] | None = None
        self._pc_default: Obj | None = None

    def objects(self, group: str, plural: str) -> Iterable[Obj]:
        return [e.obj() for e in self.store.newest((group, plural))]

    def default_priority_class(self) -> Obj | None:
        entries = self.store.newest(("scheduling.k8s.io", "priorityclasses"))
        seen = self._pc_seen
        if (
            seen is None
            or len(seen) != len(entries)
            or any(a is not b for a, b in zip(seen, entries, strict=True))
        ):
            objs = (e.obj() for e in entries)
            self._pc_default = next((o for o in objs if o.get("globalDefault")), None)
            self._pc_seen = entries
        return self._pc_default

    def get(self, group: str, plural: str, name: str, namespace: str = "") -> Obj | None:
        e = self.store.latest((group, plural), make_key(namespace, name))
        return e.obj() if e is not None else None
