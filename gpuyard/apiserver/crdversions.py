"""The versions of a CustomResourceDefinition, as kube-apiserver converts between them.

A custom object is stored in the CRD's storage version of the time of its write, and
read in any served version:

- strategy None (the default): only apiVersion changes. Written through another
  version, the object (decoded, pruned and defaulted by the version of the request) is
  pruned by the storage version's schema, so a field that version does not declare
  does not survive. Read, it is pruned and defaulted by the version it is stored in,
  then pruned (not defaulted) by the version read. An object stays in the version it
  was stored in until it is next written.
- strategy Webhook: kube-apiserver sends a ConversionReview to the CRD's webhook. This
  server does not call conversion webhooks; a read or write that needs one is refused
  (500 InternalError, "conversion webhook for GROUP/VERSION, Kind=KIND failed: ...",
  the words kube-apiserver uses when its webhook fails), and what needs none (reads
  and writes in the storage version) is served.

A CRD served in one version, the common case, converts nothing.
"""

from __future__ import annotations

from typing import Any

from gpuyard.apiserver import schemas
from gpuyard.apiserver.errors import APIError
from gpuyard.apiserver.resources import Resource


def _webhook(res: Resource) -> bool:
    return bool(res.conversion) and (res.conversion or {}).get("strategy") == "Webhook"


def _refuse(res: Resource, api_version: Any) -> APIError:
    hook = (res.conversion or {}).get("webhook") or {}
    cfg = hook.get("clientConfig") or {} if isinstance(hook, dict) else {}
    svc = cfg.get("service") if isinstance(cfg, dict) else None
    if isinstance(svc, dict):
        where = f"service {svc.get('namespace', '')}/{svc.get('name', '')}"
    else:
        where = str(cfg.get("url") or "") if isinstance(cfg, dict) else ""
    return APIError(
        500,
        "InternalError",
        f"conversion webhook for {api_version}, Kind={res.kind} failed: this server does "
        f"not call conversion webhooks ({where or 'no clientConfig'})",
    )


def to_storage(res: Resource, obj: dict[str, Any]) -> dict[str, Any]:
    """`obj`, a custom object written through `res`, as it is stored (in place)."""
    sv = res.storage_version
    if not res.custom or not sv or sv == res.version:
        return obj
    if _webhook(res):
        raise _refuse(res, res.api_version)
    obj["apiVersion"] = f"{res.group}/{sv}"
    schemas.prune_by(res.version_schemas.get(sv), obj, defaults=False)
    return obj


def view(res: Resource, obj: dict[str, Any]) -> dict[str, Any]:
    """A stored custom object (changed in place) as a read through `res` shows it."""
    stored = obj.get("apiVersion")
    if stored == res.api_version or not isinstance(stored, str):
        obj["apiVersion"] = res.api_version
        schemas.prune_and_default(res, obj)
        return obj
    group, _, version = stored.rpartition("/")
    schema = res.version_schemas.get(version) if group == res.group else None
    if schema is None:
        # stored in a version the CRD no longer has: read by the version asked for
        obj["apiVersion"] = res.api_version
        schemas.prune_and_default(res, obj)
        return obj
    if _webhook(res):
        raise _refuse(res, stored)
    schemas.prune_by(schema, obj, defaults=True)
    obj["apiVersion"] = res.api_version
    schemas.prune_by(res.schema, obj, defaults=False)
    return obj
