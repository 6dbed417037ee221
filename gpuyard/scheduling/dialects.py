"""The topology dialects, read into the one model (`topology.Request`): pure functions of
objects as they travel on the wire, called by whichever driver feeds the state.

    dialect                       where                           reads as
    ----------------------------  ------------------------------  -------------------------
    upstream scheduling.k8s.io    PodGroup spec.schedulingConstr  required: every key
      PodGroup                    aints.topology[].key
    Kueue topology-aware          annotations kueue.x-k8s.io/     required, preferred,
      scheduling                  podset-required-topology,       slice key and size
                                  -preferred-topology, -slice-
                                  required-topology, -slice-size
    KAI scheduler                 annotations kai.scheduler/      required, preferred
                                  topology-required-placement,
                                  -preferred-placement
    Volcano                       PodGroup spec.networkTopology   hard: required, soft:
                                  {mode, highestTierAllowed}      preferred, at the tier's
                                                                  level (TIERS)

Annotations count on a pod (Kueue and KAI put them on the pod template) and on a
PodGroup. A value that cannot be read (a slice size that is not a whole number, a
slice without its size, an unknown mode or tier) makes a request whose `error` the
gang waits with, naming the annotation or field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gpuyard import names
from gpuyard.scheduling.topology import Request

KUEUE_REQUIRED = "kueue.x-k8s.io/podset-required-topology"
KUEUE_PREFERRED = "kueue.x-k8s.io/podset-preferred-topology"
KUEUE_SLICE = "kueue.x-k8s.io/podset-slice-required-topology"
KUEUE_SLICE_SIZE = "kueue.x-k8s.io/podset-slice-size"
KAI_REQUIRED = "kai.scheduler/topology-required-placement"
KAI_PREFERRED = "kai.scheduler/topology-preferred-placement"

# Volcano's network tiers as node label levels: tier 1 is the rack (one top-of-rack
# switch, the NVLink domain on GB200 racks), 2 the block of racks, 3 the zone.
TIERS = (names.LABEL_RACK, names.LABEL_BLOCK, names.LABEL_ZONE)


def pod_request(md: Mapping[str, Any]) -> Request | None:
    """What an object's annotations (a pod's or a PodGroup's) ask of the topology."""
    ann = md.get("annotations")
    if not ann:
        return None
    req = ann.get(KUEUE_REQUIRED) or ann.get(KAI_REQUIRED)
    pref = ann.get(KUEUE_PREFERRED) or ann.get(KAI_PREFERRED)
    slice_key = ann.get(KUEUE_SLICE)
    size_text = ann.get(KUEUE_SLICE_SIZE)
    if not (req or pref or slice_key or size_text):
        return None
    error = None
    size = 0
    if slice_key or size_text:
        if not slice_key or not size_text:
            given, missing = (
                (KUEUE_SLICE, KUEUE_SLICE_SIZE) if slice_key else (KUEUE_SLICE_SIZE, KUEUE_SLICE)
            )
            error = f"annotation {given} needs {missing} too"
        elif not str(size_text).isdigit() or int(size_text) < 1:
            error = f"annotation {KUEUE_SLICE_SIZE}={size_text!r} is not a whole number >= 1"
        else:
            size = int(size_text)
    return Request(
        required=(str(req),) if req else (),
        preferred=str(pref) if pref else None,
        slice_key=str(slice_key) if slice_key and not error else None,
        slice_size=size,
        error=error,
    )


def upstream_request(pg: Mapping[str, Any]) -> Request | None:
    """An upstream PodGroup's `spec.schedulingConstraints.topology[].key` (each
    required), with what its annotations add."""
    sc = (pg.get("spec") or {}).get("schedulingConstraints") or {}
    keys = tuple(
        str(t["key"])
        for t in (sc.get("topology") or ())
        if isinstance(t, Mapping) and isinstance(t.get("key"), str) and t["key"]
    )
    own = pod_request(pg.get("metadata") or {})
    if not keys:
        return own
    return Request(required=keys).merged(own)


def volcano_request(spec: Mapping[str, Any], tiers: tuple[str, ...] = TIERS) -> Request | None:
    """A Volcano PodGroup's or Job's `spec.networkTopology`: mode hard (the default)
    keeps the gang inside one domain of the tier's level, soft prefers it."""
    nt = spec.get("networkTopology")
    if not isinstance(nt, Mapping):
        return None
    mode = nt.get("mode", "hard")
    tier = nt.get("highestTierAllowed", 1)
    if mode not in ("hard", "soft"):
        return Request(error=f"spec.networkTopology.mode {mode!r}: expected hard or soft")
    if isinstance(tier, bool) or not isinstance(tier, int) or not 1 <= tier <= len(tiers):
        return Request(
            error=f"spec.networkTopology.highestTierAllowed {tier!r}: expected 1 to {len(tiers)}"
            f" ({', '.join(f'{i + 1}: {k}' for i, k in enumerate(tiers))})"
        )
    key = tiers[tier - 1]
    return Request(required=(key,)) if mode == "hard" else Request(preferred=key)
