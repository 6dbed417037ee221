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
        *("ServiceAccount", "ClusterRole", "ClusterRoleBinding"),
        # what the controllers write in gpuyard-system: test pods, the brake, Leases
        *("Role", "RoleBinding"),
        *("ServiceAccount", "ClusterRole", "ClusterRoleBinding"),
        # the agent may write only its own node (tests/health/test_agent_own_node.py)
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "DaemonSet",
        "Deployment",
    ]
    (ds,) = [d for d in docs if d["kind"] == "DaemonSet"]
    pod = ds["spec"]["template"]["spec"]
    # GPU nodes as GPU Feature Discovery labels them (the README says so), the host
    # mounted read-only throughout.
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert all(m.get("readOnly") for m in pod["containers"][0]["volumeMounts"])
    assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    commands = []
    for d in docs:
        if d["kind"] in ("DaemonSet", "Deployment"):
            spec = d["spec"]["template"]["spec"]
            # The agent has an account and role of its own (least privilege).
            want = "gpuyard-health-agent" if d["kind"] == "DaemonSet" else "gpuyard-health"
            assert spec["serviceAccountName"] == want
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
        if d["kind"] in ("ClusterRole", "Role") and d["metadata"]["name"] == "gpuyard-health"
        for r in d["rules"]
        for v in r["verbs"]
    }
    agent = {
        (res, v)
        for d in docs
        if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "gpuyard-health-agent"
        for r in d["rules"]
        for res in r["resources"]
        for v in r["verbs"]
    }
    assert agent == {
        ("nodes", "get"),
        ("nodes/status", "get"),
        ("nodes/status", "patch"),
        ("events", "create"),
        ("events", "patch"),
    }
    assert {
        ("nodes", "patch"),
        ("nodes/status", "patch"),
        ("pods", "create"),
        ("leases", "update"),
        ("configmaps", "patch"),
    } <= rules
