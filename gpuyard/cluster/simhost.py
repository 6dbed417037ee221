"""The simulated host behind each simulated node: the files a node agent would read.

Each simulated node has a directory DATA/hosts/<node>/ with:

- `kern.log`   kernel log lines, as dmesg prints them. Injected GPU faults append NVRM
               Xid lines in the driver's format:
               `[ 1234.567890] NVRM: Xid (PCI:0000:3b:00): 79, pid=0, name=, GPU has fallen off the bus.`
- `gpus.json`  {"gpus": [{index, uuid, pci, product, memory_mib, present,
               ecc_uncorrectable_volatile, retired_pages_pending, remapped_rows_pending,
               remapped_rows_failure, pcie: {gen, gen_max, width, width_max},
               hw_slowdown, perf_factor}]} — what NVML would report (the health agent's
               NVML double reads it; gpu-test's simulated report uses perf_factor).
- `disk.json`  {"mounts": [{path, total, free, read_only}]}
- `net.json`   {"peers": [{peer, reachable}], "partitioned": bool,
               "infiniband": [{device, port, state, phys_state}]}

Writes replace whole files atomically (write to a temporary name, then rename), so a
reader never sees half a file.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

# What the driver prints after the Xid number for the common ones (facts from NVIDIA's
# Xid catalog, in our own words where the driver text varies).
XID_TEXT = {
    13: "Graphics Exception: ESR 0x404600=0x80000002",
    31: "Ch 00000010, intr 10000000. MMU Fault: ENGINE GRAPHICS GPCCLIENT_T1_0 faulted @ 0x7f_00000000.",
    43: "Ch 00000008, pid=1234, name=python",
    45: "Ch 00000010, pid=1234, name=python, Preemptive Cleanup, Reset Required",
    48: "An uncorrectable double bit error (DBE) has been detected on GPU in the framebuffer at partition 0, subpartition 0.",
    63: "Row Remapper: New row marked for remapping, reset gpu to activate.",
    64: "Row Remapper: Failed to remap row, please reset the GPU.",
    74: "NVLink: fatal error detected on link 0(0x10000, 0x0, 0x0, 0x0, 0x0, 0x0, 0x0)",
    79: "GPU has fallen off the bus.",
    92: "High single-bit ECC error rate detected.",
    94: "Contained ECC error.",
    95: "Uncontained ECC error.",
}


def _atomic_write(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


class SimHost:
    """One simulated node's host directory."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.dir = self.path  # alias used by readers that look for `.dir`

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def kern_log(self) -> Path:
        return self.path / "kern.log"

    # ------------------------------------------------------------------ creation

    def ensure(self, gpus: int, product: str, boot_time: float | None = None) -> None:
        """Create the files of a healthy host if they are missing (idempotent)."""
        self.path.mkdir(parents=True, exist_ok=True)
        if not (self.path / "boot").exists():
            (self.path / "boot").write_text(str(boot_time or time.time()))
        if not self.kern_log.exists():
            self.kern_log.write_text(
                "[    0.000000] Linux version 6.1.0-gpuyard (simulated host)\n"
                "[    5.120000] nvidia: loading out-of-tree module taints kernel.\n"
            )
        if not (self.path / "gpus.json").exists():
            _atomic_write(
                self.path / "gpus.json", {"gpus": [self._gpu(i, product) for i in range(gpus)]}
            )
        if not (self.path / "disk.json").exists():
            _atomic_write(self.path / "disk.json", {"mounts": self._healthy_mounts()})
        if not (self.path / "net.json").exists():
            _atomic_write(self.path / "net.json", self._healthy_net(gpus))

    def _gpu(self, i: int, product: str) -> dict[str, Any]:
        bus = 0x18 + 0x10 * i
        return {
            "index": i,
            "uuid": self.gpu_uuid(i),
            "pci": f"0000:{bus:02x}:00.0",
            "product": product,
            "memory_mib": 81559,
            "present": True,
            "ecc_uncorrectable_volatile": 0,
            "retired_pages_pending": False,
            "remapped_rows_pending": False,
            "remapped_rows_failure": False,
            "pcie": {"gen": 5, "gen_max": 5, "width": 16, "width_max": 16},
            "hw_slowdown": False,
            "perf_factor": 1.0,
        }

    def gpu_uuid(self, i: int) -> str:
        """A stable UUID-shaped id for GPU `i` of this host (same on every run)."""
        h = hashlib.sha1(f"{self.name}/{i}".encode()).hexdigest()
        return f"GPU-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"

    @staticmethod
    def _healthy_mounts() -> list[dict[str, Any]]:
        return [
            {"path": "/", "total": 500 * 2**30, "free": 400 * 2**30, "read_only": False},
            {"path": "/scratch", "total": 7 * 2**40, "free": 6 * 2**40, "read_only": False},
        ]

    @staticmethod
    def _healthy_net(gpus: int) -> dict[str, Any]:
        ib = [
            {"device": f"mlx5_{i}", "port": 1, "state": "4: ACTIVE", "phys_state": "5: LinkUp"}
            for i in range(min(gpus, 8))
        ]
        return {"peers": [], "partitioned": False, "infiniband": ib}

    # ------------------------------------------------------------------ reading

    def read(self, name: str) -> dict[str, Any]:
        return json.loads((self.path / name).read_text())

    def gpus(self) -> list[dict[str, Any]]:
        return list(self.read("gpus.json")["gpus"])

    def uptime(self) -> float:
        try:
            return max(0.0, time.time() - float((self.path / "boot").read_text()))
        except (OSError, ValueError):
            return 0.0

    # ------------------------------------------------------------------ faults

    def append_xid(self, gpu: int, xid: int, pid: int = 0, text: str | None = None) -> str:
        """Append an NVRM Xid line for GPU `gpu`; returns the line."""
        gpus = self.gpus()
        if not 0 <= gpu < len(gpus):
            raise ValueError(f"{self.name} has no GPU {gpu} (it has {len(gpus)})")
        pci = str(gpus[gpu]["pci"]).rsplit(".", 1)[0]  # 0000:3b:00
        stamp = f"[{self.uptime() + 100.0:12.6f}]"
        msg = text or XID_TEXT.get(xid, "Unspecified error")
        line = f"{stamp} NVRM: Xid (PCI:{pci}): {xid}, pid={pid}, name=, {msg}"
        with self.kern_log.open("a") as fh:
            fh.write(line + "\n")
        # What the driver's state then shows through NVML.
        if xid == 79:
            gpus[gpu]["present"] = False
        elif xid in (48, 95):
            gpus[gpu]["ecc_uncorrectable_volatile"] = (
                int(gpus[gpu]["ecc_uncorrectable_volatile"]) + 1
            )
        elif xid == 63:
            gpus[gpu]["remapped_rows_pending"] = True
        elif xid == 64:
            gpus[gpu]["remapped_rows_failure"] = True
        _atomic_write(self.path / "gpus.json", {"gpus": gpus})
        return line

    def slow_gpu(self, gpu: int, factor: float) -> None:
        gpus = self.gpus()
        if not 0 <= gpu < len(gpus):
            raise ValueError(f"{self.name} has no GPU {gpu} (it has {len(gpus)})")
        if not 0 < factor <= 1.0:
            raise ValueError("the slow-gpu factor must be in (0, 1]")
        gpus[gpu]["perf_factor"] = factor
        _atomic_write(self.path / "gpus.json", {"gpus": gpus})

    def disk_full(self, path: str = "/") -> None:
        data = self.read("disk.json")
        for m in data["mounts"]:
            if m["path"] == path:
                m["free"] = 0
        _atomic_write(self.path / "disk.json", data)

    def net_partition(self) -> None:
        data = self.read("net.json")
        data["partitioned"] = True
        for p in data.get("infiniband", []):
            p["state"], p["phys_state"] = "1: DOWN", "3: Disabled"
        _atomic_write(self.path / "net.json", data)

    def clear(self) -> None:
        """Repair the host: healthy GPUs, disks and network (the kernel log is kept)."""
        gpus = self.gpus()
        product = gpus[0]["product"] if gpus else ""
        _atomic_write(
            self.path / "gpus.json", {"gpus": [self._gpu(i, product) for i in range(len(gpus))]}
        )
        _atomic_write(self.path / "disk.json", {"mounts": self._healthy_mounts()})
        _atomic_write(self.path / "net.json", self._healthy_net(len(gpus)))
