"""The page ships with the package: every static file matches pyproject's package-data,
and every module the page imports is one of them (no build step, nothing fetched)."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

import gpuyard
from gpuyard.dashboard.assets import CONTENT_TYPES
from gpuyard.dashboard.server import STATIC

ROOT = Path(__file__).resolve().parents[2]


def test_static_files_are_package_data() -> None:
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["gpuyard"]
    files = sorted(p for p in STATIC.iterdir() if p.is_file())
    assert files
    for p in files:
        rel = str(p.relative_to(Path(gpuyard.__file__).parent))
        assert any(fnmatch.fnmatch(rel, pat) for pat in patterns), rel
        assert p.suffix in CONTENT_TYPES, p.name  # the server serves it


def test_the_page_loads_only_its_own_files() -> None:
    html = (STATIC / "index.html").read_text()
    refs = re.findall(r'(?:src|href)="([^"]+)"', html)
    for js in STATIC.glob("*.js"):
        refs += [f"/static/{m[2:]}" for m in re.findall(r'from "(\./[^"]+)"', js.read_text())]
    assert "/static/app.js" in refs
    for ref in refs:
        if ref.startswith("data:"):
            continue
        assert ref.startswith("/static/"), ref  # nothing from another origin
        assert (STATIC / ref.removeprefix("/static/")).is_file(), ref
