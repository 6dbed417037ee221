"""Building CustomResourceDefinitions: one served and stored version with a status
subresource, printer columns, and an OpenAPI schema of spec and status."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

AGE = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}


def column(name: str, type_: str, path: str, priority: int = 0) -> dict[str, Any]:
    """A printer column (`kubectl get`); priority 1 shows only with -o wide."""
    col: dict[str, Any] = {"name": name, "type": type_, "jsonPath": path}
    if priority:
        col["priority"] = priority
    return col


def object_schema(spec: dict[str, Any], status: dict[str, Any] | None = None) -> dict[str, Any]:
    """The top-level schema of an object with the given spec and status schemas."""
    return {
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status or {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        },
    }


def crd(
    group: str,
    version: str,
    kind: str,
    plural: str,
    *,
    namespaced: bool,
    schema: dict[str, Any],
    columns: Sequence[dict[str, Any]] = (),
    short_names: Sequence[str] = (),
    categories: Sequence[str] = (),
) -> dict[str, Any]:
    """A CustomResourceDefinition (apiextensions.k8s.io/v1); an Age column follows the
    columns shown by default, before those shown only with -o wide."""
    names: dict[str, Any] = {
        "plural": plural,
        "singular": kind.lower(),
        "kind": kind,
        "listKind": f"{kind}List",
    }
    if short_names:
        names["shortNames"] = list(short_names)
    if categories:
        names["categories"] = list(categories)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced" if namespaced else "Cluster",
            "names": names,
            "versions": [
                {
                    "name": version,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        *(c for c in columns if not c.get("priority")),
                        AGE,
                        *(c for c in columns if c.get("priority")),
                    ],
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }
