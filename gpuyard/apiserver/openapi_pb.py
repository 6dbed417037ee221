"""A Swagger 2.0 document as gnostic's OpenAPIv2 protobuf message, which kubectl asks
for (`application/com.github.proto-openapi.spec.v2@v1.0+protobuf`).

The field numbers are those of gnostic's `openapiv2/OpenAPIv2.proto` (package
`openapi.v2`): Document, Info, Paths/PathItem/Operation, parameters, responses,
Definitions/Schema. Vendor extensions (`x-kubernetes-*`) travel as NamedAny whose
value is YAML text (JSON is YAML). Keys the message has no field for are dropped, as
gnostic drops them. Pure: no I/O.
"""

from __future__ import annotations

import struct
from typing import Any

import orjson

# ------------------------------------------------------------ wire format


def _varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return _varint(field << 3 | wire)


def _bytes(field: int, data: bytes) -> bytes:
    return _key(field, 2) + _varint(len(data)) + data


def _str(field: int, s: Any) -> bytes:
    if s is None or s == "":
        return b""
    return _bytes(field, str(s).encode())


def _bool(field: int, v: Any) -> bytes:
    return _key(field, 0) + b"\x01" if v is True else b""


def _int(field: int, v: Any) -> bytes:
    if isinstance(v, bool) or not isinstance(v, int):
        return b""
    return _key(field, 0) + _varint(v)


def _double(field: int, v: Any) -> bytes:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return b""
    return _key(field, 1) + struct.pack("<d", float(v))


def _any(value: Any) -> bytes:
    """Any {2: yaml}."""
    return _str(2, orjson.dumps(value).decode())


def _named_any(field: int, name: str, value: Any) -> bytes:
    return _bytes(field, _str(1, name) + _bytes(2, _any(value)))


def _extensions(field: int, obj: dict[str, Any]) -> bytes:
    return b"".join(_named_any(field, k, v) for k, v in obj.items() if k.startswith("x-"))


# ------------------------------------------------------------ Schema


def schema(s: Any) -> bytes:
    if not isinstance(s, dict):
        return b""
    out = [
        _str(1, s.get("$ref")),
        _str(2, s.get("format")),
        _str(3, s.get("title")),
        _str(4, s.get("description")),
    ]
    if "default" in s:
        out.append(_bytes(5, _any(s["default"])))
    out += [
        _double(6, s.get("multipleOf")),
        _double(7, s.get("maximum")),
        _bool(8, s.get("exclusiveMaximum")),
        _double(9, s.get("minimum")),
        _bool(10, s.get("exclusiveMinimum")),
        _int(11, s.get("maxLength")),
        _int(12, s.get("minLength")),
        _str(13, s.get("pattern")),
        _int(14, s.get("maxItems")),
        _int(15, s.get("minItems")),
        _bool(16, s.get("uniqueItems")),
        _int(17, s.get("maxProperties")),
        _int(18, s.get("minProperties")),
    ]
    for r in s.get("required") or ():
        out.append(_str(19, r))
    for e in s.get("enum") or ():
        out.append(_bytes(20, _any(e)))
    addl = s.get("additionalProperties")
    if isinstance(addl, dict):
        out.append(_bytes(21, _bytes(1, schema(addl))))
    elif isinstance(addl, bool):
        out.append(_bytes(21, _key(2, 0) + (b"\x01" if addl else b"\x00")))
    t = s.get("type")
    if t:
        types = t if isinstance(t, list) else [t]
        out.append(_bytes(22, b"".join(_str(1, x) for x in types)))
    items = s.get("items")
    if isinstance(items, dict):
        out.append(_bytes(23, _bytes(1, schema(items))))
    elif isinstance(items, list):
        out.append(_bytes(23, b"".join(_bytes(1, schema(x)) for x in items)))
    for sub in s.get("allOf") or ():
        out.append(_bytes(24, schema(sub)))
    props = s.get("properties")
    if isinstance(props, dict):
        out.append(
            _bytes(
                25, b"".join(_bytes(1, _str(1, k) + _bytes(2, schema(v))) for k, v in props.items())
            )
        )
    out.append(_str(26, s.get("discriminator")))
    out.append(_bool(27, s.get("readOnly")))
    if "example" in s:
        out.append(_bytes(30, _any(s["example"])))
    out.append(_extensions(31, s))
    return b"".join(out)


# ------------------------------------------------------------ paths


def _parameter(p: dict[str, Any]) -> bytes:
    """ParametersItem {1: Parameter {1: BodyParameter | 2: NonBodyParameter}}."""
    if p.get("in") == "body":
        body = (
            _str(1, p.get("description"))
            + _str(2, p.get("name"))
            + _str(3, "body")
            + _bool(4, p.get("required"))
            + _bytes(5, schema(p.get("schema") or {}))
            + _extensions(6, p)
        )
        return _bytes(1, _bytes(1, body))
    sub = {"header": 1, "formData": 2, "query": 3, "path": 4}.get(str(p.get("in")), 3)
    if sub == 2:  # FormDataParameterSubSchema: allow_empty_value at 5, type at 6
        fields = _bool(1, p.get("required")) + _str(2, p.get("in")) + _str(3, p.get("description"))
        fields += _str(4, p.get("name")) + _str(6, p.get("type")) + _bool(20, p.get("uniqueItems"))
    elif sub == 3:  # QueryParameterSubSchema
        fields = _bool(1, p.get("required")) + _str(2, p.get("in")) + _str(3, p.get("description"))
        fields += _str(4, p.get("name")) + _str(6, p.get("type")) + _bool(20, p.get("uniqueItems"))
    else:  # Header/PathParameterSubSchema: type at 5, unique_items at 19
        fields = _bool(1, p.get("required")) + _str(2, p.get("in")) + _str(3, p.get("description"))
        fields += _str(4, p.get("name")) + _str(5, p.get("type")) + _bool(19, p.get("uniqueItems"))
    return _bytes(1, _bytes(2, _bytes(sub, fields)))


def _responses(rs: dict[str, Any]) -> bytes:
    out = []
    for code, r in rs.items():
        resp = _str(1, r.get("description"))
        if isinstance(r.get("schema"), dict):
            resp += _bytes(2, _bytes(1, schema(r["schema"])))
        out.append(_bytes(1, _str(1, code) + _bytes(2, _bytes(1, resp))))
    return b"".join(out)


def _operation(o: dict[str, Any]) -> bytes:
    out = [b"".join(_str(1, t) for t in o.get("tags") or ())]
    out += [_str(2, o.get("summary")), _str(3, o.get("description")), _str(5, o.get("operationId"))]
    out += [_str(6, x) for x in o.get("produces") or ()]
    out += [_str(7, x) for x in o.get("consumes") or ()]
    out += [_bytes(8, _parameter(p)) for p in o.get("parameters") or ()]
    out.append(_bytes(9, _responses(o.get("responses") or {})))
    out += [_str(10, x) for x in o.get("schemes") or ()]
    out.append(_bool(11, o.get("deprecated")))
    out.append(_extensions(13, o))
    return b"".join(out)


_METHODS = {"get": 2, "put": 3, "post": 4, "delete": 5, "options": 6, "head": 7, "patch": 8}


def _path_item(item: dict[str, Any]) -> bytes:
    out = [_str(1, item.get("$ref"))]
    for method, field in _METHODS.items():
        if isinstance(item.get(method), dict):
            out.append(_bytes(field, _operation(item[method])))
    out += [_bytes(9, _parameter(p)) for p in item.get("parameters") or ()]
    out.append(_extensions(10, item))
    return b"".join(out)


# ------------------------------------------------------------ document


def encode(doc: dict[str, Any]) -> bytes:
    """The Document message of a Swagger 2.0 document."""
    info = doc.get("info") or {}
    out = [
        _str(1, doc.get("swagger", "2.0")),
        _bytes(
            2,
            _str(1, info.get("title"))
            + _str(2, info.get("version"))
            + _str(3, info.get("description")),
        ),
        _str(3, doc.get("host")),
        _str(4, doc.get("basePath")),
    ]
    out += [_str(5, x) for x in doc.get("schemes") or ()]
    out += [_str(6, x) for x in doc.get("consumes") or ()]
    out += [_str(7, x) for x in doc.get("produces") or ()]
    paths = b"".join(
        _bytes(2, _str(1, p) + _bytes(2, _path_item(item)))
        for p, item in (doc.get("paths") or {}).items()
    )
    out.append(_bytes(8, paths))
    defs = b"".join(
        _bytes(1, _str(1, n) + _bytes(2, schema(s)))
        for n, s in (doc.get("definitions") or {}).items()
    )
    out.append(_bytes(9, defs))
    for req in doc.get("security") or ():
        # SecurityRequirement {1: repeated NamedStringArray {1: name, 2: StringArray {1: value}}}
        pairs = b"".join(
            _bytes(1, _str(1, k) + _bytes(2, b"".join(_str(1, x) for x in v)))
            for k, v in req.items()
        )
        out.append(_bytes(12, pairs))
    sd = doc.get("securityDefinitions") or {}
    if sd:
        # SecurityDefinitions {1: NamedSecurityDefinitionsItem {1: name, 2: item}}, item
        # {2: ApiKeySecurity {1: type, 2: name, 3: in, 4: description}}
        items = b"".join(
            _bytes(
                1,
                _str(1, n)
                + _bytes(
                    2,
                    _bytes(
                        2,
                        _str(1, d.get("type"))
                        + _str(2, d.get("name"))
                        + _str(3, d.get("in"))
                        + _str(4, d.get("description")),
                    ),
                ),
            )
            for n, d in sd.items()
            if d.get("type") == "apiKey"
        )
        out.append(_bytes(13, items))
    out.append(_extensions(16, doc))
    return b"".join(out)
