"""Long CLI commands show a rich progress bar on a terminal and plain lines otherwise,
always on stderr: `gpuyard twin bench` under a pseudo-terminal draws a bar while its
stdout stays one JSON document; without a terminal it prints "twin bench: 4/4" lines
and the same JSON, and `gpuyard twin` a line per policy replayed. `gpuyard up` draws a bar while its nodes register, and keeps a
pipe's output to its banner for a small cluster."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from gpuyard import childgroups

BAR = "━"  # rich's bar
BENCH = ["-m", "gpuyard.cli", "twin", "bench", "--size", "small", "--scenario", "synth-light"]


def _on_pty(
    cmd: list[str], until: tuple[bytes, ...] | None, timeout: float
) -> tuple[bytes, bytes, int | None]:
    """Run `cmd` with stderr on a pseudo-terminal (80 columns) and stdout on a pipe:
    (what the terminal got, stdout, exit code; None when stopped once every string of
    `until` was seen)."""
    master, slave = pty.openpty()
    os.set_blocking(master, False)
    env = {**os.environ, "COLUMNS": "100", "TERM": "xterm"}
    proc = subprocess.Popen(
        [sys.executable, *cmd],
        stdout=subprocess.PIPE,
        stderr=slave,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        env=env,
    )
    childgroups.adopt(proc.pid)
    os.close(slave)
    term = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            r, _, _ = select.select([master], [], [], 0.2)
            if r:
                try:
                    term += os.read(master, 65536)
                except OSError:  # the other end closed
                    if proc.poll() is not None:
                        break
            elif proc.poll() is not None:
                break
            if until is not None and all(u in term for u in until):
                break
        if until is not None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
            return term, b"", None
        out = proc.stdout.read() if proc.stdout else b""
        return term, out, proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc.stdout:
            proc.stdout.close()
        os.close(master)


def test_twin_bench_draws_a_bar_on_a_terminal() -> None:
    term, out, code = _on_pty(BENCH, None, 120)
    assert code == 0, term.decode(errors="replace")
    text = term.decode(errors="replace")
    assert "twin bench" in text and BAR in text, text
    assert "/4" in text  # steps done of all
    doc = json.loads(out)  # stdout is the JSON alone
    assert list(doc["scenarios"]) == ["synth-light"]


def test_twin_bench_without_a_terminal_prints_plain_lines_and_json() -> None:
    r = subprocess.run([sys.executable, *BENCH], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert lines[-1] == "twin bench: 4/4 (synth-light easy)", lines
    assert all(line.startswith("twin bench: ") for line in lines), lines
    assert BAR not in r.stderr and "\x1b[" not in r.stderr
    assert json.loads(r.stdout)["scenarios"]["synth-light"]["policies"]
    quiet = subprocess.run([sys.executable, *BENCH, "--quiet"], capture_output=True, text=True)
    assert quiet.returncode == 0 and quiet.stderr == ""


def test_twin_run_on_a_pipe_says_each_policy_replayed(tmp_path: Path) -> None:
    trace = tmp_path / "jobs.csv"
    synth = ["-m", "gpuyard.cli", "twin", "synth", "--nodes", "4", "--days", "0.1"]
    subprocess.run([*[sys.executable], *synth, "--jobs", "20", "--out", str(trace)], check=True)
    run = ["-m", "gpuyard.cli", "twin", "--cluster", "nodes:4", "--trace", str(trace)]
    r = subprocess.run(
        [sys.executable, *run, "--compare", "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines() == [
        "twin run: 1/3 (fifo replayed)",
        "twin run: 2/3 (gangs replayed)",
        "twin run: 3/3 (gpuyard replayed)",
    ]
    assert r.stdout.splitlines()[-1] == f"report: {tmp_path / 'out' / 'report.html'}"


def test_up_draws_a_bar_while_nodes_register(tmp_path: Path) -> None:
    cmd = ["-m", "gpuyard.cli", "up", "--nodes", "300", "--data-dir", str(tmp_path / "c"),
           "--port", "0", "--components", "none"]  # fmt: skip
    term, _, _ = _on_pty(cmd, (b"bringing up nodes", BAR.encode()), 120)
    text = term.decode(errors="replace")
    assert "bringing up nodes" in text and BAR in text, text[-2000:]


def test_up_on_a_pipe_prints_no_progress_for_a_small_cluster(tmp_path: Path) -> None:
    from gpuyard.cluster.testing import run_cluster_process

    with run_cluster_process(tmp_path / "c", nodes=20, args=["--components", "none"]) as c:
        assert "gpuyard cluster up: 20 simulated nodes" in c.log()
        assert "bringing up nodes" not in c.log()
