"""A Job's podFailurePolicy, judged on one failed pod: the first rule that matches
says what its failure means (FailJob, FailIndex, Ignore or Count); no rule matching
means Count, as without a policy.

`onExitCodes` looks at the terminated containers (a container name narrows it to one)
and skips exit code 0, as kube-controller-manager does; `onPodConditions` matches a
condition of that type and status (True unless said) on the pod, such as the
DisruptionTarget the Eviction API, preemption and the taint manager write.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

COUNT = "Count"
IGNORE = "Ignore"
FAIL_JOB = "FailJob"
FAIL_INDEX = "FailIndex"


@dataclass(frozen=True)
class Verdict:
    action: str  # Count, Ignore, FailJob or FailIndex
    message: str = ""  # why, for the FailJob condition; empty when no rule matched


def _exit_code_match(pod: dict[str, Any], req: dict[str, Any]) -> tuple[str, int] | None:
    st = pod.get("status") or {}
    want = {int(v) for v in req.get("values") or []}
    op = req.get("operator") or "In"
    only = req.get("containerName")
    for cs in [*(st.get("initContainerStatuses") or []), *(st.get("containerStatuses") or [])]:
        term = (cs.get("state") or {}).get("terminated")
        if not term or (only and cs.get("name") != only):
            continue
        code = int(term.get("exitCode") or 0)
        if code == 0:
            continue
        if (code in want) == (op == "In"):
            return str(cs.get("name") or ""), code
    return None


def _condition_match(pod: dict[str, Any], reqs: list[dict[str, Any]]) -> str | None:
    conds = (pod.get("status") or {}).get("conditions") or []
    for req in reqs:
        want = req.get("status") or "True"
        for c in conds:
            if c.get("type") == req.get("type") and c.get("status") == want:
                return str(c.get("type"))
    return None


def judge(pod: dict[str, Any], policy: dict[str, Any] | None) -> Verdict:
    """What the failure of `pod` means under `policy` (the Job's spec.podFailurePolicy)."""
    md = pod.get("metadata") or {}
    who = f"{md.get('namespace', '')}/{md.get('name', '')}"
    for i, rule in enumerate((policy or {}).get("rules") or []):
        action = rule.get("action") or COUNT
        codes = rule.get("onExitCodes")
        if codes:
            hit = _exit_code_match(pod, codes)
            if hit is not None:
                return Verdict(
                    action,
                    f"Container {hit[0]} for pod {who} failed with exit code {hit[1]} "
                    f"matching {action} rule at index {i}",
                )
            continue
        ctype = _condition_match(pod, rule.get("onPodConditions") or [])
        if ctype is not None:
            return Verdict(
                action, f"Pod {who} has condition {ctype} matching {action} rule at index {i}"
            )
    return Verdict(COUNT)
