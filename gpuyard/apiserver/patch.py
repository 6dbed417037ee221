"""Patches, as the API server applies them: JSON patch (RFC 6902), merge patch
(RFC 7386), strategic merge patch (built-in kinds only) and server-side apply.

Strategic merge follows Kubernetes' list merge keys, read from the API definitions'
x-kubernetes-patch-merge-key / -strategy for every built-in kind (containers, env,
volumes, webhooks by `name`; container ports by `containerPort`, service ports by `port`;
volumeMounts by `mountPath`; conditions by `type`; ownerReferences by `uid`; ...), with
the common ones below where a path is outside the definitions; finalizers as a set.
Lists without a merge key (taints, tolerations, args) are replaced. The directives
kubectl sends are honoured: `$patch: delete|replace|merge`, `$retainKeys`,
`$deleteFromPrimitiveList/<field>` and `$setElementOrder/<field>`.

Server-side apply merges the applied configuration by the schema's list and map types
and keeps field ownership (`managedfields`).

Every failure is a `PatchError` with an HTTP code, never another exception.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

from gpuyard.apiserver import managedfields, schemas
from gpuyard.apiserver.resources import Resource
from gpuyard.k8s import decode
from gpuyard.kube import json_patch


class PatchError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message


_BY_NAME = {
    "containers",
    "initContainers",
    "ephemeralContainers",
    "env",
    "volumes",
    "imagePullSecrets",
}
_MERGE_KEYS = {
    "volumeMounts": "mountPath",
    "conditions": "type",
    "addresses": "type",
    "ownerReferences": "uid",
    "volumeDevices": "devicePath",
}
_SETS = {"finalizers"}
_DELETE = object()


def _merge_key(field: str, path: tuple[str, ...], kind: str) -> str | None:
    """kind: the definition name of a built-in kind (its metadata decides), or a kind."""
    if "." in kind:
        found = schemas.patch_merge_key(kind, (*path, field))
        if found is not schemas.UNKNOWN_FIELD:
            return found  # type: ignore[no-any-return]
        kind = kind.rsplit(".", 1)[-1]
    if field in _BY_NAME:
        return "name"
    if field == "ports":
        return "port" if kind == "Service" and path[-1:] == ("spec",) else "containerPort"
    return _MERGE_KEYS.get(field)


def merge_patch(target: Any, patch: Any, owned: bool = False) -> Any:
    """RFC 7386. The result shares what the patch leaves unchanged with `target` (new
    dicts only along the patched paths); with `owned` (a patch decoded for this call
    alone) it also takes the patch's values as they are instead of copies."""
    if not isinstance(patch, dict):
        return patch if owned else copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        elif owned and type(v) is not dict:
            out[k] = v  # a list or a scalar replaces what was there
        else:
            out[k] = merge_patch(out.get(k), v, owned)
    return out


def _merge_list(
    cur: list[Any], patch: list[Any], key: str, path: tuple[str, ...], kind: str
) -> list[Any]:
    if any(isinstance(p, dict) and p.get("$patch") == "replace" for p in patch):
        return [copy.deepcopy(p) for p in patch if not (isinstance(p, dict) and "$patch" in p)]
    out = [copy.deepcopy(x) for x in cur]
    for item in patch:
        if not isinstance(item, dict):
            raise PatchError(
                400,
                "BadRequest",
                f"list items at {'.'.join(path)} must be objects with a {key!r} key",
            )
        if key not in item:
            raise PatchError(
                400, "BadRequest", f"a list item at {'.'.join(path)} has no merge key {key!r}"
            )
        idx = next(
            (i for i, x in enumerate(out) if isinstance(x, dict) and x.get(key) == item[key]), None
        )
        if item.get("$patch") == "delete":
            if idx is not None:
                del out[idx]
            continue
        if idx is None:
            out.append(_strategic(None, item, path, kind))
        else:
            out[idx] = _strategic(out[idx], item, path, kind)
    return out


def _strategic(cur: Any, patch: Any, path: tuple[str, ...], kind: str) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    directive = patch.get("$patch")
    if directive == "delete":
        return _DELETE
    body = {k: v for k, v in patch.items() if k != "$patch"}
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in body.items() if not k.startswith("$")}
    if directive not in (None, "merge"):
        raise PatchError(400, "BadRequest", f"unknown $patch directive {directive!r}")
    out = dict(cur) if isinstance(cur, dict) else {}
    retain = body.pop("$retainKeys", None)
    for k, v in body.items():
        if k.startswith("$setElementOrder/"):
            continue
        if k.startswith("$deleteFromPrimitiveList/"):
            field = k.split("/", 1)[1]
            if isinstance(out.get(field), list) and isinstance(v, list):
                out[field] = [x for x in out[field] if x not in v]
            continue
        if v is None:
            out.pop(k, None)
            continue
        key = _merge_key(k, path, kind)
        if isinstance(v, list) and key is not None:
            out[k] = _merge_list(out.get(k) or [], v, key, (*path, k), kind)
        elif isinstance(v, list) and k in _SETS:
            have = list(out.get(k) or [])
            out[k] = have + [x for x in v if x not in have]
        elif isinstance(v, dict):
            merged = _strategic(out.get(k), v, (*path, k), kind)
            if merged is _DELETE:
                out.pop(k, None)
            else:
                out[k] = merged
        else:
            out[k] = copy.deepcopy(v)
    if isinstance(retain, list):
        out = {k: v for k, v in out.items() if k in retain}
    return out


def strategic_merge_patch(
    obj: dict[str, Any], patch: dict[str, Any], kind: str = ""
) -> dict[str, Any]:
    out = _strategic(obj, patch, (), kind)
    if out is _DELETE or not isinstance(out, dict):
        raise PatchError(422, "Invalid", "the patch deletes the whole object")
    return out


def _string_keys(v: Any) -> bool:
    """Every mapping key a string, as in JSON (YAML allows null, numbers, ...)."""
    if isinstance(v, dict):
        return all(isinstance(k, str) and _string_keys(x) for k, x in v.items())
    if isinstance(v, list):
        return all(_string_keys(x) for x in v)
    return True


def _decode_error(exc: decode.DecodeError, what: str) -> PatchError:
    if exc.code == 413:
        return PatchError(413, "RequestEntityTooLarge", f"{what} is too large: {exc.message}")
    return PatchError(400, "BadRequest", f"{what} could not be decoded: {exc.message}")


def _decode_json(body: bytes) -> Any:
    try:
        return decode.loads_json(body)
    except decode.DecodeError as exc:
        raise _decode_error(exc, "the patch") from None


def apply_patch(
    obj: dict[str, Any],
    patch: bytes,
    content_type: str,
    resource: Resource,
    field_manager: str | None = None,
    force: bool = False,
    sub: str | None = None,
) -> dict[str, Any]:
    ct = content_type.split(";")[0].strip().lower()
    if ct == "application/json-patch+json":
        ops = _decode_json(patch)
        if not isinstance(ops, list):
            raise PatchError(400, "BadRequest", "a JSON patch must be a list of operations")
        try:
            out = json_patch.applied(obj, ops)
        except json_patch.PatchFailed as exc:
            raise PatchError(
                422, "Invalid", f"the JSON patch could not be applied: {exc}"
            ) from None
        except (TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
            raise PatchError(400, "BadRequest", f"the JSON patch is malformed: {exc}") from None
        if not isinstance(out, dict):
            raise PatchError(422, "Invalid", "the JSON patch must leave an object")
        return dict(out)
    if ct == "application/merge-patch+json":
        p = _decode_json(patch)
        if not isinstance(p, dict):
            raise PatchError(400, "BadRequest", "a merge patch must be a JSON object")
        return dict(merge_patch(obj, p, owned=True))
    if ct == "application/strategic-merge-patch+json":
        if resource.custom:
            raise PatchError(
                415,
                "UnsupportedMediaType",
                "strategic merge patch is not supported for custom resources; "
                "use a merge patch or a JSON patch",
            )
        p = _decode_json(patch)
        if not isinstance(p, dict):
            raise PatchError(400, "BadRequest", "a strategic merge patch must be a JSON object")
        return strategic_merge_patch(obj, p, schemas.definition_of(resource) or resource.kind)
    if ct == "application/apply-patch+yaml":
        try:
            p = decode.loads_yaml(patch)
        except decode.DecodeError as exc:
            raise _decode_error(exc, "the applied configuration") from None
        if not isinstance(p, dict):
            raise PatchError(400, "BadRequest", "the applied configuration must be an object")
        if not _string_keys(p):
            raise PatchError(
                400, "BadRequest", "the applied configuration has a key that is not a string"
            )
        if p.get("kind") not in (None, resource.kind) or p.get("apiVersion") not in (
            None,
            resource.api_version,
        ):
            raise PatchError(
                400,
                "BadRequest",
                f"the applied configuration is {p.get('apiVersion')}/{p.get('kind')}, "
                f"not {resource.api_version}/{resource.kind}",
            )
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return managedfields.apply(
            resource, obj, p, field_manager or managedfields.DEFAULT_MANAGER, force, sub, now
        )
    raise PatchError(415, "UnsupportedMediaType", f"unsupported patch type {content_type!r}")
