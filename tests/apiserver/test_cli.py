"""`gpuyard apiserver`: kubeconfig with the real port, clean shutdown on SIGTERM."""

from __future__ import annotations

import os
import subprocess
import sys

import yaml

from gpuyard.apiserver.testing import start_apiserver_process


def test_kubeconfig_carries_real_port_and_sigterm_stops(tmp_path: object) -> None:
    srv = start_apiserver_process(str(tmp_path), in_memory=True)
    try:
        with open(srv.kubeconfig) as f:
            cfg = yaml.safe_load(f)
        cluster = cfg["clusters"][0]["cluster"]
        assert cluster["server"] == srv.url and not srv.url.endswith(":0")
        assert cluster["certificate-authority-data"]
        assert cfg["current-context"] == "gpuyard"
        assert srv.terminate(timeout=10) == 0
        assert any(
            "stopped" in line
            for line in srv.output
            + [(srv.proc.stdout.read() or b"").decode() if srv.proc.stdout else ""]
        )
    finally:
        srv.kill9()


def test_gpuyard_command_dispatches_to_apiserver() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "gpuyard.cli", "apiserver", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    if r.returncode != 0:  # gpuyard.cli may have no __main__ guard: call main() directly
        r = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from gpuyard.cli import main; sys.exit(main(['apiserver', '--help']))",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert r.returncode == 0, r.stderr
    assert "--in-memory" in r.stdout and "--data-dir" in r.stdout


def test_port_in_use_is_a_clear_error(tmp_path: object) -> None:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    port = s.getsockname()[1]
    try:
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "gpuyard.apiserver",
                "--in-memory",
                "--data-dir",
                str(tmp_path),
                "--port",
                str(port),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            start_new_session=True,
        )
        assert r.returncode == 1
        assert "cannot listen" in r.stderr
    finally:
        s.close()
