"""The Node the policy tests of the scheduler place pods on (test_dra, test_composite):
ready, 96 cpu, 1Ti of memory, 110 pods and `gpus` nvidia.com/gpu allocatable."""

from __future__ import annotations

from typing import Any


def node(name: str, gpus: int = 8) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {
            "allocatable": {
                "cpu": "96",
                "memory": "1Ti",
                "pods": "110",
                "nvidia.com/gpu": str(gpus),
            },
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }
