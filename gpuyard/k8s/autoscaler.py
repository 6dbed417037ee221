"""What the cluster-autoscaler says it may add: its status ConfigMap
(kube-system/cluster-autoscaler-status), read by the balloon controller (how many
balloons a pool may need) and the job controller (whether a job can ever fit)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gpuyard.k8s.decode import DecodeError, loads_yaml


def group_max_sizes(cm: Mapping[str, Any] | None) -> dict[str, int]:
    """Node group name -> maxSize, from the status ConfigMap's `data.status` YAML;
    empty when there is none or it cannot be read."""
    text = ((cm or {}).get("data") or {}).get("status")
    if not text or not isinstance(text, str):
        return {}
    try:
        doc = loads_yaml(text)
    except DecodeError:
        return {}
    out: dict[str, int] = {}
    for g in (doc.get("nodeGroups") or []) if isinstance(doc, dict) else []:
        if not isinstance(g, dict):
            continue
        mx = (g.get("health") or {}).get("maxSize")
        if isinstance(g.get("name"), str) and isinstance(mx, int) and not isinstance(mx, bool):
            out[g["name"]] = mx
    return out
