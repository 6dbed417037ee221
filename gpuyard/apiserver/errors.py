"""Kubernetes `Status` errors: the one way the API server reports a refused request."""

from __future__ import annotations

from typing import Any

import orjson


class APIError(Exception):
    """A request refused with a Status of this code and reason."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.headers = headers or {}

    def status(self) -> dict[str, Any]:
        return status_obj(self.code, self.reason, self.message, self.details)


_DETAIL_ORDER = ("name", "group", "kind", "uid", "causes", "retryAfterSeconds")


def status_obj(
    code: int, reason: str, message: str, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A Status with its fields in the order kube-apiserver writes them (kind,
    apiVersion, metadata, status, message, reason, details, code; details' name, group,
    kind, uid, causes, retryAfterSeconds)."""
    out: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success" if code < 400 else "Failure",
    }
    if message or code >= 400:
        out["message"] = message
    if reason and code >= 400:
        out["reason"] = reason
    if details is not None:
        ordered = {k: details[k] for k in _DETAIL_ORDER if k in details}
        ordered.update((k, v) for k, v in details.items() if k not in ordered)
        out["details"] = ordered
    out["code"] = code
    return out


def status_bytes(
    code: int, reason: str, message: str, details: dict[str, Any] | None = None
) -> bytes:
    return orjson.dumps(status_obj(code, reason, message, details))


def not_found(group_resource: str, name: str, kind: str, group: str = "") -> APIError:
    det = {"name": name, "kind": kind}
    if group:
        det["group"] = group
    return APIError(404, "NotFound", f'{group_resource} "{name}" not found', det)


def already_exists(group_resource: str, name: str, kind: str, group: str = "") -> APIError:
    det = {"name": name, "kind": kind}
    if group:
        det["group"] = group
    return APIError(409, "AlreadyExists", f'{group_resource} "{name}" already exists', det)


def conflict(group_resource: str, name: str, kind: str, why: str = "") -> APIError:
    why = why or (
        "the object has been modified; please apply your changes to the latest version "
        "and try again"
    )
    return APIError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {group_resource} "{name}": {why}',
        {"name": name, "kind": kind},
    )


def bad_request(message: str) -> APIError:
    return APIError(400, "BadRequest", message)


def invalid(kind: str, name: str, causes: list[dict[str, Any]], group: str = "") -> APIError:
    parts = []
    for c in causes:
        f = c.get("field")
        parts.append(f"{f}: {c.get('message', '')}" if f else str(c.get("message", "")))
    msg = f'{kind} "{name}" is invalid: '
    msg += parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    det: dict[str, Any] = {"name": name, "kind": kind, "causes": causes}
    if group:
        det["group"] = group
    return APIError(422, "Invalid", msg, det)


def expired(message: str) -> APIError:
    return APIError(410, "Expired", message)
