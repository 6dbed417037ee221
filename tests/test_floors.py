"""Arrows point down: production code outside the embedded cluster (and the twin and
the command table, which sit beside it on the top floor) never imports
gpuyard.cluster, not even inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

import gpuyard

ROOT = Path(gpuyard.__file__).parent
TOP_FLOOR = {"cluster", "twin"}


def imported_modules(p: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(p.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_nothing_below_the_top_floor_imports_the_embedded_cluster() -> None:
    offenders = []
    for p in sorted(ROOT.rglob("*.py")):
        rel = p.relative_to(ROOT)
        if rel.parts[0] in TOP_FLOOR or rel == Path("cli.py"):
            continue
        if any(
            m == "gpuyard.cluster" or m.startswith("gpuyard.cluster.") for m in imported_modules(p)
        ):
            offenders.append(str(rel))
    assert offenders == []


def test_the_jobs_package_does_not_import_the_api_server() -> None:
    """The job validator checks files with the ground floor's schema checks
    (gpuyard.k8s.schema_check), the same ones the API server applies to custom
    resources, not by reaching into the API server."""
    offenders = []
    for p in sorted((ROOT / "jobs").rglob("*.py")):
        if any(m.startswith("gpuyard.apiserver") for m in imported_modules(p)):
            offenders.append(str(p.relative_to(ROOT)))
    assert offenders == []
