"""What the handling of one request shares beyond its arguments, set by the gate for the
REST core: who asked (admission's `userInfo`, the CEL `authorizer`), how that one is
authorized, and the annotations admission adds to the request's audit event."""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Any

from gpuyard.apiserver.attributes import Attributes
from gpuyard.apiserver.authn import LOOPBACK_USER, UserInfo

Authorize = Callable[[UserInfo, Attributes], "tuple[bool, str]"]

USER: contextvars.ContextVar[UserInfo | None] = contextvars.ContextVar(
    "gpuyard_apiserver_request_user", default=None
)
AUTHORIZE: contextvars.ContextVar[Authorize | None] = contextvars.ContextVar(
    "gpuyard_apiserver_authorize", default=None
)
AUDIT_ANNOTATIONS: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "gpuyard_apiserver_audit_annotations", default=None
)


def user() -> UserInfo:
    """The user the request acts as (the server's loopback identity for its own calls)."""
    return USER.get() or LOOPBACK_USER


def user_info() -> dict[str, Any]:
    """That user as admission reviews and CEL's `request.userInfo` show it."""
    return user().as_dict()


def annotate_audit(key: str, value: str) -> None:
    """Add an annotation to this request's audit event (kept only where one is written)."""
    acc = AUDIT_ANNOTATIONS.get()
    if acc is not None:
        acc[key] = value
