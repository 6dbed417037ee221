"""The simulated host directory: files a node agent reads, and what faults do to them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from gpuyard.cluster.simhost import SimHost

XID_RE = re.compile(
    r"^\[\s*\d+\.\d{6}\] NVRM: Xid \(PCI:(?P<pci>[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2})\): "
    r"(?P<code>\d+), pid=\d+, name=[^,]*, (?P<msg>.+)$"
)


def test_healthy_host_files_describe_every_gpu(tmp_path: Path) -> None:
    h = SimHost(tmp_path / "gpu-node-0001")
    h.ensure(8, "NVIDIA-H100-80GB-HBM3")
    gpus = json.loads((h.path / "gpus.json").read_text())["gpus"]
    assert [g["index"] for g in gpus] == list(range(8))
    assert len({g["uuid"] for g in gpus}) == 8 and len({g["pci"] for g in gpus}) == 8
    for g in gpus:
        assert g["present"] and g["perf_factor"] == 1.0
        assert g["product"] == "NVIDIA-H100-80GB-HBM3"
        assert g["pcie"]["gen"] == g["pcie"]["gen_max"]
        assert g["pcie"]["width"] == g["pcie"]["width_max"]
        assert g["ecc_uncorrectable_volatile"] == 0 and not g["remapped_rows_failure"]
    mounts = h.read("disk.json")["mounts"]
    assert all(0 < m["free"] <= m["total"] and not m["read_only"] for m in mounts)
    net = h.read("net.json")
    assert not net["partitioned"]
    assert [p["state"] for p in net["infiniband"]] == ["4: ACTIVE"] * 8
    assert "NVRM" not in h.kern_log.read_text()


def test_ensure_keeps_existing_state_and_uuids_are_stable(tmp_path: Path) -> None:
    h = SimHost(tmp_path / "n7")
    h.ensure(2, "A100")
    h.slow_gpu(1, 0.5)
    uuids = [g["uuid"] for g in h.gpus()]
    h.ensure(2, "A100")  # a restart of gpuyard up: the host keeps its faults
    assert h.gpus()[1]["perf_factor"] == 0.5
    # Another host directory of the same name (another data dir) gets the same ids.
    other = SimHost(tmp_path / "elsewhere" / "n7")
    other.ensure(2, "A100")
    assert [g["uuid"] for g in other.gpus()] == uuids
    assert SimHost(tmp_path / "n8").gpu_uuid(0) != uuids[0]


def test_xid_79_line_has_the_driver_format_and_drops_the_gpu(tmp_path: Path) -> None:
    h = SimHost(tmp_path / "n1")
    h.ensure(8, "H100")
    line = h.append_xid(2, 79)
    m = XID_RE.match(line)
    assert m, line
    assert m["code"] == "79" and m["msg"] == "GPU has fallen off the bus."
    assert h.gpus()[2]["pci"].startswith(m["pci"])
    assert h.kern_log.read_text().splitlines()[-1] == line
    assert [g["present"] for g in h.gpus()] == [True, True, False, True, True, True, True, True]


def test_xid_line_is_understood_by_the_health_parser(tmp_path: Path) -> None:
    from gpuyard.health import xid

    h = SimHost(tmp_path / "n1")
    h.ensure(4, "H100")
    lines = [h.append_xid(0, 79), h.append_xid(3, 64)]
    events = xid.parse_lines("\n".join(lines))
    assert [(e.code, e.pci) for e in events] == [
        (79, h.gpus()[0]["pci"].rsplit(".", 1)[0]),
        (64, h.gpus()[3]["pci"].rsplit(".", 1)[0]),
    ]
    assert h.gpus()[3]["remapped_rows_failure"] is True


def test_bad_fault_arguments_change_nothing(tmp_path: Path) -> None:
    h = SimHost(tmp_path / "n1")
    h.ensure(2, "H100")
    before = (h.path / "gpus.json").read_text(), h.kern_log.read_text()
    with pytest.raises(ValueError, match="no GPU 5"):
        h.append_xid(5, 79)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        h.slow_gpu(0, 1.5)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        h.slow_gpu(0, 0)
    assert ((h.path / "gpus.json").read_text(), h.kern_log.read_text()) == before


def test_writes_are_atomic_replacements(tmp_path: Path) -> None:
    h = SimHost(tmp_path / "n1")
    h.ensure(1, "H100")
    ino = (h.path / "disk.json").stat().st_ino
    h.disk_full("/")
    assert (h.path / "disk.json").stat().st_ino != ino  # replaced by rename, not rewritten
    assert not list(h.path.glob(".*.tmp"))
    assert h.read("disk.json")["mounts"][0]["free"] == 0
