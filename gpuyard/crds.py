"""Every CustomResourceDefinition gpuyard defines, in one list: what `gpuyard up`
installs in the embedded cluster, `gpuyard controllers --install-crds` creates on a real
one, and `gpuyard manifests` writes. Each package that defines resources says so in
its own `crds()`; this module only gathers them (production code takes the list from
here, never from gpuyard.cluster)."""

from __future__ import annotations

import importlib
from typing import Any

# Modules whose `crds()` lists CustomResourceDefinitions.
CRD_MODULES = (
    "gpuyard.scheduling.crds",
    "gpuyard.jobs.crds",
    "gpuyard.teams.crds",
    "gpuyard.balloons.crds",
)


def crd_objects() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for modname in CRD_MODULES:
        out.extend(importlib.import_module(modname).crds())
    return out
