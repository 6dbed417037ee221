"""Shared pytest fixtures: the embedded API server, as a subprocess or in-process.

- `apiserver`: `python -m gpuyard.apiserver --in-memory --port 0` in a subprocess.
  Yields a `gpuyard.apiserver.testing.ServerProcess` with `.url` (https://127.0.0.1:PORT),
  `.token`, `.kubeconfig` (path; point kubectl/clients at it), `.data_dir`, `.ca_file`,
  `.headers` (Authorization), `.ssl_context()`, `.pid`. Killed (process group) at the end.
- `apiserver_persistent`: the same with SQLite persistence in `.data_dir`.
- `apiserver_inproc` (async): an `APIServer` in the test's event loop, in memory,
  listening on a free port; use `.url`, `.token`, `.kubeconfig_path`, `.ca_pem`, or call
  `await srv.dispatch(method, path, query, headers, body)` directly (no sockets).

Module-scoped variants of the subprocess fixtures are not provided on purpose: tests
must not see each other's objects. Starting a subprocess server costs about a second.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Iterator

import pytest

from gpuyard.apiserver.testing import ServerProcess, run_apiserver_process


@pytest.fixture
def apiserver(tmp_path: object) -> Iterator[ServerProcess]:
    with run_apiserver_process(str(tmp_path), in_memory=True) as srv:
        yield srv


@pytest.fixture
def apiserver_persistent(tmp_path: object) -> Iterator[ServerProcess]:
    with run_apiserver_process(str(tmp_path), in_memory=False) as srv:
        yield srv


@pytest.fixture
async def apiserver_inproc() -> AsyncIterator[object]:
    from gpuyard.apiserver.server import APIServer

    d = tempfile.mkdtemp(prefix="gpuyard-inproc-")
    srv = APIServer(d, port=0, persist=False, bookmark_interval=0.5)
    try:
        await srv.start()
        yield srv
    finally:
        await srv.stop()
        for name in os.listdir(d):
            os.unlink(os.path.join(d, name))
        os.rmdir(d)


# ---------------------------------------------------------------- the embedded cluster
# - `cluster`: `gpuyard up` in a subprocess, 4 nodes, short lease (1 s) and node grace
#   (3 s), all components that are available. Yields a
#   `gpuyard.cluster.testing.ClusterProcess` (`.kubeconfig`, `.kubectl(...)`,
#   `.client()`, `.fault(kind, node)`, `.data_dir`, `.log()`); killed at the end.
# - `make_cluster(nodes=..., args=[...])`: the same with your own size and flags.

from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from gpuyard.cluster.testing import ClusterProcess, start_cluster_process  # noqa: E402

FAST = [
    "--lease-seconds",
    "1",
    "--node-grace",
    "3",
    "--start-delay",
    "0.2",
    # Pods leave a failed node a second after it is marked, not after kube's 300.
    "--default-toleration-seconds",
    "1",
]


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Callable[..., ClusterProcess]]:
    started: list[ClusterProcess] = []

    def make(nodes: int = 4, args: list[str] | None = None, **kw: Any) -> ClusterProcess:
        c = start_cluster_process(
            tmp_path / f"c{len(started)}", nodes, [*FAST, *(args or [])], **kw
        )
        started.append(c)
        return c

    try:
        yield make
    finally:
        for c in started:
            c.kill()


@pytest.fixture
def cluster(make_cluster: Callable[..., ClusterProcess]) -> ClusterProcess:
    return make_cluster()
