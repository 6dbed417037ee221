"""Random (version 4) UUIDs in their text form, made in batches: object UIDs on create
and audit IDs. One read of the kernel's random source serves 256 of them (a getrandom
call per ID cost as much as the rest of making it), and no uuid.UUID object is built
(its constructor was a third of an audit event's cost)."""

from __future__ import annotations

import os

_ids: list[str] = []


def _more(n: int = 256) -> list[str]:
    b = bytearray(os.urandom(16 * n))
    for o in range(0, 16 * n, 16):
        b[o + 6] = (b[o + 6] & 0x0F) | 0x40
        b[o + 8] = (b[o + 8] & 0x3F) | 0x80
    h = b.hex()
    return [
        f"{h[o : o + 8]}-{h[o + 8 : o + 12]}-{h[o + 12 : o + 16]}-{h[o + 16 : o + 20]}-"
        f"{h[o + 20 : o + 32]}"
        for o in range(0, 32 * n, 32)
    ]


def new_id() -> str:
    """A random version 4 UUID as text. list.pop is atomic, so threads never get the
    same one; a forked child starts with none left, so it never repeats its parent's."""
    try:
        return _ids.pop()
    except IndexError:
        _ids.extend(_more())
        return _ids.pop()


os.register_at_fork(after_in_child=_ids.clear)
