"""The `/scale` subresource: an autoscaling/v1 Scale view of a workload's replicas.

Deployments, ReplicaSets, StatefulSets and ReplicationControllers keep their replicas at
`.spec.replicas` and `.status.replicas` and their selector at `.spec.selector`; a custom
resource says where in its CRD (`subresources.scale`: specReplicasPath,
statusReplicasPath, labelSelectorPath). GET answers the Scale; PUT and PATCH change the
parent's spec replicas only (PATCH applies to the Scale, as kube-apiserver does), with
the parent's resourceVersion as the Scale's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from gpuyard.apiserver.errors import APIError, bad_request, conflict, invalid, not_found
from gpuyard.apiserver.resources import Resource
from gpuyard.apiserver.store import make_key

if TYPE_CHECKING:
    from gpuyard.apiserver.handlers import Core, Response

SCALE = Resource("autoscaling", "v1", "Scale", "scale", "scale", True)
SUBRESOURCE = "scale"
_BUILTIN = (".spec.replicas", ".status.replicas", None)


def _paths(res: Resource) -> tuple[str, str, str | None]:
    if res.custom:
        s = res.scale or {}
        return (
            str(s.get("specReplicasPath") or ".spec.replicas"),
            str(s.get("statusReplicasPath") or ".status.replicas"),
            s.get("labelSelectorPath"),
        )
    return _BUILTIN


def _get(obj: Any, path: str) -> Any:
    for part in path.lstrip(".").split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


def _set(obj: dict[str, Any], path: str, value: Any) -> None:
    parts = path.lstrip(".").split(".")
    for part in parts[:-1]:
        nxt = obj.get(part)
        if not isinstance(nxt, dict):
            nxt = obj[part] = {}
        obj = nxt
    obj[parts[-1]] = value


def selector_text(sel: Any) -> str:
    """A LabelSelector as its string form ("app=x,tier in (a,b)"), requirements sorted
    by key as Kubernetes prints them."""
    if not isinstance(sel, dict):
        return ""
    reqs: list[tuple[str, str]] = []
    for k, v in (sel.get("matchLabels") or {}).items():
        reqs.append((k, f"{k}={v}"))
    for e in sel.get("matchExpressions") or ():
        if not isinstance(e, dict):
            continue
        key, op = str(e.get("key", "")), e.get("operator")
        vals = ",".join(sorted(str(v) for v in e.get("values") or ()))
        text = {
            "In": f"{key} in ({vals})",
            "NotIn": f"{key} notin ({vals})",
            "Exists": key,
            "DoesNotExist": f"!{key}",
        }.get(str(op))
        if text is not None:
            reqs.append((key, text))
    return ",".join(t for _, t in sorted(reqs))


def scale_of(res: Resource, obj: dict[str, Any]) -> dict[str, Any]:
    """The Scale of a stored object."""
    spec_path, status_path, sel_path = _paths(res)
    md = obj.get("metadata") or {}
    meta = {
        k: md[k]
        for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
        if k in md
    }
    status: dict[str, Any] = {"replicas": int(_get(obj, status_path) or 0)}
    if sel_path:
        sel = _get(obj, sel_path)
        if isinstance(sel, str) and sel:
            status["selector"] = sel
    else:
        sel = selector_text(_get(obj, ".spec.selector"))
        if sel:
            status["selector"] = sel
    spec_replicas = _get(obj, spec_path)
    spec = {"replicas": int(spec_replicas)} if isinstance(spec_replicas, int) else {}
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": meta,
        "spec": spec,
        "status": status,
    }


def _replicas(name: str, scale: Any) -> int:
    if not isinstance(scale, dict):
        raise bad_request("the Scale must be an object")
    spec = scale.get("spec")
    if spec is None:
        spec = {}
    if not isinstance(spec, dict):
        raise bad_request(
            'Scale in version "v1" cannot be handled as a Scale: json: cannot unmarshal '
            f"{type(spec).__name__} into Go struct field Scale.spec of type v1.ScaleSpec"
        )
    n = spec.get("replicas", 0)
    if isinstance(n, bool) or not isinstance(n, int):
        raise bad_request(
            'Scale in version "v1" cannot be handled as a Scale: json: cannot unmarshal '
            f"{orjson.dumps(n).decode()} into Go struct field ScaleSpec.spec.replicas of type int32"
        )
    if n < 0:
        raise invalid(
            "Scale",
            name,
            [
                {
                    "reason": "FieldValueInvalid",
                    "field": "spec.replicas",
                    "message": f"Invalid value: {n}: must be greater than or equal to 0",
                }
            ],
            "autoscaling",
        )
    if n > 2**31 - 1:
        raise bad_request("spec.replicas is out of the range of int32")
    return n


async def _admitted_replicas(
    core: Core, res: Resource, cur: dict[str, Any], replicas: int, dry: bool
) -> int:
    """Admission of a scale write, as kube-apiserver admits it: one UPDATE of the
    parent's resource with subResource scale and kind autoscaling/v1 Scale, the old and
    new Scale as its objects. Mutating webhooks whose rules name the subresource
    (`deployments/scale`, `*/scale`, `*/*`) may change the replicas; then validating
    policies and webhooks of those rules see the Scale. Rules naming the parent alone
    (`deployments`) do not see the write, nor is the parent admitted again."""
    from gpuyard.apiserver import admission_policy, requestctx
    from gpuyard.apiserver.handlers import _WARNINGS

    old = scale_of(res, cur)
    name = str(old["metadata"].get("name") or "")
    sent = dict(old, spec={"replicas": replicas})
    kind = (SCALE.group, SCALE.version, SCALE.kind)
    mutated, _ = await core._admit(res, "UPDATE", sent, old, dry, SUBRESOURCE, kind=kind)
    if mutated is not sent:
        replicas = _replicas(name, mutated)
        sent = dict(old, spec={"replicas": replicas})
    warnings = await admission_policy.validate(
        core.store,
        core.registry,
        res,
        "UPDATE",
        sent,
        old,
        dry,
        requestctx.user_info(),
        sub=SUBRESOURCE,
        kind=kind,
    )
    acc = _WARNINGS.get()  # (the mutating webhooks' are there already)
    if warnings and acc is not None:
        acc.extend(warnings)
    return replicas


async def serve(
    core: Core,
    method: str,
    res: Resource,
    ns: str,
    name: str,
    body: bytes,
    ctype: str,
    query: Any,
    dry: bool,
) -> Response:
    """Answer GET, PUT or PATCH on `<resource>/<name>/scale`."""
    from gpuyard.apiserver.handlers import _json

    if method in ("GET", "HEAD"):
        return _json(200, scale_of(res, core._read_obj(res, core._entry(res, ns, name))))
    for _attempt in range(5):
        e = core.store.latest(res.key, make_key(ns, name))
        if e is None:
            raise not_found(res.group_resource, name, res.plural, res.group)
        cur = core._read_obj(res, e)
        if method == "PUT":
            want = core._body_obj(body, ctype)
        elif method == "PATCH":
            ct = ctype.split(";")[0].strip().lower()
            if ct == "application/apply-patch+yaml":
                raise APIError(
                    415,
                    "UnsupportedMediaType",
                    "the body of the request was in an unknown format - accepted media types "
                    "include: application/json-patch+json, application/merge-patch+json, "
                    "application/strategic-merge-patch+json",
                )
            want = core._apply_patch(SCALE, scale_of(res, cur), body, ct, query)
        else:
            raise APIError(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            )
        replicas = _replicas(name, want)
        replicas = await _admitted_replicas(core, res, cur, replicas, dry)
        rv = str((want.get("metadata") or {}).get("resourceVersion") or "")
        if rv and rv != str(e.rv):
            raise conflict(res.group_resource, name, res.plural)
        new = dict(cur)
        new["metadata"] = dict(cur["metadata"])
        new["spec"] = orjson.loads(orjson.dumps(cur.get("spec") or {}))
        _set(new, _paths(res)[0], replicas)
        try:
            out = await core._write_update(res, e, new, SUBRESOURCE, dry)
        except APIError as ae:
            if ae.reason == "Conflict" and not rv:
                continue  # raced with another writer: apply to the new state
            raise
        return _json(200, scale_of(res, orjson.loads(out)))
    raise conflict(res.group_resource, name, res.plural)
