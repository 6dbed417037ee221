"""The simulated GPUs' DRA driver: what NVIDIA's DRA driver publishes for a node's
GPUs, from its shape. One ResourceSlice per GPU node (`<node>-gpu.nvidia.com`, driver
`gpu.nvidia.com`, pool named after the node, owned by the Node), one device per GPU
(`gpu-0` ...) with the attributes `type` (gpu), `productName`, `index`, `uuid` and
`cliqueId` (the NVLink domain: the node's `nvidia.com/gpu.clique` label, else the
node itself, as an HGX board is one NVLink domain) and the capacity `memory` (from
the product name, e.g. 80GB; 80Gi when it says none); and the DeviceClass
`gpu.nvidia.com` that selects them. The slices follow the nodes: published when a
node registers, deleted when it goes.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from gpuyard.cluster.shapes import NodeShape
from gpuyard.scheduling import dra

LABEL_CLIQUE = "nvidia.com/gpu.clique"
_MEMORY = re.compile(r"(\d+)\s*G[Bi]?\b", re.IGNORECASE)


def device_class() -> dict[str, Any]:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "DeviceClass",
        "metadata": {"name": dra.GPU_CLASS, "labels": {"app.kubernetes.io/part-of": "gpuyard"}},
        "spec": {
            "selectors": [
                {
                    "cel": {
                        "expression": f'device.driver == "{dra.DRIVER}" && '
                        f'device.attributes["{dra.DRIVER}"].type == "gpu"'
                    }
                }
            ]
        },
    }


def slice_name(node: str) -> str:
    return f"{node}-{dra.DRIVER}"


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
    memory = gpu_memory(shape.gpu_product)
    devices = []
    for i in range(shape.gpus):
        uuid = hashlib.sha1(f"{shape.name}/{i}".encode()).hexdigest()
        devices.append(
            {
                "name": f"gpu-{i}",
                "attributes": {
                    "type": {"string": "gpu"},
                    dra.ATTR_PRODUCT: {"string": shape.gpu_product[:64]},
                    dra.ATTR_INDEX: {"int": i},
                    dra.ATTR_UUID: {
                        "string": f"GPU-{uuid[:8]}-{uuid[8:12]}-{uuid[12:16]}-{uuid[16:20]}-{uuid[20:32]}"
                    },
                    dra.ATTR_CLIQUE: {"string": clique[:64]},
                },
                "capacity": {dra.CAP_MEMORY: {"value": memory}},
            }
        )
    md: dict[str, Any] = {"name": slice_name(shape.name)}
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
            "pool": {"name": shape.name, "generation": 1, "resourceSliceCount": 1},
            "devices": devices,
        },
    }
