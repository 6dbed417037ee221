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


def _gpuyard(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gpuyard", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )


def test_port_out_of_range_is_refused_before_listening(tmp_path: object) -> None:
    r = _gpuyard("apiserver", "--port", "70000", "--data-dir", str(tmp_path))
    assert r.returncode == 2
    assert "--port: 70000 is out of range" in r.stderr and "65535" in r.stderr
    assert "listening" not in r.stdout and "Traceback" not in r.stderr


def _readonly_tmpfs(where: str) -> bool:
    os.makedirs(where, exist_ok=True)
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", where], capture_output=True
    )
    return r.returncode == 0


def test_read_only_data_dir_names_the_directory_and_cause(tmp_path: object) -> None:
    import pytest

    ro = os.path.join(str(tmp_path), "ro")
    if not _readonly_tmpfs(ro):
        pytest.skip("cannot mount a read-only tmpfs here (needs root)")
    try:
        for data_dir in (ro, os.path.join(ro, "inside")):  # existing, and to be made
            r = _gpuyard("apiserver", "--port", "0", "--data-dir", data_dir, timeout=30)
            assert r.returncode == 1, r.stderr
            assert r.stderr.strip() == (
                f"gpuyard: error: cannot use data directory {data_dir}: Read-only file system"
            )
            assert "cannot listen" not in r.stderr and "Traceback" not in r.stderr
    finally:
        subprocess.run(["umount", ro], check=False)


def test_data_dir_and_every_file_are_owner_only(tmp_path: object) -> None:
    import stat

    data_dir = os.path.join(str(tmp_path), "d")
    os.mkdir(data_dir, 0o755)
    os.chmod(data_dir, 0o755)  # an existing, world-readable directory
    srv = start_apiserver_process(data_dir, in_memory=False)
    try:
        assert srv.terminate(timeout=10) == 0
    finally:
        srv.kill9()
    assert stat.S_IMODE(os.stat(data_dir).st_mode) == 0o700
    files = os.listdir(data_dir)
    assert {"kubeconfig", "ca.crt", "apiserver.key", "store.db"} <= set(files)
    for name in files:
        mode = stat.S_IMODE(os.stat(os.path.join(data_dir, name)).st_mode)
        assert mode & 0o077 == 0, (name, oct(mode))


def _readyz(url: str, srv: object) -> int:
    import urllib.request

    ctx = srv.ssl_context()  # type: ignore[attr-defined]
    with urllib.request.urlopen(f"{url}/readyz", context=ctx, timeout=5) as r:
        return int(r.status)


def test_host_name_listens_on_every_address_it_resolves_to(tmp_path: object) -> None:
    import socket

    import pytest

    resolved = {a[4][0] for a in socket.getaddrinfo("localhost", 0, type=socket.SOCK_STREAM)}
    srv = start_apiserver_process(str(tmp_path), in_memory=True, extra_args=("--host", "localhost"))
    try:
        port = srv.url.rsplit(":", 1)[1]
        assert _readyz(f"https://127.0.0.1:{port}", srv) == 200
        if "::1" not in resolved:
            pytest.skip(f"localhost resolves only to {sorted(resolved)} here: no ::1 to try")
        assert _readyz(f"https://[::1]:{port}", srv) == 200
    finally:
        srv.kill9()


def test_no_address_of_the_host_binds_is_a_clear_error(tmp_path: object) -> None:
    import socket

    holders = []
    for family, _, _, _, addr in socket.getaddrinfo("localhost", 0, type=socket.SOCK_STREAM):
        s = socket.socket(family)
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind((addr[0], holders[0].getsockname()[1] if holders else 0))
        s.listen()
        holders.append(s)
    port = holders[0].getsockname()[1]
    try:
        r = _gpuyard(
            "apiserver",
            "--in-memory",
            "--host",
            "localhost",
            "--port",
            str(port),
            "--data-dir",
            str(tmp_path),
        )
        assert r.returncode == 1
        assert "cannot listen on any address of 'localhost'" in r.stderr
        assert str(port) in r.stderr
    finally:
        for s in holders:
            s.close()
