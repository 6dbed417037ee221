"""Guarded access to the pure helper modules the server calls (patch, validation,
tables, webhooks, openapi).

Each is imported once by `load()`; a module that is missing or fails to import is None
and the server falls back (plain lists instead of tables, basic patching, no OpenAPI).
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
from types import ModuleType
from typing import Any

patch: Any = None
validation: Any = None
tables: Any = None
webhooks: Any = None
openapi: Any = None

_log = logging.getLogger("gpuyard.apiserver")


def _try(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(f"gpuyard.apiserver.{name}")
    except Exception as exc:  # noqa: BLE001 - missing or half-written module
        _log.debug("gpuyard.apiserver.%s unavailable: %s", name, exc)
        return None


def load() -> None:
    global patch, validation, tables, webhooks, openapi
    patch = _try("patch")
    if patch is not None and not hasattr(patch, "apply_patch"):
        patch = None
    validation = _try("validation")
    if validation is not None and not hasattr(validation, "validate_object"):
        validation = None
    tables = _try("tables")
    if tables is not None and not hasattr(tables, "to_table"):
        tables = None
    webhooks = _try("webhooks")
    if webhooks is not None and not hasattr(webhooks, "admit"):
        webhooks = None
    openapi = _try("openapi")


def make_admission_attributes(**values: Any) -> Any:
    """Build webhooks.AdmissionAttributes from the values it has fields for.

    Offered: resource, operation, name, namespace, dry_run, namespace_object,
    sub_resource (and user_info).
    """
    cls = getattr(webhooks, "AdmissionAttributes", None)
    if cls is None:
        return values
    values.setdefault("user_info", {"username": "gpuyard", "groups": ["system:masters"]})
    if dataclasses.is_dataclass(cls):
        args: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name in values:
                args[f.name] = values[f.name]
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                args[f.name] = None  # a field this server does not know: leave it empty
        return cls(**args)  # type: ignore[operator]
    return cls(**values)


load()
