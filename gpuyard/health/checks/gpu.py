"""GPU checks: GPU count, uncorrectable ECC, pending page retirement and row remapping,
row remap failure, degraded PCIe links, hardware slowdown.

Sources: `NvmlGpuSource` reads the real GPUs through nvidia-ml-py (where no NVML
library is present it says so once, through `available()`, and reports nothing);
`JsonGpuSource` reads a simulated host's gpus.json. `check_gpus` is pure.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from gpuyard.health.checks import Finding, Severity

HW_SLOWDOWN_MASK = 0x08 | 0x40 | 0x80  # hardware, hardware thermal, power brake slowdown


@dataclass
class GpuState:
    index: int
    uuid: str = ""
    pci: str = ""
    product: str = ""
    present: bool = True
    ecc_uncorrectable_volatile: int = 0
    retired_pages_pending: bool = False
    remapped_rows_pending: bool = False
    remapped_rows_failure: bool = False
    pcie_gen: int = 0
    pcie_gen_max: int = 0
    pcie_width: int = 0
    pcie_width_max: int = 0
    hw_slowdown: bool = False
    perf_factor: float = 1.0  # simulated only: share of normal speed
    extra: dict[str, Any] = field(default_factory=dict)


class GpuSource(Protocol):
    def available(self) -> tuple[bool, str]:
        """(True, "") or (False, why the GPUs cannot be read)."""
        ...

    def read(self) -> list[GpuState]: ...


def check_gpus(gpus: list[GpuState], expected: int | None) -> list[Finding]:
    """Findings for the GPUs a source reported, against the expected count."""
    out: list[Finding] = []
    present = [g for g in gpus if g.present]
    lost = [g for g in gpus if not g.present]
    if expected is not None and len(present) < expected:
        where = f" (lost: {', '.join(str(g.index) for g in lost)})" if lost else ""
        out.append(
            Finding(
                "gpu",
                Severity.UNHEALTHY,
                "GPUCountMismatch",
                f"{len(present)} of {expected} GPUs visible{where}",
            )
        )
    for g in present:
        name = f"GPU {g.index}" + (f" ({g.pci})" if g.pci else "")
        if g.ecc_uncorrectable_volatile > 0:
            out.append(
                Finding(
                    "gpu",
                    Severity.FATAL,
                    "GPUUncorrectableECC",
                    f"{name}: {g.ecc_uncorrectable_volatile} volatile uncorrectable ECC errors",
                )
            )
        if g.remapped_rows_failure:
            out.append(
                Finding(
                    "gpu", Severity.FATAL, "GPURowRemapFailure", f"{name}: row remapping failed"
                )
            )
        if g.remapped_rows_pending or g.retired_pages_pending:
            what = "row remapping" if g.remapped_rows_pending else "page retirement"
            out.append(
                Finding(
                    "gpu", Severity.UNHEALTHY, "GPUResetRequired", f"{name}: {what} pending a reset"
                )
            )
        if g.pcie_width_max and g.pcie_width and g.pcie_width < g.pcie_width_max:
            out.append(
                Finding(
                    "gpu",
                    Severity.UNHEALTHY,
                    "GPUPCIeDegraded",
                    f"{name}: PCIe link x{g.pcie_width} of x{g.pcie_width_max}",
                )
            )
        elif g.pcie_gen_max and g.pcie_gen and g.pcie_gen < g.pcie_gen_max:
            # GPUs lower their link generation when idle to save power: only a warning.
            out.append(
                Finding(
                    "gpu",
                    Severity.WARN,
                    "GPUPCIeGenLow",
                    f"{name}: PCIe gen {g.pcie_gen} of {g.pcie_gen_max}",
                )
            )
        if g.hw_slowdown:
            out.append(
                Finding(
                    "gpu", Severity.UNHEALTHY, "GPUHardwareSlowdown", f"{name}: hardware slowdown"
                )
            )
    return out


# ------------------------------------------------------------------ JSON double (simhost)

_ALIASES: dict[str, tuple[str, ...]] = {
    "index": ("index", "gpu", "id"),
    "uuid": ("uuid",),
    "pci": ("pci", "pci_bus_id", "bus_id", "pciBusId"),
    "product": ("product", "name", "model"),
    "ecc_uncorrectable_volatile": (
        "ecc_uncorrectable_volatile",
        "ecc_volatile_uncorrectable",
        "ecc_uncorrected_volatile",
        "ecc_uncorrectable",
    ),
    "retired_pages_pending": ("retired_pages_pending", "pending_retired_pages"),
    "remapped_rows_pending": ("remapped_rows_pending", "remap_pending"),
    "remapped_rows_failure": ("remapped_rows_failure", "remap_failure", "row_remap_failure"),
    "pcie_gen": ("pcie_gen", "pcie_link_gen", "pcie_gen_current", "pcie_link_gen_current"),
    "pcie_gen_max": ("pcie_gen_max", "pcie_link_gen_max", "max_pcie_gen"),
    "pcie_width": (
        "pcie_width",
        "pcie_link_width",
        "pcie_width_current",
        "pcie_link_width_current",
    ),
    "pcie_width_max": ("pcie_width_max", "pcie_link_width_max", "max_pcie_width"),
    "hw_slowdown": ("hw_slowdown", "slowdown", "hardware_slowdown"),
    "perf_factor": ("perf_factor", "factor", "slow_factor"),
}


def _pick(d: dict[str, Any], key: str, default: Any) -> Any:
    for k in _ALIASES.get(key, (key,)):
        if k in d and d[k] is not None:
            return d[k]
    return default


def gpu_from_dict(d: dict[str, Any], default_index: int = 0) -> GpuState:
    pcie = d.get("pcie") if isinstance(d.get("pcie"), dict) else {}
    flat = {**{f"pcie_{k}": v for k, v in (pcie or {}).items()}, **d}
    slow = _pick(flat, "hw_slowdown", False)
    if isinstance(slow, list | dict):
        slow = bool(slow)
    present = d.get("present", True)
    if d.get("lost"):
        present = False
    return GpuState(
        index=int(_pick(flat, "index", default_index)),
        uuid=str(_pick(flat, "uuid", "")),
        pci=str(_pick(flat, "pci", "")),
        product=str(_pick(flat, "product", "")),
        present=bool(present),
        ecc_uncorrectable_volatile=int(_pick(flat, "ecc_uncorrectable_volatile", 0)),
        retired_pages_pending=bool(_pick(flat, "retired_pages_pending", False)),
        remapped_rows_pending=bool(_pick(flat, "remapped_rows_pending", False)),
        remapped_rows_failure=bool(_pick(flat, "remapped_rows_failure", False)),
        pcie_gen=int(_pick(flat, "pcie_gen", 0)),
        pcie_gen_max=int(_pick(flat, "pcie_gen_max", 0)),
        pcie_width=int(_pick(flat, "pcie_width", 0)),
        pcie_width_max=int(_pick(flat, "pcie_width_max", 0)),
        hw_slowdown=bool(slow),
        perf_factor=float(_pick(flat, "perf_factor", 1.0)),
    )


def gpus_from_json(data: Any) -> list[GpuState]:
    items = data.get("gpus", []) if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise ValueError("gpus.json: expected a list of GPUs or {'gpus': [...]}")
    return [gpu_from_dict(d, i) for i, d in enumerate(items)]


class JsonGpuSource:
    """The NVML double: a simulated host's gpus.json."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def available(self) -> tuple[bool, str]:
        if self.path.exists():
            return True, ""
        return False, f"no GPU state file at {self.path}"

    def read(self) -> list[GpuState]:
        return gpus_from_json(json.loads(self.path.read_bytes()))


# ----------------------------------------------------------------------- real NVML


class NvmlGpuSource:
    """The real GPUs through nvidia-ml-py. Initialises NVML once, lazily."""

    def __init__(self) -> None:
        self._ok: bool | None = None
        self._why = ""

    def available(self) -> tuple[bool, str]:
        if self._ok is None:
            try:
                import pynvml

                pynvml.nvmlInit()
                self._ok = True
            except Exception as exc:  # library missing, driver not loaded, ...
                self._ok, self._why = False, f"NVML not available: {exc}"
        return self._ok, self._why

    def read(self) -> list[GpuState]:
        ok, _ = self.available()
        if not ok:
            return []
        import pynvml

        def q(fn: Any, *a: Any, default: Any = None) -> Any:
            try:
                return fn(*a)
            except pynvml.NVMLError:
                return default

        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            try:
                h = pynvml.nvmlDeviceGetHandleByIndex(i)
            except pynvml.NVMLError:
                out.append(GpuState(index=i, present=False))
                continue
            pci = q(pynvml.nvmlDeviceGetPciInfo, h)
            remap = q(pynvml.nvmlDeviceGetRemappedRows, h, default=(0, 0, 0, 0))
            reasons = q(pynvml.nvmlDeviceGetCurrentClocksThrottleReasons, h, default=0) or 0
            ecc = q(
                pynvml.nvmlDeviceGetTotalEccErrors,
                h,
                pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
                pynvml.NVML_VOLATILE_ECC,
                default=0,
            )
            name = q(pynvml.nvmlDeviceGetName, h, default="")
            uuid = q(pynvml.nvmlDeviceGetUUID, h, default="")
            bus = getattr(pci, "busId", b"") if pci is not None else b""
            out.append(
                GpuState(
                    index=i,
                    uuid=uuid.decode() if isinstance(uuid, bytes) else str(uuid),
                    pci=bus.decode() if isinstance(bus, bytes) else str(bus),
                    product=name.decode() if isinstance(name, bytes) else str(name),
                    ecc_uncorrectable_volatile=int(ecc or 0),
                    retired_pages_pending=bool(
                        q(pynvml.nvmlDeviceGetRetiredPagesPendingStatus, h, default=0)
                    ),
                    remapped_rows_pending=bool(remap[2]),
                    remapped_rows_failure=bool(remap[3]),
                    pcie_gen=int(q(pynvml.nvmlDeviceGetCurrPcieLinkGeneration, h, default=0)),
                    pcie_gen_max=int(q(pynvml.nvmlDeviceGetMaxPcieLinkGeneration, h, default=0)),
                    pcie_width=int(q(pynvml.nvmlDeviceGetCurrPcieLinkWidth, h, default=0)),
                    pcie_width_max=int(q(pynvml.nvmlDeviceGetMaxPcieLinkWidth, h, default=0)),
                    hw_slowdown=bool(int(reasons) & HW_SLOWDOWN_MASK),
                )
            )
        return out
