"""JSON and YAML decoding with limits enforced while parsing, for everything that reads
Kubernetes-shaped documents from outside: API request and patch bodies, `gpuyard
submit -f`, manifests, traces, kubeconfigs.

Limits (a `DecodeError` names the one broken; `.code` is 400, or 413 when the result
would be too large):

- nesting depth at most `MAX_DEPTH` arrays and objects;
- YAML aliases expand to independent copies and count towards `MAX_SIZE` (a
  "billion laughs" body of a few hundred bytes is refused, not expanded);
- the decoded document at most `MAX_SIZE` (about its size as JSON);
- integers within int64, as Kubernetes (a bigger one is an error, never a float);
  floats finite; strings valid UTF-8 without lone surrogates;
- YAML mapping keys become strings as Kubernetes makes them (ints and booleans);
  timestamps stay the strings they were written as.

JSON goes through orjson; the extra checks run only when cheap byte scans say a body
could break a limit (more brackets than the depth limit, a run of 19 digits).

Fields given twice in one object are found on request (`duplicates=`, a list that gets
their paths, such as `spec.containers[0].image`; the last value is the one kept, as
Kubernetes keeps it): for JSON, the colons of the body counted against those of the
decoded document re-encoded (C-speed byte counts) say whether a key was lost, and only
then is the body parsed again to name them.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson
import yaml

MAX_DEPTH = 100
MAX_SIZE = 3 * 1024 * 1024
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

_SURROGATE = re.compile("[\ud800-\udfff]")


class DecodeError(ValueError):
    """A document that could not be decoded within the limits; code 400 or 413."""

    def __init__(self, message: str, code: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def _too_deep() -> DecodeError:
    return DecodeError(f"the document is nested more than {MAX_DEPTH} levels deep")


_DROP = bytes(b for b in range(256) if b not in b'"[]{}')
_STRING = re.compile(rb'"[^"]*"')
_TO_BRACES = bytes.maketrans(b"[]", b"{}")
_DIGITS_AS_ZERO = bytes(48 if b in b"0123456789" else b for b in range(256))
_NINETEEN_DIGITS = b"0" * 19


def _json_depth_ok(data: bytes) -> bool:
    """Whether valid JSON nests at most MAX_DEPTH deep, in C-speed passes: drop the
    escaped backslashes and quotes, then all but quotes and brackets, then the strings;
    what remains is the (balanced) brackets, one kind made of both. Each pass of
    replace takes out the innermost pairs, exactly one level ("{{}}" becomes "{}")."""
    s = data.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _DROP)
    s = s.replace(b'""', b"")
    if b'"' in s:
        s = _STRING.sub(b"", s)
    s = s.translate(_TO_BRACES)
    for _ in range(MAX_DEPTH):
        if not s:
            return True
        s = s.replace(b"{}", b"")
    return not s


def _checked_int(s: str) -> int:
    if len(s) > 40:
        raise DecodeError(f"the integer {s[:24]}... is out of range (int64)")
    v = int(s)
    if not INT64_MIN <= v <= INT64_MAX:
        raise DecodeError(f"the integer {s} is out of range (int64)")
    return v


def _refuse_constant(s: str) -> Any:
    raise DecodeError(f"{s} is not a valid JSON number")


def loads_json(
    data: bytes | str, max_size: int = MAX_SIZE, duplicates: list[str] | None = None
) -> Any:
    """Decode one JSON document within the limits; with `duplicates`, the paths of fields
    given twice are appended to it."""
    if isinstance(data, str):
        try:
            data = data.encode("utf-8")
        except UnicodeEncodeError:
            raise DecodeError("the document has a lone surrogate") from None
    if len(data) > max_size:
        raise DecodeError(f"the document is larger than {max_size} bytes", 413)
    try:
        v = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        msg = str(exc)
        if "depth" in msg or "recursion" in msg.lower():
            raise _too_deep() from None
        raise DecodeError(f"not valid JSON: {msg}") from None
    if (
        isinstance(v, dict | list)
        and data.count(b"{") + data.count(b"[") > MAX_DEPTH
        and not _json_depth_ok(data)
    ):
        raise _too_deep()
    if _NINETEEN_DIGITS in data.translate(_DIGITS_AS_ZERO):
        # orjson keeps integers up to 2**64 - 1 and turns bigger ones into floats:
        # read it again, exactly, to tell an integer out of range from a float.
        v = json.loads(data, parse_int=_checked_int, parse_constant=_refuse_constant)
    if duplicates is not None and isinstance(v, dict | list) and _keys_lost(data, v):
        duplicates.extend(_json_duplicates(data))
    return v


def _keys_lost(data: bytes, v: Any) -> bool:
    """Whether the body may have held more keys than the decoded document. Outside
    strings every colon follows a key; inside them colons are kept as they are by both
    the body and orjson's encoding of the document (unless the body wrote them as a
    \\u003a escape: then parse again). So equal colon counts mean no key was lost;
    unequal ones are checked exactly."""
    if b"\\u" in data and (b"\\u003a" in data or b"\\u003A" in data):
        return True
    return data.count(b":") != orjson.dumps(v).count(b":")


def _json_duplicates(data: bytes) -> list[str]:
    """The paths of the fields given twice in a JSON body (parsed again, slowly)."""
    twice: dict[int, list[str]] = {}

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        d: dict[str, Any] = {}
        dups: list[str] | None = None
        for k, x in items:
            if k in d:
                dups = dups if dups is not None else []
                if k not in dups:
                    dups.append(k)
            d[k] = x
        if dups:
            twice[id(d)] = dups
        return d

    doc = json.loads(data, object_pairs_hook=pairs)
    out: list[str] = []
    if twice:
        _walk_duplicates(doc, "", twice, out)  # the dicts are alive: their ids are theirs
    return out


def _field_path(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _walk_duplicates(v: Any, path: str, twice: dict[int, list[str]], out: list[str]) -> None:
    if isinstance(v, dict):
        out.extend(_field_path(path, k) for k in twice.get(id(v), ()))
        for k, x in v.items():
            if isinstance(x, dict | list):
                _walk_duplicates(x, _field_path(path, k), twice, out)
    elif isinstance(v, list):
        for i, x in enumerate(v):
            if isinstance(x, dict | list):
                _walk_duplicates(x, f"{path}[{i}]", twice, out)


# ------------------------------------------------------------------ YAML

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_RESOLVER = yaml.resolver.Resolver()
_CONSTRUCTOR = yaml.constructor.SafeConstructor()
_T = "tag:yaml.org,2002:"


def _scalar(ev: Any) -> Any:
    value: str = ev.value
    if ev.tag and ev.tag != "!":
        tag = ev.tag
    else:
        tag = _RESOLVER.resolve(yaml.ScalarNode, value, ev.implicit)
    if tag in (_T + "str", _T + "timestamp", _T + "binary"):
        if _SURROGATE.search(value):
            raise DecodeError("the document has a lone surrogate")
        return value
    node = yaml.ScalarNode(tag, value)
    if tag == _T + "null":
        return None
    if tag == _T + "bool":
        return _CONSTRUCTOR.construct_yaml_bool(node)
    if tag == _T + "int":
        digits = value.replace("_", "")
        if len(digits) > 70:
            raise DecodeError(f"the integer {value[:24]}... is out of range (int64)")
        try:
            i = _CONSTRUCTOR.construct_yaml_int(node)
        except ValueError:
            raise DecodeError(f"{value[:40]!r} is not a valid integer") from None
        if not INT64_MIN <= i <= INT64_MAX:
            raise DecodeError(f"the integer {value} is out of range (int64)")
        return i
    if tag == _T + "float":
        try:
            f = _CONSTRUCTOR.construct_yaml_float(node)
        except ValueError:
            raise DecodeError(f"{value[:40]!r} is not a valid number") from None
        if f != f or f in (float("inf"), float("-inf")):
            raise DecodeError(f"{value[:40]} is not a finite number")
        return f
    if tag == _T + "merge":
        return _MERGE
    raise DecodeError(f"unsupported YAML tag {tag[:60]}")


_MERGE = object()


def _key(k: Any) -> str:
    if isinstance(k, str):
        return k
    if isinstance(k, bool):
        return "true" if k else "false"
    if isinstance(k, int | float):
        return str(k)
    raise DecodeError("a mapping key must be a string, a number or a boolean")


class _Frame:
    __slots__ = ("anchor", "key", "merges", "value", "weight", "height", "has_key")

    def __init__(self, value: Any, anchor: str | None) -> None:
        self.value = value
        self.anchor = anchor
        self.key: Any = None
        self.has_key = False
        self.merges: list[dict[str, Any]] = []
        self.weight = 2
        self.height = 1


def _copy(v: Any) -> Any:
    return orjson.loads(orjson.dumps(v)) if isinstance(v, dict | list) else v


def _documents(data: bytes | str, max_size: int, duplicates: list[str] | None = None) -> list[Any]:
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError(f"not valid UTF-8 (at byte {exc.start})") from None
    else:
        text = data
    if len(text) > max_size:
        raise DecodeError(f"the document is larger than {max_size} bytes", 413)
    text = text.removeprefix("\ufeff")
    docs: list[Any] = []
    anchors: dict[str, tuple[Any, int, int]] = {}
    open_anchors: set[str] = set()
    stack: list[_Frame] = []
    total = 0
    root: list[Any] = []

    def add(value: Any, weight: int, height: int) -> None:
        nonlocal total
        total += weight
        if total > max_size:
            raise DecodeError(
                f"the document expands to more than {max_size} bytes (YAML aliases)", 413
            )
        if len(stack) + height > MAX_DEPTH:
            raise _too_deep()
        if value is _MERGE and not (stack and isinstance(stack[-1].value, dict)):
            value = "<<"
        elif value is _MERGE and stack[-1].has_key:
            value = "<<"
        if not stack:
            root.append(value)
            return
        top = stack[-1]
        top.weight += weight
        top.height = max(top.height, height + 1)
        if isinstance(top.value, list):
            top.value.append(value)
        elif not top.has_key:
            if isinstance(value, dict | list) and value is not _MERGE:
                raise DecodeError("a mapping key must be a string, a number or a boolean")
            top.key, top.has_key = value, True
        else:
            if top.key is _MERGE:
                items = value if isinstance(value, list) else [value]
                if not all(isinstance(m, dict) for m in items):
                    raise DecodeError("a merge key (<<) must refer to a mapping or mappings")
                top.merges.extend(items)
            else:
                k = _key(top.key)
                if duplicates is not None and k in top.value:
                    duplicates.append(_yaml_path(stack, k))
                top.value[k] = value
            top.has_key = False

    loader = _Loader(text)
    try:
        while True:
            ev = loader.get_event()
            if ev is None:
                break
            if isinstance(ev, yaml.ScalarEvent):
                v = _scalar(ev)
                w = len(ev.value) + 2
                add(v, w, 0)
                if ev.anchor:
                    anchors[ev.anchor] = (v, w, 0)
            elif isinstance(ev, yaml.AliasEvent):
                if ev.anchor in open_anchors:
                    raise DecodeError(f"the alias *{ev.anchor} refers to a node that holds it")
                if ev.anchor not in anchors:
                    raise DecodeError(f"unknown YAML alias *{ev.anchor}")
                v, w, h = anchors[ev.anchor]
                add(_copy(v) if stack else v, w, h)
            elif isinstance(ev, yaml.SequenceStartEvent | yaml.MappingStartEvent):
                if len(stack) >= MAX_DEPTH:
                    raise _too_deep()
                is_seq = isinstance(ev, yaml.SequenceStartEvent)
                if ev.tag and ev.tag not in ("!", _T + ("seq" if is_seq else "map")):
                    raise DecodeError(f"unsupported YAML tag {ev.tag[:60]}")
                stack.append(_Frame([] if is_seq else {}, ev.anchor))
                if ev.anchor:
                    open_anchors.add(ev.anchor)
            elif isinstance(ev, yaml.SequenceEndEvent | yaml.MappingEndEvent):
                f = stack.pop()
                if f.merges:
                    merged: dict[str, Any] = {}
                    for m in reversed(f.merges):  # earlier mappings win
                        merged.update(_copy(m))
                    merged.update(f.value)
                    f.value = merged
                if f.anchor:
                    open_anchors.discard(f.anchor)
                    anchors[f.anchor] = (f.value, f.weight, f.height)
                total -= f.weight - 2  # its children were counted as they came
                add(f.value, f.weight, f.height)
            elif isinstance(ev, yaml.DocumentEndEvent):
                docs.append(root[0] if root else None)
                root.clear()
                anchors.clear()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise DecodeError(f"not valid YAML: {problem}{where}") from None
    finally:
        loader.dispose()
    return docs


def _yaml_path(stack: list[_Frame], key: str) -> str:
    """The path of `key` in the innermost mapping being built."""
    path = ""
    for parent in stack[:-1]:
        if isinstance(parent.value, list):
            path += f"[{len(parent.value)}]"
        else:
            path = _field_path(path, _key(parent.key))
    return _field_path(path, key)


def loads_yaml(
    data: bytes | str, max_size: int = MAX_SIZE, duplicates: list[str] | None = None
) -> Any:
    """Decode one YAML (or JSON) document within the limits; None when empty. With
    `duplicates`, the paths of keys given twice in one mapping are appended to it."""
    head = data.lstrip()[:1]
    if head in (b"{", "{", b"[", "["):
        try:
            return loads_json(data, max_size, duplicates)
        except DecodeError as exc:
            if exc.code == 413 or "JSON" not in exc.message:
                raise
    docs = _documents(data, max_size, duplicates)
    if len(docs) > 1:
        raise DecodeError(f"expected one YAML document, found {len(docs)}")
    return docs[0] if docs else None


def loads_yaml_all(data: bytes | str, max_size: int = MAX_SIZE) -> list[Any]:
    """Every document of a YAML stream (empty ones as None), within the limits."""
    return _documents(data, max_size)
