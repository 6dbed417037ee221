"""Errors raised by `gpuyard.kube`: `ApiError` carries the API server's `Status` answer.

`ApiError.from_response(status, body)` picks the subclass from the HTTP code and the
Status `reason`, so callers can write `except NotFound:` or `except Conflict:`.
"""

from __future__ import annotations

from typing import Any

import orjson


class KubeError(Exception):
    """Base of every error raised by the client layer."""


class ConfigError(KubeError):
    """A kubeconfig or in-cluster configuration could not be used."""


class ApiError(KubeError):
    """The API server answered with an error `Status` (or a non-JSON error body)."""

    def __init__(
        self,
        status: int,
        reason: str = "",
        message: str = "",
        body: dict[str, Any] | None = None,
    ) -> None:
        self.status = status
        self.reason = reason
        self.message = message
        self.body: dict[str, Any] = body or {}
        super().__init__(f"{status} {reason}: {message}" if reason else f"{status}: {message}")

    @property
    def retry_after(self) -> float | None:
        """details.retryAfterSeconds of the Status, if any."""
        details = self.body.get("details") or {}
        value = details.get("retryAfterSeconds")
        return float(value) if isinstance(value, int | float) else None

    @staticmethod
    def from_response(status: int, raw: bytes | dict[str, Any] | None) -> ApiError:
        """Build the most specific error for an HTTP status and a response body."""
        body: dict[str, Any] = {}
        if isinstance(raw, dict):
            body = raw
        elif raw:
            try:
                parsed = orjson.loads(raw)
                if isinstance(parsed, dict):
                    body = parsed
            except orjson.JSONDecodeError:
                body = {"message": raw[:500].decode("utf-8", "replace")}
        reason = str(body.get("reason") or "")
        message = str(body.get("message") or "")
        code = int(body.get("code") or status)
        cls: type[ApiError] = ApiError
        if code == 404:
            cls = NotFound
        elif code == 409:
            cls = AlreadyExists if reason == "AlreadyExists" else Conflict
        elif code == 410:
            cls = Gone
        elif code == 429:
            cls = TooManyRequests
        elif code == 422:
            cls = Invalid
        elif code == 401:
            cls = Unauthorized
        elif code == 403:
            cls = Forbidden
        elif code == 400:
            cls = BadRequest
        elif code >= 500:
            cls = ServerError
        return cls(code, reason, message, body)


class BadRequest(ApiError):
    """400."""


class Unauthorized(ApiError):
    """401: missing or wrong credentials."""


class Forbidden(ApiError):
    """403."""


class NotFound(ApiError):
    """404: the object (or resource) does not exist."""


class Conflict(ApiError):
    """409 Conflict: stale resourceVersion or failed precondition."""


class AlreadyExists(Conflict):
    """409 AlreadyExists: create of a name that is taken."""


class Gone(ApiError):
    """410: resourceVersion or continue token too old; relist."""


class Invalid(ApiError):
    """422: the object failed validation (see body.details.causes)."""


class ServerError(ApiError):
    """5xx: the server failed (after the client's bounded retries)."""


class TooManyRequests(ApiError):
    """429: throttled, or an eviction forbidden by a PodDisruptionBudget."""


def is_not_found(err: BaseException) -> bool:
    return isinstance(err, NotFound)


def is_conflict(err: BaseException) -> bool:
    return isinstance(err, Conflict) and not isinstance(err, AlreadyExists)


def is_already_exists(err: BaseException) -> bool:
    return isinstance(err, AlreadyExists)


def is_gone(err: BaseException) -> bool:
    return isinstance(err, Gone)
