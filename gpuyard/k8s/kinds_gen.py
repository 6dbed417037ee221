"""Writes gpuyard/k8s/data/kinds.json, the built-in kinds of a default Kubernetes 1.37.

Run by a developer when the Kubernetes version changes (`python -m gpuyard.k8s.kinds_gen`);
the API server only reads the file it writes (gpuyard.k8s.kinds). Sources of the facts:

- `kubernetes-validate` 1.37 (a runtime dependency): every type of the 1.37 OpenAPI
  document with its `x-kubernetes-group-version-kind`. A kind is written only if it is
  defined there.
- `lightkube-models` 1.37 (a test dependency): generated from the same 1.37 OpenAPI
  document's paths; per resource its plural, scope, verbs and subresources (status, scale,
  binding, eviction, token, ...), with the kind each subresource answers.
- Short names and categories are not in any OpenAPI document; only discovery says them.
  `SHORT_NAMES` and `CATEGORIES` below are as Kubernetes' own discovery data lists them
  (kubernetes/kubernetes `api/discovery/aggregated_v2.json` and `api__v1.json`).

Served: the GA versions of each group, plus the beta versions named in `BETA_SERVED`
(those gpuyard serves on purpose). Alpha versions are off on a default control plane,
but for the kinds named in `ALPHA_SERVED`: CompositePodGroup, which exists only in
scheduling.k8s.io/v1alpha3 (a control plane with that version and the
CompositePodGroup feature gate on serves it; the v1alpha3 Workload and PodGroup, the
same as their v1beta1, are not served here).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import re
import sys
from pathlib import Path
from typing import Any

import orjson

OUT = Path(__file__).parent / "data" / "kinds.json"
BETA_SERVED = {("scheduling.k8s.io", "v1beta1")}
ALPHA_SERVED = {("scheduling.k8s.io", "v1alpha3", "compositepodgroups")}

# (group, plural) -> short names, as Kubernetes discovery lists them.
SHORT_NAMES: dict[tuple[str, str], list[str]] = {
    ("", "componentstatuses"): ["cs"],
    ("", "configmaps"): ["cm"],
    ("", "endpoints"): ["ep"],
    ("", "events"): ["ev"],
    ("", "limitranges"): ["limits"],
    ("", "namespaces"): ["ns"],
    ("", "nodes"): ["no"],
    ("", "persistentvolumeclaims"): ["pvc"],
    ("", "persistentvolumes"): ["pv"],
    ("", "pods"): ["po"],
    ("", "replicationcontrollers"): ["rc"],
    ("", "resourcequotas"): ["quota"],
    ("", "serviceaccounts"): ["sa"],
    ("", "services"): ["svc"],
    ("apps", "daemonsets"): ["ds"],
    ("apps", "deployments"): ["deploy"],
    ("apps", "replicasets"): ["rs"],
    ("apps", "statefulsets"): ["sts"],
    ("events.k8s.io", "events"): ["ev"],
    ("autoscaling", "horizontalpodautoscalers"): ["hpa"],
    ("batch", "cronjobs"): ["cj"],
    ("certificates.k8s.io", "certificatesigningrequests"): ["csr"],
    ("networking.k8s.io", "ingresses"): ["ing"],
    ("networking.k8s.io", "ipaddresses"): ["ip"],
    ("networking.k8s.io", "networkpolicies"): ["netpol"],
    ("policy", "poddisruptionbudgets"): ["pdb"],
    ("storage.k8s.io", "storageclasses"): ["sc"],
    ("storage.k8s.io", "volumeattributesclasses"): ["vac"],
    ("apiextensions.k8s.io", "customresourcedefinitions"): ["crd", "crds"],
    ("scheduling.k8s.io", "priorityclasses"): ["pc"],
}

_ALL = ["all"]
_EXT = ["api-extensions"]
CATEGORIES: dict[tuple[str, str], list[str]] = {
    ("", "pods"): _ALL,
    ("", "replicationcontrollers"): _ALL,
    ("", "services"): _ALL,
    ("apps", "daemonsets"): _ALL,
    ("apps", "deployments"): _ALL,
    ("apps", "replicasets"): _ALL,
    ("apps", "statefulsets"): _ALL,
    ("autoscaling", "horizontalpodautoscalers"): _ALL,
    ("batch", "cronjobs"): _ALL,
    ("batch", "jobs"): _ALL,
    ("apiregistration.k8s.io", "apiservices"): _EXT,
    ("apiextensions.k8s.io", "customresourcedefinitions"): _EXT,
    ("admissionregistration.k8s.io", "mutatingwebhookconfigurations"): _EXT,
    ("admissionregistration.k8s.io", "validatingwebhookconfigurations"): _EXT,
    ("admissionregistration.k8s.io", "validatingadmissionpolicies"): _EXT,
    ("admissionregistration.k8s.io", "validatingadmissionpolicybindings"): _EXT,
    ("admissionregistration.k8s.io", "mutatingadmissionpolicies"): _EXT,
    ("admissionregistration.k8s.io", "mutatingadmissionpolicybindings"): _EXT,
}

# lightkube names the HTTP verbs of the paths; discovery names the API verbs.
_VERBS = {
    "post": "create",
    "put": "update",
    "global_list": None,
    "global_watch": None,
}


def _served(group: str, version: str, plural: str = "") -> bool:
    return (
        bool(re.fullmatch(r"v\d+", version))
        or (group, version) in BETA_SERVED
        or (group, version, plural) in ALPHA_SERVED
    )


def _api_verbs(verbs: list[str]) -> list[str]:
    out = {_VERBS.get(v, v) for v in verbs}
    out.discard(None)
    return sorted(str(v) for v in out)


def build() -> list[dict[str, Any]]:
    """The kinds, sorted by group, version and plural."""
    from gpuyard.apiserver.schemas import definitions

    defined = set(definitions().by_gvk)
    lr = importlib.import_module("lightkube.resources")
    main: dict[tuple[str, str, str], dict[str, Any]] = {}
    subs: list[tuple[tuple[str, str, str], str, list[str], tuple[str, str, str]]] = []
    for m in pkgutil.iter_modules(lr.__path__):
        mod = importlib.import_module(f"lightkube.resources.{m.name}")
        for cls in vars(mod).values():
            info = getattr(cls, "_api_info", None)
            if info is None or getattr(cls, "__module__", "") != mod.__name__:
                continue
            rd = info.resource
            parent = info.parent or rd
            key = (parent.group, parent.version, info.plural)
            if not _served(parent.group, parent.version, info.plural):
                continue
            base = cls.__mro__[1].__name__
            if info.action:
                subs.append(
                    (key, info.action, _api_verbs(info.verbs), (rd.group, rd.version, rd.kind))
                )
                continue
            if (rd.group, rd.version, rd.kind) not in defined:
                raise SystemExit(f"{rd} is not defined by kubernetes-validate 1.37")
            main[key] = {
                "group": rd.group,
                "version": rd.version,
                "kind": rd.kind,
                "plural": info.plural,
                "singular": rd.kind.lower(),
                "namespaced": base.startswith("Namespaced"),
                "verbs": _api_verbs(info.verbs),
                "shortNames": SHORT_NAMES.get((rd.group, info.plural), []),
                "categories": CATEGORIES.get((rd.group, info.plural), []),
                "subresources": [],
            }
    for key, action, verbs, (g, v, k) in subs:
        entry = main.get(key)
        if entry is None:
            continue
        sub: dict[str, Any] = {"name": action, "verbs": verbs, "kind": k}
        if (g, v) != (entry["group"], entry["version"]):
            sub["group"], sub["version"] = g, v
        entry["subresources"].append(sub)
    for e in main.values():
        e["subresources"].sort(key=lambda s: s["name"])
    return sorted(main.values(), key=lambda e: (e["group"], e["version"], e["plural"]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="fail if the file is out of date")
    args = ap.parse_args(argv)
    lines = b",\n".join(orjson.dumps(k) for k in build())
    data = b'{"kubernetes": "1.37", "kinds": [\n' + lines + b"\n]}\n"
    if args.check:
        if OUT.read_bytes() != data:
            print(f"{OUT} is out of date: run python -m gpuyard.k8s.kinds_gen", file=sys.stderr)
            return 1
        return 0
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_bytes(data)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
