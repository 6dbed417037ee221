"""JSON Patch (RFC 6902): the one applier the API server (PATCH with
application/json-patch+json, mutating webhooks' answers) and the team webhook's callers
use.

add, replace and remove on a path below the root (what webhooks send, nearly all
patches) are applied directly; anything else (move, copy, test, the root) goes
through the jsonpatch library, from that operation on.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import jsonpatch

# What a patch that does not apply raises (besides KeyError, IndexError, TypeError for
# a malformed one).
PatchFailed = (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException)


class _SlowPath(Exception):
    """An operation the fast path leaves to the jsonpatch library."""


def _pointer(path: Any) -> list[str]:
    if not isinstance(path, str) or not path.startswith("/"):
        raise _SlowPath
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _index(token: str, size: int, append_ok: bool) -> int:
    if append_ok and token == "-":
        return size
    if not token.isdigit() or (len(token) > 1 and token[0] == "0"):
        raise jsonpatch.JsonPatchConflict(f"{token!r} is not an array index")
    i = int(token)
    if i > size or (i == size and not append_ok):
        raise jsonpatch.JsonPatchConflict(f"index {i} is out of range")
    return i


def _apply_fast(doc: Any, op: dict[str, Any]) -> None:
    kind = op.get("op")
    if kind not in ("add", "replace", "remove"):
        raise _SlowPath
    parts = _pointer(op.get("path"))
    if kind != "remove" and "value" not in op:
        raise jsonpatch.InvalidJsonPatch(f"{kind} without a value")
    parent = doc
    for token in parts[:-1]:
        if isinstance(parent, dict):
            if token not in parent:
                raise jsonpatch.JsonPatchConflict(f"{op['path']}: {token!r} does not exist")
            parent = parent[token]
        elif isinstance(parent, list):
            parent = parent[_index(token, len(parent), False)]
        else:
            raise jsonpatch.JsonPatchConflict(f"{op['path']}: {token!r} is not a container")
    last = parts[-1]
    if isinstance(parent, dict):
        if kind != "add" and last not in parent:
            raise jsonpatch.JsonPatchConflict(f"{op['path']} does not exist")
        if kind == "remove":
            del parent[last]
        else:
            parent[last] = op["value"]
    elif isinstance(parent, list):
        i = _index(last, len(parent), kind == "add")
        if kind == "add":
            parent.insert(i, op["value"])
        elif kind == "replace":
            parent[i] = op["value"]
        else:
            del parent[i]
    else:
        raise jsonpatch.JsonPatchConflict(f"{op['path']}: the parent is not a container")


def apply(doc: Any, ops: list[Any]) -> Any:
    """Apply a JSON Patch (RFC 6902) to `doc` in place (the result, which is `doc` unless
    the root is replaced). Values are taken as they are, so `ops` must be freshly decoded.

    add, replace and remove on a path below the root (what mutating webhooks send) are
    applied directly; anything else goes through the jsonpatch library, from that
    operation on. Raises jsonpatch.JsonPatchException (or KeyError/IndexError/TypeError)
    for a patch that does not apply."""
    for n, op in enumerate(ops):
        if not isinstance(op, dict):
            raise jsonpatch.InvalidJsonPatch("an operation is not an object")
        try:
            _apply_fast(doc, op)
        except _SlowPath:
            return jsonpatch.JsonPatch(ops[n:]).apply(doc, in_place=True)
    return doc


def applied(obj: Mapping[str, Any], ops: list[Any]) -> Any:
    """`obj` with the patch applied, leaving `obj` and `ops` as they were."""
    return apply(copy.deepcopy(dict(obj)), copy.deepcopy(ops))
