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


# ---------------------------------------------------------------- tests that run alone
# `make test` runs the suite in two phases: everything not marked `serial` in parallel
# (pytest-xdist workers: most tests wait on the servers they start), then the `serial`
# tests one at a time. A test is serial when it measures timing or throughput that a
# loaded machine would distort, loads the machine itself, or uses something a second test
# at the same moment would see. Keys: a file (every test in it) or a test's node id
# without its parameters. A plain `pytest` runs everything as before.
SERIAL: dict[str, str] = {
    "tests/apiserver/test_load.py": "floods a server to its file and connection limits",
    "tests/apiserver/test_crash.py": "kill -9 at random moments under concurrent clients",
    "tests/network/test_kernel_accounting.py": "real network namespaces, nft and traffic",
    "tests/network/test_kernel_shaping.py": "tc shaping measured by throughput",
    "tests/network/test_netd_agent.py": "netd in real namespaces, iperf3 throughput",
    "tests/dashboard/test_browser.py": "chromium on a 1,000-node cluster, 5 s deadlines",
    "tests/dashboard/test_server.py::test_teams_and_borrowed_nodes": "drives chromium",
    # Counts the repository's git worktrees around the benchmark's baseline worktree (its
    # two cases at once would see each other's) and runs a 3,000-node benchmark.
    "tests/test_child_cleanup.py": "counts the repository's git worktrees",
    "tests/cluster/test_lifecycle.py::test_a_node_without_a_lease_yet_gets_its_grace_period": (
        "checks within a 5 s grace period by the wall clock"
    ),
    "tests/cluster/test_kubelet_admission.py::test_no_execute_taint_evicts_after_toleration_seconds": (  # noqa: E501
        "an eviction within 3.5 s by the wall clock"
    ),
}


@pytest.hookimpl(tryfirst=True)  # before -k and -m deselect
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for key in SERIAL:  # a renamed file or test is named here, not silently run in parallel
        path, _, name = key.partition("::")
        file = config.rootpath / path
        if not file.is_file() or (name and f"def {name}(" not in file.read_text()):
            raise pytest.UsageError(f"tests/conftest.py SERIAL names no test: {key}")
    for item in items:
        why = SERIAL.get(item.nodeid.split("[", 1)[0]) or SERIAL.get(item.nodeid.split("::")[0])
        if why:
            item.add_marker(pytest.mark.serial(why))
