"""The one parser of API request paths: what a request target names.

It reads the path as sent (still percent-encoded: aiohttp's `request.raw_path`, or
what an in-process caller passes), splits it on "/" and decodes each segment exactly
once. A segment that decodes to something containing "/", "?" or "#", a control
character, invalid UTF-8 or a malformed escape, an empty segment ("//"), a "." or ".."
segment, and a trailing slash on a resource path are refused with a `PathError`
(a Kubernetes Status: 400 for a malformed path, 404 for a path that names nothing).

So a resource route always has a non-empty name when it has a name at all, and a
collection is only ever named by its exact collection path: `DELETE .../configmaps/`,
`.../configmaps/%3F`, `.../configmaps/%2F` or `.../x/../` never reach a collection.

`parse` needs no registry; `Core.route` checks the result against the registry.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote_to_bytes

from gpuyard.apiserver.errors import APIError

_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_FORBIDDEN = re.compile(r"[/?#\x00-\x1f\x7f]")
_NOT_FOUND = "the server could not find the requested resource"


class PathError(APIError):
    """A request path that is malformed (400) or names no route (404)."""


def _bad(message: str) -> PathError:
    return PathError(400, "BadRequest", f"invalid request path: {message}")


def _not_found(message: str = "") -> PathError:
    return PathError(404, "NotFound", _NOT_FOUND + (f" ({message})" if message else ""))


@dataclass(frozen=True, slots=True)
class Route:
    """What a path names. kind is one of "root", "api", "apis", "group", "gv",
    "resource" or "other"; the other fields are set as the kind has them (for
    "other", `other` is the decoded path, for "group" `group`, for "gv" group and
    version, for "resource" all but `other`)."""

    kind: str
    group: str = ""
    version: str = ""
    plural: str = ""
    namespace: str | None = None
    name: str | None = None
    sub: str | None = None
    watch: bool = False
    other: str = ""


def split_target(target: str) -> tuple[str, dict[str, str]]:
    """Split a request target at its first "?" (a "?" inside a segment is always
    percent-encoded): the raw path, and the query string's parameters."""
    path, sep, qs = target.partition("?")
    if not sep:
        return path, {}
    return path, dict(parse_qsl(qs, keep_blank_values=True))


def _decode(seg: str) -> str:
    if "%" not in seg:
        if _FORBIDDEN.search(seg):
            raise _bad(f"segment {seg!r} has a character that is not allowed")
        return seg
    if _BAD_ESCAPE.search(seg):
        raise _bad(f"segment {seg!r} has a malformed percent-escape")
    try:
        out = unquote_to_bytes(seg).decode("utf-8")
    except UnicodeDecodeError:
        raise _bad(f"segment {seg!r} is not valid UTF-8 once decoded") from None
    m = _FORBIDDEN.search(out)
    if m:
        what = {"/": '"/"', "?": '"?"', "#": '"#"'}.get(m.group(), "a control character")
        raise _bad(f"segment {seg!r} decodes to a name containing {what}")
    return out


def segments(raw_path: str) -> tuple[list[str], bool]:
    """The decoded segments of a raw path (no query string) and whether it ended
    with a slash. Refuses what the module docstring lists, except the trailing slash,
    which only resource paths refuse (discovery paths such as "/api/" are asked for
    with one by the official clients)."""
    if not raw_path.startswith("/"):
        raise _bad("it must start with /")
    if raw_path == "/":
        return [], False
    body = raw_path[1:]
    trailing = body.endswith("/")
    if trailing:
        body = body[:-1]
    out: list[str] = []
    for seg in body.split("/"):
        if not seg:
            raise _bad("it has an empty segment (//)")
        s = _decode(seg)
        if s in (".", ".."):
            raise _bad(f"it has a {s!r} segment")
        out.append(s)
    return out, trailing


@functools.lru_cache(maxsize=8192)
def parse(raw_path: str) -> Route:
    """Classify a raw request path (without its query string). Routes are immutable,
    so the answers for recent paths are kept (collection paths repeat on every create
    and list; a refusal is raised again each time)."""
    parts, trailing = segments(raw_path)
    if not parts:
        return Route("root")
    head = parts[0]
    if head == "api":
        if len(parts) == 1:
            return Route("api")
        group, version, rest = "", parts[1], parts[2:]
    elif head == "apis":
        if len(parts) == 1:
            return Route("apis")
        if len(parts) == 2:
            return Route("group", group=parts[1])
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return Route("other", other="/" + "/".join(parts))
    if not rest:
        return Route("gv", group=group, version=version)
    if trailing:
        raise _not_found("a resource path may not end with /")
    watch = False
    if rest[0] == "watch":
        watch = True
        rest = rest[1:]
        if not rest:
            raise _not_found()
    ns: str | None = None
    if (
        rest[0] == "namespaces"
        and len(rest) >= 3
        and not (len(rest) == 3 and rest[2] in ("status", "finalize"))
    ):
        ns = rest[1]
        rest = rest[2:]
    if len(rest) > 3:
        raise _not_found()
    return Route(
        "resource",
        group=group,
        version=version,
        plural=rest[0],
        namespace=ns,
        name=rest[1] if len(rest) > 1 else None,
        sub=rest[2] if len(rest) > 2 else None,
        watch=watch,
    )
