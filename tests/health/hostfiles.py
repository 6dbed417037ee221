"""Test helpers: simulated host directories like the embedded cluster's, and a writer
that records what an agent would send to the API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gpuyard.health.verdict import Condition, Event


def make_host(root: Path, node: str, gpus: int = 8, product: str = "NVIDIA-H100-80GB-HBM3") -> Path:
    d = root / node
    d.mkdir(parents=True, exist_ok=True)
    write_gpus(
        d,
        [
            {"index": i, "pci_bus_id": f"0000:{16 + i:02x}:00.0", "product": product}
            for i in range(gpus)
        ],
    )
    write_disk(d, free=500 << 30)
    (d / "net.json").write_text(json.dumps({"peers": {}, "infiniband": []}))
    (d / "kern.log").write_text("[    1.000000] Linux version 6.5.0\n")
    return d


def write_gpus(d: Path, gpus: list[dict[str, Any]]) -> None:
    (d / "gpus.json").write_text(json.dumps({"gpus": gpus}))


def write_disk(d: Path, free: int, total: int = 1 << 40, read_only: bool = False) -> None:
    (d / "disk.json").write_text(
        json.dumps(
            {"mounts": [{"path": "/", "total": total, "free": free, "read_only": read_only}]}
        )
    )


class RecordingWriter:
    def __init__(self) -> None:
        self.writes: list[tuple[str, list[Condition]]] = []
        self.events: list[tuple[str, Event]] = []
        self.missing: set[str] = set()  # nodes the "API" does not know yet

    async def write_conditions(self, node: str, changed: list[Condition]) -> bool:
        self.writes.append((node, changed))
        return node not in self.missing

    async def event(self, node: str, ev: Event) -> None:
        self.events.append((node, ev))

    def clear(self) -> None:
        self.writes.clear()
        self.events.clear()
