"""The simulated GPUs' DRA driver: what NVIDIA's DRA driver publishes for a node's
GPUs, from its shape. One ResourceSlice per GPU node (`<node>-gpu.nvidia.com`, driver
`gpu.nvidia.com`, pool named after the node, owned by the Node), one device per GPU
(`gpu-0` ...) with the attributes `type` (gpu), `productName`, `index`, `uuid` and
`cliqueId` (the NVLink domain: the node's `nvidia.com/gpu.clique` label, else the
node itself, as an HGX board is one NVLink domain) and the capacity `memory` (from
the product name, e.g. 80GB; 80Gi when it says none); and the DeviceClass
`gpu.nvidia.com` that selects them. The slices follow the nodes: published when a
node registers, deleted when it goes.

With MIG (`gpuyard up --mig`, or `mig: true` on a node shape), a node whose GPUs can be
partitioned (A100, H100, H200, B200) publishes them as partitionable devices, as
resource.k8s.io/v1 defines them: one slice of shared counters, a counter set
`gpu-<i>` per GPU with its `compute-slices` (7) and `memory-slices` (8), and beside
each whole GPU its MIG profiles (type `mig`, attribute `profile` such as `1g.18gb`
on an H200, `parentIndex` the GPU's, capacity `memory`): 7 of 1g, 3 of 2g, 2 of 3g,
one 4g and one 7g, each drawing on its GPU's counters (1g: 1 compute and 1 memory
slice; 2g: 2 and 2; 3g: 3 and 4; 4g: 4 and 4; 7g: 7 and 8; the whole GPU all of
them). So a GPU is handed out whole or as slices that fit it, never both. A slice
consuming counters holds at most 64 devices, so the devices of 4 GPUs go in each
slice of the node's pool (`<node>-gpu.nvidia.com`, `-1`, ...), the counters in
`<node>-gpu.nvidia.com-counters`. The DeviceClass `mig.nvidia.com` selects the
partitions.
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Any

from gpuyard.cluster.shapes import NodeShape
from gpuyard.scheduling import dra

LABEL_CLIQUE = "nvidia.com/gpu.clique"
_MEMORY = re.compile(r"(\d+)\s*G[Bi]?\b", re.IGNORECASE)


_MIG_PRODUCTS = re.compile(r"(?<![A-Z0-9])(A100|H100|H200|B200)(?![0-9])", re.IGNORECASE)
# MIG profiles: (compute slices, memory slices of 8, instances per GPU)
MIG_PROFILES = ((1, 1, 7), (2, 2, 3), (3, 4, 2), (4, 4, 1), (7, 8, 1))
COMPUTE_SLICES = 7
MEMORY_SLICES = 8
GPUS_PER_SLICE = 4  # MIG devices of 4 GPUs (60) in one slice (at most 64)
SETS_PER_SLICE = 8  # counter sets in one slice (at most 8)


def device_class(name: str = dra.GPU_CLASS, kind: str = "gpu") -> dict[str, Any]:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "DeviceClass",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "gpuyard"}},
        "spec": {
            "selectors": [
                {
                    "cel": {
                        "expression": f'device.driver == "{dra.DRIVER}" && '
                        f'device.attributes["{dra.DRIVER}"].type == "{kind}"'
                    }
                }
            ]
        },
    }


def mig_device_class() -> dict[str, Any]:
    return device_class(dra.MIG_CLASS, "mig")


def can_partition(shape: NodeShape) -> bool:
    return shape.gpus > 0 and bool(_MIG_PRODUCTS.search(shape.gpu_product))


def mig_profiles(product: str) -> list[tuple[str, int, int, int, int]]:
    """(name, compute slices, memory slices, instances per GPU, memory GiB) of each
    MIG profile of the product (the GPU's memory in eighths: 1g.18gb on an H200)."""
    gb = int(gpu_memory(product)[:-2])
    out = []
    for compute, mem, count in MIG_PROFILES:
        size = int(gb * mem / MEMORY_SLICES + 0.5)
        out.append((f"{compute}g.{size}gb", compute, mem, count, size))
    return out


def slice_name(node: str) -> str:
    return f"{node}-{dra.DRIVER}"


def slice_names(shape: NodeShape, mig: bool = False) -> list[str]:
    """The names of the ResourceSlices a GPU node publishes."""
    if not (mig and can_partition(shape)):
        return [slice_name(shape.name)]
    base = slice_name(shape.name)
    sets = math.ceil(shape.gpus / SETS_PER_SLICE)
    parts = math.ceil(shape.gpus / GPUS_PER_SLICE)
    return [
        *(f"{base}-counters" + (f"-{k}" if k else "") for k in range(sets)),
        base,
        *(f"{base}-{k}" for k in range(1, parts)),
    ]


def _uuid(prefix: str, key: str) -> str:
    h = hashlib.sha1(key.encode()).hexdigest()
    return f"{prefix}-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def gpu_memory(product: str) -> str:
    m = _MEMORY.search(product.replace("-", " "))
    return f"{m.group(1)}Gi" if m else "80Gi"


def clique_of(shape: NodeShape, labels: dict[str, str]) -> str:
    return labels.get(LABEL_CLIQUE) or shape.labels.get(LABEL_CLIQUE) or shape.name


def resource_slice(
    shape: NodeShape, node_uid: str = "", labels: dict[str, str] | None = None
) -> dict[str, Any]:
    """The ResourceSlice of a GPU node (shape.gpus > 0)."""
    clique = clique_of(shape, labels or {})
    devices = [_gpu(shape, i, clique) for i in range(shape.gpus)]
    return _slice(shape, slice_name(shape.name), node_uid, {"devices": devices}, 1)


def _gpu(shape: NodeShape, i: int, clique: str) -> dict[str, Any]:
    return {
        "name": f"gpu-{i}",
        "attributes": {
            "type": {"string": "gpu"},
            dra.ATTR_PRODUCT: {"string": shape.gpu_product[:64]},
            dra.ATTR_INDEX: {"int": i},
            dra.ATTR_UUID: {"string": _uuid("GPU", f"{shape.name}/{i}")},
            dra.ATTR_CLIQUE: {"string": clique[:64]},
        },
        "capacity": {dra.CAP_MEMORY: {"value": gpu_memory(shape.gpu_product)}},
    }


def resource_slices(
    shape: NodeShape, node_uid: str = "", labels: dict[str, str] | None = None, mig: bool = False
) -> list[dict[str, Any]]:
    """The ResourceSlices of a GPU node: one as `resource_slice`, or with MIG (on a
    GPU that can be partitioned) its pool of counters and partitionable devices."""
    if not (mig and can_partition(shape)):
        return [resource_slice(shape, node_uid, labels)]
    clique = clique_of(shape, labels or {})
    names = slice_names(shape, True)
    count = len(names)
    counters = [
        {
            "name": f"gpu-{i}",
            "counters": {
                "compute-slices": {"value": str(COMPUTE_SLICES)},
                "memory-slices": {"value": str(MEMORY_SLICES)},
            },
        }
        for i in range(shape.gpus)
    ]
    n_sets = math.ceil(shape.gpus / SETS_PER_SLICE)
    out = [
        _slice(
            shape,
            names[k],
            node_uid,
            {"sharedCounters": counters[k * SETS_PER_SLICE : (k + 1) * SETS_PER_SLICE]},
            count,
        )
        for k in range(n_sets)
    ]
    profiles = mig_profiles(shape.gpu_product)
    for k, name in enumerate(names[n_sets:]):
        devices = []
        for i in range(k * GPUS_PER_SLICE, min(shape.gpus, (k + 1) * GPUS_PER_SLICE)):
            whole = _gpu(shape, i, clique)
            whole["consumesCounters"] = [_draw(i, COMPUTE_SLICES, MEMORY_SLICES)]
            devices.append(whole)
            for prof, compute, mem, per_gpu, size in profiles:
                for j in range(per_gpu):
                    devices.append(
                        {
                            "name": f"gpu-{i}-mig-{prof.replace('.', '-')}-{j}",
                            "attributes": {
                                "type": {"string": "mig"},
                                dra.ATTR_PROFILE: {"string": prof},
                                dra.ATTR_PRODUCT: {"string": shape.gpu_product[:64]},
                                dra.ATTR_PARENT: {"int": i},
                                dra.ATTR_INDEX: {"int": j},
                                dra.ATTR_UUID: {
                                    "string": _uuid("MIG", f"{shape.name}/{i}/{prof}/{j}")
                                },
                                dra.ATTR_CLIQUE: {"string": clique[:64]},
                            },
                            "capacity": {dra.CAP_MEMORY: {"value": f"{size}Gi"}},
                            "consumesCounters": [_draw(i, compute, mem)],
                        }
                    )
        out.append(_slice(shape, name, node_uid, {"devices": devices}, count))
    return out


def _draw(gpu: int, compute: int, memory: int) -> dict[str, Any]:
    return {
        "counterSet": f"gpu-{gpu}",
        "counters": {
            "compute-slices": {"value": str(compute)},
            "memory-slices": {"value": str(memory)},
        },
    }


def _slice(
    shape: NodeShape, name: str, node_uid: str, body: dict[str, Any], count: int
) -> dict[str, Any]:
    md: dict[str, Any] = {"name": name}
    if node_uid:
        md["ownerReferences"] = [
            {
                "apiVersion": "v1",
                "kind": "Node",
                "name": shape.name,
                "uid": node_uid,
                "controller": True,
            }
        ]
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceSlice",
        "metadata": md,
        "spec": {
            "driver": dra.DRIVER,
            "nodeName": shape.name,
            "pool": {"name": shape.name, "generation": 1, "resourceSliceCount": count},
            **body,
        },
    }
