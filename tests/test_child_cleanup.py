"""A benchmark or script stopped by a signal leaves no server, client worker or
temporary git worktree behind (gpuyard.childgroups): what a person who pressed
Ctrl-C, or a CI job that timed out, would check with ps and `git worktree list`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _children(pid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(d))
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_for_server(proc: subprocess.Popen[bytes], timeout: float = 120) -> int:
    """The pid of the `gpuyard.apiserver` child `proc` started."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        for c in _children(proc.pid):
            if "gpuyard.apiserver" in _cmdline(c):
                return c
        time.sleep(0.1)
    raise AssertionError("no API server was started")


def _worktrees() -> set[str]:
    out = subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "list", "--porcelain"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {line.split(" ", 1)[1] for line in out.splitlines() if line.startswith("worktree ")}


def _gone(pids: list[int], timeout: float = 30) -> list[int]:
    deadline = time.monotonic() + timeout
    left = pids
    while left and time.monotonic() < deadline:
        left = [p for p in left if _alive(p)]
        time.sleep(0.1)
    return left


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signalled_apiserver_benchmark_stops_its_server_and_removes_its_worktree(
    sig: signal.Signals,
) -> None:
    before = _worktrees()
    proc = subprocess.Popen(
        [sys.executable, "benchmarks/apiserver.py", "--nodes", "3000", "--pods", "10"]
        + ["--baseline-commit", "HEAD", "--rounds", "1"],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # A runner started in the background (`make test &`) passes SIGINT on ignored,
        # and Python then sets no KeyboardInterrupt handler: give the child the default.
        preexec_fn=_default_sigint,
    )
    try:
        server = _wait_for_server(proc)
        # Once its client workers are writing, so that they are stopped too.
        deadline = time.monotonic() + 60
        while len(_children(proc.pid)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        started = _children(proc.pid)
        assert server in started
        assert len(_worktrees()) == len(before) + 1  # the baseline's
        proc.send_signal(sig)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # SIGTERM: SystemExit(143) after the cleanup; SIGINT: KeyboardInterrupt, after
    # which Python ends itself by SIGINT.
    assert proc.returncode == (128 + signal.SIGTERM if sig == signal.SIGTERM else -signal.SIGINT)
    assert _gone(started) == [], [_cmdline(p) for p in started]
    assert _worktrees() == before


def test_a_script_without_signal_handling_still_kills_its_server_on_sigterm() -> None:
    script = (
        "import time\n"
        "from gpuyard.apiserver.testing import run_apiserver_process\n"
        "with run_apiserver_process(in_memory=True) as srv:\n"
        "    print(srv.pid, flush=True)\n"
        "    time.sleep(600)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT, env=_env(), stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        server = int(proc.stdout.readline())
        assert _alive(server)
        proc.terminate()
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGTERM  # it ends as the signal says
    assert _gone([server]) == []
