"""Structural schemas: what apiextensions.k8s.io/v1 requires of a CRD's openAPIV3Schema.

A v1 CustomResourceDefinition must give every version a schema, and that schema must be
structural, so that the API server can prune unknown fields and default by it: an object
at the root, a type on every node (unless it is `x-kubernetes-int-or-string` or
preserves unknown fields), items on every array, `properties` and
`additionalProperties` never together, `x-kubernetes-preserve-unknown-fields` only ever
true, and at the root `metadata` limited to restrictions of name and generateName.
Causes carry the field paths kube-apiserver names
(`spec.validation.openAPIV3Schema.properties[spec].type` where every version has the
same schema, as kube names it, else `spec.versions[0].schema.openAPIV3Schema...`).
"""

from __future__ import annotations

from typing import Any

Cause = dict[str, str]

TYPES = ("array", "boolean", "integer", "number", "object", "string")


def _cause(field: str, message: str, reason: str) -> Cause:
    return {"reason": reason, "message": message, "field": field}


def schema_paths(spec: dict[str, Any]) -> list[tuple[str, Any]]:
    """(path, openAPIV3Schema) of each schema of a CRD's versions as kube-apiserver
    names them: where every version has the same schema (one version, the common
    case), kube judges it once as the top-level spec.validation (its internal form
    moves identical per-version schemas there), else each at spec.versions[i]."""
    versions = spec.get("versions")
    if not isinstance(versions, list):
        return []
    schemas = [v.get("schema") if isinstance(v, dict) else None for v in versions]
    one = schemas[0] if schemas else None
    if isinstance(one, dict) and isinstance(one.get("openAPIV3Schema"), dict):
        if all(s == one for s in schemas[1:]):
            return [("spec.validation.openAPIV3Schema", one["openAPIV3Schema"])]
    return [
        (
            f"spec.versions[{i}].schema.openAPIV3Schema",
            s.get("openAPIV3Schema") if isinstance(s, dict) else None,
        )
        for i, s in enumerate(schemas)
        if isinstance(versions[i], dict)
    ]


def crd_schema_causes(spec: dict[str, Any]) -> list[Cause]:
    """Causes for the schemas of a CRD's versions (schema_paths)."""
    out: list[Cause] = []
    for path, schema in schema_paths(spec):
        if not isinstance(schema, dict):
            out.append(_cause(path, "Required value: schemas are required", "FieldValueRequired"))
            continue
        out += structural_causes(schema, path)
    return out


def structural_causes(schema: dict[str, Any], path: str) -> list[Cause]:
    """Causes that make `schema` (a version's openAPIV3Schema) not structural."""
    out: list[Cause] = []
    t = schema.get("type")
    if not t:
        out.append(
            _cause(
                f"{path}.type",
                "Required value: must not be empty at the root",
                "FieldValueRequired",
            )
        )
    elif t != "object":
        out.append(
            _cause(
                f"{path}.type",
                f'Invalid value: "{t}": must be object at the root',
                "FieldValueInvalid",
            )
        )
    md = (
        (schema.get("properties") or {}).get("metadata")
        if isinstance(schema.get("properties"), dict)
        else None
    )
    if isinstance(md, dict) and not _metadata_ok(md):
        out.append(
            _cause(
                f"{path}.properties[metadata]",
                "Forbidden: must not specify anything other than name and generateName, but "
                "metadata is implicitly specified",
                "FieldValueForbidden",
            )
        )
    _walk(schema, path, out, root=True)
    return out


def _metadata_ok(md: dict[str, Any]) -> bool:
    if set(md) - {"type", "properties", "description"}:
        return False
    if md.get("type") not in (None, "object"):
        return False
    props = md.get("properties") or {}
    return isinstance(props, dict) and set(props) <= {"name", "generateName"}


def _walk(node: Any, path: str, out: list[Cause], root: bool = False, what: str = "") -> None:
    if not isinstance(node, dict):
        out.append(_cause(path, "Invalid value: must be a schema object", "FieldValueInvalid"))
        return
    t = node.get("type")
    int_or_string = node.get("x-kubernetes-int-or-string") is True
    preserve = node.get("x-kubernetes-preserve-unknown-fields")
    if preserve is not None and preserve is not True:
        out.append(
            _cause(
                f"{path}.x-kubernetes-preserve-unknown-fields",
                f"Invalid value: {_json(preserve)}: must be true or undefined",
                "FieldValueInvalid",
            )
        )
    if t is not None and t not in TYPES:
        out.append(
            _cause(
                f"{path}.type",
                f'Unsupported value: {_json(t)}: supported values: "array", "boolean", '
                '"integer", "number", "object", "string"',
                "FieldValueNotSupported",
            )
        )
    elif not t and not root and not int_or_string and preserve is not True:
        out.append(
            _cause(
                f"{path}.type",
                f"Required value: must not be empty for specified {what}",
                "FieldValueRequired",
            )
        )
    props = node.get("properties")
    addl = node.get("additionalProperties")
    if props and addl not in (None, False):
        out.append(
            _cause(
                f"{path}.additionalProperties",
                "Forbidden: additionalProperties and properties are mutual exclusive",
                "FieldValueForbidden",
            )
        )
    if isinstance(props, dict):
        for k, sub in props.items():
            if root and k == "metadata":
                continue
            _walk(sub, f"{path}.properties[{k}]", out, what="object fields")
    if isinstance(addl, dict):
        _walk(addl, f"{path}.additionalProperties", out, what="object fields")
    items = node.get("items")
    if t == "array" and items is None:
        out.append(
            _cause(f"{path}.items", "Required value: must be specified", "FieldValueRequired")
        )
    if isinstance(items, dict):
        _walk(items, f"{path}.items", out, what="array items")
    elif isinstance(items, list):
        out.append(
            _cause(
                f"{path}.items",
                "Forbidden: items must be a schema object and not an array",
                "FieldValueForbidden",
            )
        )


def _json(v: Any) -> str:
    import orjson

    try:
        return orjson.dumps(v).decode()
    except TypeError:
        return repr(v)
