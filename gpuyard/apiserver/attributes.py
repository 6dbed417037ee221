"""What a request asks to do, in the terms authorization and audit speak: verb, API
group, resource, subresource, namespace and name, or a non-resource path.

Verbs as Kubernetes names them: get, list, watch, create, update, patch, delete,
deletecollection for resources (GET on a collection is list, with watch=true watch);
get, post, put, patch, delete, head for non-resource paths (lower-case method).

A list, watch or deletecollection also carries its field and label selectors (as
kube-apiserver's authorization attributes do since 1.31): the Node authorizer lets a
kubelet list its own pods by `spec.nodeName`. A SubjectAccessReview gives them as
`fieldSelector` / `labelSelector` with a `rawSelector` or `requirements`, the CEL
authorizer library with `.fieldSelector(s)` / `.labelSelector(s)`.

A list or watch whose field selector asks for one name (`metadata.name=X`) is
authorized as a request for that name, as kube-apiserver resolves it: a rule with
resourceNames [X] allows it (an informer of one Secret needs no rights on the others).
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
    field_selector: str = ""  # raw, as in ?fieldSelector= (list, watch, deletecollection)
    label_selector: str = ""

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
    fsel = lsel = ""
    if verb in _SELECTING_VERBS:
        fsel = query.get("fieldSelector") or ""
        lsel = query.get("labelSelector") or ""
        if verb != "deletecollection" and not named:
            name = _selected_name(fsel)
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
        fsel,
        lsel,
    )


_SELECTING_VERBS = frozenset({"list", "watch", "deletecollection"})


def _selected_name(fsel: str) -> str:
    """X of a field selector that requires metadata.name=X (or ==X) among its terms;
    "" when it requires none, or a name no path could hold."""
    if "\\" in fsel:
        return ""  # escaped characters: no valid name has them
    for term in fsel.split(","):
        key, sep, value = term.partition("=")
        if not sep or key.strip() != "metadata.name":
            continue
        value = value.removeprefix("=").strip()
        if value and value not in (".", "..") and "/" not in value and "%" not in value:
            return value
        return ""
    return ""


_LABEL_OPS = {"In": "in", "NotIn": "notin"}


def _requirement(req: object, field: bool) -> str | None:
    """One requirement of a review's selector as selector text; None when it cannot
    be said (a field requirement is In or NotIn of one value)."""
    if not isinstance(req, Mapping) or not isinstance(req.get("key"), str) or not req["key"]:
        return None
    key, op, values = req["key"], req.get("operator"), req.get("values") or []
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        return None
    if op in ("In", "NotIn"):
        if field:
            if len(values) != 1:
                return None
            return f"{key}{'=' if op == 'In' else '!='}{values[0]}"
        if not values:
            return None
        return f"{key} {_LABEL_OPS[op]} ({','.join(values)})"
    if not field and op in ("Exists", "DoesNotExist") and not values:
        return key if op == "Exists" else f"!{key}"
    return None


def _review_selector(ra: Mapping[str, object], which: str) -> str:
    """A review's fieldSelector or labelSelector as selector text ("" when absent or
    when a requirement cannot be said: the check is then asked without it, which a
    selector can only narrow)."""
    sel = ra.get(which)
    if not isinstance(sel, Mapping):
        return ""
    raw = sel.get("rawSelector")
    reqs = sel.get("requirements")
    if raw and reqs:
        raise APIError(
            422,
            "Invalid",
            f"spec.resourceAttributes.{which}.rawSelector: Invalid value: {raw!r}: may not be "
            "specified at the same time as requirements",
        )
    if isinstance(raw, str):
        return raw
    if not isinstance(reqs, list):
        return ""
    terms = [_requirement(r, which == "fieldSelector") for r in reqs]
    if any(t is None for t in terms):
        return ""
    return ",".join(t for t in terms if t)


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
            field_selector=_review_selector(ra, "fieldSelector"),
            label_selector=_review_selector(ra, "labelSelector"),
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
