"""What a request asks to do, in the terms authorization and audit speak: verb, API
group, resource, subresource, namespace and name, or a non-resource path.

Verbs as Kubernetes names them: get, list, watch, create, update, patch, delete,
deletecollection for resources (GET on a collection is list, with watch=true watch);
get, post, put, patch, delete, head for non-resource paths (lower-case method).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from gpuyard.apiserver import paths
from gpuyard.apiserver.errors import APIError

_WRITE_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch"}


@dataclass(frozen=True, slots=True)
class Attributes:
    verb: str
    resource_request: bool
    group: str = ""
    version: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    path: str = ""

    @property
    def resource_with_sub(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


def of_request(method: str, path: str, query: Mapping[str, str]) -> Attributes:
    """The attributes of one request (path without its query string). A path that does
    not parse is a non-resource request for that path (its handler refuses it)."""
    method = method.upper()
    try:
        r = paths.parse(path)
    except APIError:
        return Attributes(method.lower(), False, path=path)
    if r.kind != "resource":
        return Attributes(method.lower(), False, path=path)
    named = r.name is not None
    if method in ("GET", "HEAD"):
        if r.watch or query.get("watch") in ("true", "1"):
            verb = "watch"
        else:
            verb = "get" if named else "list"
    elif method in _WRITE_VERBS:
        verb = _WRITE_VERBS[method]
    elif method == "DELETE":
        verb = "delete" if named else "deletecollection"
    else:
        verb = method.lower()
    ns = r.namespace or ""
    plural = r.plural
    name = r.name or ""
    if plural == "namespaces" and r.group == "" and r.version and named:
        ns = name  # a namespace is in itself, as Kubernetes sees it
    return Attributes(
        verb,
        True,
        r.group,
        r.version,
        plural,
        r.sub or "",
        ns,
        name,
        path,
    )


def for_review(spec: Mapping[str, object]) -> Attributes:
    """The attributes a SubjectAccessReview's spec asks about."""
    ra = spec.get("resourceAttributes")
    if isinstance(ra, Mapping):

        def s(k: str) -> str:
            v = ra.get(k)
            return v if isinstance(v, str) else ""

        return Attributes(
            s("verb"),
            True,
            s("group"),
            s("version"),
            s("resource"),
            s("subresource"),
            s("namespace"),
            s("name"),
        )
    nra = spec.get("nonResourceAttributes")
    if isinstance(nra, Mapping):
        path = nra.get("path")
        verb = nra.get("verb")
        return Attributes(
            verb if isinstance(verb, str) else "",
            False,
            path=path if isinstance(path, str) else "",
        )
    raise APIError(
        400,
        "BadRequest",
        "spec: exactly one of resourceAttributes, nonResourceAttributes is required",
    )
