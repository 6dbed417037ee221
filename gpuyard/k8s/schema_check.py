"""openAPIV3Schema checks of plain objects, on the ground floor: the API server
validates custom resources with them, and clients (`gpuyard submit`) check a file
before sending it, with the same causes.

Causes are Kubernetes-shaped (`{"reason", "message", "field"}`, field as a JSON path
like `spec.template.spec.containers[0].image`). Covered: type, required, properties,
additionalProperties, items, enum, minimum/maximum, minLength/maxLength, pattern,
minItems/maxItems, nullable, x-kubernetes-int-or-string,
x-kubernetes-preserve-unknown-fields; fields the schema does not declare are errors
unless unknown=False.
"""

from __future__ import annotations

import re
from typing import Any

Cause = dict[str, str]


def cause(field: str, message: str, reason: str = "FieldValueInvalid") -> Cause:
    return {"reason": reason, "message": message, "field": field}


_TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
}


def _type_ok(t: str, v: Any) -> bool:
    if t == "integer":
        return isinstance(v, int) and not isinstance(v, bool)
    if t == "number":
        return isinstance(v, int | float) and not isinstance(v, bool)
    py = _TYPES.get(t)
    return True if py is None else isinstance(v, py)


def schema_errors(
    schema: dict[str, Any], value: Any, field: str, top: bool = False, unknown: bool = True
) -> list[Cause]:
    """Errors of `value` against an openAPIV3Schema node; with unknown=False, fields the
    schema does not declare are not errors (the API server prunes them by the request's
    fieldValidation before validating, see schemas.decode)."""
    out: list[Cause] = []
    if value is None:
        if schema.get("nullable"):
            return out
        return [cause(field, "Invalid value: null: must not be null", "FieldValueTypeInvalid")]
    if schema.get("x-kubernetes-int-or-string"):
        if not (isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))):
            return [
                cause(
                    field,
                    f"Invalid value: {value!r}: must be an integer or a string",
                    "FieldValueTypeInvalid",
                )
            ]
    elif (t := schema.get("type")) and not _type_ok(t, value):
        return [
            cause(field, f"Invalid value: {value!r}: must be of type {t}", "FieldValueTypeInvalid")
        ]
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(repr(e) for e in schema["enum"])
        out.append(
            cause(
                field,
                f"Unsupported value: {value!r}: supported values: {allowed}",
                "FieldValueNotSupported",
            )
        )
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and schema.get("exclusiveMinimum") and value <= schema["minimum"]:
            out.append(
                cause(field, f"Invalid value: {value}: must be greater than {schema['minimum']}")
            )
        elif "minimum" in schema and value < schema["minimum"]:
            out.append(
                cause(
                    field,
                    f"Invalid value: {value}: must be greater than or equal to {schema['minimum']}",
                )
            )
        if "maximum" in schema and value > schema["maximum"]:
            out.append(
                cause(
                    field,
                    f"Invalid value: {value}: must be less than or equal to {schema['maximum']}",
                )
            )
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            out.append(
                cause(
                    field,
                    f"Invalid value: {value!r}: should be at least {schema['minLength']} chars long",
                )
            )
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            out.append(
                cause(
                    field,
                    f"Too long: may not be longer than {schema['maxLength']}",
                    "FieldValueTooLong",
                )
            )
        if "pattern" in schema:
            try:
                if not re.search(schema["pattern"], value):
                    out.append(
                        cause(
                            field, f"Invalid value: {value!r}: should match {schema['pattern']!r}"
                        )
                    )
            except re.error:
                pass
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            out.append(
                cause(field, f"Invalid value: should have at least {schema['minItems']} items")
            )
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            out.append(
                cause(
                    field,
                    f"Too many: must have at most {schema['maxItems']} items",
                    "FieldValueTooMany",
                )
            )
        items = schema.get("items")
        if isinstance(items, dict):
            for i, v in enumerate(value):
                out += schema_errors(items, v, f"{field}[{i}]", unknown=unknown)
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        for req in schema.get("required") or []:
            if req not in value:
                out.append(
                    cause(f"{field}.{req}".lstrip("."), "Required value", "FieldValueRequired")
                )
        addl = schema.get("additionalProperties")
        preserve = schema.get("x-kubernetes-preserve-unknown-fields")
        for k, v in value.items():
            f = f"{field}.{k}".lstrip(".")
            if top and k in ("apiVersion", "kind", "metadata"):
                continue
            if k in props:
                out += schema_errors(props[k], v, f, unknown=unknown)
            elif isinstance(addl, dict):
                out += schema_errors(addl, v, f, unknown=unknown)
            elif (
                not unknown
                or addl is True
                or preserve
                or (not props and schema.get("type") != "object")
            ):
                continue
            else:
                out.append(cause(f, f'unknown field "{f}"', "FieldValueInvalid"))
    return out
