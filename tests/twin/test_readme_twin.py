"""The README's twin example runs as written, with shipped files only, and its figures
are what the run gives: the policies differ (partly placed gangs under fifo only, the
large gangs' longest wait shorter under gpuyard than gangs), and virtual_days runs past
the days of submissions."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_the_readme_twin_example(tmp_path: Path) -> None:
    text = (ROOT / "README.md").read_text()
    block = text.split("with shipped files only:\n\n```sh\n", 1)[1].split("```", 1)[0]
    lines = [ln.replace("/tmp/", f"{tmp_path}/") for ln in block.splitlines() if ln.strip()]
    assert len(lines) == 2 and "../" not in block
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for ln in lines:
        cmd = ln.replace(".venv/bin/gpuyard", f"{sys.executable} -m gpuyard") + " --quiet" * (
            "--compare" in ln
        )
        out = subprocess.run(
            cmd, shell=True, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
        )
        assert out.returncode == 0, out.stderr
    m = json.loads((tmp_path / "twin" / "metrics.json").read_text())["compare"]
    fifo, gangs, ours = m["fifo"], m["gangs"], m["gpuyard"]
    said = text.split("with shipped files only:", 1)[1].split("`--teams", 1)[0]

    def figure(n: float) -> bool:
        return f"{n:,.0f}" in said

    assert figure(fifo["partial_gang_gpu_hours"]) and gangs["partial_gang_gpu_hours"] == 0
    assert ours["partial_gang_gpu_hours"] == 0
    assert figure(gangs["large_gang_max_wait_s"]) and figure(ours["large_gang_max_wait_s"])
    assert ours["large_gang_max_wait_s"] < gangs["large_gang_max_wait_s"]
    assert f"{ours['virtual_days']:.1f}" in said and ours["virtual_days"] > 2
    quoted = re.search(
        r"median wait of (\d+) min\s+against 0 \(gangs\) and (\d+) min \(fifo\)", said
    )
    assert quoted, "the README's median waits are not in the expected sentence"
    assert round(ours["wait_s"]["p50"] / 60) == int(quoted[1])
    assert round(fifo["wait_s"]["p50"] / 60) == int(quoted[2]) and gangs["wait_s"]["p50"] == 0
