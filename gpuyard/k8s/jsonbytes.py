"""JSON encodings that outlive the call that made them, at their own size.

orjson (3.12 and later) hands back bytes whose memory is its whole working buffer:
4 KiB at least, more as it grew (a 1.8 KB pod takes 8 KiB), however short the
encoding. That is harmless for a response sent and dropped, and multiplies the memory
of anything kept: a store of 8,000 objects held 64 MiB for 15 MiB of JSON. What is
kept (stored objects, remembered encodings) is encoded with `dumps_kept` or passed
through `kept`: one copy into bytes of exactly its length (well under a microsecond
for a few KiB, against the encoding itself).
"""

from __future__ import annotations

from typing import Any

import orjson


def kept(raw: bytes) -> bytes:
    """`raw` in bytes of its own length (a copy; join of two always copies)."""
    return b"".join((raw, b""))


def dumps_kept(obj: Any, option: int | None = None) -> bytes:
    """orjson.dumps(obj, option=option), copied to its own length."""
    return b"".join((orjson.dumps(obj, option=option), b""))
