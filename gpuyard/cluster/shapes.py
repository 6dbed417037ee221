"""Node shapes: what simulated (or twin) nodes look like.

`load_shapes(spec)` reads either a gpuyard shapes YAML file or a real node list in the
Alibaba openb format (`openb:PATH`), optionally repeated K times (`...*K`, names kept
unique). Both the embedded cluster and the digital twin use it, so a cluster described
once is the same cluster in both.

Shapes YAML:

    nodes:
      - name: gpu            # prefix; nodes are gpu-0000, gpu-0001, ...
        count: 16
        gpus: 8
        gpuProduct: NVIDIA-H100-80GB-HBM3
        cpu: "96"            # quantity
        memory: 1Ti
        pool: gpu            # gpu | cpu (default: gpu when gpus > 0)
        labels: {}
        taints: []
        nvlinkDomain: 72     # optional: GPUs per NVLink domain (GB200 NVL72: 72)
        rackSize: 18         # optional: nodes per rack (default 32; with nvlinkDomain,
                             # the nodes of one domain)
        mig: false           # optional: publish the GPUs as MIG partitionable devices

The topology is assigned deterministically (`locate`): nodes fill racks in order (32
a rack unless the shape says otherwise; shapes of one rack size share racks), racks
are dealt round robin over three zones, and every 8 racks of a zone make a block
(`gpuyard.io/block`). A shape with an NVLink domain of D GPUs puts each run of D/gpus
nodes of a rack in one NVLink clique, labelled `nvidia.com/gpu.clique` as NVIDIA's GPU
feature discovery does (`<cluster UUID>.<clique id>`, the UUID the rack's).
"""

from __future__ import annotations

import csv
import re
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from gpuyard import names
from gpuyard.cliargs import Int
from gpuyard.k8s.decode import DecodeError, loads_yaml
from gpuyard.kube.objects import QuantityError, quantity_to_int, quantity_to_milli

NODES_PER_RACK = 32
RACKS_PER_BLOCK = 8
ZONES = ("zone-a", "zone-b", "zone-c")
DEFAULT_PRODUCT = "NVIDIA-H100-80GB-HBM3"


class ShapeError(ValueError):
    """A node-shape file or spec that cannot be used; the message names file and line."""


@dataclass
class NodeShape:
    """One node (count == 1 after `expand`) or a group of alike nodes."""

    name: str
    cpu_milli: int
    memory_bytes: int
    gpus: int
    gpu_product: str = ""
    pool: str = "gpu"
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[dict[str, Any]] = field(default_factory=list)
    count: int = 1
    rack: str = ""
    zone: str = ""
    block: str = ""
    clique: str = ""
    # GPUs per NVLink domain (0: none beyond the node) and nodes per rack (0: the
    # default, or one NVLink domain's nodes)
    nvlink_gpus: int = 0
    rack_size: int = 0
    # publish its GPUs as MIG partitionable devices (gpuyard.cluster.simdevices)
    mig: bool = False

    def nodes_per_clique(self) -> int:
        return self.nvlink_gpus // self.gpus if self.nvlink_gpus and self.gpus else 0

    def topology_labels(self) -> dict[str, str]:
        """The node labels that say where it sits: zone, block, rack, NVLink clique."""
        labels = {
            names.LABEL_ZONE: self.zone,
            names.LABEL_BLOCK: self.block,
            names.LABEL_RACK: self.rack,
        }
        if self.clique:
            labels[names.LABEL_CLIQUE] = self.clique
        return {k: v for k, v in labels.items() if v}


def locate(s: NodeShape, rack: int, slot: int) -> None:
    """Put a node in rack number `rack` at position `slot` (0-based): its rack, zone,
    block and NVLink clique (see the module docstring)."""
    s.rack = f"rack-{rack:04d}"
    s.zone = ZONES[rack % len(ZONES)]
    s.block = f"{s.zone}-block-{rack // len(ZONES) // RACKS_PER_BLOCK:02d}"
    per = s.nodes_per_clique()
    if per:
        domain = uuid.uuid5(uuid.NAMESPACE_URL, f"gpuyard:nvlink:{s.rack}")
        s.clique = f"{domain}.{slot // per}"
    else:
        s.clique = ""


def rack_size_of(s: NodeShape, default: int = NODES_PER_RACK) -> int:
    return s.rack_size or s.nodes_per_clique() or default


def lay_out(shapes: list[NodeShape], rack_size: int = NODES_PER_RACK) -> None:
    """Give every node without a rack its place (`locate`), in order: a node goes in
    the current rack while that has room and its shape has the same rack size, else in
    a new one."""
    rack, filled, size = -1, 0, 0
    for s in shapes:
        if s.rack:
            continue
        want = rack_size_of(s, rack_size)
        if rack < 0 or filled >= size or want != size:
            rack, filled, size = rack + 1, 0, want
        locate(s, rack, filled)
        filled += 1


def default_shapes(n_gpu_nodes: int, n_cpu_nodes: int = 0) -> list[NodeShape]:
    """H100-like 8-GPU nodes, plus optional CPU-only nodes, expanded one per node."""
    groups = []
    if n_gpu_nodes:
        groups.append(
            NodeShape(
                "gpu-node", 96_000, 1024 * 2**30, 8, DEFAULT_PRODUCT, "gpu", count=n_gpu_nodes
            )
        )
    if n_cpu_nodes:
        groups.append(NodeShape("cpu-node", 64_000, 256 * 2**30, 0, "", "cpu", count=n_cpu_nodes))
    return expand(groups, numbered=True)


def expand(groups: list[NodeShape], numbered: bool = False) -> list[NodeShape]:
    """One shape per node, with unique names, racks and zones. Groups of more than one
    node (or every group, with `numbered`) get numbered names."""
    out: list[NodeShape] = []
    for g in groups:
        if g.count == 1 and not numbered:
            out.append(replace(g, count=1))
            continue
        width = max(4, len(str(g.count - 1)))
        for i in range(g.count):
            out.append(replace(g, name=f"{g.name}-{i:0{width}d}", count=1))
    lay_out(out)
    return out


_REPEAT = re.compile(r"^(.*)\*(\d+)$")
# The most nodes a cluster spec may make (nodes:N, counts and *K copies together),
# checked before any is made.
MAX_NODES = 100_000
_COUNT = Int(1, MAX_NODES)
_GPUS = Int(lo=0)


def load_shapes(spec: str, base: Path | None = None) -> list[NodeShape]:
    """Shapes from `openb:PATH[*K]`, a YAML file `PATH[*K]`, or `nodes:N` (N of the
    8-GPU nodes `gpuyard up --nodes N` makes), one per node."""
    if spec.startswith("nodes:"):
        count = spec[len("nodes:") :]
        if not count.isdigit() or int(count) < 1:
            raise ShapeError(f"{spec}: expected nodes:N with N a whole number >= 1")
        if int(count) > MAX_NODES:
            raise ShapeError(f"{spec}: at most {MAX_NODES} nodes")
        return default_shapes(int(count))
    k = 1
    m = _REPEAT.match(spec)
    if m:
        spec, k = m.group(1), int(m.group(2))
        if k < 1:
            raise ShapeError(f"{spec}: repeat count must be at least 1")
    if spec.startswith("openb:"):
        nodes = _read_openb(Path(spec[len("openb:") :]))
    else:
        nodes = _read_yaml(Path(spec))
    total = k * sum(n.count for n in nodes)
    if total > MAX_NODES:
        raise ShapeError(f"{spec}{f'*{k}' if k > 1 else ''}: {total} nodes, at most {MAX_NODES}")
    if k > 1:
        nodes = [replace(n, name=f"{n.name}-r{c}") for c in range(k) for n in nodes]
    for n in nodes:
        n.rack = n.zone = n.block = n.clique = ""
    return expand(nodes)


def _read_openb(path: Path) -> list[NodeShape]:
    try:
        fh = path.open(newline="")
    except OSError as exc:
        raise ShapeError(f"{path}: cannot read node list: {exc.strerror}") from exc
    nodes: list[NodeShape] = []
    with fh:
        reader = csv.DictReader(fh)
        need = {"sn", "cpu_milli", "memory_mib", "gpu", "model"}
        if not reader.fieldnames or not need <= set(reader.fieldnames):
            raise ShapeError(f"{path}:1: expected columns {','.join(sorted(need))}")
        for row in reader:
            line = reader.line_num
            try:
                gpus = _GPUS.parse(row["gpu"] or "0")
                nodes.append(
                    NodeShape(
                        name=row["sn"].strip(),
                        cpu_milli=_GPUS.parse(row["cpu_milli"]),
                        memory_bytes=_GPUS.parse(row["memory_mib"]) * 2**20,
                        gpus=gpus,
                        gpu_product=(row["model"] or "").strip(),
                        pool="gpu" if gpus else "cpu",
                    )
                )
            except (TypeError, ValueError) as exc:
                raise ShapeError(f"{path}:{line}: bad node row: {exc}") from exc
            if not nodes[-1].name:
                raise ShapeError(f"{path}:{line}: empty node name")
    if not nodes:
        raise ShapeError(f"{path}: no nodes")
    return nodes


def _read_yaml(path: Path) -> list[NodeShape]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ShapeError(f"{path}: cannot read shapes file: {exc.strerror}") from exc
    try:
        doc = loads_yaml(text)
    except DecodeError as exc:
        raise ShapeError(f"{path}: {exc.message}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ShapeError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from exc
    items = doc.get("nodes") if isinstance(doc, dict) else None
    if not isinstance(items, list) or not items:
        raise ShapeError(f"{path}:1: expected a 'nodes:' list of node shapes")
    lines = _item_lines(text)
    out = []
    for i, item in enumerate(items):
        where = f"{path}:{lines[i] if i < len(lines) else 1}"
        if not isinstance(item, dict) or not item.get("name"):
            raise ShapeError(f"{where}: each node shape needs a name")
        try:
            gpus = _GPUS.check(item.get("gpus", 0))
            count = _COUNT.check(item.get("count", 1))
            shape = NodeShape(
                name=str(item["name"]),
                cpu_milli=quantity_to_milli(item.get("cpu", "32")),
                memory_bytes=quantity_to_int(item.get("memory", "256Gi")),
                gpus=gpus,
                gpu_product=str(item.get("gpuProduct", DEFAULT_PRODUCT if gpus else "")),
                pool=str(item.get("pool", "gpu" if gpus else "cpu")),
                labels={str(k): str(v) for k, v in (item.get("labels") or {}).items()},
                taints=list(item.get("taints") or []),
                count=count,
                nvlink_gpus=_GPUS.check(item.get("nvlinkDomain", 0)),
                rack_size=_GPUS.check(item.get("rackSize", 0)),
                mig=_flag(item.get("mig", False), "mig"),
            )
        except (TypeError, ValueError, QuantityError) as exc:
            raise ShapeError(f"{where}: {exc}") from exc
        if count < 1 or gpus < 0:
            raise ShapeError(f"{where}: count must be >= 1 and gpus >= 0")
        d = shape.nvlink_gpus
        if d and (not gpus or d % gpus):
            raise ShapeError(
                f"{where}: nvlinkDomain {d} is not a whole number of nodes of {gpus} GPUs"
            )
        per = shape.nodes_per_clique()
        if per and shape.rack_size and shape.rack_size % per:
            raise ShapeError(
                f"{where}: rackSize {shape.rack_size} is not a whole number of NVLink "
                f"domains of {per} nodes"
            )
        if shape.pool not in ("gpu", "cpu"):
            raise ShapeError(f"{where}: pool must be gpu or cpu, not {shape.pool!r}")
        if count > 1:
            shape.name = shape.name.rstrip("-")
        out.append(shape)
    return out


def _flag(v: Any, name: str) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"{name} must be true or false, not {v!r}")
    return v


def _item_lines(text: str) -> list[int]:
    """1-based line numbers of the `- ` items under `nodes:` (for error messages)."""
    return [i + 1 for i, line in enumerate(text.splitlines()) if re.match(r"^\s*-\s", line)]
