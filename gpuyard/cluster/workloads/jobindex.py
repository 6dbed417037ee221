"""Completion indexes of Indexed Jobs: the pod annotations that carry them and the
range strings ("0-3,5,7-9") that status.completedIndexes and failedIndexes hold."""

from __future__ import annotations

from typing import Any

INDEX = "batch.kubernetes.io/job-completion-index"
# how many earlier pods of the same index failed (with spec.backoffLimitPerIndex)
INDEX_FAILURES = "batch.kubernetes.io/job-index-failure-count"


def index_ranges(indexes: set[int]) -> str:
    """Indexes as the API writes them: "0-3,5,7-9"."""
    out: list[str] = []
    run: list[int] = []
    for i in sorted(indexes):
        if run and i == run[-1] + 1:
            run.append(i)
            continue
        if run:
            out.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
        run = [i]
    if run:
        out.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
    return ",".join(out)


def parse_ranges(text: str | None) -> set[int]:
    got: set[int] = set()
    for part in (text or "").split(","):
        if not part:
            continue
        a, _, b = part.partition("-")
        try:
            got.update(range(int(a), int(b or a) + 1))
        except ValueError:
            continue  # not ours to fix; the pods say the rest
    return got


def _int_annotation(pod: dict[str, Any], key: str) -> int | None:
    raw = ((pod.get("metadata") or {}).get("annotations") or {}).get(key)
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


def index_of(pod: dict[str, Any]) -> int | None:
    return _int_annotation(pod, INDEX)


def failures_before(pod: dict[str, Any]) -> int:
    return _int_annotation(pod, INDEX_FAILURES) or 0
