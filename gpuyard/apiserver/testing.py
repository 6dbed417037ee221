"""Helpers for tests and benchmarks: run the API server as a subprocess and talk to it.

    with run_apiserver_process(in_memory=True) as srv:
        srv.url, srv.token, srv.kubeconfig, srv.data_dir, srv.ca_file, srv.pid
        srv.headers            # {"Authorization": "Bearer ..."}
        srv.ssl_context()      # an SSLContext that trusts the server's CA

The process runs in its own process group and is killed (SIGKILL to the group) when
the block ends, whatever happens inside it, and when the process that started it
ends, even by SIGTERM (gpuyard.childgroups). `srv.kill9()` kills it at once (restart
tests); `srv.terminate()` asks it to stop cleanly. `file_limit=N` starts it with N as
both its soft and hard RLIMIT_NOFILE (the server sizes its connection cap from it).
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field

from gpuyard import childgroups


@dataclass
class ServerProcess:
    url: str
    token: str
    kubeconfig: str
    data_dir: str
    ca_file: str
    proc: subprocess.Popen[bytes]
    output: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca_file)

    def kill9(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        childgroups.release(self.proc.pid)

    def terminate(self, timeout: float = 10) -> int:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill9()
            return -9
        childgroups.release(self.proc.pid)
        return code


def start_apiserver_process(
    data_dir: str | None = None,
    in_memory: bool = False,
    extra_args: tuple[str, ...] = (),
    timeout: float = 30,
    code_dir: str | None = None,
    file_limit: int | None = None,
) -> ServerProcess:
    """Start `python -m gpuyard.apiserver --port 0` and wait until /readyz answers.
    With `code_dir`, the gpuyard package is imported from that checkout instead; with
    `file_limit`, the process's file limit (soft and hard) is lowered to it."""
    data_dir = data_dir or tempfile.mkdtemp(prefix="gpuyard-apiserver-test-")
    cmd = [sys.executable, "-m", "gpuyard.apiserver", "--port", "0", "--data-dir", data_dir]
    if in_memory:
        cmd.append("--in-memory")
    cmd.extend(extra_args)
    env = None
    if code_dir is not None:
        env = {**os.environ, "PYTHONPATH": os.path.abspath(code_dir)}
    preexec = None
    if file_limit is not None:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        if hard != resource.RLIM_INFINITY and file_limit > hard:
            raise ValueError(f"file_limit {file_limit} is above the hard limit {hard}")
        limit = file_limit

        def preexec() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env=env,
        cwd=code_dir,  # `-m` puts the working directory first on sys.path
        preexec_fn=preexec,
    )
    childgroups.adopt(proc.pid)
    out: list[str] = []
    try:
        url = ""
        deadline = time.monotonic() + timeout
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline().decode(errors="replace")
            if not line:
                raise RuntimeError("apiserver exited early:\n" + "".join(out))
            out.append(line)
            m = re.search(r"listening on (\S+)", line)
            if m:
                url = m.group(1)
                break
        if not url:
            raise RuntimeError("apiserver did not start:\n" + "".join(out))
        kubeconfig = os.path.join(data_dir, "kubeconfig")
        import yaml

        with open(kubeconfig) as f:
            cfg = yaml.safe_load(f)
        token = cfg["users"][0]["user"]["token"]
        srv = ServerProcess(
            url, token, kubeconfig, data_dir, os.path.join(data_dir, "ca.crt"), proc, out
        )
        ctx = srv.ssl_context()
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{url}/readyz", context=ctx, timeout=2) as r:
                    if r.status == 200:
                        return srv
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("apiserver not ready in time:\n" + "".join(out))
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        raise


@contextlib.contextmanager
def run_apiserver_process(
    data_dir: str | None = None,
    in_memory: bool = False,
    extra_args: tuple[str, ...] = (),
    code_dir: str | None = None,
    file_limit: int | None = None,
) -> Iterator[ServerProcess]:
    srv = start_apiserver_process(
        data_dir, in_memory, extra_args, code_dir=code_dir, file_limit=file_limit
    )
    try:
        yield srv
    finally:
        srv.kill9()
        if srv.proc.stdout is not None:
            srv.proc.stdout.close()
