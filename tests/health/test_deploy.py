"""The real-cluster manifest: well-formed, and every command in it is one gpuyard has."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "gpuyard" / "health" / "deploy.yaml"


def test_manifest_objects_and_commands() -> None:
    docs = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
    kinds = [d["kind"] for d in docs]
    assert kinds == [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "DaemonSet",
        "Deployment",
    ]
    commands = []
    for d in docs:
        if d["kind"] in ("DaemonSet", "Deployment"):
            spec = d["spec"]["template"]["spec"]
            assert spec["serviceAccountName"] == "gpuyard-health"
            commands += [c["command"] for c in spec["containers"]]
    for cmd in commands:
        assert cmd[:2] == ["gpuyard", "health"]
        out = subprocess.run(
            [sys.executable, "-m", "gpuyard.cli", *cmd[1:], "--help"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
        )
        assert out.returncode == 0, (cmd, out.stderr)
    rules = {
        (r["resources"][0], v)
        for d in docs
        if d["kind"] == "ClusterRole"
        for r in d["rules"]
        for v in r["verbs"]
    }
    assert {
        ("nodes", "patch"),
        ("nodes/status", "patch"),
        ("pods", "create"),
        ("leases", "update"),
        ("configmaps", "patch"),
    } <= rules
