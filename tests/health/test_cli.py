"""`gpuyard health ...` commands: clear errors, exit codes, JSON output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from gpuyard.health.xid import format_xid_line

from .hostfiles import make_host, write_disk

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).parent / "fixtures"


def gy(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gpuyard.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        input=stdin,
    )


def test_xid_command_classifies_and_exits_on_serious() -> None:
    out = gy("health", "xid", str(FIXTURES / "kern.log"))
    assert out.returncode == 1
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert {r["code"]: r["class"] for r in rows}[79] == "fatal"
    benign = format_xid_line("0000:3b:00", 13, "Graphics Exception") + "\n"
    assert gy("health", "xid", "-", stdin=benign).returncode == 0


def test_check_sim_host(tmp_path: Path) -> None:
    h = make_host(tmp_path, "node-3")
    assert gy("health", "check", "--sim-host", str(h)).returncode == 0
    write_disk(h, free=1 << 20)
    out = gy("health", "check", "--sim-host", str(h))
    assert out.returncode == 1
    assert [f["reason"] for f in json.loads(out.stdout)["findings"]] == ["DiskFull"]


def test_bad_input_is_a_clear_error(tmp_path: Path) -> None:
    out = gy("health", "check", "--sim-host", str(tmp_path / "nope"))
    assert out.returncode == 2 and "not a directory" in out.stderr
    out = gy("health", "agent", "--kubeconfig", str(tmp_path / "kc"))
    assert out.returncode == 2 and "--node" in out.stderr
    out = gy("health")
    assert out.returncode == 2 and "agent" in out.stderr
    out = gy("health", "controller", "--max-share", "2", "--kubeconfig", str(tmp_path / "kc"))
    assert out.returncode == 2


def test_brake_status_and_reset(apiserver: Any) -> None:
    out = gy("health", "--kubeconfig", apiserver.kubeconfig, "brake", "status")
    assert out.returncode == 0 and json.loads(out.stdout) == {"state": "ok"}
    out = gy("health", "--kubeconfig", apiserver.kubeconfig, "brake", "reset")
    assert out.returncode == 0 and "not tripped" in out.stdout
