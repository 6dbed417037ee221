"""benchmarks/client_e2e.py, which runs the official Python client's end-to-end tests
against `gpuyard up`: it refuses a missing suite with a clear error, and on a small
suite written here it reports each test's outcome in JSON, fails only for unexpected
failures, and leaves no process behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = str(ROOT / "benchmarks" / "client_e2e.py")


def _script(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> Any:
    return subprocess.run(
        [sys.executable, SCRIPT, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )


def test_refuses_missing_suite(tmp_path: Path) -> None:
    out = _script()
    assert out.returncode == 2
    assert "--suite" in out.stderr and "required" in out.stderr

    out = _script("--suite", str(tmp_path / "nowhere"))
    assert out.returncode == 2
    assert "nowhere: no such directory" in out.stderr
    assert not out.stdout

    out = _script("--suite", str(tmp_path))
    assert out.returncode == 2
    assert "no kubernetes/e2e_test folder" in out.stderr


FAKE_TESTS = """
from kubernetes.e2e_test import helper


def test_reaches_cluster():
    assert "default" in helper.namespaces()


def test_broken():
    assert 1 == 2, "broken on purpose"
"""

HELPER = """
import os

from kubernetes import client, config


def namespaces():
    api = config.new_client_from_config(os.environ["KUBECONFIG"])
    return [n.metadata.name for n in client.CoreV1Api(api).list_namespace().items]
"""

# Named as two of the expected failures: one fails with the API server's refusal,
# the other for another reason (so it is not expected).
FAKE_CLIENT = """
import unittest


class TestClient(unittest.TestCase):
    def test_pod_apis(self):
        raise RuntimeError("exec is not available for pod 'p': it runs on a simulated node")

    def test_exit_code(self):
        raise RuntimeError("pod never started")
"""


def _alive_with(text: str) -> list[str]:
    found = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                cmd = Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in cmd:
                found.append(cmd)
    return found


def test_reports_fake_suite(tmp_path: Path) -> None:
    suite = tmp_path / "suite"
    pkg = suite / "kubernetes" / "e2e_test"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "helper.py").write_text(HELPER)
    (pkg / "test_fake.py").write_text(FAKE_TESTS)
    (pkg / "test_client.py").write_text(FAKE_CLIENT)
    tmp = tmp_path / "tmp"
    tmp.mkdir()

    out = _script("--suite", str(suite), "--nodes", "1", env={"TMPDIR": str(tmp)}, timeout=120)
    assert out.returncode == 1, out.stderr[-3000:]
    result = json.loads(out.stdout)
    base = "kubernetes/e2e_test/"
    assert result["folders"] == ["kubernetes/e2e_test"]
    assert result["passed"] == [base + "test_fake.py::test_reaches_cluster"]
    assert [f["id"] for f in result["failed"]] == [
        base + "test_client.py::TestClient::test_exit_code",
        base + "test_fake.py::test_broken",
    ]
    assert "broken on purpose" in result["failed"][1]["error"]
    assert [f["id"] for f in result["expected_failures"]] == [
        base + "test_client.py::TestClient::test_pod_apis"
    ]
    assert "exec" in result["expected_failures"][0]["reason"]
    assert (result["tests"], result["passed_count"], result["failed_count"]) == (4, 1, 2)
    # The cluster (its data dir under TMPDIR) and the suite's pytest are gone.
    assert _alive_with(str(tmp)) == []
    assert list(tmp.iterdir()) == []
    assert not (suite / ".pytest_cache").exists()
