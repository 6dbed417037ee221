"""The built-in kinds of a default Kubernetes 1.37 control plane, as data.

`builtin_kinds()` reads gpuyard/k8s/data/kinds.json (written by gpuyard.k8s.kinds_gen
from the official API definitions; see there for the sources): per group/version/kind
its plural, singular, scope, verbs, short names, categories and subresources. Loaded
once per process; pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources as importlib_resources

import orjson


@dataclass(frozen=True)
class Subresource:
    """One subresource as discovery lists it: name, verbs, and the kind it answers
    (group and version empty: the parent's)."""

    name: str
    verbs: tuple[str, ...]
    kind: str
    group: str = ""
    version: str = ""


@dataclass(frozen=True)
class Kind:
    group: str
    version: str
    kind: str
    plural: str
    singular: str
    namespaced: bool
    verbs: tuple[str, ...]
    short_names: tuple[str, ...]
    categories: tuple[str, ...]
    subresources: tuple[Subresource, ...]


@cache
def builtin_kinds() -> tuple[Kind, ...]:
    raw = (importlib_resources.files("gpuyard.k8s") / "data" / "kinds.json").read_bytes()
    out = []
    for k in orjson.loads(raw)["kinds"]:
        out.append(
            Kind(
                group=k["group"],
                version=k["version"],
                kind=k["kind"],
                plural=k["plural"],
                singular=k["singular"],
                namespaced=bool(k["namespaced"]),
                verbs=tuple(k["verbs"]),
                short_names=tuple(k["shortNames"]),
                categories=tuple(k["categories"]),
                subresources=tuple(
                    Subresource(
                        s["name"],
                        tuple(s["verbs"]),
                        s["kind"],
                        s.get("group", ""),
                        s.get("version", ""),
                    )
                    for s in k["subresources"]
                ),
            )
        )
    return tuple(out)
