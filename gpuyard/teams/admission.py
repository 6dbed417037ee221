"""The team admission decision as a pure function: a pod in a team's namespace -> the
JSON patch that puts it on the team's nodes or the shared pool, or a refusal.

For a pod of team T:
- refuse it when it carries, on its own, a toleration for another team's taint
  (gpuyard.io/team=<other>, or the "any team" toleration when it may not borrow);
- add the toleration gpuyard.io/team=T:NoSchedule;
- set priorityClassName gpuyard-normal when none is given;
- gpuyard-low pods of a team with borrow=true get the "any team" toleration (key
  gpuyard.io/team, operator Exists) and may run on any team's idle nodes;
- every other pod gets a required node affinity: nodes labelled gpuyard.io/team=T, or
  nodes without the label (the shared pool), ANDed with any affinity it already has;
- a pod without gpuyard.io/internet-egress-bandwidth gets the team's default
  (spec.internetEgressBandwidth) when it has one.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gpuyard import names
from gpuyard.kube import json_patch
from gpuyard.network import bandwidth

ANY_TEAM_TOLERATION = {"key": names.TAINT_TEAM, "operator": "Exists", "effect": "NoSchedule"}


def team_toleration(team: str) -> dict[str, str]:
    return {"key": names.TAINT_TEAM, "operator": "Equal", "value": team, "effect": "NoSchedule"}


@dataclass(frozen=True)
class TeamInfo:
    name: str
    borrow: bool = False
    # spec.internetEgressBandwidth: the default limit of its pods' internet egress ("": none)
    egress: str = ""


@dataclass
class Decision:
    allowed: bool
    patch: list[dict[str, Any]] = field(default_factory=list)
    message: str = ""
    warnings: list[str] = field(default_factory=list)
    reason: str = ""  # a refusal's category, for metrics (a few fixed words)


def is_team_toleration(t: Mapping[str, Any]) -> bool:
    # An empty key with operator Exists tolerates every taint, team taints included.
    key = t.get("key") or ""
    return key == names.TAINT_TEAM or (key == "" and t.get("operator") == "Exists")


def _affinity_terms(team: str, existing: list[dict[str, Any]]) -> list[dict[str, Any]]:
    mine = {"key": names.LABEL_TEAM, "operator": "In", "values": [team]}
    shared = {"key": names.LABEL_TEAM, "operator": "DoesNotExist"}
    bases = existing or [{}]
    out = []
    for base in bases:
        for expr in (mine, shared):
            term = copy.deepcopy(base)
            term.setdefault("matchExpressions", []).append(dict(expr))
            out.append(term)
    return out


def _already_placed(terms: list[dict[str, Any]], team: str) -> bool:
    """True when the affinity already restricts to this team's nodes or the shared pool
    (the webhook ran before: reinvocation, or a re-submitted object)."""
    if not terms:
        return False
    for term in terms:
        exprs = term.get("matchExpressions") or []
        if not any(
            e.get("key") == names.LABEL_TEAM
            and (
                (e.get("operator") == "In" and list(e.get("values") or []) == [team])
                or e.get("operator") == "DoesNotExist"
            )
            for e in exprs
        ):
            return False
    return True


def _annotate(pod: Mapping[str, Any], key: str, value: str) -> dict[str, Any]:
    if ((pod.get("metadata") or {}).get("annotations")) is None:
        return {"op": "add", "path": "/metadata/annotations", "value": {key: value}}
    escaped = key.replace("~", "~0").replace("/", "~1")
    return {"op": "add", "path": f"/metadata/annotations/{escaped}", "value": value}


def mutate_pod(pod: Mapping[str, Any], team: TeamInfo | None, namespace: str) -> Decision:
    """The decision for creating `pod` in `namespace`; team None: not a team namespace."""
    limit = ((pod.get("metadata") or {}).get("annotations") or {}).get(bandwidth.ANNOTATION)
    if limit is not None:
        try:
            bandwidth.parse(limit)
        except ValueError as e:
            return Decision(
                allowed=False,
                message=f"annotation {bandwidth.ANNOTATION}: {e}",
                reason="bad-bandwidth-annotation",
            )
    if team is None:
        return Decision(allowed=True)
    spec = pod.get("spec") or {}
    ops: list[dict[str, Any]] = []
    if limit is None and team.egress:
        ops.append(_annotate(pod, bandwidth.ANNOTATION, team.egress))
    tolerations = list(spec.get("tolerations") or [])
    pcn = spec.get("priorityClassName") or ""
    low = pcn == names.PRIORITY_LOW
    borrowing = low and team.borrow

    for t in tolerations:
        if not is_team_toleration(t):
            continue
        if t.get("operator") == "Exists":
            if borrowing:
                continue
            why = (
                "only gpuyard-low pods of a team with spec.borrow=true may"
                if not low
                else f"team {team.name} has spec.borrow=false, so its pods may not"
            )
            return Decision(
                allowed=False,
                reason="any-team-toleration",
                message=(
                    f"pod carries a toleration for every team's taint ({names.TAINT_TEAM} "
                    f"Exists); {why} run on other teams' nodes"
                ),
            )
        value = t.get("value") or ""
        if value != team.name:
            return Decision(
                allowed=False,
                reason="other-team-toleration",
                message=(
                    f"pod in namespace {namespace} (team {team.name}) carries team "
                    f"{value}'s toleration ({names.TAINT_TEAM}={value}); a pod may not "
                    f"place itself on another team's nodes — gpuyard-low pods of a team "
                    f"with borrow=true get borrowing tolerations from the webhook"
                ),
            )

    want = [team_toleration(team.name)]
    if borrowing:
        want.append(dict(ANY_TEAM_TOLERATION))
    missing = [w for w in want if not any(_same_toleration(w, t) for t in tolerations)]
    if missing:
        if "tolerations" not in spec or spec.get("tolerations") is None:
            ops.append({"op": "add", "path": "/spec/tolerations", "value": missing})
        else:
            ops.extend({"op": "add", "path": "/spec/tolerations/-", "value": m} for m in missing)

    if not pcn and spec.get("priority") is None:
        ops.append({"op": "add", "path": "/spec/priorityClassName", "value": names.PRIORITY_NORMAL})

    if not borrowing:
        affinity = spec.get("affinity") or {}
        na = affinity.get("nodeAffinity") or {}
        req = na.get("requiredDuringSchedulingIgnoredDuringExecution") or {}
        terms = list(req.get("nodeSelectorTerms") or [])
        if not _already_placed(terms, team.name):
            new_req = dict(req)
            new_req["nodeSelectorTerms"] = _affinity_terms(team.name, terms)
            if not spec.get("affinity"):
                ops.append(
                    {
                        "op": "add",
                        "path": "/spec/affinity",
                        "value": {
                            "nodeAffinity": {
                                "requiredDuringSchedulingIgnoredDuringExecution": new_req
                            }
                        },
                    }
                )
            elif not affinity.get("nodeAffinity"):
                ops.append(
                    {
                        "op": "add",
                        "path": "/spec/affinity/nodeAffinity",
                        "value": {"requiredDuringSchedulingIgnoredDuringExecution": new_req},
                    }
                )
            else:
                ops.append(
                    {
                        "op": "add",
                        "path": "/spec/affinity/nodeAffinity/"
                        "requiredDuringSchedulingIgnoredDuringExecution",
                        "value": new_req,
                    }
                )
    return Decision(allowed=True, patch=ops)


def _same_toleration(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return all(
        (a.get(k) or "") == (b.get(k) or "") for k in ("key", "operator", "value", "effect")
    ) or (
        (b.get("key") or "") == (a.get("key") or "")
        and (b.get("operator") or "Equal") == (a.get("operator") or "Equal")
        and (b.get("value") or "") == (a.get("value") or "")
        and (b.get("effect") or "") in ("", a.get("effect"))
    )


def apply_json_patch(
    obj: Mapping[str, Any], ops: list[dict[str, Any]], *, in_place: bool = False
) -> dict[str, Any]:
    """The pod as the API server stores it after this module's patch (the twin, tests
    and the benchmark use it), through the API server's own JSON Patch applier.

    `obj` and `ops` are left as they were unless `in_place`: then `obj` is patched
    itself and takes the patch's values as they are, for a caller that owns a freshly
    built pod and the patch `mutate_pod` just made for it (the twin, once per pod)."""
    if in_place:
        out: dict[str, Any] = json_patch.apply(obj, ops)
    else:
        out = json_patch.applied(obj, ops)
    return out
