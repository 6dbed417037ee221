"""Run the official Python client's end-to-end tests against `gpuyard up`.

The tests live in kubernetes-client/python's repository (`kubernetes/e2e_test`, and
`kubernetes/aio/e2e_test` for the asyncio client), not in its PyPI package. Get a
checkout and point --suite at its root, for instance:

    git clone https://github.com/kubernetes-client/python /tmp/kc
    git -C /tmp/kc checkout 0246584
    python benchmarks/client_e2e.py --suite /tmp/kc

or only the test folders of one commit, from any clone:

    mkdir -p /tmp/kc
    git -C CLONE archive 0246584 kubernetes/e2e_test kubernetes/aio/e2e_test | tar x -C /tmp/kc
    python benchmarks/client_e2e.py --suite /tmp/kc --suite-commit 0246584

The installed `kubernetes` client (and `kubernetes.aio` where installed) runs them.
The script starts `gpuyard up` on a free port in a temporary data directory (its
kubeconfig there: the tests read KUBECONFIG), runs the suite's pytest from the suite's
root (the tests open their YAML files by paths relative to it) with the suite's
folders added to the installed `kubernetes` package (`kubernetes.e2e_test`), and
prints JSON: the suite's commit, counts, the tests that passed, each unexpected
failure with its test id, and each expected failure with why it fails (it needs a
real container: exec, port-forward). It exits 1 if any other test fails (an expected
one too when its failure is not the API server's refusal), or if an expected one
passes (the list is out of date), 2 for bad arguments, and stops every process it
started, also on a signal.

Loaded with `-p client_e2e` into the suite's pytest, this module is also the pytest
plugin that extends the package path and records each test's outcome.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

FOLDERS = ("kubernetes/e2e_test", "kubernetes/aio/e2e_test")

_EXEC = (
    "execs into a running busybox (shell commands, exit codes, closing its channels); "
    "a simulated kubelet runs no process, and the API server answers exec with a 400"
)
_PORTFORWARD = (
    "port-forwards into a server the pod runs; a simulated kubelet runs no process, "
    "and the API server answers port-forward with a 400"
)
# test id: (why it fails, the API server's refusal its failure must show). A listed test
# failing for any other reason is an unexpected failure.
EXPECTED_FAILURES = {
    "kubernetes/e2e_test/test_client.py::TestClient::test_pod_apis": (
        _EXEC,
        "exec is not available for pod",
    ),
    "kubernetes/e2e_test/test_client.py::TestClient::test_exit_code": (
        _EXEC,
        "exec is not available for pod",
    ),
    "kubernetes/e2e_test/test_client.py::TestClient::test_pod_exec_close_channel": (
        _EXEC,
        "exec is not available for pod",
    ),
    "kubernetes/e2e_test/test_client.py::TestClient::test_portforward_raw": (
        _PORTFORWARD,
        "port-forward is not available for pod",
    ),
    "kubernetes/e2e_test/test_client.py::TestClient::test_portforward_http": (
        _PORTFORWARD,
        "port-forward is not available for pod",
    ),
}

_SUITE_ENV = "GPUYARD_CLIENT_E2E_SUITE"
_REPORT_ENV = "GPUYARD_CLIENT_E2E_REPORT"


# --- pytest plugin side (runs inside the suite's pytest) ---------------------------


def pytest_configure(config: Any) -> None:
    suite = os.environ.get(_SUITE_ENV)
    if not suite:
        return
    import kubernetes

    kubernetes.__path__.append(os.path.join(suite, "kubernetes"))
    try:
        import kubernetes.aio
    except ImportError:
        return
    kubernetes.aio.__path__.append(os.path.join(suite, "kubernetes", "aio"))


def _record(nodeid: str, outcome: str, when: str, longrepr: Any) -> None:
    path = os.environ.get(_REPORT_ENV)
    if not path:
        return
    text = str(longrepr) if longrepr is not None else ""
    crash = getattr(getattr(longrepr, "reprcrash", None), "message", None)
    line = {
        "id": nodeid,
        "outcome": outcome,
        "when": when,
        "message": text[-4000:],
        "error": (crash or _last_line(text))[:500],
    }
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")


def pytest_runtest_logreport(report: Any) -> None:
    if report.failed or report.skipped or (report.when == "call" and report.passed):
        _record(report.nodeid, report.outcome, report.when, report.longrepr)


def pytest_collectreport(report: Any) -> None:
    if report.failed:
        _record(report.nodeid, "failed", "collect", report.longrepr)


# --- script side --------------------------------------------------------------------


def _suite_commit(suite: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(suite), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def check_suite(suite: str) -> tuple[Path, list[str]]:
    """The suite's root and its test folders; ValueError saying why if unusable."""
    root = Path(suite).expanduser().resolve()
    if not root.is_dir():
        raise ValueError(f"--suite {suite}: no such directory")
    folders = [f for f in FOLDERS if (root / f).is_dir()]
    if not folders:
        raise ValueError(
            f"--suite {suite}: no {FOLDERS[0]} folder in it; give the root "
            "of a kubernetes-client/python checkout (see --help)"
        )
    return root, folders


def summarize(lines: list[dict[str, Any]]) -> dict[str, Any]:
    """Per test id its outcome: failed in any phase wins, then skipped, then passed."""
    outcome: dict[str, str] = {}
    message: dict[str, str] = {}
    error: dict[str, str] = {}
    for r in lines:
        prev = outcome.get(r["id"])
        if r["outcome"] == "failed":
            if prev != "failed":
                message[r["id"]] = r["message"]
                error[r["id"]] = r["error"]
            outcome[r["id"]] = "failed"
        elif r["outcome"] == "skipped" and prev != "failed":
            outcome[r["id"]] = "skipped"
        elif prev is None:
            outcome[r["id"]] = r["outcome"]
    passed = sorted(t for t, o in outcome.items() if o == "passed")
    skipped = sorted(t for t, o in outcome.items() if o == "skipped")
    failed = sorted(t for t, o in outcome.items() if o == "failed")
    expected = [
        t
        for t in failed
        if t in EXPECTED_FAILURES and EXPECTED_FAILURES[t][1] in message.get(t, "")
    ]
    unexpected = [t for t in failed if t not in expected]
    return {
        "tests": len(outcome),
        "passed_count": len(passed),
        "failed_count": len(unexpected),
        "expected_failures_count": len(expected),
        "skipped_count": len(skipped),
        "passed": passed,
        "failed": [{"id": t, "error": error.get(t, "")} for t in unexpected],
        "expected_failures": [
            {"id": t, "reason": EXPECTED_FAILURES[t][0], "error": error.get(t, "")}
            for t in expected
        ],
        "skipped": skipped,
        "expected_failures_that_passed": sorted(t for t in EXPECTED_FAILURES if t in passed),
    }


def _last_line(text: str) -> str:
    lines = [x.strip() for x in text.splitlines() if x.strip()]
    errs = [x for x in lines if x.startswith("E ")]
    return errs[-1] if errs else lines[-1] if lines else ""


def run_suite(
    root: Path, folders: list[str], kubeconfig: str, report: Path, timeout: float, extra: list[str]
) -> subprocess.CompletedProcess[str]:
    from gpuyard import childgroups

    here = str(Path(__file__).resolve().parent)
    env = {
        **os.environ,
        "KUBECONFIG": kubeconfig,
        _SUITE_ENV: str(root),
        _REPORT_ENV: str(report),
        "PYTHONPATH": os.pathsep.join([here, *filter(None, [os.environ.get("PYTHONPATH")])]),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    cmd = [
        sys.executable,
        "-P",  # not the suite's root on sys.path: a full checkout's `kubernetes` stays out
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        "client_e2e",
        "--import-mode=importlib",
        "--rootdir",
        str(root),
        *extra,
        *folders,
    ]
    return childgroups.run(cmd, timeout=timeout, cwd=str(root), env=env)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--suite", required=True, help="root of a kubernetes-client/python checkout")
    ap.add_argument("--suite-commit", help="commit of the suite (default: git rev-parse HEAD)")
    ap.add_argument("--nodes", type=int, default=4, help="simulated nodes (default 4)")
    ap.add_argument("--timeout", type=float, default=1200, help="seconds the whole suite may take")
    ap.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --)")
    args = ap.parse_args(argv)
    try:
        root, folders = check_suite(args.suite)
    except ValueError as e:
        ap.error(str(e))  # exits 2

    from gpuyard import childgroups
    from gpuyard.cluster.testing import start_cluster_process

    childgroups.exit_on_signals()  # a signal still stops the cluster and the suite
    with tempfile.TemporaryDirectory(prefix="gpuyard-client-e2e-") as d:
        t0 = time.monotonic()
        cluster = start_cluster_process(Path(d) / "data", args.nodes)
        try:
            report = Path(d) / "report.jsonl"
            report.touch()
            out = run_suite(
                root, folders, cluster.kubeconfig, report, args.timeout, args.pytest_args
            )
        finally:
            cluster.kill()
        lines = [json.loads(x) for x in report.read_text().splitlines() if x.strip()]
    result = {
        "suite": str(root),
        "suite_commit": args.suite_commit or _suite_commit(root),
        "folders": folders,
        "nodes": args.nodes,
        "pytest_exit": out.returncode,
        "seconds": round(time.monotonic() - t0, 1),
        **summarize(lines),
    }
    ok = (
        out.returncode in (0, 1)
        and result["tests"] > 0
        and not result["failed"]
        and not result["expected_failures_that_passed"]
    )
    if not ok and out.returncode not in (0, 1):
        result["pytest_output"] = (out.stdout + out.stderr)[-3000:]
    print(json.dumps(result, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
