"""Resource registry of the embedded API server: which kinds exist and how they are served.

A `Resource` describes one REST resource (group, version, kind, plural, scope,
subresources, ...). `Registry` holds the built-in resources plus those defined by
CustomResourceDefinitions, and answers look-ups by (group, version, plural), by kind and
by short name, and lists API groups for discovery. Pure: no I/O.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from gpuyard.k8s import kinds

ALL_VERBS: tuple[str, ...] = (
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
)


@dataclass(frozen=True)
class Resource:
    """One servable REST resource (one group/version/plural)."""

    group: str  # "" for core
    version: str
    kind: str
    plural: str
    singular: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()  # e.g. ("status",), ("status", "binding", "eviction")
    categories: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ALL_VERBS
    schema: dict[str, Any] | None = field(default=None, compare=False, hash=False)
    printer_columns: tuple[dict[str, Any], ...] = field(default=(), compare=False, hash=False)
    custom: bool = False  # defined by a CRD
    # discovery facts of each subresource (its verbs and the kind it answers)
    sub_info: tuple[kinds.Subresource, ...] = field(default=(), compare=False, hash=False)
    # a CRD's subresources.scale (specReplicasPath, statusReplicasPath, labelSelectorPath)
    scale: dict[str, Any] | None = field(default=None, compare=False, hash=False)
    # a CRD's storage version, the schema of each of its versions (served or not: an
    # object may be stored in any), and its spec.conversion (crdversions.py)
    storage_version: str = field(default="", compare=False, hash=False)
    version_schemas: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    conversion: dict[str, Any] | None = field(default=None, compare=False, hash=False)

    @property
    def group_version(self) -> str:
        """ "v1" for core, "apps/v1" otherwise."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def api_version(self) -> str:
        return self.group_version

    @property
    def list_kind(self) -> str:
        return self.kind + "List"

    @property
    def key(self) -> tuple[str, str]:
        """(group, plural): identifies the stored collection across versions."""
        return (self.group, self.plural)

    @property
    def group_resource(self) -> str:
        """ "pods" or "deployments.apps", as used in Status details and messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def allows(self, verb: str, sub: str | None = None) -> bool:
        """Whether discovery lists `verb` for this resource (or its subresource `sub`)."""
        if sub is None:
            return verb in self.verbs
        for s in self.sub_info:
            if s.name == sub:
                return verb in s.verbs
        return sub in self.subresources  # a CRD's status and scale: get, patch, update

    def path_prefix(self) -> str:
        """ "/api/v1" or "/apis/apps/v1"."""
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"


# Subresources this server answers (the others a real 1.37 has, such as pods/resize,
# are not advertised: discovery says what is served here). pods/log is the simulated
# kubelet's (simkubelet.py); pods/exec, attach and portforward are refused there.
SERVED_SUBRESOURCES = frozenset(
    {"status", "scale", "binding", "eviction", "token", "log", "ephemeralcontainers"}
)


def builtin_resources() -> list[Resource]:
    """The resources the server knows without any CRD: every kind of a default
    Kubernetes 1.37 control plane (gpuyard.k8s.kinds, generated from the official API
    definitions)."""
    out = []
    for k in kinds.builtin_kinds():
        subs = tuple(s for s in k.subresources if s.name in SERVED_SUBRESOURCES)
        out.append(
            Resource(
                group=k.group,
                version=k.version,
                kind=k.kind,
                plural=k.plural,
                singular=k.singular,
                namespaced=k.namespaced,
                short_names=k.short_names,
                subresources=tuple(s.name for s in subs),
                categories=k.categories,
                verbs=k.verbs,
                sub_info=subs,
            )
        )
    return out


# Discovery's group order, as kube-apiserver lists its groups (legacy core is served
# separately under /api); groups of CRDs follow, by name.
_GROUP_ORDER = (
    "apiregistration.k8s.io",
    "apps",
    "events.k8s.io",
    "authentication.k8s.io",
    "authorization.k8s.io",
    "autoscaling",
    "batch",
    "certificates.k8s.io",
    "networking.k8s.io",
    "policy",
    "rbac.authorization.k8s.io",
    "storage.k8s.io",
    "admissionregistration.k8s.io",
    "apiextensions.k8s.io",
    "scheduling.k8s.io",
    "coordination.k8s.io",
    "node.k8s.io",
    "discovery.k8s.io",
    "resource.k8s.io",
    "flowcontrol.apiserver.k8s.io",
    "storagemigration.k8s.io",
)


class CRDError(ValueError):
    """A CustomResourceDefinition that cannot be turned into resources."""


def resources_from_crd(crd: dict[str, Any]) -> list[Resource]:
    """The resources (one per served version) a CustomResourceDefinition defines."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    group = spec.get("group")
    plural = names.get("plural")
    kind = names.get("kind")
    if not group or not plural or not kind:
        raise CRDError("spec.group, spec.names.plural and spec.names.kind are required")
    singular = names.get("singular") or kind.lower()
    scope = spec.get("scope", "Namespaced")
    if scope not in ("Namespaced", "Cluster"):
        raise CRDError(f'spec.scope: Unsupported value: "{scope}"')
    out: list[Resource] = []
    storage = crd_storage_version(crd) or ""
    version_schemas = {
        str(v.get("name")): (v.get("schema") or {}).get("openAPIV3Schema")
        for v in spec.get("versions") or []
        if isinstance(v, dict)
    }
    conversion = spec.get("conversion") if isinstance(spec.get("conversion"), dict) else None
    for ver in spec.get("versions") or []:
        if not ver.get("served", True):
            continue
        subs = ver.get("subresources") or {}
        subresources = tuple(n for n in ("scale", "status") if n in subs)
        scale = subs.get("scale") if isinstance(subs.get("scale"), dict) else None
        schema = (ver.get("schema") or {}).get("openAPIV3Schema")
        out.append(
            Resource(
                group=group,
                version=ver["name"],
                kind=kind,
                plural=plural,
                singular=singular,
                namespaced=scope == "Namespaced",
                short_names=tuple(names.get("shortNames") or ()),
                subresources=subresources,
                categories=tuple(names.get("categories") or ()),
                schema=schema,
                printer_columns=tuple(ver.get("additionalPrinterColumns") or ()),
                custom=True,
                scale=scale,
                storage_version=storage,
                version_schemas=version_schemas,
                conversion=conversion,
            )
        )
    return out


def crd_storage_version(crd: dict[str, Any]) -> str | None:
    for ver in (crd.get("spec") or {}).get("versions") or []:
        if ver.get("storage"):
            return str(ver["name"])
    return None


class Registry:
    """All servable resources: built-ins plus CRD-defined ones.

    Look-ups: `get(group, version, plural)`, `by_kind(kind, group=None)`,
    `by_short_name(name)`, `find(name)` (plural, singular, short name or kind, with an
    optional ".group" suffix as kubectl writes it). `groups()` gives discovery order.
    """

    def __init__(self, resources: list[Resource] | None = None) -> None:
        self._lock = threading.Lock()
        self._by_gvp: dict[tuple[str, str, str], Resource] = {}
        self._crds: dict[str, list[Resource]] = {}  # CRD name -> resources
        self._builtin_keys: set[tuple[str, str, str]] = set()
        self.generation = 0  # grows whenever the set of resources changes (cache key)
        for r in builtin_resources() if resources is None else resources:
            self._by_gvp[(r.group, r.version, r.plural)] = r
            self._builtin_keys.add((r.group, r.version, r.plural))

    def ensure_builtin(self, resources: list[Resource]) -> None:
        """Serve these built-in resources too, where none is served at their path."""
        with self._lock:
            for r in resources:
                k = (r.group, r.version, r.plural)
                if k not in self._by_gvp:
                    self._by_gvp[k] = r
                    self._builtin_keys.add(k)
                    self.generation += 1

    # -- CRDs ---------------------------------------------------------------------------

    def add_crd(self, crd: dict[str, Any]) -> list[Resource]:
        """Register (or re-register after an update) the resources of a CRD."""
        name = (crd.get("metadata") or {}).get("name", "")
        new = resources_from_crd(crd)
        with self._lock:
            for r in self._crds.pop(name, []):
                self._by_gvp.pop((r.group, r.version, r.plural), None)
            for r in new:
                k = (r.group, r.version, r.plural)
                if k in self._builtin_keys:
                    raise CRDError(f"{r.group_resource} is a built-in resource")
            for r in new:
                self._by_gvp[(r.group, r.version, r.plural)] = r
            self._crds[name] = new
            self.generation += 1
        return new

    def remove_crd(self, name: str) -> list[Resource]:
        with self._lock:
            gone = self._crds.pop(name, [])
            for r in gone:
                self._by_gvp.pop((r.group, r.version, r.plural), None)
            if gone:
                self.generation += 1
        return gone

    def crd_resources(self, name: str) -> list[Resource]:
        return list(self._crds.get(name, []))

    # -- look-ups -----------------------------------------------------------------------

    def all(self) -> list[Resource]:
        return list(self._by_gvp.values())

    def get(self, group: str, version: str, plural: str) -> Resource | None:
        return self._by_gvp.get((group, version, plural))

    def versions_of(self, group: str, plural: str) -> list[Resource]:
        return [r for r in self._by_gvp.values() if r.group == group and r.plural == plural]

    def by_kind(
        self, kind: str, group: str | None = None, version: str | None = None
    ) -> Resource | None:
        for r in self._by_gvp.values():
            if (
                r.kind == kind
                and (group is None or r.group == group)
                and (version is None or r.version == version)
            ):
                return r
        return None

    def by_short_name(self, name: str) -> Resource | None:
        for r in self._by_gvp.values():
            if name in r.short_names:
                return r
        return None

    def find(self, name: str) -> Resource | None:
        """Resolve a kubectl-style resource name: "pods", "po", "pod", "Pod",
        "deployments.apps", "trainingjobs.gpuyard.io"."""
        group: str | None = None
        base = name
        if "." in name:
            base, group = name.split(".", 1)
        low = base.lower()
        cands = [r for r in self._by_gvp.values() if group is None or r.group == group]
        # Prefer core group for ambiguous names (e.g. "events").
        cands.sort(key=lambda r: (r.group != "", r.group))
        for test in (
            lambda r: r.plural == low,
            lambda r: r.singular == low,
            lambda r: low in r.short_names,
            lambda r: r.kind.lower() == low,
        ):
            for r in cands:
                if test(r):
                    return r
        return None

    def groups(self) -> list[tuple[str, list[str]]]:
        """Named API groups (not core) with their versions, for /apis discovery.

        The first version of each list is the preferred one.
        """
        found: dict[str, list[str]] = {}
        for r in self._by_gvp.values():
            if r.group == "":
                continue
            vs = found.setdefault(r.group, [])
            if r.version not in vs:
                vs.append(r.version)
        order = {g: i for i, g in enumerate(_GROUP_ORDER)}
        out = []
        for g in sorted(found, key=lambda g: (order.get(g, len(order)), g)):
            out.append((g, sorted(found[g], key=_version_priority)))
        return out

    def resources_in(self, group: str, version: str) -> list[Resource]:
        return [r for r in self._by_gvp.values() if r.group == group and r.version == version]


def _version_priority(v: str) -> tuple[int, int, int]:
    """Kubernetes version order: GA > beta > alpha, higher numbers first."""
    import re

    m = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", v)
    if not m:
        return (3, 0, 0)
    major = int(m.group(1))
    stage = {"": 0, "beta": 1, "alpha": 2}[m.group(2) or ""]
    minor = int(m.group(3) or 0)
    return (stage, -major, -minor)
