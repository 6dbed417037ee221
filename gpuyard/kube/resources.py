"""REST resource descriptions for the client: `Res` and the built-in table.

A `Res` says where a kind lives on the API (group, version, plural, namespaced) and
builds request paths. `BUILTIN` covers the core kinds gpuyard uses and gpuyard's own
custom resources; `Client.resource()` falls back to API discovery for anything else.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from gpuyard import names


@dataclass(frozen=True)
class Res:
    """One REST resource: `Res("", "v1", "pods", True, "Pod")`."""

    group: str
    version: str
    plural: str
    namespaced: bool
    kind: str = ""

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def prefix(self) -> str:
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"

    def path(
        self, namespace: str | None = None, name: str | None = None, subresource: str | None = None
    ) -> str:
        """Collection or object path. A namespaced resource without namespace lists
        across all namespaces."""
        parts = [self.prefix]
        if self.namespaced and namespace:
            parts.append(f"namespaces/{quote(namespace, safe='')}")
        elif not self.namespaced and namespace and name is None and subresource is None:
            pass  # cluster-scoped: the namespace argument means nothing
        parts.append(self.plural)
        if name is not None:
            if not name:
                raise ValueError(f"empty name for {self.plural}")
            parts.append(quote(name, safe=""))
            if subresource:
                parts.append(subresource)
        return "/".join(parts)


def _r(api_version: str, kind: str, plural: str, namespaced: bool) -> Res:
    group, _, version = api_version.rpartition("/")
    return Res(group, version, plural, namespaced, kind)


_TABLE = [
    _r("v1", "Namespace", "namespaces", False),
    _r("v1", "Node", "nodes", False),
    _r("v1", "Pod", "pods", True),
    _r("v1", "Service", "services", True),
    _r("v1", "Endpoints", "endpoints", True),
    _r("discovery.k8s.io/v1", "EndpointSlice", "endpointslices", True),
    _r("v1", "ReplicationController", "replicationcontrollers", True),
    _r("v1", "ConfigMap", "configmaps", True),
    _r("v1", "Secret", "secrets", True),
    _r("v1", "ServiceAccount", "serviceaccounts", True),
    _r("v1", "Event", "events", True),
    _r("v1", "Binding", "bindings", True),
    _r("v1", "PersistentVolumeClaim", "persistentvolumeclaims", True),
    _r("v1", "ResourceQuota", "resourcequotas", True),
    _r("v1", "LimitRange", "limitranges", True),
    _r("events.k8s.io/v1", "Event", "events", True),
    _r("coordination.k8s.io/v1", "Lease", "leases", True),
    _r("scheduling.k8s.io/v1", "PriorityClass", "priorityclasses", False),
    _r("apps/v1", "Deployment", "deployments", True),
    _r("apps/v1", "DaemonSet", "daemonsets", True),
    _r("apps/v1", "StatefulSet", "statefulsets", True),
    _r("apps/v1", "ReplicaSet", "replicasets", True),
    _r("apps/v1", "ControllerRevision", "controllerrevisions", True),
    _r("batch/v1", "Job", "jobs", True),
    _r("batch/v1", "CronJob", "cronjobs", True),
    _r("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets", True),
    _r("policy/v1", "Eviction", "evictions", True),
    _r("apiextensions.k8s.io/v1", "CustomResourceDefinition", "customresourcedefinitions", False),
    _r(
        "admissionregistration.k8s.io/v1",
        "MutatingWebhookConfiguration",
        "mutatingwebhookconfigurations",
        False,
    ),
    _r(
        "admissionregistration.k8s.io/v1",
        "ValidatingWebhookConfiguration",
        "validatingwebhookconfigurations",
        False,
    ),
    _r("rbac.authorization.k8s.io/v1", "ClusterRole", "clusterroles", False),
    _r("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "clusterrolebindings", False),
    _r("rbac.authorization.k8s.io/v1", "Role", "roles", True),
    _r("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings", True),
    _r(names.API_VERSION, "TrainingJob", "trainingjobs", True),
    _r(names.API_VERSION, "Team", "teams", False),
    _r(names.API_VERSION, "BalloonPool", "balloonpools", False),
    _r(names.PODGROUP_API_VERSION, "PodGroup", "podgroups", True),
    _r("resource.k8s.io/v1", "DeviceClass", "deviceclasses", False),
    _r("resource.k8s.io/v1", "ResourceClaim", "resourceclaims", True),
    _r("resource.k8s.io/v1", "ResourceClaimTemplate", "resourceclaimtemplates", True),
    _r("resource.k8s.io/v1", "ResourceSlice", "resourceslices", False),
]

BUILTIN: dict[tuple[str, str], Res] = {(r.api_version, r.kind): r for r in _TABLE}

# Convenient constants for the kinds every component uses.
NAMESPACES = BUILTIN[("v1", "Namespace")]
NODES = BUILTIN[("v1", "Node")]
PODS = BUILTIN[("v1", "Pod")]
EVENTS = BUILTIN[("v1", "Event")]
CONFIGMAPS = BUILTIN[("v1", "ConfigMap")]
LEASES = BUILTIN[("coordination.k8s.io/v1", "Lease")]
PRIORITY_CLASSES = BUILTIN[("scheduling.k8s.io/v1", "PriorityClass")]
PDBS = BUILTIN[("policy/v1", "PodDisruptionBudget")]
CRDS = BUILTIN[("apiextensions.k8s.io/v1", "CustomResourceDefinition")]
TRAINING_JOBS = BUILTIN[(names.API_VERSION, "TrainingJob")]
TEAMS = BUILTIN[(names.API_VERSION, "Team")]
BALLOON_POOLS = BUILTIN[(names.API_VERSION, "BalloonPool")]
POD_GROUPS = BUILTIN[(names.PODGROUP_API_VERSION, "PodGroup")]
DEVICE_CLASSES = BUILTIN[("resource.k8s.io/v1", "DeviceClass")]
RESOURCE_CLAIMS = BUILTIN[("resource.k8s.io/v1", "ResourceClaim")]
RESOURCE_CLAIM_TEMPLATES = BUILTIN[("resource.k8s.io/v1", "ResourceClaimTemplate")]
RESOURCE_SLICES = BUILTIN[("resource.k8s.io/v1", "ResourceSlice")]


def builtin(api_version: str, kind: str) -> Res | None:
    return BUILTIN.get((api_version, kind))
