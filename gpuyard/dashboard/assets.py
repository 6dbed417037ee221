"""The page's own files, read once when the server is made and kept in memory: each
with a strong ETag (a digest of its bytes) and, where it is smaller, a gzip copy
compressed once.

The files that load others (index.html, app.js) name them with `?v=DIGEST` (rewritten
here, so the files on disk keep plain names): such a request is for bytes that never
change, so it may be cached for a year (`immutable`); the page itself and a request
without the current digest are revalidated each time (`no-cache`, answered 304 when
the ETag still matches).
"""

from __future__ import annotations

import gzip
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"

# "/static/NAME" or "./NAME" in quotes: a file of the page that another one loads
_REF = re.compile(r"""(["'])(/static/|\./)([A-Za-z0-9_-][A-Za-z0-9_.-]*)\1""")


@dataclass(frozen=True)
class Asset:
    name: str
    content_type: str
    body: bytes
    gzipped: bytes | None  # None where gzip would not make it smaller
    version: str  # the digest that `?v=` names

    @property
    def etag(self) -> str:
        return f'"{self.version}"'

    @property
    def etag_gzip(self) -> str:
        return f'"{self.version}-gz"'


def load(directory: Path) -> dict[str, Asset]:
    """Every servable file of `directory` by name, references rewritten to versions."""
    raw: dict[str, bytes] = {}
    for path in sorted(directory.iterdir()):
        if path.is_file() and path.suffix in CONTENT_TYPES and not path.name.startswith("."):
            raw[path.name] = path.read_bytes()
    done: dict[str, Asset] = {}

    def build(name: str, seen: tuple[str, ...]) -> Asset:
        if name in done:
            return done[name]
        if name in seen:
            raise ValueError(f"the page's files load each other in a cycle: {' -> '.join(seen)}")
        body = raw[name]
        if name.endswith((".html", ".js", ".css")):
            text = body.decode("utf-8")

            def versioned(m: re.Match[str]) -> str:
                quote, prefix, ref = m.groups()
                if ref not in raw or ref == name:
                    return m.group(0)
                dep = build(ref, (*seen, name))
                return f"{quote}{prefix}{ref}?v={dep.version}{quote}"

            body = _REF.sub(versioned, text).encode("utf-8")
        packed = gzip.compress(body, compresslevel=9, mtime=0)
        asset = Asset(
            name=name,
            content_type=CONTENT_TYPES[Path(name).suffix],
            body=body,
            gzipped=packed if len(packed) < len(body) else None,
            version=hashlib.sha256(body).hexdigest()[:20],
        )
        done[name] = asset
        return asset

    for name in raw:
        build(name, ())
    return done


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding header allows gzip (explicitly or by `*`), q > 0."""
    allowed: dict[str, float] = {}
    for part in accept_encoding.split(","):
        coding, _, params = part.strip().partition(";")
        coding = coding.strip().lower()
        if not coding:
            continue
        q = 1.0
        for p in params.split(";"):
            k, _, v = p.strip().partition("=")
            if k.strip().lower() == "q":
                try:
                    q = float(v)
                except ValueError:
                    q = 0.0
        allowed[coding] = q
    if "gzip" in allowed:
        return allowed["gzip"] > 0
    if "x-gzip" in allowed:
        return allowed["x-gzip"] > 0
    return allowed.get("*", 0.0) > 0


def matches(if_none_match: str, *etags: str) -> bool:
    """Whether If-None-Match names one of `etags` (weak comparison, as RFC 9110 asks)."""
    if if_none_match.strip() == "*":
        return True
    given = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
    return any(e in given for e in etags)
