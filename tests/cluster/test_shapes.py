"""Node shapes: YAML files, the real openb node lists, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuyard.cluster.shapes import ShapeError, default_shapes, load_shapes
from gpuyard.cluster.simhost import SimHost

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "traces" / "alibaba-openb"


def test_default_shapes_have_unique_names_racks_and_zones() -> None:
    shapes = default_shapes(70, 2)
    assert len({s.name for s in shapes}) == 72
    assert [s.gpus for s in shapes].count(8) == 70 and shapes[-1].pool == "cpu"
    assert shapes[0].rack == "rack-0000" and shapes[32].rack == "rack-0001"
    assert {s.zone for s in shapes} == {"zone-a", "zone-b", "zone-c"}


@pytest.mark.skipif(not SHARED.exists(), reason="shared traces not present")
def test_openb_node_list_repeated_five_times_is_7615_nodes() -> None:
    shapes = load_shapes(f"openb:{SHARED / 'openb_node_list_all_node.csv'}*5")
    assert len(shapes) == 7615
    assert len({s.name for s in shapes}) == 7615
    assert sum(1 for s in shapes if s.gpus) == 6065
    t4 = next(s for s in shapes if s.gpu_product == "T4")
    assert t4.pool == "gpu" and t4.memory_bytes % 2**20 == 0


def test_yaml_shapes_and_errors_name_the_line(tmp_path: Path) -> None:
    good = tmp_path / "shapes.yaml"
    good.write_text(
        "nodes:\n"
        "  - name: a100\n    count: 3\n    gpus: 8\n    gpuProduct: A100\n    cpu: '128'\n    memory: 1Ti\n"
        "  - name: login\n    cpu: 16\n    memory: 64Gi\n"
    )
    shapes = load_shapes(str(good))
    assert [s.name for s in shapes] == ["a100-0000", "a100-0001", "a100-0002", "login"]
    assert shapes[0].cpu_milli == 128_000 and shapes[-1].pool == "cpu"
    bad = tmp_path / "bad.yaml"
    bad.write_text("nodes:\n  - name: ok\n    gpus: 8\n  - name: broken\n    memory: lots\n")
    with pytest.raises(ShapeError, match=r"bad.yaml:4: .*lots"):
        load_shapes(str(bad))
    with pytest.raises(ShapeError, match="cannot read"):
        load_shapes(str(tmp_path / "missing.yaml"))
    csv = tmp_path / "nodes.csv"
    csv.write_text("sn,cpu_milli,memory_mib,gpu,model\nn1,32000,1024,2,T4\nn2,lots,1024,2,T4\n")
    with pytest.raises(ShapeError, match=r"nodes.csv:3: bad node row"):
        load_shapes(f"openb:{csv}")


def test_simhost_faults_and_clear(tmp_path: Path) -> None:
    h = SimHost(tmp_path / "n1")
    h.ensure(4, "H100")
    line = h.append_xid(1, 48)
    assert "NVRM: Xid (PCI:0000:28:00): 48," in line
    assert h.gpus()[1]["ecc_uncorrectable_volatile"] == 1
    h.slow_gpu(0, 0.4)
    h.disk_full("/")
    h.net_partition()
    assert h.gpus()[0]["perf_factor"] == 0.4
    assert h.read("disk.json")["mounts"][0]["free"] == 0
    assert h.read("net.json")["partitioned"] is True
    with pytest.raises(ValueError, match="no GPU 7"):
        h.slow_gpu(7, 0.5)
    h.clear()
    assert h.gpus()[0]["perf_factor"] == 1.0 and h.read("net.json")["partitioned"] is False
    assert line in h.kern_log.read_text()  # the log is history: kept
