"""Values a pure check has found clean, remembered by (path, exact encoding) so an equal
value skips the check: the pods of one controller are created with one spec. Bounded:
emptied when `limit` keys are kept."""

from __future__ import annotations

from typing import Any

import orjson

from gpuyard.k8s.jsonbytes import kept


class SeenClean:
    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        self._keys: set[tuple[str, bytes]] = set()

    @staticmethod
    def key(path: str, value: Any) -> tuple[str, bytes] | None:
        """The key of a non-empty dict value; None for anything else or what does not
        encode (never remembered)."""
        if type(value) is not dict or not value:
            return None
        try:
            return (path, orjson.dumps(value))
        except TypeError:
            return None

    def __contains__(self, key: tuple[str, bytes] | None) -> bool:
        return key is not None and key in self._keys

    def add(self, key: tuple[str, bytes] | None) -> None:
        if key is None:
            return
        if len(self._keys) >= self.limit:
            self._keys.clear()
        self._keys.add((key[0], kept(key[1])))  # orjson's buffer is 4 KiB and up
