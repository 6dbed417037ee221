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


def test_topology_nests_racks_in_blocks_in_zones_and_cliques_in_racks() -> None:
    shapes = load_shapes(str(Path(__file__).resolve().parents[2] / "examples/gb200-nvl72.yaml"))
    gb = [s for s in shapes if s.gpu_product == "NVIDIA-GB200"]
    # NVL72: 18 trays of 4 GPUs make one rack and one NVLink clique
    by_clique: dict[str, list[str]] = {}
    for s in gb:
        by_clique.setdefault(s.clique, []).append(s.rack)
    assert len(by_clique) == 4 and all(
        len(r) == 18 and len(set(r)) == 1 for r in by_clique.values()
    )
    assert all(c.endswith(".0") and len(c.split(".")[0]) == 36 for c in by_clique)
    h100 = [s for s in shapes if s.gpu_product.startswith("NVIDIA-H100")]
    assert all(not s.clique for s in h100) and {s.rack for s in h100}.isdisjoint(
        {s.rack for s in gb}
    )
    labels = gb[0].topology_labels()
    assert labels["nvidia.com/gpu.clique"] == gb[0].clique
    assert labels["gpuyard.io/block"] == "zone-a-block-00"
    # every rack sits in one block and every block in one zone
    big = default_shapes(7500)
    block_of: dict[str, set[str]] = {}
    zone_of: dict[str, set[str]] = {}
    for s in big:
        block_of.setdefault(s.rack, set()).add(s.block)
        zone_of.setdefault(s.block, set()).add(s.zone)
        assert s.block.startswith(s.zone)
    assert all(len(b) == 1 for b in block_of.values()) and all(
        len(z) == 1 for z in zone_of.values()
    )
    assert len(zone_of) == 30 and len(block_of) == 235


def test_nvlink_domain_must_be_whole_nodes(tmp_path: Path) -> None:
    bad = tmp_path / "shapes.yaml"
    bad.write_text("nodes:\n  - name: gb\n    count: 4\n    gpus: 4\n    nvlinkDomain: 18\n")
    with pytest.raises(ShapeError, match=r"shapes.yaml:2: nvlinkDomain 18 is not a whole number"):
        load_shapes(str(bad))
    bad.write_text(
        "nodes:\n  - name: gb\n    count: 4\n    gpus: 2\n    nvlinkDomain: 18\n    rackSize: 12\n"
    )
    with pytest.raises(
        ShapeError, match="rackSize 12 is not a whole number of NVLink domains of 9"
    ):
        load_shapes(str(bad))
    ok = tmp_path / "ok.yaml"
    ok.write_text(
        "nodes:\n  - name: gb\n    count: 36\n    gpus: 2\n    nvlinkDomain: 18\n    rackSize: 18\n"
    )
    shapes = load_shapes(str(ok))
    assert len({s.clique for s in shapes}) == 4 and len({s.rack for s in shapes}) == 2


def test_a_shape_may_ask_for_mig_devices(tmp_path: Path) -> None:
    f = tmp_path / "shapes.yaml"
    f.write_text(
        "nodes:\n  - name: h200\n    count: 2\n    gpus: 8\n"
        "    gpuProduct: NVIDIA-H200-141GB-HBM3\n    mig: true\n"
        "  - name: h100\n    gpus: 8\n"
    )
    shapes = load_shapes(str(f))
    assert [s.mig for s in shapes] == [True, True, False]
    f.write_text("nodes:\n  - name: h200\n    gpus: 8\n    mig: yes-please\n")
    with pytest.raises(
        ShapeError, match="shapes.yaml:2: mig must be true or false, not 'yes-please'"
    ):
        load_shapes(str(f))
